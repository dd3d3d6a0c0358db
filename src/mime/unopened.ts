/**
 * Archives and other containers of files that postern does not open (Outlook items and data files
 * among them: a `.msg` carries its attachments inside). It opens ZIP (src/mime/zip.ts),
 * gzip and tar (src/mime/tar.ts) and judges every member; what it cannot open would be delivered unvetted: an `.exe` inside a `.7z`,
 * a `.rar` or a `.tar.gz` meets no file-name or type rule. So such a file is recognised here, by
 * every reading a reader could use to open it as an archive, and the policy's
 * `archives.on_unsupported` decides (src/policy/stages/archive.ts):
 *
 * - its bytes: the magic number at offset 0 (detectType; a tar by its magic at 257 or its header's
 *   checksum);
 * - its declared type, when its bytes show none (a reader that goes by the type);
 * - (gzip and tar, which postern opens when its bytes are one: src/mime/tar.ts) only its declared
 *   type or its name, when the bytes are not one;
 * - any reading of its file name with an archive's extension (7-Zip and WinRAR find an archive's
 *   signature past other bytes; a file manager opens a file by its extension).
 *
 * Pure.
 */
import { nameForms } from './names.js';
import { CMS_READABLE_TYPE, PGP_READABLE_TYPE } from './sealed.js';

/** Types of the containers postern does not open, with the name an operator knows them by. */
const UNOPENED_TYPES = new Map<string, string>([
  ['application/vnd.rar', 'RAR'],
  ['application/x-rar-compressed', 'RAR'],
  ['application/x-rar', 'RAR'],
  ['application/x-7z-compressed', '7z'],
  ['application/gzip', 'gzip'],
  ['application/x-gzip', 'gzip'],
  ['application/x-bzip2', 'bzip2'],
  ['application/x-bzip', 'bzip2'],
  ['application/x-xz', 'xz'],
  ['application/x-lzma', 'lzma'],
  ['application/x-lzip', 'lzip'],
  ['application/zstd', 'zstd'],
  ['application/x-zstd', 'zstd'],
  ['application/x-compress', 'compress (.Z)'],
  ['application/x-tar', 'tar'],
  ['application/x-gtar', 'tar'],
  ['application/x-ustar', 'tar'],
  ['application/x-cpio', 'cpio'],
  ['application/x-arj', 'ARJ'],
  ['application/x-lzh-compressed', 'LZH'],
  ['application/x-lha', 'LZH'],
  ['application/x-ace-compressed', 'ACE'],
  ['application/vnd.ms-cab-compressed', 'CAB'],
  ['application/x-xar', 'xar'],
  ['application/x-stuffit', 'StuffIt'],
  ['application/x-stuffitx', 'StuffIt'],
  ['application/ms-tnef', 'TNEF (winmail.dat)'],
  ['application/vnd.ms-tnef', 'TNEF (winmail.dat)'],
  ['application/x-iso9660-image', 'disk image'],
  ['application/x-apple-diskimage', 'disk image'],
  ['application/x-raw-disk-image', 'disk image'],
  // an Outlook item carries its attachments inside (a compound file postern does not open)
  ['application/vnd.ms-outlook', 'Outlook item (.msg)'],
  // a mailbox: messages one after another, split by `From ` lines or by Content-Length (readers differ)
  ['application/mbox', 'mailbox (mbox)'],
  // readable without a key, by their bytes only (src/mime/sealed.ts): encrypted ones are not these
  [CMS_READABLE_TYPE, 'CMS (S/MIME) signed or compressed data'],
  [PGP_READABLE_TYPE, 'OpenPGP signed or compressed data'],
]);

/** Extensions (lower case, no dot) of those containers, and of split archives' volumes. */
const UNOPENED_EXTENSIONS = new Map<string, string>([
  ...['rar', 'rev'].map((e) => [e, 'RAR'] as const),
  ['7z', '7z'],
  ...['gz', 'tgz', 'gzip'].map((e) => [e, 'gzip'] as const),
  ...['bz2', 'bz', 'tbz', 'tbz2', 'tb2'].map((e) => [e, 'bzip2'] as const),
  ...['xz', 'txz'].map((e) => [e, 'xz'] as const),
  ...['lzma', 'tlz', 'lzma86'].map((e) => [e, 'lzma'] as const),
  ['lz', 'lzip'],
  ...['zst', 'tzst'].map((e) => [e, 'zstd'] as const),
  ...['z', 'taz'].map((e) => [e, 'compress (.Z)'] as const),
  ['tar', 'tar'],
  ['cpio', 'cpio'],
  ['arj', 'ARJ'],
  ...['lzh', 'lha'].map((e) => [e, 'LZH'] as const),
  ['ace', 'ACE'],
  ['cab', 'CAB'],
  ['xar', 'xar'],
  ...['sit', 'sitx'].map((e) => [e, 'StuffIt'] as const),
  ['alz', 'ALZip'],
  ['egg', 'ALZip'],
  ['wim', 'WIM'],
  ['tnef', 'TNEF (winmail.dat)'],
  // text 7-Zip decodes by this name alone (evil.exe.b64 gives evil.exe)
  ['b64', 'Base64'],
  ...['iso', 'img', 'dmg', 'vhd', 'vhdx'].map((e) => [e, 'disk image'] as const),
  ...['msg', 'oft'].map((e) => [e, 'Outlook item (.msg)'] as const),
  ...['pst', 'ost'].map((e) => [e, 'Outlook data file'] as const),
  ...['mbox', 'mbx'].map((e) => [e, 'mailbox (mbox)'] as const),
]);

/** A volume of a split archive: `.001`, `.r00` (RAR's old volume names). */
const VOLUME = /^(?:\d{3}|r\d\d)$/;

export interface UnopenedArchive {
  /** The format, as an operator knows it (`7z`, `RAR`, `tar`). */
  format: string;
  /** What it was recognised by: `its bytes`, `its declared type`, or `its name NAME`. */
  by: string;
}

function extensionOf(name: string): string {
  const dot = name.lastIndexOf('.');
  return dot < 0 ? '' : name.slice(dot + 1).toLowerCase();
}

/** The format a name gives a file, when it is one of those containers. */
function formatOfName(name: string): string | undefined {
  if (name.toLowerCase() === 'winmail.dat') return 'TNEF (winmail.dat)';
  const ext = extensionOf(name);
  return UNOPENED_EXTENSIONS.get(ext) ?? (VOLUME.test(ext) ? 'split archive volume' : undefined);
}

/** True for a type (detected or declared) of a container postern does not open. */
export function isUnopenedArchiveType(type: string | undefined): boolean {
  return type !== undefined && UNOPENED_TYPES.has(type);
}

/**
 * The container postern does not open that a file is, by its detected type, its declared type (when
 * nothing is detected) or any reading of its names; undefined when it is none (a ZIP is not one:
 * the caller opens it first).
 */
export function unopenedArchive(detected: string | undefined, declared: string, names: readonly string[]): UnopenedArchive | undefined {
  const byBytes = detected !== undefined ? UNOPENED_TYPES.get(detected) : undefined;
  if (byBytes) return { format: byBytes, by: 'its bytes' };
  const byType = detected === undefined ? UNOPENED_TYPES.get(declared.toLowerCase()) : undefined;
  if (byType) return { format: byType, by: `its declared type ${declared}` };
  for (const n of nameForms(names).forms) {
    const f = formatOfName(n);
    if (f) return { format: f, by: `its name ${n.slice(0, 200)}` };
  }
  return undefined;
}
