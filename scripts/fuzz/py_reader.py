#!/usr/bin/env python3
"""Reader 3 of the MIME fuzzer (scripts/fuzz/mime.mjs): Python's `email` package.

One long-lived process. Protocol on stdin/stdout, both directions length-prefixed:
  request:  4-byte big-endian length N, then N bytes of a message
  response: 4-byte big-endian length M, then M bytes of UTF-8 JSON
The JSON is {"views": [view, ...]} with one view per email policy (default, compat32); a view is
{"policy": name, "error": str|None, "parts": [part, ...]} and a part is
{"path": str, "type": str, "filenames": [str], "mz": 0|1|2, "eicar": bool, "size": int,
 "uu": [{"name": str, "mz": 0|1|2, "eicar": bool, "strict": bool}], "error": str|None}.
mz: 0 no MZ marker, 1 the marker somewhere inside, 2 the payload is the executable (starts with it).
A request of length 0xFFFFFFFF ends the process (a message of 0 bytes is a request like any other).

What a part's payload is: get_payload(decode=True) of every non-multipart part (Python decodes
base64, quoted-printable and x-uuencode there). message/rfc822 parts sent base64 or
quoted-printable are decoded and parsed again (as clients that show forwarded messages do).
Text bodies are also searched for uuencoded blocks ("begin 644 name" ... "end"), which Outlook and
Python's uu-style decoders turn into attachments. File names: get_filename(), the Content-Type
name parameter, both with RFC 2231 collapsed as Python does; the caller normalises them.
"""
import binascii
import email
import json
import re
import struct
import sys
from email import policy as email_policy
from email.utils import collapse_rfc2231_value

EICAR = b'X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*'
MZ = b'POSTERN-MZ-PROBE'
MAX_DEPTH = 6


# lenient like the mail clients that decode inline uuencode: mode and name are optional
BEGIN = re.compile(rb'^\s*begin(-base64)?(?:\s+([0-7]{1,4}))?(?:\s+(.*?))?\s*$')
EXE_HEAD = b'MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00\xb8\x00\x00\x00' + MZ


def mz_level(payload):
    """0: no executable; 1: the executable's bytes inside the payload; 2: the payload is the executable.
    The marker alone is ASCII and survives quoted-printable text: only the binary header counts."""
    at = payload.find(EXE_HEAD)
    if at < 0:
        return 0
    return 2 if at == 0 else 1


def uu_blocks(data):
    """Decodes uuencoded blocks leniently (like the uu module: bad lines are cut to their length byte)."""
    out = []
    lines = re.split(rb'\r\n|\r|\n', data)
    i = 0
    while i < len(lines) and len(out) < 20:
        m = BEGIN.match(lines[i])
        if not m:
            i += 1
            continue
        is_b64 = m.group(1) is not None
        at_line_start = lines[i][:5] == b'begin'
        name = (m.group(3) or b'').decode('latin-1', 'replace')
        i += 1
        chunks = []
        b64 = []
        while i < len(lines):
            line = lines[i].strip()
            i += 1
            if line in (b'end', b'===='):
                break
            if is_b64:
                b64.append(line)
                continue
            if not line:
                continue
            try:
                chunks.append(binascii.a2b_uu(line))
            except binascii.Error:
                try:
                    nbytes = (((line[0] - 32) & 63) * 4 + 5) // 3
                    chunks.append(binascii.a2b_uu(line[:nbytes]))
                except Exception:
                    pass
        if is_b64:
            try:
                payload = binascii.a2b_base64(b''.join(b64))
            except Exception:
                payload = b''
        else:
            payload = b''.join(chunks)
        # strict = what Python's uu module and GNU uudecode accept: "begin <octal mode> <name>" at the line start
        strict = m.group(2) is not None and bool(m.group(3)) and at_line_start
        out.append({'name': name, 'mz': mz_level(payload), 'eicar': EICAR in payload, 'strict': strict})
    return out


def text_of(data):
    return data if isinstance(data, bytes) else str(data).encode('utf-8', 'surrogateescape')


def read_view(raw, pol, name, depth=0, prefix=''):
    parts = []
    try:
        msg = email.message_from_bytes(raw, policy=pol)
    except Exception as e:  # noqa: BLE001 - any failure is reported, never fatal
        return parts, f'{type(e).__name__}: {e}'
    walk_msg(msg, pol, parts, depth, prefix)
    return parts, None


def walk_msg(msg, pol, parts, depth, prefix):
    try:
        walked = list(msg.walk())
    except Exception as e:  # noqa: BLE001
        parts.append({'path': prefix + '?', 'type': '?', 'filenames': [], 'mz': 0, 'eicar': False, 'size': -1, 'uu': [], 'error': f'walk: {e}'})
        return
    for n, part in enumerate(walked):
        rec = {'path': f'{prefix}{n}', 'type': '?', 'filenames': [], 'mz': 0, 'eicar': False, 'size': -1, 'uu': [], 'error': None}
        parts.append(rec)
        try:
            rec['type'] = part.get_content_type()
        except Exception as e:  # noqa: BLE001
            rec['error'] = f'type: {e}'
        for getter in (lambda: part.get_filename(), lambda: part.get_param('name'), lambda: part.get_param('filename', header='content-disposition')):
            try:
                v = getter()
                if v is None:
                    continue
                if isinstance(v, tuple):
                    v = collapse_rfc2231_value(v)
                v = str(v)
                if v not in rec['filenames']:
                    rec['filenames'].append(v)
            except Exception as e:  # noqa: BLE001
                rec['error'] = f'name: {e}'
        try:
            if part.is_multipart():
                # message/rfc822 sent base64 / quoted-printable: decode and read it as a message
                if rec['type'].startswith('message/') and depth < MAX_DEPTH:
                    cte = str(part.get('content-transfer-encoding', '')).strip().lower()
                    if cte in ('base64', 'quoted-printable'):
                        sub = part.get_payload()
                        inner = sub[0] if isinstance(sub, list) and sub else None
                        # the encoded text was parsed as a message: serialise it back (headers
                        # included, a line of the encoding can look like a header field)
                        try:
                            b = inner.as_bytes(policy=email_policy.compat32) if inner is not None else None
                        except Exception:  # noqa: BLE001
                            body = inner.get_payload() if inner is not None and not inner.is_multipart() else None
                            b = body.encode('latin-1', 'replace') if isinstance(body, str) else None
                        if b is not None:
                            import base64
                            import quopri
                            dec = base64.b64decode(re.sub(rb'[^A-Za-z0-9+/=]', b'', b) + b'===', validate=False) if cte == 'base64' else quopri.decodestring(b)
                            rec['mz'] = mz_level(dec)
                            rec['eicar'] = EICAR in dec
                            ps, err = read_view(dec, part.policy, '', depth + 1, f'{rec["path"]}/')
                            parts.extend(ps)
                continue
            payload = part.get_payload(decode=True)
            if payload is None:
                payload = text_of(part.get_payload())
            rec['size'] = len(payload)
            rec['mz'] = mz_level(payload)
            rec['eicar'] = EICAR in payload
            # mail clients uudecode blocks in text bodies (not inside other attachments)
            if b'begin' in payload and rec['type'].startswith('text/'):
                rec['uu'] = uu_blocks(payload)
        except NameError:
            raise  # a bug in this reader, not hostile input: must not look like "nothing seen"
        except Exception as e:  # noqa: BLE001
            rec['error'] = f'payload: {type(e).__name__}: {e}'


def judge(raw):
    views = []
    for name, pol in (('default', email_policy.default), ('compat32', email_policy.compat32)):
        parts, err = read_view(raw, pol, name)
        views.append({'policy': name, 'error': err, 'parts': parts})
    return {'views': views}


# the length that ends the process (no message is 4 GiB - 1 bytes long; an empty one is a message)
END = 0xFFFFFFFF


def read_exact(stream, n):
    buf = b''
    while len(buf) < n:
        chunk = stream.read(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def main():
    sys.setrecursionlimit(5000)
    inp = sys.stdin.buffer
    out = sys.stdout.buffer
    while True:
        head = read_exact(inp, 4)
        if head is None:
            return
        (n,) = struct.unpack('>I', head)
        if n == END:
            return
        raw = read_exact(inp, n)
        if raw is None:
            return
        try:
            res = judge(raw)
        except Exception as e:  # noqa: BLE001
            res = {'views': [], 'error': f'{type(e).__name__}: {e}'}
        data = json.dumps(res, ensure_ascii=True).encode('utf-8')
        out.write(struct.pack('>I', len(data)) + data)
        out.flush()


if __name__ == '__main__':
    main()
