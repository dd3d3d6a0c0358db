/**
 * Rules stage: the pure classification of a parsed message under the policy. Structure (size, the
 * MIME model's limits and faults), then every leaf in document order: file names, transfer
 * encoding damage, ZIP archives (member names and types, encryption, limits), forwarded messages
 * sent encoded (opened and judged inside, depth-bounded), content types (declared, every other
 * reading, detected), NUL bytes, and files embedded in text (uuencode, begin-base64, yEnc,
 * BinHex) and data: URIs in HTML (src/mime/html-data.ts), which meet the same rules as
 * attachments: the same archive judgement (archive.ts), the same name and type decisions
 * (decisions.ts), *.eml files opened as forwarded messages. One budget per message bounds what the
 * embedded decoders allocate (MAX_EMBEDDED_TOTAL_BYTES) and what its archives inflate
 * (archives.max_total_size), whatever the number of parts, blocks and archives. Findings
 * go to `emit` in that order; the stage returns what the scan stage needs to scan besides the
 * leaves themselves (embedded files, the leaves of opened forwarded messages, the largest ZIP member).
 *
 * Header stripping is a rule too; it is applied where the bytes are written (header-rules.ts).
 */

import { EXEC_SNIFF_WINDOW_BYTES, MAX_BASE64_RESTARTS, MAX_ENCODED_MESSAGE_DEPTH, MAX_OPENED_MESSAGE_LEAVES } from '../../limits.js';
import { contentInfo } from '../../mime/content.js';
import { decodeBody, decodedTail, decodePrefix, type EncodingCheck, encodingDamage, isDecodedEncoding } from '../../mime/decode.js';
import { detectType, EXEC_HEADER_REACH, type ExecutableHit, findExecutable, isExecutableOrArchiveType } from '../../mime/detect.js';
import { type DecodeBudget, type EmbeddedFile, newDecodeBudget, scanEmbedded } from '../../mime/embedded.js';
import { toCrlf } from '../../mime/eol.js';
import { findHiddenArchive, type HiddenScan, scanHidden } from '../../mime/hidden-archive.js';
import { scanHtmlData } from '../../mime/html-data.js';
import { isMessageName, namedAsText, nameForms } from '../../mime/names.js';
import { forEachLeaf, parseMime } from '../../mime/parse.js';
import { CMS_READABLE_TYPE, p7mUnwrapped, sealedTypeAnywhere } from '../../mime/sealed.js';
import { type ArchiveContent, endRecordIn, type InflateBudget, ZIP_TAIL_BYTES } from '../../mime/zip.js';
import type { ActionSpec, CompiledPolicy } from '../load.js';
import { type ArchiveFindingBase, judgeArchive } from './archive.js';
import { filenameHits, typeDecision } from './decisions.js';
import { type Emit, type Finding, SEVERITY, stricter } from './findings.js';
import { type Leaf, makeLeaf, type ParsedMessage } from './parse.js';

export { filenameDecision, type RuleDecision, typeDecision } from './decisions.js';

/** A leaf with what the rules stage found inside it. */
export interface LeafContents {
  leaf: Leaf;
  /** Files found embedded in the text (uuencode, yEnc, BinHex) and the data: URIs of an HTML part. */
  embedded: EmbeddedFile[];
  /**
   * Leaves of the messages the rules opened inside this part (their bodies in the decoded message):
   * the part itself when it is a message/* leaf or named *.eml, and embedded *.eml files.
   */
  inner: LeafContents[];
  /**
   * Largest uncompressed ZIP member anywhere in the part (0: none): its own archive, archives
   * embedded in its text, archives inside the messages it holds. The antivirus treats one over
   * max_size as unscanned (classify-scan.ts), whatever carries the archive.
   */
  largestMember: number;
  /**
   * The part is base64 in the plain layout (src/mime/decode.ts plainBase64), undamaged: clamd's
   * own MIME parser decodes it to the same bytes as postern (docs/performance.md, antivirus), so
   * under `scan_parts: auto` the raw message scan covers it. False for every other encoding or shape,
   * and for a leaf inside CMS content postern opened (clamd does not open CMS: sealedRules).
   */
  plainBase64: boolean;
}

/**
 * What the decoders of one message may still spend: the embedded files' decoded bytes, the archives'
 * inflated bytes (and the bytes of the messages read from archives), the parts of opened messages.
 */
export interface MessageBudget {
  embedded: DecodeBudget;
  inflate: InflateBudget;
  /** Leaves of messages opened inside this one judged so far (MAX_OPENED_MESSAGE_LEAVES). */
  openedLeaves: number;
}

export function newMessageBudget(): MessageBudget {
  return { embedded: newDecodeBudget(), inflate: { inflated: 0 }, openedLeaves: 0 };
}

/** The largest ZIP member of these contents (a loop: a spread of 100,000 would overflow the stack). */
function largestOf(n: number, inner: readonly LeafContents[]): number {
  let m = n;
  for (const i of inner) if (i.largestMember > m) m = i.largestMember;
  return m;
}

/**
 * Judges the structure and every leaf of a parsed message; returns the leaves with their contents.
 * `budget`: the message's (one per message; a test may pass its own to read the counters).
 */
export function applyRules(p: ParsedMessage, policy: CompiledPolicy, emit: Emit, budget: MessageBudget = newMessageBudget()): LeafContents[] {
  structureRules(p, policy, emit);
  return p.leaves.map((leaf) => evaluateLeaf(leaf, policy, emit, 0, budget));
}

/** The message over max_message_size, the MIME model's limit and its faults. */
export function structureRules(p: ParsedMessage, policy: CompiledPolicy, emit: Emit): void {
  const { onLimit, onMalformed } = policy.limits;
  if (!p.tree) {
    if (onLimit.action !== 'allow') {
      emit({
        part: '',
        rule: 'limits.max_message_size',
        action: 'block',
        reason: `message larger than ${policy.limits.maxMessageSize} bytes`,
        spec: { ...onLimit, action: 'block' },
      });
    }
    return;
  }
  const limit = p.tree.limit;
  if (limit && onLimit.action !== 'allow')
    emit({ part: limit.section, rule: limit.rule, action: 'block', reason: limit.reason, spec: { ...onLimit, action: 'block' } });
  if (onMalformed.action !== 'allow') {
    for (const m of p.tree.malformed)
      emit({ part: m.section, rule: 'limits.on_malformed', action: 'block', reason: `malformed: ${m.reason}`, spec: { ...onMalformed, action: 'block' } });
  }
}

/** What the rules of one leaf share: the leaf, its types as refined so far, and how to report. */
interface LeafJudgement {
  leaf: Leaf;
  policy: CompiledPolicy;
  emit: Emit;
  base: Pick<Finding, 'part' | 'declaredType' | 'filename' | 'target'>;
  /** Type from the content's magic number; refined by the archive rules (docx/odt/jar are ZIPs). */
  detected: string | undefined;
  /** Other types a reader may take (the fields' readings, data after base64 padding). */
  otherTypes: string[];
  /** The decoded content (decoded anew on each call: a large part is not kept decoded). */
  decoded: () => Buffer;
  /** The message's decode and inflate budget. */
  budget: MessageBudget;
  /** Declared or named S/MIME or OpenPGP (smimeCarrier). */
  smime: boolean;
}

/** The rules of one leaf, in the order their findings are reported. */
export function evaluateLeaf(leaf: Leaf, policy: CompiledPolicy, emit: Emit, depth: number, budget: MessageBudget): LeafContents {
  // the decoded head: the magic number at 0, and executable headers further in (hiddenExecutableRules)
  const head =
    policy.detectTypes && leaf.body.length > 0 ? decodePrefix(leaf.body, leaf.cte, EXEC_SNIFF_WINDOW_BYTES + EXEC_HEADER_REACH, leaf.plain) : undefined;
  const j: LeafJudgement = {
    leaf,
    policy,
    emit,
    base: { part: leaf.section, declaredType: leaf.type, filename: leaf.names[0], target: leaf.target },
    detected: head ? detectType(head.subarray(0, 4096)) : undefined,
    otherTypes: [...leaf.otherTypes],
    decoded: () => decodeBody(leaf.body, leaf.cte).data,
    budget,
    smime: smimeCarrier(leaf.type, leaf.names),
  };
  // armour anywhere in a carrier declared or named S/MIME or OpenPGP (OpenSSL and gpg skip any text before it)
  if (head && !j.detected && j.smime) j.detected = sealedTypeAnywhere(j.decoded());
  for (const p of leaf.nameProblems) malformed(j, p);
  // one damage check per leaf; for plain base64 it also lets the ZIP pre-check decode only the tail
  const check = encodingDamage(leaf.body, leaf.cte, leaf.plain);
  encodingRules(j, check);
  // executables and archives hidden behind other bytes: one pass over the content, when something
  // asks (src/mime/hidden-archive.ts scanHidden); not in content that is one of them at offset 0
  const at0 = j.detected;
  const searched = head !== undefined && !(at0 && isExecutableOrArchiveType(at0));
  const archives = policy.archives.inspect && policy.archives.onAmbiguous.action !== 'allow';
  let scanned: HiddenScan | undefined;
  const hidden = (): HiddenScan =>
    (scanned ??= searched ? scanHidden(leaf.body, leaf.cte, leaf.plain, { execWhole: declaresMedia(leaf.type), archives, at0 }) : {});
  const archive = judgeArchive(
    {
      detected: j.detected,
      declared: leaf.type,
      data: j.decoded,
      // the parse found the answer while verifying a plain base64 body (src/mime/parse.ts ZIP_END_PROBE)
      mayEndInZip: () =>
        leaf.body.length >= 22 &&
        (leaf.plain?.tailHit !== undefined ? leaf.plain.tailHit : endRecordIn(decodedTail(leaf.body, leaf.cte, ZIP_TAIL_BYTES, check))),
      names: leaf.names,
      hiddenArchive: () => hidden().archive,
    },
    policy,
    j.base,
    '',
    budget.inflate,
  );
  j.detected = archive.detected;
  const sealed = archive.sealed ? sealedRules(j, archive.sealed, leaf.names, leaf.type, depth) : nothingInside();
  const packed = archiveContentRules(j, archive.inside, j.base, '', depth);
  const inner = forwardedMessageRules(j, depth);
  typeRules(j);
  const exec = hidden().exec;
  if (exec) hiddenExecutableFinding(j.emit, policy, { ...j.base, detectedType: exec.type }, exec, leaf.type, '');
  filenameHits(policy, leaf.names, (fr, n) =>
    emit({
      ...j.base,
      filename: n,
      detectedType: j.detected,
      rule: fr.rule,
      action: fr.spec.action,
      reason: fr.reason ?? `file name ${n} not allowed`,
      spec: fr.spec,
    }),
  );
  for (const f of archive.findings) emit(f);
  const text = textRules(j, depth);
  const all = [...inner, ...text.inner, ...sealed.inner, ...packed.inner];
  return {
    leaf,
    embedded: [...text.files, ...sealed.files, ...packed.files],
    inner: all,
    largestMember: largestOf(Math.max(archive.largestMember, text.largestMember, sealed.largestMember, packed.largestMember), all),
    plainBase64: leaf.cte === 'base64' && check.plain !== undefined && !check.bad && !check.ambiguous,
  };
}

/** limits.on_malformed, as a block. */
function malformed(j: LeafJudgement, reason: string): void {
  limitBlock(j.emit, { ...j.base, detectedType: j.detected }, j.policy.limits.onMalformed, 'limits.on_malformed', `malformed: ${reason}`);
}

/**
 * A fixed bound of the MIME model (src/limits.ts) stopped the inspection of a part: judged like the
 * policy's own limits, `limits.on_limit` as a block (`allow` lets it pass, as for every limit).
 */
function fixedLimit(j: LeafJudgement, reason: string): void {
  limitBlock(j.emit, { ...j.base, detectedType: j.detected }, j.policy.limits.onLimit, 'limits.on_limit', `not inspected in full: ${reason}`);
}

/** One of the policy's limits as a block on `base`, unless its action is `allow`. */
function limitBlock(emit: Emit, base: ArchiveFindingBase & Pick<Finding, 'detectedType'>, spec: ActionSpec, rule: string, reason: string): void {
  if (spec.action !== 'allow') emit({ ...base, rule, action: 'block', reason, spec: { ...spec, action: 'block' } });
}

/** Transfer encoding damage, checked in bounded memory; the part is decoded whole only where it must be. */
function encodingRules(j: LeafJudgement, damage: EncodingCheck): void {
  const { leaf, policy } = j;
  if (!isDecodedEncoding(leaf.cte)) return;
  if (damage.ambiguous && policy.detectTypes) {
    // base64 that goes on after its padding: some readers see a second file there
    const whole = decodeBody(leaf.body, leaf.cte);
    for (const at of whole.restarts) {
      const t = detectType(whole.data.subarray(at, at + 4096));
      if (t && !j.otherTypes.includes(t)) j.otherTypes.push(t);
    }
    if (whole.moreRestarts) fixedLimit(j, `${leaf.cte} data resumes after its padding more than ${MAX_BASE64_RESTARTS} times`);
  }
  if (damage.ambiguous && policy.limits.onMalformed.action !== 'allow') {
    malformed(j, `${leaf.cte} text that readers decode differently`);
  } else if (damage.bad && policy.limits.onBadEncoding.action !== 'allow') {
    const spec = policy.limits.onBadEncoding;
    j.emit({ ...j.base, detectedType: j.detected, rule: 'limits.on_bad_encoding', action: spec.action, reason: `damaged ${leaf.cte} encoding`, spec });
  }
}

/**
 * A message/* part that is a leaf here (sent base64 or quoted-printable, or a type the MIME
 * structure does not open, such as message/global) is shown by clients with its attachments:
 * look inside, and strip or block the whole part when anything in it is not allowed (it cannot be
 * rewritten inside its encoding). A part any of whose names ends in .eml (or .mht, .mhtml, .mime,
 * .nws: isEmlName) is such a message too, whatever its type: mail clients and mailparser open it as
 * a forwarded message (what does not parse as one is malformed). Returns the leaves inside (empty
 * when not opened).
 */
function forwardedMessageRules(j: LeafJudgement, depth: number): LeafContents[] {
  const { leaf } = j;
  // a part named `.eml` opens in a mail client whatever its bytes (CMS too: a polyglot's text is
  // read by lenient parsers, attacker's review); `documento.eml.p7m` is read as documento.eml once
  // opened (sealedRules), not as DER here
  const eml =
    /^message\//.test(leaf.type) ||
    (leaf.names.some(isEmlName) && (j.detected !== CMS_READABLE_TYPE || nameForms(contentInfo(leaf.node).names, false).forms.some(isEmlName)));
  if (!eml && !j.smime) return [];
  const content = j.decoded();
  // an S/MIME file in OpenSSL's text form (the default input of `openssl smime -verify`): a MIME entity
  if (!eml && (j.detected === CMS_READABLE_TYPE || !shapesEntity(content))) return [];
  const base = { ...j.base, detectedType: j.detected };
  const inner = judgeForwarded(toCrlf(messageBytes(content, leaf.names)), j.policy, j.emit, base, depth, '', j.budget);
  // Dovecot (the BODYSTRUCTURE, and so every section postern serves of it) and Python's email read
  // a message/* part's body as the message it is without decoding it: a quoted-printable soft line
  // break that joined a boundary line to the text before it hid a.exe from the decoded reading
  // (attacker's review of the render path). The strictest reading decides: both are judged.
  if (!isDecodedEncoding(leaf.cte) || ![leaf.type, ...leaf.otherTypes].some((t) => t.startsWith('message/')) || content.equals(leaf.body)) return inner;
  const raw = toCrlf(leaf.body);
  // no reader finds a field (and so any structure) in a header block without a colon, as in plain
  // base64 text: what makes it malformed (a first line that is not a field) changes no reading
  const blank = raw.indexOf('\r\n\r\n');
  const fields = raw.subarray(0, blank < 0 ? raw.length : blank).includes(0x3a);
  const undecoded = judgeForwarded(raw, j.policy, j.emit, base, depth, 'read undecoded (as Dovecot and Python read it), ', j.budget, fields);
  return fields ? [...inner, ...undecoded] : inner;
}

/** A carrier declared or named S/MIME or OpenPGP: `openssl smime`, gpg and the .p7m tools read it. */
function smimeCarrier(type: string, names: readonly string[]): boolean {
  return /^application\/(?:x-)?(?:pkcs7-|pgp-)/.test(type) || nameForms(names).forms.some((n) => /\.(?:p7m|p7c|p7s|p7b|pem|gpg|pgp|asc)$/i.test(n));
}

/**
 * A forwarded message found inside a part (decoded `msg`): parsed and every leaf judged at
 * `depth + 1`; the strictest finding inside is reported once on the carrier (`base`: its section
 * and strip target), `prefix` starting its reason. Returns the leaves inside.
 */
function judgeForwarded(
  msg: Buffer,
  policy: CompiledPolicy,
  emit: Emit,
  base: ArchiveFindingBase & Pick<Finding, 'detectedType'>,
  depth: number,
  prefix: string,
  budget: MessageBudget,
  malformedCounts = true,
): LeafContents[] {
  const found: Finding[] = [];
  const innerEmit: Emit = (f) => found.push(f);
  const blockOn = (spec: ActionSpec): ActionSpec => ({ ...spec, action: 'block' });
  let inner: LeafContents[] = [];
  const leavesSpent = () =>
    innerEmit({
      part: base.part,
      rule: 'limits.on_limit',
      action: 'block',
      reason: `not inspected in full: more than ${MAX_OPENED_MESSAGE_LEAVES} parts in the messages opened inside this one`,
      spec: blockOn(policy.limits.onLimit),
    });
  if (depth >= MAX_ENCODED_MESSAGE_DEPTH) {
    innerEmit({
      part: base.part,
      rule: 'limits.max_depth',
      action: 'block',
      reason: 'encoded forwarded messages nested too deep',
      spec: blockOn(policy.limits.onLimit),
    });
  } else if (budget.openedLeaves >= MAX_OPENED_MESSAGE_LEAVES) {
    // the budget is spent: not parsed at all (a ZIP of thousands of many-part .eml files)
    leavesSpent();
  } else if (msg.length > policy.limits.maxMessageSize) {
    // (a part never decodes to more than the message; a file embedded in text can: BinHex runs)
    innerEmit({
      part: base.part,
      rule: 'limits.max_message_size',
      action: 'block',
      reason: `forwarded message larger than ${policy.limits.maxMessageSize} bytes`,
      spec: blockOn(policy.limits.onLimit),
    });
  } else {
    const tree = parseMime(msg, policy.limits);
    if (tree.limit) innerEmit({ part: base.part, rule: tree.limit.rule, action: 'block', reason: tree.limit.reason, spec: blockOn(policy.limits.onLimit) });
    for (const m of tree.malformed) {
      if (malformedCounts && policy.limits.onMalformed.action !== 'allow')
        innerEmit({
          part: base.part,
          rule: 'limits.on_malformed',
          action: 'block',
          reason: `malformed: ${m.reason}`,
          spec: blockOn(policy.limits.onMalformed),
        });
    }
    const leaves: Leaf[] = [];
    forEachLeaf(tree.root, (n) => leaves.push(makeLeaf(msg, n)));
    budget.openedLeaves += leaves.length;
    if (budget.openedLeaves > MAX_OPENED_MESSAGE_LEAVES) leavesSpent();
    else inner = leaves.map((l) => evaluateLeaf(l, policy, innerEmit, depth + 1, budget));
  }
  const worst = found.reduce<Finding | undefined>((w, f) => (!w || SEVERITY[f.spec.action] > SEVERITY[w.spec.action] ? f : w), undefined);
  if (worst && worst.spec.action !== 'allow') {
    emit({
      ...base,
      detectedType: worst.detectedType,
      filename: worst.filename ?? base.filename,
      archivePath: worst.filename ?? worst.archivePath,
      rule: worst.rule,
      action: worst.spec.action,
      reason: `${prefix}encoded forwarded message: ${worst.reason}`,
      spec: worst.spec,
    });
  }
  return inner;
}

/** Content type: declared (and any other reading of the fields) and detected are all checked; the stricter action wins. */
function typeRules(j: LeafJudgement): void {
  const { leaf, policy } = j;
  const declared = leaf.type;
  const detected = j.detected;
  let decision = typeDecision(policy, declared);
  let decidedOn = declared;
  for (const t of [...j.otherTypes, ...(detected && detected !== declared ? [detected] : [])]) {
    const dt = typeDecision(policy, t);
    if (stricter(decision.spec, dt.spec) === dt.spec && dt.spec !== decision.spec) {
      decision = dt;
      decidedOn = t;
    }
  }
  if (decision.spec.action === 'allow') return;
  j.emit({
    ...j.base,
    detectedType: detected,
    rule: decision.rule,
    action: decision.spec.action,
    reason:
      decision.reason ??
      (decidedOn === declared
        ? `content type ${declared} not allowed`
        : decidedOn === detected
          ? `detected type ${detected} (declared ${declared}) not allowed`
          : `content type ${decidedOn} not allowed`),
    spec: decision.spec,
  });
}

/** What the text of a leaf carries: its embedded files, the messages among them (opened), their largest ZIP member. */
interface TextContents {
  files: EmbeddedFile[];
  inner: LeafContents[];
  largestMember: number;
}

/**
 * NUL bytes: 7bit/8bit data never has them (Dovecot serves them as 0x80 in BODY[] but as NUL in
 * BINARY[], C-based readers stop there), and text with them is binary data in disguise (an
 * executable image inside a text part, as some readers show it). Then files embedded in text
 * (uuencode, yEnc, BinHex), judged like attachments (embeddedRules), and in an HTML part its data:
 * URIs (dataUriRules).
 */
function textRules(j: LeafJudgement, depth: number): TextContents {
  const { leaf } = j;
  const out: TextContents = { files: [], inner: [], largestMember: 0 };
  if ((leaf.cte === '7bit' || leaf.cte === '8bit') && leaf.body.indexOf(0) >= 0) malformed(j, `NUL bytes in ${leaf.cte} data`);
  if (!isTextish(leaf.type) && !readAsText(leaf) && !isCalendar(leaf) && leaf.cte !== 'x-uuencode') return out;
  const content = leaf.cte === 'x-uuencode' ? leaf.body : j.decoded();
  if (leaf.type.startsWith('text/') && (isDecodedEncoding(leaf.cte) || leaf.cte === 'binary') && content.indexOf(0) >= 0)
    malformed(j, 'NUL bytes in decoded text');
  const found = embeddedScanRules(j, content, depth, '');
  out.files = found.files;
  out.inner = found.inner;
  out.largestMember = found.largestMember;
  if (isHtml(leaf.type)) {
    const html = scanHtmlData(content, j.budget.embedded);
    for (const a of html.ambiguous) malformed(j, `HTML that readers read differently: ${a}`);
    if (html.limit) fixedLimit(j, html.limit);
    out.files.push(...html.files);
    for (const f of html.files) {
      const r = dataUriRules(j, f, depth);
      out.files.push(...r.files);
      out.inner.push(...r.inner);
      out.largestMember = Math.max(out.largestMember, r.largestMember);
    }
  }
  return out;
}

/**
 * The files embedded in `content` (uuencode, begin-base64, yEnc, BinHex: src/mime/embedded.ts), each
 * judged by embeddedRules on the leaf `j` (`outer` starts their reasons), within the message's decode
 * budget: the files (the found ones and those inside them), the messages opened, the largest ZIP member.
 */
function embeddedScanRules(j: LeafJudgement, content: Buffer, depth: number, outer: string): TextContents {
  const scan = scanEmbedded(content, j.budget.embedded);
  if (scan.limit) fixedLimit(j, `${outer}${scan.limit}`);
  const out: TextContents = { files: [...scan.files], inner: [], largestMember: 0 };
  for (const f of scan.files) {
    const r = embeddedRules(j, f, depth, outer);
    out.files.push(...r.files);
    out.inner.push(...r.inner);
    out.largestMember = Math.max(out.largestMember, r.largestMember);
  }
  return out;
}

/** Parts read for data: URIs: HTML, XHTML and SVG (an SVG attachment's <image href="data:...">). */
function isHtml(type: string): boolean {
  return type === 'text/html' || type === 'application/xhtml+xml' || type === 'image/svg+xml';
}

/** Names of one type (a declared alias and the type detect.ts gives): a data: URI declaring the one and holding the other agrees. */
const TYPE_ALIASES: Record<string, string> = {
  'image/jpg': 'image/jpeg',
  'image/pjpeg': 'image/jpeg',
  'application/x-zip-compressed': 'application/zip',
  'application/x-zip': 'application/zip',
};

/**
 * One data: URI of an HTML part, judged like a file embedded in text (embeddedRules): the name its
 * tag gives it (`download`), damage (a payload browsers refuse and other readers decode), the
 * archive rules (declared or detected ZIP), a message/* URI opened as a forwarded message, its
 * type: declared (text/plain when it declares none, as browsers take it) and detected, the stricter
 * wins; and a detected type that differs from the declared one is malformed (an image that is
 * something else). A finding acts on the HTML part, as for embedded files.
 */
function dataUriRules(j: LeafJudgement, f: EmbeddedFile, depth: number): TextContents {
  const { leaf, policy, emit } = j;
  const declared = f.declaredType || 'text/plain';
  const label = `data: URI (${f.declaredType || 'no type'})${f.name ? ` named ${f.name.slice(0, 200)}` : ''}`;
  const prefix = `${label} in the HTML: `;
  const forms = nameForms(f.name ? [f.name] : []);
  const base: ArchiveFindingBase = { part: leaf.section, declaredType: leaf.type, filename: forms.forms[0] ?? leaf.names[0], target: leaf.target };
  const malformedFile = (reason: string) => limitBlock(emit, base, policy.limits.onMalformed, 'limits.on_malformed', `malformed: ${reason}`);
  // not decoded (a bound): the limit finding says so (textRules)
  if (f.tooLarge) return nothingInside();
  if (f.damaged) malformedFile(`${label} whose payload browsers refuse and other readers decode`);
  for (const p of forms.problems) malformedFile(`${label}: ${p}`);
  const sniffed = policy.detectTypes && f.data.length > 0 ? detectType(f.data.subarray(0, 4096)) : undefined;
  const contents = fileContents(j, f, base, prefix, forms.forms, sniffed, declared, /^message\//.test(declared), depth);
  const hidden = policy.detectTypes ? hiddenExecutableIn(f.data, sniffed, declaresMedia(declared)) : undefined;
  if (hidden) hiddenExecutableFinding(emit, policy, { ...base, detectedType: hidden.type }, hidden, declared, prefix);
  const { detected, inner } = contents;
  const canon = (t: string) => TYPE_ALIASES[t] ?? t;
  // the archive rules refine a ZIP (docx, odt, jar): the magic number is what is compared
  const agrees = canon(sniffed ?? '') === canon(declared) || (detected !== undefined && canon(detected) === canon(declared));
  if (sniffed && !agrees) malformedFile(`${label} holds ${detected ?? sniffed}`);
  let td = typeDecision(policy, declared);
  let decidedOn = declared;
  if (detected && detected !== declared) {
    const d = typeDecision(policy, detected);
    if (stricter(td.spec, d.spec) === d.spec && d.spec !== td.spec) [td, decidedOn] = [d, detected];
  }
  if (td.spec.action !== 'allow') {
    const why = decidedOn === declared ? `declared type ${declared} not allowed` : `detected type ${decidedOn} (declared ${declared}) not allowed`;
    emit({ ...base, detectedType: detected, rule: td.rule, action: td.spec.action, reason: `${prefix}${td.reason ?? why}`, spec: td.spec });
  }
  return { files: contents.files, inner, largestMember: contents.largestMember };
}

/** Declared types whose content is never an executable, searched whole: a header anywhere in them is a disguise. */
function declaresMedia(type: string): boolean {
  return /^(image|audio|video|text)\//.test(type);
}

/** The same search in a decoded file embedded in text (already in memory); `whole`: search all of it. */
function hiddenExecutableIn(data: Buffer, sniffed: string | undefined, whole: boolean): ExecutableHit | undefined {
  if (data.length === 0 || (sniffed && isExecutableOrArchiveType(sniffed))) return undefined;
  return findExecutable(data, 0, whole ? data.length : EXEC_SNIFF_WINDOW_BYTES);
}

/** The content-type rules' decision on a hidden executable, reported unless it allows it. */
function hiddenExecutableFinding(
  emit: Emit,
  policy: CompiledPolicy,
  base: ArchiveFindingBase & Pick<Finding, 'detectedType'>,
  hit: ExecutableHit,
  declared: string,
  prefix: string,
): void {
  const d = typeDecision(policy, hit.type);
  if (d.spec.action === 'allow') return;
  const why = `${d.reason ?? `detected type ${hit.type} not allowed`}: ${hit.format} header at byte ${hit.offset} of the decoded content${declared ? ` (declared ${declared})` : ''}`;
  emit({ ...base, rule: d.rule, action: d.spec.action, reason: `${prefix}${why}`, spec: d.spec });
}

/**
 * What a file found in a leaf's content shows to every reader: its names (the file-name rules), its
 * bytes (the archive rules, archive.ts) and, where it opens as a message, the message it holds.
 * Returns the detected type (the archive rules refine a ZIP), the messages opened and the largest ZIP member.
 */
function fileContents(
  j: LeafJudgement,
  f: EmbeddedFile,
  base: ArchiveFindingBase,
  prefix: string,
  names: string[],
  sniffed: string | undefined,
  declared: string,
  opensAsMessage: boolean,
  depth: number,
): TextContents & { detected: string | undefined } {
  const { policy, emit } = j;
  filenameHits(policy, names, (fr, n) =>
    emit({ ...base, filename: n, rule: fr.rule, action: fr.spec.action, reason: `${prefix}${fr.reason ?? `file name ${n} not allowed`}`, spec: fr.spec }),
  );
  const archive = judgeArchive(
    { detected: sniffed, declared, data: () => f.data, mayEndInZip: () => f.data.length >= 22, names, hiddenArchive: () => findHiddenArchive(f.data, sniffed) },
    policy,
    base,
    prefix,
    j.budget.inflate,
  );
  for (const x of archive.findings) emit(x);
  const sealed = archive.sealed ? sealedRules(j, archive.sealed, names, declared, depth, prefix) : nothingInside();
  const packed = archiveContentRules(j, archive.inside, base, prefix, depth);
  const forwarded = opensAsMessage
    ? judgeForwarded(toCrlf(messageBytes(f.data, names)), policy, emit, { ...base, detectedType: archive.detected }, depth, prefix, j.budget)
    : [];
  const inner = [...forwarded, ...sealed.inner, ...packed.inner];
  return {
    detected: archive.detected,
    files: [...sealed.files, ...packed.files],
    inner,
    largestMember: largestOf(Math.max(archive.largestMember, sealed.largestMember, packed.largestMember), inner),
  };
}

/** The type a file without a declared type is judged as when its bytes show none (readers treat it as untyped data). */
const UNTYPED = 'application/octet-stream';

/**
 * One file embedded in the text of a leaf, judged by the same rules as an attachment: its names
 * (every reading; problems are malformed), the archive rules (archive.ts, the same judgement as for
 * an attached ZIP), a *.eml file opened as a forwarded message (as a part named *.eml is), its type
 * (detected; a file whose bytes show no type is judged as application/octet-stream, the type an
 * untyped attachment has, so an allow-list policy is not bypassed by moving a file into the
 * text; a begin-base64 block that goes on after its padding is judged on what starts there too, as
 * a base64 part is); then the embedded-only rule: a damaged block is malformed.
 *
 * What a finding acts on: the text part that carries the block (`leaf.target`), with the rule's own
 * action spec (its quarantine flag included: the original is stored before anything is served, as
 * for an attachment). The block is not cut out of the text: where a block starts and ends is a
 * reading (lenient decoders take indented or mode-less begin lines, missing end lines, other line
 * ends), so bytes outside postern's reading of it may still decode to the file in some reader, and
 * a text sent base64 or quoted-printable would have to be re-encoded around the cut. The whole
 * carrier goes instead: a strip replaces the text part with the deny note, and where the text is the
 * message's only body (nothing to replace) decide.ts turns the strip into a block. That is as
 * strict as the attachment path (the part that holds the file is removed) and never looser.
 * Returns the messages opened and the largest ZIP member.
 */
function embeddedRules(j: LeafJudgement, f: EmbeddedFile, depth: number, outer = ''): TextContents {
  const { leaf, policy, emit } = j;
  const label = f.kind === 'cms' ? `signed file ${f.name || '(no name)'} inside it` : `${f.kind} file ${f.name || '(no name)'}`;
  const prefix = f.kind === 'cms' ? `${outer}${label}: ` : `${outer}${label} in the text: `;
  const forms = nameForms(f.names ?? [f.name]);
  const names = forms.forms;
  const base: ArchiveFindingBase = { part: leaf.section, declaredType: leaf.type, filename: names[0] ?? leaf.names[0], target: leaf.target };
  const malformedFile = (reason: string) => limitBlock(emit, base, policy.limits.onMalformed, 'limits.on_malformed', `malformed: ${reason}`);
  // a block past MAX_EMBEDDED_BYTES is not decoded: that is a limit finding (textRules), not damage
  if (f.kind === 'binhex' && f.damaged && f.data.length === 0 && !f.tooLarge) malformedFile(`${label} that cannot be decoded`);
  // a damaged block (bad or missing lines, no end) is decoded differently by different readers (Python pads
  // and goes on, others stop): what it hides is not judged reliably, so it is malformed
  else if (f.damaged && !f.tooLarge) malformedFile(`${label} that is damaged (readers decode it differently)`);
  for (const p of forms.problems) malformedFile(`${label}: ${p}`);
  const sniffed = policy.detectTypes && f.data.length > 0 ? detectType(f.data.subarray(0, 4096)) : undefined;
  // named `.eml` itself: a message whatever its bytes; `x.eml.p7m` as x.eml only once opened (sealedRules)
  const opensAsMessage =
    nameForms(f.names ?? [f.name], false).forms.some(isEmlName) ||
    (sniffed !== CMS_READABLE_TYPE && (names.some(isEmlName) || (smimeCarrier('', names) && shapesEntity(f.data))));
  const contents = fileContents(j, f, base, prefix, names, sniffed, '', opensAsMessage, depth);
  const hidden = policy.detectTypes ? hiddenExecutableIn(f.data, sniffed, false) : undefined;
  if (hidden) hiddenExecutableFinding(emit, policy, { ...base, detectedType: hidden.type }, hidden, '', prefix);
  const { detected, inner } = contents;
  // its type, and (begin-base64 going on after padding) the type of what some readers see from there on: strictest wins
  let decidedOn = detected ?? UNTYPED;
  let td = typeDecision(policy, decidedOn);
  // a calendar attachment declares its type (FMTTYPE): judged too, the stricter wins
  if (f.kind === 'calendar' && f.declaredType) {
    const d = typeDecision(policy, f.declaredType);
    if (stricter(td.spec, d.spec) === d.spec && d.spec !== td.spec) [td, decidedOn] = [d, f.declaredType];
  }
  for (const at of policy.detectTypes ? (f.restarts ?? []) : []) {
    const t = detectType(f.data.subarray(at, at + 4096));
    const d = t ? typeDecision(policy, t) : undefined;
    if (t && d && stricter(td.spec, d.spec) === d.spec && d.spec !== td.spec) [td, decidedOn] = [d, t];
  }
  if (td.spec.action !== 'allow') {
    const why = decidedOn === UNTYPED && !detected ? `a file of no detected type (judged as ${UNTYPED}) not allowed` : `detected type ${decidedOn} not allowed`;
    emit({ ...base, detectedType: detected, rule: td.rule, action: td.spec.action, reason: `${prefix}${td.reason ?? why}`, spec: td.spec });
  }
  return { files: contents.files, inner, largestMember: contents.largestMember };
}

/** A leaf, and the leaves inside it, that the raw message's scan cannot cover (plainBase64 false). */
function notInRaw(l: LeafContents): LeafContents {
  return { ...l, plainBase64: false, inner: l.inner.map(notInRaw) };
}

/** What a carrier holds when nothing was opened (a new object each time: callers extend it). */
const nothingInside = (): TextContents => ({ files: [], inner: [], largestMember: 0 });

/**
 * The fields that make a MIME entity more than a text body: its type, its transfer encoding, and a
 * disposition (which can name a text `evil.exe`).
 */
const SHAPING_FIELDS = ['content-type', 'content-transfer-encoding', 'content-disposition'];

/** Bytes a reader may drop around a field name: controls, space, 8-bit bytes (CR and LF end the line). */
const trimmed = (c: number): boolean => (c <= 0x20 && c !== 0x0a && c !== 0x0d) || c >= 0x7f;

/**
 * Whether some reader of `content` as a MIME entity sees a field that shapes it (SHAPING_FIELDS)
 * in its header block, i.e. before the first empty line (or anywhere, when there is none): a line
 * whose name is one of them once the bytes around it are dropped, then a colon. Lenient readers
 * (mailparser, Python's email, libmime) skip lines that are not fields, so `hello` or `: x` before
 * `Content-Type:` hides nothing from them, and mailparser trims the name with JavaScript's trim(),
 * which drops `\v`, `\f` and U+00A0 (attacker's review). Without such a line every reader shows the
 * whole as text/plain, whatever other fields it sees (`content-visibility:` in a signed HTML file).
 * One pass over the lines (a regex across line ends was quadratic in a run of CRs: review).
 */
function shapesEntity(content: Buffer): boolean {
  const lf = content.indexOf('\n\n');
  const crlf = content.indexOf('\n\r\n');
  const end = Math.min(lf < 0 ? content.length : lf, crlf < 0 ? content.length : crlf);
  for (let i = 0; i < end; ) {
    let p = i;
    while (p < end && trimmed(content[p]!)) p++;
    let e = p;
    while (e < end && content[e] !== 0x0a && content[e] !== 0x0d && content[e] !== 0x3a /* : */) e++;
    if (content[e] === 0x3a && e > p) {
      let q = e;
      while (q > p && trimmed(content[q - 1]!)) q--;
      if (SHAPING_FIELDS.includes(content.toString('latin1', p, q).toLowerCase())) return true;
    }
    // on to the next line
    let n = e;
    while (n < end && content[n] !== 0x0a && content[n] !== 0x0d) n++;
    i = n + 1;
  }
  return false;
}

/**
 * The content of CMS signed data the archive rules opened (`archive.sealed`: an `invoice.xml.p7m`,
 * an opaque-signed S/MIME message), judged by every reading its readers have:
 * - the file that Windows' .p7m readers and `openssl cms -verify` save, named as the carrier without
 *   `.p7m`: judged as an embedded file (embeddedRules: names, type, archives, hidden executables,
 *   CMS inside CMS), and scanned by the antivirus as one;
 * - the message mail clients show (Thunderbird and Outlook unwrap `application/pkcs7-mime` and
 *   `smime.p7m` and show the content as a MIME entity, attachments included): judged as a forwarded
 *   message, parsed as it is, whenever a reader may see `Content-Type`, `Content-Transfer-Encoding`
 *   or `Content-Disposition` in its header block (shapesEntity: the parse then reports lines that
 *   are not fields as malformed),
 *   whatever the carrier is declared as. Content without them, under a carrier declared or named
 *   S/MIME, is read as a body without header fields (text/plain), as every reader shows it, unless it
 *   holds NUL bytes (a signed PDF: shown as garbage text; the file reading judges its bytes). An XML
 *   invoice (`<?xml ...`, `<p:FatturaElettronica ...`) is such content.
 * A finding acts on the carrier (a signed file cannot be altered inside). Nested past
 * MAX_ENCODED_MESSAGE_DEPTH: `limits.on_limit`.
 */
function sealedRules(j: LeafJudgement, content: Buffer, names: readonly string[], declared: string, depth: number, outer = ''): TextContents {
  if (depth >= MAX_ENCODED_MESSAGE_DEPTH) {
    fixedLimit(j, `${outer}CMS signed content nested more than ${MAX_ENCODED_MESSAGE_DEPTH} levels deep`);
    return nothingInside();
  }
  const forms = nameForms(names).forms;
  const unwrapped = p7mUnwrapped(forms);
  const file: EmbeddedFile = { kind: 'cms', name: unwrapped[0] ?? '', names: unwrapped, data: content, damaged: false };
  const asFile = embeddedRules(j, file, depth + 1, outer);
  const smime = /^application\/(?:x-)?pkcs7-mime$/.test(declared) || forms.some((n) => n.toLowerCase() === 'smime.p7m');
  const shaped = shapesEntity(content);
  let inner: LeafContents[] = [];
  // binary content (NUL bytes) without such fields shows as garbage text: the file reading judges it
  if (shaped || (smime && content.indexOf(0) < 0)) {
    const msg = toCrlf(shaped ? content : Buffer.concat([Buffer.from('\r\n'), content]));
    const base = { ...j.base, detectedType: CMS_READABLE_TYPE };
    inner = judgeForwarded(msg, j.policy, j.emit, base, depth, `${outer}signed (CMS) content read as a message: `, j.budget);
  }
  // clamd's parser of the raw message does not open CMS: nothing inside is left to the raw scan
  const all = [...asFile.inner, ...inner].map(notInRaw);
  return { files: [file, ...asFile.files], inner: all, largestMember: largestOf(asFile.largestMember, all) };
}

/**
 * What the archive rules hand on from inside an archive (src/mime/zip.ts ArchiveContent), read as the
 * same file attached to the message is read:
 * - a member named as a message (`.eml`): a mail client opens it from the extracted archive and
 *   shows its attachments, so it is judged as a forwarded message (a finding strips or blocks the
 *   whole archive; what does not parse as a message is malformed, as for an attached `.eml`);
 * - a member named as encoded text (`.uue`, `.xxe`, `.hqx`): the files in it, as in a text part;
 * - a member named S/MIME (`.p7m`) that is S/MIME text, as `openssl smime` reads it: a message
 *   when a shaping field is in its header block (forwardedMessageRules for an attachment);
 * - the content of CMS signed data opened inside the archive: scanned by the antivirus as a `cms`
 *   file (its names, type and archives were judged as a member), and read as a message where a
 *   reader may (sealedRules: a shaping field in its header block; under `smime.p7m`, text).
 * Nothing inside is left to the raw message's scan (notInRaw). Depth is bounded as for every
 * forwarded message (MAX_ENCODED_MESSAGE_DEPTH); the bytes by the message's inflate budget.
 */
function archiveContentRules(
  j: LeafJudgement,
  inside: readonly ArchiveContent[] | undefined,
  base: ArchiveFindingBase,
  prefix: string,
  depth: number,
): TextContents {
  const out = nothingInside();
  for (const c of inside ?? []) {
    const at = `${prefix}archive member ${c.path.slice(0, 200)}: `;
    const where = { ...base, archivePath: c.path };
    let msg: Buffer | undefined;
    let what = at;
    if (c.kind === 'message') msg = toCrlf(messageBytes(c.data, c.names));
    else if (c.kind === 'text') {
      // the files uuencoded (XXencoded, BinHex) in it, judged as those in a text part are
      const found = embeddedScanRules(j, c.data, depth, at);
      out.files.push(...found.files);
      // (a message uuencoded in an archive member: nothing in it is left to the raw message's scan)
      out.inner.push(...found.inner.map(notInRaw));
      out.largestMember = Math.max(out.largestMember, found.largestMember);
      continue;
    } else if (c.kind === 'smime') {
      if (!shapesEntity(c.data)) continue;
      msg = toCrlf(c.data);
      what = `${at}S/MIME text read as a message: `;
    } else {
      out.files.push({ kind: 'cms', name: c.names[0] ?? '', names: c.names, data: c.data, damaged: false });
      // a content named as a message is its own `message` entry (the member that follows)
      const shaped = !nameForms(c.names).forms.some(isEmlName) && shapesEntity(c.data);
      if (shaped || (c.smime && c.data.indexOf(0) < 0)) {
        msg = toCrlf(shaped ? c.data : Buffer.concat([Buffer.from('\r\n'), c.data]));
        what = `${at}signed (CMS) content read as a message: `;
      }
    }
    if (!msg) continue;
    // the bytes read as messages count against the message's inflate budget: a member read as a
    // message may also be walked as an archive, and that archive hold such members (attacker's review)
    const a = j.policy.archives;
    j.budget.inflate.inflated += msg.length;
    if (j.budget.inflate.inflated > a.maxTotalSize) {
      if (a.onLimit.action !== 'allow')
        j.emit({
          ...where,
          rule: 'archives.on_limit',
          action: a.onLimit.action,
          reason: `${at}not read as a message: the inflate budget of ${a.maxTotalSize} bytes for the message (all its archives) is used up`,
          spec: a.onLimit,
        });
      break;
    }
    const inner = judgeForwarded(
      msg,
      j.policy,
      j.emit,
      { ...where, detectedType: c.kind === 'cms' ? CMS_READABLE_TYPE : undefined },
      depth,
      what,
      j.budget,
    ).map(notInRaw);
    out.inner.push(...inner);
    out.largestMember = largestOf(out.largestMember, inner);
  }
  return out;
}

/**
 * The message a file named as one holds: Apple Mail's `.emlx` starts with a line giving the
 * message's length in bytes, and Mail reads that many (its property list follows: parsed with the
 * message, it made a base64 body damaged, second review). A length past the end: the rest. Other
 * files are the message.
 */
function messageBytes(data: Buffer, names: readonly string[]): Buffer {
  const m = /^[ \t]*(\d{1,12})[ \t]*\r?\n/.exec(data.toString('latin1', 0, Math.min(data.length, 64)));
  if (!m || !nameForms(names).forms.some((n) => /\.emlx$/i.test(n))) return data;
  const start = m[0].length;
  const end = start + Number(m[1]);
  // what follows the length must be the property list (or nothing): otherwise a reader that does not
  // count may show more, so the whole rest is the message (the wider reading)
  const rest = data.toString('latin1', Math.min(end, data.length), Math.min(end + 64, data.length));
  return end <= data.length && /^\s*(?:<\?xml|<!DOCTYPE plist|<plist|$)/.test(rest) ? data.subarray(start, end) : data.subarray(start);
}

/** A name mail readers open as a message: `.eml`, and the names libmime types message/rfc822 (`.mht`, `.mhtml`, `.mime`, `.nws`). */
function isEmlName(name: string): boolean {
  return isMessageName(name);
}

/**
 * Calendars and contact cards that are not text/* (application/ics), or named so (invite.ics,
 * .vcs, .vcf): Outlook imports the files their ATTACH properties carry inline (src/mime/embedded.ts).
 */
function isCalendar(leaf: Leaf): boolean {
  return (
    /^application\/(?:ics|x-ical|x-vcalendar|vcard|x-vcard)$/.test(leaf.type) || nameForms(leaf.names).forms.some((n) => /\.(?:ics|vcs|vcf|ical|ifb)$/i.test(n))
  );
}

/** Parts a mail client shows as text and searches for uuencoded (yEnc, BinHex) files. */
function isTextish(type: string): boolean {
  return type.startsWith('text/') || type === 'message/rfc822' || type === 'application/x-uuencode';
}

/**
 * An untyped part (`application/octet-stream`) whose name says text (`eicar.txt`, `notes.log`):
 * mailparser types such a part by its name, and a reader that shows it as text decodes the files
 * embedded in it (MIME fuzz, seed 34344 case 198863: a uuencoded EICAR in `application/octet-stream;
 * name="eicar.txt"` passed unvetted). Searched like a text part.
 */
function readAsText(leaf: Leaf): boolean {
  return leaf.type === UNTYPED && namedAsText(leaf.names);
}
