/**
 * The policy engine: one message in, a verdict and a deterministic sanitised message out.
 *
 * One MIME model: the message (normalised to CRLF, which every reader reads the same way) is parsed
 * once by src/mime/partmap.ts, the Dovecot-compatible parser IMAP clients are served from; the
 * policy judges exactly those parts, decoded by the one set of decoders (src/mime/decode.ts) that
 * also serves BINARY; and the structure returned with the output is that parse (or, when the
 * message was changed, the same parser's reading of the output). Whatever two reasonable readers
 * could read differently is a finding (limits.on_malformed), and every file name a client could
 * show is checked.
 *
 * The rewrite works on byte offsets into the message: untouched ranges are re-emitted as zero-copy
 * subarrays and only replaced entities (stripped parts, rewritten headers) are new bytes, so kept
 * parts are byte-identical and boundaries stay valid. Nothing in the output depends on the clock,
 * randomness or the process: the recovery id is derived from the original and the policy.
 */
import { createHash } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { ScanOutcome } from '../scanners/types.js';
import { parseMime, forEachLeaf, leafSection, type MimeNode, type ParseResult } from '../mime/parse.js';
import { parsePartTree, parseHeaderBlock, isMessageNode, type HeaderField } from '../mime/partmap.js';
import { contentInfo } from '../mime/content.js';
import { decodedFieldValue, matchableFieldValue } from '../mime/headers.js';
import { decodeBody, decodeChunks, decodedSize, decodedSizeBound, decodePrefix, encodingDamage, isDecodedEncoding } from '../mime/decode.js';
import { detectType, ZIP_TYPE } from '../mime/detect.js';
import { containsZip, inspectZip, zipTrailerIn } from '../mime/zip.js';
import { toCrlf, crAsLineEnd } from '../mime/eol.js';
import { scanEmbedded, type EmbeddedFile } from '../mime/embedded.js';
import { nameForms, normaliseFilename as normaliseName } from '../mime/names.js';
import { MAX_BASE64_RESTARTS, MAX_ENCODED_MESSAGE_DEPTH, MAX_LISTED_HITS, MAX_NOTICE_FIELD_BYTES } from '../limits.js';
import { buildPartMap } from '../mime/partmap.js';
import type { ActionName, EngineDeps, InspectContext, InspectResult, RuleHit, Verdict } from './types.js';
import type { ActionSpec, CompiledPolicy, CompiledTypeRule } from './load.js';
import { renderTemplate, strippedPart, encodeDenyBody, type TemplateVars } from './deny.js';

export type { CompiledPolicy } from './load.js';

interface Hit extends RuleHit {
  spec: ActionSpec;
  /** Entity to replace for a strip; undefined = whole message. */
  target?: MimeNode;
}

/** One part as the policy inspects it. */
interface Leaf {
  node: MimeNode;
  /** IMAP section of the part's content. */
  section: string;
  /** Declared type as served (lower-case type/subtype). */
  type: string;
  /** Other types a reader may take from the part's fields. */
  otherTypes: string[];
  cte: string;
  /** Every normalised file name a client may show for the part. */
  names: string[];
  /** Why `names` is not every reading (a name over MAX_FILENAME_LENGTH, too many names): a malformed part. */
  nameProblems: string[];
  /** Encoded body bytes. */
  body: Buffer;
  /** Entity a strip replaces (undefined: the top-level body, only a block removes it). */
  target?: MimeNode;
  /** Files found embedded in the text (uuencode, yEnc, BinHex). */
  embedded: EmbeddedFile[];
  /** For a message/* part opened by the engine: the leaves inside it (their bodies in the decoded message). */
  inner: Leaf[];
}

/** The leaves inside an opened message/* part, nested ones included, in document order. */
function innerLeaves(leaf: Leaf): Leaf[] {
  const out: Leaf[] = [];
  for (const l of leaf.inner) out.push(l, ...innerLeaves(l));
  return out;
}

const SEVERITY: Record<ActionName, number> = { allow: 0, strip: 1, block: 2 };

/** Header fields a block notice keeps so threads and the message list stay intact. */
const KEPT_ON_BLOCK = new Set(['date', 'from', 'to', 'cc', 'subject', 'message-id', 'in-reply-to', 'references']);

/** Deterministic recovery / quarantine id for an original under a policy. */
export function recoveryId(raw: Buffer, policyName: string): string {
  const inner = createHash('sha256').update(raw).digest();
  return createHash('sha256').update(policyName).update('\0').update(inner).digest('hex').slice(0, 24);
}

function stricter(a: ActionSpec, b: ActionSpec): ActionSpec {
  return SEVERITY[b.action] > SEVERITY[a.action] ? b : a;
}

/** Windows ignores trailing dots/spaces; bidi and zero-width characters hide the real extension. */
export function normaliseFilename(name: string): string {
  return normaliseName(name);
}

function matchRules(rules: CompiledTypeRule[], value: string): CompiledTypeRule | undefined {
  for (const r of rules) if (r.re.some((re) => re.test(value))) return r;
  return undefined;
}

function typeDecision(policy: CompiledPolicy, t: string): { spec: ActionSpec; rule: string; reason?: string } {
  const r = matchRules(policy.contentRules, t);
  if (r) return { spec: r.spec, rule: `content_types.rules[${r.index}]`, reason: r.reason };
  return { spec: policy.contentDefault, rule: 'content_types.default' };
}

function doubleExtension(policy: CompiledPolicy, name: string): boolean {
  const parts = name.toLowerCase().split('.');
  if (parts.length < 3) return false;
  const last = parts[parts.length - 1];
  const prev = parts[parts.length - 2];
  return policy.dangerousExtensions.has(last) && /^[a-z]{2,5}$/.test(prev) && !policy.dangerousExtensions.has(prev);
}

/**
 * The entity a strip replaces: a message's only body is replaced with its message/rfc822
 * container; the top-level body (and the body of a top-level message/rfc822) cannot be stripped (block).
 */
function stripTarget(leaf: MimeNode): MimeNode | undefined {
  if (!isMessageNode(leaf)) return leaf;
  const container = leaf.parent;
  return container?.parent ? container : undefined;
}

function stripRules(policy: CompiledPolicy, scope: 'top' | 'all') {
  return policy.headers.strip.filter((r) => scope === 'top' || r.scope === 'all');
}

/** The fields tile the header exactly (false when a header over max_header_size kept only some). */
function fieldsTile(n: MimeNode): boolean {
  if (n.fields.length === 0) return n.headerEnd === n.headerStart;
  return n.fields[0]!.start === n.headerStart && n.fields[n.fields.length - 1]!.end === n.headerEnd;
}

/** Returns the kept fields of a header (null when nothing is dropped). */
function filterHeader(buf: Buffer, n: MimeNode, rules: CompiledPolicy['headers']['strip']): Buffer[] | null {
  if (rules.length === 0 || !fieldsTile(n)) return null;
  const out: Buffer[] = [];
  let dropped = false;
  for (const f of n.fields) {
    if (f.colon) {
      const name = f.name.trim().toLowerCase();
      // a value too long to match against the policy's expression counts as matching (strict reading)
      if (rules.some((r) => r.name.test(name) && (r.value === null || testValue(r.value, f.value)))) {
        dropped = true;
        continue;
      }
    }
    out.push(buf.subarray(f.start, f.end));
  }
  return dropped ? out : null;
}

function testValue(re: RegExp, raw: string): boolean {
  const v = matchableFieldValue(raw);
  return v === undefined || re.test(v);
}

function addedHeaderLines(policy: CompiledPolicy, eol: string): Buffer[] {
  return policy.headers.add.map((a) => Buffer.from(`${a.name}: ${a.value.replace(/\{policy\}/g, policy.name)}${eol}`, 'latin1'));
}

function eolOf(buf: Buffer, from: number): '\r\n' | '\n' {
  const lf = buf.indexOf(0x0a, from);
  return lf > from && buf[lf - 1] === 0x0d ? '\r\n' : lf < 0 ? '\r\n' : '\n';
}

/**
 * Applies the policy's header rules to header-only data (a whole header ending with its blank line,
 * or a subset of fields). The engine uses this same function for the top-level header, so a header
 * fetch and a full fetch agree. `add: false` skips added headers (for HEADER.FIELDS subsets).
 * Returns the input Buffer itself when nothing changes.
 */
export function applyHeaderRules(header: Buffer, policy: CompiledPolicy, opts: { add?: boolean } = {}): Buffer {
  const node = parseHeaderBlock(header, header.length + 1);
  return applyParsedHeaderRules(header, node, policy, opts.add !== false, []);
}

function applyParsedHeaderRules(buf: Buffer, h: MimeNode, policy: CompiledPolicy, add: boolean, extra: string[]): Buffer {
  const eol = eolOf(buf, h.headerStart);
  const kept = filterHeader(buf, h, stripRules(policy, 'top'));
  const adds = add ? addedHeaderLines(policy, eol) : [];
  for (const e of extra) adds.push(Buffer.from(e + eol, 'latin1'));
  if (!kept && adds.length === 0) return h.bodyStart === buf.length ? buf : buf.subarray(0, h.bodyStart);
  const parts = [...adds, ...(kept ?? [buf.subarray(h.headerStart, h.headerEnd)]), buf.subarray(h.headerEnd, Math.max(h.headerEnd, h.bodyStart))];
  return Buffer.concat(parts);
}

/**
 * A field a block notice may repeat: a well-formed single field of bounded size whose bytes no
 * reader can split into more lines (no CR without LF, no NUL), so no original content rides along.
 */
function keepableField(buf: Buffer, f: HeaderField): boolean {
  if (!f.colon || f.end - f.start > MAX_NOTICE_FIELD_BYTES) return false;
  const b = buf.subarray(f.start, f.end);
  if (b.indexOf(0) >= 0) return false;
  for (let i = b.indexOf(0x0d); i >= 0; i = b.indexOf(0x0d, i + 1)) if (b[i + 1] !== 0x0a) return false;
  return /^[\x21-\x39\x3b-\x7e]+:/.test(b.toString('latin1', 0, Math.min(b.length, 80)));
}

function headerValue(buf: Buffer, root: MimeNode, name: string): string | undefined {
  const f = root.fields.find((x) => x.colon && x.name.trim().toLowerCase() === name && keepableField(buf, x));
  return f ? decodedFieldValue(f.value) : undefined;
}

function isInsideSigned(node: MimeNode): boolean {
  for (let a = node.parent; a; a = a.parent) if (a.contentType === 'multipart/signed') return true;
  return false;
}

/**
 * Inspects one message. Never throws for hostile input: limits and malformed structure give the
 * policy's action; an unexpected internal failure blocks the message (fail closed) with a notice.
 */
export async function inspectMessage(raw: Buffer, policy: CompiledPolicy, ctx: InspectContext, deps: EngineDeps): Promise<InspectResult> {
  try {
    return await inspect(raw, policy, ctx, deps);
  } catch (e) {
    return failClosed(raw, policy, e);
  }
}

function failClosed(raw: Buffer, policy: CompiledPolicy, e: unknown): InspectResult {
  const text = renderTemplate(policy.deny.block, { reason: 'the message could not be inspected', policy: policy.name, action: 'block', rule: 'engine', recovery: recoveryId(raw, policy.name) });
  const { body, cte } = encodeDenyBody(text, '\r\n');
  const output = Buffer.concat([
    Buffer.from(`Subject: [postern] message could not be inspected\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: ${cte}\r\nX-Postern-Verdict: blocked; policy=${policy.name}\r\n\r\n`, 'latin1'),
    body,
  ]);
  const verdict: Verdict = {
    policy: policy.name,
    status: 'blocked',
    hits: [{ part: '', rule: 'engine', action: 'block', reason: `internal inspection error: ${(e as Error)?.message ?? String(e)}` }],
    viruses: [],
    sizeIn: raw.length,
    sizeOut: output.length,
    scanMs: 0,
    quarantineFailed: true,
  };
  return { verdict, output, structure: buildPartMap(output) };
}

function makeLeaf(msg: Buffer, node: MimeNode): Leaf {
  const info = contentInfo(node);
  const names = nameForms(info.names);
  return {
    node,
    section: leafSection(node),
    type: info.type,
    otherTypes: info.otherTypes,
    cte: info.cte,
    names: names.forms,
    nameProblems: names.problems,
    body: msg.subarray(node.bodyStart, node.bodyEnd),
    target: stripTarget(node),
    embedded: [],
    inner: [],
  };
}

async function inspect(raw: Buffer, policy: CompiledPolicy, ctx: InspectContext, deps: EngineDeps): Promise<InspectResult> {
  const t0 = performance.now();
  // LF and CRLF are one line end to every reader: the model (and the output) is the CRLF form
  const msg = toCrlf(raw);
  const hits: Hit[] = [];
  const viruses: string[] = [];
  const tags: string[] = [];
  /** Largest uncompressed member of each ZIP part (antivirus treats an over-max_size member as unscanned). */
  const largestMember = new Map<Leaf, number>();
  /**
   * Every hit up to MAX_LISTED_HITS is listed. Past that a hit is still kept when it changes the
   * outcome (another entity to strip, a stricter action, a quarantine), never dropped for space.
   */
  const outcomes = new Set<string>();
  const targetIds = new Map<MimeNode, number>();
  const outcomeOf = (h: Hit): string => {
    let id = 0;
    if (h.spec.action === 'strip' && h.target) {
      id = targetIds.get(h.target) ?? targetIds.size + 1;
      targetIds.set(h.target, id);
    }
    return `${h.spec.action}|${h.spec.quarantine ? 'q' : ''}|${id}`;
  };
  const addHit = (h: Hit) => {
    const outcome = h.spec.action === 'allow' ? '' : outcomeOf(h);
    if (hits.length < MAX_LISTED_HITS || (outcome && !outcomes.has(outcome))) hits.push(h);
    if (outcome) outcomes.add(outcome);
  };

  let parsed: ParseResult | undefined;
  const leaves: Leaf[] = [];
  let tempfail = false;
  const scanner = policy.antivirus.enabled ? deps.scanner ?? null : null;

  if (msg.length > policy.limits.maxMessageSize) {
    const spec = policy.limits.onLimit;
    if (spec.action !== 'allow') {
      addHit({ part: '', rule: 'limits.max_message_size', action: 'block', reason: `message larger than ${policy.limits.maxMessageSize} bytes`, spec: { ...spec, action: 'block' } });
    }
  } else {
    parsed = parseMime(msg, policy.limits);
    if (parsed.limit) {
      const spec = policy.limits.onLimit;
      if (spec.action !== 'allow') addHit({ part: parsed.limit.section, rule: parsed.limit.rule, action: 'block', reason: parsed.limit.reason, spec: { ...spec, action: 'block' } });
    }
    const mspec = policy.limits.onMalformed;
    if (mspec.action !== 'allow') {
      for (const m of parsed.malformed) {
        addHit({ part: m.section, rule: 'limits.on_malformed', action: 'block', reason: `malformed: ${m.reason}`, spec: { ...mspec, action: 'block' } });
      }
    }
    forEachLeaf(parsed.root, (n) => leaves.push(makeLeaf(msg, n)));
    for (const leaf of leaves) evaluateLeaf(msg, leaf, policy, addHit, largestMember);
  }

  // antivirus: the raw message and every decoded leaf part
  if (scanner && !hits.some((h) => h.spec.action === 'block')) {
    const av = policy.antivirus;
    const onOversize = (part: string, size: number) => {
      if (av.onOversize.action === 'block') {
        addHit({ part, rule: 'antivirus.on_oversize', action: 'block', reason: `too large to scan (${size} bytes)`, spec: av.onOversize });
      } else if (!tags.some((t) => t.includes('oversize'))) tags.push(`${av.tagHeader}: unscanned; reason=oversize; policy=${policy.name}`);
    };
    const onError = (part: string, o: Extract<ScanOutcome, { kind: 'error' }>) => {
      if (av.onError === 'tempfail') tempfail = true;
      else if (av.onError === 'block') {
        addHit({ part, rule: 'antivirus.on_error', action: 'block', reason: `scanner ${o.reason}: ${o.message}`, spec: { action: 'block', quarantine: false, log: true } });
      } else if (!tags.some((t) => t.includes('reason=error'))) tags.push(`${av.tagHeader}: unscanned; reason=error; policy=${policy.name}`);
    };
    const handle = (o: ScanOutcome, part: string, size: () => number): boolean => {
      if (o.kind === 'oversize') onOversize(part, size());
      else if (o.kind === 'error') onError(part, o);
      else if (o.kind === 'infected') {
        for (const v of o.viruses) if (!viruses.includes(v)) viruses.push(v);
        return true;
      }
      return false;
    };
    let rawInfected = false;
    let partInfected = false;
    if (msg.length > av.maxSize) onOversize('', msg.length);
    else {
      rawInfected = handle(await scanner.scan(msg, { label: 'message' }), '', () => msg.length);
      // lines ended by a CR alone are lines to some readers: the scanner sees that reading too
      if (!tempfail && parsed?.bareCr) {
        const alt = crAsLineEnd(msg);
        if (alt.length <= av.maxSize) rawInfected = handle(await scanner.scan(alt, { label: 'message (CR line ends)' }), '', () => alt.length) || rawInfected;
      }
    }
    const infectedHit = (leaf: Leaf, section: string, o: ScanOutcome, what?: string) => {
      const names = (o as { viruses: string[] }).viruses.join(', ');
      const target = av.onVirus.action === 'strip' ? leaf.target : undefined;
      addHit({
        part: section,
        declaredType: leaf.type,
        filename: leaf.names[0],
        rule: 'antivirus',
        action: target ? 'strip' : 'block',
        reason: `virus found${what ? ` in ${what}` : ''}: ${names}`,
        virus: names,
        spec: target ? av.onVirus : { ...av.onVirus, action: 'block' },
        target,
      });
    };
    if (!tempfail && av.scanParts && parsed) {
      for (const leaf of leaves) {
        if (tempfail) break;
        const section = leaf.section;
        const scanned = await scanLeaf(scanner, leaf.body, leaf.cte, av.maxSize, `part ${section}`);
        if (scanned) {
          // clamd scans an archive member only up to its MaxFileSize and then answers OK: a member
          // bigger than max_size (keep it <= clamd's MaxFileSize) counts as not scanned
          const member = largestMember.get(leaf) ?? 0;
          if (member > av.maxSize) onOversize(section, member);
          if ('oversize' in scanned) onOversize(section, scanned.oversize);
          else if (handle(scanned.outcome, section, scanned.size)) {
            partInfected = true;
            infectedHit(leaf, section, scanned.outcome);
          }
        }
        // the parts of an opened forwarded message, decoded, and files embedded in text
        for (const inner of innerLeaves(leaf)) {
          if (tempfail) break;
          const s = await scanLeaf(scanner, inner.body, inner.cte, av.maxSize, `part ${section} (forwarded part ${inner.section})`);
          if (!s) continue;
          if ('oversize' in s) onOversize(section, s.oversize);
          else if (handle(s.outcome, section, s.size)) {
            partInfected = true;
            infectedHit(leaf, section, s.outcome, `forwarded part ${inner.section}`);
          }
        }
        for (const f of [...leaf.embedded, ...innerLeaves(leaf).flatMap((l) => l.embedded)]) {
          if (tempfail) break;
          if (f.data.length === 0) continue;
          if (f.data.length > av.maxSize) {
            onOversize(section, f.data.length);
            continue;
          }
          const o = await scanner.scan(f.data, { label: `part ${section} ${f.kind} file` });
          if (handle(o, section, () => f.data.length)) {
            partInfected = true;
            infectedHit(leaf, section, o, `${f.kind} file ${f.name || '(no name)'}`);
          }
        }
      }
    }
    if (rawInfected && !partInfected && !tempfail) {
      addHit({ part: '', rule: 'antivirus', action: 'block', reason: `virus found: ${viruses.join(', ')}`, virus: viruses.join(', '), spec: { ...av.onVirus, action: 'block' } });
    }
  }

  const limits = { maxDepth: policy.limits.maxDepth, maxParts: policy.limits.maxParts, maxHeaderSize: policy.limits.maxHeaderSize };
  const finish = (status: Verdict['status'], output: Buffer, quarantineId?: string, quarantineFailed?: boolean): InspectResult => {
    const verdict: Verdict = {
      policy: policy.name,
      status,
      hits: hits.map(publicHit),
      viruses,
      sizeIn: raw.length,
      sizeOut: output.length,
      scanMs: Math.round((performance.now() - t0) * 100) / 100,
    };
    if (quarantineId) verdict.quarantineId = quarantineId;
    if (quarantineFailed) verdict.quarantineFailed = true;
    // the structure served is the parse the policy judged; a rewritten message is read by the same parser
    const structure = parsed && output === msg ? parsed.root : parsePartTree(output, limits).root;
    return { verdict, output, structure };
  };

  if (tempfail) {
    for (const h of hits) h.spec = { ...h.spec }; // verdict still lists what was found
    hits.unshift({ part: '', rule: 'antivirus.on_error', action: 'tempfail', reason: 'scanner unavailable: message not vetted', spec: { action: 'allow', quarantine: false, log: true } });
    return finish('tempfail', raw);
  }

  // strips inside a signed part invalidate the signature: the policy decides whether that is acceptable
  if (policy.signed.onChange === 'block') {
    const signedHit = hits.find((h) => h.spec.action === 'strip' && h.target && isInsideSigned(h.target));
    if (signedHit) {
      addHit({ part: signedHit.part, rule: 'signed.on_change', action: 'block', reason: 'a change inside a signed part would break its signature', spec: { action: 'block', quarantine: signedHit.spec.quarantine, log: true } });
    }
  }
  // a strip with no replaceable entity (the top-level body) becomes a block
  for (const h of hits) {
    if (h.spec.action === 'strip' && !h.target) {
      h.spec = { ...h.spec, action: 'block' };
      h.action = 'block';
    }
  }

  const wantQuarantine = () => hits.some((h) => h.spec.action !== 'allow' && h.spec.quarantine);
  const rid = recoveryId(raw, policy.name);
  const root = parsed?.root ?? parseHeaderBlock(msg, policy.limits.maxHeaderSize);
  /**
   * Template variables. `sterile` leaves out everything taken from the message (names, types,
   * subject, sender, reasons that quote them): used when the notice itself would carry a virus.
   */
  const vars = (h: Hit[], sterile = false): TemplateVars => ({
    reason: sterile ? 'a virus was found in the message' : uniq(h.map((x) => x.reason)).join('; '),
    filename: sterile ? undefined : uniq(h.map((x) => x.filename ?? '').filter(Boolean)).join(', ') || undefined,
    type: sterile ? undefined : uniq(h.map((x) => (x.detectedType && x.detectedType !== x.declaredType ? `${x.declaredType ?? '?'} (detected ${x.detectedType})` : x.declaredType ?? '')).filter(Boolean)).join(', ') || undefined,
    virus: uniq(h.map((x) => x.virus ?? '').filter(Boolean)).join(', ') || undefined,
    action: h.some((x) => x.spec.action === 'block') ? 'block' : 'strip',
    policy: policy.name,
    rule: uniq(h.map((x) => x.rule)).join(', '),
    message_id: sterile ? undefined : headerValue(msg, root, 'message-id'),
    subject: sterile ? undefined : headerValue(msg, root, 'subject'),
    sender: sterile ? undefined : headerValue(msg, root, 'from'),
    // the id is shown even when storing failed: the text must not depend on disk state
    recovery: wantQuarantine() ? rid : 'none (original not kept)',
    part: uniq(h.map((x) => x.part)).join(', '),
  });

  const blockNotice = (sterile: boolean): Buffer => {
    const acting = hits.filter((h) => h.spec.action !== 'allow');
    const eol = '\r\n';
    const out: Buffer[] = [];
    // only well-formed thread fields are repeated: a notice never carries other original bytes
    for (const f of sterile ? [] : root.fields) {
      if (!KEPT_ON_BLOCK.has(f.name.trim().toLowerCase()) || !keepableField(msg, f)) continue;
      const slice = msg.subarray(f.start, f.end);
      out.push(slice);
      if (slice[slice.length - 1] !== 0x0a) out.push(Buffer.from(eol));
    }
    if (sterile) out.push(Buffer.from(`Subject: [postern] message blocked${eol}`, 'latin1'));
    const text = renderTemplate(policy.deny.block, vars(acting.filter((h) => h.spec.action === 'block').concat(acting.filter((h) => h.spec.action !== 'block')), sterile));
    const { body, cte } = encodeDenyBody(text, eol);
    out.push(
      Buffer.from(
        `MIME-Version: 1.0${eol}Content-Type: text/plain; charset=utf-8${eol}Content-Transfer-Encoding: ${cte}${eol}` +
          `X-Postern-Verdict: blocked; policy=${policy.name}${eol}${eol}`,
        'latin1',
      ),
    );
    const headerBuf = Buffer.concat(out);
    const finalHeader = applyHeaderRules(headerBuf, policy);
    return Buffer.concat([finalHeader, body]);
  };

  const rewrite = (): Buffer => {
    // changed / clean: collect non-overlapping replacements
    const acting = hits.filter((h) => h.spec.action !== 'allow');
    const replacements: { start: number; end: number; bytes: Buffer[] }[] = [];
    const replaced = new Set<MimeNode>();
    const byTarget = new Map<MimeNode, Hit[]>();
    for (const h of acting) {
      if (h.spec.action !== 'strip' || !h.target) continue;
      const list = byTarget.get(h.target) ?? [];
      list.push(h);
      byTarget.set(h.target, list);
    }
    for (const target of byTarget.keys()) {
      let covered = false;
      for (let a = target.parent; a && !covered; a = a.parent) covered = byTarget.has(a);
      if (covered) continue; // a stripped ancestor already removes it
      replaced.add(target);
      const text = renderTemplate(policy.deny.strip, vars(byTarget.get(target)!));
      replacements.push({ start: target.headerStart, end: entityEnd(msg, target), bytes: [defuse(strippedPart(text, '\r\n'), target)] });
    }
    if (parsed) {
      // part headers (scope: all)
      const allRules = policy.headers.strip.filter((r) => r.scope === 'all');
      if (allRules.length) {
        const walk = (n: MimeNode) => {
          if (replaced.has(n)) return;
          if (n !== parsed!.root) {
            const kept = filterHeader(msg, n, allRules);
            if (kept) replacements.push({ start: n.headerStart, end: n.headerEnd, bytes: kept });
          }
          if (n.message && !leaves.some((l) => l.node === n)) walk(n.message);
          for (const c of n.children) walk(c);
        };
        walk(parsed.root);
      }
    }
    const top = applyParsedHeaderRules(msg, root, policy, true, tags);
    if (top.length !== root.bodyStart || !top.equals(msg.subarray(0, root.bodyStart))) {
      replacements.push({ start: 0, end: root.bodyStart, bytes: [top] });
    }
    if (replacements.length === 0) return msg;
    replacements.sort((x, y) => x.start - y.start);
    const pieces: Buffer[] = [];
    let pos = 0;
    for (const r of replacements) {
      if (r.start < pos) continue; // nested in an earlier replacement
      pieces.push(msg.subarray(pos, r.start), ...r.bytes);
      pos = r.end;
    }
    pieces.push(msg.subarray(pos));
    return Buffer.concat(pieces);
  };

  let status: 'clean' | 'changed' | 'blocked' = hits.some((h) => h.spec.action === 'block') ? 'blocked' : 'changed';
  let output = status === 'blocked' ? blockNotice(false) : rewrite();
  if (output === msg) status = 'clean';
  // What would be delivered is scanned once more when it is a notice (it quotes the subject, file
  // names and reasons, and the message may have been blocked before the antivirus ran) or when the
  // message carried a virus (it can sit where no part was stripped: a header, a preamble). Still
  // infected, or not scannable: a notice without message content.
  if (scanner && (status === 'blocked' || (viruses.length > 0 && status !== 'clean'))) {
    const o = output.length <= policy.antivirus.maxSize ? await scanner.scan(output, { label: 'output' }) : undefined;
    if (o?.kind !== 'clean') {
      if (status !== 'blocked') {
        addHit({ part: '', rule: 'antivirus', action: 'block', reason: 'virus found in what would be delivered', virus: viruses.join(', '), spec: { ...policy.antivirus.onVirus, action: 'block' } });
      }
      status = 'blocked';
      output = blockNotice(true);
    }
  }

  let quarantineId: string | undefined;
  let quarantineFailed = false;
  if (wantQuarantine()) {
    if (!deps.quarantine) quarantineFailed = true;
    else {
      try {
        quarantineId = await deps.quarantine.put(raw, {
          id: rid,
          policy: policy.name,
          status: status === 'blocked' ? 'blocked' : 'changed',
          hits: hits.filter((h) => h.spec.action !== 'allow').map(publicHit),
          viruses,
          context: ctx,
          time: (deps.now ?? (() => new Date()))().toISOString(),
        });
      } catch {
        quarantineFailed = true;
      }
    }
  }
  return finish(status, output, quarantineId, quarantineFailed);
}

/**
 * End of an entity without the line ending in front of the next delimiter. Dovecot counts that line
 * ending into a message/rfc822 part whose encapsulated header was cut by the delimiter; a
 * replacement must leave it to the delimiter line.
 */
function entityEnd(msg: Buffer, n: MimeNode): number {
  const e = n.bodyEnd;
  if (e >= n.headerStart + 2 && msg[e - 2] === 0x0d && msg[e - 1] === 0x0a && msg[e] === 0x2d && msg[e + 1] === 0x2d) return e - 2;
  return e;
}

/** Deny text is generated, but defuse any line that would equal an enclosing delimiter anyway. */
function defuse(part: Buffer, target: MimeNode): Buffer {
  let s = part.toString('latin1');
  for (let a = target.parent; a; a = a.parent) {
    if (!a.boundary) continue;
    const b = `--${a.boundary}`;
    if (s.startsWith(b) || s.includes(`\n${b}`)) s = s.split(`\n${b}`).join(`\n ${b}`);
  }
  return Buffer.from(s, 'latin1');
}

function uniq<T>(a: T[]): T[] {
  return [...new Set(a)];
}

function publicHit(h: Hit): RuleHit {
  const { spec: _spec, target: _target, ...rest } = h;
  const out: RuleHit = { ...rest, action: rest.action === 'tempfail' ? 'tempfail' : h.spec.action };
  if (h.spec.quarantine) out.quarantine = true;
  if (!h.spec.log) out.log = false;
  return out;
}

/**
 * Scans one decoded leaf. With a chunk-capable scanner the part is decoded and sent in bounded
 * chunks (a 40 MB attachment is never held decoded); otherwise it is decoded whole for `scan`.
 * Returns undefined for an empty part (not scanned), `oversize` for a part over `maxSize`.
 */
async function scanLeaf(
  scanner: NonNullable<EngineDeps['scanner']>,
  body: Buffer,
  cte: string,
  maxSize: number,
  label: string,
): Promise<{ oversize: number } | { outcome: ScanOutcome; size: () => number } | undefined> {
  if (!scanner.scanChunks) {
    const data = decodeBody(body, cte).data;
    if (data.length === 0) return undefined;
    if (data.length > maxSize) return { oversize: data.length };
    return { outcome: await scanner.scan(data, { label }), size: () => data.length };
  }
  // the exact decoded size costs a pass over the body: only needed when it may be over the limit
  let size = decodedSizeBound(body, cte) > maxSize ? decodedSize(body, cte) : undefined;
  if (size !== undefined && size > maxSize) return { oversize: size };
  const chunks = decodeChunks(body, cte);
  const first = chunks.next();
  if (first.done) return undefined;
  const all = (function* () {
    yield first.value;
    yield* chunks;
  })();
  const outcome = await scanner.scanChunks(all, size === undefined ? { label } : { label, size });
  return { outcome, size: () => (size ??= decodedSize(body, cte)) };
}

/** How deep message/* parts inside message/* parts are opened. */

/** A file name mail clients open as a message (.eml, any case). */
function isEmlName(name: string): boolean {
  return /\.eml$/i.test(name);
}

/** Parts a mail client shows as text and searches for uuencoded (yEnc, BinHex) files. */
function isTextish(type: string): boolean {
  return type.startsWith('text/') || type === 'message/rfc822' || type === 'application/x-uuencode';
}

function evaluateLeaf(_raw: Buffer, leaf: Leaf, policy: CompiledPolicy, addHit: (h: Hit) => void, largestMember: Map<Leaf, number>, depth = 0): void {
  const section = leaf.section;
  const body = leaf.body;
  const target = leaf.target;
  const declared = leaf.type;
  let detected: string | undefined;
  if (policy.detectTypes && body.length > 0) detected = detectType(decodePrefix(body, leaf.cte));
  const names = leaf.names;
  const filename = names[0];
  const base = { part: section, declaredType: declared, filename, target } as const;
  // a bound of the MIME model reached in this part: judged by the policy, never passed over
  const limitHit = (reason: string) => fixedLimitHit(policy, { ...base, detectedType: detected }, reason, addHit);
  const malformedHit = (reason: string) => {
    if (policy.limits.onMalformed.action !== 'allow') addHit({ ...base, detectedType: detected, rule: 'limits.on_malformed', action: 'block', reason: `malformed: ${reason}`, spec: { ...policy.limits.onMalformed, action: 'block' } });
  };
  for (const p of leaf.nameProblems) malformedHit(p);

  // damage is checked in bounded memory; the part is decoded whole only where it must be
  if (isDecodedEncoding(leaf.cte)) {
    const damage = encodingDamage(body, leaf.cte);
    if (damage.ambiguous && policy.detectTypes) {
      // base64 that goes on after its padding: some readers see a second file there
      const whole = decodeBody(body, leaf.cte);
      for (const at of whole.restarts) {
        const t = detectType(whole.data.subarray(at, at + 4096));
        if (t && !leaf.otherTypes.includes(t)) leaf.otherTypes.push(t);
      }
      if (whole.moreRestarts) limitHit(`${leaf.cte} data resumes after its padding more than ${MAX_BASE64_RESTARTS} times`);
    }
    if (damage.ambiguous && policy.limits.onMalformed.action !== 'allow') {
      const spec = { ...policy.limits.onMalformed, action: 'block' as const };
      addHit({ ...base, detectedType: detected, rule: 'limits.on_malformed', action: 'block', reason: `malformed: ${leaf.cte} text that readers decode differently`, spec });
    } else if (damage.bad && policy.limits.onBadEncoding.action !== 'allow') {
      addHit({ ...base, detectedType: detected, rule: 'limits.on_bad_encoding', action: policy.limits.onBadEncoding.action, reason: `damaged ${leaf.cte} encoding`, spec: policy.limits.onBadEncoding });
    }
  }
  const decoded = (): Buffer => decodeBody(body, leaf.cte).data;

  // archives: member names and types, refined container type (docx/odt/jar are ZIPs)
  // [zip] a part whose decoded end holds a ZIP end record is opened as well, whatever its first
  // bytes: extractors find such archives (data prepended to a ZIP, a PDF or image with a ZIP appended)
  let isZip = detected === ZIP_TYPE || (!detected && /^application\/(x-)?zip(-compressed)?$/.test(declared));
  let zipData: Buffer | undefined;
  if (!isZip && policy.archives.inspect && body.length >= 22 && zipTrailerIn(decodeChunks(body, leaf.cte))) isZip = containsZip((zipData = decoded()));
  const memberHits: Hit[] = [];
  if (isZip && policy.archives.inspect) {
    const rep = inspectZip(zipData ?? decoded(), {
      maxDepth: policy.archives.maxDepth,
      maxEntries: policy.archives.maxEntries,
      maxTotalSize: policy.archives.maxTotalSize,
      maxRatio: policy.archives.maxRatio,
    });
    if (detected === ZIP_TYPE) detected = rep.type;
    if (rep.limit) {
      const spec = policy.archives.onLimit;
      if (spec.action !== 'allow') {
        memberHits.push({ ...base, detectedType: detected, rule: 'archives.on_limit', action: spec.action, reason: `archive not fully inspected: ${rep.limit}`, spec });
      }
    }
    if (rep.malformed) {
      const spec = policy.archives.onAmbiguous;
      if (spec.action !== 'allow') {
        memberHits.push({ ...base, detectedType: detected, rule: 'archives.on_ambiguous', action: spec.action, reason: `archive is damaged or ambiguous (extractors may read it differently): ${rep.malformed}`, spec });
      }
    }
    for (const m of rep.members) {
      if (m.size > (largestMember.get(leaf) ?? 0)) largestMember.set(leaf, m.size);
      if (m.encrypted && policy.archives.onEncrypted.action !== 'allow') {
        memberHits.push({ ...base, detectedType: detected, archivePath: m.path, rule: 'archives.on_encrypted', action: policy.archives.onEncrypted.action, reason: `encrypted archive member ${m.path} cannot be inspected`, spec: policy.archives.onEncrypted });
      }
      // every name a reader could show for the member (header, Unicode Path field, charsets): strictest wins
      const mforms = nameForms(m.names.length ? m.names : [m.name]);
      if (mforms.problems.length > 0 && policy.archives.onAmbiguous.action !== 'allow') {
        memberHits.push({ ...base, detectedType: detected, archivePath: m.path, rule: 'archives.on_ambiguous', action: policy.archives.onAmbiguous.action, reason: `archive member ${m.path.slice(0, 200)}: ${mforms.problems.join('; ')}`, spec: policy.archives.onAmbiguous });
      }
      let fr: ReturnType<typeof filenameDecision>;
      for (const mname of mforms.forms) {
        const d = filenameDecision(policy, mname);
        if (d && (!fr || SEVERITY[d.spec.action] > SEVERITY[fr.spec.action])) fr = d;
      }
      if (fr && fr.spec.action !== 'allow') {
        memberHits.push({ ...base, detectedType: detected, archivePath: m.path, rule: fr.rule, action: fr.spec.action, reason: fr.reason ?? `archive member ${m.path} matches a forbidden file name`, spec: fr.spec });
      }
      if (m.detectedType) {
        const td = typeDecision(policy, m.detectedType);
        if (td.spec.action !== 'allow') {
          memberHits.push({ ...base, detectedType: detected, archivePath: m.path, rule: td.rule, action: td.spec.action, reason: td.reason ?? `archive member ${m.path} is ${m.detectedType}`, spec: td.spec });
        }
      }
    }
  }

  // A message/* part that is a leaf here (sent base64 or quoted-printable, or a type the MIME
  // structure does not open, such as message/global) is shown by clients with its attachments:
  // look inside, and strip or block the whole part when anything in it is not allowed (it cannot be
  // rewritten inside its encoding). A part any of whose names ends in .eml is such a message too,
  // whatever its type: mail clients and mailparser open it as a forwarded message (what does not
  // parse as one is malformed).
  if ((/^message\//.test(declared) || names.some(isEmlName)) && body.length <= policy.limits.maxMessageSize) {
    const inner = toCrlf(decoded());
    const innerHits: Hit[] = [];
    if (depth >= MAX_ENCODED_MESSAGE_DEPTH) {
      innerHits.push({ part: section, rule: 'limits.max_depth', action: 'block', reason: 'encoded forwarded messages nested too deep', spec: { ...policy.limits.onLimit, action: 'block' } });
    } else {
      const parsedInner = parseMime(inner, policy.limits);
      if (parsedInner.limit) innerHits.push({ part: section, rule: parsedInner.limit.rule, action: 'block', reason: parsedInner.limit.reason, spec: { ...policy.limits.onLimit, action: 'block' } });
      for (const m of parsedInner.malformed) {
        if (policy.limits.onMalformed.action !== 'allow') innerHits.push({ part: section, rule: 'limits.on_malformed', action: 'block', reason: `malformed: ${m.reason}`, spec: { ...policy.limits.onMalformed, action: 'block' } });
      }
      forEachLeaf(parsedInner.root, (n) => leaf.inner.push(makeLeaf(inner, n)));
      for (const l of leaf.inner) evaluateLeaf(inner, l, policy, (h) => innerHits.push(h), new Map(), depth + 1);
    }
    const worst = innerHits.reduce<Hit | undefined>((w, h) => (!w || SEVERITY[h.spec.action] > SEVERITY[w.spec.action] ? h : w), undefined);
    if (worst && worst.spec.action !== 'allow') {
      addHit({
        ...base,
        detectedType: worst.detectedType,
        filename: worst.filename ?? filename,
        archivePath: worst.filename ?? worst.archivePath,
        rule: worst.rule,
        action: worst.spec.action,
        reason: `encoded forwarded message: ${worst.reason}`,
        spec: worst.spec,
      });
    }
  }

  // content type: declared (and any other reading of the fields) and detected are all checked; the stricter action wins
  const dd = typeDecision(policy, declared);
  let decision = dd;
  let decidedOn = declared;
  for (const t of [...leaf.otherTypes, ...(detected && detected !== declared ? [detected] : [])]) {
    const dt = typeDecision(policy, t);
    if (stricter(decision.spec, dt.spec) === dt.spec && dt.spec !== decision.spec) {
      decision = dt;
      decidedOn = t;
    }
  }
  if (decision.spec.action !== 'allow') {
    addHit({
      ...base,
      detectedType: detected,
      rule: decision.rule,
      action: decision.spec.action,
      reason: decision.reason ?? (decidedOn === declared ? `content type ${declared} not allowed` : decidedOn === detected ? `detected type ${detected} (declared ${declared}) not allowed` : `content type ${decidedOn} not allowed`),
      spec: decision.spec,
    });
  }
  filenameHits(policy, names, (fr, n) => addHit({ ...base, filename: n, detectedType: detected, rule: fr.rule, action: fr.spec.action, reason: fr.reason ?? `file name ${n} not allowed`, spec: fr.spec }));
  for (const h of memberHits) addHit(h);

  // NUL bytes: 7bit/8bit data never has them (Dovecot serves them as 0x80 in BODY[] but as NUL in
  // BINARY[], C-based readers stop there), and text with them is binary data in disguise (an
  // executable image inside a text part, as some readers show it)
  const nulFault = (reason: string) => {
    if (policy.limits.onMalformed.action !== 'allow') addHit({ ...base, detectedType: detected, rule: 'limits.on_malformed', action: 'block', reason: `malformed: ${reason}`, spec: { ...policy.limits.onMalformed, action: 'block' } });
  };
  if ((leaf.cte === '7bit' || leaf.cte === '8bit') && body.indexOf(0) >= 0) nulFault(`NUL bytes in ${leaf.cte} data`);

  // files embedded in text (uuencode, yEnc, BinHex): judged like attachments; the whole part goes
  if (isTextish(declared) || leaf.cte === 'x-uuencode') {
    const content = leaf.cte === 'x-uuencode' ? body : decoded();
    if (declared.startsWith('text/') && (isDecodedEncoding(leaf.cte) || leaf.cte === 'binary') && content.indexOf(0) >= 0) nulFault('NUL bytes in decoded text');
    const scan = scanEmbedded(content);
    leaf.embedded = scan.files;
    if (scan.limit) limitHit(scan.limit);
    for (const f of leaf.embedded) embeddedHits(policy, leaf, f, addHit);
  }
}

/** One hit per file-name rule that any of the names triggers (the first name that did is reported). */
function filenameHits(policy: CompiledPolicy, names: string[], add: (fr: { spec: ActionSpec; rule: string; reason?: string }, name: string) => void): void {
  const seen = new Set<string>();
  for (const n of names) {
    const fr = filenameDecision(policy, n);
    if (!fr || fr.spec.action === 'allow' || seen.has(fr.rule)) continue;
    seen.add(fr.rule);
    add(fr, n);
  }
}

function embeddedHits(policy: CompiledPolicy, leaf: Leaf, f: EmbeddedFile, addHit: (h: Hit) => void): void {
  const label = `${f.kind} file ${f.name || '(no name)'}`;
  const forms = nameForms([f.name]);
  const names = forms.forms;
  const base = { part: leaf.section, declaredType: leaf.type, filename: names[0] ?? leaf.names[0], target: leaf.target } as const;
  const malformed = (reason: string) => {
    if (policy.limits.onMalformed.action !== 'allow') addHit({ ...base, rule: 'limits.on_malformed', action: 'block', reason: `malformed: ${reason}`, spec: { ...policy.limits.onMalformed, action: 'block' } });
  };
  // a block past MAX_EMBEDDED_BYTES is not decoded: that is a limit hit (evaluateLeaf), not damage
  if (f.kind === 'binhex' && f.damaged && f.data.length === 0 && !f.tooLarge) malformed(`${label} that cannot be decoded`);
  // a damaged block (bad or missing lines, no end) is decoded differently by different readers (Python pads
  // and goes on, others stop): what it hides is not judged reliably, so it is malformed
  else if (f.damaged && !f.tooLarge) malformed(`${label} that is damaged (readers decode it differently)`);
  for (const p of forms.problems) malformed(`${label}: ${p}`);
  filenameHits(policy, names, (fr, n) => addHit({ ...base, filename: n, rule: fr.rule, action: fr.spec.action, reason: `${label} in the text: ${fr.reason ?? `file name ${n} not allowed`}`, spec: fr.spec }));
  let detected = policy.detectTypes ? detectType(f.data.subarray(0, 4096)) : undefined;
  if (detected === ZIP_TYPE && policy.archives.inspect) {
    const rep = inspectZip(f.data, {
      maxDepth: policy.archives.maxDepth,
      maxEntries: policy.archives.maxEntries,
      maxTotalSize: policy.archives.maxTotalSize,
      maxRatio: policy.archives.maxRatio,
    });
    detected = rep.type;
    const problem = rep.limit ?? rep.malformed;
    const spec = (policy.archives as { onAmbiguous?: ActionSpec }).onAmbiguous && rep.malformed && !rep.limit ? (policy.archives as { onAmbiguous: ActionSpec }).onAmbiguous : policy.archives.onLimit;
    if (problem && spec.action !== 'allow') addHit({ ...base, detectedType: detected, rule: rep.limit ? 'archives.on_limit' : 'archives.on_ambiguous', action: spec.action, reason: `${label} in the text: archive not fully inspected: ${problem}`, spec });
    // every member (the archive limits bound them), every reading of its name
    for (const m of rep.members) {
      const mforms = nameForms(m.names.length ? m.names : [m.name]);
      if (mforms.problems.length > 0 && policy.archives.onAmbiguous.action !== 'allow') {
        addHit({ ...base, detectedType: detected, archivePath: m.path, rule: 'archives.on_ambiguous', action: policy.archives.onAmbiguous.action, reason: `${label} in the text: archive member ${m.path.slice(0, 200)}: ${mforms.problems.join('; ')}`, spec: policy.archives.onAmbiguous });
      }
      filenameHits(policy, mforms.forms, (fr) => addHit({ ...base, detectedType: detected, archivePath: m.path, rule: fr.rule, action: fr.spec.action, reason: `${label} in the text: archive member ${m.path} matches a forbidden file name`, spec: fr.spec }));
      if (m.detectedType) {
        const td = typeDecision(policy, m.detectedType);
        if (td.spec.action !== 'allow') addHit({ ...base, detectedType: detected, archivePath: m.path, rule: td.rule, action: td.spec.action, reason: `${label} in the text: archive member ${m.path} is ${m.detectedType}`, spec: td.spec });
      }
    }
  }
  if (detected) {
    const td = typeDecision(policy, detected);
    if (td.spec.action !== 'allow') addHit({ ...base, detectedType: detected, rule: td.rule, action: td.spec.action, reason: `${label} in the text: ${td.reason ?? `detected type ${detected} not allowed`}`, spec: td.spec });
  }
}

/**
 * A fixed bound of the MIME model (src/limits.ts) stopped the inspection of a part: judged like the
 * policy's own limits, `limits.on_limit` as a block (`allow` lets it pass, as for every limit).
 */
function fixedLimitHit(policy: CompiledPolicy, base: Omit<Hit, 'rule' | 'action' | 'reason' | 'spec'>, reason: string, addHit: (h: Hit) => void): void {
  const spec = policy.limits.onLimit;
  if (spec.action !== 'allow') addHit({ ...base, rule: 'limits.on_limit', action: 'block', reason: `not inspected in full: ${reason}`, spec: { ...spec, action: 'block' } });
}

function filenameDecision(policy: CompiledPolicy, name: string): { spec: ActionSpec; rule: string; reason?: string } | undefined {
  const r = matchRules(policy.filenameRules, name);
  if (r && r.spec.action !== 'allow') return { spec: r.spec, rule: `filenames.rules[${r.index}]`, reason: r.reason };
  if (policy.doubleExtension && policy.doubleExtension.action !== 'allow' && doubleExtension(policy, name)) {
    return { spec: policy.doubleExtension, rule: 'filenames.double_extension', reason: `double extension in ${name}` };
  }
  return r ? { spec: r.spec, rule: `filenames.rules[${r.index}]` } : undefined;
}
