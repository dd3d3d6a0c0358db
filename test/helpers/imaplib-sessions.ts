/**
 * A reconnecting client's sessions against an inspecting postern (test/helpers/inspect-instance.ts),
 * driven by python3's imaplib, for the tests of the verdict store's IMAP paths (uid-lookup,
 * split-fetch): the messages they deliver (clean text, and an .exe the default policy strips), and one
 * session: login, select INBOX, the FETCHes, logout; its answers as imaplib returns them, what postern
 * sent upstream (its `proto.line` trace, so the instance runs with logLevel `trace`), the bytes it read
 * from the upstream and the inspections it logged.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { InspectInstance } from './inspect-instance.js';

const run = promisify(execFile);

function b64lines(data: Buffer): string {
  return (data.toString('base64').match(/.{1,76}/g) ?? []).join('\r\n');
}

/** A clean text message (~6 KB), numbered. */
export const clean = (i: number) =>
  `From: Ann <ann@example.test>\r\nTo: alice@example.test\r\nSubject: clean ${i}\r\nDate: Tue, 3 Nov 2026 09:0${i % 10}:00 +0000\r\n` +
  `Message-ID: <clean${i}@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n` +
  `Hello number ${i}\r\n${'filler line of text\r\n'.repeat(300)}`;

/** A message with a `tool.exe` attachment (a PE header): the default policy strips it. */
export const exe = (i: number) =>
  `From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: tool ${i}\r\nDate: Tue, 3 Nov 2026 10:00:00 +0000\r\n` +
  `Message-ID: <exe${i}@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="XX"\r\n\r\n` +
  '--XX\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n' +
  '--XX\r\nContent-Type: application/octet-stream; name="tool.exe"\r\nContent-Disposition: attachment; filename="tool.exe"\r\nContent-Transfer-Encoding: base64\r\n\r\n' +
  b64lines(Buffer.concat([Buffer.from('MZ\x90\x00\x03\x00\x00\x00', 'latin1'), Buffer.from(`POSTERN-EXE-${i} `.repeat(400))])) +
  '\r\n--XX--\r\n';

/** imaplib: login, select INBOX, run the FETCHes (`[kind, set, items]`, kind `uid` or `seq`), logout; each answer as imaplib returns it (bytes as latin1). */
const SCRIPT = `
import imaplib, json, sys
M = imaplib.IMAP4('127.0.0.1', int(sys.argv[1]))
M.login('alice', 'alicepass')
M.select('INBOX')
out = []
for kind, s, items in json.loads(sys.argv[2]):
    typ, data = M.uid('FETCH', s, items) if kind == 'uid' else M.fetch(s, items)
    flat = []
    for d in data:
        if isinstance(d, tuple):
            flat.append([x.decode('latin1') for x in d])
        elif d is not None:
            flat.append(d.decode('latin1'))
    out.append({'typ': typ, 'data': flat})
M.logout()
print(json.dumps(out))
`;

export type Answer = { typ: string; data: (string | string[])[] };

export interface SessionResult {
  answers: Answer[];
  /** The lines postern sent upstream, in order. */
  upstreamLines: string[];
  /** Every traced line of the session in the order postern saw or sent it, as `dir line`. */
  trace: string[];
  fromUpstream: number;
  inspected: number;
}

/** The log lines of `postern` with this event. */
export function events(postern: InspectInstance, event: string): Record<string, unknown>[] {
  return postern
    .logs()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l.event === event);
}

/** One imaplib session through `postern` (waits for its session.close line). */
export async function imaplibSession(postern: InspectInstance, cmds: string[][]): Promise<SessionResult> {
  const closes = events(postern, 'session.close').length;
  const lines = events(postern, 'proto.line').length;
  const inspected = postern.inspected();
  const { stdout } = await run('python3', ['-c', SCRIPT, String(postern.port), JSON.stringify(cmds)], { timeout: 60_000 });
  for (let t = 0; events(postern, 'session.close').length <= closes; t++) {
    if (t > 500) throw new Error('no session.close');
    await new Promise((r) => setTimeout(r, 20));
  }
  const close = events(postern, 'session.close').slice(-1)[0]!;
  const traced = events(postern, 'proto.line').slice(lines);
  return {
    answers: JSON.parse(stdout) as Answer[],
    upstreamLines: traced.filter((l) => l.dir === 'postern>upstream').map((l) => String(l.line)),
    trace: traced.map((l) => `${String(l.dir)} ${String(l.line)}`),
    fromUpstream: (close.traffic as { fromUpstream: number }).fromUpstream,
    inspected: postern.inspected() - inspected,
  };
}
