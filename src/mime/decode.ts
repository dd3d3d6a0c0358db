/**
 * Transfer-encoding decoders. Tolerant (they always produce bytes, like mail clients do) but they
 * report damage so the policy's `on_bad_encoding` action can apply.
 */

export interface Decoded {
  data: Buffer;
  /** The encoded text had bytes a conforming encoder never produces. */
  bad: boolean;
}

export function normaliseCte(cte: string | undefined): string {
  return (cte ?? '').trim().toLowerCase();
}

/** Base64 alphabet + '=' + whitespace. */
function b64Class(c: number): number {
  // 1 = alphabet, 2 = '=', 3 = whitespace, 0 = invalid
  if ((c >= 65 && c <= 90) || (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 43 || c === 47) return 1;
  if (c === 61) return 2;
  if (c === 13 || c === 10 || c === 32 || c === 9) return 3;
  return 0;
}

export function decodeBase64(src: Buffer): Decoded {
  let bad = false;
  let afterPad = false;
  for (let i = 0; i < src.length; i++) {
    const k = b64Class(src[i]);
    if (k === 0) {
      bad = true;
      break;
    }
    if (k === 2) afterPad = true;
    else if (k === 1 && afterPad) {
      bad = true;
      break;
    }
  }
  return { data: Buffer.from(src.toString('latin1', 0, src.length), 'base64'), bad };
}

function hexVal(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 65 && c <= 70) return c - 55;
  if (c >= 97 && c <= 102) return c - 87;
  return -1;
}

export function decodeQuotedPrintable(src: Buffer): Decoded {
  const out = Buffer.allocUnsafe(src.length);
  let o = 0;
  let bad = false;
  const n = src.length;
  for (let i = 0; i < n; i++) {
    const c = src[i];
    if (c !== 61) {
      out[o++] = c;
      continue;
    }
    // soft line break: '=' [WSP]* CRLF|LF
    let j = i + 1;
    while (j < n && (src[j] === 32 || src[j] === 9)) j++;
    if (j < n && src[j] === 13 && src[j + 1] === 10) {
      i = j + 1;
      continue;
    }
    if (j < n && src[j] === 10) {
      i = j;
      continue;
    }
    if (j >= n) {
      i = n;
      continue;
    }
    const h = i + 2 < n ? hexVal(src[i + 1]) : -1;
    const l = i + 2 < n ? hexVal(src[i + 2]) : -1;
    if (h >= 0 && l >= 0) {
      out[o++] = (h << 4) | l;
      i += 2;
    } else {
      bad = true;
      out[o++] = c;
    }
  }
  return { data: out.subarray(0, o), bad };
}

/** Decodes a part body by its Content-Transfer-Encoding; unknown encodings are returned raw. */
export function decodeBody(src: Buffer, cte: string): Decoded {
  switch (cte) {
    case 'base64':
      return decodeBase64(src);
    case 'quoted-printable':
      return decodeQuotedPrintable(src);
    default:
      return { data: src, bad: false };
  }
}

/**
 * Decodes only enough of a body to see its first `want` bytes (type detection without decoding a
 * 25 MB attachment). Never reports damage; `decodeBody` does that.
 */
export function decodePrefix(src: Buffer, cte: string, want = 4096): Buffer {
  if (cte === 'base64') {
    // 4 chars -> 3 bytes, plus room for line breaks
    const take = Math.min(src.length, Math.ceil((want * 4) / 3) * 2 + 4);
    let s = src.toString('latin1', 0, take).replace(/[^A-Za-z0-9+/]/g, '');
    s = s.slice(0, s.length - (s.length % 4));
    return Buffer.from(s, 'base64').subarray(0, want);
  }
  if (cte === 'quoted-printable') {
    return decodeQuotedPrintable(src.subarray(0, Math.min(src.length, want * 3 + 64))).data.subarray(0, want);
  }
  return src.subarray(0, want);
}
