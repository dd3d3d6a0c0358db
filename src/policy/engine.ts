/**
 * The policy engine: one message in, a verdict and a deterministic sanitised message out.
 *
 * Entry point, for every caller (the IMAP and POP3 inspectors in src/inspect/, `postern scan`, the
 * collector): `inspectMessage(raw, policy, ctx, deps)`.
 * - `raw`: the message bytes as fetched (LF or CRLF line ends).
 * - `ctx` (InspectContext): where it came from (listener, protocol, user, mailbox/uid or msgno;
 *   a collector's account and resolved recipients); recorded in the quarantine metadata.
 * - `deps` (EngineDeps): the scanner (antivirus; none = not scanned), the spam scanner (rspamd;
 *   none = not spam-checked), the quarantine store, a clock. The spam scanner is told the envelope
 *   from `ctx` (stages/scan.ts planSpam): the collector's `recipients`, else `user` when rspamd reads
 *   it as an address.
 * - Result (InspectResult): `verdict.status` says what to do with `output`:
 *     clean    deliver `output` (the input itself, or its CRLF form);
 *     changed  deliver `output` (parts stripped / headers changed), unless `verdict.quarantineFailed`:
 *              then the original could not be kept and must stay where it is (deliver nothing);
 *     blocked  deliver `output`, a notice in place of the message (same quarantine rule);
 *     tempfail the message could not be vetted (scanner unavailable): deliver nothing, retry later.
 *   `verdict.quarantineId` is the id of the stored original; `structure` is the part tree of
 *   `output` (what IMAP serves sections from); `verdict.hits` are the findings, in order.
 * - It never throws for hostile input: limits and malformed structure are findings; an internal
 *   failure blocks the message (fail closed) with `quarantineFailed` set.
 * Nothing in the output depends on the clock, randomness or the process: the recovery id is
 * derived from the original and the policy; only `verdict.scanMs` and the quarantine time vary.
 *
 * `inspect()` is a pipeline of stages (src/policy/stages/), each handing a typed result to the next:
 *   parse          parse.ts          raw -> ParsedMessage: CRLF form, the one MIME model (src/mime/partmap.ts), leaves
 *   rules          rules.ts          ParsedMessage -> findings + LeafContents (embedded files, opened forwarded messages)
 *   scan           scan.ts           plan -> ScanReport: the only scanner I/O; raw answers per object;
 *                                    the antivirus and the spam check run concurrently
 *   classify-scan  classify-scan.ts  ScanRecord[] -> findings, viruses, tags, tempfail (on_virus/on_error/on_oversize)
 *   classify-spam  classify-spam.ts  SpamRecord[] -> findings, X-Spam-* tags, subject prefix, tempfail (spam section)
 *   decide         decide.ts         findings -> tempfail | block | rewrite
 *   rewrite        rewrite.ts        decision -> served bytes (notice, or the message with strips and header rules);
 *                                    a notice, or a changed message that carried a virus, is scanned once more
 *                                    (scan.ts scanOutput) and replaced by a sterile notice unless clean
 *   quarantine     quarantine.ts     the original, stored when a finding asks for it, before anything is returned
 * Findings flow through one bounded collector (stages/findings.ts); header rules live in
 * stages/header-rules.ts, shared with header-only IMAP fetches (applyHeaderRules).
 *
 * One MIME model: the message (normalised to CRLF, which every reader reads the same way) is parsed
 * once by src/mime/partmap.ts, the Dovecot-compatible parser IMAP clients are served from; the
 * policy judges exactly those parts, decoded by the one set of decoders (src/mime/decode.ts) that
 * also serves BINARY; and the structure returned with the output is that parse (or, when the
 * message was changed, the same parser's reading of the output). Whatever two reasonable readers
 * could read differently is a finding (limits.on_malformed), and every file name a client could
 * show is checked.
 */
import { performance } from 'node:perf_hooks';
import { buildPartMap, parsePartTree } from '../mime/partmap.js';
import { encodeDenyBody, renderTemplate } from './deny.js';
import type { CompiledPolicy } from './load.js';
import {
  classifyAntivirus,
  dirtyOutputFinding,
  notScanned,
  outputIsClean,
  outputNeedsScan,
  outputScanFailed,
  type ScanFindings,
  stopsScanning,
} from './stages/classify-scan.js';
import { classifySpam, notChecked, type SpamFindings } from './stages/classify-spam.js';
import { decide } from './stages/decide.js';
import { Findings, publicHit } from './stages/findings.js';
import { type ParsedMessage, parseMessage } from './stages/parse.js';
import { quarantineOriginal, Recovery, recoveryId, type Stored } from './stages/quarantine.js';
import { blockNotice, rewriteMessage } from './stages/rewrite.js';
import { applyRules } from './stages/rules.js';
import {
  attributionJobs,
  planAntivirus,
  planSpam,
  runScanners,
  type ScannerRun,
  type ScanReport,
  type SpamReport,
  type SpamRun,
  scanOutput,
} from './stages/scan.js';
import type { EngineDeps, InspectContext, InspectResult, Verdict } from './types.js';

export { normaliseFilename } from '../mime/names.js';
export type { CompiledPolicy } from './load.js';
export { applyHeaderRules } from './stages/header-rules.js';
export { recoveryId } from './stages/quarantine.js';

/**
 * Inspects one message (the entry point; contract in the header comment). Never throws for hostile
 * input: limits and malformed structure give the policy's action; an unexpected internal failure
 * blocks the message (fail closed) with a notice.
 */
export async function inspectMessage(raw: Buffer, policy: CompiledPolicy, ctx: InspectContext, deps: EngineDeps): Promise<InspectResult> {
  try {
    return await inspect(raw, policy, ctx, deps);
  } catch (e) {
    return failClosed(raw, policy, e);
  }
}

async function inspect(raw: Buffer, policy: CompiledPolicy, ctx: InspectContext, deps: EngineDeps): Promise<InspectResult> {
  const t0 = performance.now();
  const findings = new Findings();
  const parsed = parseMessage(raw, policy.limits);
  const contents = applyRules(parsed, policy, findings.add);
  // the original's digest and recovery id: computed only when something asks (a notice, the quarantine, rspamd, the caller)
  const recovery = new Recovery(raw, policy.name);

  // the scanners run only when nothing blocks already (the notice is scanned instead); the
  // antivirus and the spam check concurrently
  const scanner = policy.antivirus.enabled ? (deps.scanner ?? null) : null;
  const spamScanner = policy.spam.enabled ? (deps.spamScanner ?? null) : null;
  let scan: ScanFindings = notScanned();
  let spam: SpamFindings = notChecked();
  if ((scanner || spamScanner) && !findings.blocks()) {
    // scan_parts auto leaves plain base64 parts to the scanner's own MIME parser: only one that has it
    const av = policy.antivirus.scanParts === 'auto' && !scanner?.readsMime ? { ...policy.antivirus, scanParts: 'all' as const } : policy.antivirus;
    const runs: (ScannerRun | SpamRun)[] = [];
    if (scanner) runs.push({ kind: 'antivirus', scanner, jobs: planAntivirus(parsed, contents, av), stopAfter: (o) => stopsScanning(av, o) });
    if (spamScanner) runs.push({ kind: 'spam', scanner: spamScanner, jobs: planSpam(parsed, ctx, recovery.id) });
    const reports = await runScanners(runs);
    const avReport = reports.find((r): r is ScanReport => r.kind === 'antivirus');
    if (scanner && avReport) {
      // scan_parts auto: a virus only the raw message showed is looked for in the parts left to it
      const more = attributionJobs(parsed, contents, av, avReport.records);
      if (more.length > 0) {
        const [extra] = await runScanners([{ kind: 'antivirus', scanner, jobs: more, stopAfter: (o) => stopsScanning(av, o) }] as const);
        avReport.records.push(...extra.records);
      }
    }
    const spamReport = reports.find((r): r is SpamReport => r.kind === 'spam');
    if (avReport) scan = classifyAntivirus(avReport.records, contents, policy, findings.add);
    if (spamReport) spam = classifySpam(spamReport.records, policy, findings.add);
  }

  const decision = decide(findings, scan, policy, spam);
  let transient = scan.errored;
  const done = (status: Verdict['status'], output: Buffer, stored?: Stored) =>
    result(parsed, policy, findings, scan, spam, status, output, t0, recovery, stored, transient);
  if (decision === 'tempfail') return done('tempfail', raw);

  let { status, output } = rewriteMessage(parsed, decision, findings, [...scan.tags, ...spam.tags], recovery, policy, spam.subjectPrefix);
  const outputScan = scanner && outputNeedsScan(status, scan.viruses) ? await scanOutput(scanner, output, policy.antivirus.maxSize) : undefined;
  if (outputScan && !outputIsClean(outputScan)) {
    // still infected, or not scannable: a notice without message content (made by a failed scan: transient)
    if (outputScanFailed(outputScan)) transient = true;
    if (status !== 'blocked') findings.add(dirtyOutputFinding(scan.viruses, policy));
    status = 'blocked';
    output = blockNotice(parsed, findings, recovery, policy, true);
  }

  const stored = await quarantineOriginal(raw, status, findings, scan.viruses, recovery, policy, ctx, deps);
  return done(status, output, stored);
}

/** The verdict and the part tree of the output (the parse the policy judged when the output is the message). */
function result(
  p: ParsedMessage,
  policy: CompiledPolicy,
  findings: Findings,
  scan: ScanFindings,
  spam: SpamFindings,
  status: Verdict['status'],
  output: Buffer,
  t0: number,
  recovery: Recovery,
  stored?: Stored,
  transient = false,
): InspectResult {
  const verdict: Verdict = {
    policy: policy.name,
    status,
    hits: findings.list.map(publicHit),
    viruses: scan.viruses,
    sizeIn: p.raw.length,
    sizeOut: output.length,
    scanMs: Math.round((performance.now() - t0) * 100) / 100,
  };
  if (spam.verdict) verdict.spam = spam.verdict;
  if (stored?.quarantineId) verdict.quarantineId = stored.quarantineId;
  if (stored?.quarantineFailed) verdict.quarantineFailed = true;
  if (transient) verdict.transient = true;
  const limits = { maxDepth: policy.limits.maxDepth, maxParts: policy.limits.maxParts, maxHeaderSize: policy.limits.maxHeaderSize };
  const structure = p.tree && output === p.msg ? p.tree.root : parsePartTree(output, limits).root;
  return { verdict, output, structure, digest: () => recovery.digest() };
}

function failClosed(raw: Buffer, policy: CompiledPolicy, e: unknown): InspectResult {
  const text = renderTemplate(policy.deny.block, {
    reason: 'the message could not be inspected',
    policy: policy.name,
    action: 'block',
    rule: 'engine',
    recovery: recoveryId(raw, policy.name),
  });
  const { body, cte } = encodeDenyBody(text, '\r\n');
  const output = Buffer.concat([
    Buffer.from(
      `Subject: [postern] message could not be inspected\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: ${cte}\r\nX-Postern-Verdict: blocked; policy=${policy.name}\r\n\r\n`,
      'latin1',
    ),
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
    transient: true,
  };
  const recovery = new Recovery(raw, policy.name);
  return { verdict, output, structure: buildPartMap(output), digest: () => recovery.digest() };
}
