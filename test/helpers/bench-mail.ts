/**
 * The verdict-cache benchmarks' mailbox: message i is a multipart with a text part of
 * `base + (i % 7) * step` lines and, every 20th message, an .exe attachment the default policy
 * removes (so the store holds both clean and changed verdicts).
 */
export function benchMessage(i: number, base: number, step: number): string {
  const text = `line ${i} of some ordinary text in a message body, long enough to matter\r\n`.repeat(base + (i % 7) * step);
  const exe = i % 20 === 0;
  return (
    `From: Sender ${i} <s${i}@example.test>\r\nTo: alice@example.test\r\nSubject: message ${i}\r\nDate: Tue, 3 Nov 2026 09:00:00 +0000\r\n` +
    `Message-ID: <m${i}@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n` +
    `--b\r\nContent-Type: text/plain\r\n\r\n${text}` +
    (exe
      ? '--b\r\nContent-Type: application/octet-stream; name="x.exe"\r\nContent-Disposition: attachment; filename="x.exe"\r\nContent-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAA\r\n'
      : '') +
    '--b--\r\n'
  );
}

/** Median of a non-empty list. */
export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
