/**
 * Header values as the IMAP strings of ENVELOPE and BODYSTRUCTURE/BODY. Dovecot reads a header value
 * with each NUL replaced by U+FFFD (message_header_strdup, the rfc822 parser's NUL replacement), so
 * the string is 8-bit and becomes a literal; the writing itself is src/protocol/imap/write.ts.
 */
import { nstring, nstringNoLf, stringForHumans } from '../../protocol/imap/write.js';

/** NUL -> U+FFFD in UTF-8 (EF BF BD), as Dovecot reads header values. */
function headerText(s: string): string {
  return s.includes('\0') ? s.replace(/\0/g, '\xef\xbf\xbd') : s;
}

/** nstring of a header value (NIL for null/undefined). */
export function hstring(s: string | null | undefined): string {
  return nstring(s === null || s === undefined ? s : headerText(s));
}

/** nstring of a header value with its line breaks removed (Content-ID, -Description, -Location, -MD5). */
export function hstringNoLf(s: string | null | undefined): string {
  return nstringNoLf(s === null || s === undefined ? s : headerText(s));
}

/** A subject or address name as Dovecot writes it for humans. */
export function hstringForHumans(s: string): string {
  return stringForHumans(headerText(s));
}
