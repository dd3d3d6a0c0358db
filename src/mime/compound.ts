/**
 * Whether 7-Zip opens a file as an OLE compound file (old Office documents, MSI installers), and so
 * looks for no archive behind its first byte (src/mime/hidden-archive.ts).
 *
 * 7-Zip falls back to its search for an archive anywhere in the first 8 MiB when the compound file
 * does not open, whatever made it fail: the OLE magic with a broken header, a directory entry of an
 * unknown type, a stream longer than its chain. Each of those, with a ZIP at byte 2048, gave
 * `evil.exe` to `7zz x` when named anything but `.doc` (2026-12-02). So every structure 7-Zip reads
 * is checked here, at least as strictly as 7-Zip does: the header's fields, the FAT through the
 * DIFAT, the directory's chain, every directory entry, the tree from the root (every entry in use on
 * it), and the chain of every stream in it (small ones through the mini FAT, in the root's mini
 * stream), and that the FAT holds no chain besides those (2026-12-02). A sector claimed twice,
 * a chain that loops or leaves the file, or bytes that are not there (`b` is the file's first
 * HIDDEN_ARCHIVE_WINDOW_BYTES + reach when it is longer) make it not open: the search then runs, the
 * strict reading. The work is bounded by the file's sector count. Pure.
 */

const MAGIC = Buffer.from('d0cf11e0a1b11ae1', 'hex');
const END = 0xfffffffe;
const FATSECT = 0xfffffffd;
const DIFSECT = 0xfffffffc;
const NOSTREAM = 0xffffffff;
/** Streams smaller than this live in the mini stream (the header's cutoff must say so). */
const MINI_CUTOFF = 4096;
const MINI_SECTOR = 64;
const ENTRY = 128;

export function compoundOpens(b: Buffer): boolean {
  if (b.length < 512 || !b.subarray(0, 8).equals(MAGIC)) return false;
  const major = b.readUInt16LE(26);
  const shift = b.readUInt16LE(30);
  if (b.readUInt16LE(24) !== 0x3e || b.readUInt16LE(28) !== 0xfffe || !((major === 3 && shift === 9) || (major === 4 && shift === 12))) return false;
  if (b.readUInt16LE(32) !== 6 || b.readUInt32LE(56) !== MINI_CUTOFF) return false;
  // the six reserved bytes are zero, and a version 3 file counts no directory sectors
  if (b.readUInt16LE(34) !== 0 || b.readUInt32LE(36) !== 0 || (major === 3 && b.readUInt32LE(40) !== 0)) return false;
  const ss = 2 ** shift;
  const per = ss / 4;
  // sector i lies at (i + 1) * ss; only whole sectors count
  const inFile = Math.floor(b.length / ss) - 1;
  if (inFile < 1) return false;

  // the FAT's sectors: 109 in the header, the rest through the DIFAT's chain (a version 3 file has
  // fewer than 2^15 of them: 7-Zip refused 32,768, 2026-12-02)
  const numFat = b.readUInt32LE(44);
  if (numFat === 0 || numFat > inFile || (major === 3 && numFat >= 2 ** 15)) return false;
  // only the sectors the FAT maps count: 7-Zip refuses any sector past them, a FAT or DIFAT sector
  // too (it refused a FAT sector at sector 129 of a file whose one FAT sector maps 128)
  const nSec = Math.min(inFile, numFat * per);
  const at = (i: number): number => (i + 1) * ss;
  const used = new Uint8Array(nSec);
  const claim = (i: number): boolean => {
    if (i < 0 || i >= nSec || used[i]) return false;
    used[i] = 1;
    return true;
  };
  // (the DIFAT's sector count exactly what the FAT needs, every slot past the FAT's free, its chain
  // ended, or free: 7-Zip refuses a header whose unused slots hold anything, and opens a last DIFAT
  // sector whose next is free, as some AAF files have it)
  const fatSecs: number[] = [];
  for (let k = 0; k < 109; k++) {
    const v = b.readUInt32LE(76 + 4 * k);
    if (k < numFat) fatSecs.push(v);
    else if (v !== NOSTREAM) return false;
  }
  let difat = b.readUInt32LE(68);
  const numDifat = b.readUInt32LE(72);
  if (numDifat !== Math.max(0, Math.ceil((numFat - 109) / (per - 1)))) return false;
  for (let d = 0; d < numDifat; d++) {
    if (!claim(difat)) return false;
    for (let k = 0; k < per - 1; k++) {
      const v = b.readUInt32LE(at(difat) + 4 * k);
      if (fatSecs.length < numFat) fatSecs.push(v);
      else if (v !== NOSTREAM) return false;
    }
    difat = b.readUInt32LE(at(difat) + 4 * (per - 1));
  }
  if (difat !== END && difat !== NOSTREAM) return false;
  for (const f of fatSecs) if (!claim(f)) return false;
  // every FAT entry a sector of the file, or free, an end, a FAT or a DIFAT sector's mark
  // (free for a sector past the file's end; a FAT sector's own entry marks it one, a DIFAT sector's
  // likewise, and no other entry holds either mark)
  const difatSecs = new Set<number>();
  for (let d = b.readUInt32LE(68), k = 0; k < numDifat; k++, d = b.readUInt32LE(at(d) + 4 * (per - 1))) difatSecs.add(d);
  const fatSet = new Set(fatSecs);
  for (let j = 0; j < fatSecs.length; j++)
    for (let k = 0; k < per; k++) {
      const i = j * per + k;
      const v = b.readUInt32LE(at(fatSecs[j]!) + 4 * k);
      if ((v >= nSec && v < DIFSECT) || (i >= nSec && v !== NOSTREAM)) return false;
      if ((v === FATSECT) !== fatSet.has(i) || (v === DIFSECT) !== difatSecs.has(i)) return false;
    }
  const fat = (i: number): number => {
    const f = fatSecs[Math.floor(i / per)];
    return f === undefined ? -1 : b.readUInt32LE(at(f) + 4 * (i % per));
  };

  /** The sectors of a chain of `next` from `start`, each taken once by `take`; undefined when `take` refuses one (past the file, claimed before, a mark). */
  const chain = (start: number, next: (i: number) => number, take: (i: number) => boolean): number[] | undefined => {
    const out: number[] = [];
    for (let s = start; s !== END; s = next(s)) {
      if (!take(s)) return undefined;
      out.push(s);
    }
    return out;
  };

  // the directory: its chain, then every entry
  const dirSecs = chain(b.readUInt32LE(48), fat, claim);
  if (!dirSecs || dirSecs.length === 0 || (major === 4 && b.readUInt32LE(40) !== dirSecs.length)) return false;
  const perSec = ss / ENTRY;
  const nEnt = dirSecs.length * perSec;
  const ent = (i: number): number => at(dirSecs[Math.floor(i / perSec)]!) + ENTRY * (i % perSec);
  const link = (v: number): boolean => v === NOSTREAM || v < nEnt;
  for (let i = 0; i < nEnt; i++) {
    const o = ent(i);
    const type = b[o + 66]!;
    const start = b.readUInt32LE(o + 116);
    const links = link(b.readUInt32LE(o + 68)) && link(b.readUInt32LE(o + 72)) && link(b.readUInt32LE(o + 76));
    // a colour of red or black; an unused entry starts nowhere (7-Zip refused one starting at sector 1)
    // (and a size's high half 0: version 3 files say so; 7-Zip reads all 64 bits, of unused entries too)
    if (!links || b[o + 67]! > 1 || b.readUInt32LE(o + 124) !== 0) return false;
    if (type === 0) {
      // (and links nowhere: 7-Zip refused an unused entry whose left, right or child was 1 or 3; 0 it takes)
      if (start !== 0 && start !== END && start !== NOSTREAM) return false;
      for (const l of [68, 72, 76]) if (b.readUInt32LE(o + l) !== NOSTREAM && b.readUInt32LE(o + l) !== 0) return false;
      continue;
    }
    // storage 1, stream 2, root 5 (and the root first, once)
    if ((type !== 1 && type !== 2 && type !== 5) || (type === 5) !== (i === 0)) return false;
    const nameLen = b.readUInt16LE(o + 64);
    // a name of 1 to 31 UTF-16 units, NUL-terminated, with no NUL before its end
    if (nameLen < 4 || nameLen > 64 || nameLen % 2 !== 0 || b.readUInt16LE(o + nameLen - 2) !== 0) return false;
    for (let c = 0; c < nameLen - 2; c += 2) if (b.readUInt16LE(o + c) === 0) return false;
    // a storage has no size and starts nowhere; anything empty starts at the end of chain (7-Zip
    // refused a stream of size 0 starting at a sector, and a root without a mini stream starting at 0)
    const size = b.readUInt32LE(o + 120);
    if (type === 1 && (size !== 0 || (start !== 0 && start !== END && start !== NOSTREAM))) return false;
    if (type !== 1 && size === 0 && start !== END) return false;
  }
  // the root has no siblings (7-Zip refused a root whose left or right was another entry)
  const root = ent(0);
  if (b[root + 66] !== 5 || b.readUInt32LE(root + 68) !== NOSTREAM || b.readUInt32LE(root + 72) !== NOSTREAM) return false;

  // the mini stream (the root's chain) and the mini FAT
  const miniSize = b.readUInt32LE(root + 120);
  if (miniSize > 0) {
    const c = chain(b.readUInt32LE(root + 116), fat, claim);
    if (!c || c.length !== Math.ceil(miniSize / ss)) return false;
  }
  const miniFatSecs = chain(b.readUInt32LE(60), fat, claim);
  if (!miniFatSecs || miniFatSecs.length !== b.readUInt32LE(64)) return false;
  // the mini FAT maps the whole mini stream (7-Zip refused a 17-sector mini stream, 136 mini sectors,
  // with one mini FAT sector, 128)
  const nMini = Math.ceil(miniSize / MINI_SECTOR);
  if (nMini > miniFatSecs.length * per) return false;
  const miniUsed = new Uint8Array(nMini);
  const claimMini = (i: number): boolean => {
    if (i < 0 || i >= nMini || miniUsed[i]) return false;
    miniUsed[i] = 1;
    return true;
  };
  const miniFat = (i: number): number => b.readUInt32LE(at(miniFatSecs[Math.floor(i / per)]!) + 4 * (i % per));

  // the tree from the root: every entry reached once, a storage or a stream, each stream's chain whole
  const seen = new Uint8Array(nEnt);
  const stack = [b.readUInt32LE(root + 76)];
  while (stack.length > 0) {
    const id = stack.pop()!;
    if (id === NOSTREAM) continue;
    if (id === 0 || seen[id]) return false;
    seen[id] = 1;
    const o = ent(id);
    const type = b[o + 66];
    if (type !== 1 && type !== 2) return false;
    stack.push(b.readUInt32LE(o + 68), b.readUInt32LE(o + 72));
    if (type === 1) {
      stack.push(b.readUInt32LE(o + 76));
      continue;
    }
    if (b.readUInt32LE(o + 76) !== NOSTREAM) return false;
    const size = b.readUInt32LE(o + 120);
    if (size === 0) continue;
    const c = size < MINI_CUTOFF ? chain(b.readUInt32LE(o + 116), miniFat, claimMini) : chain(b.readUInt32LE(o + 116), fat, claim);
    if (!c || c.length !== Math.ceil(size / (size < MINI_CUTOFF ? MINI_SECTOR : ss))) return false;
  }
  // every entry in use reached from the root (7-Zip refused a stream no sibling link led to)
  for (let i = 1; i < nEnt; i++) if (b[ent(i) + 66] !== 0 && !seen[i]) return false;
  // and every sector the FAT links on from or ends a chain at is in a chain read above: 7-Zip refuses
  // a FAT that holds chains it does not follow (an end or a link in a free sector, 2026-12-02)
  for (let i = 0; i < nSec; i++) {
    const v = fat(i);
    if (v !== NOSTREAM && v !== FATSECT && v !== DIFSECT && !used[i]) return false;
  }
  return true;
}
