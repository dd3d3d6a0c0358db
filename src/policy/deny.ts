/**
 * Deny-message rendering: templates with named variables, and the bytes of the replacement part
 * (strip) and of the notice (block). Everything here is a pure function of its inputs, so the
 * rewritten message is deterministic.
 */
import { MAX_TEMPLATE_VALUE } from '../limits.js';

export type TemplateVars = Partial<
  Record<'reason' | 'filename' | 'type' | 'virus' | 'action' | 'policy' | 'rule' | 'message_id' | 'subject' | 'sender' | 'recovery' | 'part', string>
>;

/** Values come from the (hostile) message: no control characters, no line breaks, bounded length. */
export function cleanVar(v: string | undefined): string {
  if (v === undefined || v === '') return '-';
  // eslint-disable-next-line no-control-regex
  let s = v.replace(/[\x00-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2066-\u2069]+/g, ' ').trim();
  if (s.length > MAX_TEMPLATE_VALUE) s = s.slice(0, MAX_TEMPLATE_VALUE) + '...';
  return s || '-';
}

export function renderTemplate(tpl: string, vars: TemplateVars): string {
  return tpl.replace(/\{([a-z_]+)\}/g, (all, name: string) =>
    Object.hasOwn(vars, name) ? cleanVar(vars[name as keyof TemplateVars]) : all === '{}' ? all : cleanVar(undefined),
  );
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
