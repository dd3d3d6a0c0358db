/**
 * The private UID lookup an IMAP session sends before a FETCH whose set it cannot map to UIDs
 * (ImapInspector.prepare), or right after a SELECT/EXAMINE of a mailbox the verdict store knows, ahead
 * of the client's next command (ImapInspector.lookupAhead): `UID SEARCH RETURN (ALL) <range>` when the upstream has ESEARCH (RFC 4731),
 * else `UID SEARCH <range>`, and the strict reading of its answer. Sequence numbers are assigned in
 * ascending UID order (RFC 9051 2.3.1.2), so the i-th UID of the answer is message lo + i.
 *
 * PURE. Fail closed: an answer that is not exactly one response of exactly the expected shape, with
 * exactly the expected number of strictly ascending nz-number UIDs (and, for ESEARCH, the private
 * tag as its correlator), is not understood; the caller then leaves its map as it was (the FETCH
 * downloads and vets).
 */

/** The largest UID (RFC 9051 grammar: nz-number is a 32-bit unsigned integer), not a limit. */
const LARGEST_NZ_NUMBER = 4294967295;
const NZ_NUMBER = /^[1-9][0-9]{0,9}$/;

export interface LookupRange {
  /** First sequence number asked for. */
  lo: number;
  /** Last sequence number asked for. */
  hi: number;
  /** The range is the whole mailbox: asked as `ALL`. */
  all: boolean;
}

/** The command (without its tag) that asks the UIDs of messages lo..hi. */
export function lookupCommand(range: LookupRange, esearch: boolean): string {
  const key = range.all ? 'ALL' : range.lo === range.hi ? `${range.lo}` : `${range.lo}:${range.hi}`;
  return esearch ? `UID SEARCH RETURN (ALL) ${key}` : `UID SEARCH ${key}`;
}

function nzNumber(s: string): number | null {
  if (!NZ_NUMBER.test(s)) return null;
  const n = Number(s);
  return n <= LARGEST_NZ_NUMBER ? n : null;
}

/**
 * The UIDs of the answer in order, or the reason it is not understood. `untagged`: the SEARCH/ESEARCH
 * responses that arrived for the lookup (each as its parts); `tag`: the lookup's private tag;
 * `expected`: how many UIDs the answer must hold; `above`: every UID must be greater than this (the
 * last UID of the previous range, or 0).
 */
export function parseLookupAnswer(untagged: Buffer[][], o: { esearch: boolean; tag: string; expected: number; above: number }): number[] | string {
  if (untagged.length !== 1) return `${untagged.length} answers`;
  const parts = untagged[0]!;
  if (parts.length !== 1) return 'an answer with a literal';
  const raw = parts[0]!;
  // the framer ends a line at LF; the answer must end with exactly one CRLF and hold no other control byte
  if (raw.length < 2 || raw[raw.length - 2] !== 0x0d || raw[raw.length - 1] !== 0x0a) return 'not a CRLF line';
  const line = raw.toString('latin1', 0, raw.length - 2);
  if (/[^\x20-\x7e]/.test(line)) return 'a control or 8-bit byte';
  const uids: number[] = [];
  let last = o.above;
  const add = (u: number): string | null => {
    if (u <= last) return 'UIDs not strictly ascending';
    if (uids.length >= o.expected) return 'more UIDs than messages';
    uids.push(u);
    last = u;
    return null;
  };
  if (o.esearch) {
    const prefix = `* ESEARCH (TAG "${o.tag}") UID ALL `;
    if (!line.startsWith(prefix)) return line.startsWith('* ESEARCH ') ? 'an ESEARCH answer of another shape or tag' : 'not an ESEARCH answer';
    for (const range of line.slice(prefix.length).split(',')) {
      const ends = range.split(':');
      if (ends.length > 2) return 'a malformed sequence set';
      const a = nzNumber(ends[0]!);
      const b = ends.length === 2 ? nzNumber(ends[1]!) : a;
      if (a === null || b === null) return 'a malformed sequence set';
      if (ends.length === 2 && b <= a) return 'a range not in ascending order';
      // bounded by `expected` (add refuses more), never by what the server claims
      for (let u = a; u <= b; u++) {
        const why = add(u);
        if (why) return why;
      }
    }
  } else {
    const prefix = '* SEARCH ';
    if (!line.startsWith(prefix)) return line === '* SEARCH' ? 'no UIDs' : 'not a SEARCH answer';
    for (const tok of line.slice(prefix.length).split(' ')) {
      const u = nzNumber(tok);
      if (u === null) return 'a malformed UID';
      const why = add(u);
      if (why) return why;
    }
  }
  if (uids.length !== o.expected) return `${uids.length} UIDs for ${o.expected} messages`;
  return uids;
}
