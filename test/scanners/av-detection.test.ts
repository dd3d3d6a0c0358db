/**
 * Which of postern's scan objects finds a file in each shape of the detection corpus
 * (test/scanners/av-corpus.ts) with a real clamd (ScanMail on): the raw message (clamd's own MIME
 * parser) and postern's decoded parts. The table is what docs/performance.md ("Antivirus: what is
 * scanned and why") reports; the assertions are the choice made there: under the default
 * `scan_parts: auto` every case is found, even with every rule that could block it first turned
 * off, and the parts postern scans besides the raw message are exactly those the raw scan cannot
 * be trusted with.
 */
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeBody } from '../../src/mime/decode.js';
import { inspectMessage } from '../../src/policy/engine.js';
import type { CompiledPolicy } from '../../src/policy/load.js';
import { Findings } from '../../src/policy/stages/findings.js';
import { parseMessage } from '../../src/policy/stages/parse.js';
import { applyRules } from '../../src/policy/stages/rules.js';
import { planAntivirus } from '../../src/policy/stages/scan.js';
import { ClamdScanner } from '../../src/scanners/clamd.js';
import type { Scanner, ScanOutcome } from '../../src/scanners/types.js';
import { type ClamdHandle, startClamd } from '../harness/clamd.js';
import { policyFrom } from '../policy/helpers.js';
import { avCorpus } from './av-corpus.js';
import { eicar, hashSample } from './samples.js';

/** Records every object scanned (its label) and whether it was found infected. */
class Recording implements Scanner {
  readonly name = 'recording';
  readonly readsMime = true;
  seen: { label: string; kind: ScanOutcome['kind']; data: Buffer }[] = [];
  constructor(private readonly inner: ClamdScanner) {}
  async scan(data: Buffer, info: { label?: string } = {}): Promise<ScanOutcome> {
    const o = await this.inner.scan(data, info);
    this.seen.push({ label: info.label ?? '', kind: o.kind, data });
    return o;
  }
  async scanChunks(chunks: Iterable<Buffer> | AsyncIterable<Buffer>, info: { label?: string; size?: number } = {}): Promise<ScanOutcome> {
    const kept: Buffer[] = [];
    const o = await this.inner.scanChunks(
      (async function* () {
        for await (const c of chunks) {
          kept.push(c);
          yield c;
        }
      })(),
      info,
    );
    this.seen.push({ label: info.label ?? '', kind: o.kind, data: Buffer.concat(kept) });
    return o;
  }
  async close() {}
}

/** Nothing blocks before the antivirus: only the scanner can find the file. */
const OPEN_RULES = `
name: open
limits: { on_malformed: allow, on_bad_encoding: allow, on_limit: allow }
archives: { on_ambiguous: allow, on_encrypted: allow, on_limit: allow }
filenames: { rules: [], double_extension: allow }
content_types: { default: allow, rules: [] }
`;

let clamd: ClamdHandle;
let clamav: ClamdScanner;

beforeAll(async () => {
  clamd = await startClamd();
  clamav = new ClamdScanner({
    endpoints: [{ host: clamd.host, port: clamd.port }],
    timeoutMs: 15_000,
    healthIntervalMs: 0,
    maxStreamBytes: 25 << 20,
    log: pino({ level: 'silent' }),
  });
  await clamav.ready;
}, 60_000);

afterAll(async () => {
  await clamav?.close();
  await clamd?.stop();
});

const payloads = [
  { payload: 'EICAR (body signature)', data: eicar(), name: 'eicar.txt', wholeFile: false },
  { payload: 'hash sample (whole-file hash)', data: hashSample(), name: 'sample.bin', wholeFile: true },
];
/**
 * Under auto the raw scan alone covers the file in these: no decoded object holding it is sent
 * (the short 7bit text beside it still is); the others send it decoded as well.
 */
const RAW_ONLY_UNDER_AUTO = [
  'ZIP in a ZIP',
  'forwarded message/rfc822 (MIME-parsed)',
  'forwarded message as a .eml attachment',
  'forwarded twice (rfc822 in rfc822)',
  'base64 single-part message',
  'base64 attachment, 76 columns',
  'base64 attachment, one long line',
  'base64 attachment, 4-column lines',
  'base64 attachment, 61-column lines (not a multiple of 4)',
  'base64 attachment, 1-column lines',
  'base64, no padding',
  'ZIP attachment (deflated)',
  'forwarded message/rfc822 sent base64',
];
/** The decoded objects the first pass of a plan sends (before any attribution pass) that hold `payload`. */
function plannedHolding(raw: Buffer, policy: CompiledPolicy, payload: Buffer): string[] {
  const parsed = parseMessage(raw, policy.limits);
  const contents = applyRules(parsed, policy, new Findings().add);
  return planAntivirus(parsed, contents, policy.antivirus)
    .filter((j) => j.role !== 'message' && j.role !== 'message-cr')
    .filter((j) => (j.object.kind === 'bytes' ? j.object.data() : decodeBody(j.object.body, j.object.cte).data).includes(payload))
    .map((j) => j.label);
}

const isRaw = (label: string) => label === 'message' || label === 'message (CR line ends)';

describe('antivirus detection corpus with a real clamd', () => {
  it('per case: found by the raw message, by the decoded parts; found under scan_parts auto', async () => {
    const both = policyFrom(`${OPEN_RULES}antivirus: { scan_parts: all }`);
    const auto = policyFrom(`${OPEN_RULES}antivirus: { scan_parts: auto }`);
    const rows: string[] = [];
    const missedByAuto: string[] = [];
    const rawMissed: string[] = [];
    for (const p of payloads) {
      for (const c of avCorpus(p.data, p.name)) {
        if (p.wholeFile && c.fileChanged) continue;
        const rec = new Recording(clamav);
        await inspectMessage(c.raw, both, {}, { scanner: rec });
        const raw = rec.seen.some((s) => isRaw(s.label) && s.kind === 'infected');
        const parts = rec.seen.some((s) => !isRaw(s.label) && s.label !== 'output' && s.kind === 'infected');
        const a = new Recording(clamav);
        const r = await inspectMessage(c.raw, auto, {}, { scanner: a });
        const partsScanned = a.seen.filter((s) => !isRaw(s.label) && s.label !== 'output').length;
        // the decoded objects the plan sends, before any attribution pass, that hold the payload
        const fileObjects = plannedHolding(c.raw, auto, p.data);
        rows.push(
          `| ${p.payload} | ${c.name} | ${c.shape} | ${raw ? 'found' : '**missed**'} | ${parts ? 'found' : 'missed'} | ${r.verdict.viruses.length ? 'found' : '**missed**'} (${partsScanned} part objects) |`,
        );
        if (!r.verdict.viruses.length) missedByAuto.push(`${p.payload}: ${c.name}`);
        if (RAW_ONLY_UNDER_AUTO.includes(c.name)) expect(fileObjects, `${p.payload}: ${c.name}`).toEqual([]);
        else if (c.shape !== 'ambiguous') expect(fileObjects.length, `${p.payload}: ${c.name}`).toBeGreaterThan(0);
        if (!raw) rawMissed.push(`${p.payload}: ${c.name} [${c.shape}] parts ${partsScanned}`);
      }
    }
    console.log(
      ['| payload | case | shape | raw message (clamd ScanMail) | decoded parts | scan_parts: auto |', '|---|---|---|---|---|---|', ...rows].join('\n'),
    );
    console.log(`raw missed: ${rawMissed.join('; ') || 'none'}`);
    expect(missedByAuto).toEqual([]);
  }, 240_000);

  it('default policy (auto): a virus only the raw scan saw is attributed to its part, which is stripped', async () => {
    const { defaultPolicy } = await import('../policy/helpers.js');
    const c = avCorpus(eicar(), 'eicar.txt').find((x) => x.name === 'base64 attachment, 76 columns')!;
    const rec = new Recording(clamav);
    const r = await inspectMessage(c.raw, defaultPolicy(), {}, { scanner: rec });
    expect(r.verdict.status).toBe('changed');
    expect(r.verdict.hits).toEqual([expect.objectContaining({ part: '2', rule: 'antivirus', action: 'strip' })]);
    // the raw message and the text part, then the attribution pass sends the attachment; then the output
    expect(rec.seen.map((s) => [s.label, s.kind])).toEqual([
      ['message', 'infected'],
      ['part 1', 'clean'],
      ['part 2', 'infected'],
      ['output', 'clean'],
    ]);
    // a clean message of the same shape costs the raw message and the text part only
    const clean = new Recording(clamav);
    const k = await inspectMessage(avCorpus(Buffer.from('harmless'), 'a.txt').find((x) => x.name === c.name)!.raw, defaultPolicy(), {}, { scanner: clean });
    expect(k.verdict.status).toBe('clean');
    expect(clean.seen.map((s) => s.label)).toEqual(['message', 'part 1']);
  });
});
