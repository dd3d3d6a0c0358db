/**
 * Scan stage: the only code of the engine that talks to scanners. A plan (pure) lists what each
 * scanner is asked to scan; the runner sends it and records what came back, untouched: a scanner's
 * answer, or why an object was not sent (larger than max_size, empty). What an answer means under
 * the policy (on_error, on_oversize, on_virus) is decided by classify-scan.ts, never here.
 *
 * Scanner kinds, one `ScannerRun` each in the list given to `runScanners` (the runs go concurrently,
 * the jobs of one run one after the other):
 * - `antivirus` (clamd, src/scanners/clamd.ts): the raw message, its CR-line-end reading, every
 *   decoded leaf, the leaves of opened forwarded messages and files embedded in text, and afterwards
 *   what would be delivered (`scanOutput`); classified by classify-scan.ts;
 * - `spam` (rspamd, src/scanners/rspamd.ts): one job, the original message as received with the
 *   envelope postern knows (`planSpam`); classified by classify-spam.ts.
 */
import { decodeBody, decodeChunks, decodedSize, decodedSizeBound } from '../../mime/decode.js';
import { crAsLineEnd } from '../../mime/eol.js';
import { rspamdAddress } from '../../scanners/rspamd-protocol.js';
import type { Scanner, ScanOutcome, SpamEnvelope, SpamOutcome, SpamScanner } from '../../scanners/types.js';
import type { CompiledPolicy } from '../load.js';
import type { InspectContext } from '../types.js';
import type { ParsedMessage } from './parse.js';
import type { LeafContents } from './rules.js';

export type ScannerKind = 'antivirus' | 'spam';

/**
 * What a finding about a scanned object is reported as: the message (`message`), its reading with
 * a lone CR as a line end (`message-cr`), a leaf (`part`), a leaf of a forwarded message the rules
 * opened (`forwarded-part`), a file embedded in text (`embedded`), the delivered form (`output`).
 */
export type ScanRole = 'message' | 'message-cr' | 'part' | 'forwarded-part' | 'embedded' | 'output';

/** The bytes a job scans: given (read when the job runs), or a part's encoded body decoded for the scanner. */
export type ScanObject = { kind: 'bytes'; data: () => Buffer } | { kind: 'encoded'; body: Buffer; cte: string };

export interface ScanJob {
  role: ScanRole;
  /** Section findings are reported on ('' = the whole message). */
  part: string;
  /** Label for the scanner's log lines. */
  label: string;
  object: ScanObject;
  /** Larger objects are not sent. */
  maxSize: number;
  /** The leaf a finding is about (its type, names, strip target): the part itself, or the part holding the object. */
  leaf?: LeafContents;
  /** What inside the leaf was scanned, for the finding's reason ('forwarded part 1.2', 'uuencode file a.exe'). */
  what?: string;
}

/** What happened to one job. The scan stage records; it does not judge. */
export type ScanResult =
  /** The scanner answered clean, infected or error. */
  | { kind: 'answered'; outcome: Exclude<ScanOutcome, { kind: 'oversize' }> }
  /** The scanner refused the object as larger than its own limit; `size` is the object's size. */
  | { kind: 'over-scanner-limit'; outcome: Extract<ScanOutcome, { kind: 'oversize' }>; size: number }
  /** Not sent: larger than the job's maxSize. */
  | { kind: 'over-max-size'; size: number }
  /** Not sent: a part that decodes to nothing. */
  | { kind: 'empty' };

export interface ScanRecord {
  job: ScanJob;
  result: ScanResult;
}

export interface ScannerRun {
  kind: 'antivirus';
  scanner: Scanner;
  jobs: readonly ScanJob[];
  /** After this answer nothing more is sent to this scanner (the policy decides: classify-scan.ts stopsScanning). */
  stopAfter: (o: ScanOutcome) => boolean;
}

/** The spam check: one job, the whole message (planSpam). */
export interface SpamRun {
  kind: 'spam';
  scanner: SpamScanner;
  jobs: readonly SpamJob[];
}

export interface SpamJob {
  role: 'message';
  label: string;
  /** The message as received (not its CRLF form: rspamd reads it as an MTA would have). */
  data: () => Buffer;
  envelope: SpamEnvelope;
}

/** What the spam scanner answered for one job (its own outcomes: scored, error, oversize). */
export interface SpamRecord {
  job: SpamJob;
  outcome: SpamOutcome;
}

export interface ScanReport {
  kind: 'antivirus';
  /** One record per job run, in plan order; jobs after a stopping answer have none. */
  records: ScanRecord[];
}

export interface SpamReport {
  kind: 'spam';
  records: SpamRecord[];
}

type ReportOf<R> = R extends SpamRun ? SpamReport : ScanReport;

/**
 * Runs every scanner's jobs: the runs concurrently (an antivirus run and a spam check of the same
 * message wait for each other only at the end), the jobs of one run each after the previous one.
 * Reports come back in the order of `runs`.
 */
export async function runScanners<const R extends readonly (ScannerRun | SpamRun)[]>(runs: R): Promise<{ -readonly [K in keyof R]: ReportOf<R[K]> }> {
  const reports = await Promise.all(runs.map((run) => (run.kind === 'spam' ? runSpam(run) : runAntivirus(run))));
  return reports as { -readonly [K in keyof R]: ReportOf<R[K]> };
}

async function runAntivirus(run: ScannerRun): Promise<ScanReport> {
  const records: ScanRecord[] = [];
  for (const job of run.jobs) {
    const result = await runJob(run.scanner, job);
    records.push({ job, result });
    if ((result.kind === 'answered' || result.kind === 'over-scanner-limit') && run.stopAfter(result.outcome)) break;
  }
  return { kind: 'antivirus', records };
}

async function runSpam(run: SpamRun): Promise<SpamReport> {
  const records: SpamRecord[] = [];
  for (const job of run.jobs) records.push({ job, outcome: await run.scanner.check(job.data(), job.envelope, { label: job.label }) });
  return { kind: 'spam', records };
}

/**
 * The spam plan: the original message with the envelope postern knows. `Queue-Id` is the recovery
 * id (rspamd's log line and postern's join on it); the recipients are the collector's resolved ones,
 * or the authenticated user (IMAP/POP3), those rspamd reads as addresses; the sender
 * is the Return-Path the delivering server wrote, when there is exactly one well-formed one. `User`
 * is never sent: for rspamd it means an authenticated submitter, and it then skips SPF/DKIM/DMARC.
 * Pure.
 */
export function planSpam(p: ParsedMessage, ctx: InspectContext, queueId: string): SpamJob[] {
  const envelope: SpamEnvelope = { queueId, recipients: spamRecipients(ctx) };
  const from = returnPath(p);
  if (from !== undefined) envelope.from = from;
  return [{ role: 'message', label: 'message', data: () => p.raw, envelope }];
}

/**
 * The collector's recipients, else the IMAP/POP3 user, each as rspamd reads it (IDN domains as
 * A-labels); one rspamd cannot read (a plain user name, an SMTPUTF8 local part) is left out rather
 * than failing the check: rspamd would score it as BROKEN_HEADERS, and under on_error tempfail a
 * collector message for such a recipient would never be delivered.
 */
export function spamRecipients(ctx: InspectContext): string[] {
  const given = ctx.recipients ?? (ctx.user === undefined ? [] : [ctx.user]);
  const out: string[] = [];
  for (const r of given) {
    const a = rspamdAddress(r);
    if (a !== null && !out.includes(a)) out.push(a);
  }
  return out;
}

/** The envelope sender from the one Return-Path field (`<a@b>`, or `''` for `<>`); undefined when absent, repeated or not that shape. */
export function returnPath(p: ParsedMessage): string | undefined {
  const root = p.tree?.root;
  if (!root) return undefined;
  const fields = root.fields.filter((f) => f.colon && f.name.trim().toLowerCase() === 'return-path');
  if (fields.length !== 1) return undefined;
  const m = /^<([^<>\s"(),;:\\[\]]*)>$/.exec(fields[0]!.value.replace(/\n/g, '').trim());
  return m ? m[1] : undefined;
}

/**
 * Scans what would be delivered (a deny notice, or a changed message that carried a virus). A
 * notice that is not plain ASCII is sent quoted-printable, and its soft line breaks can split a
 * signature quoted from a hostile file name (MIME fuzz seed 7171 case 6509: an EICAR file name,
 * clean in the raw bytes, whole again for every reader that decodes the note). So when the output
 * has soft line breaks it is scanned a second time with them joined (`=` CRLF removed): only a
 * clean answer to both lets it go out.
 */
export async function scanOutput(scanner: Scanner, output: Buffer, maxSize: number): Promise<ScanResult> {
  const first = await runJob(scanner, { role: 'output', part: '', label: 'output', object: { kind: 'bytes', data: () => output }, maxSize });
  if (first.kind !== 'answered' || first.outcome.kind !== 'clean' || output.indexOf('=\r\n') < 0) return first;
  const joined = () => Buffer.from(output.toString('latin1').replace(/=\r\n/g, ''), 'latin1');
  return runJob(scanner, { role: 'output', part: '', label: 'output (soft line breaks joined)', object: { kind: 'bytes', data: joined }, maxSize });
}

/**
 * The antivirus plan: the message (and, when it has lines ended by a lone CR, which some readers
 * take as line ends, that reading too), then the decoded objects `scan_parts` asks for, each leaf
 * followed by the leaves of a forwarded message it holds and the files embedded in its text:
 * - `all`: every one of them;
 * - `auto` (default): the files postern found embedded in text (uuencode, yEnc, BinHex, data:
 *   URIs; clamd decodes no yEnc), and every leaf except undamaged base64 in the plain layout,
 *   which clamd's own parser of the raw message decodes to the same bytes; every leaf when the
 *   message's structure is in doubt (rawReadingInDoubt). Measured on the detection corpus
 *   (test/scanners/av-corpus.ts, docs/performance.md): the raw message missed a whole-file hash
 *   in quoted-printable and in damaged base64, and files in yEnc;
 * - `none`: nothing but the message.
 * Pure.
 */
export function planAntivirus(p: ParsedMessage, contents: readonly LeafContents[], av: CompiledPolicy['antivirus']): ScanJob[] {
  const maxSize = av.maxSize;
  const jobs: ScanJob[] = [{ role: 'message', part: '', label: 'message', object: { kind: 'bytes', data: () => p.msg }, maxSize }];
  // the CR reading is tried only when the message itself can be sent (it is never shorter)
  if (p.msg.length <= maxSize && p.tree?.bareCr)
    jobs.push({ role: 'message-cr', part: '', label: 'message (CR line ends)', object: { kind: 'bytes', data: () => crAsLineEnd(p.msg) }, maxSize });
  if (av.scanParts === 'none' || !p.tree) return jobs;
  const all = av.scanParts === 'all' || rawReadingInDoubt(p);
  for (const c of contents) {
    const section = c.leaf.section;
    if (all || !c.plainBase64)
      jobs.push({ role: 'part', part: section, label: `part ${section}`, object: { kind: 'encoded', body: c.leaf.body, cte: c.leaf.cte }, maxSize, leaf: c });
    const inner = innerLeaves(c);
    for (const i of inner) {
      if (!(all || !i.plainBase64)) continue;
      const what = `forwarded part ${i.leaf.section}`;
      jobs.push({
        role: 'forwarded-part',
        part: section,
        label: `part ${section} (${what})`,
        object: { kind: 'encoded', body: i.leaf.body, cte: i.leaf.cte },
        maxSize,
        leaf: c,
        what,
      });
    }
    for (const f of [...c.embedded, ...inner.flatMap((i) => i.embedded)]) {
      if (f.data.length === 0) continue;
      jobs.push({
        role: 'embedded',
        part: section,
        label: `part ${section} ${f.kind} file`,
        object: { kind: 'bytes', data: () => f.data },
        maxSize,
        leaf: c,
        what: `${f.kind} file ${f.name || '(no name)'}`,
      });
    }
  }
  return jobs;
}

/**
 * Under `auto`, a virus clamd found only in the raw message may sit in a part that was left to the
 * raw scan: the part jobs `all` would have planned and this run did not, so the virus can be
 * attributed to its part (on_virus strip strips that part instead of blocking the message). Empty
 * unless the raw message (or its CR reading) was found infected and no decoded object was.
 */
export function attributionJobs(p: ParsedMessage, contents: readonly LeafContents[], av: CompiledPolicy['antivirus'], done: readonly ScanRecord[]): ScanJob[] {
  if (av.scanParts !== 'auto') return [];
  const infected = (r: ScanRecord) => r.result.kind === 'answered' && r.result.outcome.kind === 'infected';
  const whole = (r: ScanRecord) => r.job.role === 'message' || r.job.role === 'message-cr';
  if (!done.some((r) => whole(r) && infected(r)) || done.some((r) => !whole(r) && infected(r))) return [];
  // scanning stopped (an error under on_error tempfail): the message is not vetted anyway
  if (done.some((r) => r.result.kind === 'answered' && r.result.outcome.kind === 'error' && av.onError === 'tempfail')) return [];
  const sent = new Set(done.map((r) => r.job.label));
  return planAntivirus(p, contents, { ...av, scanParts: 'all' }).filter((j) => j.role !== 'message' && j.role !== 'message-cr' && !sent.has(j.label));
}

/**
 * The message is one whose structure readers may take differently (a structural fault, a limit
 * that stopped the parse, a CR without LF): clamd's parser may then not see the parts postern
 * and the client see, so under `auto` every decoded part is scanned as well. (The default policy
 * blocks such messages before anything is scanned: limits.on_malformed.)
 */
function rawReadingInDoubt(p: ParsedMessage): boolean {
  const t = p.tree;
  return !t || t.malformed.length > 0 || t.limit !== undefined || t.bareCr;
}

/** The leaves inside an opened message/* part, nested ones included, in document order. */
function innerLeaves(c: LeafContents): LeafContents[] {
  const out: LeafContents[] = [];
  for (const l of c.inner) out.push(l, ...innerLeaves(l));
  return out;
}

async function runJob(scanner: Scanner, job: ScanJob): Promise<ScanResult> {
  if (job.object.kind === 'encoded') return scanEncoded(scanner, job.object.body, job.object.cte, job.maxSize, job.label);
  const data = job.object.data();
  if (data.length > job.maxSize) return { kind: 'over-max-size', size: data.length };
  return answered(await scanner.scan(data, { label: job.label }), () => data.length);
}

function answered(outcome: ScanOutcome, size: () => number): ScanResult {
  return outcome.kind === 'oversize' ? { kind: 'over-scanner-limit', outcome, size: size() } : { kind: 'answered', outcome };
}

/**
 * Scans one decoded part. With a chunk-capable scanner the part is decoded and sent in bounded
 * chunks (a 40 MB attachment is never held decoded); otherwise it is decoded whole for `scan`.
 */
async function scanEncoded(scanner: Scanner, body: Buffer, cte: string, maxSize: number, label: string): Promise<ScanResult> {
  if (!scanner.scanChunks) {
    const data = decodeBody(body, cte).data;
    if (data.length === 0) return { kind: 'empty' };
    if (data.length > maxSize) return { kind: 'over-max-size', size: data.length };
    return answered(await scanner.scan(data, { label }), () => data.length);
  }
  // the exact decoded size costs a pass over the body: only needed when it may be over the limit
  let size = decodedSizeBound(body, cte) > maxSize ? decodedSize(body, cte) : undefined;
  if (size !== undefined && size > maxSize) return { kind: 'over-max-size', size };
  const chunks = decodeChunks(body, cte);
  const first = chunks.next();
  if (first.done) return { kind: 'empty' };
  const all = (function* () {
    yield first.value;
    yield* chunks;
  })();
  const outcome = await scanner.scanChunks(all, size === undefined ? { label } : { label, size });
  return answered(outcome, () => (size ??= decodedSize(body, cte)));
}
