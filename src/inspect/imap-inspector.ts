/**
 * Inline inspection for IMAP: an ImapInterceptor that makes every FETCH safe.
 *
 * When a client asks for any content of a message (BODY[...], BINARY[...], RFC822*, with
 * `vet_on_metadata` RFC822.SIZE, BODY, BODYSTRUCTURE, BINARY.SIZE, and with `vet_on_envelope`
 * (auto: on when the policy tags spam) ENVELOPE and top-level header fetches), postern rewrites the FETCH:
 * content items are replaced by `UID BODY.PEEK[]` (or `BODY[]` when the client's request would set
 * \Seen, so the server sets it exactly as a direct fetch would), every other item is passed on.
 * Each returned message is vetted once per session (policy, antivirus, spam), cached by mailbox,
 * UIDVALIDITY and UID, and the client's items are rendered from the sanitised bytes in the order
 * Dovecot uses. Otherwise header-only fetches are not widened: the header bytes the server returns
 * get the policy's header rules (literal sizes recomputed). The ENVELOPE of a message the policy
 * changed is rendered from the changed message, so it agrees with its header and body (a tagged
 * subject). A message that cannot be vetted (scanner down, on_error: tempfail) is withheld and the
 * FETCH completes with `NO [UNAVAILABLE]`.
 */
import type { Logger } from 'pino';
import type { ListenerConfig } from '../config/types.js';
import { ErrorCodes, isPosternError, PosternError } from '../errors.js';
import { MAX_CACHED_SET, MAX_VETS_IN_FLIGHT, UID_LOOKUP_LIMITS, VERDICT_STORE_LIMITS } from '../limits.js';
import { logErr } from '../log/logger.js';
import { crlfFormOf, hasBareLf } from '../mime/eol.js';
import { mimeNodeOf, parseHeaderBlock } from '../mime/partmap.js';
import { applyHeaderRules, type CompiledPolicy, inspectMessage } from '../policy/engine.js';
import type { EngineDeps, PartMap, Verdict } from '../policy/types.js';
import { mailboxOf, type ParsedCommand } from '../protocol/imap/command.js';
import { classifyItem, type FetchItem, type FetchItemList, formatItemName, parseFetchItems, setsSeen } from '../protocol/imap/fetch-items.js';
import {
  buildFetchResponse,
  buildFetchResponseParts,
  type FetchResponse,
  type FetchResponseItem,
  parseFetchResponse,
} from '../protocol/imap/fetch-response.js';
import { assembledDigest } from '../protocol/imap/framer.js';
import type { CommandHead, ResponseHead } from '../protocol/imap/parse.js';
import { checkRelayedFetchItem, METADATA_FETCH_ITEMS } from '../protocol/imap/response-screen.js';
import { literalBytes, uidSet } from '../protocol/imap/write.js';
import type { ImapInterceptor, ImapSessionView, InterceptedCommand } from '../session/imap/index.js';
import type { PreparedLookup, RunLimits } from '../session/imap/relay.js';
import type { MemoryLease } from '../session/types.js';
import { isAltered, logServed, storedAlteredContent, verdictOfStored } from './altered-store.js';
import { type Vetted, VettedCache } from './cache.js';
import { type ContentVerdicts, contentVerdictsFor } from './content-verdict.js';
import { partMapOf, renderItem, renderItemParts } from './render/index.js';
import type { SignatureSource } from './signatures.js';
import { type RenderingMemo, StoredRenderings } from './stored-renderings.js';
import { type LookupRange, lookupCommand, parseLookupAnswer } from './uid-lookup.js';
import { type IndexRow, mailboxNameId, type StoredVerdict, scopeId, sha256, type VerdictBasis, type VerdictStore } from './verdict-store.js';
import { processVetGate } from './vet-gate.js';

/**
 * Items Dovecot writes before everything else ("buffered" handlers), in request order; the rest —
 * BODY, BODYSTRUCTURE, ENVELOPE and every section — follow in request order (checked against real
 * Dovecot in test/integration/render-oracle.test.ts).
 */
const UNBUFFERED = new Set(['BODY', 'BODYSTRUCTURE', 'ENVELOPE']);
/** Items a server puts in a FETCH response on its own (a flag change, its UID, RFC 7162's MODSEQ): relayed without the message. */
const SELF_ITEMS = new Set(['UID', 'FLAGS', 'MODSEQ']);
/** What every item name screenFetch refuses contains (RFC822.SIZE, BINARY.SIZE[..], BODY, BODYSTRUCTURE, ENVELOPE), in any case. */
const VETTED_NAME = /SIZE|BODY|ENVELOPE/i;
const BUFFERED = new Set([...METADATA_FETCH_ITEMS].filter((n) => !UNBUFFERED.has(n)));

/**
 * FETCH items passed upstream untouched: the metadata items the choke point relays (one list, in
 * protocol/imap/response-screen.ts). Anything else could return content the policy never saw, so a
 * FETCH naming it is refused.
 */
const SAFE_METADATA = new Set([...METADATA_FETCH_ITEMS, 'BINARY.SIZE']);

function isBuffered(item: FetchItem): boolean {
  if (item.section) return false;
  return BUFFERED.has(item.name);
}

/** What every response of a FETCH asks of each of its items: computed once per item, not once per message. */
interface ItemInfo {
  cls: ReturnType<typeof classifyItem>;
  /** formatItemName(): the name the item is written with. */
  name: string;
  /** The name upper-cased: the server's response item name for it. */
  upper: string;
}
const itemInfos = new WeakMap<FetchItem, ItemInfo>();
function itemInfo(item: FetchItem): ItemInfo {
  let info = itemInfos.get(item);
  if (!info) {
    const name = formatItemName(item);
    info = { cls: classifyItem(item), name, upper: name.toUpperCase() };
    itemInfos.set(item, info);
  }
  return info;
}

export interface ImapInspectorDeps {
  listener: ListenerConfig;
  policy: CompiledPolicy;
  engine: EngineDeps;
  log: Logger;
  /** The verdict cache shared across sessions and processes (inspect.verdict_cache); absent/null: off. */
  shared?: SharedVerdicts | null;
  /** Leases the session cache's in-memory bytes from the process memory budget (SessionHost.reserveMemory); absent: not leased. */
  reserve?: (bytes: number, what: string) => MemoryLease | null;
}

/** The shared verdict store with what keys it for one policy (src/inspect/verdict-store.ts). */
export interface SharedVerdicts {
  store: VerdictStore;
  /** policyHash() of the listener's compiled policy. */
  policyHash: string;
  /** The scanners' signature version; null (unknown): the store is neither read nor written. */
  signatures: SignatureSource;
}

/** The items a stored verdict renders for a list sync (from the sanitised message, at vet time). */
const STORED_ITEMS = parseFetchItems('(RFC822.SIZE BODY BODYSTRUCTURE ENVELOPE)').items;
type StoredItemName = 'RFC822.SIZE' | 'BODY' | 'BODYSTRUCTURE' | 'ENVELOPE';

/** A simple counting semaphore: at most `max` holders, the rest wait in order. */
class Slots {
  private used = 0;
  private readonly waiting: (() => void)[] = [];
  constructor(private readonly max: number) {}
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.used >= this.max) await new Promise<void>((r) => this.waiting.push(r));
    else this.used++;
    try {
      return await fn();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.used--;
    }
  }
}

/** Marks a server item found more than once in one response (relayCleanResponse). */
const NOT_ONCE = { name: '', raw: Buffer.alloc(0), rawParts: [] } as FetchResponseItem;

/** The numbers of a poll line (parsePollLine, pollLineAt). */
export interface PollLine {
  seq: number;
  uid: number;
  size: number;
}

/**
 * A poll's answer for one message as Dovecot writes it (pollLine): exactly
 * `^\* ([1-9]\d{0,9}) FETCH \(UID ([1-9]\d{0,9}) RFC822\.SIZE (0|[1-9]\d{0,14})\)\r\n$` (canonical numbers),
 * read from the bytes without a string: its numbers, or null. test/inspect/poll-line.test.ts holds
 * it to that expression.
 */
export function parsePollLine(d: Buffer): PollLine | null {
  const m: PollLine = { seq: 0, uid: 0, size: 0 };
  return pollLineAt(d, 0, m) === d.length ? m : null;
}

/**
 * parsePollLine on the line that starts at `start` of a stream's bytes (the poll's batch path,
 * ImapInspector.pollRun): the index after its CRLF when the bytes there are such a line, its numbers
 * in `into`; else -1. Such a line holds no LF before its CRLF, so the line it reads is the one that
 * ends at the first LF after `start` (the framer's line), and -1 whenever that line is not one.
 */
export function pollLineAt(d: Buffer, start: number, into: PollLine): number {
  // no closures: this runs once per message of every poll
  let i = pollField(d, start, POLL_STAR, 10, false);
  if (i < 0) return -1;
  into.seq = pollFieldValue;
  i = pollField(d, i, POLL_UID, 10, false);
  if (i < 0) return -1;
  into.uid = pollFieldValue;
  i = pollField(d, i, POLL_SIZE, 15, true);
  if (i < 0) return -1;
  into.size = pollFieldValue;
  return matchAt(d, i, POLL_END);
}

const POLL_STAR = Buffer.from('* ', 'latin1');
const POLL_UID = Buffer.from(' FETCH (UID ', 'latin1');
const POLL_SIZE = Buffer.from(' RFC822.SIZE ', 'latin1');
const POLL_END = Buffer.from(')\r\n', 'latin1');

/** pollAnswer: the server's line is the answer. */
const SAME_LINE = Symbol('same line');

/** The number pollField read last (a scratch slot instead of an object per field). */
let pollFieldValue = 0;

/**
 * `lit` then a canonical number of at most `max` digits (no leading zero; `zero`: a lone 0 allowed)
 * at `i`: the index after them, the number in pollFieldValue; or -1.
 */
function pollField(d: Buffer, i: number, lit: Buffer, max: number, zero: boolean): number {
  const from = matchAt(d, i, lit);
  if (from < 0) return -1;
  const n = d.length;
  let end = from;
  let v = 0;
  while (end < n && end - from < max && d[end]! >= 0x30 && d[end]! <= 0x39) v = v * 10 + (d[end++]! - 0x30);
  const len = end - from;
  if (len === 0 || (d[from] === 0x30 && !(zero && len === 1))) return -1;
  pollFieldValue = v;
  return end;
}

/** Whether `xs` strictly ascends. */
function ascending(xs: readonly number[]): boolean {
  for (let i = 1; i < xs.length; i++) if (xs[i]! <= xs[i - 1]!) return false;
  return true;
}

/** The index after `lit` when `d` holds it at `i`, else -1. */
function matchAt(d: Buffer, i: number, lit: Buffer): number {
  if (i + lit.length > d.length) return -1;
  for (let k = 0; k < lit.length; k++) if (d[i + k] !== lit[k]) return -1;
  return i + lit.length;
}

/**
 * parseFetchItems of the item lists clients send again and again (every reconnecting client's poll and
 * list sync asks with the same text), kept per process: a new session's FETCH parsed its items anew
 * on the path of the command to the server (about 75 us on a machine whose caches the client and
 * the server had just used). Each list is frozen whole (its readers never modify one; a reader that
 * tried would throw), so every session may hold the same objects. At most
 * VERDICT_STORE_LIMITS.fetchItemListsKept texts of at most fetchItemListChars characters; past it the
 * memo starts over. A parse error is not remembered (it throws, every time).
 */
const fetchItemLists = new Map<string, FetchItemList>();

export function sharedFetchItems(text: string): FetchItemList {
  const kept = fetchItemLists.get(text);
  if (kept !== undefined) return kept;
  const parsed = deepFreeze(parseFetchItems(text));
  if (text.length <= VERDICT_STORE_LIMITS.fetchItemListChars) {
    if (fetchItemLists.size >= VERDICT_STORE_LIMITS.fetchItemListsKept) fetchItemLists.clear();
    fetchItemLists.set(text, parsed);
  }
  return parsed;
}

/** Freezes `v` and every object and array inside it. */
function deepFreeze<T>(v: T): T {
  if (v !== null && typeof v === 'object' && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const x of Object.values(v)) deepFreeze(x);
  }
  return v;
}

/** A list sync's header section name that listHeadAt can read: one the head's grammar allows there, in latin1. */
const LIST_NAME = /^BODY\[HEADER\.FIELDS \([^()\r\n]*\)\]$/;

/** What listHeadAt read of a list sync's head. */
export interface ListHead {
  seq: number;
  uid: number;
  size: number;
  /** The literal's announced length. */
  count: number;
  /** Where `UID uid FLAGS (flags)` begins in the head (it ends after the `)` at flagsTo). */
  itemsFrom: number;
  /** Where the flags inside FLAGS ( ) begin and end. */
  flagsFrom: number;
  flagsTo: number;
}

/**
 * The head of a list sync's answer for one message as Dovecot writes it (listAnswer), up to its
 * header literal's announcement: whether `d` is exactly `* seq FETCH (UID uid FLAGS (flags)
 * RFC822.SIZE size NAME {count}` CRLF, where the numbers are canonical (no leading zero; seq, uid and
 * count at most 10 digits and not 0, size at most 15), the flags hold no ( ) CR LF, and NAME is `name`
 * (a name LIST_NAME accepts, in latin1); what it read goes to `into`. The same reading as the regular
 * expression `^\* ([1-9]\d{0,9}) FETCH \(UID ([1-9]\d{0,9}) FLAGS \(([^()\r\n]*)\) RFC822\.SIZE
 * (0|[1-9]\d{0,14}) (NAME) \{([1-9]\d{0,9})\}\r\n$` on the latin1 text, without making the text
 * (test/inspect/list-head.test.ts holds it to that expression).
 */
export function listHeadAt(d: Buffer, name: Buffer, into: ListHead): boolean {
  // no closures, no strings: this runs once per message of every list sync
  let i = pollField(d, 0, POLL_STAR, 10, false);
  if (i < 0) return false;
  into.seq = pollFieldValue;
  into.itemsFrom = i + 8; // after ' FETCH ('
  i = pollField(d, i, POLL_UID, 10, false);
  if (i < 0) return false;
  into.uid = pollFieldValue;
  i = matchAt(d, i, LIST_FLAGS);
  if (i < 0) return false;
  into.flagsFrom = i;
  const n = d.length;
  for (; i < n; i++) {
    const c = d[i]!;
    if (c === 0x29) break;
    if (c === 0x28 || c === 0x0d || c === 0x0a) return false;
  }
  into.flagsTo = i;
  i = pollField(d, i, LIST_SIZE, 15, true);
  if (i < 0) return false;
  into.size = pollFieldValue;
  i = matchAt(d, i, LIST_SP);
  if (i < 0) return false;
  i = matchAt(d, i, name);
  if (i < 0) return false;
  i = pollField(d, i, LIST_COUNT, 10, false);
  if (i < 0) return false;
  into.count = pollFieldValue;
  return matchAt(d, i, LIST_END) === n;
}

const LIST_FLAGS = Buffer.from(' FLAGS (', 'latin1');
const LIST_SIZE = Buffer.from(') RFC822.SIZE ', 'latin1');
const LIST_SP = Buffer.from(' ', 'latin1');
const LIST_COUNT = Buffer.from(' {', 'latin1');
const LIST_END = Buffer.from('}\r\n', 'latin1');

/** A list sync (CommandState.list): the header section's name as postern writes it, and the rendering keys of its RFC822.SIZE and header items. */
interface ListSync {
  name: Buffer;
  sizeKey: string;
  headerKey: string;
}

/** A header section no message has: fetching it non-PEEK sets \Seen at the cost of a few bytes. */
const SEEN_MARKER = 'BODY[HEADER.FIELDS (X-POSTERN-SEEN)]';

/** What a session reads of the store's index of a mailbox (see ImapInspector.storeIndex). */
interface IndexMaps {
  ids: Map<number, boolean>;
  clean: Set<number>;
  /** The size of each message stored clean whose vetted form is the server's byte for byte (sizeIn = sizeOut): what the server must report for it. */
  cleanSize: Map<number, number>;
  /** The sanitised size of each message stored with metadata that is not in cleanSize (altered, or clean with another size): a poll's RFC822.SIZE for it (pollLine). */
  storedSize: Map<number, number>;
}

/**
 * The maps built from one answer of VerdictStore.index(), by that answer's identity: the store gives
 * the same (read-only) array to every session while nothing changed the mailbox's verdicts, so a
 * reconnecting client's session finds them built (issue 10: the four maps of a 500-message mailbox
 * took about 0.3 ms, on the path of its first FETCH). Shared by the sessions of that one scope (user,
 * upstream, mailbox, UIDVALIDITY) and basis only, and never changed: a session that corrects its index
 * copies them first (ImapInspector.ownIndex). Gone with the store's memo of the answer.
 */
const sharedIndexMaps = new WeakMap<readonly IndexRow[], IndexView>();

/** IndexMaps as shared: read-only. */
interface IndexView {
  readonly ids: ReadonlyMap<number, boolean>;
  readonly clean: ReadonlySet<number>;
  readonly cleanSize: ReadonlyMap<number, number>;
  readonly storedSize: ReadonlyMap<number, number>;
}

/**
 * How one stored verdict (with metadata: `full`) reads in a session's index: whether it is clean, the
 * size the server must report for it (cleanSize: clean and unchanged) or else its stored sanitised size.
 */
function indexEntry(
  full: boolean,
  v: Pick<StoredVerdict, 'status' | 'sizeIn' | 'sizeOut'>,
): { clean: boolean; cleanSize: number | undefined; storedSize: number | undefined } {
  const clean = v.status === 'clean';
  const cleanSize = clean && v.sizeIn === v.sizeOut ? v.sizeIn : undefined;
  return { clean, cleanSize, storedSize: full && cleanSize === undefined ? v.sizeOut : undefined };
}

function indexMaps(rows: readonly IndexRow[]): IndexView {
  const m = sharedIndexMaps.get(rows);
  if (m) return m;
  const b: IndexMaps = { ids: new Map(), clean: new Set(), cleanSize: new Map(), storedSize: new Map() };
  for (const [id, full, status, sizeIn, sizeOut] of rows) {
    const uid = Number(id);
    const e = indexEntry(full, { status, sizeIn, sizeOut });
    b.ids.set(uid, full);
    if (e.clean) b.clean.add(uid);
    if (e.cleanSize !== undefined) b.cleanSize.set(uid, e.cleanSize);
    if (e.storedSize !== undefined) b.storedSize.set(uid, e.storedSize);
  }
  sharedIndexMaps.set(rows, b);
  return b;
}

/** A shared index's UIDs, ascending (storedUidsOf). */
interface StoredUids {
  /** Every UID stored with metadata (IndexView.ids says true). */
  readonly stored: readonly number[];
  /** Those of them the server's bytes do not answer (not clean, or clean with another size): notServedClean of `stored`. */
  readonly notClean: readonly number[];
}

const sharedStoredUids = new WeakMap<IndexView, StoredUids>();

/**
 * The UIDs of a shared (never changed) index view, ascending, built once per view and shared by its
 * sessions like the view: a reconnecting client's poll or list sync of the whole mailbox asks exactly
 * these, and allCached / notServedClean answer it from them instead of one look per message (issue 10).
 */
function storedUidsOf(view: IndexView): StoredUids {
  let s = sharedStoredUids.get(view);
  if (s) return s;
  const stored: number[] = [];
  for (const [uid, full] of view.ids) if (full) stored.push(uid);
  stored.sort((a, b) => a - b);
  const notClean = stored.filter((u) => !view.clean.has(u) || view.cleanSize.get(u) === undefined);
  s = { stored, notClean };
  sharedStoredUids.set(view, s);
  return s;
}

/** Whether `a` and `b` hold the same numbers in the same order. */
function sameNumbers(a: readonly number[], b: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Items rendered from the stored verdicts of changed messages, kept for the next sessions that read
 * the same index of the mailbox (inspect/stored-renderings.ts). A FETCH serves from a memo only while
 * the session's index is the answer the memo is bound to, uncorrected (not `own`), and the store has
 * not changed since the memo was made nor since that index was read (checked once per FETCH), so it
 * answers exactly what reading the store would; after any change the first FETCH of a session that
 * read the index anew starts it over (a session with an older index reads the store, as before). A
 * verdict a session forgets (message.changed) or finds changed leaves the memo at once.
 */
const storedRenderings = new StoredRenderings(VERDICT_STORE_LIMITS.storedRenderingBytes);

/** For tests: the process's kept renderings (bytes, clear). */
export const storedRenderingsForTest = storedRenderings;

/** The memo's key of an item: the name it is written with plus a partial's length (the name keeps only its origin). */
function renderingKey(item: FetchItem): string {
  const name = itemInfo(item).name;
  return item.partial ? `${name}/${item.partial.count}` : name;
}

/** A basis as the session's index names it (storeIndex.basis). */
function basisText(b: VerdictBasis): string {
  return `${b.policyHash}/${b.signatures}`;
}

/** The key of a scope's and basis's memo in storedRenderings. */
function renderingsKey(scope: string, basis: string): string {
  return `${scope}\0${basis}`;
}

/** What the memo's lookup gives an item it does not hold (the answer is then rendered from the store). */
const EMPTY = Buffer.alloc(0);

/**
 * The stored verdicts a FETCH answered from the shared store reads (a list sync: every UID of the set
 * served from the store, or the stored headers of a header-only FETCH), VERDICT_STORE_LIMITS.readBatch
 * at a time from the UID a response names on (one SQLite query per batch instead of one per message);
 * only the current batch is held.
 */
interface StoreReads {
  /** Ascending. */
  uids: number[];
  /** Index in `uids` of the first UID not read yet. */
  next: number;
  /** The current batch: a UID's verdict, or null (not stored, unreadable, or the read failed). */
  batch: Map<number, StoredVerdict | null>;
}

interface CommandState {
  /** Every UID was vetted before: the upstream FETCH carries no body. */
  fromCache?: boolean;
  /**
   * A split FETCH (splitCached): the UIDs of the set neither cache holds. The first half (fromCache)
   * answers the rest and drops their responses, noting each one's sequence number (`seen`: they
   * exist); the second half, a private FETCH of just those with a body (`items`), downloads and vets
   * them like any FETCH: `UID FETCH uids` for a client's UID FETCH, `FETCH seqs` for a sequence-number
   * FETCH (during which the server may send no EXPUNGE, as during the client's own). `first`: the first
   * half's tagged response (the client's tag), what the client gets when the second half completes OK.
   * `answered`: the missing UIDs the second half returned with their message; one seen but not
   * answered is withheld (NO [UNAVAILABLE]), never silently left out.
   */
  split?: { missing: Set<number>; items: string; second: boolean; first?: Buffer; seen: Map<number, number>; answered: Set<number> };
  /** The UIDs answered from the shared store, read in batches. */
  storeReads?: StoreReads;
  /** The memo of stored renderings this FETCH answers from and adds to (ImapInspector.renderingMemo), once looked up; null: none. */
  renderMemo?: RenderingMemo | null;
  /** Messages stored clean are answered from the server's RFC822.SIZE and header sections (relayClean), not from the store. */
  relayClean?: boolean;
  /** relayClean for a poll (the client asks for UID and RFC822.SIZE only): see pollLine. */
  pollLines?: boolean;
  /** relayClean for a list sync (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (...)]) without header rules (see listAnswer). */
  list?: ListSync;
  tag: string;
  uidCommand: boolean;
  items: FetchItem[];
  /**
   * The server items a header-only answer may carry as the server wrote them: what the client asked
   * for, plus what a server adds on its own (UID, FLAGS after an implied \Seen, MODSEQ under
   * CONDSTORE). Anything else in the answer is data nobody requested and is not relayed (render()
   * emits only requested items too).
   */
  relayNames: Set<string>;
  pending: Promise<void>[];
  tempfail: string[];
  failedCte: boolean;
}

function crlfStrip(s: string): string {
  return s.replace(/\r?\n$/, '');
}

/** The selected-mailbox key: INBOX is case-insensitive (RFC 9051 5.1), every other name is taken byte for byte. */
function mailboxKey(name: Buffer): string {
  const text = name.toString('latin1');
  return text.toUpperCase() === 'INBOX' ? 'INBOX' : text;
}

/**
 * A held literal from this size on that arrives in several reads is hashed as it arrives, each chunk
 * while it is still in the CPU's cache (MessageAssembler's `digestFrom`): a 25 MB message hashed
 * afterwards is read back from memory, at about half the speed.
 */
const DIGEST_AS_ARRIVING_FROM = 16 * 1024;

/** Messages hashed for the verdict store: as they arrived (MessageAssembler) or afterwards (tests and benchmarks; not configuration). */
export const messageDigestStats = { asArriving: 0, after: 0 };

/** The mailbox selected when a FETCH response arrived, and the count of mailbox changes then (ImapInspector.mailboxEpoch). */
interface MailboxAt {
  epoch: number;
  mailbox: string | null;
  uidValidity: number | null;
}

export class ImapInspector implements ImapInterceptor {
  private mailbox: string | null = null;
  private uidValidity: number | null = null;
  private readonly pendingSelect = new Map<string, string>();
  private selectingUidValidity: number | null = null;
  private readonly cache: VettedCache;
  private readonly inflightVets = new Map<string, Promise<Vetted | { tempfail: string }>>();
  /** ENVELOPE and top-level header fetches download and vet the message (inspect.vet_on_envelope). */
  private readonly vetOnEnvelope: boolean;
  /** ENVELOPE downloads and vets the message: vet_on_envelope, or header rules that touch an envelope field (envelopeRuled). */
  private readonly vetsEnvelope: boolean;
  /** The logged-in user (the spam check's recipient when it is an address). */
  private user: string | null = null;
  /** The upstream `host:port` (part of the shared store's key). */
  private upstream: string | null = null;
  /**
   * The selected mailbox's UIDs by sequence number (index seq-1; 0 = not known yet), learnt from FETCH
   * responses that carry a UID and kept in step with EXISTS and EXPUNGE; null = not tracked (VANISHED,
   * something inconsistent, too large). Only used to decide that a FETCH needs no body download: what
   * is rendered is always keyed by the UID in the server's own response.
   */
  private uids: number[] | null = null;
  private knownUids = 0;
  /** Counts every change of the mailbox's message numbering (EXISTS, EXPUNGE, VANISHED, a new map): a UID lookup answered across one is not used. */
  private numbering = 0;
  /** UID lookups of the selected mailbox whose answer was not used (UID_LOOKUP_LIMITS.maxFailedPerMailbox). */
  private failedLookups = 0;
  /** A SELECT/EXAMINE just completed OK and nothing else happened since: lookupAhead may ask once. */
  private aheadArmed = false;
  /** The SELECT/EXAMINE that made the mailbox current: its tag, and the map and numbering it left (a lookup sent behind it answers for exactly that state). */
  private selectedBy: { tag: string; uids: number[] | null; numbering: number } | null = null;
  /** The store scope this session noted for the selected mailbox's name (VerdictStore.noteMailbox), or what the store had noted at the SELECT. */
  private notedScope: string | null = null;
  private selectingExists: number | null = null;
  /**
   * Ids of the selected mailbox in the shared store (loaded once per mailbox and basis), with whether
   * their metadata is stored. `maps` are shared with other sessions of the same scope and basis
   * (sharedIndexMaps) until `own`: read them freely, change them only through ownIndex(). `token`:
   * VerdictStore.changeToken() read just before the index (null: unreadable).
   */
  private storeIndex: { scope: string; basis: string; maps: IndexView; own: boolean; token: string | null } | null = null;
  /** storeIndex.basis of the last basis asked for. */
  private basisMemo: { policyHash: string; signatures: string; text: string } | null = null;
  /** The numbers of the poll line pollLine or pollRun reads (one object per session, not one per line). */
  private readonly pollScratch: PollLine = { seq: 0, uid: 0, size: 0 };
  /** scopeId() of the last tuple asked for (a SHA-256 per message otherwise). */
  private scopeMemo: { upstream: string; user: string; mailbox: string; uidValidity: number; scope: string } | null = null;
  private storeWarned = false;
  /** Vets of this session running at once (MAX_VETS_IN_FLIGHT). */
  private readonly slots = new Slots(MAX_VETS_IN_FLIGHT);

  /** With a verdict store every vetted message is hashed: a large one as it arrives (ImapInterceptor.digestLiteralsFrom). */
  readonly digestLiteralsFrom: number | undefined;

  constructor(private readonly deps: ImapInspectorDeps) {
    this.digestLiteralsFrom = deps.shared ? DIGEST_AS_ARRIVING_FROM : undefined;
    this.cache = new VettedCache(deps.listener.inspect.cacheMemoryBytes, deps.reserve ? { reserve: deps.reserve } : {});
    this.vetOnEnvelope = resolveVetOnEnvelope(deps.listener.inspect.vetOnEnvelope, deps.policy, deps.engine);
    this.vetsEnvelope = this.vetOnEnvelope || envelopeRuled(deps.policy);
  }

  close(): void {
    this.cache.close();
  }

  /**
   * The choke point's question for a FETCH response it would relay (see ImapInterceptor.screenFetch):
   * with vet_on_metadata, an RFC822.SIZE, BODY, BODYSTRUCTURE or BINARY.SIZE is the server's value for
   * a message postern may have changed (its original size, the structure naming a removed attachment);
   * with vet_on_envelope, an ENVELOPE likewise. No relayed command asks for them (a FETCH naming them is
   * intercepted): a server that sends them anyway is not followed.
   */
  screenFetch(parts: Buffer[]): string | null {
    const vetMeta = this.deps.listener.inspect.vetOnMetadata;
    if (!vetMeta && !this.vetsEnvelope) return null;
    // a flag update (the common case: a relayed FLAGS sync) names none of them: no second parse (item
    // names are never inside a literal, so the text parts, even indexes, hold them all)
    let named = false;
    for (let i = 0; i < parts.length && !named; i += 2) named = VETTED_NAME.test(parts[i]!.toString('latin1'));
    if (!named) return null;
    for (const it of parseFetchResponse(parts).items) {
      const n = it.name;
      if (vetMeta && (n === 'RFC822.SIZE' || n === 'BODY' || n === 'BODYSTRUCTURE' || n.startsWith('BINARY.SIZE[')))
        return `FETCH item ${n} nobody asked for (postern vets its value)`;
      if (this.vetsEnvelope && n === 'ENVELOPE') return 'FETCH item ENVELOPE nobody asked for (postern vets its value)';
    }
    return null;
  }

  observeUntagged(head: ResponseHead, parts?: Buffer[] | null): void {
    if (this.pendingSelect.size > 0) {
      if (head.code) {
        const m = /^UIDVALIDITY (\d+)/i.exec(head.code);
        if (m) this.selectingUidValidity = Number(m[1]);
      }
      if (head.keyword === 'EXISTS' && head.number !== undefined) this.selectingExists = head.number;
      return;
    }
    // another UIDVALIDITY for the selected mailbox (no SELECT asked for it): its UIDs name other
    // messages now; nothing more is kept or served by the old scope, nor by a new one postern did not see begin
    if (head.code && this.mailbox !== null) {
      const m = /^UIDVALIDITY (\d+)/i.exec(head.code);
      if (m && Number(m[1]) !== this.uidValidity) {
        this.selectMailbox(null, null);
        this.resetUids(null);
        this.selectedBy = null;
        return;
      }
    }
    this.trackMailbox(head, parts ?? null);
  }

  observeTagged(tag: string, _command: string, head: ResponseHead): void {
    // only the completion of a SELECT/EXAMINE arms the lookup ahead; any other completion disarms it
    this.aheadArmed = false;
    const box = this.pendingSelect.get(tag);
    if (box === undefined) return;
    this.pendingSelect.delete(tag);
    if (head.keyword === 'OK') {
      this.selectMailbox(box, this.selectingUidValidity);
      const n = this.selectingExists;
      this.resetUids(n !== null && n <= VERDICT_STORE_LIMITS.maxIdsPerMailbox ? new Array<number>(n).fill(0) : null);
      this.aheadArmed = true;
      this.selectedBy = { tag, uids: this.uids, numbering: this.numbering };
    }
    this.selectingUidValidity = null;
    this.selectingExists = null;
  }

  /**
   * Sets the selected mailbox; every change counts in `mailboxEpoch`. A message vetted after a change
   * (its vet waited in the process gate while a pipelined SELECT completed) is vetted for the mailbox it
   * came from and kept in no cache (vet): filed under the new one, it was served as another message.
   */
  private selectMailbox(box: string | null, uidValidity: number | null): void {
    this.mailbox = box;
    this.uidValidity = uidValidity;
    this.mailboxEpoch++;
  }

  private mailboxEpoch = 0;

  /** Where a FETCH response arrived: the selected mailbox then (MailboxAt). */
  private mailboxAt(): MailboxAt {
    return { epoch: this.mailboxEpoch, mailbox: this.mailbox, uidValidity: this.uidValidity };
  }

  private resetUids(uids: number[] | null): void {
    this.uids = uids;
    this.knownUids = 0;
    this.numbering++;
  }

  /** Keeps the seq -> UID map in step with the server's untagged responses. */
  private trackMailbox(head: ResponseHead, parts: Buffer[] | null): void {
    const uids = this.uids;
    if (!uids) return;
    const n = head.number;
    if (head.keyword === 'EXISTS' || head.keyword === 'EXPUNGE' || head.keyword === 'VANISHED') this.numbering++;
    switch (head.keyword) {
      case 'EXISTS':
        if (n === undefined || n < uids.length || n > VERDICT_STORE_LIMITS.maxIdsPerMailbox) this.resetUids(null);
        else while (uids.length < n) uids.push(0);
        return;
      case 'EXPUNGE':
        if (n === undefined || n < 1 || n > uids.length) this.resetUids(null);
        else if (uids.splice(n - 1, 1)[0]) this.knownUids--;
        return;
      case 'VANISHED':
        this.resetUids(null);
        return;
      case 'FETCH':
        // nothing to learn once every UID is known (a flags sync of a large mailbox is parsed once)
        if (!parts || this.knownUids === uids.length) return;
        try {
          const resp = parseFetchResponse(parts);
          const u = resp.items.find((i) => i.name === 'UID')?.atom;
          if (u !== undefined) this.learnUid(resp.seq, Number(u));
        } catch {
          // not ours to judge (the choke point already screened it)
        }
        return;
      default:
    }
  }

  private learnUid(seq: number, uid: number): void {
    const uids = this.uids;
    if (!uids || !Number.isSafeInteger(uid) || uid < 1) return;
    if (seq < 1 || seq > uids.length) {
      this.resetUids(null);
      return;
    }
    const had = uids[seq - 1]!;
    if (had === uid) return;
    // UIDs ascend strictly with sequence numbers (RFC 9051 2.3.1.1): anything else means the map is wrong
    const before = seq >= 2 ? uids[seq - 2]! : 0;
    const after = seq < uids.length ? uids[seq]! : 0;
    if (had !== 0 || (before !== 0 && before >= uid) || (after !== 0 && after <= uid)) {
      this.resetUids(null);
      return;
    }
    uids[seq - 1] = uid;
    this.knownUids++;
  }

  // ------------------------------------------------------------------ shared verdict store

  /** The store's key parts for the selected mailbox now, or null when the store cannot be used. */
  private storeKey(): { scope: string; basis: VerdictBasis } | null {
    const sh = this.deps.shared;
    if (!sh || this.mailbox === null || this.uidValidity === null || this.user === null || this.upstream === null) return null;
    const signatures = sh.signatures.current();
    if (signatures === null) return null;
    let m = this.scopeMemo;
    if (!m || m.upstream !== this.upstream || m.user !== this.user || m.mailbox !== this.mailbox || m.uidValidity !== this.uidValidity) {
      const scope = scopeId({ protocol: 'imap', upstream: this.upstream, user: this.user, mailbox: this.mailbox, uidValidity: this.uidValidity });
      m = { upstream: this.upstream, user: this.user, mailbox: this.mailbox, uidValidity: this.uidValidity, scope };
      this.scopeMemo = m;
    }
    // asked per message: the same key object while nothing it is made of changed (its readers never modify it)
    const key = this.keyMemo;
    if (key !== null && key.scope === m.scope && key.basis.policyHash === sh.policyHash && key.basis.signatures === signatures) return key;
    this.keyMemo = { scope: m.scope, basis: { policyHash: sh.policyHash, signatures } };
    return this.keyMemo;
  }

  private keyMemo: { scope: string; basis: VerdictBasis } | null = null;

  private storeFailed(err: unknown): void {
    if (this.storeWarned) return;
    this.storeWarned = true;
    this.deps.log.warn({ event: 'inspect.verdict_cache_failed', err: logErr(err, ErrorCodes.VERDICT_STORE) }, 'verdict cache unusable; vetting without it');
  }

  /** The ids of the selected mailbox in the store (true: with metadata), loaded once per mailbox and basis. */
  private storeIds(): ReadonlyMap<number, boolean> | null {
    const k = this.storeKey();
    if (!k) return null;
    // asked once or more per message: the key text is built only when the basis changed
    let bm = this.basisMemo;
    if (!bm || bm.policyHash !== k.basis.policyHash || bm.signatures !== k.basis.signatures) {
      bm = { policyHash: k.basis.policyHash, signatures: k.basis.signatures, text: basisText(k.basis) };
      this.basisMemo = bm;
    }
    const basis = bm.text;
    if (this.storeIndex && this.storeIndex.scope === k.scope && this.storeIndex.basis === basis) return this.storeIndex.maps.ids;
    let maps: IndexView;
    let token: string | null = null;
    try {
      // the store's change token read before the index: a change in between makes the index look older than it is, never newer
      const at = this.deps.shared!.store.indexAt(k.scope, k.basis, VERDICT_STORE_LIMITS.maxIdsPerMailbox);
      token = at.token;
      maps = indexMaps(at.rows);
    } catch (err) {
      this.storeFailed(err);
      return null;
    }
    this.storeIndex = { scope: k.scope, basis, maps, own: false, token };
    if (maps.ids.size > 0) this.noteMailbox(k.scope);
    return maps.ids;
  }

  /** storedUidsOf the session's index of the store while it is the shared one (not `own`: a corrected index is read map by map). */
  private sharedStoredUids(): StoredUids | null {
    const idx = this.storeIndex;
    return idx !== null && !idx.own ? storedUidsOf(idx.maps) : null;
  }

  /** The maps of the session's index made its own to change: a copy of the shared ones, once per index. */
  private ownIndex(idx: NonNullable<ImapInspector['storeIndex']>): IndexMaps {
    if (!idx.own) {
      const m = idx.maps;
      idx.maps = { ids: new Map(m.ids), clean: new Set(m.clean), cleanSize: new Map(m.cleanSize), storedSize: new Map(m.storedSize) };
      idx.own = true;
    }
    return idx.maps as IndexMaps;
  }

  /**
   * The stored verdict of `uid`. What the session's index of the store claims but the store no longer
   * has (evicted by another process) or has without metadata is corrected in the index, so the next
   * FETCH downloads the message instead of being withheld again.
   */
  private storeGet(uid: number): StoredVerdict | null {
    const k = this.storeKey();
    if (!k) return null;
    let v: StoredVerdict | null;
    try {
      v = this.deps.shared!.store.get(k.scope, String(uid), k.basis);
    } catch (err) {
      this.storeFailed(err);
      v = null;
    }
    this.correctIndex(k, uid, v);
    return v;
  }

  /** What the store answered for `uid` corrects the session's index of it (see storeGet). */
  private correctIndex(k: { scope: string; basis: VerdictBasis }, uid: number, v: StoredVerdict | null): void {
    this.setIndexEntry(k, uid, !!(v?.header && v.items), v);
  }

  /**
   * Sets the session's index entry of `uid` as indexMaps() reads a stored verdict (`v`, with metadata:
   * `full`; null: the store has none). An entry that already reads so is left alone, so a read that
   * confirms the index copies nothing.
   */
  private setIndexEntry(
    k: { scope: string; basis: VerdictBasis },
    uid: number,
    full: boolean,
    v: Pick<StoredVerdict, 'status' | 'sizeIn' | 'sizeOut'> | null,
  ): void {
    const cur = this.storeIndex;
    if (!cur || cur.scope !== k.scope || cur.basis !== basisText(k.basis)) return;
    const { clean, cleanSize, storedSize } = v ? indexEntry(full, v) : { clean: false, cleanSize: undefined, storedSize: undefined };
    const stored = v ? full : undefined;
    const m = cur.maps;
    if (m.ids.get(uid) === stored && m.clean.has(uid) === clean && m.cleanSize.get(uid) === cleanSize && m.storedSize.get(uid) === storedSize) return;
    // what other sessions of this index would find on reading the store too: none of them answers from the memo for it
    storedRenderings.drop(renderingsKey(cur.scope, cur.basis), uid);
    const idx = this.ownIndex(cur);
    if (stored === undefined) idx.ids.delete(uid);
    else idx.ids.set(uid, stored);
    if (clean) idx.clean.add(uid);
    else idx.clean.delete(uid);
    if (cleanSize !== undefined) idx.cleanSize.set(uid, cleanSize);
    else idx.cleanSize.delete(uid);
    if (storedSize !== undefined) idx.storedSize.set(uid, storedSize);
    else idx.storedSize.delete(uid);
  }

  /**
   * The size of `uid` when the session's index has it stored clean with metadata and its vetted form
   * is the server's byte for byte (so the server's RFC822.SIZE and header sections are the vetted
   * ones); undefined otherwise.
   */
  private cleanSizeOf(uid: number): number | undefined {
    return this.cleanSizeIn(this.storeIds(), uid);
  }

  /** cleanSizeOf with the session's index (`ids`, storeIds()) looked up by the caller, once for a run of responses. */
  private cleanSizeIn(ids: ReadonlyMap<number, boolean> | null, uid: number): number | undefined {
    if (ids === null || ids.get(uid) !== true) return undefined;
    const maps = this.storeIndex!.maps;
    return maps.clean.has(uid) ? maps.cleanSize.get(uid) : undefined;
  }

  /**
   * The UIDs of `uids` (in order) for which cleanSizeOf() is undefined, with one look at the session's
   * index of the store instead of one per UID (nothing changes the index between them).
   */
  private notServedClean(uids: readonly number[]): number[] {
    const ids = this.storeIds();
    const shared = ids !== null ? this.sharedStoredUids() : null;
    if (shared !== null && sameNumbers(uids, shared.stored)) return shared.notClean.slice();
    const idx = this.storeIndex?.maps ?? null;
    const rest: number[] = [];
    for (const u of uids) if (ids === null || idx === null || ids.get(u) !== true || !idx.clean.has(u) || idx.cleanSize.get(u) === undefined) rest.push(u);
    return rest;
  }

  /**
   * Notes the selected mailbox's name with `scope` in the store (VerdictStore.noteMailbox), so the next
   * session's SELECT of it takes the lookup behind it; written once per scope per session, and not when
   * the store had noted it already at the SELECT.
   */
  private noteMailbox(scope: string): void {
    if (this.notedScope === scope || this.mailbox === null || this.user === null || this.upstream === null) return;
    this.notedScope = scope;
    try {
      this.deps.shared!.store.noteMailbox(mailboxNameId({ protocol: 'imap', upstream: this.upstream, user: this.user, mailbox: this.mailbox }), scope);
    } catch (err) {
      this.storeFailed(err);
    }
  }

  /** Forgets the stored verdict of `uid` (the server's message is not the one vetted): the next FETCH downloads and vets it. */
  private forgetStored(uid: number): void {
    const k = this.storeKey();
    if (!k) return;
    storedRenderings.drop(renderingsKey(k.scope, basisText(k.basis)), uid);
    try {
      this.deps.shared!.store.delete(k.scope, String(uid), k.basis);
    } catch (err) {
      this.storeFailed(err);
    }
    this.correctIndex(k, uid, null);
  }

  /** Whether the session's index of the store has `uid` stored clean (with metadata) for the selected mailbox now. */
  private storedClean(uid: number): boolean {
    if (this.storeIds()?.get(uid) !== true) return false;
    return this.storeIndex!.maps.clean.has(uid);
  }

  /**
   * storeGet() for a FETCH served from the store: the verdict of `uid` from the command's current
   * batch, reading the next batch (one query) when `uid` is not in it; a UID outside the command's
   * resolved set is asked of the store on its own. The same answers as storeGet(): a failed read is a
   * miss (the message is withheld, the index corrected so the next FETCH downloads it).
   */
  private storeRead(reads: StoreReads, uid: number): StoredVerdict | null {
    let v = reads.batch.get(uid);
    // answers come in UID order: the batch starts at `uid` (found in the ascending list when out of order)
    const at = v === undefined ? (reads.uids[reads.next] === uid ? reads.next : ascendingIndexOf(reads.uids, uid)) : -1;
    if (at >= 0) {
      const k = this.storeKey();
      if (!k) return null;
      const ids = reads.uids.slice(at, at + VERDICT_STORE_LIMITS.readBatch);
      reads.next = at + ids.length;
      let got: Map<string, StoredVerdict>;
      try {
        got = this.deps.shared!.store.getMany(k.scope, ids.map(String), k.basis);
      } catch (err) {
        this.storeFailed(err);
        got = new Map();
      }
      reads.batch = new Map();
      for (const id of ids) {
        const sv = got.get(String(id)) ?? null;
        this.correctIndex(k, id, sv);
        reads.batch.set(id, sv);
      }
      v = reads.batch.get(uid);
    }
    if (v === undefined) return this.storeGet(uid);
    reads.batch.delete(uid);
    return v;
  }

  /** The store's clear count (VerdictStore.clears), read before a vet; null when the store failed (nothing is stored then). */
  private storeClears(): number | null {
    try {
      return this.deps.shared!.store.clears();
    } catch (err) {
      this.storeFailed(err);
      return null;
    }
  }

  /** Stores a fresh verdict, unless the store was cleared since `since` (read before the vet began). */
  private storePut(uid: number, k: { scope: string; basis: VerdictBasis }, raw: Buffer, v: Vetted, since: number): void {
    // made with a failed scanner (on_error block or allow) or by the engine's failure: the next vet scans again
    if (v.verdict.transient) return;
    const sv: StoredVerdict = {
      status: v.verdict.status,
      hits: v.verdict.hits.map((h) => ({ rule: h.rule, action: h.action, part: h.part, reason: h.reason })),
      viruses: v.verdict.viruses,
      sizeIn: v.verdict.sizeIn,
      sizeOut: v.verdict.sizeOut,
      digest: this.digestOf(raw),
    };
    if (v.verdict.quarantineId) sv.quarantineId = v.verdict.quarantineId;
    const structure = partMapOf(v.structure, v.output);
    const root = mimeNodeOf(structure);
    if (root && root.parent === undefined && root.section === '' && root.bodyEnd === v.output.length && !hasBareLf(v.output)) {
      try {
        sv.header = Buffer.from(v.output.subarray(0, root.bodyStart));
        const items: StoredVerdict['items'] = {};
        for (const item of STORED_ITEMS) items[item.name as StoredItemName] = renderItem(v.output, structure, item);
        sv.items = items;
      } catch {
        // what cannot be rendered is not stored: a list sync of this message downloads it again
        delete sv.header;
      }
    }
    try {
      // cleared while this message was vetted: its verdict predates the clear and is not kept. An altered
      // message keeps its sanitised content (up to the store's bound), served later for the same bytes
      const content = isAltered(sv.status) && !v.verdict.quarantineFailed ? v.output : undefined;
      if (!this.deps.shared!.store.put(k.scope, String(uid), k.basis, sv, Date.now(), since, content)) return;
      this.noteMailbox(k.scope);
      this.setIndexEntry(k, uid, !!sv.items, sv);
    } catch (err) {
      this.storeFailed(err);
    }
  }

  /** Whether something of the selected mailbox may be served from the caches (session or shared). */
  private anythingVetted(): boolean {
    if (this.cache.stats.entries > 0) return true;
    const ids = this.storeIds();
    return ids !== null && ids.size > 0;
  }

  /**
   * parseFetchItems of one command's item list (sharedFetchItems), remembered for the next call with
   * the same text: the relay offers each FETCH to refuse(), prepare() and intercept() in turn, which
   * read the same items. A parse error is not remembered (it throws).
   */
  private fetchItems(text: string): FetchItemList {
    const m = this.itemsMemo;
    if (m !== null && m.text === text) return m.parsed;
    const parsed = sharedFetchItems(text);
    this.itemsMemo = { text, parsed };
    return parsed;
  }

  private itemsMemo: { text: string; parsed: FetchItemList } | null = null;

  refuse(head: CommandHead, line: Buffer, hasLiteral: boolean): string | null {
    if (head.name === 'FETCH' || head.name === 'UID FETCH') {
      // a literal would hide items from inspection; no real client sends one in FETCH
      if (hasLiteral) return 'postern: literals in FETCH are not supported';
      const args = crlfStrip(line.toString('latin1', head.argsOffset));
      const sp = args.indexOf(' ');
      if (sp <= 0) return null;
      let items: FetchItem[];
      try {
        items = this.fetchItems(args.slice(sp + 1)).items;
      } catch (err) {
        // fail closed: what postern cannot parse it cannot inspect (PREVIEW (LAZY), SNIPPET (FUZZY), ...)
        return `postern: ${(err as Error).message}`;
      }
      const unsafe = items.find((i) => itemInfo(i).cls === 'metadata' && !SAFE_METADATA.has(i.name));
      if (unsafe) return `postern: FETCH item ${unsafe.name} is not available through this inspecting proxy`;
      return null;
    }
    // URLFETCH, GENURLAUTH, RESETKEY and NOTIFY never get here: the command grammar knows none of them
    return null;
  }

  /**
   * A private UID lookup before a FETCH that would otherwise download bodies the shared store could
   * answer for: a new session's first `UID FETCH 1:* (UID RFC822.SIZE)` (a poll) or list sync, or a
   * sequence-number FETCH, whose set the seq -> UID map cannot resolve yet. Offered only for a FETCH
   * whose items the store answers (metadata, sizes, structures, top-level headers), with a mailbox
   * selected whose store index is not empty. The answer fills the map only when it is strictly
   * consistent (see fillFromLookup); otherwise the FETCH downloads and vets as without it.
   */
  prepare(head: CommandHead, line: Buffer, session: ImapSessionView): PreparedLookup | null {
    if (head.name !== 'FETCH' && head.name !== 'UID FETCH') return null;
    if (!this.lookupWanted()) return null;
    const args = crlfStrip(line.toString('latin1', head.argsOffset));
    const sp = args.indexOf(' ');
    if (sp <= 0) return null;
    const seqSet = args.slice(0, sp);
    if (!/^[0-9*:,]+$/.test(seqSet)) return null;
    let items: FetchItem[];
    try {
      items = this.fetchItems(args.slice(sp + 1)).items;
    } catch {
      return null;
    }
    const vetMeta = this.deps.listener.inspect.vetOnMetadata;
    const classes = items.map((i) => itemInfo(i).cls);
    const hasEnvelope = items.some(isEnvelope);
    const needContent =
      classes.some((c) => c === 'content' || (vetMeta && c === 'content-metadata') || (this.vetOnEnvelope && c === 'header')) ||
      (this.vetsEnvelope && hasEnvelope);
    const hasHeader = classes.some((c) => c === 'header');
    // what only a download can answer (a body section) gains nothing from the map; plain metadata needs no body
    if (!this.storeAnswers(items) || !(needContent || hasHeader || hasEnvelope)) return null;
    this.user = session.user;
    this.upstream = session.upstreamName;
    const ids = this.storeIds();
    if (!ids || ids.size === 0) return null;
    if (this.resolveSet(seqSet, head.name === 'UID FETCH') !== null) return null;
    return this.uidLookup(session);
  }

  /**
   * The lookup ahead (issue 10): right after a SELECT/EXAMINE completed OK, with nothing else in flight,
   * when the store knows messages of the mailbox and the map is incomplete (exactly when prepare() would
   * ask before the client's FETCH), the same private lookup is sent at once, so its answer is usually
   * back before the FETCH arrives. At most once per SELECT; the relay offers it only while no client
   * command waits. Its answer fills the map under the same strict rules, and counts as a failed lookup
   * when not used (the FETCH may then still be prepared, within UID_LOOKUP_LIMITS.maxFailedPerMailbox).
   */
  lookupAhead(session: ImapSessionView): PreparedLookup | null {
    const armed = this.aheadArmed;
    this.aheadArmed = false;
    if (!armed || !this.lookupWanted()) return null;
    this.user = session.user;
    this.upstream = session.upstreamName;
    const ids = this.storeIds();
    if (!ids || ids.size === 0) return null;
    return this.uidLookup(session);
  }

  /** A mailbox is selected whose map is incomplete, and lookups of it have not failed too often. */
  private lookupWanted(): boolean {
    const uids = this.uids;
    if (this.mailbox === null || this.uidValidity === null || !uids || uids.length === 0 || this.knownUids === uids.length) return false;
    return this.failedLookups < UID_LOOKUP_LIMITS.maxFailedPerMailbox;
  }

  /**
   * The lookup behind a SELECT/EXAMINE (issue 10): when the store has verdicts of this user's mailbox
   * of that name (VerdictStore.mailboxScope: any UIDVALIDITY, any basis), the private lookup of the
   * first maxUidsPerLookup messages (`UID SEARCH RETURN (ALL) 1:5000`, the count is not known yet) is
   * sent pipelined right behind the client's SELECT, so its answer comes back with the SELECT's and a
   * reconnecting client's first FETCH finds the map complete. Its answer is used only when the SELECT
   * with this tag completed OK before it and nothing changed the numbering since (EXISTS, EXPUNGE,
   * another SELECT): then it is read like any lookup of messages 1..min(n, 5000) (exactly that many
   * strictly ascending UIDs, further ranges looked up after it). A mailbox selected with another
   * UIDVALIDITY is still the mailbox the answer is for. Not used: counted as a failed lookup, and the
   * ordinary lookup is sent at once when still wanted.
   */
  lookupBehind(head: CommandHead, session: ImapSessionView): PreparedLookup | null {
    const sh = this.deps.shared;
    const box = this.pendingSelect.get(head.tag);
    if (!sh || box === undefined || (head.name !== 'SELECT' && head.name !== 'EXAMINE') || session.user === null || session.upstreamName === null) return null;
    this.user = session.user;
    this.upstream = session.upstreamName;
    let scope: string | null;
    try {
      scope = sh.store.mailboxScope(mailboxNameId({ protocol: 'imap', upstream: this.upstream, user: this.user, mailbox: box }));
    } catch (err) {
      this.storeFailed(err);
      return null;
    }
    this.notedScope = scope;
    if (scope === null) return null;
    const esearch = session.upstreamCapabilities.has('ESEARCH');
    const step = UID_LOOKUP_LIMITS.maxUidsPerLookup;
    return {
      command: lookupCommand({ lo: 1, hi: step, all: false }, esearch),
      done: (h, untagged) => {
        const sel = this.selectedBy;
        const uidValidity = this.uidValidity;
        if (
          !sel ||
          sel.tag !== head.tag ||
          this.mailbox !== box ||
          uidValidity === null ||
          !sel.uids ||
          this.uids !== sel.uids ||
          this.numbering !== sel.numbering
        ) {
          if (this.mailbox === null) return null; // the SELECT failed: nothing to look up
          return this.lookupFailed('the mailbox changed during the lookup') ? this.uidLookup(session) : null;
        }
        if (sel.uids.length === 0) return null;
        const from = { uids: sel.uids, numbering: sel.numbering, mailbox: box, uidValidity };
        return this.lookupStepDone(esearch, from, [], { lo: 1, hi: Math.min(sel.uids.length, step), all: false }, h, untagged, session);
      },
    };
  }

  /** A lookup's answer was not used: counted and logged; returns whether a further lookup is still wanted. */
  private lookupFailed(why: string): boolean {
    this.failedLookups++;
    this.deps.log.debug(
      { event: 'inspect.uid_lookup', result: 'ignored', reason: why, mailbox: this.mailbox },
      'UID lookup answer not used; the FETCH downloads',
    );
    return this.lookupWanted();
  }

  /** The private lookup of every message's UID (in ranges of maxUidsPerLookup); only after lookupWanted(). */
  private uidLookup(session: ImapSessionView): PreparedLookup | null {
    const uids = this.uids;
    if (this.mailbox === null || this.uidValidity === null || !uids || uids.length === 0) return null;
    const esearch = session.upstreamCapabilities.has('ESEARCH');
    const from = { uids, numbering: this.numbering, mailbox: this.mailbox, uidValidity: this.uidValidity };
    const step = UID_LOOKUP_LIMITS.maxUidsPerLookup;
    return this.lookupStep(esearch, from, [], { lo: 1, hi: Math.min(uids.length, step), all: uids.length <= step }, session);
  }

  /** One lookup of a chain: messages range.lo..range.hi of the mailbox state `from`, appended to `found`. */
  private lookupStep(
    esearch: boolean,
    from: { uids: number[]; numbering: number; mailbox: string; uidValidity: number },
    found: number[],
    range: LookupRange,
    session: ImapSessionView,
  ): PreparedLookup {
    return { command: lookupCommand(range, esearch), done: (h, untagged) => this.lookupStepDone(esearch, from, found, range, h, untagged, session) };
  }

  /** The answer of one lookup of a chain: the next range, or the map filled (or nothing: not used). */
  private lookupStepDone(
    esearch: boolean,
    from: { uids: number[]; numbering: number; mailbox: string; uidValidity: number },
    found: number[],
    range: LookupRange,
    h: ResponseHead,
    untagged: Buffer[][],
    session: ImapSessionView,
  ): PreparedLookup | null {
    const why = this.lookupAnswer(from, range, found, h, untagged, esearch);
    if (why) {
      this.lookupFailed(why);
      return null;
    }
    const n = from.uids.length;
    if (range.hi < n)
      return this.lookupStep(esearch, from, found, { lo: range.hi + 1, hi: Math.min(n, range.hi + UID_LOOKUP_LIMITS.maxUidsPerLookup), all: false }, session);
    if (!this.fillFromLookup(found)) {
      this.lookupFailed('disagrees with UIDs already known');
      return null;
    }
    this.deps.log.debug({ event: 'inspect.uid_lookup', result: 'filled', messages: found.length, mailbox: this.mailbox }, 'UIDs of the mailbox looked up');
    return null;
  }

  /**
   * Checks one answer of a UID lookup for messages range.lo..range.hi and appends its UIDs to `found`;
   * returns why it is not used, or null. Not used: the command failed, the answer is not exactly the
   * expected shape and count of strictly ascending UIDs, or the mailbox's numbering changed (EXISTS,
   * EXPUNGE, VANISHED, another mailbox) since the lookup began.
   */
  private lookupAnswer(
    from: { uids: number[]; numbering: number; mailbox: string; uidValidity: number },
    range: LookupRange,
    found: number[],
    head: ResponseHead,
    untagged: Buffer[][],
    esearch: boolean,
  ): string | null {
    if (head.keyword !== 'OK') return `the lookup ended ${head.keyword}`;
    if (this.uids !== from.uids || this.numbering !== from.numbering || this.mailbox !== from.mailbox || this.uidValidity !== from.uidValidity) {
      return 'the mailbox changed during the lookup';
    }
    if (found.length !== range.lo - 1 || range.hi > from.uids.length) return 'the lookup is out of step';
    const got = parseLookupAnswer(untagged, { esearch, tag: head.tag ?? '', expected: range.hi - range.lo + 1, above: found[found.length - 1] ?? 0 });
    if (typeof got === 'string') return got;
    for (const u of got) found.push(u);
    return null;
  }

  /** A complete, consistent lookup: every message's UID. A UID already known that disagrees leaves the map as it is. */
  private fillFromLookup(found: number[]): boolean {
    const uids = this.uids;
    if (!uids || found.length !== uids.length) return false;
    for (let i = 0; i < uids.length; i++) if (uids[i] !== 0 && uids[i] !== found[i]) return false;
    for (let i = 0; i < uids.length; i++) uids[i] = found[i]!;
    this.knownUids = uids.length;
    return true;
  }

  intercept(head: CommandHead, line: Buffer, session: ImapSessionView, command?: ParsedCommand): InterceptedCommand | null {
    // a client command goes upstream: it is no longer "right after the SELECT"
    this.aheadArmed = false;
    const args = crlfStrip(line.toString('latin1', head.argsOffset));
    switch (head.name) {
      case 'SELECT':
      case 'EXAMINE': {
        // The old mailbox is deselected as soon as SELECT starts (RFC 9051 6.3.2); the new one is taken
        // from the grammar's parse (quoted, atom or literal alike) and becomes current only on the
        // server's tagged OK, with the UIDVALIDITY the server reported for it.
        this.selectMailbox(null, null);
        this.resetUids(null);
        this.failedLookups = 0;
        this.selectedBy = null;
        this.notedScope = null;
        const box = command ? mailboxOf(command) : null;
        if (box !== null) this.pendingSelect.set(head.tag, mailboxKey(box));
        return null;
      }
      case 'CLOSE':
      case 'UNSELECT':
        this.selectMailbox(null, null);
        this.resetUids(null);
        this.selectedBy = null;
        return null;
      case 'FETCH':
      case 'UID FETCH':
        return this.interceptFetch(head, args, line, session);
      default:
        return null;
    }
  }

  private interceptFetch(head: CommandHead, args: string, line: Buffer, session: ImapSessionView): InterceptedCommand | null {
    this.user = session.user;
    this.upstream = session.upstreamName;
    const sp = args.indexOf(' ');
    if (sp <= 0) return null;
    const seqSet = args.slice(0, sp);
    let parsed: FetchItemList;
    try {
      parsed = this.fetchItems(args.slice(sp + 1));
    } catch {
      return null; // unreachable: refuse() already answered BAD for unparseable item lists
    }
    const vetMeta = this.deps.listener.inspect.vetOnMetadata;
    const vetEnv = this.vetOnEnvelope;
    const classes = parsed.items.map((i) => itemInfo(i).cls);
    const hasEnvelope = parsed.items.some(isEnvelope);
    // vet_on_envelope: what a message list is built from (ENVELOPE, the header) shows the vetted message
    // a partial header section is not ruled from the server's bytes (`eply-To:` of a cut field name
    // matches no rule: attacker's review): it comes from the vetted message (or a stored verdict, above)
    const needContent =
      classes.some((c, i) => c === 'content' || (vetMeta && c === 'content-metadata') || (c === 'header' && (vetEnv || !!parsed.items[i]!.partial))) ||
      (this.vetsEnvelope && hasEnvelope);
    const hasHeader = classes.some((c) => c === 'header');
    // ENVELOPE alone is relayed as the server sends it until something was vetted in the session;
    // then it is served from the vetted message for those (the header-only path below)
    if (!needContent && !hasHeader && !(hasEnvelope && this.anythingVetted())) return null;
    const state: CommandState = {
      tag: head.tag,
      uidCommand: head.name === 'UID FETCH',
      items: parsed.items,
      relayNames: new Set(['UID', 'FLAGS', 'MODSEQ', ...parsed.items.map((i) => formatItemName(i).toUpperCase())]),
      pending: [],
      tempfail: [],
      failedCte: false,
    };
    const mods: string[] = [];
    if (parsed.modifiers.changedSince !== undefined) mods.push(`CHANGEDSINCE ${parsed.modifiers.changedSince}`);
    if (parsed.modifiers.vanished) mods.push('VANISHED');
    mods.push(...parsed.modifiers.other);
    const build = (items: string[]) =>
      Buffer.from(`${head.tag} ${head.name} ${seqSet} (${items.join(' ')})${mods.length ? ` (${mods.join(' ')})` : ''}\r\n`, 'latin1');
    if (!needContent) {
      // Nothing vetted yet in this session: the command goes upstream untouched. Otherwise UID is
      // added, so headers of messages already vetted are served from their sanitised version.
      if (!this.anythingVetted()) return this.headerOnly(state, line, false);
      const items = parsed.items.map((i) => (i.macro ? i.name : i.raw));
      const addUid = !parsed.items.some((i) => i.name === 'UID');
      // the stored verdicts of the set (when postern can tell its UIDs), read in batches as answers arrive
      const fromStore = this.storedOf(seqSet, state.uidCommand);
      if (fromStore && fromStore.length > 0) state.storeReads = { uids: fromStore, next: 0, batch: new Map() };
      return this.headerOnly(state, build(addUid ? [...items, 'UID'] : items), addUid && !state.uidCommand);
    }

    const upstreamItems: string[] = [];
    const seen = new Set<string>();
    const add = (s: string) => {
      const k = s.toUpperCase();
      if (!seen.has(k)) {
        seen.add(k);
        upstreamItems.push(s);
      }
    };
    // Every message already vetted, in this session (Thunderbird's chunked fetches, Apple Mail's
    // per-part fetches) or — for metadata and headers — in an earlier one (the shared store): no body
    // download; a tiny non-PEEK section still makes the server set \Seen itself.
    let fromStore = this.allCached(seqSet, head.name === 'UID FETCH', parsed.items);
    // a few messages of the set vetted in no session (a poll that finds new mail): only they are downloaded
    const split = fromStore === null && mods.length === 0 ? this.splitCached(seqSet, head.name === 'UID FETCH', parsed.items) : null;
    if (split) fromStore = split.fromStore;
    state.fromCache = fromStore !== null;
    // Messages stored clean are the server's: when the client asks only for what the server's own
    // response then gives as vetted (metadata, RFC822.SIZE, top-level header sections after the header
    // rules), those items are asked of the server and relayed (relayClean); only the others are read
    // from the store.
    let reads = fromStore;
    if (fromStore && fromStore.length > 0 && this.serverAnswersClean(parsed.items)) {
      const rest = this.notServedClean(fromStore);
      if (rest.length < fromStore.length) {
        state.relayClean = true;
        reads = rest;
      }
    }
    // the second half of a split FETCH asks for what a FETCH without any cache would (below), once each
    const secondItems = new Map<string, string>();
    for (let i = 0; i < parsed.items.length; i++) {
      const item = parsed.items[i]!;
      const cls = classes[i]!;
      if (cls === 'metadata' || (cls === 'content-metadata' && !vetMeta)) {
        const written = item.macro ? item.name : item.raw;
        add(written);
        if (!secondItems.has(written.toUpperCase())) secondItems.set(written.toUpperCase(), written);
      } else if (state.relayClean && item.name === 'RFC822.SIZE') add('RFC822.SIZE');
      // as PEEK: \Seen is set by SEEN_MARKER below, as for every FETCH answered without a download
      else if (state.relayClean && cls === 'header') add(item.peek ? item.raw : item.raw.replace(/^BODY\[/i, 'BODY.PEEK['));
    }
    add('UID');
    // the server's size of every message relayed is checked against the stored one
    if (state.relayClean) add('RFC822.SIZE');
    // a poll `UID FETCH set (UID RFC822.SIZE)`: each response of a clean message is the server's line itself (pollLine)
    state.pollLines = state.relayClean && state.uidCommand && parsed.items.every((i) => !i.section && (i.name === 'UID' || i.name === 'RFC822.SIZE'));
    // a list sync: FLAGS, RFC822.SIZE and one header-fields section, in that order (UID anywhere), no header rule to apply
    const listItems = parsed.items.filter((i) => i.name !== 'UID' || i.section);
    const [lf, ls, lh] = listItems;
    if (
      state.relayClean &&
      state.uidCommand &&
      listItems.length === 3 &&
      lf!.name === 'FLAGS' &&
      !lf!.section &&
      ls!.name === 'RFC822.SIZE' &&
      !ls!.section &&
      lh!.name === 'BODY' &&
      lh!.peek &&
      !lh!.partial &&
      lh!.section?.part.length === 0 &&
      lh!.section.text === 'HEADER.FIELDS' &&
      this.deps.policy.headers.strip.length === 0
    ) {
      // a name no server's head can carry as listHeadAt reads it: the general path answers every response
      const name = itemInfo(lh!).name;
      const bytes = Buffer.from(name, 'latin1');
      if (LIST_NAME.test(name) && bytes.toString('latin1') === name) state.list = { name: bytes, sizeKey: renderingKey(ls!), headerKey: renderingKey(lh!) };
    }
    const marksSeen = parsed.items.some(setsSeen);
    if (reads && reads.length > 0) state.storeReads = { uids: reads.sort((a, b) => a - b), next: 0, batch: new Map() };
    if (state.fromCache) {
      if (marksSeen) add(SEEN_MARKER);
    } else add(marksSeen ? 'BODY[]' : 'BODY.PEEK[]');
    if (split) {
      if (!secondItems.has('UID')) secondItems.set('UID', 'UID');
      const items = [...secondItems.values(), marksSeen ? 'BODY[]' : 'BODY.PEEK[]'].join(' ');
      state.split = { missing: new Set(split.missing), items, second: false, seen: new Map(), answered: new Set() };
    }
    return {
      upstreamCommand: build(upstreamItems),
      onUntagged: (parts, h) => (h.keyword === 'FETCH' ? this.onFetch(state, parts) : null),
      ...(state.pollLines || state.list !== undefined
        ? { responseRun: (data: Buffer, start: number, limits: RunLimits, out: Buffer[]) => this.responseRun(state, data, start, limits, out) }
        : {}),
      continueWith: (parts, h) => this.secondHalf(state, parts, h),
      onTagged: (parts, h) => this.onDone(state, parts, h),
      withhold: (reason) => state.tempfail.push(reason),
    };
  }

  /**
   * Header-only fetches never download bodies. Headers of messages vetted in this session are served
   * from the sanitised message (so a blocked message's header is the deny notice's, as in BODY[]);
   * others get the policy's header rules applied to the bytes the server returns.
   */
  private headerOnly(state: CommandState, command: Buffer, dropUid: boolean): InterceptedCommand {
    return {
      upstreamCommand: command,
      onUntagged: (parts, h) => {
        if (h.keyword !== 'FETCH') return null;
        const resp = parseFetchResponse(parts);
        const uidItem = resp.items.find((i) => i.name === 'UID');
        const uid = uidItem?.atom ? Number(uidItem.atom) : null;
        if (uid !== null) this.learnUid(resp.seq, uid);
        const key = uid !== null && this.mailbox !== null && this.uidValidity !== null ? VettedCache.key(this.mailbox, this.uidValidity, uid) : null;
        if (key && this.cache.has(key)) {
          const p = this.cache
            .get(key)
            .then((v) => (v ? this.render(state, resp.seq, resp.items, v) : this.headerRules(resp.seq, resp.items, dropUid, state.relayNames)));
          state.pending.push(
            p.then(
              () => undefined,
              () => undefined,
            ),
          );
          return p;
        }
        // vetted clean in an earlier session: the vetted message is the server's, whose header rules
        // changed nothing (or it would not be clean), so the server's header after them is the vetted one
        if (uid !== null && this.storedClean(uid)) return this.headerRules(resp.seq, resp.items, dropUid, state.relayNames);
        // vetted in an earlier session and changed: the header of the sanitised message, from the shared store
        if (uid !== null && this.storeIds()?.get(uid) === true) {
          const answer = this.storedAnswer(state, resp.seq, resp.items, uid);
          if (answer) return answer;
        }
        return this.headerRules(resp.seq, resp.items, dropUid, state.relayNames);
      },
      onTagged: (parts, h) => this.onDone(state, parts, h),
      withhold: (reason) => state.tempfail.push(reason),
    };
  }

  private headerRules(seq: number, items: FetchResponseItem[], dropUid: boolean, relayNames: ReadonlySet<string>): Buffer {
    const out: Buffer[] = [];
    for (const it of items) {
      if (dropUid && it.name === 'UID') continue;
      if (!isHeaderName(it.name)) {
        if (!relayNames.has(it.name)) continue;
        relayable(it);
        out.push(it.raw);
        continue;
      }
      if (!it.literal) {
        // a header section is a literal or NIL; a quoted or atom value is not what a server sends
        if (!/ NIL$/i.test(it.raw.toString('latin1')))
          throw new PosternError(ErrorCodes.UNVETTED_RESPONSE, `refusing to relay ${it.name.slice(0, 60)} that is not a literal`);
        out.push(it.raw);
        continue;
      }
      if (!isHeaderBlock(it.literal)) {
        throw new PosternError(ErrorCodes.UNVETTED_RESPONSE, 'refusing to relay a header section that is not a header block');
      }
      const rewritten = applyHeaderRules(it.literal, this.deps.policy, { add: !/FIELDS/.test(it.name) });
      out.push(rewritten.equals(it.literal) ? it.raw : literalItem(it.name, rewritten));
    }
    return buildFetchResponse(seq, out);
  }

  /**
   * The UIDs a FETCH set names, when postern can tell without asking: a UID set of explicit numbers
   * (each one is then required to be vetted, so a gap means a download), or any set (`*` included)
   * resolved through the seq -> UID map when that map knows every message of the mailbox. null: unknown.
   */
  private resolveSet(set: string, uidCommand: boolean): number[] | null {
    if (!/^[0-9*:,]+$/.test(set)) return null; // `$` (SEARCHRES) and anything else: unknown
    const uids = this.uids;
    const complete = uids !== null && this.knownUids === uids.length;
    const limit = Math.min(VERDICT_STORE_LIMITS.maxSetFromCache, complete ? Number.MAX_SAFE_INTEGER : MAX_CACHED_SET);
    if (complete && set === '1:*' && uids.length > 0 && uids.length <= limit && ascending(uids)) {
      // a poll's or a list sync's set: every message, in order (the map ascends, as a server's does)
      return uids.slice();
    }
    const out = new Set<number>();
    for (const range of set.split(',')) {
      const ends = range.split(':');
      if (ends.length > 2 || ends.some((e) => e === '')) return null;
      if (complete) {
        if (uids.length === 0) return null;
        const top = uidCommand ? uids[uids.length - 1]! : uids.length;
        const [a, b] = ends.map((e) => (e === '*' ? top : Number(e))) as [number, number | undefined];
        const lo = Math.min(a, b ?? a);
        const hi = Math.max(a, b ?? a);
        if (!uidCommand) {
          if (lo < 1 || hi > uids.length) return null; // the server answers BAD; nothing to save
          for (let q = lo; q <= hi; q++) {
            out.add(uids[q - 1]!);
            if (out.size > limit) return null;
          }
          continue;
        }
        // the mailbox's UIDs within [lo, hi]: binary search for the first, then walk
        let i = 0;
        let j = uids.length;
        while (i < j) {
          const m = (i + j) >> 1;
          if (uids[m]! < lo) i = m + 1;
          else j = m;
        }
        for (; i < uids.length && uids[i]! <= hi; i++) {
          out.add(uids[i]!);
          if (out.size > limit) return null;
        }
        continue;
      }
      if (ends.includes('*')) return null;
      const [a, b] = ends.map(Number) as [number, number | undefined];
      if (!a || b === 0) return null;
      const lo = Math.min(a, b ?? a);
      const hi = Math.max(a, b ?? a);
      if (!uidCommand) {
        // sequence numbers without a complete map: each must be known
        if (!uids || hi > uids.length) return null;
        for (let q = lo; q <= hi; q++) {
          const u = uids[q - 1]!;
          if (!u) return null;
          out.add(u);
          if (out.size > limit) return null;
        }
        continue;
      }
      if (hi - lo + 1 > limit) return null;
      for (let u = lo; u <= hi; u++) {
        out.add(u);
        if (out.size > limit) return null;
      }
    }
    return [...out];
  }

  /**
   * True when every message `set` names is vetted: in this session's cache, or — when the client
   * asks only for what a stored verdict answers (metadata, RFC822.SIZE, BODY, BODYSTRUCTURE, ENVELOPE,
   * top-level headers) — in the shared store with its metadata. Returns the UIDs to be read from the
   * store (in the order resolved; empty when the session's cache has them all), or null when not
   * every message is vetted.
   */
  private allCached(set: string, uidCommand: boolean, items: FetchItem[]): number[] | null {
    if (this.mailbox === null || this.uidValidity === null) return null;
    const uids = this.resolveSet(set, uidCommand);
    if (!uids || uids.length === 0) return null;
    const ids = this.storeAnswers(items) ? this.storeIds() : null;
    // the whole mailbox as the store holds it, nothing of it in the session's cache: every UID from the store
    if (ids !== null && this.cache.empty) {
      const shared = this.sharedStoredUids();
      if (shared !== null && sameNumbers(uids, shared.stored)) return uids.slice();
    }
    const fromStore: number[] = [];
    for (const u of uids) {
      if (this.cache.hasMessage(this.mailbox, this.uidValidity, u)) continue;
      if (ids?.get(u) === true) {
        fromStore.push(u);
        continue;
      }
      return null;
    }
    return fromStore;
  }

  /** Whether a stored verdict answers every item (metadata, RFC822.SIZE, BODY, BODYSTRUCTURE, ENVELOPE, top-level headers; BINARY.SIZE only when it is not vetted). */
  private storeAnswers(items: FetchItem[]): boolean {
    const vetMeta = this.deps.listener.inspect.vetOnMetadata;
    return items.every((i) => {
      const cls = itemInfo(i).cls;
      return cls === 'metadata' || cls === 'header' || (cls === 'content-metadata' && (i.name !== 'BINARY.SIZE' || !vetMeta));
    });
  }

  /**
   * A FETCH most of whose set is vetted (allCached failed on a few messages only): the UIDs to read from
   * the store (as allCached) and those neither cache holds, which a second, private FETCH
   * downloads and vets (CommandState.split). Only with the mailbox's whole seq -> UID map (the set's
   * UIDs are exactly the mailbox's), items the store answers, at least one message cached and at most
   * VERDICT_STORE_LIMITS.maxSplitMissing missing; otherwise null (the whole set is downloaded).
   */
  private splitCached(set: string, uidCommand: boolean, items: FetchItem[]): { fromStore: number[]; missing: number[] } | null {
    if (this.mailbox === null || this.uidValidity === null || this.uids === null || this.knownUids !== this.uids.length) return null;
    if (!this.storeAnswers(items)) return null;
    const uids = this.resolveSet(set, uidCommand);
    if (!uids || uids.length < 2) return null;
    const ids = this.storeIds();
    const fromStore: number[] = [];
    const missing: number[] = [];
    for (const u of uids) {
      if (this.cache.hasMessage(this.mailbox, this.uidValidity, u)) continue;
      if (ids?.get(u) === true) fromStore.push(u);
      else if (missing.push(u) > VERDICT_STORE_LIMITS.maxSplitMissing) return null;
    }
    if (missing.length === 0 || missing.length === uids.length) return null;
    return { fromStore, missing };
  }

  /**
   * The first half of a split FETCH completed: the second half (the missing messages, with a body),
   * or null (no split, or the first half did not complete OK: the client gets its answer as it is).
   */
  private secondHalf(state: CommandState, parts: Buffer[], head: ResponseHead): string | null {
    const split = state.split;
    // none of the missing messages exists (the first half returned none): its answer is the whole answer
    if (!split || split.second || head.keyword !== 'OK' || split.seen.size === 0) return null;
    split.second = true;
    split.first = Buffer.concat(parts);
    // the second half is an ordinary FETCH with a body: every response is downloaded, vetted and rendered
    state.fromCache = false;
    state.relayClean = false;
    state.pollLines = false;
    delete state.list;
    delete state.storeReads;
    return state.uidCommand ? `UID FETCH ${uidSet([...split.seen.keys()])} (${split.items})` : `FETCH ${uidSet([...split.seen.values()])} (${split.items})`;
  }

  /**
   * Whether every item is one whose server value is the vetted one for a message stored clean (the
   * server's message unchanged): metadata, RFC822.SIZE, and whole top-level header sections (after
   * the header rules). BODY, BODYSTRUCTURE, ENVELOPE of a changed message and BINARY.SIZE are
   * rendered by postern, whose bytes may differ from the server's: a client must see the same bytes
   * in every session, so those keep coming from the store.
   */
  private serverAnswersClean(items: FetchItem[]): boolean {
    const vetMeta = this.deps.listener.inspect.vetOnMetadata;
    return items.every((i) => {
      const cls = itemInfo(i).cls;
      if (cls === 'metadata') return true;
      if (cls === 'content-metadata') return !vetMeta || i.name === 'RFC822.SIZE';
      return cls === 'header' && !i.partial;
    });
  }

  /**
   * The response for `uid`, stored clean, from the server's own items: its RFC822.SIZE and header
   * sections (after the header rules, as headerRules() does), in the order render() writes them, so
   * the bytes are those of a session that vetted the message. null: the server's response lacks an
   * item asked for or carries one in a form postern does not relay (the store answers instead).
   * A server RFC822.SIZE other than the stored one means the server's message is not the one vetted:
   * the message is withheld (tempfail), logged as `message.changed` and its stored verdict forgotten,
   * so the next FETCH downloads and vets it.
   */
  private relayCleanResponse(state: CommandState, resp: FetchResponse, uid: number): Buffer[] | Buffer | null {
    const size = this.cleanSizeOf(uid);
    if (size === undefined) return null;
    let sizeItem: FetchResponseItem | undefined;
    // an item given twice is ambiguous: not answered from the server (strictest reading)
    for (const it of resp.items) if (it.name === 'RFC822.SIZE') sizeItem = sizeItem ? NOT_ONCE : it;
    if (sizeItem === NOT_ONCE) return null;
    if (!sizeItem || sizeItem.atom === undefined || !/^\d{1,15}$/.test(sizeItem.atom)) return null;
    if (sizeItem.atom !== String(size)) {
      this.deps.log.warn(
        { event: 'message.changed', uid, mailbox: this.mailbox, size: Number(sizeItem.atom), stored: size },
        'upstream reports another size for a UID stored clean; withholding it, vetting again on the next fetch',
      );
      this.forgetStored(uid);
      state.tempfail.push(`UID ${uid}`);
      return Buffer.alloc(0);
    }
    let headers: Map<string, Buffer> | null = null;
    const rules = this.deps.policy.headers;
    for (const item of state.items) {
      const info = itemInfo(item);
      if (info.cls !== 'header' || headers?.has(info.upper)) continue;
      let it: FetchResponseItem | undefined;
      for (const x of resp.items) if (x.name === info.upper) it = it ? NOT_ONCE : x;
      if (it === NOT_ONCE) return null;
      // a header section is a literal holding a header block; a clean message's has CRLF line ends
      if (!it?.literal || !isHeaderBlock(it.literal) || hasBareLf(it.literal)) return null;
      const add = !/FIELDS/.test(info.upper);
      // no rule to apply (the default policy): applyHeaderRules would return the block itself
      const ruled = rules.strip.length === 0 && (!add || rules.add.length === 0) ? it.literal : applyHeaderRules(it.literal, this.deps.policy, { add });
      (headers ??= new Map()).set(info.upper, ruled);
    }
    return this.renderWith(state, resp.seq, resp.items, 'clean', (item) => {
      if (item.name === 'RFC822.SIZE' && !item.section) return Buffer.from(`RFC822.SIZE ${size}`, 'latin1');
      const info = itemInfo(item);
      const h = headers?.get(info.upper);
      if (h) return literalItem(info.name, h);
      throw new PosternError(ErrorCodes.INTERNAL, `a clean message cannot be relayed with ${info.name}`);
    });
  }

  /**
   * A poll's response for a message stored clean, without parsing and rebuilding it: when the server's
   * line is exactly `* seq FETCH (UID uid RFC822.SIZE size)` (canonical numbers, nothing else) and
   * `size` is the stored one, that line is byte for byte what relayCleanResponse (and a session that
   * vetted the message) writes: UID first, then RFC822.SIZE, no FLAGS. A message stored altered (with
   * metadata) gets that line with its stored sanitised size, as renderStored writes it. Anything else
   * (another size for a clean one, a message of the session's cache, another shape): null, the
   * general path decides.
   */
  private pollLine(line: Buffer): Buffer | null {
    const m = this.pollScratch;
    if (pollLineAt(line, 0, m) !== line.length || this.mailbox === null || this.uidValidity === null) return null;
    const answer = this.pollAnswer(m, this.mailbox, this.uidValidity, this.storeIds());
    return answer === SAME_LINE ? line : answer;
  }

  /**
   * pollLine's decision for a line of these numbers, with the selected mailbox and the session's index
   * of the store (storeIds()), which pollRun looks up once for a run of lines (nothing a line does
   * changes them): SAME_LINE (the server's line is the answer), the answer (an altered message's line
   * with its stored size), or null (the general path decides). The sequence number's UID is learnt
   * when it answers.
   */
  private pollAnswer(m: PollLine, mailbox: string, uidValidity: number, ids: ReadonlyMap<number, boolean> | null): Buffer | typeof SAME_LINE | null {
    const { seq, uid } = m;
    if (this.cache.hasMessage(mailbox, uidValidity, uid)) return null;
    // stored with metadata (storeIds), as cleanSizeOf and the altered branch below read it
    if (ids === null || ids.get(uid) !== true) return null;
    const size = this.cleanSizeIn(ids, uid);
    if (size === undefined) {
      // altered (or stored with another size): its sanitised size from the session's index of the
      // store, as renderStored writes it (UID from the server, the stored RFC822.SIZE, which is the
      // sanitised message's length): no store read per message; the server's size is not used
      const out = this.storeIndex!.maps.storedSize.get(uid);
      if (out === undefined) return null;
      this.learnUid(seq, uid);
      return Buffer.from(`* ${seq} FETCH (UID ${uid} RFC822.SIZE ${out})\r\n`, 'latin1');
    }
    if (size !== m.size) return null;
    this.learnUid(seq, uid);
    return SAME_LINE;
  }

  /**
   * The batch path of a poll or a list sync (InterceptedCommand.responseRun): the responses from `start`
   * of the upstream's bytes that pollLine (pollRun) or listLines (listRun) answer, up to the first they
   * do not, one beyond `limits` or one not complete in `data`, each decided exactly as it is one
   * response at a time; their answers go to `out` in order. Returns the index after the last one taken.
   */
  private responseRun(state: CommandState, data: Buffer, start: number, limits: RunLimits, out: Buffer[]): number {
    if (state.pollLines) return this.pollRun(data, start, limits.maxLine, out);
    if (state.list !== undefined) return this.listRun(state, state.list, data, start, limits, out);
    return start;
  }

  /** responseRun of a poll: runs of the server's lines as views of `data`, an altered message's line as its own. */
  private pollRun(data: Buffer, start: number, maxLine: number, out: Buffer[]): number {
    if (this.mailbox === null || this.uidValidity === null) return start;
    const mailbox = this.mailbox;
    const uidValidity = this.uidValidity;
    const ids = this.storeIds();
    const m = this.pollScratch;
    let pos = start;
    let same = start;
    while (pos < data.length) {
      const end = pollLineAt(data, pos, m);
      if (end < 0 || end - pos > maxLine) break;
      const answer = this.pollAnswer(m, mailbox, uidValidity, ids);
      if (answer === null) break;
      if (answer !== SAME_LINE) {
        if (pos > same) out.push(data.subarray(same, pos));
        out.push(answer);
        same = end;
      }
      pos = end;
    }
    if (pos > same) out.push(data.subarray(same, pos));
    return pos;
  }

  /**
   * responseRun of a list sync: the responses listAnswer answers, the server's as one view of `data`
   * per stretch between the answers of messages the policy changed (each its own pieces). A response
   * is taken as the framer reads it: its first line up to the first LF, ending in a synchronizing
   * `{n}` literal announcement, then n bytes, then the line `)` CRLF.
   */
  private listRun(state: CommandState, list: ListSync, data: Buffer, start: number, limits: RunLimits, out: Buffer[]): number {
    // the session's index of the store, looked at once for the run (nothing changes it between responses)
    const ids = this.storeIds();
    let pos = start;
    let same = start;
    while (pos < data.length) {
      const nl = data.indexOf(0x0a, pos);
      if (nl < 0 || nl + 1 - pos > limits.maxLine) break;
      const head = data.subarray(pos, nl + 1);
      // the head read once: a synchronizing literal of `count` (> 0) bytes follows it, or no response the run takes
      const m = this.listScratch;
      if (!listHeadAt(head, list.name, m) || m.count > limits.maxLiteral) break;
      const litEnd = nl + 1 + m.count;
      const end = litEnd + 3;
      if (end > data.length || end - pos > limits.maxResponse) break;
      if (data[litEnd] !== 0x29 || data[litEnd + 1] !== 0x0d || data[litEnd + 2] !== 0x0a) break;
      const answer = this.listAnswer(head, m, data.subarray(nl + 1, litEnd), ids, state);
      if (answer === null) break;
      if (answer !== SAME_LINE) {
        if (pos > same) out.push(data.subarray(same, pos));
        for (const piece of answer) out.push(piece);
        same = end;
      }
      pos = end;
    }
    if (pos > same) out.push(data.subarray(same, pos));
    return pos;
  }

  /**
   * A list sync's response for a message stored clean, without parsing and rebuilding it: when the
   * server's response is exactly `* seq FETCH (UID uid FLAGS (flags) RFC822.SIZE size NAME {n}` CRLF
   * header `)` CRLF, in canonical form, with the stored size, flags the choke point relays, NAME the
   * header section's name as postern writes it and a header block with CRLF line ends (no header rule
   * to apply: the policy has none), its pieces are byte for byte what relayCleanResponse writes.
   * Anything else: null, the general path decides.
   */
  private listLines(list: ListSync, parts: Buffer[]): Buffer[] | null {
    const tail = parts[2]!;
    if (tail.length !== 3 || tail[0] !== 0x29 || tail[1] !== 0x0d || tail[2] !== 0x0a) return null;
    const m = this.listScratch;
    if (!listHeadAt(parts[0]!, list.name, m)) return null;
    return this.listAnswer(parts[0]!, m, parts[1]!, this.storeIds(), null) === SAME_LINE ? parts : null;
  }

  /**
   * The answer to a list sync's response `head` (read by listHeadAt into `m`) literal `)` CRLF: SAME_LINE for a message
   * stored clean (the server's bytes are the answer); with `state`, the answer for a message stored
   * changed that the FETCH's memo of stored renderings holds (listStored); null: the general path decides.
   */
  private listAnswer(
    head: Buffer,
    m: ListHead,
    literal: Buffer,
    ids: ReadonlyMap<number, boolean> | null,
    state: CommandState | null,
  ): Buffer[] | typeof SAME_LINE | null {
    if (this.mailbox === null || this.uidValidity === null || m.count !== literal.length) return null;
    const uid = m.uid;
    if (this.cache.hasMessage(this.mailbox, this.uidValidity, uid)) return null;
    if (!relayableFlags(m.flagsTo === m.flagsFrom ? '' : head.toString('latin1', m.flagsFrom, m.flagsTo))) return null;
    const size = this.cleanSizeIn(ids, uid);
    if (size === undefined) return state?.list !== undefined ? this.listStored(state, state.list, head, m) : null;
    if (size !== m.size || !isCrlfHeaderBlock(literal)) return null;
    this.learnUid(m.seq, uid);
    return SAME_LINE;
  }

  private readonly listScratch: ListHead = { seq: 0, uid: 0, size: 0, count: 0, itemsFrom: 0, flagsFrom: 0, flagsTo: 0 };

  /**
   * A list sync's response (listAnswer: `head` read into `m`, flags the choke point relays) for a
   * message not stored clean: exactly what onFetch answers it with when the FETCH's memo of stored
   * renderings holds its RFC822.SIZE and header items (storedAnswer -> renderWith: the server's UID
   * and FLAGS as it wrote them, the stored sanitised size and header, in that order); the server's size
   * and header are not used, as there. null (the general path decides): not answered from the store,
   * a split FETCH, metadata not vetted, not in the memo.
   */
  private listStored(state: CommandState, list: ListSync, head: Buffer, m: ListHead): Buffer[] | null {
    if (!state.fromCache || state.split || !this.deps.listener.inspect.vetOnMetadata) return null;
    const kept = this.commandMemo(state)?.uids.get(m.uid);
    const size = kept?.items.get(list.sizeKey);
    const header = kept?.items.get(list.headerKey);
    if (size === undefined || header === undefined) return null;
    this.learnUid(m.seq, m.uid);
    return buildFetchResponseParts(m.seq, [head.subarray(m.itemsFrom, m.flagsTo + 1), size, header]);
  }

  /** The UIDs of `set` the store holds changed with metadata (ascending), or null when postern cannot tell the set's UIDs. */
  private storedOf(set: string, uidCommand: boolean): number[] | null {
    if (this.mailbox === null || this.uidValidity === null) return null;
    const ids = this.storeIds();
    if (!ids || ids.size === 0) return null;
    const uids = this.resolveSet(set, uidCommand);
    if (!uids) return null;
    const clean = this.storeIndex!.maps.clean;
    // the clean ones need no read (headerOnly answers them from the server's bytes)
    return uids.filter((u) => ids.get(u) === true && !clean.has(u)).sort((a, b) => a - b);
  }

  private onFetch(state: CommandState, parts: Buffer[]): Buffer | Buffer[] | Promise<Buffer | Buffer[]> | null {
    if (state.pollLines && parts.length === 1) {
      const line = this.pollLine(parts[0]!);
      if (line) return line;
    }
    if (state.list !== undefined && parts.length === 3) {
      const same = this.listLines(state.list, parts);
      if (same) return same;
    }
    const resp = parseFetchResponse(parts);
    const body = resp.items.find((i) => i.name === 'BODY[]');
    const uidItem = resp.items.find((i) => i.name === 'UID');
    const uid = uidItem?.atom ? Number(uidItem.atom) : null;
    if (uid !== null) this.learnUid(resp.seq, uid);
    const split = state.split;
    if (split && !split.second) {
      // the first half of a split FETCH: a message the second half downloads is answered there
      if (uid !== null && split.missing.has(uid)) {
        split.seen.set(uid, resp.seq);
        return Buffer.alloc(0);
      }
    } else if (split) {
      // the second half asked for the missing messages only, each with its UID: a message it did not
      // ask for (another UID, none) is never vetted nor relayed; the first half answered the others
      if (uid === null || !split.missing.has(uid)) return body?.literal !== undefined ? Buffer.alloc(0) : this.bodiless(state, resp, uid);
      // only a response with the message counts as its answer (not a FLAGS update)
      if (body?.literal !== undefined) split.answered.add(uid);
    }
    if (state.fromCache && uid !== null) {
      if (this.mailbox !== null && this.uidValidity !== null && this.cache.hasMessage(this.mailbox, this.uidValidity, uid))
        return this.renderVetted(state, resp, () => this.fromCache(uid), `UID ${uid}`);
      // the rendering is keyed by the UID the server put in this response, never by postern's seq map
      if (state.relayClean) {
        const relayed = this.relayCleanResponse(state, resp, uid);
        if (relayed !== null) return relayed;
      }
      const answer = this.storedAnswer(state, resp.seq, resp.items, uid);
      if (answer) return answer;
      state.tempfail.push(`UID ${uid}`);
      return Buffer.alloc(0);
    }
    if (!body || body.literal === undefined) return this.bodiless(state, resp, uid);
    const literal = body.literal;
    // vet and render inside the process-wide bound on message bytes in work (inspect/vet-gate.ts)
    const at = this.mailboxAt();
    return this.renderVetted(state, resp, () => this.vet(literal, uid, at), uid !== null ? `UID ${uid}` : `message ${resp.seq}`, literal.length);
  }

  /**
   * A FETCH response of an intercepted command without the message (and without a UID the caches
   * answer for): what a server sends on its own, a flag update (UID, FLAGS, MODSEQ), is relayed through
   * the choke point; anything else in it (an original RFC822.SIZE, BODYSTRUCTURE, ENVELOPE of a message
   * the policy may have changed) was never vetted: the response is not relayed and the message is
   * withheld (NO [UNAVAILABLE]).
   */
  private bodiless(state: CommandState, resp: FetchResponse, uid: number | null): Buffer | null {
    if (resp.items.every((i) => SELF_ITEMS.has(i.name))) return null;
    state.tempfail.push(uid !== null ? `UID ${uid}` : `message ${resp.seq}`);
    return Buffer.alloc(0);
  }

  /**
   * The rewritten response once the message is vetted; on a tempfail (or a cache miss, null) nothing, and `label` joins the tempfail list.
   * With `gateBytes` the vet and the rendering run inside processVetGate.
   */
  private renderVetted(
    state: CommandState,
    resp: FetchResponse,
    vetted: () => Promise<Vetted | { tempfail: string } | null>,
    label: string,
    gateBytes?: number,
  ): Promise<Buffer | Buffer[]> {
    const job = () =>
      vetted().then((v) => {
        if (!v || 'tempfail' in v) {
          state.tempfail.push(label);
          return Buffer.alloc(0);
        }
        return this.render(state, resp.seq, resp.items, v);
      });
    const p = gateBytes === undefined ? job() : processVetGate.run(gateBytes, job);
    state.pending.push(
      p.then(
        () => undefined,
        () => undefined,
      ),
    );
    return p;
  }

  private async fromCache(uid: number): Promise<Vetted | null> {
    if (this.mailbox === null || this.uidValidity === null) return null;
    return this.cache.get(VettedCache.key(this.mailbox, this.uidValidity, uid));
  }

  private async vet(raw: Buffer, uid: number | null, at: MailboxAt): Promise<Vetted | { tempfail: string }> {
    // the mailbox changed since the message arrived: no cache is keyed by the mailbox selected now
    const key =
      uid !== null && at.epoch === this.mailboxEpoch && this.mailbox !== null && this.uidValidity !== null
        ? VettedCache.key(this.mailbox, this.uidValidity, uid)
        : null;
    if (key) {
      const hit = await this.cache.get(key);
      if (hit) return hit;
      const inflight = this.inflightVets.get(key);
      if (inflight) return inflight;
    }
    const work = this.vetFresh(raw, uid, at);
    if (key) this.inflightVets.set(key, work);
    try {
      const v = await work;
      // kept for later fetches; rendering does not wait for a spill to disk (the entry is usable at once).
      // A message the shared store now holds clean is forgotten rather than spilled: a later fetch
      // serves it from the upstream's bytes after the store's digest check, as in a new session
      if (key && !('tempfail' in v) && !v.verdict.transient)
        this.cache.set(key, v, { forgettable: uid !== null && v.verdict.status === 'clean' && this.storedClean(uid) }).catch(() => {
          // set() handles a full disk or a missing spill dir itself (the entry is forgotten); nothing else rejects
        });
      return v;
    } finally {
      if (key) this.inflightVets.delete(key);
    }
  }

  /**
   * Vets a message not in the session's cache. A verdict stored clean by an earlier session is used
   * when the upstream's bytes have the stored digest (the bytes are then served as they are); so is
   * one stored altered whose sanitised content was kept, while the original is still quarantined
   * (altered-store.ts: that content is served); a digest mismatch forgets the stored verdict and vets
   * again. A fresh verdict is stored when the signature version did not change while it was made.
   */
  private async vetFresh(raw: Buffer, uid: number | null, at: MailboxAt): Promise<Vetted | { tempfail: string }> {
    const k = uid !== null && at.epoch === this.mailboxEpoch ? this.storeKey() : null;
    if (k && uid !== null) {
      // asked of the store itself: another process may have stored it after this session read its index
      const stored = this.storeGet(uid);
      if (stored) {
        const digest = this.digestOf(raw);
        const where = { mailbox: this.mailbox, uidValidity: this.uidValidity, uid };
        if (stored.digest === digest && stored.status === 'clean') {
          logServed(this.deps.log, where, raw.length, stored.sizeOut, stored);
          return this.cleanFromStore(raw, stored);
        }
        if (stored.digest === digest && isAltered(stored.status)) {
          const content = await storedAlteredContent(this.deps.shared!.store, this.deps.engine.quarantine, k, String(uid), stored, digest, (err) =>
            this.storeFailed(err),
          );
          if (content !== null) {
            logServed(this.deps.log, where, raw.length, content.length, stored);
            return this.alteredFromStore(content, stored);
          }
        }
        if (stored.digest !== digest) {
          this.deps.log.warn(
            { event: 'message.changed', uid, mailbox: this.mailbox },
            'upstream served different bytes for a UID with a stored verdict; vetting again',
          );
          try {
            this.deps.shared!.store.delete(k.scope, String(uid), k.basis);
            this.setIndexEntry(k, uid, false, null);
          } catch (err) {
            this.storeFailed(err);
          }
        }
      }
    }
    // read before the vet begins (not needed for an answer from the store): a verdict made across a clear is not stored
    const since = k ? this.storeClears() : null;
    const v = await this.slots.run(() => this.runEngine(raw, uid, at));
    if (k && uid !== null && !('tempfail' in v) && at.epoch === this.mailboxEpoch) {
      const now = this.storeKey();
      if (now && now.scope === k.scope && now.basis.signatures === k.basis.signatures && since !== null) this.storePut(uid, k, raw, v, since);
    }
    return v;
  }

  /** A message stored clean, the very bytes it was judged on: served as they are, without the engine. */
  private cleanFromStore(raw: Buffer, sv: StoredVerdict): Vetted {
    // the stored verdict was made on these very bytes (same SHA-256), and a clean message's output is its
    // input's CRLF form: the stored output size says whether the input has a bare LF, without a scan
    const output = crlfFormOf(raw, sv.sizeOut);
    const l = this.deps.policy.limits;
    // the part map is read when an item needs it (BODY[] does not): the engine's reading, with the policy's limits
    return {
      output,
      structure: { later: { maxDepth: l.maxDepth, maxParts: l.maxParts, maxHeaderSize: l.maxHeaderSize } },
      verdict: verdictOfStored(this.deps.policy.name, sv),
    };
  }

  /** A message stored altered, the very bytes it was judged on: its stored sanitised content, without the engine. */
  private alteredFromStore(content: Buffer, sv: StoredVerdict): Vetted {
    const l = this.deps.policy.limits;
    // the engine's part map of an altered output is this reading of it (policy/engine.ts result())
    return {
      output: content,
      structure: { later: { maxDepth: l.maxDepth, maxParts: l.maxParts, maxHeaderSize: l.maxHeaderSize } },
      verdict: verdictOfStored(this.deps.policy.name, sv),
    };
  }

  /** The content-hash verdict table (src/inspect/content-verdict.ts), looked up on first use; null: not used. */
  private contentMemo: ContentVerdicts | null | undefined;
  /** SHA-256 (hex) of the downloaded messages being vetted, so one message is hashed once (stored-verdict check, content table, store write). */
  private readonly digests = new WeakMap<Buffer, string>();
  private digestOf(raw: Buffer): string {
    let d = this.digests.get(raw);
    if (d === undefined) {
      // a large message was hashed as it arrived (MessageAssembler): the digest of these very bytes
      d = assembledDigest(raw);
      if (d !== undefined) messageDigestStats.asArriving++;
      else {
        d = sha256(raw);
        messageDigestStats.after++;
      }
      this.digests.set(raw, d);
    }
    return d;
  }
  private contentVerdicts(): ContentVerdicts | null {
    if (this.contentMemo === undefined)
      this.contentMemo = contentVerdictsFor(this.deps.shared, this.deps.listener, this.deps.policy, this.deps.engine, (err) => this.storeFailed(err));
    return this.contentMemo;
  }

  private async runEngine(raw: Buffer, uid: number | null, at: MailboxAt): Promise<Vetted | { tempfail: string }> {
    const l = this.deps.listener;
    const ctx = {
      listener: l.name,
      protocol: 'imap' as const,
      user: this.user ?? undefined,
      mailbox: at.mailbox ?? undefined,
      uidValidity: at.uidValidity ?? undefined,
      uid: uid ?? undefined,
    };
    try {
      // the same bytes judged clean and unchanged for anyone under this policy and signatures: the engine does not run
      const engine = () => inspectMessage(raw, this.deps.policy, ctx, this.deps.engine);
      const cv = this.contentVerdicts();
      const { result: r, fromContentCache } = cv
        ? await cv.inspect(raw, engine, () => this.digestOf(raw))
        : { result: await engine(), fromContentCache: false };
      const v = r.verdict;
      this.deps.log.info(
        {
          event: 'message.inspected',
          mailbox: at.mailbox,
          uidValidity: at.uidValidity,
          uid,
          ...(fromContentCache ? { cached: 'content' } : {}),
          bytes: v.sizeIn,
          bytesOut: v.sizeOut,
          verdict: v.status,
          rules: v.hits.map((h) => ({ part: h.part, rule: h.rule, action: h.action, reason: h.reason, filename: h.filename, type: h.declaredType })),
          viruses: v.viruses,
          quarantineId: v.quarantineId,
          quarantineFailed: v.quarantineFailed,
          scanMs: Math.round(v.scanMs),
        },
        'message inspected',
      );
      if (v.status === 'tempfail') return { tempfail: v.hits.find((h) => h.action === 'tempfail')?.reason ?? 'scanner unavailable' };
      // Nothing altered is served unless its original is safe in quarantine: the message stays upstream untouched and
      // the client is told to try again (the same path as a scanner outage).
      if (v.quarantineFailed && v.status !== 'clean') return { tempfail: 'the original could not be quarantined' };
      return { output: r.output, structure: r.structure, verdict: v };
    } catch (err) {
      this.deps.log.error({ event: 'message.withheld', uid, err: logErr(err) }, 'inspection failed; withholding message');
      return { tempfail: `inspection failed: ${(err as Error).message}` };
    }
  }

  /** Renders the client's items from the session cache's sanitised message. */
  private render(state: CommandState, seq: number, serverItems: FetchResponseItem[], v: Vetted): Buffer[] {
    return this.renderWith(state, seq, serverItems, v.verdict.status, (item) => renderItemParts(v.output, v.structure, item));
  }

  /**
   * Renders the client's items from a verdict stored by an earlier session: the rendered RFC822.SIZE,
   * BODY, BODYSTRUCTURE and ENVELOPE of the sanitised message, and its header block for header
   * sections. A request made of such items gets here (allCached, headerOnly); so may a response the
   * server sent on its own during a FETCH answered from the session's cache, naming another stored
   * message. null when an item is not of those (the message is then withheld, never guessed).
   */
  private renderStored(state: CommandState, seq: number, serverItems: FetchResponseItem[], sv: StoredVerdict, uid: number): Buffer[] | null {
    // the stored block is a header only: read by the part tree's own header reader, without the rest of a parse
    let header: PartMap | null = null;
    let missing = false;
    const made: Array<[string, Buffer]> = [];
    const out = this.renderWith(state, seq, serverItems, sv.status, (item) => {
      let r: Buffer;
      if (itemInfo(item).cls === 'header') {
        header ??= parseHeaderBlock(sv.header!) as unknown as PartMap;
        r = renderItem(sv.header!, header, item);
      } else {
        const stored = !item.section ? sv.items?.[item.name as StoredItemName] : undefined;
        if (!stored) {
          missing = true;
          return EMPTY;
        }
        r = stored;
      }
      made.push([renderingKey(item), r]);
      return r;
    });
    if (missing) return null;
    if (made.length > 0) this.keepRenderings(state, uid, sv.status, made);
    return out;
  }

  /**
   * The answer for `uid` from its stored verdict: from the memo of stored renderings when it holds
   * every item the answer renders (no store read), else read from the store (storeRead, storeGet) and
   * rendered by renderStored(), which keeps what it rendered. null: the store holds no verdict with
   * metadata for it, or one that cannot render an item asked for (BODY[] of a response the server sent
   * on its own).
   */
  private storedAnswer(state: CommandState, seq: number, serverItems: FetchResponseItem[], uid: number): Buffer[] | null {
    const kept = this.commandMemo(state)?.uids.get(uid);
    if (kept) {
      let missing = false;
      const out = this.renderWith(state, seq, serverItems, kept.status, (item) => {
        const r = kept.items.get(renderingKey(item));
        if (r !== undefined) return r;
        missing = true;
        return EMPTY;
      });
      if (!missing) return out;
    }
    const stored = state.storeReads ? this.storeRead(state.storeReads, uid) : this.storeGet(uid);
    if (!stored?.header || !stored.items) return null;
    return this.renderStored(state, seq, serverItems, stored, uid);
  }

  /**
   * The memo of stored renderings (storedRenderings) `state`'s FETCH answers from, looked up once per
   * FETCH: the one bound to the session's index and the store as it is now, made (replacing the one
   * of another index or an older store) when there is none; and, per message, only while the
   * session's index is still that answer (a correction makes it the session's own). null: the store
   * is not in use or the session's index is its own.
   */
  private commandMemo(state: CommandState): RenderingMemo | null {
    if (state.renderMemo === undefined) state.renderMemo = this.renderingMemo();
    const memo = state.renderMemo;
    const idx = this.storeIndex;
    return memo !== null && idx !== null && !idx.own && memo.view.deref() === idx.maps ? memo : null;
  }

  private renderingMemo(): RenderingMemo | null {
    if (this.storeIds() === null) return null;
    const idx = this.storeIndex;
    if (!idx || idx.own) return null;
    let token: string;
    try {
      token = this.deps.shared!.store.changeToken();
    } catch (err) {
      this.storeFailed(err);
      return null;
    }
    // an index read before the store's last change is not the store's answer now: such a session reads the store
    if (idx.token !== token) return null;
    return storedRenderings.bind(renderingsKey(idx.scope, idx.basis), idx.maps, token);
  }

  /** Keeps what renderStored() rendered for `uid` in the memo of `state`'s FETCH (StoredRenderings.keep). */
  private keepRenderings(state: CommandState, uid: number, status: Verdict['status'], made: Array<[string, Buffer]>): void {
    const memo = this.commandMemo(state);
    if (memo && this.storeIndex !== null) storedRenderings.keep(renderingsKey(this.storeIndex.scope, this.storeIndex.basis), memo, uid, status, made);
  }

  /** Renders the client's items in Dovecot's order: UID (UID FETCH), buffered items, implicit FLAGS, body items. */
  private renderWith(
    state: CommandState,
    seq: number,
    serverItems: FetchResponseItem[],
    status: Verdict['status'],
    content: (item: FetchItem) => Buffer | Buffer[],
  ): Buffer[] {
    const byName = new Map(serverItems.map((i) => [i.name, i]));
    // items as pieces (views of the message and of the server's response): never copied, the output queue writes the pieces
    const out: Array<Buffer | readonly Buffer[]> = [];
    const emitted = new Set<string>();
    const vetMeta = this.deps.listener.inspect.vetOnMetadata;
    const emitServer = (name: string) => {
      const it = byName.get(name);
      if (it && !emitted.has(name)) {
        relayable(it);
        out.push(it.rawParts);
        emitted.add(name);
      }
    };
    // the ENVELOPE of a message the policy changed is the changed message's (a tagged subject, a
    // notice's header): it agrees with BODY[HEADER] and BODY[] in every fetch order
    const ownEnvelope = status !== 'clean';
    const emitItem = (item: FetchItem) => {
      const { cls, upper: name } = itemInfo(item);
      if ((cls === 'metadata' && !(ownEnvelope && isEnvelope(item))) || (cls === 'content-metadata' && !vetMeta)) {
        emitServer(name);
        return;
      }
      if (emitted.has(name)) return;
      try {
        out.push(content(item));
        emitted.add(name);
      } catch (err) {
        if (isPosternError(err) && err.code === 'E_MIME_MALFORMED') state.failedCte = true;
        else throw err;
      }
    };
    if (state.uidCommand) emitServer('UID');
    for (const item of state.items) if (isBuffered(item)) emitItem(item);
    if (!state.items.some((i) => i.name === 'FLAGS')) emitServer('FLAGS');
    for (const item of state.items) if (!isBuffered(item)) emitItem(item);
    return buildFetchResponseParts(seq, out);
  }

  /**
   * The client's tagged response once every rendering of the command settled (their tempfails are
   * known then): at once when none is pending (a FETCH answered from the caches), so it is written in
   * the same turn as the responses before it, else when they settled.
   */
  private onDone(state: CommandState, parts: Buffer[], head: ResponseHead): Buffer | Promise<Buffer> {
    if (state.pending.length === 0) return this.done(state, parts, head);
    return Promise.all(state.pending).then(() => this.done(state, parts, head));
  }

  private done(state: CommandState, parts: Buffer[], head: ResponseHead): Buffer {
    const split = state.split;
    if (split?.second) {
      // the second half (postern's tag) decides: OK gives the client the first half's completion
      if (head.keyword !== 'OK') {
        const n = split.missing.size;
        return Buffer.from(
          `${state.tag} NO [UNAVAILABLE] postern: the server did not return ${n} message${n === 1 ? '' : 's'} of this FETCH; try again later\r\n`,
        );
      }
      parts = [split.first!];
      // a message the first half showed exists but the second half did not return (expunged meanwhile, or a server that lies)
      for (const u of split.seen.keys()) if (!split.answered.has(u)) state.tempfail.push(`UID ${u}`);
    }
    if (head.keyword === 'OK' && state.tempfail.length > 0) {
      const list = state.tempfail.slice(0, 10).join(', ') + (state.tempfail.length > 10 ? ', ...' : '');
      return Buffer.from(`${state.tag} NO [UNAVAILABLE] postern: could not scan ${list}; try again later\r\n`);
    }
    if (head.keyword === 'OK' && state.failedCte) {
      return Buffer.from(`${state.tag} NO [UNKNOWN-CTE] Unknown Content-Transfer-Encoding\r\n`);
    }
    return Buffer.concat(parts);
  }
}

/** Index of `x` in the ascending array `xs`, or -1. */
function ascendingIndexOf(xs: readonly number[], x: number): number {
  let lo = 0;
  let hi = xs.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const m = xs[mid]!;
    if (m === x) return mid;
    if (m < x) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}

function isEnvelope(item: FetchItem): boolean {
  return item.name === 'ENVELOPE' && !item.section;
}

/**
 * `inspect.vet_on_envelope`: `auto` (or absent) is on when the policy scores spam and there is a
 * spam scanner (a tagged subject must not differ between a list sync and the vetted message).
 */
export function resolveVetOnEnvelope(setting: boolean | 'auto' | undefined, policy: CompiledPolicy, engine: EngineDeps): boolean {
  if (typeof setting === 'boolean') return setting;
  return policy.spam.enabled && !!engine.spamScanner;
}

/** The header fields an ENVELOPE is made of (RFC 9051 7.5.2). */
const ENVELOPE_FIELDS = ['Date', 'Subject', 'From', 'Sender', 'Reply-To', 'To', 'Cc', 'Bcc', 'In-Reply-To', 'Message-ID'];

/**
 * Whether the policy's header rules can change an ENVELOPE: a strip rule whose name matches one of its
 * fields, or an added field of those names. The server's ENVELOPE is then not relayed: it would show a
 * stripped Reply-To (attacker's review of the render path); the message is vetted, as with
 * vet_on_envelope, and the ENVELOPE rendered from the sanitised header.
 */
export function envelopeRuled(policy: CompiledPolicy): boolean {
  return ENVELOPE_FIELDS.some(
    (f) => policy.headers.strip.some((r) => r.name.test(f)) || policy.headers.add.some((a) => a.name.toLowerCase() === f.toLowerCase()),
  );
}

/** Ends the session (BYE, E_UNVETTED_RESPONSE) when a server item postern would relay as written is not plain metadata. */
function relayable(item: FetchResponseItem): void {
  const why = checkRelayedFetchItem(item);
  if (why) throw new PosternError(ErrorCodes.UNVETTED_RESPONSE, `refusing to relay ${why}`);
}

/**
 * A header section as a server returns it: header fields and their continuation lines, then either
 * nothing more or one empty line that ends it. Anything after the empty line (a body), a NUL, or a line
 * that is neither a field nor a continuation means it is not a header block.
 */
/**
 * Flag lists (the text between FLAGS' parentheses) the choke point relays (checkRelayedFetchItem),
 * remembered: a list sync repeats a handful of them thousands of times. Only accepted lists are kept,
 * at most VERDICT_STORE_LIMITS.flagListsKept (then the memo starts over); the check is a pure function
 * of the text.
 */
const relayableFlagLists = new Set<string>();
function relayableFlags(list: string): boolean {
  if (relayableFlagLists.has(list)) return true;
  if (checkRelayedFetchItem({ name: 'FLAGS', raw: Buffer.from(`FLAGS (${list})`, 'latin1') }) !== null) return false;
  if (relayableFlagLists.size >= VERDICT_STORE_LIMITS.flagListsKept) relayableFlagLists.clear();
  relayableFlagLists.add(list);
  return true;
}

/**
 * `isHeaderBlock(data) && !hasBareLf(data)` in one pass over the bytes (a list sync's header section
 * of a message stored clean, listLines): no NUL; every line ends with CRLF (the last one may lack its
 * line end; one CR before it is its line end too, as isHeaderBlock reads it) and holds no other CR; an
 * empty line only at the end; a continuation line (SP/TAB) never first; every other line begins with
 * a field name and a colon. test/inspect/crlf-header-block.test.ts holds it to the two-pass reading.
 */
export function isCrlfHeaderBlock(d: Buffer): boolean {
  const n = d.length;
  let start = 0;
  let first = true;
  while (start < n) {
    let k = start;
    let cr = -1;
    for (; k < n; k++) {
      const c = d[k]!;
      if (c === 0x0a) break;
      if (c === 0) return false;
      if (c === 0x0d && cr < 0) cr = k;
    }
    let end: number;
    if (k < n) {
      // an LF: only as the end of CRLF
      if (k === start || d[k - 1] !== 0x0d) return false;
      end = k - 1;
    } else end = d[n - 1] === 0x0d ? n - 1 : n;
    if (cr >= 0 && cr < end) return false;
    if (end === start) return k >= n - 1;
    const c0 = d[start]!;
    if (c0 === 0x20 || c0 === 0x09) {
      if (first) return false;
    } else {
      let f = start;
      while (f < end && d[f]! >= 0x21 && d[f]! <= 0x7e && d[f] !== 0x3a) f++;
      if (f === start || f >= end || d[f] !== 0x3a) return false;
    }
    first = false;
    start = k + 1;
  }
  return true;
}

export function isHeaderBlock(data: Buffer): boolean {
  if (data.includes(0)) return false;
  const text = data.toString('latin1');
  const lines = text.split('\n');
  // a trailing LF leaves an empty last element
  if (lines[lines.length - 1] === '') lines.pop();
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.replace(/\r$/, '');
    if (line === '') return i === lines.length - 1;
    if (line.includes('\r')) return false;
    if (/^[ \t]/.test(line)) {
      if (i === 0) return false;
      continue;
    }
    if (!/^[!-9;-~]+:/.test(line)) return false;
  }
  return true;
}

function isHeaderName(name: string): boolean {
  return name === 'RFC822.HEADER' || /^BODY\[HEADER(\.FIELDS(\.NOT)? \(.*\))?\]/.test(name);
}

/**
 * `NAME {n}` CRLF data for a relayed header section, written by protocol/imap/write.ts. What the
 * writer refuses to write (a NUL: no literal carries one) is not relayed in any other form: the
 * session ends with BYE (E_UNVETTED_RESPONSE), as for any upstream response postern cannot vet.
 */
function literalItem(name: string, data: Buffer): Buffer {
  try {
    return literalBytes(data, { head: `${name} ` });
  } catch (err) {
    if (isPosternError(err) && err.code === ErrorCodes.PROTOCOL) {
      throw new PosternError(ErrorCodes.UNVETTED_RESPONSE, `refusing to relay ${name.slice(0, 60)}: ${err.message}`);
    }
    throw err;
  }
}
