/**
 * Rules stage: the pure classification of a parsed message under the policy. Structure (size, the
 * MIME model's limits and faults), then every leaf in document order: file names, transfer
 * encoding damage, ZIP archives (member names and types, encryption, limits), forwarded messages
 * sent encoded (opened and judged inside, depth-bounded), content types (declared, every other
 * reading, detected), NUL bytes, and files embedded in text (uuencode, yEnc, BinHex). Findings go
 * to `emit` in that order; the stage returns what the scan stage needs to scan besides the leaves
 * themselves (embedded files, the leaves of opened forwarded messages, the largest ZIP member).
 *
 * Header stripping is a rule too; it is applied where the bytes are written (header-rules.ts).
 */
import { decodeBody, decodeChunks, decodePrefix, encodingDamage, isDecodedEncoding } from '../../mime/decode.js';
import { detectType, ZIP_TYPE } from '../../mime/detect.js';
import { type EmbeddedFile, scanEmbedded } from '../../mime/embedded.js';
import { toCrlf } from '../../mime/eol.js';
import { nameForms } from '../../mime/names.js';
import { forEachLeaf, parseMime } from '../../mime/parse.js';
import { containsZip, inspectZip, type ZipReport, zipTrailerIn } from '../../mime/zip.js';
import { MAX_BASE64_RESTARTS, MAX_ENCODED_MESSAGE_DEPTH } from '../../limits.js';
import type { ActionSpec, CompiledPolicy } from '../load.js';
import { type Emit, type Finding, SEVERITY, stricter } from './findings.js';
import { type Leaf, makeLeaf, type ParsedMessage } from './parse.js';

/** A leaf with what the rules stage found inside it. */
export interface LeafContents {
  leaf: Leaf;
  /** Files found embedded in the text (uuencode, yEnc, BinHex). */
  embedded: EmbeddedFile[];
  /** For a message/* part the rules opened: its leaves (their bodies in the decoded message). */
  inner: LeafContents[];
  /** Largest uncompressed member when the part is a ZIP (0: none); antivirus treats one over max_size as unscanned. */
  largestMember: number;
}

/** The policy's decision for one value: the action spec, the rule's name, its reason text if it has one. */
interface RuleDecision {
  spec: ActionSpec;
  rule: string;
  reason?: string;
}

/** Judges the structure and every leaf of a parsed message; returns the leaves with their contents. */
export function applyRules(p: ParsedMessage, policy: CompiledPolicy, emit: Emit): LeafContents[] {
  structureRules(p, policy, emit);
  return p.leaves.map((leaf) => evaluateLeaf(leaf, policy, emit, 0));
}

/** The message over max_message_size, the MIME model's limit and its faults. */
export function structureRules(p: ParsedMessage, policy: CompiledPolicy, emit: Emit): void {
  const { onLimit, onMalformed } = policy.limits;
  if (!p.tree) {
    if (onLimit.action !== 'allow') {
      emit({ part: '', rule: 'limits.max_message_size', action: 'block', reason: `message larger than ${policy.limits.maxMessageSize} bytes`, spec: { ...onLimit, action: 'block' } });
    }
    return;
  }
  const limit = p.tree.limit;
  if (limit && onLimit.action !== 'allow') emit({ part: limit.section, rule: limit.rule, action: 'block', reason: limit.reason, spec: { ...onLimit, action: 'block' } });
  if (onMalformed.action !== 'allow') {
    for (const m of p.tree.malformed) emit({ part: m.section, rule: 'limits.on_malformed', action: 'block', reason: `malformed: ${m.reason}`, spec: { ...onMalformed, action: 'block' } });
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
}

/** The rules of one leaf, in the order their findings are reported. */
export function evaluateLeaf(leaf: Leaf, policy: CompiledPolicy, emit: Emit, depth: number): LeafContents {
  const j: LeafJudgement = {
    leaf,
    policy,
    emit,
    base: { part: leaf.section, declaredType: leaf.type, filename: leaf.names[0], target: leaf.target },
    detected: policy.detectTypes && leaf.body.length > 0 ? detectType(decodePrefix(leaf.body, leaf.cte)) : undefined,
    otherTypes: [...leaf.otherTypes],
    decoded: () => decodeBody(leaf.body, leaf.cte).data,
  };
  for (const p of leaf.nameProblems) malformed(j, p);
  encodingRules(j);
  const archive = archiveRules(j);
  const inner = forwardedMessageRules(j, depth);
  typeRules(j);
  filenameHits(policy, leaf.names, (fr, n) => emit({ ...j.base, filename: n, detectedType: j.detected, rule: fr.rule, action: fr.spec.action, reason: fr.reason ?? `file name ${n} not allowed`, spec: fr.spec }));
  for (const f of archive.findings) emit(f);
  const embedded = textRules(j);
  return { leaf, embedded, inner, largestMember: archive.largestMember };
}

/** limits.on_malformed, as a block. */
function malformed(j: LeafJudgement, reason: string): void {
  const spec = j.policy.limits.onMalformed;
  if (spec.action !== 'allow') j.emit({ ...j.base, detectedType: j.detected, rule: 'limits.on_malformed', action: 'block', reason: `malformed: ${reason}`, spec: { ...spec, action: 'block' } });
}

/**
 * A fixed bound of the MIME model (src/limits.ts) stopped the inspection of a part: judged like the
 * policy's own limits, `limits.on_limit` as a block (`allow` lets it pass, as for every limit).
 */
function fixedLimit(j: LeafJudgement, reason: string): void {
  const spec = j.policy.limits.onLimit;
  if (spec.action !== 'allow') j.emit({ ...j.base, detectedType: j.detected, rule: 'limits.on_limit', action: 'block', reason: `not inspected in full: ${reason}`, spec: { ...spec, action: 'block' } });
}

/** Transfer encoding damage, checked in bounded memory; the part is decoded whole only where it must be. */
function encodingRules(j: LeafJudgement): void {
  const { leaf, policy } = j;
  if (!isDecodedEncoding(leaf.cte)) return;
  const damage = encodingDamage(leaf.body, leaf.cte);
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

function inspectArchive(policy: CompiledPolicy, data: Buffer): ZipReport {
  const a = policy.archives;
  return inspectZip(data, { maxDepth: a.maxDepth, maxEntries: a.maxEntries, maxTotalSize: a.maxTotalSize, maxRatio: a.maxRatio });
}

/**
 * A ZIP part: its limits, damage, and every member (encryption, every reading of its name, its
 * detected type). A part whose decoded end holds a ZIP end record is opened as well, whatever its
 * first bytes: extractors find such archives (data prepended to a ZIP, a PDF or image with a ZIP
 * appended). The findings are returned, reported after the part's own type and name findings.
 */
function archiveRules(j: LeafJudgement): { findings: Finding[]; largestMember: number } {
  const { leaf, policy } = j;
  const findings: Finding[] = [];
  let largestMember = 0;
  let isZip = j.detected === ZIP_TYPE || (!j.detected && /^application\/(x-)?zip(-compressed)?$/.test(leaf.type));
  let zipData: Buffer | undefined;
  if (!isZip && policy.archives.inspect && leaf.body.length >= 22 && zipTrailerIn(decodeChunks(leaf.body, leaf.cte))) isZip = containsZip((zipData = j.decoded()));
  if (!isZip || !policy.archives.inspect) return { findings, largestMember };
  const rep = inspectArchive(policy, zipData ?? j.decoded());
  if (j.detected === ZIP_TYPE) j.detected = rep.type;
  const detectedType = j.detected;
  const { onLimit, onAmbiguous, onEncrypted } = policy.archives;
  if (rep.limit && onLimit.action !== 'allow') {
    findings.push({ ...j.base, detectedType, rule: 'archives.on_limit', action: onLimit.action, reason: `archive not fully inspected: ${rep.limit}`, spec: onLimit });
  }
  if (rep.malformed && onAmbiguous.action !== 'allow') {
    findings.push({ ...j.base, detectedType, rule: 'archives.on_ambiguous', action: onAmbiguous.action, reason: `archive is damaged or ambiguous (extractors may read it differently): ${rep.malformed}`, spec: onAmbiguous });
  }
  for (const m of rep.members) {
    if (m.size > largestMember) largestMember = m.size;
    const member = { ...j.base, detectedType, archivePath: m.path };
    if (m.encrypted && onEncrypted.action !== 'allow') {
      findings.push({ ...member, rule: 'archives.on_encrypted', action: onEncrypted.action, reason: `encrypted archive member ${m.path} cannot be inspected`, spec: onEncrypted });
    }
    // every name a reader could show for the member (header, Unicode Path field, charsets): strictest wins
    const mforms = nameForms(m.names.length ? m.names : [m.name]);
    if (mforms.problems.length > 0 && onAmbiguous.action !== 'allow') {
      findings.push({ ...member, rule: 'archives.on_ambiguous', action: onAmbiguous.action, reason: `archive member ${m.path.slice(0, 200)}: ${mforms.problems.join('; ')}`, spec: onAmbiguous });
    }
    let fr: RuleDecision | undefined;
    for (const mname of mforms.forms) {
      const d = filenameDecision(policy, mname);
      if (d && (!fr || SEVERITY[d.spec.action] > SEVERITY[fr.spec.action])) fr = d;
    }
    if (fr && fr.spec.action !== 'allow') {
      findings.push({ ...member, rule: fr.rule, action: fr.spec.action, reason: fr.reason ?? `archive member ${m.path} matches a forbidden file name`, spec: fr.spec });
    }
    if (m.detectedType) {
      const td = typeDecision(policy, m.detectedType);
      if (td.spec.action !== 'allow') findings.push({ ...member, rule: td.rule, action: td.spec.action, reason: td.reason ?? `archive member ${m.path} is ${m.detectedType}`, spec: td.spec });
    }
  }
  return { findings, largestMember };
}

/**
 * A message/* part that is a leaf here (sent base64 or quoted-printable, or a type the MIME
 * structure does not open, such as message/global) is shown by clients with its attachments:
 * look inside, and strip or block the whole part when anything in it is not allowed (it cannot be
 * rewritten inside its encoding). A part any of whose names ends in .eml is such a message too,
 * whatever its type: mail clients and mailparser open it as a forwarded message (what does not
 * parse as one is malformed). Returns the leaves inside (empty when not opened).
 */
function forwardedMessageRules(j: LeafJudgement, depth: number): LeafContents[] {
  const { leaf, policy } = j;
  if (!(/^message\//.test(leaf.type) || leaf.names.some(isEmlName)) || leaf.body.length > policy.limits.maxMessageSize) return [];
  const msg = toCrlf(j.decoded());
  const found: Finding[] = [];
  const innerEmit: Emit = (f) => found.push(f);
  const blockOn = (spec: ActionSpec): ActionSpec => ({ ...spec, action: 'block' });
  let inner: LeafContents[] = [];
  if (depth >= MAX_ENCODED_MESSAGE_DEPTH) {
    innerEmit({ part: leaf.section, rule: 'limits.max_depth', action: 'block', reason: 'encoded forwarded messages nested too deep', spec: blockOn(policy.limits.onLimit) });
  } else {
    const tree = parseMime(msg, policy.limits);
    if (tree.limit) innerEmit({ part: leaf.section, rule: tree.limit.rule, action: 'block', reason: tree.limit.reason, spec: blockOn(policy.limits.onLimit) });
    for (const m of tree.malformed) {
      if (policy.limits.onMalformed.action !== 'allow') innerEmit({ part: leaf.section, rule: 'limits.on_malformed', action: 'block', reason: `malformed: ${m.reason}`, spec: blockOn(policy.limits.onMalformed) });
    }
    const leaves: Leaf[] = [];
    forEachLeaf(tree.root, (n) => leaves.push(makeLeaf(msg, n)));
    inner = leaves.map((l) => evaluateLeaf(l, policy, innerEmit, depth + 1));
  }
  const worst = found.reduce<Finding | undefined>((w, f) => (!w || SEVERITY[f.spec.action] > SEVERITY[w.spec.action] ? f : w), undefined);
  if (worst && worst.spec.action !== 'allow') {
    j.emit({
      ...j.base,
      detectedType: worst.detectedType,
      filename: worst.filename ?? j.base.filename,
      archivePath: worst.filename ?? worst.archivePath,
      rule: worst.rule,
      action: worst.spec.action,
      reason: `encoded forwarded message: ${worst.reason}`,
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
    reason: decision.reason ?? (decidedOn === declared ? `content type ${declared} not allowed` : decidedOn === detected ? `detected type ${detected} (declared ${declared}) not allowed` : `content type ${decidedOn} not allowed`),
    spec: decision.spec,
  });
}

/**
 * NUL bytes: 7bit/8bit data never has them (Dovecot serves them as 0x80 in BODY[] but as NUL in
 * BINARY[], C-based readers stop there), and text with them is binary data in disguise (an
 * executable image inside a text part, as some readers show it). Then files embedded in text
 * (uuencode, yEnc, BinHex), judged like attachments: the whole part goes. Returns those files.
 */
function textRules(j: LeafJudgement): EmbeddedFile[] {
  const { leaf } = j;
  if ((leaf.cte === '7bit' || leaf.cte === '8bit') && leaf.body.indexOf(0) >= 0) malformed(j, `NUL bytes in ${leaf.cte} data`);
  if (!isTextish(leaf.type) && leaf.cte !== 'x-uuencode') return [];
  const content = leaf.cte === 'x-uuencode' ? leaf.body : j.decoded();
  if (leaf.type.startsWith('text/') && (isDecodedEncoding(leaf.cte) || leaf.cte === 'binary') && content.indexOf(0) >= 0) malformed(j, 'NUL bytes in decoded text');
  const scan = scanEmbedded(content);
  if (scan.limit) fixedLimit(j, scan.limit);
  for (const f of scan.files) embeddedRules(j, f);
  return scan.files;
}

/** One file embedded in the text of a leaf: its decoding, names, archive members and detected type. */
function embeddedRules(j: LeafJudgement, f: EmbeddedFile): void {
  const { leaf, policy, emit } = j;
  const label = `${f.kind} file ${f.name || '(no name)'}`;
  const forms = nameForms([f.name]);
  const names = forms.forms;
  const base = { part: leaf.section, declaredType: leaf.type, filename: names[0] ?? leaf.names[0], target: leaf.target } as const;
  const malformedFile = (reason: string) => {
    if (policy.limits.onMalformed.action !== 'allow') emit({ ...base, rule: 'limits.on_malformed', action: 'block', reason: `malformed: ${reason}`, spec: { ...policy.limits.onMalformed, action: 'block' } });
  };
  // a block past MAX_EMBEDDED_BYTES is not decoded: that is a limit finding (textRules), not damage
  if (f.kind === 'binhex' && f.damaged && f.data.length === 0 && !f.tooLarge) malformedFile(`${label} that cannot be decoded`);
  // a damaged block (bad or missing lines, no end) is decoded differently by different readers (Python pads
  // and goes on, others stop): what it hides is not judged reliably, so it is malformed
  else if (f.damaged && !f.tooLarge) malformedFile(`${label} that is damaged (readers decode it differently)`);
  for (const p of forms.problems) malformedFile(`${label}: ${p}`);
  filenameHits(policy, names, (fr, n) => emit({ ...base, filename: n, rule: fr.rule, action: fr.spec.action, reason: `${label} in the text: ${fr.reason ?? `file name ${n} not allowed`}`, spec: fr.spec }));
  let detected = policy.detectTypes ? detectType(f.data.subarray(0, 4096)) : undefined;
  if (detected === ZIP_TYPE && policy.archives.inspect) {
    const rep = inspectArchive(policy, f.data);
    detected = rep.type;
    const problem = rep.limit ?? rep.malformed;
    const spec = rep.malformed && !rep.limit ? policy.archives.onAmbiguous : policy.archives.onLimit;
    if (problem && spec.action !== 'allow') emit({ ...base, detectedType: detected, rule: rep.limit ? 'archives.on_limit' : 'archives.on_ambiguous', action: spec.action, reason: `${label} in the text: archive not fully inspected: ${problem}`, spec });
    // every member (the archive limits bound them), every reading of its name
    for (const m of rep.members) {
      const mforms = nameForms(m.names.length ? m.names : [m.name]);
      const onAmbiguous = policy.archives.onAmbiguous;
      if (mforms.problems.length > 0 && onAmbiguous.action !== 'allow') {
        emit({ ...base, detectedType: detected, archivePath: m.path, rule: 'archives.on_ambiguous', action: onAmbiguous.action, reason: `${label} in the text: archive member ${m.path.slice(0, 200)}: ${mforms.problems.join('; ')}`, spec: onAmbiguous });
      }
      filenameHits(policy, mforms.forms, (fr) => emit({ ...base, detectedType: detected, archivePath: m.path, rule: fr.rule, action: fr.spec.action, reason: `${label} in the text: archive member ${m.path} matches a forbidden file name`, spec: fr.spec }));
      if (m.detectedType) {
        const td = typeDecision(policy, m.detectedType);
        if (td.spec.action !== 'allow') emit({ ...base, detectedType: detected, archivePath: m.path, rule: td.rule, action: td.spec.action, reason: `${label} in the text: archive member ${m.path} is ${m.detectedType}`, spec: td.spec });
      }
    }
  }
  if (detected) {
    const td = typeDecision(policy, detected);
    if (td.spec.action !== 'allow') emit({ ...base, detectedType: detected, rule: td.rule, action: td.spec.action, reason: `${label} in the text: ${td.reason ?? `detected type ${detected} not allowed`}`, spec: td.spec });
  }
}

/** One finding per file-name rule that any of the names triggers (the first name that did is reported). */
function filenameHits(policy: CompiledPolicy, names: readonly string[], add: (fr: RuleDecision, name: string) => void): void {
  const seen = new Set<string>();
  for (const n of names) {
    const fr = filenameDecision(policy, n);
    if (!fr || fr.spec.action === 'allow' || seen.has(fr.rule)) continue;
    seen.add(fr.rule);
    add(fr, n);
  }
}

function matchRules(rules: CompiledPolicy['contentRules'], value: string) {
  for (const r of rules) if (r.re.some((re) => re.test(value))) return r;
  return undefined;
}

/** The content_types rule for a type (the default when none matches). */
export function typeDecision(policy: CompiledPolicy, t: string): RuleDecision {
  const r = matchRules(policy.contentRules, t);
  if (r) return { spec: r.spec, rule: `content_types.rules[${r.index}]`, reason: r.reason };
  return { spec: policy.contentDefault, rule: 'content_types.default' };
}

/** The filenames rule for a name, or the double-extension rule; undefined when none applies. */
export function filenameDecision(policy: CompiledPolicy, name: string): RuleDecision | undefined {
  const r = matchRules(policy.filenameRules, name);
  if (r && r.spec.action !== 'allow') return { spec: r.spec, rule: `filenames.rules[${r.index}]`, reason: r.reason };
  if (policy.doubleExtension && policy.doubleExtension.action !== 'allow' && doubleExtension(policy, name)) {
    return { spec: policy.doubleExtension, rule: 'filenames.double_extension', reason: `double extension in ${name}` };
  }
  return r ? { spec: r.spec, rule: `filenames.rules[${r.index}]` } : undefined;
}

function doubleExtension(policy: CompiledPolicy, name: string): boolean {
  const parts = name.toLowerCase().split('.');
  if (parts.length < 3) return false;
  const last = parts[parts.length - 1]!;
  const prev = parts[parts.length - 2]!;
  return policy.dangerousExtensions.has(last) && /^[a-z]{2,5}$/.test(prev) && !policy.dangerousExtensions.has(prev);
}

/** A file name mail clients open as a message (.eml, any case). */
function isEmlName(name: string): boolean {
  return /\.eml$/i.test(name);
}

/** Parts a mail client shows as text and searches for uuencoded (yEnc, BinHex) files. */
function isTextish(type: string): boolean {
  return type.startsWith('text/') || type === 'message/rfc822' || type === 'application/x-uuencode';
}
