/**
 * Real-type detection from magic numbers. Only formats that matter for a mail gateway: executables
 * and scripts (what attackers disguise), archives (what must be opened), and the common document
 * and image formats (so a declared type can be confirmed).
 */

function startsWith(b: Buffer, sig: number[], at = 0): boolean {
  if (b.length < at + sig.length) return false;
  for (let i = 0; i < sig.length; i++) if (b[at + i] !== sig[i]) return false;
  return true;
}

/** `s` (one char per byte, as latin1 reads it) at `at`: compared byte by byte, no string built. */
function ascii(b: Buffer, s: string, at = 0): boolean {
  if (b.length < at + s.length) return false;
  for (let i = 0; i < s.length; i++) if (b[at + i] !== s.charCodeAt(i)) return false;
  return true;
}

export const ZIP_TYPE = 'application/zip';

/** Returns a lower-case MIME type, or undefined when nothing is recognised. */
export function detectType(head: Buffer): string | undefined {
  if (head.length < 2) return undefined;
  if (ascii(head, 'MZ')) return 'application/x-msdownload';
  if (startsWith(head, [0x7f, 0x45, 0x4c, 0x46])) return 'application/x-executable';
  if (
    startsWith(head, [0xfe, 0xed, 0xfa, 0xce]) ||
    startsWith(head, [0xfe, 0xed, 0xfa, 0xcf]) ||
    startsWith(head, [0xce, 0xfa, 0xed, 0xfe]) ||
    startsWith(head, [0xcf, 0xfa, 0xed, 0xfe])
  )
    return 'application/x-mach-binary';
  // Mach-O universal binary and Java class files share CAFEBABE; both are executable code
  if (startsWith(head, [0xca, 0xfe, 0xba, 0xbe])) return 'application/x-mach-binary';
  if (ascii(head, '#!')) return 'application/x-sh';
  if (ascii(head, 'PK\x03\x04') || ascii(head, 'PK\x05\x06') || ascii(head, 'PK\x07\x08')) return ZIP_TYPE;
  if (ascii(head, '%PDF-')) return 'application/pdf';
  if (startsWith(head, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])) return 'image/png';
  if (startsWith(head, [0xff, 0xd8, 0xff])) return 'image/jpeg';
  if (ascii(head, 'GIF87a') || ascii(head, 'GIF89a')) return 'image/gif';
  if (ascii(head, 'RIFF') && ascii(head, 'WEBP', 8)) return 'image/webp';
  if (startsWith(head, [0x49, 0x49, 0x2a, 0x00]) || startsWith(head, [0x4d, 0x4d, 0x00, 0x2a])) return 'image/tiff';
  if (startsWith(head, [0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1])) return 'application/x-ole-storage';
  if (ascii(head, 'Rar!\x1a\x07')) return 'application/vnd.rar';
  if (startsWith(head, [0x37, 0x7a, 0xbc, 0xaf, 0x27, 0x1c])) return 'application/x-7z-compressed';
  if (startsWith(head, [0x1f, 0x8b])) return 'application/gzip';
  if (ascii(head, 'BZh')) return 'application/x-bzip2';
  if (startsWith(head, [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])) return 'application/x-xz';
  if (ascii(head, 'MSCF')) return 'application/vnd.ms-cab-compressed';
  if (startsWith(head, [0x78, 0x9f, 0x3e, 0x22])) return 'application/ms-tnef';
  if (ascii(head, '{\\rtf')) return 'application/rtf';
  if (startsWith(head, [0x4c, 0x00, 0x00, 0x00, 0x01, 0x14, 0x02, 0x00])) return 'application/x-ms-shortcut';
  if (ascii(head, '\x00asm')) return 'application/wasm';
  return undefined;
}

/** Refines a ZIP into the document formats built on it, from its member names. */
export function refineZipType(names: string[], mimetypeMember?: string): string {
  if (mimetypeMember && /^application\/vnd\.oasis\.opendocument\.[a-z.-]+$/.test(mimetypeMember.trim())) return mimetypeMember.trim();
  const has = (p: string) => names.some((n) => n === p || n.startsWith(p));
  if (names.includes('[Content_Types].xml')) {
    if (has('word/')) return 'application/vnd.openxmlformats-officedocument.wordprocessingml.document';
    if (has('xl/')) return 'application/vnd.openxmlformats-officedocument.spreadsheetml.sheet';
    if (has('ppt/')) return 'application/vnd.openxmlformats-officedocument.presentationml.presentation';
  }
  if (names.includes('META-INF/MANIFEST.MF')) return 'application/java-archive';
  return ZIP_TYPE;
}
