/**
 * File names as clients show and save them. A name given in a part's header (or a uuencode `begin`
 * line) is turned into every form some client may end up with, and the file-name rules are checked
 * against each of them (the strictest action wins):
 * - control, bidi, zero-width and other invisible format characters removed (they hide the real
 *   extension: "invoice\u202Efdp.exe"), and the name cut at the first control character (C
 *   strings end at NUL);
 * - the last path segment ('/' and '\'), and the part before an NTFS stream suffix ("a.exe:x");
 * - trailing dots and whitespace removed (Windows drops them);
 * - Unicode NFC and NFKC (full-width and compatibility forms: "ｅｘｅ" -> "exe");
 * - %XX escapes decoded;
 * - surrounding quotes and brackets removed (a reader that does not unquote shows them).
 * Case is left alone: the rules match case-insensitively.
 */

/** Longest name matched (bounded work per name). */
export const MAX_NAME = 1024;
/** Most forms kept per part. */
const MAX_CANDIDATES = 64;

// eslint-disable-next-line no-control-regex
const INVISIBLE = /[\x00-\x1f\x7f-\x9f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufffb]|\udb40[\udc00-\udfff]/g;
// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x1f\x7f-\x9f]/;

/** The basic normalisation: invisible characters dropped, last path segment, trailing dots and whitespace removed. */
export function normaliseFilename(name: string): string {
  let s = name.slice(0, MAX_NAME * 4).replace(INVISIBLE, '');
  s = s.split(/[\\/]/).pop() ?? s;
  s = s.replace(/[.\s\u00a0\u3000]+$/u, '').trim();
  return s.slice(0, MAX_NAME);
}

function percentDecoded(s: string): string | undefined {
  if (!/%[0-9a-fA-F]{2}/.test(s)) return undefined;
  const bytes: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x25 && /^[0-9a-fA-F]{2}$/.test(s.slice(i + 1, i + 3))) {
      bytes.push(parseInt(s.slice(i + 1, i + 3), 16));
      i += 2;
    } else if (c < 0x80) bytes.push(c);
    else for (const b of Buffer.from(s[i]!, 'utf8')) bytes.push(b);
  }
  const buf = Buffer.from(bytes);
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(buf);
  } catch {
    return buf.toString('latin1');
  }
}

/** Every normalised form of the given names (deduplicated, empty forms dropped, in a stable order). */
export function filenameCandidates(names: readonly string[]): string[] {
  const out: string[] = [];
  const add = (s: string): void => {
    const n = normaliseFilename(s);
    if (n && !out.includes(n) && out.length < MAX_CANDIDATES) out.push(n);
  };
  for (const raw of names) {
    const forms = [raw];
    const pct = percentDecoded(raw);
    if (pct !== undefined) forms.push(pct);
    for (const f of forms) {
      for (const v of [f, f.normalize('NFC'), f.normalize('NFKC')]) {
        add(v);
        // a name some reader left quoted or bracketed
        const bare = v.trim().replace(/^["'<(\[{]+|["'>)\]}]+$/g, '');
        if (bare !== v) add(bare);
        // C strings end at the first control character
        const cut = CONTROL.exec(v);
        if (cut && cut.index > 0) add(v.slice(0, cut.index));
        // "name.exe:stream" is saved as name.exe on NTFS
        const seg = v.split(/[\\/]/).pop() ?? v;
        const colon = seg.indexOf(':');
        if (colon > 0) add(seg.slice(0, colon));
      }
    }
  }
  return out;
}
