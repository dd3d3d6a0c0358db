import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { simpleParser } from 'mailparser';
import { type CompiledPolicy, compilePolicyText, loadPolicy } from '../../src/policy/load.js';
import type { Scanner, ScanOutcome } from '../../src/scanners/types.js';

export const POLICIES = resolve(__dirname, '../../policies');
export const REAL = resolve(__dirname, '../fixtures/mail/real');

/** The EICAR test string. */
export const EICAR = Buffer.from('X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*', 'latin1');

/** A scanner that flags EICAR in the bytes it is handed (a stored ZIP member, a decoded part, a uudecoded file). */
export class EicarScanner implements Scanner {
  readonly name = 'eicar';
  async scan(data: Buffer): Promise<ScanOutcome> {
    if (data.includes(EICAR)) return { kind: 'infected', engine: 'fake', endpoint: 'mem', viruses: ['Eicar-Test-Signature'], ms: 0 };
    return { kind: 'clean', engine: 'fake', endpoint: 'mem', ms: 0 };
  }
  async close() {}
}

export function defaultPolicy(): CompiledPolicy {
  return loadPolicy('default', POLICIES);
}

/** Compiles inline YAML as a policy named `test` (unless the YAML names itself). */
export function policyFrom(yaml: string): CompiledPolicy {
  return compilePolicyText(yaml, '/virtual/test.yaml');
}

export interface PyPart {
  type: string;
  filename: string | null;
  defects: string[];
  size: number;
}

const PY = `
import sys, json, email
from email import policy
msg = email.message_from_bytes(sys.stdin.buffer.read(), policy=policy.compat32)
out = []
for p in msg.walk():
    payload = p.get_payload(decode=True) if not p.is_multipart() else None
    out.append({"type": p.get_content_type(), "filename": p.get_filename(), "defects": [type(d).__name__ for d in p.defects], "size": len(payload) if payload is not None else -1})
print(json.dumps(out))
`;

/** Parses with Python's email package; returns every part in walk order with its defects. */
export function pythonParts(buf: Buffer): PyPart[] {
  const r = spawnSync('python3', ['-c', PY], { input: buf, maxBuffer: 64 * 1024 * 1024 });
  if (r.status !== 0) throw new Error(`python failed: ${r.stderr.toString()}`);
  return JSON.parse(r.stdout.toString()) as PyPart[];
}

export async function mailparserAttachments(buf: Buffer) {
  const m = await simpleParser(buf);
  return { parsed: m, attachments: m.attachments.map((a) => ({ type: a.contentType, filename: a.filename, size: a.size, content: a.content })) };
}

/**
 * The policy with `antivirus.scan_parts: all`: for tests of the engine's part-scanning semantics
 * with fake scanners, which (unlike clamd, whose MIME parser the default `auto` relies on for
 * plain base64 parts) find nothing in the raw message's encoded attachments.
 */
export function allParts(p: CompiledPolicy): CompiledPolicy {
  return { ...p, antivirus: { ...p.antivirus, scanParts: 'all' } };
}

/** defaultPolicy() with scan_parts: all (allParts). */
export function defaultPolicyAllParts(): CompiledPolicy {
  return allParts(defaultPolicy());
}

/** policyFrom(yaml) with scan_parts: all unless the YAML sets scan_parts itself (allParts). */
export function policyFromAllParts(yaml: string): CompiledPolicy {
  const p = policyFrom(yaml);
  return /scan_parts/.test(yaml) ? p : allParts(p);
}

/**
 * A message with a text part ("see attached") and then one part of these header lines and this
 * body, CRLF line ends (the shape the attacker's-review tests of 2026-12-03 attach their files in).
 */
export function attachmentMessage(partHeaders: string[], body: string): Buffer {
  return Buffer.from(
    [
      'From: a@example.test',
      'To: b@example.test',
      'Subject: x',
      'MIME-Version: 1.0',
      'Content-Type: multipart/mixed; boundary=XX',
      '',
      '--XX',
      'Content-Type: text/plain',
      '',
      'see attached',
      '--XX',
      ...partHeaders,
      '',
      body,
      '--XX--',
      '',
    ].join('\r\n'),
    'latin1',
  );
}
