/**
 * The reason a client TLS handshake failed, as an operator reads it: OpenSSL's reason string
 * (`tlsv1 alert unknown ca` = the client does not trust postern's CA, `sslv3 alert bad certificate`,
 * `sslv3 alert certificate unknown`, `wrong version number` = plaintext on a TLS port, `no shared
 * cipher`, ...), else the error message, else its code.
 */
export function tlsFailureReason(err: unknown): string {
  const e = err as { reason?: unknown; message?: unknown; code?: unknown } | null;
  if (typeof e?.reason === 'string' && e.reason) return e.reason;
  if (typeof e?.message === 'string' && e.message) {
    // `error:0A000418:SSL routines::tlsv1 alert unknown ca` -> `tlsv1 alert unknown ca`
    const m = /^error:[0-9A-Fa-f]+:[^:]*:[^:]*:(.+)$/.exec(e.message);
    return m ? m[1]! : e.message;
  }
  return typeof e?.code === 'string' ? e.code : 'unknown';
}

/** Whether the reason is an alert that says the client rejected postern's certificate. */
export function certificateRejected(reason: string): boolean {
  return /alert (unknown ca|bad certificate|certificate unknown|unsupported certificate|certificate expired|certificate revoked|decrypt error)/i.test(reason);
}

/**
 * What the operator should make of a client handshake failure ('' when nothing useful): a rejection
 * alert is certain; a client that hangs up mid-handshake (after postern sent its certificate) is
 * what clients that check the certificate in their own code do (Node, some Java and mobile apps).
 */
export function tlsFailureHint(reason: string): string {
  if (certificateRejected(reason)) return ' (the client does not trust the certificate: import the CA, postern ca export)';
  if (/^(socket hang up|ECONNRESET)$/i.test(reason)) return ' (the client hung up during the handshake: often a client that does not trust the certificate)';
  return '';
}
