/**
 * SASL decoding shared by the IMAP and POP3 sessions (one set of rules for both protocols).
 * Pure: text in, bytes or a refusal out.
 */

/**
 * Decodes a SASL response line: strict, canonical base64 (RFC 4648, padded, no white space), or `=` for
 * an empty response (RFC 4954/9051). Null when it is anything else: a lenient decoder would read bytes a
 * strict upstream never sees.
 */
export function decodeSaslBase64(text: string): Buffer | null {
  if (text === '=') return Buffer.alloc(0);
  if (text.length === 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(text)) return null;
  const decoded = Buffer.from(text, 'base64');
  return decoded.toString('base64') === text ? decoded : null;
}

export type SaslPlain = { ok: true; authcid: Buffer; password: Buffer } | { ok: false; reason: 'malformed' | 'authzid' };

/**
 * Reads a decoded SASL PLAIN message (RFC 4616): [authzid] NUL authcid NUL passwd. An authorization
 * identity other than the authentication identity is refused: acting as another user would bypass
 * login routing.
 */
export function parseSaslPlain(decoded: Buffer): SaslPlain {
  const fields: Buffer[] = [];
  let start = 0;
  for (let i = 0; i <= decoded.length; i++) {
    if (i === decoded.length || decoded[i] === 0) {
      fields.push(decoded.subarray(start, i));
      start = i + 1;
    }
  }
  if (fields.length !== 3 || fields[1]!.length === 0) return { ok: false, reason: 'malformed' };
  const [authzid, authcid, password] = fields as [Buffer, Buffer, Buffer];
  if (authzid.length > 0 && !authzid.equals(authcid)) return { ok: false, reason: 'authzid' };
  // copies: the caller may wipe `decoded`
  return { ok: true, authcid: Buffer.from(authcid), password: Buffer.from(password) };
}
