// The scan, classify-scan and decide stages on their own (src/policy/stages/): the scan stage's plan
// and runner with a scripted scanner, and table cases for the pure classification and decision,
// including an attacker combining a scanner error, an oversize part and an encrypted archive.
import { describe, expect, it } from 'vitest';
import { EXE, leaf, makeZip, message, multipart, PDF } from '../../scripts/gen-fixtures.js';
import { MAX_LISTED_HITS } from '../../src/limits.js';
import { inspectMessage } from '../../src/policy/engine.js';
import type { CompiledPolicy } from '../../src/policy/load.js';
import { classifyAntivirus, notScanned, outputIsClean, outputNeedsScan, stopsScanning } from '../../src/policy/stages/classify-scan.js';
import { decide } from '../../src/policy/stages/decide.js';
import { type Finding, Findings } from '../../src/policy/stages/findings.js';
import { parseMessage } from '../../src/policy/stages/parse.js';
import { applyRules, type LeafContents } from '../../src/policy/stages/rules.js';
import { planAntivirus, runScanners, type ScanJob, type ScanRecord, type ScanResult } from '../../src/policy/stages/scan.js';
import type { Scanner, ScanOutcome } from '../../src/scanners/types.js';
import {
  defaultPolicyAllParts as defaultPolicy,
  policyFrom as plainPolicyFrom,
  policyFromAllParts as policyFrom,
  defaultPolicy as shippedDefault,
} from './helpers.js';

// part-scanning semantics with fake scanners: scan_parts all (helpers.ts allParts); auto is tested in stages-scan.test.ts and test/scanners/av-detection.test.ts

const CLEAN: ScanOutcome = { kind: 'clean', engine: 'fake', endpoint: 'mem', ms: 1 };
const INFECTED = (v = 'Eicar-Test-Signature'): ScanOutcome => ({ kind: 'infected', engine: 'fake', endpoint: 'mem', viruses: [v], ms: 1 });
const ERROR: ScanOutcome = { kind: 'error', engine: 'fake', reason: 'unavailable', message: 'connection refused', ms: 1 };
const OVERSIZE: ScanOutcome = { kind: 'oversize', engine: 'fake', size: 99, limit: 10 };
const answered = (o: ScanOutcome): ScanResult =>
  o.kind === 'oversize' ? { kind: 'over-scanner-limit', outcome: o, size: 1234 } : { kind: 'answered', outcome: o };

/** Scripted scanner: answers from a list in call order (clean when it runs out). */
class ScriptedScanner implements Scanner {
  readonly name = 'scripted';
  labels: string[] = [];
  constructor(
    private answers: ScanOutcome[] = [],
    readonly chunked = false,
  ) {
    if (chunked) {
      this.scanChunks = async (chunks, info) => {
        for await (const _ of chunks) void _;
        return this.next(info?.label);
      };
    }
  }
  scanChunks?: Scanner['scanChunks'];
  private next(label?: string): ScanOutcome {
    this.labels.push(label ?? '');
    return this.answers.shift() ?? CLEAN;
  }
  async scan(_data: Buffer, info?: { label?: string }) {
    return this.next(info?.label);
  }
  async close() {}
}

const zipWithEncrypted = () => makeZip([{ name: 'secret.txt', data: Buffer.from('hidden'), encrypted: true }]);
/** text (1), a PDF (2), an archive with an encrypted member (3). */
const attackMessage = () =>
  message(
    multipart('mixed', 'b1', [
      leaf({ type: 'text/plain', body: 'hello' }),
      leaf({ type: 'application/pdf', body: PDF, filename: 'a.pdf' }),
      leaf({ type: 'application/zip', body: zipWithEncrypted(), filename: 'a.zip' }),
    ]),
  );

function stagesUpToScan(raw: Buffer, policy: CompiledPolicy) {
  const findings = new Findings();
  const parsed = parseMessage(raw, policy.limits);
  const contents = applyRules(parsed, policy, findings.add);
  return { findings, parsed, contents };
}

describe('scan_parts auto (the default): the decoded objects the raw scan cannot be trusted with', () => {
  const b64Lines = (d: Buffer) => (d.toString('base64').match(/.{1,76}/g) ?? []).join('\r\n');
  const uu = 'begin 644 a.bin\r\n#86)C\r\n`\r\nend';
  const parts = [
    leaf({ type: 'text/plain', body: 'hello' }),
    leaf({ type: 'application/pdf', body: PDF, filename: 'a.pdf' }),
    leaf({ type: 'application/octet-stream', body: 'caf=C3=A9 =\r\nok', encoding: 'quoted-printable', filename: 'q.bin' }),
    // damaged base64 (a junk character at every line end), written by hand: leaf() would encode it
    `Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n${b64Lines(Buffer.concat([PDF, PDF, PDF])).replace(/\r\n/g, '*\r\n')}`,
    leaf({ type: 'text/plain', body: `see\r\n${uu}\r\n` }),
  ];
  it('sends every leaf but plain undamaged base64, and every embedded file', () => {
    const policy = shippedDefault();
    expect(policy.antivirus.scanParts).toBe('auto');
    const { parsed, contents } = stagesUpToScan(message(multipart('mixed', 'b1', parts)), policy);
    expect(planAntivirus(parsed, contents, policy.antivirus).map((j) => j.label)).toEqual([
      'message',
      'part 1',
      'part 3',
      'part 4',
      'part 5',
      'part 5 uuencode file',
    ]);
  });
  it('sends every leaf when the structure is in doubt (a fault the rules would block by default)', () => {
    const policy = plainPolicyFrom('limits: { on_malformed: allow }');
    const raw = message(
      multipart('mixed', 'b1', [
        parts[0]!,
        parts[1]!.replace('Content-Transfer-Encoding: base64', 'Content-Transfer-Encoding: base64\r\nContent-Transfer-Encoding: 7bit'),
      ]),
    );
    const { parsed, contents } = stagesUpToScan(raw, policy);
    expect(parsed.tree!.malformed.length).toBeGreaterThan(0);
    expect(planAntivirus(parsed, contents, policy.antivirus).map((j) => j.label)).toEqual(['message', 'part 1', 'part 2']);
  });
  it('true and false in YAML are all and none', () => {
    expect(plainPolicyFrom('antivirus: { scan_parts: true }').antivirus.scanParts).toBe('all');
    expect(plainPolicyFrom('antivirus: { scan_parts: false }').antivirus.scanParts).toBe('none');
    expect(plainPolicyFrom('antivirus: { scan_parts: none }').antivirus.scanParts).toBe('none');
  });
  it('a ZIP member over max_size counts as unscanned under auto too (the archive went to clamd inside the raw message)', () => {
    const policy = plainPolicyFrom('antivirus: { max_size: 1000 }');
    const zip = makeZip([{ name: 'big.txt', data: Buffer.alloc(4000, 0x61) }]);
    const { parsed, contents } = stagesUpToScan(message(multipart('mixed', 'b1', [leaf({ type: 'application/zip', body: zip, filename: 'z.zip' })])), policy);
    const jobs = planAntivirus(parsed, contents, policy.antivirus);
    expect(jobs.map((j) => j.label)).toEqual(['message']);
    const found: Finding[] = [];
    classifyAntivirus(records(contents, [answered(CLEAN)]), contents, policy, (f) => found.push(f));
    expect(found.map((f) => [f.part, f.rule])).toEqual([['1', 'antivirus.on_oversize']]);
  });
});

describe('scan stage: plan and runner', () => {
  it('plans the message, then each leaf followed by its forwarded parts and embedded files', () => {
    const policy = defaultPolicy();
    const inner = message(multipart('mixed', 'in', [leaf({ type: 'text/plain', body: 'x' }), leaf({ type: 'application/pdf', body: PDF, filename: 'b.pdf' })]));
    const raw = message(multipart('mixed', 'b1', [leaf({ type: 'text/plain', body: 'hello' }), leaf({ type: 'message/rfc822', body: inner })]));
    const { parsed, contents } = stagesUpToScan(raw, policy);
    const jobs = planAntivirus(parsed, contents, policy.antivirus);
    expect(jobs.map((j) => [j.role, j.part, j.label])).toEqual([
      ['message', '', 'message'],
      ['part', '1', 'part 1'],
      ['part', '2', 'part 2'],
      ['forwarded-part', '2', 'part 2 (forwarded part 1)'],
      ['forwarded-part', '2', 'part 2 (forwarded part 2)'],
    ]);
    expect(planAntivirus(parsed, contents, policyFrom('antivirus: { scan_parts: false }').antivirus).map((j) => j.role)).toEqual(['message']);
  });

  it('a message with a lone CR is also scanned with the CR read as a line end', () => {
    const policy = defaultPolicy();
    const raw = Buffer.from('Subject: x\r\n\r\nline one\rline two\r\n', 'latin1');
    const { parsed, contents } = stagesUpToScan(raw, policy);
    expect(planAntivirus(parsed, contents, policy.antivirus).map((j) => j.label)).toEqual(['message', 'message (CR line ends)', 'part 1']);
  });

  for (const chunked of [false, true]) {
    it(`records answers untouched and stops after the answer the policy says stops (chunked: ${chunked})`, async () => {
      const policy = defaultPolicy();
      const { parsed, contents } = stagesUpToScan(attackMessage(), policy);
      const jobs = planAntivirus(parsed, contents, policy.antivirus);
      const s = new ScriptedScanner([CLEAN, OVERSIZE, ERROR, CLEAN], chunked);
      const [report] = await runScanners([{ kind: 'antivirus', scanner: s, jobs, stopAfter: (o) => stopsScanning(policy.antivirus, o) }]);
      expect(report!.records.map((r) => [r.job.label, r.result.kind])).toEqual([
        ['message', 'answered'],
        ['part 1', 'over-scanner-limit'],
        ['part 2', 'answered'],
      ]);
      expect(s.labels).toEqual(['message', 'part 1', 'part 2']); // part 3 never sent
      const allow = policyFrom('antivirus: { on_error: allow }').antivirus;
      const s2 = new ScriptedScanner([CLEAN, OVERSIZE, ERROR, CLEAN], chunked);
      const [all] = await runScanners([{ kind: 'antivirus', scanner: s2, jobs, stopAfter: (o) => stopsScanning(allow, o) }]);
      expect(all!.records).toHaveLength(4);
    });
  }

  it('objects over max_size are not sent; an empty part is not sent', async () => {
    const policy = policyFrom('antivirus: { max_size: 50 }');
    const raw = message(multipart('mixed', 'b1', [leaf({ type: 'text/plain', body: '' }), leaf({ type: 'application/pdf', body: PDF, filename: 'a.pdf' })]));
    const { parsed, contents } = stagesUpToScan(raw, policy);
    const s = new ScriptedScanner();
    const [report] = await runScanners([{ kind: 'antivirus', scanner: s, jobs: planAntivirus(parsed, contents, policy.antivirus), stopAfter: () => false }]);
    expect(report!.records.map((r) => r.result)).toEqual([
      { kind: 'over-max-size', size: raw.length },
      { kind: 'empty' },
      { kind: 'over-max-size', size: PDF.length },
    ]);
    expect(s.labels).toEqual([]);
  });
});

/** Synthetic records for the attack message: message, part 1, part 2, part 3. */
function records(contents: LeafContents[], results: ScanResult[]): ScanRecord[] {
  const jobs: ScanJob[] = [
    { role: 'message', part: '', label: 'message', object: { kind: 'bytes', data: () => Buffer.alloc(0) }, maxSize: 1e9 },
    ...contents.map(
      (c): ScanJob => ({
        role: 'part',
        part: c.leaf.section,
        label: `part ${c.leaf.section}`,
        object: { kind: 'encoded', body: c.leaf.body, cte: c.leaf.cte },
        maxSize: 1e9,
        leaf: c,
      }),
    ),
  ];
  return results.map((result, i) => ({ job: jobs[i]!, result }));
}

describe('classify-scan stage (pure)', () => {
  const contents = () => stagesUpToScan(attackMessage(), defaultPolicy()).contents;
  const table: {
    name: string;
    policy: string;
    results: ScanResult[];
    rows: [string, string, string][];
    tags?: string[];
    tempfail?: boolean;
    viruses?: string[];
  }[] = [
    { name: 'all clean: nothing', policy: '', results: [answered(CLEAN), answered(CLEAN)], rows: [] },
    {
      name: 'a virus in a part: strip that part (on_virus strip)',
      policy: '',
      results: [answered(INFECTED()), answered(CLEAN), answered(INFECTED())],
      rows: [['2', 'antivirus', 'strip']],
      viruses: ['Eicar-Test-Signature'],
    },
    {
      name: 'a virus only the whole message shows: block',
      policy: '',
      results: [answered(INFECTED('Hidden')), answered(CLEAN), answered(CLEAN)],
      rows: [['', 'antivirus', 'block']],
      viruses: ['Hidden'],
    },
    { name: 'error under on_error tempfail: tempfail, no finding', policy: '', results: [answered(ERROR)], rows: [], tempfail: true },
    { name: 'error under on_error block', policy: 'antivirus: { on_error: block }', results: [answered(ERROR)], rows: [['', 'antivirus.on_error', 'block']] },
    {
      name: 'error under on_error allow: a tag, once',
      policy: 'antivirus: { on_error: allow }',
      results: [answered(ERROR), answered(ERROR)],
      rows: [],
      tags: ['X-Postern-AV: unscanned; reason=error; policy=test'],
    },
    {
      name: 'oversize under on_oversize allow: a tag, once',
      policy: 'antivirus: { on_oversize: allow }',
      results: [{ kind: 'over-max-size', size: 5000 }, answered(OVERSIZE)],
      rows: [],
      tags: ['X-Postern-AV: unscanned; reason=oversize; policy=test'],
    },
    {
      name: 'over max_size and over the scanner limit: on_oversize block for each',
      policy: '',
      results: [{ kind: 'over-max-size', size: 5000 }, answered(OVERSIZE)],
      rows: [
        ['', 'antivirus.on_oversize', 'block'],
        ['1', 'antivirus.on_oversize', 'block'],
      ],
    },
    {
      name: 'attacker: oversize, error and a virus together under allow/allow: both tags, the virus still strips',
      policy: 'antivirus: { on_error: allow, on_oversize: allow }',
      results: [answered(CLEAN), answered(OVERSIZE), answered(ERROR), answered(INFECTED())],
      rows: [['3', 'antivirus', 'strip']],
      tags: ['X-Postern-AV: unscanned; reason=oversize; policy=test', 'X-Postern-AV: unscanned; reason=error; policy=test'],
      viruses: ['Eicar-Test-Signature'],
    },
    {
      name: 'attacker: error after an oversize under tempfail: the oversize finding stays, tempfail wins later',
      policy: '',
      results: [answered(OVERSIZE), answered(ERROR)],
      rows: [['', 'antivirus.on_oversize', 'block']],
      tempfail: true,
    },
  ];
  for (const c of table) {
    it(c.name, () => {
      const found: Finding[] = [];
      const policy = c.policy ? policyFrom(c.policy) : policyFrom('name: test');
      const cs = contents();
      const out = classifyAntivirus(records(cs, c.results), cs, policy, (f) => found.push(f));
      expect(found.map((f) => [f.part, f.rule, f.spec.action])).toEqual(c.rows);
      expect(out.tags).toEqual(c.tags ?? []);
      expect(out.tempfail).toBe(c.tempfail ?? false);
      expect(out.viruses).toEqual(c.viruses ?? []);
    });
  }

  it('a ZIP member over max_size counts as unscanned even when the scanner says clean', () => {
    const policy = policyFrom('antivirus: { max_size: 1000 }');
    const zip = makeZip([{ name: 'big.txt', data: Buffer.alloc(4000, 0x61) }]);
    const { contents: cs } = stagesUpToScan(message(multipart('mixed', 'b1', [leaf({ type: 'application/zip', body: zip, filename: 'z.zip' })])), policy);
    const found: Finding[] = [];
    classifyAntivirus(records(cs, [answered(CLEAN), answered(CLEAN)]), cs, policy, (f) => found.push(f));
    expect(found.map((f) => [f.part, f.rule, f.reason])).toEqual([['1', 'antivirus.on_oversize', 'too large to scan (4000 bytes)']]);
  });

  it('stopsScanning only for an error under on_error tempfail', () => {
    expect(stopsScanning(defaultPolicy().antivirus, ERROR)).toBe(true);
    expect(stopsScanning(defaultPolicy().antivirus, OVERSIZE)).toBe(false);
    expect(stopsScanning(policyFrom('antivirus: { on_error: block }').antivirus, ERROR)).toBe(false);
  });

  it.each([
    ['blocked', [], true],
    ['changed', ['V'], true],
    ['changed', [], false],
    ['clean', ['V'], false],
  ] as const)('the output of a %s message with viruses %j is scanned again: %s', (status, viruses, want) => {
    expect(outputNeedsScan(status, viruses)).toBe(want);
  });
  it('only a clean answer lets the output go', () => {
    expect(outputIsClean(answered(CLEAN))).toBe(true);
    for (const r of [answered(INFECTED()), answered(ERROR), answered(OVERSIZE), { kind: 'over-max-size', size: 1 } as const])
      expect(outputIsClean(r)).toBe(false);
  });
});

describe('decide stage (pure)', () => {
  const spec = (action: 'allow' | 'strip' | 'block', quarantine = false) => ({ action, quarantine, log: true });
  const target = parseMessage(attackMessage(), defaultPolicy().limits).leaves[1]!.node;
  const f = (action: 'allow' | 'strip' | 'block', withTarget: boolean, extra: Partial<Finding> = {}): Finding => ({
    part: '2',
    rule: 'r',
    action,
    reason: 'x',
    spec: spec(action),
    ...(withTarget ? { target } : {}),
    ...extra,
  });
  const table: { name: string; findings: Finding[]; tempfail?: boolean; policy?: string; decision: string; actions: string[] }[] = [
    { name: 'nothing found: rewrite (clean when nothing changes)', findings: [], decision: 'rewrite', actions: [] },
    { name: 'an allow finding: rewrite', findings: [f('allow', false)], decision: 'rewrite', actions: ['allow'] },
    { name: 'a strip with a target: rewrite', findings: [f('strip', true)], decision: 'rewrite', actions: ['strip'] },
    { name: 'a strip of the top-level body becomes a block', findings: [f('strip', false)], decision: 'block', actions: ['block'] },
    { name: 'strip + block: block', findings: [f('strip', true), f('block', false)], decision: 'block', actions: ['strip', 'block'] },
    {
      name: 'tempfail beats everything; the findings stay listed behind the reason',
      findings: [f('block', false), f('strip', true)],
      tempfail: true,
      decision: 'tempfail',
      actions: ['tempfail', 'block', 'strip'],
    },
  ];
  for (const c of table) {
    it(c.name, () => {
      const findings = new Findings();
      for (const x of c.findings) findings.add(x);
      const d = decide(findings, { ...notScanned(), tempfail: c.tempfail ?? false }, c.policy ? policyFrom(c.policy) : defaultPolicy());
      expect(d).toBe(c.decision);
      expect(findings.list.map((x) => x.action)).toEqual(c.actions);
    });
  }

  it('signed.on_change block: a strip inside multipart/signed adds a block', () => {
    const raw = message(
      multipart(
        'signed',
        's1',
        [
          multipart('mixed', 'b1', [leaf({ type: 'text/plain', body: 'hi' }), leaf({ type: 'application/x-msdownload', body: EXE, filename: 'a.exe' })]),
          leaf({ type: 'application/pgp-signature', body: 'sig' }),
        ],
        '; protocol="application/pgp-signature"',
      ),
    );
    const rules = 'content_types: { rules: [ { match: [application/x-msdownload], action: strip } ] }';
    for (const [yaml, want] of [
      ['signed: { on_change: block }', 'block'],
      ['signed: { on_change: strip }', 'rewrite'],
    ] as const) {
      const policy = policyFrom(`${yaml}\n${rules}`);
      const { findings } = stagesUpToScan(raw, policy);
      expect(decide(findings, notScanned(), policy)).toBe(want);
      expect(findings.list.some((x) => x.rule === 'signed.on_change')).toBe(want === 'block');
    }
  });

  it('the collector lists the first finding of every outcome past MAX_LISTED_HITS', () => {
    const findings = new Findings();
    for (let i = 0; i < MAX_LISTED_HITS + 50; i++) findings.add(f('strip', true, { part: `p${i}` }));
    findings.add(f('block', false, { part: 'late-block' }));
    findings.add(f('block', false, { part: 'late-block-2' }));
    findings.add({ ...f('block', false, { part: 'late-quarantine' }), spec: spec('block', true) });
    expect(findings.list).toHaveLength(MAX_LISTED_HITS + 2);
    expect(findings.list.slice(-2).map((x) => x.part)).toEqual(['late-block', 'late-quarantine']);
    expect(findings.blocks()).toBe(true);
    expect(findings.wantsQuarantine()).toBe(true);
  });
});

describe('attacker: scanner error + oversize part + encrypted archive together, strictest wins', () => {
  // The scanner answers: message clean, part 1 error, part 2 oversize, part 3 clean. The archive has
  // an encrypted member (archives.on_encrypted). Run through the whole engine and through the stages.
  const answers = () => [CLEAN, ERROR, OVERSIZE, CLEAN];
  const table: { policy: string; status: string; rules: string[]; tags?: RegExp[] }[] = [
    // tempfail: nothing is served, whatever else was found (listed behind the reason)
    { policy: '', status: 'tempfail', rules: ['antivirus.on_error', 'archives.on_encrypted'] },
    // on_error block: the message is blocked; the oversize and the archive findings are listed too
    { policy: 'antivirus: { on_error: block }', status: 'blocked', rules: ['archives.on_encrypted', 'antivirus.on_error', 'antivirus.on_oversize'] },
    // errors pass with a tag, but the oversize part still blocks (default on_oversize)
    { policy: 'antivirus: { on_error: allow }', status: 'blocked', rules: ['archives.on_encrypted', 'antivirus.on_oversize'] },
    // both pass with tags; the encrypted archive is still stripped
    {
      policy: 'antivirus: { on_error: allow, on_oversize: allow }',
      status: 'changed',
      rules: ['archives.on_encrypted'],
      tags: [/^X-Postern-AV: unscanned; reason=oversize/m, /^X-Postern-AV: unscanned; reason=error/m],
    },
    // the archive allowed too: only the tags change the message
    {
      policy: 'antivirus: { on_error: allow, on_oversize: allow }\narchives: { on_encrypted: allow }',
      status: 'changed',
      rules: [],
      tags: [/^X-Postern-AV: unscanned; reason=oversize/m, /^X-Postern-AV: unscanned; reason=error/m],
    },
  ];
  for (const c of table) {
    it(`${c.policy || 'default policy'} -> ${c.status}`, async () => {
      const policy = c.policy ? policyFrom(c.policy) : defaultPolicy();
      const raw = attackMessage();
      const r = await inspectMessage(raw, policy, {}, { scanner: new ScriptedScanner(answers()), quarantine: { put: async () => 'q1' } });
      expect(r.verdict.status).toBe(c.status);
      expect(r.verdict.hits.map((h) => h.rule)).toEqual(c.rules);
      for (const t of c.tags ?? []) expect(r.output.toString('latin1')).toMatch(t);
      if (c.status === 'tempfail') expect(r.output).toBe(raw);
      if (c.status === 'changed' && c.rules.length) expect(r.verdict.quarantineId).toBe('q1');

      // the same through the stages by hand
      const { findings, parsed, contents } = stagesUpToScan(raw, policy);
      const [report] = await runScanners([
        {
          kind: 'antivirus',
          scanner: new ScriptedScanner(answers()),
          jobs: planAntivirus(parsed, contents, policy.antivirus),
          stopAfter: (o) => stopsScanning(policy.antivirus, o),
        },
      ]);
      const scan = classifyAntivirus(report!.records, contents, policy, findings.add);
      const decision = decide(findings, scan, policy);
      expect({ tempfail: 'tempfail', block: 'blocked', rewrite: 'changed' }[decision]).toBe(c.status);
    });
  }
});
