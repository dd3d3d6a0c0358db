import type { Session } from '../../src/session/types.js';

/** How a test hands a text to a session as the upstream's reads: whole, one byte at a time, or cut at the offsets given. */
export type Feed = 'whole' | 'bytes' | number[];

/** Sends `text` to the session as the upstream's reads: whole, one byte at a time, or cut at the offsets given. */
export function feed(upstream: (s: string) => void, text: string, how: Feed): void {
  if (how === 'whole') upstream(text);
  else if (how === 'bytes') for (const ch of text) upstream(ch);
  else {
    let at = 0;
    for (const cut of [...how, text.length]) {
      if (cut > at) upstream(text.slice(at, cut));
      at = Math.max(at, cut);
    }
  }
}

/**
 * The upstream's reads (latin1 text) to `session`: `after` is told, for each, whether the session
 * called it free (onUpstreamData answered true: it keeps nothing of it), e.g. to overwrite it at once
 * as a host that reads into the same memory again would.
 */
export function upstreamReads(session: Session, after: (read: Buffer, free: boolean) => void): (text: string) => void {
  return (text) => {
    const read = Buffer.from(text, 'latin1');
    after(read, session.onUpstreamData(read) === true);
  };
}
