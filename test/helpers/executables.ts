/**
 * Executable-header builders shared by the hidden-executable tests (test/policy/hidden-executable,
 * test/policy/zip-hidden-executable, test/mime/zip-hidden-executable).
 */

/** A PE head: `MZ`, zero DOS header, e_lfanew 0x80 -> `PE\0\0` + i386, no standard DOS fields. */
export function pe(): Buffer {
  const b = Buffer.alloc(0x200, 0x41);
  b.fill(0, 0, 0x40);
  b.write('MZ', 0, 'latin1');
  b.writeUInt32LE(0x80, 0x3c);
  b.write('PE\0\0', 0x80, 'latin1');
  b.writeUInt16LE(0x14c, 0x84);
  return b;
}

/** `n` bytes without any `M` (no executable candidate). */
export const pad = (n: number): Buffer => Buffer.alloc(n, 0x2e);
