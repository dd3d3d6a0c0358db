import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { scanCommand } from '../../src/commands/scan.js';
import type { Scanner, SpamEnvelope, SpamOutcome, SpamScanner } from '../../src/scanners/types.js';
import { POLICIES, REAL } from './helpers.js';
import { scored } from './spam-helpers.js';

function capture() {
  const o: string[] = [];
  const e: string[] = [];
  return { o, e, out: (s: string) => void o.push(s), err: (s: string) => void e.push(s) };
}

describe('postern scan', () => {
  it('clean message: exit 0, output identical', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'postern-scan-'));
    const c = capture();
    const file = join(REAL, 'gmail-mixed.eml');
    const code = await scanCommand([file, '--out', join(dir, 'o.eml')], { policiesDir: POLICIES, ...c });
    expect(code).toBe(0);
    expect(c.o.join('')).toMatch(/: CLEAN \(policy default/);
    expect(readFileSync(join(dir, 'o.eml')).equals(readFileSync(file))).toBe(true);
  });
  it('a dry run by default: the verdict names the id it would be quarantined under, nothing is written', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'postern-scan-'));
    let c = capture();
    const args = [join(REAL, 'forwarded-rfc822-exe.eml'), '--policy', join(POLICIES, 'default.yaml')];
    expect(await scanCommand([...args, '--json'], { policiesDir: '/nonexistent', quarantineDir: join(dir, 'q'), ...c })).toBe(1);
    const j = JSON.parse(c.o.join(''));
    expect(j.verdict.status).toBe('changed');
    expect(j.verdict.quarantineId).toMatch(/^[0-9a-f]{24}$/);
    expect(j.verdict.quarantineFailed).toBeUndefined();
    expect(j.quarantined).toBe(false);
    expect(readdirSync(dir)).toEqual([]);
    c = capture();
    expect(await scanCommand(args, { policiesDir: '/nonexistent', quarantineDir: join(dir, 'q'), ...c })).toBe(1);
    expect(c.o.join('')).toContain(`  would be quarantined as ${j.verdict.quarantineId} (dry run: --quarantine stores it)\n`);
    expect(readdirSync(dir)).toEqual([]);
  });
  it('changed message: exit 1, JSON verdict, quarantined with --quarantine', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'postern-scan-'));
    const c = capture();
    const code = await scanCommand(
      [join(REAL, 'forwarded-rfc822-exe.eml'), '--json', '--quarantine', '--policy', join(POLICIES, 'default.yaml'), '--out', join(dir, 'o.eml')],
      {
        policiesDir: '/nonexistent',
        quarantineDir: join(dir, 'q'),
        ...c,
      },
    );
    expect(code).toBe(1);
    const j = JSON.parse(c.o.join(''));
    expect(j.verdict.status).toBe('changed');
    expect(j.verdict.hits[0].part).toBe('2.2');
    expect(j.verdict.quarantineId).toMatch(/^[0-9a-f]{24}$/);
    expect(readdirSync(join(dir, 'q')).sort()).toEqual([`${j.verdict.quarantineId}.eml`, `${j.verdict.quarantineId}.json`]);
    expect(j.quarantined).toBe(true);
    expect(readFileSync(join(dir, 'o.eml'), 'latin1')).toContain('removed by postern');
  });
  it('human output lists hits; --no-av skips the scanner; a scanner failure is exit 2', async () => {
    let calls = 0;
    const failing: Scanner = {
      name: 'x',
      scan: async () => {
        calls++;
        return { kind: 'error', engine: 'x', reason: 'timeout', message: 'deadline', ms: 5 };
      },
      close: async () => {},
    };
    let c = capture();
    expect(await scanCommand([join(REAL, 'smime-signed-exe.eml')], { policiesDir: POLICIES, scanner: failing, ...c })).toBe(2);
    expect(c.o.join('')).toMatch(/TEMPFAIL/);
    c = capture();
    expect(await scanCommand([join(REAL, 'smime-signed-exe.eml'), '--no-av', '--quarantine'], { policiesDir: POLICIES, scanner: failing, ...c })).toBe(1);
    expect(calls).toBe(1);
    expect(c.o.join('')).toMatch(/STRIP part 1\.2 "tool\.exe" application\/octet-stream \(detected application\/x-msdownload\)/);
    expect(c.o.join('')).toMatch(/quarantine requested but no quarantine directory given/);
  });
  it('usage and errors: exit 2 with a message', async () => {
    let c = capture();
    expect(await scanCommand([], { policiesDir: POLICIES, ...c })).toBe(2);
    expect(c.e.join('')).toMatch(/usage/);
    c = capture();
    expect(await scanCommand(['/nonexistent.eml'], { policiesDir: POLICIES, ...c })).toBe(2);
    const dir = mkdtempSync(join(tmpdir(), 'postern-scan-'));
    writeFileSync(join(dir, 'bad.yaml'), 'limits:\n  max_parts: lots\n');
    c = capture();
    expect(await scanCommand([join(REAL, 'gmail-mixed.eml'), '--policy', 'bad'], { policiesDir: dir, ...c })).toBe(2);
    expect(c.e.join('')).toMatch(/bad\.yaml:2:\d+: limits\.max_parts/);
  });
  it('the spam scanner: tag applied (output, verdict, human line), its tempfail is exit 2, --no-spam skips it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'postern-scan-'));
    writeFileSync(join(dir, 'spammy.yaml'), 'spam: { enabled: true, on_spam: { action: tag, quarantine: false } }\n');
    const msg = join(dir, 'm.eml');
    writeFileSync(msg, 'From: bob@example.test\r\nSubject: offer\r\nMessage-ID: <s@example.test>\r\n\r\nbuy now\r\n');
    const envelopes: SpamEnvelope[] = [];
    let answer: SpamOutcome = scored(7.5);
    const spam: SpamScanner = {
      name: 'scripted-spam',
      check: async (_m, envelope) => {
        envelopes.push(envelope);
        return answer;
      },
      close: async () => {},
    };
    let c = capture();
    expect(await scanCommand([msg, '--policy', 'spammy', '--json', '--out', join(dir, 'o.eml')], { policiesDir: dir, spamScanner: spam, ...c })).toBe(1);
    const j = JSON.parse(c.o.join(''));
    expect(j.verdict).toMatchObject({
      status: 'changed',
      hits: [{ rule: 'spam.on_spam', action: 'tag' }],
      spam: { outcome: 'scored', level: 'spam', applied: 'tag', score: 7.5 },
    });
    expect(readFileSync(join(dir, 'o.eml'), 'latin1')).toContain('Subject: [SPAM] offer');
    expect(envelopes).toHaveLength(1);
    expect(envelopes[0]!.recipients).toEqual([]);
    c = capture();
    expect(await scanCommand([msg, '--policy', 'spammy'], { policiesDir: dir, spamScanner: spam, ...c })).toBe(1);
    expect(c.o.join('')).toContain('\n  spam: spam, score 7.50 (rspamd action "no action"), applied tag\n');
    expect(c.o.join('')).not.toContain('spam check: not used');
    answer = { kind: 'error', engine: 'rspamd', reason: 'timeout', message: 'deadline', ms: 5 };
    c = capture();
    expect(await scanCommand([msg, '--policy', 'spammy'], { policiesDir: dir, spamScanner: spam, ...c })).toBe(2);
    expect(c.o.join('')).toMatch(/TEMPFAIL[\s\S]*\n {2}spam: error \(timeout: deadline\), applied tempfail\n/);
    c = capture();
    expect(await scanCommand([msg, '--policy', 'spammy', '--no-spam'], { policiesDir: dir, spamScanner: spam, ...c })).toBe(0);
    expect(c.o.join('')).toMatch(/: CLEAN [\s\S]*\n {2}spam check: not used\n/);
    expect(envelopes).toHaveLength(3);
    // the default policy has no spam section on: no line about it
    c = capture();
    expect(await scanCommand([msg], { policiesDir: POLICIES, ...c })).toBe(0);
    expect(c.o.join('')).not.toContain('spam');
  });
});
