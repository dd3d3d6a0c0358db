/**
 * Types of the one MIME model (src/mime), shared with the policy engine and the renderer. mime/ imports
 * nothing from policy/: the policy reads the model, never the other way round.
 */

/** One MIME part of the sanitised message, with byte offsets into the message it was parsed from (for the policy: `InspectResult.output`). */
export interface PartMap {
  /** IMAP section number ('' for the top-level message, '1', '1.2', ...). */
  section: string;
  /** Offset of the first header byte (for the root: 0). */
  headerStart: number;
  /** Offset just past the blank line ending the header (= bodyStart). */
  bodyStart: number;
  /** Offset just past the body (before the CRLF that precedes the next boundary). */
  bodyEnd: number;
  contentType: string; // lower-case type/subtype
  params: Record<string, string>;
  children: PartMap[];
  /** For message/rfc822 parts: the encapsulated message's root map. */
  message?: PartMap;
}
