// The readers of the MIME fuzzer and the danger checks they share.
//
//   imapReader       what postern serves to an IMAP client: BODYSTRUCTURE, BODY[p], BODY[p.MIME] and
//                    BINARY[p] for every part path, rendered by src/inspect/render.ts from the
//                    sanitised output and its part map, decoded the way a client decodes them
//   PythonReader     Python's email package (policy default and compat32), scripts/fuzz/py_reader.py,
//                    one long-lived process, length-prefixed frames
//   mailparserReader mailparser's simpleParser (attachments, text, html; forwarded messages opened)
//   bytesReader      the output bytes themselves (EICAR or the MZ marker in the clear)
//
// A finding is { reader, kind: 'name'|'mz'|'mz~embedded'|'eicar', where, detail }: something
// dangerous that reader would hand to a user ('mz': a payload that is the executable;
// 'mz~embedded': the executable's bytes inside some other payload, e.g. after a text line). Names are dangerous when any normalisation a reader or an operating
// system applies (RFC 2047/2231 decoding, trailing dots/spaces, invisible characters, NUL
// truncation, NFKC, path and stream suffixes) leaves a forbidden extension.
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EICAR, EXE, MZ_MARKER } from './mime-gen.mjs';

/** The executable's binary header up to and including the marker. */
const EXE_HEAD = EXE.subarray(0, EXE.indexOf(MZ_MARKER) + MZ_MARKER.length);

const here = dirname(fileURLToPath(import.meta.url));

/** Extensions of policies/default.yaml's filename rule (the fuzzer's templates use exe and js). */
export const DANGEROUS_EXT = [
  'exe',
  'com',
  'scr',
  'pif',
  'bat',
  'cmd',
  'vbs',
  'vbe',
  'js',
  'jse',
  'wsf',
  'wsh',
  'hta',
  'msi',
  'msp',
  'cpl',
  'jar',
  'ps1',
  'lnk',
  'reg',
  'dll',
  'scf',
  'iso',
  'img',
  'vhd',
  'vhdx',
  'appx',
  'msix',
  'sh',
];
const EXT_RE = new RegExp(`\\.(${DANGEROUS_EXT.join('|')})$`, 'i');

// ------------------------------------------------------------------------------------- name checks
/** UTF-7 (RFC 2152) decoder, lenient. */
export function decodeUtf7(s) {
  return s.replace(/\+([A-Za-z0-9+/]*)-?/g, (_m, b) => {
    if (b === '') return '+';
    const bytes = Buffer.from(b, 'base64');
    return Buffer.from(bytes.subarray(0, bytes.length & ~1))
      .swap16()
      .toString('utf16le');
  });
}
/** Bytes to text in the charsets the readers know (the ones that matter for hiding ".exe"). */
function charsetText(bytes, cs) {
  const c = (cs || 'utf-8').toLowerCase();
  if (/^utf-?7$/.test(c)) return decodeUtf7(bytes.toString('latin1'));
  if (/^utf-?16(le)?$/.test(c)) return bytes.toString('utf16le');
  if (/^utf-?16be$/.test(c))
    return Buffer.from(bytes.subarray(0, bytes.length & ~1))
      .swap16()
      .toString('utf16le');
  if (/^utf-?32(le)?$/.test(c)) {
    let o = '';
    for (let i = 0; i + 3 < bytes.length; i += 4) o += String.fromCodePoint(bytes.readUInt32LE(i) & 0x1fffff);
    return o;
  }
  if (/^(us-ascii|iso-8859-1|latin1|windows-1252|cp1252)$/.test(c)) return bytes.toString('latin1');
  return bytes.toString('utf8');
}

function decode2047(s) {
  // lenient: every encoded word decoded, whitespace between adjacent words dropped
  const re = /=\?([^?*\s]+)(?:\*[^?]*)?\?([bBqQ])\?([^?]*)\?=/g;
  if (!re.test(s)) return null;
  re.lastIndex = 0;
  const joined = s.replace(/(\?=)\s+(=\?)/g, '$1$2');
  return joined.replace(re, (_m, cs, enc, text) => {
    let bytes;
    if (enc.toUpperCase() === 'B') bytes = Buffer.from(text, 'base64');
    else
      bytes = Buffer.from(
        text.replace(/_/g, ' ').replace(/=([0-9A-Fa-f]{2})/g, (_x, h) => String.fromCharCode(parseInt(h, 16))),
        'latin1',
      );
    return charsetText(bytes, cs);
  });
}
function decode2231(s) {
  const m = /^([^']*)'[^']*'(.*)$/s.exec(s);
  const body = m ? m[2] : s;
  if (!m && !/%[0-9A-Fa-f]{2}/.test(s)) return null;
  const bytes = Buffer.from(
    body.replace(/%([0-9A-Fa-f]{2})/g, (_x, h) => String.fromCharCode(parseInt(h, 16))),
    'latin1',
  );
  return charsetText(bytes, m?.[1]);
}
function latin1AsUtf8(s) {
  // eslint-disable-next-line no-control-regex
  if (!/[\x80-\xff]/.test(s) || /[^\x00-\xff]/.test(s)) return null;
  return Buffer.from(s, 'latin1').toString('utf8');
}

// controls, soft hyphen, joiners, bidi controls, variation selectors, fillers: dropped or invisible
const INVISIBLE_RANGES = [
  [0x01, 0x1f],
  [0x7f, 0x7f],
  [0xad, 0xad],
  [0x34f, 0x34f],
  [0x61c, 0x61c],
  [0x115f, 0x1160],
  [0x17b4, 0x17b5],
  [0x180b, 0x180e],
  [0x200b, 0x200f],
  [0x202a, 0x202e],
  [0x2060, 0x206f],
  [0x3164, 0x3164],
  [0xfe00, 0xfe0f],
  [0xfeff, 0xfeff],
  [0xffa0, 0xffa0],
];
const dropInvisible = (s) => [...s].filter((ch) => !INVISIBLE_RANGES.some(([a, b]) => ch.codePointAt(0) >= a && ch.codePointAt(0) <= b)).join('');
const LEVELS = [
  ['plain', (s) => s.trim()],
  [
    'windows',
    (s) => {
      let x = s.split(/[\\/]/).pop();
      x = x.replace(/^([^:]*\.[^:.]*):.*$/s, '$1'); // alternate data stream suffix
      return x.replace(/[\s.]+$/u, '').trim();
    },
  ],
  ['invisible', dropInvisible],
  ['nul', (s) => s.split('\u0000')[0]],
  ['nul-dropped', (s) => s.replace(/\u0000/g, '')],
  ['nfkc', (s) => s.normalize('NFKC')],
];

/** null, or how a name comes out dangerous ('2047/windows' = after RFC 2047 decoding and Windows rules). */
export function dangerousName(name) {
  if (typeof name !== 'string' || !name) return null;
  const decodings = [['raw', name]];
  const add = (tag, v) => {
    if (v !== null && v !== undefined && !decodings.some(([, x]) => x === v)) decodings.push([tag, v]);
  };
  add('utf8', latin1AsUtf8(name));
  for (const [tag, v] of decodings.slice()) {
    add(tag === 'raw' ? '2047' : `${tag}+2047`, decode2047(v));
    add(tag === 'raw' ? '2231' : `${tag}+2231`, decode2231(v));
  }
  for (const [tag, v] of decodings.slice()) add(`${tag}+utf8`, latin1AsUtf8(v));
  for (const [dtag, v0] of decodings) {
    let v = v0;
    for (const [ltag, fn] of LEVELS) {
      v = fn(v);
      if (EXT_RE.test(v)) return `${dtag}/${ltag}`;
    }
  }
  return null;
}

/** 0: no MZ marker; 1: the marker inside the payload; 2: the payload is the executable (starts with it). */
export function mzLevel(buf) {
  // the marker alone is ASCII and survives quoted-printable text: only the binary header counts
  const at = buf.indexOf(EXE_HEAD);
  if (at < 0) return 0;
  return at === 0 ? 2 : 1;
}
/** 'mz' for an executable as delivered, 'mz~embedded' for its bytes inside some other payload. */
export const mzKind = (level) => (level === 2 ? 'mz' : 'mz~embedded');

function payloadFindings(reader, where, buf, out) {
  if (!buf?.length) return;
  const mz = mzLevel(buf);
  if (mz) out.push({ reader, kind: mzKind(mz), where, detail: mz === 2 ? 'payload is the MZ executable' : 'MZ marker inside the payload' });
  if (buf.includes(EICAR)) out.push({ reader, kind: 'eicar', where, detail: 'EICAR in decoded payload' });
}

// ------------------------------------------------------------------------------------- decoders (client-side, lenient)
export function b64decodeLenient(s) {
  const clean = s.toString('latin1').replace(/[^A-Za-z0-9+/=_-]/g, '');
  const out = [Buffer.from(clean.replace(/-/g, '+').replace(/_/g, '/'), 'base64')];
  // decoders that carry on after padding in the middle
  if (/=[^=]/.test(clean)) for (const piece of clean.split(/=+/)) if (piece.length >= 2) out.push(Buffer.from(piece, 'base64'));
  return Buffer.concat(out);
}
export function qpDecodeLenient(buf) {
  const s = buf.toString('latin1').replace(/=\r?\n|=\r/g, '');
  return Buffer.from(
    s.replace(/=([0-9A-Fa-f]{2})/g, (_m, h) => String.fromCharCode(parseInt(h, 16))),
    'latin1',
  );
}
export function uuDecodeBlocks(buf) {
  const out = [];
  const lines = buf.toString('latin1').split(/\r\n|\r|\n/);
  for (let i = 0; i < lines.length && out.length < 20; i++) {
    // lenient like the mail clients that decode inline uuencode: mode and name are optional
    const m = /^(\s*)begin(-base64)?(\s+[0-7]{1,4})?(?:\s+(.*?))?\s*$/.exec(lines[i]);
    if (!m) continue;
    const parts = [];
    const b64 = [];
    for (i++; i < lines.length; i++) {
      const l = lines[i].trim();
      if (l === 'end' || l === '====') break;
      if (m[2]) {
        b64.push(l);
        continue;
      }
      if (!l) continue;
      const n = (l.charCodeAt(0) - 32) & 63;
      const bytes = [];
      for (let j = 1; j + 3 < l.length + 3 && bytes.length < n; j += 4) {
        const c = [0, 1, 2, 3].map((k) => ((l.charCodeAt(j + k) || 32) - 32) & 63);
        bytes.push((c[0] << 2) | (c[1] >> 4), ((c[1] & 15) << 4) | (c[2] >> 2), ((c[2] & 3) << 6) | c[3]);
      }
      parts.push(Buffer.from(bytes.slice(0, n)));
    }
    // strict = what Python's uu module and GNU uudecode accept: "begin <octal mode> <name>" at the line start
    out.push({ name: m[4] ?? '', strict: !m[1] && !!m[3] && !!m[4], data: m[2] ? Buffer.from(b64.join(''), 'base64') : Buffer.concat(parts) });
  }
  return out;
}

/** Kinds found in a "begin" line without an octal mode or name get '~uu-lenient' (weaker evidence). */
export const uuKind = (kind, strict) => (strict ? kind : `${kind.split('~')[0]}~uu-lenient`);

function uuFindings(reader, where, buf, out) {
  if (!buf?.includes('begin')) return;
  for (const b of uuDecodeBlocks(buf)) {
    const how = dangerousName(b.name);
    if (how) out.push({ reader: `${reader}+uu`, kind: uuKind('name', b.strict), where, detail: `uuencoded block named ${JSON.stringify(b.name)} (${how})` });
    const found = [];
    payloadFindings(`${reader}+uu`, where, b.data, found);
    for (const f of found) out.push({ ...f, kind: uuKind(f.kind, b.strict) });
  }
}

// ------------------------------------------------------------------------------------- IMAP reader
/** Parses an IMAP response fragment (after the item name) into nested arrays; strings are latin1. */
export function parseImapValue(buf, pos = 0) {
  const s = buf;
  let i = pos;
  const ws = () => {
    while (i < s.length && s[i] === 0x20) i++;
  };
  const value = () => {
    ws();
    const c = s[i];
    if (c === 0x28) {
      i++;
      const list = [];
      for (;;) {
        ws();
        if (i >= s.length) throw new Error('unterminated list');
        if (s[i] === 0x29) {
          i++;
          return list;
        }
        list.push(value());
      }
    }
    if (c === 0x22) {
      i++;
      let out = '';
      while (i < s.length && s[i] !== 0x22) {
        if (s[i] === 0x5c) i++;
        out += String.fromCharCode(s[i]);
        i++;
      }
      i++;
      return out;
    }
    if (c === 0x7b || (c === 0x7e && s[i + 1] === 0x7b)) {
      if (c === 0x7e) i++;
      const close = s.indexOf(0x7d, i);
      const n = parseInt(s.toString('latin1', i + 1, close), 10);
      i = close + 3; // }\r\n
      const v = s.toString('latin1', i, i + n);
      i += n;
      return v;
    }
    const start = i;
    while (i < s.length && s[i] !== 0x20 && s[i] !== 0x29 && s[i] !== 0x28) i++;
    const atom = s.toString('latin1', start, i);
    return atom.toUpperCase() === 'NIL' ? null : atom;
  };
  const v = value();
  return { value: v, end: i };
}

function literalData(item) {
  // `NAME {n}\r\n<data>` or `NAME ~{n}\r\n<data>`
  const open = item.indexOf('{');
  if (open < 0) return null;
  const close = item.indexOf('}', open);
  const n = parseInt(item.toString('latin1', open + 1, close), 10);
  return item.subarray(close + 3, close + 3 + n);
}

function paramPairs(list) {
  const out = [];
  if (!Array.isArray(list)) return out;
  for (let i = 0; i + 1 < list.length; i += 2) out.push([String(list[i] ?? ''), String(list[i + 1] ?? '')]);
  return out;
}

/** Candidate names a client derives from body-fld-param and disposition params. */
export function namesFromParams(pairs) {
  const names = [];
  const cont = new Map();
  for (const [k0, v] of pairs) {
    const k = k0.toLowerCase();
    const m = /^(name|filename)\*(\d+)(\*)?$/.exec(k);
    if (m) {
      const list = cont.get(m[1]) ?? [];
      list.push([parseInt(m[2], 10), m[3] ? (decode2231(v) ?? v) : v]);
      cont.set(m[1], list);
      names.push(v);
      continue;
    }
    if (k === 'name' || k === 'filename') names.push(v);
    else if (k === 'name*' || k === 'filename*') names.push(decode2231(v) ?? v, v);
  }
  for (const list of cont.values()) {
    names.push(list.map(([, v]) => v).join(''));
    names.push(
      list
        .slice()
        .sort((a, b) => a[0] - b[0])
        .map(([, v]) => v)
        .join(''),
    );
  }
  return names;
}

/** name / filename parameters of the Content-Type and Content-Disposition fields of a header block. */
export function namesFromHeader(buf) {
  const fields = [];
  for (const line of buf.toString('latin1').split(/\r\n|\n|\r/)) {
    if (/^[ \t]/.test(line) && fields.length) fields[fields.length - 1] += ' ' + line.trim();
    else if (line) fields.push(line);
  }
  const names = [];
  for (const f of fields) {
    const m = /^\s*content-(type|disposition)\s*:(.*)$/is.exec(f);
    if (!m) continue;
    const pairs = [...m[2].matchAll(/;\s*([^=;\s]+)\s*=\s*("((?:[^"\\]|\\.)*)"|[^;\s]*)/g)].map((x) => [
      x[1],
      x[3] !== undefined ? x[3].replace(/\\(.)/g, '$1') : x[2],
    ]);
    names.push(...namesFromParams(pairs));
  }
  return names;
}

/** Walks a parsed BODYSTRUCTURE: [{path, type, subtype, params, encoding, dispParams, message}] */
export function bodystructureParts(bs, path = [], out = [], top = true) {
  if (!Array.isArray(bs)) return out;
  if (Array.isArray(bs[0])) {
    // multipart: bodies, then subtype, params, disposition...
    let n = 0;
    while (Array.isArray(bs[n])) n++;
    for (let k = 0; k < n; k++) bodystructureParts(bs[k], [...path, k + 1], out, false);
    const disp = bs[n + 2];
    out.push({
      path: path.join('.'),
      multipart: true,
      type: 'multipart',
      subtype: String(bs[n] ?? ''),
      params: paramPairs(bs[n + 1]),
      dispParams: Array.isArray(disp) ? paramPairs(disp[1]) : [],
    });
    return out;
  }
  const p = top ? [1] : path;
  const type = String(bs[0] ?? '').toLowerCase();
  const subtype = String(bs[1] ?? '').toLowerCase();
  const isMsg = type === 'message' && Array.isArray(bs[7]) && Array.isArray(bs[8]);
  const dispIdx = isMsg ? 11 : type === 'text' ? 9 : 8;
  const disp = bs[dispIdx];
  const rec = {
    path: p.join('.'),
    type,
    subtype,
    params: paramPairs(bs[2]),
    encoding: String(bs[5] ?? ''),
    dispParams: Array.isArray(disp) ? paramPairs(disp[1]) : [],
    message: isMsg,
  };
  out.push(rec);
  if (isMsg) {
    const inner = bs[8];
    if (Array.isArray(inner) && Array.isArray(inner[0])) bodystructureParts(inner, p, out, false);
    else bodystructureParts(inner, [...p, 1], out, false);
  }
  return out;
}

function decodeByEncoding(enc, data) {
  const e = enc.toLowerCase().trim();
  const first = e.split(/[\s;(]/)[0];
  const outs = [];
  for (const x of new Set([e, first])) {
    if (x === 'base64') outs.push(b64decodeLenient(data));
    else if (x === 'quoted-printable') outs.push(qpDecodeLenient(data));
    else if (/^(x-)?uu(encode|e)?$/.test(x)) for (const b of uuDecodeBlocks(data)) outs.push(b.data);
  }
  return outs;
}

/**
 * What an IMAP client sees. `modules` = { renderItem, parseFetchItems }. `structure` is the part map
 * the engine returned with the output (the inspector renders from exactly that pair).
 */
export function imapReader(output, structure, modules) {
  const { renderItem, parseFetchItems } = modules;
  const findings = [];
  const notes = [];
  const item = (spec) => parseFetchItems(spec).items[0];
  const render = (spec) => {
    try {
      return renderItem(output, structure, item(spec));
    } catch (e) {
      notes.push(`${spec}: ${e.code ?? ''} ${e.message}`);
      return null;
    }
  };
  const bsBuf = render('BODYSTRUCTURE');
  let parts = [];
  if (bsBuf) {
    try {
      const { value } = parseImapValue(bsBuf, bsBuf.indexOf('('));
      parts = bodystructureParts(value);
    } catch (e) {
      notes.push(`BODYSTRUCTURE parse: ${e.message}`);
    }
  }
  // every path of the BODYSTRUCTURE, plus every section of the part map (and its .1 for leaves)
  const paths = new Set(parts.filter((p) => p.path).map((p) => p.path));
  const mapLeaf = new Map();
  const mapWalk = (m) => {
    if (!m) return;
    // for paths BODYSTRUCTURE does not list: 'text' for a text leaf of the part map
    const isLeaf = !m.children?.length && !m.message;
    const kind = isLeaf ? (/^text\//i.test(m.contentType ?? '') ? 'text' : 'leaf') : 'container';
    if (m.section) {
      paths.add(m.section);
      if (!mapLeaf.has(m.section)) mapLeaf.set(m.section, kind);
    }
    if (isLeaf) {
      const s = m.section ? `${m.section}.1` : '1';
      paths.add(s);
      if (!mapLeaf.has(s)) mapLeaf.set(s, kind);
    }
    for (const c of m.children ?? []) mapWalk(c);
    if (m.message) mapWalk(m.message);
  };
  mapWalk(structure);
  if (paths.size > 400) notes.push(`too many paths (${paths.size}); first 400 rendered`);

  for (const p of parts) {
    for (const n of [...namesFromParams(p.params), ...namesFromParams(p.dispParams)]) {
      const how = dangerousName(n);
      if (how) findings.push({ reader: 'imap', kind: 'name', where: `BODYSTRUCTURE ${p.path || '(root)'}`, detail: `${JSON.stringify(n)} (${how})` });
    }
  }
  const byPath = new Map(parts.map((p) => [p.path, p]));
  for (const path of [...paths].slice(0, 400)) {
    const body = render(`BODY.PEEK[${path}]`);
    const data = body ? literalData(body) : null;
    // S.1 of a leaf S is the leaf itself (not listed in BODYSTRUCTURE)
    const bp = byPath.get(path) ?? (path.endsWith('.1') ? byPath.get(path.slice(0, -2)) : undefined);
    // uudecoding (as mail clients do for bodies) applies to text leaves, not to a container's raw text
    const leaf = bp ? !bp.multipart && !bp.message && bp.type === 'text' : mapLeaf.get(path) === 'text';
    if (data) {
      payloadFindings('imap', `BODY[${path}]`, data, findings);
      if (bp && !bp.multipart)
        for (const d of decodeByEncoding(bp.encoding, data)) {
          payloadFindings('imap', `BODY[${path}] decoded as ${bp.encoding}`, d, findings);
          if (leaf) uuFindings('imap', `BODY[${path}] decoded`, d, findings);
        }
      // the raw body is the text a client shows only when the declared encoding is an identity
      const identity = !bp || !/^\s*(base64|quoted-printable|x-uuencode|uuencode|x-uue|uue)\b/i.test(bp.encoding);
      if (leaf && identity) uuFindings('imap', `BODY[${path}]`, data, findings);
    }
    const bin = render(`BINARY.PEEK[${path}]`);
    const bdata = bin ? literalData(bin) : null;
    if (bdata) {
      payloadFindings('imap', `BINARY[${path}]`, bdata, findings);
      if (leaf) uuFindings('imap', `BINARY[${path}]`, bdata, findings);
    }
    const mime = render(`BODY.PEEK[${path}.MIME]`);
    const mdata = mime ? literalData(mime) : null;
    if (mdata) {
      // a client that reads the part header itself (e.g. to get a name BODYSTRUCTURE lacks):
      // parameters of every Content-Type / Content-Disposition field, unfolded
      for (const n of namesFromHeader(mdata)) {
        const how = dangerousName(n);
        if (how) findings.push({ reader: 'imap', kind: 'name', where: `BODY[${path}.MIME]`, detail: `${JSON.stringify(n)} (${how})` });
      }
    }
  }
  return { findings, notes, parts: parts.length };
}

// ------------------------------------------------------------------------------------- mailparser
export async function mailparserReader(output, simpleParser, depth = 0, where = '') {
  const findings = [];
  const notes = [];
  let m;
  try {
    m = await Promise.race([
      simpleParser(output, { skipHtmlToText: true, skipTextToHtml: true, skipImageLinks: true, skipTextLinks: true }),
      new Promise((_r, rej) => setTimeout(() => rej(new Error('mailparser timeout')), 10_000).unref()),
    ]);
  } catch (e) {
    notes.push(`mailparser: ${e.message}`);
    return { findings, notes };
  }
  const text = Buffer.from(`${m.text ?? ''}\n${typeof m.html === 'string' ? m.html : ''}`, 'utf8');
  payloadFindings('mailparser', `${where}text`, text, findings);
  uuFindings('mailparser', `${where}text`, Buffer.from(m.text ?? '', 'latin1'), findings);
  (m.attachments ?? []).forEach((a, i) => {
    const w = `${where}attachment ${i + 1}`;
    const how = dangerousName(a.filename);
    if (how) findings.push({ reader: 'mailparser', kind: 'name', where: w, detail: `${JSON.stringify(a.filename)} (${how})` });
    payloadFindings('mailparser', w, a.content, findings);
    if (/^text\//i.test(a.contentType ?? '')) uuFindings('mailparser', w, a.content, findings);
  });
  if (depth < 3) {
    for (const [i, a] of (m.attachments ?? []).entries()) {
      if (!/^message\/(rfc822|global)/i.test(a.contentType ?? '') || !a.content?.length) continue;
      const sub = await mailparserReader(a.content, simpleParser, depth + 1, `${where}attachment ${i + 1}/`);
      findings.push(...sub.findings);
      notes.push(...sub.notes);
    }
  }
  return { findings, notes };
}

// ------------------------------------------------------------------------------------- raw bytes
export function bytesReader(output) {
  // EICAR anywhere in what is delivered (a header included) is what a scanner at the client, or
  // postern's own raw-message scan, flags. Executable bytes are only judged decoded, by the readers.
  const findings = [];
  if (output.includes(EICAR)) findings.push({ reader: 'bytes', kind: 'eicar', where: 'output bytes', detail: 'EICAR in the delivered bytes' });
  return { findings, notes: [] };
}

// ------------------------------------------------------------------------------------- Python
export class PythonReader {
  constructor(python = 'python3') {
    this.proc = spawn(python, [join(here, '..', 'py_reader.py')], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.buf = Buffer.alloc(0);
    this.waiting = null;
    this.stderr = '';
    this.proc.stdout.on('data', (d) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.pump();
    });
    this.proc.stderr.on('data', (d) => {
      this.stderr = (this.stderr + d.toString()).slice(-4000);
    });
    this.proc.on('exit', (code) => {
      this.dead = `python reader exited (${code}): ${this.stderr}`;
      if (this.waiting) this.waiting.reject(new Error(this.dead));
      this.waiting = null;
    });
    this.queue = Promise.resolve();
  }
  pump() {
    if (!this.waiting || this.buf.length < 4) return;
    const n = this.buf.readUInt32BE(0);
    if (this.buf.length < 4 + n) return;
    const body = this.buf.subarray(4, 4 + n);
    this.buf = this.buf.subarray(4 + n);
    const w = this.waiting;
    this.waiting = null;
    clearTimeout(w.timer);
    w.resolve(JSON.parse(body.toString('utf8')));
  }
  request(msg) {
    const run = () =>
      new Promise((resolve, reject) => {
        if (this.dead) return reject(new Error(this.dead));
        const timer = setTimeout(() => {
          this.waiting = null;
          reject(new Error('python reader timeout'));
          this.proc.kill();
        }, 30_000);
        this.waiting = { resolve, reject, timer };
        const head = Buffer.alloc(4);
        head.writeUInt32BE(msg.length);
        this.proc.stdin.write(Buffer.concat([head, msg]));
      });
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => {});
    return p;
  }
  async read(output) {
    const findings = [];
    const notes = [];
    // a dead or stuck reader throws: a reader that silently sees nothing would hide escapes
    const res = await this.request(output);
    if (res.error) notes.push(`python: ${res.error}`);
    for (const v of res.views ?? []) {
      const reader = `python-${v.policy}`;
      if (v.error) notes.push(`${reader}: ${v.error}`);
      for (const p of v.parts) {
        if (p.error) notes.push(`${reader} part ${p.path}: ${p.error}`);
        for (const n of p.filenames) {
          const how = dangerousName(n);
          if (how) findings.push({ reader, kind: 'name', where: `part ${p.path} (${p.type})`, detail: `${JSON.stringify(n)} (${how})` });
        }
        if (p.mz)
          findings.push({
            reader,
            kind: mzKind(p.mz),
            where: `part ${p.path} (${p.type})`,
            detail: p.mz === 2 ? 'get_payload(decode=True) is the MZ executable' : 'MZ marker inside get_payload(decode=True)',
          });
        if (p.eicar) findings.push({ reader, kind: 'eicar', where: `part ${p.path} (${p.type})`, detail: 'EICAR in get_payload(decode=True)' });
        for (const u of p.uu) {
          const how = dangerousName(u.name);
          if (how)
            findings.push({
              reader: `${reader}+uu`,
              kind: uuKind('name', u.strict),
              where: `part ${p.path}`,
              detail: `uuencoded block named ${JSON.stringify(u.name)} (${how})`,
            });
          if (u.mz)
            findings.push({
              reader: `${reader}+uu`,
              kind: uuKind(mzKind(u.mz), u.strict),
              where: `part ${p.path}`,
              detail: 'MZ executable in a uuencoded block',
            });
          if (u.eicar) findings.push({ reader: `${reader}+uu`, kind: uuKind('eicar', u.strict), where: `part ${p.path}`, detail: 'EICAR in uuencoded block' });
        }
      }
    }
    return { findings, notes };
  }
  async close() {
    if (this.dead) return;
    const done = new Promise((r) => this.proc.once('exit', r));
    // the end marker (py_reader.py's END): a length of 0 is an empty message, judged like any other
    this.proc.stdin.end(Buffer.from([0xff, 0xff, 0xff, 0xff]));
    await Promise.race([done, new Promise((r) => setTimeout(r, 2000).unref())]);
    if (!this.dead) this.proc.kill();
  }
}
