/**
 * Deny-message rendering: templates with named variables, and the bytes of the replacement part
 * (strip) and of the notice (block). Everything here is a pure function of its inputs, so the
 * rewritten message is deterministic.
 */
import { MAX_TEMPLATE_VALUE } from '../limits.js';

export type TemplateVars = Partial<
  Record<'reason' | 'filename' | 'type' | 'virus' | 'action' | 'policy' | 'rule' | 'message_id' | 'subject' | 'sender' | 'recovery' | 'part', string>
>;

/**
 * Variables whose value is (or can quote) text of the message: the sender wrote it, so the notice
 * shows it in double quotes and it cannot read as postern's own words. {reason} quotes archive
 * member names. {type} is a MIME token (no spaces), the others are postern's or a scanner's.
 */
const QUOTED_VARS: ReadonlySet<string> = new Set(['filename', 'subject', 'sender', 'message_id', 'reason']);

/** Code points of {filename}'s end kept when it is cut, so the reader still sees the extension. */
const FILENAME_TAIL = 40;

/** Invisible and reordering characters: format (bidi controls, zero-width, U+FEFF, U+2060-U+2064...) and lone surrogates. */
const INVISIBLE = /[\p{Cf}\p{Bidi_Control}\p{Cs}]/gu;
/** Controls and line/paragraph separators (CR, LF, U+0085, U+2028, U+2029...): one space per run. */
const BREAKS = /[\p{Cc}\p{Zl}\p{Zp}]+/gu;
/**
 * A space-separated word a mail client could turn into a link: a URI scheme followed by more text
 * (`https://`, `mailto:x`, `file:`, `data:`, `javascript:`, any `scheme:`), a `www.` or `ftp.` host,
 * or a dotted host followed by a path (`evil.example/r`).
 */
const LINKABLE = /[a-z][a-z0-9+.-]*:\S|(?<![a-z0-9-])(?:www\d*|ftp)\.|[\p{L}\p{N}-]+(?:\.[\p{L}\p{N}-]+)+\//iu;
/** Double quotes and their look-alikes: escaped inside a quoted value so none can close it. */
const QUOTES = /[\\"\u02BA\u02DD\u201C-\u201F\u2033\u2036\u275D\u275E\u2E42\u301D-\u301F\uFF02]/gu;

/**
 * Defangs every word that could become a link: each `.` becomes `[.]` and each `:` but one ending the
 * word becomes `[:]` (`https://evil.example/r` reads `https[:]//evil[.]example/r`). Words are split at ASCII spaces
 * only, so no other space can hide a part of a link from this.
 */
export function defang(s: string): string {
  return s.replace(/[^ ]+/g, (w) => (LINKABLE.test(w) ? w.replace(/\.|:(?!$)/g, '[$&]') : w));
}

/**
 * Values come from the (hostile) message: no control, format, bidi or line-separator characters,
 * no linkable URL, bounded length (MAX_TEMPLATE_VALUE code points, cut on a code point boundary and
 * marked `...`; {filename} keeps its end so the extension stays visible). `quote`: the value is
 * put in double quotes, `\` and double quotes inside it escaped with `\`; `wrap`: the quotes are
 * added (a template that writes `"{subject}"` has them already).
 */
export function cleanVar(v: string | undefined, opts: { quote?: boolean; wrap?: boolean; tail?: number } = {}): string {
  if (v === undefined || v === '') return '-';
  const s = v.replace(INVISIBLE, '').replace(BREAKS, ' ').trim();
  if (s === '') return '-';
  const cps = Array.from(s);
  const tail = Math.min(opts.tail ?? 0, MAX_TEMPLATE_VALUE);
  const kept =
    cps.length > MAX_TEMPLATE_VALUE
      ? `${cps.slice(0, MAX_TEMPLATE_VALUE - tail).join('')}...${cps.slice(cps.length - tail, tail > 0 ? undefined : 0).join('')}`
      : s;
  // defanged after the cut, so no cut (nor its `...`) can leave a linkable word behind
  const out = defang(kept);
  if (!opts.quote) return out;
  const q = out.replace(QUOTES, '\\$&');
  return opts.wrap === false ? q : `"${q}"`;
}

/**
 * Fills `{name}` with the cleaned value. Values the sender wrote are shown quoted (see QUOTED_VARS),
 * so operator-written templates need no change; a template's own `"{name}"` is not quoted twice.
 */
export function renderTemplate(tpl: string, vars: TemplateVars): string {
  return tpl.replace(/\{([a-z_]+)\}/g, (all, name: string, at: number) => {
    if (!Object.hasOwn(vars, name)) return all === '{}' ? all : cleanVar(undefined);
    const quote = QUOTED_VARS.has(name);
    const wrap = !(tpl[at - 1] === '"' && tpl[at + all.length] === '"');
    return cleanVar(vars[name as keyof TemplateVars], { quote, wrap, tail: name === 'filename' ? FILENAME_TAIL : 0 });
  });
}

/**
 * Encodes deny text for a MIME body: 7bit when ASCII, else quoted-printable. Lines that could be
 * read as a delimiter of an enclosing multipart are defused (the text carries message data).
 */
export function encodeDenyBody(text: string, eol: string): { body: Buffer; cte: '7bit' | 'quoted-printable' } {
  const lines = text.replace(/\r\n?/g, '\n').replace(/\n+$/, '').split('\n');
  // eslint-disable-next-line no-control-regex
  const ascii = !/[^\x09\x20-\x7e\n]/.test(text) && lines.every((l) => l.length <= 900);
  if (ascii) {
    return { body: Buffer.from(lines.map((l) => (l.startsWith('-') ? ' ' + l : l)).join(eol) + eol, 'latin1'), cte: '7bit' };
  }
  const out: string[] = [];
  for (const line of lines) {
    const bytes = Buffer.from(line, 'utf8');
    let cur = '';
    for (let i = 0; i < bytes.length; i++) {
      const b = bytes[i];
      const last = i === bytes.length - 1;
      let tok: string;
      if ((b >= 33 && b <= 126 && b !== 61) || ((b === 32 || b === 9) && !last)) tok = String.fromCharCode(b);
      else tok = '=' + b.toString(16).toUpperCase().padStart(2, '0');
      // '-' at the start of an encoded line is encoded so no line can look like a delimiter
      if (cur === '' && b === 0x2d) tok = '=2D';
      if (cur.length + tok.length > 75) {
        out.push(cur + '=');
        cur = '';
        if (b === 0x2d) tok = '=2D';
      }
      cur += tok;
    }
    out.push(cur);
  }
  return { body: Buffer.from(out.join(eol) + eol, 'latin1'), cte: 'quoted-printable' };
}

/** Header + body of the text/plain part that replaces a stripped part. */
export function strippedPart(text: string, eol: string): Buffer {
  const { body, cte } = encodeDenyBody(text, eol);
  const head =
    `Content-Type: text/plain; charset=utf-8${eol}` +
    `Content-Transfer-Encoding: ${cte}${eol}` +
    `Content-Disposition: inline${eol}` +
    `Content-Description: removed by postern${eol}${eol}`;
  // the part ends without a line ending: the original CRLF before the next delimiter follows it
  const b = body.subarray(0, body.length - eol.length);
  return Buffer.concat([Buffer.from(head, 'latin1'), b]);
}
