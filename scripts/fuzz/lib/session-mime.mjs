// Minimal MIME section extraction for the upstream models (the fuzzer's own messages and whatever a
// client APPENDs): header/text split, one level of multipart, BODY[n], BODY[n.MIME], BINARY[n].
// Deliberately simple and independent of src/mime: it plays the server, not the inspector.

const CRLFCRLF = Buffer.from('\r\n\r\n');

function splitHeader(buf) {
  const i = buf.indexOf(CRLFCRLF);
  if (i === -1) return { header: buf, body: Buffer.alloc(0) };
  return { header: buf.subarray(0, i + 4), body: buf.subarray(i + 4) };
}

function headerValue(header, name) {
  const text = header.toString('latin1').replace(/\r\n[ \t]+/g, ' ');
  const re = new RegExp(`^${name}:[ \\t]*(.*)$`, 'im');
  const m = re.exec(text);
  return m ? m[1].trim() : null;
}

function boundaryOf(header) {
  const ct = headerValue(header, 'Content-Type');
  if (!ct || !/^multipart\//i.test(ct)) return null;
  const m = /boundary="?([^";]+)"?/i.exec(ct);
  return m ? m[1] : null;
}

/** { header, body, parts: [{ header, body }] } (parts empty for a single-part message). */
export function structure(raw) {
  const { header, body } = splitHeader(raw);
  const boundary = boundaryOf(header);
  const parts = [];
  if (boundary) {
    const text = body.toString('latin1');
    const delim = `--${boundary}`;
    const pieces = text.split(new RegExp(`(?:^|\\r\\n)${delim.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(?:--)?[ \\t]*(?:\\r\\n|$)`));
    for (const p of pieces.slice(1, -1)) {
      const pb = Buffer.from(p, 'latin1');
      parts.push(splitHeader(pb));
    }
  }
  return { header, body, parts };
}

function decodeCte(header, body) {
  const cte = (headerValue(header, 'Content-Transfer-Encoding') ?? '7bit').toLowerCase();
  if (cte === 'base64') return Buffer.from(body.toString('latin1').replace(/[^A-Za-z0-9+/=]/g, ''), 'base64');
  if (cte === 'quoted-printable') {
    const s = body.toString('latin1').replace(/=\r?\n/g, '');
    return Buffer.from(
      s.replace(/=([0-9A-Fa-f]{2})/g, (_m, h) => String.fromCharCode(parseInt(h, 16))),
      'latin1',
    );
  }
  return body;
}

function filterFields(header, fields, not) {
  const wanted = new Set(fields.map((f) => f.toUpperCase()));
  const lines = header.toString('latin1').split('\r\n');
  const out = [];
  let keep = false;
  for (const l of lines) {
    if (l === '') continue;
    if (/^[ \t]/.test(l)) {
      if (keep) out.push(l);
      continue;
    }
    const name = l.slice(0, l.indexOf(':')).toUpperCase();
    keep = wanted.has(name) !== not;
    if (keep) out.push(l);
  }
  return Buffer.from(out.map((l) => l + '\r\n').join('') + '\r\n', 'latin1');
}

/**
 * Bytes of a section (`''`, `HEADER`, `TEXT`, `1`, `2.MIME`, `HEADER.FIELDS (A B)`...), or null when
 * the message has no such part. `binary`: decoded content (BINARY[n]).
 */
export function sectionBytes(raw, section, binary = false) {
  const s = structure(raw);
  const spec = section.trim().toUpperCase();
  if (spec === '') return raw;
  if (spec === 'HEADER') return s.header;
  if (spec === 'TEXT') return s.body;
  let m = /^HEADER\.FIELDS(\.NOT)? \((.*)\)$/.exec(spec);
  if (m) return filterFields(s.header, m[2].split(/\s+/).filter(Boolean), !!m[1]);
  m = /^(\d+)(?:\.(MIME|HEADER|TEXT))?$/.exec(spec);
  if (!m) return null;
  const n = Number(m[1]);
  let part;
  if (s.parts.length === 0) {
    if (n !== 1) return null;
    part = { header: s.header, body: s.body };
  } else {
    part = s.parts[n - 1];
    if (!part) return null;
  }
  if (m[2] === 'MIME') return part.header;
  if (m[2] === 'HEADER' || m[2] === 'TEXT') return null;
  return binary ? decodeCte(part.header, part.body) : part.body;
}

/** A plausible BODYSTRUCTURE for the models (not byte-exact Dovecot; the inspector renders its own). */
export function bodyStructure(raw) {
  const s = structure(raw);
  const leaf = (h, b) => {
    const ct = (headerValue(h, 'Content-Type') ?? 'text/plain').split(';')[0].trim().toLowerCase();
    const [type, sub] = ct.split('/');
    const cte = (headerValue(h, 'Content-Transfer-Encoding') ?? '7bit').toLowerCase();
    const lines = type === 'text' ? ` ${b.toString('latin1').split('\r\n').length - 1}` : '';
    return `("${type}" "${sub ?? 'plain'}" ("charset" "us-ascii") NIL NIL "${cte}" ${b.length}${lines})`;
  };
  if (s.parts.length === 0) return leaf(s.header, s.body);
  return `(${s.parts.map((p) => leaf(p.header, p.body)).join('')} "mixed")`;
}

export function envelope(raw) {
  const s = structure(raw);
  const q = (v) => (v === null ? 'NIL' : `"${v.replace(/[\\"]/g, (m) => `\\${m}`)}"`);
  return `(${q(headerValue(s.header, 'Date'))} ${q(headerValue(s.header, 'Subject'))} NIL NIL NIL NIL NIL NIL NIL ${q(headerValue(s.header, 'Message-ID'))})`;
}
