/**
 * The output re-scan sees a signature that postern's own quoted-printable notice splits (MIME fuzz
 * seed 7171 case 6509). A file name holding the EICAR string and a full-width dot makes the strip
 * notice non-ASCII, so it is sent quoted-printable; a soft line break then splits the EICAR string
 * it quotes. The re-scan of the output (the raw bytes) found nothing and the notice went out; every
 * reader that decodes the notice has EICAR whole again. scanOutput (src/policy/stages/scan.ts) now
 * also scans the output with its soft line breaks joined: the message is blocked with a sterile notice.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { inspectMessage } from '../../src/policy/engine.js';
import { scanOutput } from '../../src/policy/stages/scan.js';
import type { Scanner, ScanOutcome } from '../../src/scanners/types.js';
import { defaultPolicy } from './helpers.js';

const EICAR = 'X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*';

/** Infected when the raw bytes it is handed hold the EICAR string (no MIME decoding, as the fuzzer's double). */
class RawEicarScanner implements Scanner {
  readonly name = 'raw-eicar';
  labels: string[] = [];
  async scan(data: Buffer, info?: { label?: string }): Promise<ScanOutcome> {
    this.labels.push(info?.label ?? '');
    if (data.includes(EICAR)) return { kind: 'infected', engine: 'fake', endpoint: 'mem', viruses: ['Eicar-Test-Signature'], ms: 0 };
    return { kind: 'clean', engine: 'fake', endpoint: 'mem', ms: 0 };
  }
  async close() {}
}

const judge = (raw: Buffer, scanner: Scanner) =>
  inspectMessage(raw, defaultPolicy(), { protocol: 'imap', listener: 't', mailbox: 'INBOX', uidValidity: 1, uid: 1 }, { scanner });

describe('output re-scan: a signature split by the notice quoted-printable soft line breaks (fuzz seed 7171 case 6509)', () => {
  it('the fuzzer message: the notice quotes the name with its backslash escaped, so EICAR is nowhere in the output, decoded or not', async () => {
    // Since the deny notice quotes values from the message (src/policy/deny.ts), the `\` of the
    // EICAR string the notice repeats reads `\\`: the notice no longer carries the signature and the
    // infected attachment is stripped. scanOutput's joined re-scan is covered by the tests below.
    const raw = readFileSync(resolve(__dirname, '../fixtures/mime-escapes/eicar-name-split-by-qp-note.eml'));
    const r = await judge(raw, new RawEicarScanner());
    expect(r.verdict.status).toBe('changed');
    expect(r.verdict.hits.map((h) => h.reason)).toContain('virus found: Eicar-Test-Signature');
    const out = r.output.toString('latin1');
    expect(out).not.toContain(EICAR);
    const joined = out.replace(/=\r\n/g, '');
    expect(joined).not.toContain(EICAR);
    const decoded = Buffer.from(
      joined.replace(/=([0-9A-F]{2})/g, (_, h: string) => String.fromCharCode(Number.parseInt(h, 16))),
      'latin1',
    ).toString('utf8');
    expect(decoded).not.toContain(EICAR);
    expect(decoded).toContain('[4\\\\PZX5');
  });

  it('scanOutput: clean raw bytes whose soft line breaks split the signature are not clean', async () => {
    const split = Buffer.from(`Content-Transfer-Encoding: quoted-printable\r\n\r\nname ${EICAR.slice(0, 20)}=\r\n${EICAR.slice(20)}.exe\r\n`, 'latin1');
    const s = new RawEicarScanner();
    const r = await scanOutput(s, split, 1 << 20);
    expect(r.kind === 'answered' && r.outcome.kind).toBe('infected');
    expect(s.labels).toEqual(['output', 'output (soft line breaks joined)']);
  });

  it('scanOutput: one scan when the output has no soft line break, or when the first answer is not clean', async () => {
    const s = new RawEicarScanner();
    const clean = await scanOutput(s, Buffer.from('Subject: x\r\n\r\nhello\r\n'), 1 << 20);
    expect(clean.kind === 'answered' && clean.outcome.kind).toBe('clean');
    const infected = await scanOutput(s, Buffer.from(`Subject: x\r\n\r\n${EICAR}=\r\nmore\r\n`, 'latin1'), 1 << 20);
    expect(infected.kind === 'answered' && infected.outcome.kind).toBe('infected');
    expect(s.labels).toEqual(['output', 'output']);
  });
});
