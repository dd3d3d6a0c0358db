// Hostile MIME generator for the four-reader fuzzer (scripts/fuzz/mime.mjs, test/fuzz/mime.test.ts).
//
// A case is a template (a message carrying one or more dangerous payloads: an MZ executable named
// evil.exe, an invoice.js, the EICAR string in several encodings, uuencoded blocks in text bodies)
// plus a short plan of mutations drawn from the families below. Everything is drawn from a PRNG
// seeded with (seed, case index): generateCase(seed, i) always gives the same bytes, and each
// mutation has its own PRNG stream so the minimiser can switch single mutations off
// (opts.skip) without changing what the others do.
//
// The model is a small tree of parts whose content headers are kept structured (type, params) so
// that mutations can disagree with each other precisely; serialisation writes '\n' line ends and
// converts them at the end (CRLF unless an `eol` mutation chooses otherwise); byte-level mutations
// (NUL bytes, flips near structure, truncation) run on the serialised bytes.
import { Rng } from './prng.mjs';

// ------------------------------------------------------------------------------------- payloads
export const EICAR = Buffer.from('X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*', 'latin1');
export const MZ_MARKER = Buffer.from('POSTERN-MZ-PROBE', 'latin1');
export const EXE = (() => {
  const head = Buffer.from('MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00\xb8\x00\x00\x00', 'latin1');
  const tail = Buffer.from(' This program cannot be run in DOS mode.$ PE\x00\x00L\x01\x03\x00', 'latin1');
  const pad = Buffer.alloc(96);
  for (let i = 0; i < pad.length; i++) pad[i] = (i * 37 + 11) & 0xff || 1;
  // no LF/CR bytes inside the payload: line-ending mutations must not be what damages it
  for (let i = 0; i < pad.length; i++) if (pad[i] === 0x0a || pad[i] === 0x0d) pad[i] = 0x20;
  return Buffer.concat([head, MZ_MARKER, tail, pad]);
})();
export const JS = Buffer.from("var s = new ActiveXObject('WScript.Shell'); s.Run('calc.exe'); // POSTERN-JS-PROBE\n", 'latin1');
const PNG = Buffer.from(
  '89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c6300010000050001' + '0d0a2db40000000049454e44ae426082',
  'hex',
);
const PDF = Buffer.from('%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n', 'latin1');

// ------------------------------------------------------------------------------------- encoders
export function b64lines(buf, width = 76) {
  const s = buf.toString('base64');
  if (!width) return s;
  const out = [];
  for (let i = 0; i < s.length; i += width) out.push(s.slice(i, i + width));
  return out.join('\n');
}

export function qpEncode(buf, binary = true) {
  const lines = [];
  let cur = '';
  const push = (tok) => {
    if (cur.length + tok.length > 75) {
      lines.push(cur + '=');
      cur = '';
    }
    cur += tok;
  };
  for (let i = 0; i < buf.length; i++) {
    const b = buf[i];
    if (!binary && b === 0x0a) {
      lines.push(cur);
      cur = '';
      continue;
    }
    const nextIsEol = i + 1 >= buf.length || (!binary && buf[i + 1] === 0x0a);
    if ((b >= 33 && b <= 126 && b !== 61) || ((b === 32 || b === 9) && !nextIsEol)) push(String.fromCharCode(b));
    else push('=' + b.toString(16).toUpperCase().padStart(2, '0'));
  }
  lines.push(cur);
  return lines.join('\n');
}

export function uuencodeLines(buf) {
  const enc = (c) => (c === 0 ? '`' : String.fromCharCode(c + 32));
  const out = [];
  for (let i = 0; i < buf.length; i += 45) {
    const chunk = buf.subarray(i, i + 45);
    let line = enc(chunk.length);
    for (let j = 0; j < chunk.length; j += 3) {
      const a = chunk[j],
        b = chunk[j + 1] ?? 0,
        c = chunk[j + 2] ?? 0;
      line += enc(a >> 2) + enc(((a & 3) << 4) | (b >> 4)) + enc(((b & 15) << 2) | (c >> 6)) + enc(c & 63);
    }
    out.push(line);
  }
  out.push('`');
  return out;
}

export function uuBlock(buf, name, mode = '644') {
  return [`begin ${mode} ${name}`, ...uuencodeLines(buf), 'end'].join('\n');
}

function rfc2047(s, rng) {
  const kind = rng.pick(['B', 'b', 'Q', 'q']);
  const charset = rng.pick(['UTF-8', 'utf-8', 'iso-8859-1']);
  const bytes = charset === 'iso-8859-1' && /^[\x00-\xff]*$/.test(s) ? Buffer.from(s, 'latin1') : Buffer.from(s, 'utf8');
  const cs = charset === 'iso-8859-1' && /^[\x00-\xff]*$/.test(s) ? charset : 'UTF-8';
  if (kind === 'B' || kind === 'b') return `=?${cs}?${kind}?${bytes.toString('base64')}?=`;
  let q = '';
  for (const b of bytes)
    q +=
      (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a)
        ? String.fromCharCode(b)
        : '=' + b.toString(16).toUpperCase().padStart(2, '0');
  return `=?${cs}?${kind}?${q}?=`;
}

/** UTF-7 (RFC 2152) with every non-alphanumeric character encoded: 'evil.exe' -> 'evil+AC4-exe'. */
export function utf7(s) {
  let out = '';
  let run = '';
  const flush = () => {
    if (!run) return;
    const be = Buffer.from(run, 'utf16le').swap16();
    out += '+' + be.toString('base64').replace(/=+$/, '') + '-';
    run = '';
  };
  for (const ch of s) {
    if (/[A-Za-z0-9]/.test(ch)) {
      flush();
      out += ch;
    } else run += ch;
  }
  flush();
  return out;
}

function pct(s) {
  let o = '';
  for (const b of Buffer.from(s, 'utf8'))
    o +=
      (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a)
        ? String.fromCharCode(b)
        : '%' + b.toString(16).toUpperCase().padStart(2, '0');
  return o;
}

// ------------------------------------------------------------------------------------- the model
// Field: { name, kind: 'ct'|'cd'|'cte'|'raw', type, params: [{k, v, q}], value, sep, fold }
// Part:  { top: string[] (root-ish header lines), fields: Field[], payload, enc, children, boundary,
//          delims, close, preamble, epilogue, message, danger, dname, text, noBlank, headerless }

function ct(type, params = []) {
  return { name: 'Content-Type', kind: 'ct', type, params: params.map(([k, v, q]) => ({ k, v, q: q ?? 'dq' })) };
}
function cd(type, params = []) {
  return { name: 'Content-Disposition', kind: 'cd', type, params: params.map(([k, v, q]) => ({ k, v, q: q ?? 'dq' })) };
}
function cte(value) {
  return { name: 'Content-Transfer-Encoding', kind: 'cte', value };
}
function raw(line) {
  return { kind: 'raw', value: line };
}

const ENC_CTE = { base64: 'base64', qp: 'quoted-printable', raw7: '7bit', raw8: '8bit', bin: 'binary', uu: 'x-uuencode' };

function leaf(type, params, payload, enc, extra = {}) {
  const fields = [ct(type, params)];
  if (extra.cd) fields.push(cd(extra.cd[0], extra.cd[1]));
  if (enc !== 'none') fields.push(cte(ENC_CTE[enc]));
  return { top: [], fields, payload, enc, ...extra, cd: undefined };
}

function textPart(rng, body) {
  const enc = rng.weighted([
    [6, 'raw7'],
    [2, 'qp'],
    [1, 'base64'],
  ]);
  return { ...leaf('text/plain', [['charset', 'utf-8']], Buffer.from(body, 'utf8'), enc), text: true };
}

function harmlessParts(rng) {
  const out = [];
  const n = rng.int(0, 2);
  for (let i = 0; i < n; i++) {
    const k = rng.pick(['png', 'pdf', 'html', 'txt']);
    if (k === 'png') out.push(leaf('image/png', [['name', 'photo.png']], PNG, 'base64', { cd: ['inline', [['filename', 'photo.png']]], harmless: true }));
    if (k === 'pdf')
      out.push(leaf('application/pdf', [['name', 'report.pdf']], PDF, 'base64', { cd: ['attachment', [['filename', 'report.pdf']]], harmless: true }));
    if (k === 'html') out.push({ ...leaf('text/html', [['charset', 'utf-8']], Buffer.from('<p>Hello <b>there</b></p>\n'), 'qp'), harmless: true, text: true });
    if (k === 'txt')
      out.push(
        leaf('text/plain', [['name', 'notes.txt']], Buffer.from('just notes\n'), 'raw7', {
          cd: ['attachment', [['filename', 'notes.txt']]],
          harmless: true,
          text: true,
        }),
      );
  }
  return out;
}

/** One dangerous part (an attachment-like leaf or a text leaf carrying a payload). */
function dangerPart(rng) {
  const kind = rng.weighted([
    [6, 'exe'],
    [3, 'js'],
    [3, 'eicar-att'],
    [2, 'eicar-text'],
    [2, 'uu-text'],
    [2, 'exe-disguised'],
    [1, 'xuu'],
    [1, 'eicar-name'],
  ]);
  const attach = (type, name, payload, enc) => ({
    ...leaf(type, [['name', name]], payload, enc, { cd: ['attachment', [['filename', name]]] }),
    danger: kind,
    dname: name,
    nameable: true,
  });
  switch (kind) {
    case 'exe':
      return attach(
        rng.pick(['application/octet-stream', 'application/x-msdownload', 'application/x-dosexec', 'application/pdf', 'image/jpeg', 'text/plain']),
        'evil.exe',
        EXE,
        rng.weighted([
          [8, 'base64'],
          [2, 'qp'],
          [1, 'bin'],
        ]),
      );
    case 'js':
      return attach(
        rng.pick(['application/javascript', 'application/octet-stream', 'text/plain', 'text/javascript']),
        'invoice.js',
        JS,
        rng.weighted([
          [4, 'base64'],
          [2, 'qp'],
          [3, 'raw7'],
        ]),
      );
    case 'eicar-att':
      return attach(
        rng.pick(['application/octet-stream', 'text/plain', 'application/pdf']),
        rng.pick(['eicar.txt', 'readme.bin', 'test.pdf']),
        EICAR,
        rng.weighted([
          [5, 'base64'],
          [2, 'qp'],
          [2, 'raw7'],
        ]),
      );
    case 'exe-disguised':
      return attach(rng.pick(['application/pdf', 'image/png', 'application/octet-stream']), rng.pick(['report.pdf', 'photo.png', 'data.bin']), EXE, 'base64');
    case 'xuu':
      return {
        ...attach('application/octet-stream', 'evil.exe', EXE, 'uu'),
        fields: [
          ct('application/octet-stream', [['name', 'evil.exe']]),
          cd('attachment', [['filename', 'evil.exe']]),
          cte(rng.pick(['x-uuencode', 'uuencode', 'x-uue', 'uue'])),
        ],
      };
    case 'eicar-name': {
      // the deny notice must not quote the EICAR string from a file name
      const name = EICAR.toString('latin1') + '.exe';
      return attach('application/octet-stream', name, PDF, 'base64');
    }
    case 'eicar-text': {
      const enc = rng.weighted([
        [3, 'raw7'],
        [3, 'qp'],
        [3, 'base64'],
      ]);
      return {
        ...leaf(
          'text/plain',
          [['charset', 'us-ascii']],
          Buffer.concat([Buffer.from('Please run the following test:\n\n'), EICAR, Buffer.from('\n\nThanks\n')]),
          enc,
        ),
        danger: kind,
        text: true,
      };
    }
    default: {
      // 'uu-text'
      const eicar = rng.chance(0.3);
      const body = `Hello,\n\nthe file is below.\n\n${uuBlock(eicar ? EICAR : EXE, eicar ? 'test.bin' : 'evil.exe', rng.pick(['644', '0644', '666', '755']))}\n\nBye\n`;
      const enc = rng.weighted([
        [6, 'raw7'],
        [2, 'qp'],
        [2, 'base64'],
      ]);
      return { ...leaf('text/plain', [['charset', 'us-ascii']], Buffer.from(body, 'latin1'), enc), danger: 'uu-text', text: true };
    }
  }
}

function boundaryFor(rng) {
  return rng.pick(['', '----=_Part_', '=_', 'b', '------------']) + rng.u32().toString(16);
}

function multipart(rng, subtype, children) {
  const b = boundaryFor(rng);
  return { top: [], fields: [ct(`multipart/${subtype}`, [['boundary', b]])], children, boundary: b, close: true };
}

function rootTop(rng, subject) {
  const lines = [
    'From: Mallory <mallory@example.test>',
    'To: Bob <bob@example.test>',
    `Subject: ${subject}`,
    'Date: Mon, 01 Jan 2024 10:00:00 +0000',
    `Message-ID: <${rng.u32().toString(16)}@example.test>`,
    'MIME-Version: 1.0',
  ];
  return lines;
}

function buildTemplate(rng) {
  const dangers = [dangerPart(rng)];
  if (rng.chance(0.2)) dangers.push(dangerPart(rng));
  const shape = rng.weighted([
    [70, 'mixed'],
    [12, 'single'],
    [10, 'alt'],
    [8, 'eicar-subject'],
  ]);
  let root;
  let subject = 'Invoice';
  let eicarField = null;
  if (shape === 'eicar-subject') {
    // the deny notice quotes Subject, From and Message-ID: none may carry the EICAR string into it
    eicarField = rng.weighted([
      [4, 'Subject'],
      [1, 'From'],
      [1, 'Message-ID'],
    ]);
    subject = eicarField === 'Subject' ? EICAR.toString('latin1') : subject;
    root = multipart(rng, 'mixed', [textPart(rng, 'See attached.\n'), ...harmlessParts(rng), ...dangers]);
  } else if (shape === 'single') {
    root = dangers[0];
    dangers.length = 1;
  } else if (shape === 'alt') {
    const alt = multipart(rng, 'alternative', [
      textPart(rng, 'Hello\n'),
      { ...leaf('text/html', [['charset', 'utf-8']], Buffer.from('<p>Hello</p>\n'), 'qp'), text: true },
    ]);
    root = multipart(rng, 'mixed', [alt, ...harmlessParts(rng), ...dangers]);
  } else {
    const kids = rng.shuffle([...harmlessParts(rng), ...dangers]);
    root = multipart(rng, 'mixed', [textPart(rng, 'Hello,\n\nplease see the attachment.\n'), ...kids]);
  }
  root.top = rootTop(rng, subject);
  if (eicarField === 'From') root.top[0] = `From: "${EICAR.toString('latin1').replace(/["\\]/g, '\\$&')}" <mallory@example.test>`;
  if (eicarField === 'Message-ID') root.top[4] = `Message-ID: <${EICAR.toString('latin1').replace(/[<>@\s]/g, '')}@example.test>`;
  return { root, dangers, shape };
}

// ------------------------------------------------------------------------------------- tree helpers
function walk(p, fn, parent = null) {
  fn(p, parent);
  if (p.children) for (const c of p.children) walk(c, fn, p);
  if (p.message) walk(p.message, fn, p);
}
function parentOf(root, target) {
  let found = null;
  walk(root, (p, parent) => {
    if (p === target) found = parent;
  });
  return found;
}
function replaceIn(ctx, old, neu) {
  const par = parentOf(ctx.root, old);
  if (!par) {
    // old is the root: keep the root header lines on the new root
    neu.top = old.top.length ? old.top : neu.top;
    old.top = old.top.filter((l) => !/^(from|to|subject|date|message-id):/i.test(l));
    if (!old.top.some((l) => /^mime-version:/i.test(l))) old.top.push('MIME-Version: 1.0');
    ctx.root = neu;
    return;
  }
  if (par.message === old) par.message = neu;
  else par.children[par.children.indexOf(old)] = neu;
}
function fieldsOf(p, kind) {
  return p.fields.filter((f) => f.kind === kind);
}
function allParts(ctx) {
  const out = [];
  walk(ctx.root, (p) => out.push(p));
  return out;
}
function multiparts(ctx) {
  return allParts(ctx).filter((p) => p.children);
}
function setName(p, key, value, field) {
  for (const f of p.fields) if (f.params) f.params = f.params.filter((x) => !x.k.toLowerCase().startsWith(key));
  if (field) field.params.push({ k: key, v: value, q: 'dq' });
}
function nameFields(p) {
  // the fields that carry the dangerous name
  const out = [];
  for (const f of p.fields) for (const prm of f.params ?? []) if (prm.v === p.dname) out.push([f, prm]);
  return out;
}
function pickTarget(ctx, rng, pred = () => true) {
  const c = ctx.dangers.filter((d) => pred(d) && allParts(ctx).includes(d));
  return c.length ? rng.pick(c) : null;
}
/** A part carrying a dangerous name, with the parameters that carry it; null when there is none. */
function namedTarget(ctx, rng) {
  const t = pickTarget(ctx, rng, (d) => d.nameable);
  const nf = t ? nameFields(t) : [];
  return nf.length ? { t, nf } : null;
}

// ------------------------------------------------------------------------------------- mutations
// Each returns a variant tag (string) or null when it does not apply to this message.

const SAFE = 'report.pdf';

const TREE_MUTATIONS = {
  'dup-ct'(ctx, rng) {
    const t = pickTarget(ctx, rng);
    if (!t) return null;
    const f = fieldsOf(t, 'ct')[0];
    if (!f) return null;
    const decoy = rng.pick([
      ct('text/plain', [['charset', 'us-ascii']]),
      ct('application/pdf', [['name', SAFE]]),
      ct('image/png'),
      ct('text/plain', [['name', SAFE]]),
    ]);
    const before = rng.chance(0.5);
    t.fields.splice(t.fields.indexOf(f) + (before ? 0 : 1), 0, decoy);
    return before ? 'decoy-first' : 'decoy-last';
  },
  'dup-cd'(ctx, rng) {
    const t = pickTarget(ctx, rng);
    if (!t) return null;
    const f = fieldsOf(t, 'cd')[0];
    const decoy = rng.pick([cd('inline'), cd('attachment', [['filename', SAFE]]), cd('inline', [['filename', 'photo.png']])]);
    const before = rng.chance(0.5);
    if (!f) t.fields.push(decoy, cd('attachment', [['filename', t.dname ?? 'evil.exe']]));
    else t.fields.splice(t.fields.indexOf(f) + (before ? 0 : 1), 0, decoy);
    return before ? 'decoy-first' : 'decoy-last';
  },
  'dup-cte'(ctx, rng) {
    const t = pickTarget(ctx, rng, (d) => d.enc === 'base64' || d.enc === 'qp' || d.enc === 'uu');
    if (!t) return null;
    const f = fieldsOf(t, 'cte')[0];
    const decoy = cte(rng.pick(['7bit', '8bit', 'binary', 'quoted-printable', 'base64', 'x-unknown']));
    const before = rng.chance(0.5);
    if (!f) t.fields.push(decoy);
    else t.fields.splice(t.fields.indexOf(f) + (before ? 0 : 1), 0, decoy);
    return `${before ? 'decoy-first' : 'decoy-last'}:${decoy.value}`;
  },
  'cte-variant'(ctx, rng) {
    const t = pickTarget(ctx, rng, (d) => d.enc === 'base64' || d.enc === 'qp');
    if (!t) return null;
    const f = fieldsOf(t, 'cte')[0];
    if (!f) return null;
    const w = t.enc === 'base64' ? 'base64' : 'quoted-printable';
    const v = rng.pick([
      `${w} (x)`,
      `(c) ${w}`,
      `${w};`,
      `"${w}"`,
      `${w} x`,
      w.toUpperCase(),
      ` ${w}\t`,
      `${w}\n `,
      `x-${w}`,
      w === 'base64' ? 'base-64' : 'quoted printable',
      `${w}(x)`,
      `${w}, 7bit`,
      `7bit ${w}`,
    ]);
    f.value = v;
    return JSON.stringify(v);
  },
  'cte-unknown'(ctx, rng) {
    const t = pickTarget(ctx, rng);
    if (!t) return null;
    if (rng.chance(0.5)) {
      // body stays as it is; the header names something else
      let f = fieldsOf(t, 'cte')[0];
      if (!f) t.fields.push((f = cte('')));
      f.value = rng.pick(['x-foo', '8bit', 'binary', '7bit', 'uuencode', 'x-uuencode', 'x-uue', 'bit7', '']);
      return `header:${f.value}`;
    }
    t.enc = 'uu';
    let f = fieldsOf(t, 'cte')[0];
    if (!f) t.fields.push((f = cte('')));
    f.value = rng.pick(['x-uuencode', 'uuencode', 'x-uue', 'uue', 'X-UUENCODE']);
    return `uu-body:${f.value}`;
  },
  names(ctx, rng) {
    const t = pickTarget(ctx, rng, (d) => d.nameable);
    if (!t) return null;
    const N = t.dname;
    const ctf = fieldsOf(t, 'ct')[0];
    if (!ctf) return null;
    let cdf = fieldsOf(t, 'cd')[0];
    if (!cdf) t.fields.push((cdf = cd('attachment')));
    const v = rng.pick([
      'ct-only',
      'cd-only',
      'ct-safe-cd-danger',
      'ct-danger-cd-safe',
      'star-danger',
      'star-safe',
      'dup-filename',
      'name-star',
      'no-names',
      'cd-name-param',
      'ct-filename-param',
      'dup-name',
    ]);
    setName(t, 'name', null);
    setName(t, 'filename', null);
    const P = (k, val, q = 'dq') => ({ k, v: val, q });
    switch (v) {
      case 'ct-only':
        ctf.params.push(P('name', N));
        break;
      case 'cd-only':
        cdf.params.push(P('filename', N));
        break;
      case 'ct-safe-cd-danger':
        ctf.params.push(P('name', SAFE));
        cdf.params.push(P('filename', N));
        break;
      case 'ct-danger-cd-safe':
        ctf.params.push(P('name', N));
        cdf.params.push(P('filename', SAFE));
        break;
      case 'star-danger':
        cdf.params.push(...rng.shuffle([P('filename', SAFE), P('filename*', `UTF-8''${pct(N)}`, 'none')]));
        break;
      case 'star-safe':
        cdf.params.push(...rng.shuffle([P('filename', N), P('filename*', `UTF-8''${pct(SAFE)}`, 'none')]));
        break;
      case 'dup-filename':
        cdf.params.push(...rng.shuffle([P('filename', SAFE), P('filename', N)]));
        break;
      case 'dup-name':
        ctf.params.push(...rng.shuffle([P('name', SAFE), P('name', N)]));
        break;
      case 'name-star':
        ctf.params.push(...rng.shuffle([P('name', SAFE), P('name*', `utf-8'en'${pct(N)}`, 'none')]));
        break;
      case 'no-names':
        break;
      case 'cd-name-param':
        cdf.params.push(P('name', N));
        break;
      case 'ct-filename-param':
        ctf.params.push(P('filename', N));
        break;
    }
    return v;
  },
  rfc2231(ctx, rng) {
    const t = pickTarget(ctx, rng, (d) => d.nameable);
    if (!t) return null;
    const N = t.dname;
    const useCd = rng.chance(0.6);
    let f = fieldsOf(t, useCd ? 'cd' : 'ct')[0];
    if (!f) t.fields.push((f = cd('attachment')));
    const k = useCd ? 'filename' : 'name';
    setName(t, k, null);
    const cut = rng.int(1, N.length - 1);
    const a = N.slice(0, cut),
      b = N.slice(cut);
    const P = (kk, val, q = 'dq') => ({ k: kk, v: val, q });
    const v = rng.pick([
      'proper',
      'encoded',
      'out-of-order',
      'missing-0',
      'gap',
      'dup-index',
      'with-plain-safe',
      'charset-late',
      'leading-zero',
      'mixed-star',
      'three',
      'utf-16',
      'charset-unknown',
      'utf-7',
      'utf-32',
    ]);
    switch (v) {
      case 'proper':
        f.params.push(P(`${k}*0`, a), P(`${k}*1`, b));
        break;
      case 'encoded':
        f.params.push(P(`${k}*0*`, `UTF-8''${pct(a)}`, 'none'), P(`${k}*1*`, pct(b), 'none'));
        break;
      case 'out-of-order':
        f.params.push(P(`${k}*1`, b), P(`${k}*0`, a));
        break;
      case 'missing-0':
        f.params.push(P(`${k}*1`, a), P(`${k}*2`, b));
        break;
      case 'gap':
        f.params.push(P(`${k}*0`, a), P(`${k}*2`, b));
        break;
      case 'dup-index':
        f.params.push(P(`${k}*0`, SAFE), P(`${k}*0`, a), P(`${k}*1`, b));
        break;
      case 'with-plain-safe':
        f.params.push(...rng.shuffle([P(k, SAFE)]), P(`${k}*0`, a), P(`${k}*1`, b));
        break;
      case 'charset-late':
        f.params.push(P(`${k}*0`, a), P(`${k}*1*`, `UTF-8''${pct(b)}`, 'none'));
        break;
      case 'leading-zero':
        f.params.push(P(`${k}*0`, a), P(`${k}*01`, b));
        break;
      case 'mixed-star':
        f.params.push(P(`${k}*0*`, `us-ascii''${pct(a)}`, 'none'), P(`${k}*1`, b));
        break;
      case 'three':
        f.params.push(P(`${k}*0`, a.slice(0, 1)), P(`${k}*1`, a.slice(1)), P(`${k}*2`, b));
        break;
      case 'utf-16':
        f.params.push(
          P(`${k}*`, `utf-16le''${[...Buffer.from(N, 'utf16le')].map((x) => '%' + x.toString(16).padStart(2, '0').toUpperCase()).join('')}`, 'none'),
          P(k, SAFE),
        );
        break;
      case 'charset-unknown':
        f.params.push(P(`${k}*`, `x-unknown''${pct(N)}`, 'none'));
        break;
      case 'utf-7':
        f.params.push(P(`${k}*`, `utf-7''${pct(utf7(N))}`, 'none'), P(k, SAFE));
        break;
      case 'utf-32':
        f.params.push(
          P(
            `${k}*`,
            `utf-32le''${[...Buffer.from([...N].flatMap((c) => [c.charCodeAt(0), 0, 0, 0]))].map((x) => '%' + x.toString(16).padStart(2, '0').toUpperCase()).join('')}`,
            'none',
          ),
          P(k, SAFE),
        );
        break;
    }
    return `${k}:${v}`;
  },
  rfc2047(ctx, rng) {
    const nt = namedTarget(ctx, rng);
    if (!nt) return null;
    const { t, nf } = nt;
    const N = t.dname;
    const [, prm] = rng.pick(nf);
    const v = rng.pick(['whole', 'split', 'embedded', 'unquoted', 'broken', 'lang', 'two-words-space', 'utf-7']);
    const cut = rng.int(1, N.length - 1);
    switch (v) {
      case 'whole':
        prm.v = rfc2047(N, rng);
        break;
      case 'split':
        prm.v = rfc2047(N.slice(0, cut), rng) + ' ' + rfc2047(N.slice(cut), rng);
        break;
      case 'two-words-space':
        prm.v = rfc2047(N.slice(0, cut), rng) + '\n ' + rfc2047(N.slice(cut), rng);
        break;
      case 'embedded':
        prm.v = rfc2047(N.slice(0, cut), rng) + N.slice(cut);
        break;
      case 'unquoted':
        prm.v = rfc2047(N, rng);
        prm.q = 'none';
        break;
      case 'broken':
        prm.v = rfc2047(N, rng).slice(0, -2);
        break;
      case 'lang':
        prm.v = `=?UTF-8*en?B?${Buffer.from(N).toString('base64')}?=`;
        break;
      case 'utf-7':
        prm.v = `=?utf-7?Q?${utf7(N).replace(/=/g, '=3D')}?=`;
        break;
    }
    return v;
  },
  'name-trick'(ctx, rng) {
    const nt = namedTarget(ctx, rng);
    if (!nt) return null;
    const { t, nf } = nt;
    const dot = t.dname.lastIndexOf('.');
    const stem = t.dname.slice(0, dot),
      ext = t.dname.slice(dot + 1);
    const tricks = {
      'trail-dot': `${t.dname}.`,
      'trail-space': `${t.dname} `,
      'trail-dots-spaces': `${t.dname} . .`,
      'zw-inside': `${stem}.${ext[0]}\u200b${ext.slice(1)}`,
      'zw-after': `${t.dname}\u200b`,
      'bom-after': `${t.dname}\ufeff`,
      rlo: `${stem}\u202e${'fdp'}.${ext}`,
      'rlo-inside': `${stem}\u202e.${ext}`,
      fullwidth: `${stem}.${[...ext].map((c) => String.fromCharCode(c.charCodeAt(0) + 0xfee0)).join('')}`,
      'fullwidth-dot': `${stem}\uff0e${ext}`,
      'nul-txt': `${t.dname}\u0000.txt`,
      upper: t.dname.toUpperCase(),
      'win-path': `C:\\Users\\x\\${t.dname}`,
      'unix-path': `../../${t.dname}`,
      ads: `${t.dname}::$DATA`,
      'ads-stream': `${t.dname}:zone`,
      tab: `${t.dname}\t`,
      nbsp: `${t.dname}\u00a0`,
      'soft-hyphen': `${stem}.${ext}\u00ad`,
      'double-ext': `${stem}.pdf.${ext}`,
      'lead-space': ` ${t.dname}`,
      combining: `${t.dname}\u0301`,
      'ctrl-inside': `${stem}.${ext[0]}\u0001${ext.slice(1)}`,
    };
    const v = rng.pick(Object.keys(tricks));
    const name = tricks[v];
    const how = rng.pick(['raw', 'raw', '2231', '2047']);
    for (const [f, prm] of nf) {
      if (how === 'raw') prm.v = name;
      else if (how === '2047') prm.v = rfc2047(name, rng);
      else {
        f.params.splice(f.params.indexOf(prm), 1, { k: prm.k + '*', v: `UTF-8''${pct(name)}`, q: 'none' });
      }
    }
    return `${v}:${how}`;
  },
  'header-case'(ctx, rng) {
    const scope = rng.chance(0.5) ? [pickTarget(ctx, rng)].filter(Boolean) : allParts(ctx);
    const style = rng.pick(['upper', 'lower', 'random']);
    for (const p of scope) {
      for (const f of p.fields) {
        if (f.kind === 'raw') continue;
        const n = f.name;
        f.name =
          style === 'upper'
            ? n.toUpperCase()
            : style === 'lower'
              ? n.toLowerCase()
              : [...n].map((c) => (rng.chance(0.5) ? c.toUpperCase() : c.toLowerCase())).join('');
      }
    }
    return style;
  },
  'header-ws'(ctx, rng) {
    const t = pickTarget(ctx, rng) ?? ctx.root;
    const f = rng.pick(t.fields.filter((x) => x.kind !== 'raw'));
    if (!f) return null;
    const v = rng.pick([
      'space-before-colon',
      'no-space',
      'tab',
      'fold-params',
      'fold-before-eq',
      'fold-in-quote',
      'fold-first',
      'ws-around-eq',
      'fold-empty-line',
      'fold-tab-only',
    ]);
    switch (v) {
      case 'space-before-colon':
        f.sep = ' : ';
        break;
      case 'no-space':
        f.sep = ':';
        break;
      case 'tab':
        f.sep = ':\t';
        break;
      case 'fold-params':
        f.fold = '\n\t';
        break;
      case 'fold-first':
        f.sep = ':\n ';
        break;
      case 'fold-empty-line':
        f.sep = ':\n \n ';
        break;
      case 'fold-tab-only':
        f.fold = '\n\t\n\t';
        break;
      case 'fold-before-eq':
        f.eq = '\n =';
        break;
      case 'ws-around-eq':
        f.eq = ' = ';
        break;
      case 'fold-in-quote': {
        const p = (f.params ?? []).find((x) => x.q === 'dq' && x.v.length > 2);
        if (!p) return null;
        const cut = rng.int(1, p.v.length - 1);
        p.v = p.v.slice(0, cut) + '\n ' + p.v.slice(cut);
        break;
      }
    }
    return `${f.kind}:${v}`;
  },
  nocolon(ctx, rng) {
    const t = pickTarget(ctx, rng) ?? ctx.root;
    const N = t.dname ?? 'evil.exe';
    const line = rng.pick([
      `Content-Disposition attachment; filename="${N}"`,
      `Content-Type application/x-msdownload; name="${N}"`,
      'X-Junk-without-colon',
      '>From mallory@example.test',
      `: empty name; filename="${N}"`,
      'Content-Type',
      `\tContent-Disposition: attachment; filename="${N}"`,
    ]);
    const at = rng.int(0, t.fields.length);
    t.fields.splice(at, 0, raw(line));
    return `${JSON.stringify(line.slice(0, 24))}@${at}`;
  },
  'ct-weird'(ctx, rng) {
    const t = pickTarget(ctx, rng);
    if (!t) return null;
    const f = fieldsOf(t, 'ct')[0];
    if (!f) return null;
    const v = rng.pick([
      'application',
      'application/octet-stream/x',
      '(c) application/octet-stream',
      'Application/X-MSDownload',
      'application /octet-stream',
      '"application/octet-stream"',
      'text/plain',
      'image/jpeg',
      'multipart/mixed',
      'message/rfc822',
      'application/x-msdownload',
      'text',
      '',
      'application/octet-stream;',
      'message/partial',
      'application/x-msdownload (comment)',
      'text/plain charset=us-ascii',
    ]);
    f.type = v;
    return JSON.stringify(v);
  },
  'cd-weird'(ctx, rng) {
    const t = pickTarget(ctx, rng);
    if (!t) return null;
    let f = fieldsOf(t, 'cd')[0];
    if (!f) t.fields.push((f = cd('attachment', [['filename', t.dname ?? 'evil.exe']])));
    const v = rng.pick([
      'inline',
      'ATTACHMENT',
      'attachment;',
      'attachment filename',
      'form-data',
      '"attachment"',
      'attach ment',
      '',
      '(x) attachment',
      'attachment (x)',
    ]);
    f.type = v;
    return JSON.stringify(v);
  },
  'param-syntax'(ctx, rng) {
    const nt = namedTarget(ctx, rng);
    if (!nt) return null;
    const { t, nf } = nt;
    const [f, prm] = rng.pick(nf);
    const N = t.dname;
    const v = rng.pick([
      'unterminated-before',
      'escaped-quote',
      'semicolon-in-quote',
      'comment-before',
      'single-quotes',
      'unquoted',
      'unquoted-space',
      'trailing-junk',
      'empty-before',
      'no-value-before',
      'unterminated-self',
    ]);
    const i = f.params.indexOf(prm);
    switch (v) {
      case 'unterminated-before':
        f.params.splice(i, 0, { k: 'x', v: '"abc', q: 'none' });
        break;
      case 'escaped-quote':
        prm.v = `${SAFE}\\"; ${prm.k}=\\"${N}`;
        prm.q = 'dq-raw';
        break;
      case 'semicolon-in-quote':
        prm.v = `${SAFE}; ${prm.k}=${N}`;
        break;
      case 'comment-before':
        prm.k = `(c)${prm.k}`;
        break;
      case 'single-quotes':
        prm.v = `'${N}'`;
        prm.q = 'none';
        break;
      case 'unquoted':
        prm.q = 'none';
        break;
      case 'unquoted-space':
        prm.v = `${SAFE} ${N}`;
        prm.q = 'none';
        break;
      case 'trailing-junk':
        prm.v = `"${N}"junk`;
        prm.q = 'none';
        break;
      case 'empty-before':
        f.params.splice(i, 0, { k: prm.k, v: '', q: 'dq' });
        break;
      case 'no-value-before':
        f.params.splice(i, 0, { k: 'novalue', v: null, q: 'none' });
        break;
      case 'unterminated-self':
        prm.v = `"${N}`;
        prm.q = 'none';
        break;
    }
    return v;
  },
  'wrap-rfc822'(ctx, rng) {
    const t = pickTarget(ctx, rng) ?? ctx.root;
    const enc = rng.weighted([
      [5, 'raw7'],
      [3, 'base64'],
      [2, 'qp'],
    ]);
    const innerTop = ['From: Eve <eve@example.test>', 'Subject: fwd', 'MIME-Version: 1.0'];
    if (t !== ctx.root) t.top = [...innerTop, ...t.top];
    // also a forwarded message that is only an attachment named *.eml (clients open it as a message)
    const type = rng.pick(['message/rfc822', 'message/rfc822', 'message/global', 'Message/RFC822', 'application/octet-stream', 'text/plain']);
    const asFile = !type.toLowerCase().startsWith('message/');
    const wrapper = {
      top: [],
      fields: [
        ct(type, asFile ? [['name', 'fwd.eml']] : []),
        cd(rng.pick(['inline', 'attachment']), asFile || rng.chance(0.3) ? [['filename', 'fwd.eml']] : []),
      ],
      message: t,
      enc,
    };
    if (enc !== 'raw7' || rng.chance(0.3)) wrapper.fields.push(cte(ENC_CTE[enc]));
    if (t === ctx.root) {
      const root = multipart(rng, 'mixed', [textPart(rng, 'forwarded\n'), wrapper]);
      root.top = t.top;
      t.top = [...innerTop];
      ctx.root = root;
    } else replaceIn(ctx, t, wrapper);
    return `${type}:${enc}`;
  },
  'wrap-multipart'(ctx, rng) {
    const t = pickTarget(ctx, rng);
    if (!t) return null;
    const sub = rng.pick(['alternative', 'related', 'digest', 'signed', 'x-weird', 'report', 'parallel']);
    const kids = [t];
    if (sub === 'signed')
      kids.push(leaf('application/pgp-signature', [], Buffer.from('-----BEGIN PGP SIGNATURE-----\nxx\n-----END PGP SIGNATURE-----\n'), 'raw7'));
    else if (rng.chance(0.5)) kids.unshift(textPart(rng, 'inner text\n'));
    const m = multipart(rng, sub, kids);
    if (sub === 'digest' && rng.chance(0.5)) {
      // a digest child without Content-Type is message/rfc822 by default
      t.fields = t.fields.filter((f) => f.kind !== 'ct');
    }
    replaceIn(ctx, t, m);
    return sub;
  },
  boundary(ctx, rng) {
    const t = pickTarget(ctx, rng);
    let par = t ? parentOf(ctx.root, t) : null;
    while (par && !par.children) par = parentOf(ctx.root, par);
    if (!par) par = rng.pick(multiparts(ctx) ?? []);
    if (!par) return null;
    const idx = t && par.children.includes(t) ? par.children.indexOf(t) : rng.int(0, par.children.length - 1);
    const f = fieldsOf(par, 'ct')[0];
    const B = par.boundary;
    const bp = f?.params.find((p) => p.k === 'boundary');
    if (!f || !bp) return null;
    const v = rng.pick([
      'ws-after',
      'garbage-after',
      'prefix-inner',
      'prefix-outer',
      'missing-close',
      'dup-param-first',
      'dup-param-second',
      'no-boundary',
      'quoted-special',
      'unquoted-special',
      'case',
      'empty',
      'long',
      'second-ct',
      'close-early',
      'after-close',
      'fold-param',
      'dup-delim',
      'no-delim-before',
      'inner-delim',
      'boundary-2231',
      'boundary-2231-cont',
      'boundary-2047',
      'same-as-parent',
    ]);
    par.delims ??= [];
    switch (v) {
      case 'ws-after':
        par.delims[idx] = `--${B}${rng.pick([' ', '\t', '  \t'])}`;
        break;
      case 'garbage-after':
        par.delims[idx] = `--${B}${rng.pick(['x', '-', '--x', '=', ' x'])}`;
        break;
      case 'prefix-inner':
      case 'prefix-outer': {
        const inner = multipart(rng, 'mixed', [textPart(rng, 'inner\n'), par.children[idx]]);
        const ib = v === 'prefix-inner' ? `${B}${rng.pick(['-1', 'a', '--', ' x'])}` : B.slice(0, Math.max(1, B.length - rng.int(1, 3)));
        inner.boundary = ib;
        inner.fields[0].params[0].v = ib;
        par.children[idx] = inner;
        break;
      }
      case 'missing-close':
        par.close = false;
        break;
      case 'dup-param-first':
        f.params.push({ k: 'boundary', v: B + 'decoy', q: 'dq' });
        break;
      case 'dup-param-second':
        f.params.unshift({ k: 'boundary', v: B + 'decoy', q: 'dq' });
        break;
      case 'no-boundary':
        f.params = f.params.filter((p) => p.k !== 'boundary');
        break;
      case 'quoted-special':
      case 'unquoted-special': {
        const nb = `${B}${rng.pick(['=x', ' y', ':z', '?a', '(c)', ';d'])}`;
        par.boundary = nb;
        bp.v = nb;
        bp.q = v === 'quoted-special' ? 'dq' : 'none';
        break;
      }
      case 'case':
        par.delims[idx] = `--${B.toUpperCase() === B ? B.toLowerCase() : B.toUpperCase()}`;
        break;
      case 'empty':
        par.boundary = '';
        bp.v = '';
        break;
      case 'long':
        par.boundary = B + 'L'.repeat(rng.int(60, 200));
        bp.v = par.boundary;
        break;
      case 'second-ct':
        f.params = f.params.filter((p) => p.k !== 'boundary');
        par.fields.push(ct(f.type, [['boundary', B]]));
        break;
      case 'close-early':
        par.closeAt = idx;
        break;
      case 'after-close':
        par.closeAt = idx;
        par.reopen = true;
        break;
      case 'fold-param':
        f.fold = '\n ';
        break;
      case 'boundary-2231':
        bp.k = 'boundary*';
        bp.v = `us-ascii'en'${pct(B)}`;
        bp.q = 'none';
        break;
      case 'boundary-2231-cont': {
        const cut = Math.max(1, Math.floor(B.length / 2));
        f.params.splice(f.params.indexOf(bp), 1, { k: 'boundary*0', v: B.slice(0, cut), q: 'dq' }, { k: 'boundary*1', v: B.slice(cut), q: 'dq' });
        break;
      }
      case 'boundary-2047':
        bp.v = `=?us-ascii?Q?${B}?=`;
        break;
      case 'dup-delim':
        par.dupDelim = idx;
        break;
      case 'no-delim-before':
        par.delims[idx] = `x--${B}`;
        break;
      case 'same-as-parent': {
        // a nested multipart that reuses its parent's boundary
        const inner = multipart(rng, 'mixed', [textPart(rng, 'inner\n'), par.children[idx]]);
        inner.boundary = B;
        inner.fields[0].params[0].v = B;
        par.children[idx] = inner;
        break;
      }
      case 'inner-delim': {
        // a nested message's body contains a line that is the outer delimiter
        const child = par.children[idx];
        const fake = `--${B}\nContent-Type: application/octet-stream; name="evil.exe"\nContent-Transfer-Encoding: base64\n\n${b64lines(EXE)}`;
        const host = textPart(rng, 'x');
        host.payload = Buffer.from(`look:\n${fake}\n`, 'latin1');
        host.enc = 'raw7';
        host.fields = [ct('text/plain')];
        par.children.splice(idx, 0, host);
        void child;
        break;
      }
    }
    return v;
  },
  'deep-nest'(ctx, rng) {
    // the target under many levels of multipart (around the policy's max_depth of 30)
    const t = pickTarget(ctx, rng);
    if (!t) return null;
    const n = rng.pick([5, 15, 28, 29, 30, 31, 32, 40]);
    let cur = t;
    for (let k = 0; k < n; k++) cur = multipart(rng, rng.pick(['mixed', 'related', 'alternative']), [cur]);
    replaceIn(ctx, t, cur);
    return String(n);
  },
  'many-parts'(ctx, rng) {
    // many small parts before the target (around the policy's max_parts of 1000)
    const t = pickTarget(ctx, rng);
    const par = t ? parentOf(ctx.root, t) : null;
    if (!par?.children) return null;
    const n = rng.pick([100, 990, 998, 999, 1000, 1001, 1100]);
    const fillers = [];
    for (let k = 0; k < n; k++) fillers.push({ top: [], fields: [], payload: Buffer.from('x'), enc: 'raw7' });
    par.children.splice(par.children.indexOf(t), 0, ...fillers);
    return String(n);
  },
  'encoded-multipart'(ctx, rng) {
    // a multipart whose body is itself base64 / quoted-printable encoded (not allowed by RFC 2045)
    const par = rng.pick(multiparts(ctx));
    if (!par) return null;
    const enc = rng.pick(['base64', 'qp']);
    par.fields.push(cte(rng.pick([ENC_CTE[enc], ENC_CTE[enc].toUpperCase()])));
    par.encodeBody = enc;
    return enc;
  },
  'pre-epilogue'(ctx, rng) {
    const par = rng.pick(multiparts(ctx));
    if (!par) return null;
    const v = rng.pick(['pre-uu', 'epi-uu', 'pre-fakepart', 'epi-part-after-close', 'pre-long', 'epi-delim']);
    const B = par.boundary;
    const fakePart = `Content-Type: application/octet-stream; name="evil.exe"\nContent-Disposition: attachment; filename="evil.exe"\nContent-Transfer-Encoding: base64\n\n${b64lines(EXE)}`;
    switch (v) {
      case 'pre-uu':
        par.preamble = `This is a multi-part message.\n${uuBlock(EXE, 'evil.exe')}`;
        break;
      case 'epi-uu':
        par.epilogue = `\n${uuBlock(EXE, 'evil.exe')}\n`;
        break;
      case 'pre-fakepart':
        par.preamble = `--X${B}\n${fakePart}\n--X${B}--`;
        break;
      case 'epi-part-after-close':
        par.epilogue = `--${B}\n${fakePart}\n--${B}--\n`;
        break;
      case 'pre-long':
        par.preamble = 'p'.repeat(rng.int(1000, 20000));
        break;
      case 'epi-delim':
        par.epilogue = `--${B}--\n--${B}\n${fakePart}\n`;
        break;
    }
    return v;
  },
  'uu-text'(ctx, rng) {
    const texts = allParts(ctx).filter((p) => p.text && !p.children);
    const t = texts.length ? rng.pick(texts) : null;
    const eicar = rng.chance(0.3);
    const payload = eicar ? EICAR : EXE;
    const name = rng.pick(['evil.exe', 'evil.exe ', 'test.bin', 'invoice.js', '"evil.exe"', 'evil.exe.', '']);
    const mode = rng.pick(['644', '0644', '666', '755', '']);
    let block;
    const v = rng.pick([
      'plain',
      'base64-begin',
      'no-end',
      'lead-space',
      'crlf-inside',
      'upper',
      'no-mode',
      'tabs',
      'mode-4',
      'name-space',
      'no-backtick',
      'trailing-junk',
      'in-quote',
    ]);
    switch (v) {
      case 'base64-begin':
        block = [`begin-base64 ${mode || '644'} ${name}`, b64lines(payload, 60), '===='].join('\n');
        break;
      case 'no-end':
        block = uuBlock(payload, name, mode).replace(/\nend$/, '');
        break;
      case 'lead-space':
        block = uuBlock(payload, name, mode)
          .split('\n')
          .map((l) => ' ' + l)
          .join('\n');
        break;
      case 'upper':
        block = uuBlock(payload, name, mode).replace(/^begin/, 'BEGIN');
        break;
      case 'no-mode':
        block = [`begin ${name}`, ...uuencodeLines(payload), 'end'].join('\n');
        break;
      case 'crlf-inside':
        block = uuBlock(payload, name, mode).replace(/\n/g, '\r\n');
        break;
      case 'tabs':
        block = uuBlock(payload, name, mode || '644').replace(/^begin (\S+) /, 'begin\t$1\t');
        break;
      case 'mode-4':
        block = uuBlock(payload, name, '100644'.slice(-rng.int(4, 6)));
        break;
      case 'name-space':
        block = uuBlock(payload, `my ${name || 'evil.exe'}`, mode || '644');
        break;
      case 'no-backtick':
        block = uuBlock(payload, name, mode || '644').replace(/\n`\nend$/, '\nend');
        break;
      case 'trailing-junk':
        block = uuBlock(payload, name, mode || '644')
          .split('\n')
          .map((l, k) => (k > 0 && l.length > 40 ? l + 'XX' : l))
          .join('\n');
        break;
      case 'in-quote':
        block = uuBlock(payload, name, mode || '644')
          .split('\n')
          .map((l) => '> ' + l)
          .join('\n');
        break;
      default:
        block = uuBlock(payload, name, mode);
    }
    if (t) {
      t.payload = Buffer.concat([t.payload, Buffer.from(`\n${block}\n`, 'latin1')]);
      if (t.enc === 'raw7' && rng.chance(0.4)) {
        t.enc = rng.pick(['base64', 'qp']);
        const f = fieldsOf(t, 'cte')[0];
        if (f) f.value = ENC_CTE[t.enc];
        else t.fields.push(cte(ENC_CTE[t.enc]));
      }
    } else return null;
    return `${v}:${eicar ? 'eicar' : 'exe'}`;
  },
  'no-headers'(ctx, rng) {
    const t = pickTarget(ctx, rng, (d) => d !== ctx.root);
    if (!t) return null;
    t.fields = [];
    const v = rng.pick(['raw-binary', 'base64-body', 'no-blank']);
    if (v === 'raw-binary') t.enc = 'bin';
    if (v === 'no-blank') t.noBlank = true;
    return v;
  },
  'mime-version'(ctx, rng) {
    const v = rng.pick(['remove', 'comment', 'two', 'dup', 'garbage']);
    const top = ctx.root.top;
    const i = top.findIndex((l) => /^mime-version:/i.test(l));
    if (i < 0) return null;
    if (v === 'remove') top.splice(i, 1);
    else if (v === 'comment') top[i] = 'MIME-Version: 1.0 (produced by x)';
    else if (v === 'two') top[i] = 'MIME-Version: 2.0';
    else if (v === 'dup') top.splice(i, 0, 'MIME-Version: 1.0');
    else top[i] = 'MIME-Version: yes';
    return v;
  },
  'body-quirk'(ctx, rng) {
    const t = pickTarget(ctx, rng, (d) => d.enc === 'base64' || d.enc === 'qp');
    if (!t) return null;
    const b64v = ['oneline', 'w60', 'w4', 'garbage', 'mid-pad', 'no-pad', 'ws', 'trail-junk', 'lead-junk', 'lead-blank', 'url-safe'];
    const qpv = ['lower-hex', 'soft-everywhere', 'bad-escape', 'trail-ws'];
    const v = rng.pick(t.enc === 'base64' ? b64v : qpv);
    t.quirk = v;
    return v;
  },
  'header-8bit'(ctx, rng) {
    const nt = namedTarget(ctx, rng);
    if (!nt) return null;
    const { t, nf } = nt;
    const dot = t.dname.lastIndexOf('.');
    const n = rng.pick(['\u00e9', '\u00fc', '\u4e2d', '\u0430']) + t.dname.slice(0, dot) + t.dname.slice(dot);
    for (const [, prm] of nf) prm.v = n;
    t.latin1Header = rng.chance(0.3);
    return t.latin1Header ? 'latin1' : 'utf8';
  },
  'blank-ws-line'(ctx, rng) {
    const t = pickTarget(ctx, rng);
    if (!t || t.fields.length < 1) return null;
    const at = rng.int(0, t.fields.length);
    t.fields.splice(at, 0, raw(rng.pick([' ', '\t', '  \t '])));
    return `@${at}`;
  },
  'continuation-first'(ctx, rng) {
    const t = pickTarget(ctx, rng);
    if (!t) return null;
    t.fields.unshift(raw(rng.pick([' folded-junk', '\tContent-Type: text/plain', ' : x'])));
    return 'yes';
  },
  'long-line'(ctx, rng) {
    const t = pickTarget(ctx, rng) ?? ctx.root;
    const v = rng.pick(['x-pad', 'long-name', 'b64-line', 'long-ct-line']);
    switch (v) {
      case 'x-pad':
        t.fields.unshift(raw(`X-Pad: ${'a'.repeat(rng.int(998, 12000))}`));
        break;
      case 'long-name': {
        const nf = nameFields(t);
        if (!nf.length) return null;
        for (const [, prm] of nf) prm.v = 'A'.repeat(rng.int(200, 3000)) + prm.v;
        break;
      }
      case 'b64-line':
        t.quirk = 'oneline';
        break;
      case 'long-ct-line': {
        const f = fieldsOf(t, 'ct')[0];
        if (!f) return null;
        f.params.unshift({ k: 'x-pad', v: 'p'.repeat(rng.int(998, 6000)), q: 'dq' });
        break;
      }
    }
    return v;
  },
  'header-nul'(ctx, rng) {
    const t = pickTarget(ctx, rng);
    if (!t) return null;
    const f = rng.pick(t.fields.filter((x) => x.kind === 'ct' || x.kind === 'cd'));
    if (!f) return null;
    const v = rng.pick(['in-type', 'in-name', 'before-params', 'in-header-name']);
    if (v === 'in-type') f.type = f.type + '\u0000';
    else if (v === 'in-header-name') f.name = f.name.slice(0, 4) + '\u0000' + f.name.slice(4);
    else if (v === 'before-params') f.params.unshift({ k: '\u0000x', v: 'y', q: 'none' });
    else {
      const p = f.params[0];
      if (!p) return null;
      p.v = `${SAFE}\u0000${p.v}`;
    }
    return v;
  },
  'bare-cr'(ctx, rng) {
    const t = pickTarget(ctx, rng);
    if (!t) return null;
    const f = rng.pick(t.fields.filter((x) => x.kind === 'ct' || x.kind === 'cd'));
    if (!f) return null;
    f.fold = rng.pick(['\r', '\r ', ';\r']);
    return JSON.stringify(f.fold);
  },
  'no-blank'(ctx, rng) {
    const t = pickTarget(ctx, rng, (d) => d !== ctx.root);
    if (!t) return null;
    t.noBlank = true;
    return rng.pick(['yes']);
  },
  'root-dup-ct'(ctx, rng) {
    const f = fieldsOf(ctx.root, 'ct')[0];
    if (!f || !ctx.root.children) return null;
    const decoy = ct(
      rng.pick(['text/plain', 'application/octet-stream', 'multipart/alternative']),
      rng.chance(0.5) ? [['boundary', 'decoy' + ctx.root.boundary]] : [],
    );
    const before = rng.chance(0.5);
    ctx.root.fields.splice(before ? 0 : ctx.root.fields.length, 0, decoy);
    return `${decoy.type}:${before ? 'first' : 'last'}`;
  },
};

const BYTE_MUTATIONS = {
  eol(ctx, rng) {
    ctx.eol = rng.pick(['lf', 'cr', 'mixed', 'stray-cr', 'crcrlf']);
    return ctx.eol;
  },
  nul(ctx, rng) {
    ctx.nul = rng.int(1, 4);
    return String(ctx.nul);
  },
  flip(ctx, rng) {
    ctx.flip = rng.int(1, 3);
    return String(ctx.flip);
  },
  truncate(ctx, rng) {
    ctx.truncate = rng.next();
    return 'yes';
  },
};

export const FAMILIES = [
  // [weight, name]
  [6, 'dup-ct'],
  [6, 'dup-cd'],
  [6, 'dup-cte'],
  [6, 'cte-variant'],
  [4, 'cte-unknown'],
  [8, 'names'],
  [6, 'rfc2231'],
  [5, 'rfc2047'],
  [7, 'name-trick'],
  [3, 'header-case'],
  [5, 'header-ws'],
  [4, 'nocolon'],
  [4, 'ct-weird'],
  [3, 'cd-weird'],
  [4, 'param-syntax'],
  [4, 'wrap-rfc822'],
  [3, 'wrap-multipart'],
  [8, 'boundary'],
  [3, 'pre-epilogue'],
  [4, 'uu-text'],
  [2, 'no-headers'],
  [2, 'mime-version'],
  [3, 'body-quirk'],
  [2, 'header-8bit'],
  [2, 'blank-ws-line'],
  [1, 'continuation-first'],
  [2, 'long-line'],
  [2, 'header-nul'],
  [2, 'bare-cr'],
  [1, 'no-blank'],
  [2, 'root-dup-ct'],
  [2, 'encoded-multipart'],
  [1, 'deep-nest'],
  [1, 'many-parts'],
  [4, 'eol'],
  [2, 'nul'],
  [2, 'flip'],
  [1, 'truncate'],
].map(([w, n]) => [w, n]);

// ------------------------------------------------------------------------------------- serialisation
function quoteVal(p) {
  if (p.v === null) return '';
  if (p.q === 'none') return p.v;
  if (p.q === 'dq-raw') return `"${p.v}"`;
  return `"${p.v.replace(/(["\\])/g, '\\$1')}"`;
}

function fieldText(f) {
  if (f.kind === 'raw') return f.value;
  const sep = f.sep ?? ': ';
  if (f.kind === 'cte') return `${f.name}${sep}${f.value}`;
  const fold = f.fold ?? ' ';
  const eq = f.eq ?? '=';
  let s = `${f.name}${sep}${f.type}`;
  for (const p of f.params) s += p.v === null ? `;${fold}${p.k}` : `;${fold}${p.k}${eq}${quoteVal(p)}`;
  return s;
}

function encodeBody(p) {
  const payload = p.payload;
  switch (p.enc) {
    case 'base64': {
      const s = payload.toString('base64');
      switch (p.quirk) {
        case 'oneline':
          return s;
        case 'w60':
          return b64lines(payload, 60);
        case 'w4':
          return b64lines(payload, 4);
        case 'garbage':
          return b64lines(payload).replace(/(.{10})/g, '$1!*');
        case 'mid-pad': {
          const a = payload.subarray(0, 4),
            b = payload.subarray(4);
          return Buffer.from(a).toString('base64').replace(/A*$/, '') + '==\n' + b64lines(b);
        }
        case 'no-pad':
          return b64lines(payload).replace(/=+$/, '');
        case 'ws':
          return b64lines(payload).replace(/(.{8})/g, '$1 ');
        case 'trail-junk':
          return b64lines(payload) + '\n-- \nsignature text';
        case 'lead-junk':
          return 'this is not base64\n' + b64lines(payload);
        case 'lead-blank':
          return '\n\n' + b64lines(payload);
        case 'url-safe':
          return b64lines(payload).replace(/\+/g, '-').replace(/\//g, '_');
        default:
          return b64lines(payload);
      }
    }
    case 'qp': {
      let s = qpEncode(payload, !p.text);
      if (p.quirk === 'lower-hex') s = s.replace(/=([0-9A-F]{2})/g, (_m, h) => '=' + h.toLowerCase());
      if (p.quirk === 'soft-everywhere') s = s.replace(/(.{3})/g, '$1=\n');
      if (p.quirk === 'bad-escape') s = '=ZZ' + s;
      if (p.quirk === 'trail-ws')
        s = s
          .split('\n')
          .map((l) => l + ' \t')
          .join('\n');
      return s;
    }
    case 'uu':
      return uuBlock(payload, p.dname ?? 'file.bin');
    default:
      // raw7, raw8, bin
      return payload;
  }
}

function serialise(p, out) {
  const push = (x) => out.push(typeof x === 'string' ? Buffer.from(x, p.latin1Header ? 'latin1' : 'utf8') : x);
  const lines = [...p.top, ...p.fields.map(fieldText)];
  for (const l of lines) push(l + '\n');
  if (!p.noBlank) push('\n');
  if (p.children && p.encodeBody) {
    const inner = [];
    serialise({ ...p, top: [], fields: [], noBlank: true, encodeBody: undefined }, inner);
    const buf = Buffer.concat(inner);
    push(p.encodeBody === 'base64' ? b64lines(buf) : qpEncode(buf, false));
    return;
  }
  if (p.children) {
    const B = p.boundary;
    if (p.preamble !== undefined) push(p.preamble + '\n');
    p.children.forEach((c, i) => {
      if (p.closeAt === i) push(`--${B}--\n`);
      push((p.delims?.[i] ?? `--${B}`) + '\n');
      if (p.dupDelim === i) push(`--${B}\n`);
      serialise(c, out);
      push('\n');
    });
    if (p.close !== false && !(p.closeAt !== undefined && !p.reopen)) push(`--${B}--\n`);
    if (p.epilogue !== undefined) push(p.epilogue);
    return;
  }
  if (p.message) {
    const inner = [];
    serialise(p.message, inner);
    const buf = Buffer.concat(inner);
    if (p.enc === 'base64') push(b64lines(buf));
    else if (p.enc === 'qp') push(qpEncode(buf, false));
    else push(buf);
    return;
  }
  const body = encodeBody(p);
  push(typeof body === 'string' ? Buffer.from(body, 'latin1') : body);
}

function convertEol(buf, mode, rng) {
  const out = [];
  let last = 0;
  for (let i = 0; i < buf.length; i++) {
    if (buf[i] !== 0x0a) continue;
    out.push(buf.subarray(last, i));
    let e;
    switch (mode) {
      case 'lf':
        e = '\n';
        break;
      case 'cr':
        e = '\r';
        break;
      case 'mixed':
        e = rng.pick(['\r\n', '\n', '\r']);
        break;
      case 'stray-cr':
        e = rng.chance(0.1) ? '\r\r\n' : '\r\n';
        break;
      case 'crcrlf':
        e = '\r\r\n';
        break;
      default:
        e = '\r\n';
    }
    out.push(Buffer.from(e, 'latin1'));
    last = i + 1;
  }
  out.push(buf.subarray(last));
  return Buffer.concat(out);
}

function structurePoints(buf) {
  const pts = [];
  for (let i = 0; i < buf.length; i++) {
    const c = buf[i];
    if (
      (c === 0x2d && buf[i + 1] === 0x2d && (i === 0 || buf[i - 1] === 0x0a || buf[i - 1] === 0x0d)) ||
      c === 0x3a ||
      c === 0x3b ||
      c === 0x22 ||
      (c === 0x3d && i > 0 && buf[i - 1] !== 0x3d)
    )
      pts.push(i);
    if (pts.length > 4000) break;
  }
  return pts;
}

/** The plan of a case: template stream + ordered mutation families, each with its own stream. */
function plan(seed, index) {
  const rng = new Rng('mime-fuzz', seed, index);
  const n = rng.weighted([
    [2, 1],
    [4, 2],
    [3, 3],
    [2, 4],
    [1, 5],
  ]);
  const muts = [];
  for (let k = 0; k < n; k++) muts.push(rng.weighted(FAMILIES));
  return { rng, muts };
}

export const MAX_MESSAGE = 256 * 1024;

/**
 * Generates case `index` of `seed`. opts.skip: Set of mutation ordinals to leave out (minimiser);
 * opts.bare: drop harmless parts; opts.drop: Set of template danger indices to leave out;
 * opts.plainSubject: no EICAR subject. Returns { bytes, tags, families, applied, shape, dangers, ... }.
 */
export function generateCase(seed, index, opts = {}) {
  const { rng, muts } = plan(seed, index);
  const trng = rng.fork('template');
  const t = buildTemplate(trng);
  const ctx = { root: t.root, dangers: t.dangers, eol: 'crlf' };
  if (opts.bare) {
    walk(ctx.root, (p) => {
      if (p.children) p.children = p.children.filter((c) => !c.harmless);
    });
  }
  if (opts.drop?.size) {
    const gone = t.dangers.filter((d, k) => opts.drop.has(k) && d !== ctx.root);
    walk(ctx.root, (p) => {
      if (p.children) p.children = p.children.filter((c) => !gone.includes(c));
    });
    ctx.dangers = t.dangers.filter((d) => !gone.includes(d));
  }
  if (opts.plainSubject) {
    const eicar = EICAR.toString('latin1');
    ctx.root.top = ctx.root.top.map((l) =>
      !l.includes(eicar.slice(0, 20))
        ? l
        : /^Subject:/.test(l)
          ? 'Subject: Invoice'
          : /^From:/.test(l)
            ? 'From: Mallory <mallory@example.test>'
            : 'Message-ID: <plain@example.test>',
    );
  }
  const tags = [];
  const applied = [];
  muts.forEach((fam, k) => {
    if (opts.skip?.has(k)) return;
    const fn = TREE_MUTATIONS[fam] ?? BYTE_MUTATIONS[fam];
    const tag = fn(ctx, rng.fork('mut', k, fam));
    if (tag !== null && tag !== undefined) {
      tags.push(`${fam}:${tag}`);
      applied.push(k);
    }
  });
  const chunks = [];
  serialise(ctx.root, chunks);
  let bytes = Buffer.concat(chunks);
  const brng = rng.fork('bytes');
  bytes = convertEol(bytes, ctx.eol, brng);
  if (ctx.nul || ctx.flip) {
    const pts = structurePoints(bytes);
    const edits = [];
    for (let i = 0; i < (ctx.nul ?? 0); i++) edits.push(['nul', pts.length ? brng.pick(pts) + brng.int(-4, 4) : brng.int(0, bytes.length - 1)]);
    for (let i = 0; i < (ctx.flip ?? 0); i++) edits.push(['flip', pts.length ? brng.pick(pts) + brng.int(-6, 6) : brng.int(0, bytes.length - 1)]);
    edits.sort((a, b) => b[1] - a[1]);
    for (const [kind, at0] of edits) {
      const at = Math.max(0, Math.min(bytes.length - 1, at0));
      if (kind === 'nul') bytes = Buffer.concat([bytes.subarray(0, at), Buffer.from([0]), bytes.subarray(at)]);
      else {
        bytes = Buffer.from(bytes);
        bytes[at] = brng.chance(0.5) ? bytes[at] ^ (1 << brng.int(0, 7)) : brng.pick([0x0a, 0x0d, 0x20, 0x2d, 0x3a, 0x3b, 0x22, 0x3d, 0x09]);
      }
    }
  }
  if (ctx.truncate !== undefined) bytes = bytes.subarray(0, Math.max(1, Math.floor(bytes.length * (0.5 + ctx.truncate / 2))));
  if (bytes.length > MAX_MESSAGE) bytes = bytes.subarray(0, MAX_MESSAGE);
  const subject = ctx.root.top.some((l) => l.includes(EICAR.toString('latin1').slice(0, 20)));
  return {
    bytes,
    tags,
    families: muts,
    applied,
    shape: t.shape,
    dangers: ctx.dangers.map((d) => d.danger),
    allDangers: t.dangers.length,
    eicarSubject: subject,
  };
}
