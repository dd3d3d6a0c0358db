/**
 * The IMAP relay phase, after the upstream login: both directions framed, nothing forwarded that postern
 * does not fully understand.
 * - Client -> upstream: every command is parsed whole by the grammar (protocol/imap/command.ts) and what
 *   goes upstream is postern's serialisation of that parse; anything else gets BAD. Everything sent
 *   upstream passes one ordered gate, so a synchronizing literal holds back what follows until the
 *   server's `+`. Inside IDLE only DONE is legal. postern's own commands (inject) go between two
 *   complete client commands under a private tag prefix. A lookup the interceptor asks for before a
 *   client command (prepare: a private `UID SEARCH`) goes only while nothing else is in flight; the
 *   command and every later one wait for it, and its SEARCH/ESEARCH answers never reach the client.
 *   The interceptor may also ask for one right after a client command completed with nothing else in
 *   flight (lookupAhead: after a SELECT), so the answer is usually back before the client's next
 *   command arrives; client input that does arrive meanwhile waits for it the same way.
 * - Upstream -> client: a table of in-flight tags says which response belongs to which command. The
 *   responses of an intercepted command (inline inspection) are held whole and rewritten by the
 *   interceptor; on an inspecting listener every other response passes the choke point
 *   (protocol/imap/response-screen.ts) whole. While an intercepted command is in flight the next client
 *   command waits (untagged FETCH responses of two commands cannot be told apart).
 */
import { ErrorCodes, PosternError } from '../../errors.js';
import { GATE_PAUSE_BYTES, HELD_ADMIT_MIN_BYTES, MAX_INLINE_LITERAL, MAX_VETS_IN_FLIGHT, OUTPUT_QUEUE_PAUSE_BYTES, UID_LOOKUP_LIMITS } from '../../limits.js';
import { type CommandGrammarOptions, type CommandPart, CommandReader, isIdleDone, type ParsedCommand, serialiseCommand } from '../../protocol/imap/command.js';
import { type Frame, type LineFrame, MessageAssembler, wholeMessageEnd } from '../../protocol/imap/framer.js';
import { type CommandHead, parseResponseHead, type ResponseHead, splitCapabilities } from '../../protocol/imap/parse.js';
import { screenResponse } from '../../protocol/imap/response-screen.js';
import { ENABLE_ALLOWED, filterCapabilities } from '../imap-capabilities.js';
import type { MemoryLease, SessionHost } from '../types.js';
import type { ClientOutput, Output } from './output.js';
import { b, CRLF, type SessionCore } from './state.js';

/** What a response taken by InterceptedCommand.responseRun may hold (what the framer and the held path take without a check of their own). */
export interface RunLimits {
  /** Bytes of a line with its CRLF (max_line_length + 2, at most the buffer limit). */
  maxLine: number;
  /** Bytes of a literal: below the size a held response waits for admission at (HELD_ADMIT_MIN_BYTES), at most max_literal_size. */
  maxLiteral: number;
  /** Bytes of a whole response (the buffer limit a held response is assembled under). */
  maxResponse: number;
}

/** A client command the interceptor takes over (inline inspection). */
export interface InterceptedCommand {
  /** Bytes to send upstream instead of the client's command (a complete command line, postern-tagged or client-tagged). */
  upstreamCommand: Buffer;
  /**
   * Called with every untagged response (all parts) while the command is in flight; return what to send
   * the client (or a promise of it), or null to forward unchanged. What is sent may be one buffer or its
   * pieces in order (a rendered FETCH response: head, views of the sanitised message, tail), written
   * without being concatenated.
   */
  onUntagged(parts: Buffer[], head: ResponseHead): Output | Promise<Output> | null;
  /**
   * A batch path for runs of untagged FETCH responses the interceptor answers at once (a poll's one-line
   * responses, a list sync's `line {n} literal )` ones: Relay.upstreamRun). Offered the upstream's bytes
   * from `start`, a response boundary: it takes the whole responses from there that it answers at once,
   * up to the first it would not (or one beyond `limits`, or one not complete in `data`), pushes their
   * answers to `out` in order and returns the index after the last response taken (`start`: none).
   * Each response it takes must be one the framer reads as one `* n FETCH` response (its lines and
   * literals within `limits`) and whose answer onUntagged would return at once (not null, not a
   * promise), with the same bytes and the same effects.
   */
  responseRun?(data: Buffer, start: number, limits: RunLimits, out: Buffer[]): number;
  /**
   * Called with the tagged completion of upstreamCommand before onTagged: return a further command
   * (without tag: the relay puts a private tag in front) to send upstream as the second half of this
   * client command, or null. Its untagged responses go to onUntagged like the first half's, the client
   * waits as before, and its tagged completion goes to onTagged (never here again: one continuation per
   * command). The first half's tagged response is not sent to the client.
   */
  continueWith?(parts: Buffer[], head: ResponseHead): string | null;
  /** Called with the tagged completion; returns the bytes for the client (or a promise). */
  onTagged(parts: Buffer[], head: ResponseHead): Buffer | Promise<Buffer>;
  /** A response of this command could not be held (memory budget): its message is withheld, the command must not complete OK. */
  withhold?(reason: string): void;
}

/**
 * A private command the interceptor wants answered before a client command is processed (prepare): a
 * UID lookup (`UID SEARCH ...`) so that a FETCH can be answered from the verdict store.
 */
export interface PreparedLookup {
  /** The command without its tag (postern's private tag is put in front), e.g. `UID SEARCH RETURN (ALL) 1:5000`. */
  command: string;
  /**
   * The private command completed: `head` is its tagged response (head.tag: the private tag), `untagged`
   * every `* SEARCH` / `* ESEARCH` response that arrived while it was in flight (at most
   * UID_LOOKUP_LIMITS.maxResponses are kept; more means the answer is not understood). Return a further lookup to
   * run before the client's command, or nothing.
   */
  done(head: ResponseHead, untagged: Buffer[][]): PreparedLookup | null | undefined;
}

export interface ImapInterceptor {
  /**
   * Offered every complete client command in the relay phase, after it passed the grammar: `line` is
   * postern's serialisation of it (what would go upstream) and `command` the parse. Return null to
   * forward it unchanged, or an InterceptedCommand to take it over.
   */
  intercept(head: CommandHead, line: Buffer, session: ImapSessionView, command?: ParsedCommand): InterceptedCommand | null;
  /**
   * Offered every client command in the relay phase before anything else: return a reason to refuse
   * it with a tagged BAD (it is never sent upstream), or null. `hasLiteral`: the command line
   * announces a literal, so it cannot be offered to intercept() whole.
   */
  refuse?(head: CommandHead, line: Buffer, hasLiteral: boolean, command?: ParsedCommand): string | null;
  /**
   * Offered a complete client command (after refuse, before intercept) when nothing is in flight
   * upstream: return a private lookup to run first (the client's command, and every later one, waits
   * until it completed; its SEARCH/ESEARCH responses never reach the client), or null.
   */
  prepare?(head: CommandHead, line: Buffer, session: ImapSessionView, command?: ParsedCommand): PreparedLookup | null;
  /**
   * Offered when the upstream became quiet right after a client command completed (nothing in flight
   * or queued, no client command being received or waiting, not in IDLE, no LOGOUT): return a private
   * lookup to run ahead of the client's next command, or null. Client input arriving while it is in
   * flight waits for it exactly as behind a prepare() lookup; its SEARCH/ESEARCH responses never reach
   * the client.
   */
  lookupAhead?(session: ImapSessionView): PreparedLookup | null;
  /**
   * Offered a client SELECT/EXAMINE right after it went upstream, when nothing was in flight or waiting
   * before it: return a private lookup to send right behind it (pipelined: its answer comes back with
   * the SELECT's), or null. Client input arriving while it is in flight waits for it exactly as behind a
   * lookup ahead; its SEARCH/ESEARCH responses never reach the client. Its done() runs after the
   * SELECT's tagged response (the server answers in order); it must itself make sure the SELECT
   * completed OK before it and the mailbox did not change since.
   */
  lookupBehind?(head: CommandHead, session: ImapSessionView): PreparedLookup | null;
  /**
   * Asked about every untagged FETCH response the choke point would relay (outside an intercepted
   * command, or one an intercepted command passed on): return a reason to refuse it (the session ends,
   * E_UNVETTED_RESPONSE), or null. For the items whose value postern vets (inspect.vet_on_metadata:
   * RFC822.SIZE, BODY, BODYSTRUCTURE, BINARY.SIZE), which no relayed command asks for.
   */
  screenFetch?(parts: Buffer[]): string | null;
  /** Notified of every untagged response forwarded in the relay phase (mailbox state tracking). */
  observeUntagged?(head: ResponseHead, parts: Buffer[] | null): void;
  /** Notified when a client command completes (tagged response). */
  observeTagged?(tag: string, command: string, head: ResponseHead): void;
  /** The session ended: release resources (cache files). */
  close?(): void;
  /**
   * When set: a literal of at least this many bytes in a held response that arrives in several reads
   * is hashed (SHA-256) as it arrives (MessageAssembler's `digestFrom`; the interceptor reads it with
   * assembledDigest()). For an interceptor that hashes every message it vets (a verdict store).
   */
  readonly digestLiteralsFrom?: number;
}

/** What an interceptor may see of the session. */
export interface ImapSessionView {
  readonly upstreamCapabilities: ReadonlySet<string>;
  readonly user: string | null;
  readonly upstreamName: string | null;
}

/** A command in flight upstream: a client's (relayed or intercepted) or postern's own (private). */
interface InFlight {
  tag: string;
  name: string;
  private: boolean;
  /** Private commands: resolves with the tagged response head. */
  done?: (head: ResponseHead, untagged: Buffer[][]) => void;
  untagged?: Buffer[][];
  intercepted?: InterceptedCommand;
  /** A private lookup (prepare): untagged SEARCH / ESEARCH responses belong to it. */
  lookup?: boolean;
  /** The second half of an intercepted command (InterceptedCommand.continueWith), under a private tag. */
  continued?: boolean;
}

/** A client command waiting for a private lookup (prepare) before it is processed. */
interface WaitingCommand {
  cmd: ParsedCommand;
  chunks: Buffer[];
  line: Buffer;
  head: CommandHead;
}

/** The upstream response being relayed: forwarded frame by frame, or held whole (assembler) for its target. */
interface UpstreamResponse {
  forward: boolean;
  target: InFlight | null;
  head: ResponseHead;
  assembler: MessageAssembler | null;
  /** Bytes of the process memory budget held for the assembled response. */
  lease?: MemoryLease | null;
  /** The budget refused to hold this (intercepted) response: the rest is dropped and the message withheld. */
  dropping?: boolean;
  /** Admissions of its announced literals (HELD_RESPONSE_PROCESS_BYTES), returned with the lease. */
  holds?: MemoryLease[];
  /** Waiting for the admission of a literal (the upstream is paused): its cancel. */
  holdWait?: (() => void) | null;
  /** `lease` is the session's pooled 0-byte lease (Relay.lineLease), not one asked of the budget for this response. */
  pooled?: boolean;
}

export class Relay {
  private readonly host: SessionHost;
  private readonly out: ClientOutput;
  private readonly inflight: InFlight[] = [];
  private upstreamResponse: UpstreamResponse | null = null;
  private pendingInjections: Array<{ command: string; done: (head: ResponseHead, untagged: Buffer[][]) => void }> = [];
  /** The client's LOGOUT is in flight: after its completion the session ends. */
  private logoutTag: string | null = null;
  /** The LOGOUT completed: the session ends once the client has its output; nothing more is read. */
  private loggedOut = false;
  /** The client command being received. */
  private cmd: ClientCommand | null = null;
  /** IDLE in progress: its tag, whether DONE went upstream, and whether the client sent something else. */
  private idle: { tag: string; doneSent: boolean; bad: boolean } | null = null;
  /** An intercepted command is in flight: client input waits (in the session's backlog). */
  private waitingForIntercept = false;
  /** A private lookup (prepare) is in flight before this client command: it and later client input wait. */
  private lookupFor: WaitingCommand | null = null;
  /** A private lookup asked for ahead of any client command (lookupAhead) is in flight: client input waits. */
  private lookingAhead = false;
  /** A client command just completed (tagged response relayed): offer lookupAhead once that response is done. */
  private offerAhead = false;
  /**
   * A 0-byte lease of the memory budget kept between held responses (heldFetchLine resizes it for each
   * one-line FETCH response; holdWholeResponse takes it instead of a new one and it comes back when the
   * response completed without a rendering that keeps it), so a list sync does not take a lease per message.
   */
  private lineLease: MemoryLease | null = null;
  /** Frames cut after a refused synchronizing literal were framed under a wrong assumption: drop them. */
  private rejectRestOfBatch = false;
  /**
   * Everything the relay phase sends upstream goes through this queue, so a synchronizing literal
   * (postern's own or the client's APPEND) holds back whatever follows it until the server's `+`.
   */
  private gate: GateItem[] = [];
  private gateBytes = 0;
  /** The gate waits for the server's `+` for this command (relayed to the client when `relay`). */
  private gateWaiting: { tag: string; relay: boolean } | null = null;

  /** What this relay last asked of host.pauseUpstream. */
  private upstreamPaused = false;
  /** The held response whose announced literal waits for admission (the upstream is paused meanwhile). */
  private memoryWait: UpstreamResponse | null = null;
  /** Upstream frames that arrived while waiting for admission (at most what the host had read before the pause), replayed in order. */
  private deferredFrames: Frame[] = [];
  private deferredBytes = 0;

  constructor(private readonly core: SessionCore) {
    this.host = core.host;
    this.out = core.out;
    this.out.onChange = () => this.updateUpstreamPause();
  }

  /**
   * Pipelined vetting with bounded memory: the upstream is read on while the output queue holds
   * renderings of an intercepted command still in flight (its later messages are assembled and handed
   * to the inspector, which vets up to MAX_VETS_IN_FLIGHT at once, while earlier ones are scanned), and
   * paused while the queue is not empty and
   * - more than MAX_VETS_IN_FLIGHT held responses wait in it (rendered or not): at most that many plus
   *   the one being assembled are held;
   * - more than OUTPUT_QUEUE_PAUSE_BYTES of plain output wait behind them (a slow reader, cache hits);
   * - or no intercepted command is in flight any more (its tagged response was read): answers to later
   *   commands wait upstream, and the host's hold deadline is absolute again.
   * An empty queue never pauses (writes go straight to the client; the host pauses the upstream when
   * the client does not read). Order is the queue's: a held response keeps its place. While the
   * upstream is read with renderings waiting, the client is paused instead (reason `vetting`).
   */
  private updateUpstreamPause(): void {
    const out = this.out;
    const intercepting = this.inflight.some((c) => c.intercepted);
    const pause = this.memoryWait !== null || (!out.idle && (out.held > MAX_VETS_IN_FLIGHT || out.queuedBytes > OUTPUT_QUEUE_PAUSE_BYTES || !intercepting));
    // While renderings wait and the upstream is still read, the client is not read either (its next
    // command would wait for the intercepted one anyway): so the host's hold deadline runs, from the
    // last upstream byte, and a rendering that never settles still ends the session (E_HOLD_TIMEOUT).
    this.core.setClientPause('vetting', out.held > 0 && intercepting && !pause);
    if (pause === this.upstreamPaused) return;
    this.upstreamPaused = pause;
    this.host.pauseUpstream(pause);
  }

  /** The relay phase begins (the login succeeded). */
  start(): void {
    // refresh postern's view of the upstream capabilities under its private tag namespace
    this.inject('CAPABILITY', (_head, untagged) => {
      for (const parts of untagged) {
        const h = parseResponseHead(parts[0]!);
        if (h.keyword === 'CAPABILITY') this.core.upstreamCapabilities = new Set(splitCapabilities(h.text).map((c) => c.toUpperCase()));
      }
      this.host.log.debug({ event: 'upstream.capabilities', capabilities: [...this.core.upstreamCapabilities] }, 'upstream capabilities refreshed');
    });
  }

  /** True while the client is in IDLE. */
  get idling(): boolean {
    return this.idle !== null;
  }

  /** An intercepted command is in flight (the next client command waits), or the client logged out. */
  get blocked(): boolean {
    return this.waitingForIntercept || this.loggedOut;
  }

  /** The upstream closed in the relay phase. */
  upstreamEnded(err?: Error): void {
    if (this.logoutTag) {
      // what is still queued for the client (a FETCH pipelined before the LOGOUT) goes out first
      this.out.whenFlushed(() => this.core.finish({ kind: 'upstream-closed', message: 'logout' }));
      return;
    }
    const reason = err ? `upstream connection failed: ${err.message}` : 'upstream closed the connection';
    // Output still queued behind a held response is dropped with the session (a BYE would queue behind it).
    if (this.out.idle && !this.out.midOutput) this.out.send(`* BYE [UNAVAILABLE] postern: ${reason}${CRLF}`);
    this.core.finish({ kind: 'upstream-closed', code: ErrorCodes.UPSTREAM_CLOSED, message: reason });
  }

  // ---------------------------------------------------------------- upstream -> client

  upstreamFrame(frame: Frame): void {
    // what is relayed as it is, and kept by nothing: a `* n FETCH` line on a pure relay (forwardsUntaggedFetch:
    // never with an interceptor, so heldFetchLine is not passed over), and the rest of a response forwarded as it is
    const asIs =
      frame.type === 'line' && frame.start
        ? this.memoryWait === null && frame.data[0] !== 0x2b /* + */ && this.forwardsUntaggedFetch(frame.data)
        : this.forwardsRest();
    if (asIs) {
      this.forwardFrame(frame);
      return;
    }
    // anything else may keep the frame's bytes (a held response, a parsed head, a deferred frame)
    this.inputKept = true;
    if (this.memoryWait) {
      // waiting for admission: nothing more is assembled (the announced message is not allocated yet)
      this.deferredFrames.push(frame);
      this.deferredBytes += frame.data.length;
      if (this.deferredBytes > this.host.listener.limits.maxBufferedBytes) {
        throw new PosternError(ErrorCodes.BUFFER_LIMIT, 'upstream sent more than the buffer limit while its reading was paused', {
          limit: this.host.listener.limits.maxBufferedBytes,
        });
      }
      return;
    }
    if (frame.type === 'line' && frame.start) {
      if (frame.data[0] === 0x2b /* + */) {
        this.upstreamContinuation(frame);
        return;
      }
      if (!frame.literal && this.core.interceptor !== null && this.heldFetchLine(frame)) return;
      if (!this.forwardsUntaggedFetch(frame.data)) this.beginUpstreamResponse(frame);
    }
    const cur = this.upstreamResponse;
    if (!cur) return;
    if (cur.assembler) {
      if (!cur.dropping && cur.lease && !cur.lease.resize(cur.assembler.bytes + frame.data.length)) {
        if (cur.pooled && cur.assembler.bytes === 0) {
          // the session's pooled lease: the budget is asked as the full path asks it (reserveMemory(0), which
          // logs a refusal, then the resize), so the decisions and log lines are those of a lease per response
          cur.pooled = false;
          cur.lease.release();
          cur.lease = this.host.reserveMemory?.(0, 'held IMAP response') ?? null;
          if (!cur.lease?.resize(frame.data.length)) this.refuseHold(cur);
        } else this.refuseHold(cur);
      }
      if (cur.dropping) {
        if (frame.type === 'line' && !frame.literal) this.upstreamResponse = null;
        return;
      }
      const parts = cur.assembler.add(frame);
      if (parts) {
        this.upstreamResponse = null;
        this.endHoldWait(cur);
        this.completeHeldResponse(cur.head, cur.target, parts, heldLease(cur), cur.lease ?? null);
      } else if (frame.type === 'line' && frame.literal && frame.literal.size >= HELD_ADMIT_MIN_BYTES) this.admitLiteral(cur, frame.literal.size);
      return;
    }
    if (cur.forward) {
      this.forwardFrame(frame);
      return;
    }
    if (frame.type === 'line' && !frame.literal) this.endUpstreamResponse();
  }

  /**
   * The response being read is forwarded as it is (its first line taken, no admission awaited): its
   * next frames are sent on, and forwardLiteral may take the bytes of its literal (ImapSession.onUpstreamData).
   */
  forwardsRest(): boolean {
    const cur = this.upstreamResponse;
    return this.memoryWait === null && cur !== null && cur.forward && !cur.assembler;
  }

  /** Bytes of the literal being read, of a response forwarded as it is: what forwardFrame does with a literal frame. */
  forwardLiteral(data: Buffer): void {
    this.out.midOutput = true;
    this.out.send(data);
  }

  /** A frame of the response being forwarded as it is (its first line taken): sent on; its last line ends the response. */
  private forwardFrame(frame: Frame): void {
    const last = frame.type === 'line' && !frame.literal;
    this.out.midOutput = !last;
    this.out.send(frame.data);
    if (last) this.endUpstreamResponse();
  }

  /** The upstream response's last line was read. */
  private endUpstreamResponse(): void {
    this.upstreamResponse = null;
    this.out.midOutput = false;
    if (this.offerAhead) {
      this.inputKept = true;
      this.offerLookupAhead();
    }
  }

  /**
   * Whether anything of the upstream bytes read since beginRead() may be kept by the relay (a held or
   * deferred frame, a response head): everything but what forwardFrame and pureRun sent on as it is.
   * ImapSession.onUpstreamData answers its host with it on a pure relay (Session.onUpstreamData).
   */
  inputKept = false;

  /** An upstream read begins (inputKept). */
  beginRead(): void {
    this.inputKept = false;
  }

  /**
   * The pure relay's fast path (no interceptor, so no choke point): a `* n FETCH` response (a list sync
   * is thousands of them) is forwarded as it comes, decided from its first bytes without decoding the
   * line. It is exactly what beginUpstreamResponse decides for it there: a FETCH is no CAPABILITY and
   * carries no response code, and it is held only for an intercepted command, which cannot be in
   * flight without an interceptor (checked all the same). Anything else takes the full path.
   */
  private forwardsUntaggedFetch(line: Buffer): boolean {
    if (!this.forwardsFetchAsIs() || !isUntaggedFetch(line)) return false;
    this.upstreamResponse = { forward: true, target: null, head: UNTAGGED_FETCH_HEAD, assembler: null };
    return true;
  }

  /** A `* n FETCH` response is forwarded as it is: no interceptor, and no intercepted command in flight (none can be without one; checked all the same). */
  private forwardsFetchAsIs(): boolean {
    if (this.core.interceptor !== null) return false;
    for (let i = 0; i < this.inflight.length; i++) if (this.inflight[i]!.intercepted) return false;
    return true;
  }

  /**
   * The inspecting listener's fast path for a one-line `* n FETCH` response (no literal) while an
   * intercepted command is in flight: a reconnecting client's poll or a FETCH answered from the verdict
   * store is thousands of them. It does exactly what beginUpstreamResponse + the assembler do for such
   * a line (the head is what parseResponseHead reads: untagged, FETCH, its number; hold it for the first
   * intercepted command; lease its bytes from the memory budget; hand the whole response, the line, to
   * completeHeldResponse), without a MessageAssembler and without a new lease per line: one 0-byte
   * lease of the session is resized to the line's length for the line and back to 0 after it (handed
   * to a rendering that settles later, it is released then and a new one is taken for the next line).
   * The budget's decision is the same (fits(length) implies fits(0)). Anything else, and a refusal of
   * the budget or a line over the buffer limit, takes the full path, which decides as before (and
   * refuses, logs or throws there). Returns true when the line was handled.
   */
  private heldFetchLine(frame: LineFrame): boolean {
    if (!heldFetchFastPath.enabled) return false;
    const line = frame.data;
    if (line.length > this.host.listener.limits.maxBufferedBytes) return false;
    const number = untaggedFetchNumber(line);
    if (number < 0) return false;
    let target: InFlight | null = null;
    for (let i = 0; i < this.inflight.length; i++) {
      if (this.inflight[i]!.intercepted) {
        target = this.inflight[i]!;
        break;
      }
    }
    if (target === null) return false;
    const head = untaggedFetchHead(line, number);
    let lease: MemoryLease | null = null;
    if (this.host.reserveMemory) {
      // taken out of the pool while the line is handled
      lease = this.lineLease;
      this.lineLease = null;
      if (lease === null) {
        lease = this.host.reserveMemory(0, 'held IMAP response');
        if (lease === null) {
          // as the full path: the message is withheld (or the session ends) and the line dropped
          heldFetchFastPath.lines++;
          this.refuseHold({ forward: false, target, head, assembler: null });
          this.upstreamResponse = null;
          return true;
        }
      }
      if (!lease.resize(line.length)) {
        // the full path takes a lease of its own, and is refused there as before
        lease.release();
        return false;
      }
    }
    heldFetchFastPath.lines++;
    this.upstreamResponse = null;
    let kept = false;
    try {
      kept = this.completeHeld(head, target, [line], lease);
    } finally {
      // back to the pool at 0 bytes, unless a rendering keeps it (released when that settles)
      if (lease !== null && !kept) {
        if (this.lineLease === null && lease.resize(0)) this.lineLease = lease;
        else lease.release();
      }
    }
    return true;
  }

  /**
   * What may take a run of upstream bytes (the core offers them at each response boundary:
   * ImapSession.onUpstreamData, and cuts a read into lines and literal data between runs), or null
   * (the fast paths off):
   * - on an inspecting listener, the first intercepted command in flight (the target of every held
   *   response, as in heldFetchLine) when it has a batch path;
   * - on a pure relay (no interceptor), PURE_RUN: the `* n FETCH` responses forwardsUntaggedFetch would
   *   forward frame by frame (pureRun).
   */
  runTarget(): InterceptedCommand | typeof PURE_RUN | null {
    if (!heldFetchFastPath.enabled) return null;
    if (this.core.interceptor === null) return PURE_RUN;
    for (let i = 0; i < this.inflight.length; i++) {
      const ic = this.inflight[i]!.intercepted;
      if (ic) return ic.responseRun ? ic : null;
    }
    return null;
  }

  /** A run from `data[start..]` for runTarget's target; the index after what it took. */
  upstreamRun(target: InterceptedCommand | typeof PURE_RUN, data: Buffer, start: number): number {
    return target === PURE_RUN ? this.pureRun(data, start) : this.interceptedRun(target, data, start);
  }

  /**
   * The pure relay's run (issue 10: a list sync through it is thousands of `* n FETCH` responses, each
   * a line, its header literal and `)`, and framing them one by one, three frames and three writes
   * each, cost the relay about 3 us a message): the whole `* n FETCH` responses from `start` go to the
   * client as one view of the read, exactly the bytes the frame-by-frame path would forward for them.
   * Taken only where that path would forward each of them as it is: nothing held or waiting for
   * admission, forwardsFetchAsIs (as forwardsUntaggedFetch), each response whole in `data` and within
   * the framer's line and literal limits (wholeMessageEnd). The run stops at anything else (another response, a FETCH cut by
   * the read's end, a limit the framer enforces), which goes through the framer from a boundary, as it
   * would have. Returns the index after the responses taken.
   */
  private pureRun(data: Buffer, start: number): number {
    if (this.memoryWait || this.upstreamResponse !== null || !this.forwardsFetchAsIs()) return start;
    const limits = this.host.listener.limits;
    let end = start;
    while (end < data.length && isUntaggedFetch(data, end)) {
      const next = wholeMessageEnd(data, end, limits);
      if (next < 0) break;
      end = next;
    }
    if (end > start) {
      heldFetchFastPath.runs++;
      this.out.send(data.subarray(start, end));
    }
    return end;
  }

  /**
   * A run of FETCH responses from `data[start..]` for `ic` (runTarget on an inspecting listener), without frames, a response head,
   * an assembler or a lease per response: what heldFetchLine and the held path do response by response
   * (each answer sent at once, its bytes leased from the budget while it is handled), once for the
   * run. Only where heldFetchLine would take a line: no admission wait, no response being assembled.
   * The session's pooled lease is resized to all the bytes from `start` for the run and back to 0
   * after it: a budget that fits them fits every response of them. Without a pooled lease, or when the
   * budget refuses, nothing is taken and the responses go one by one, where the budget decides (and
   * logs) as before. Its literals stay below HELD_ADMIT_MIN_BYTES, so no admission is ever skipped.
   * Returns the index after the responses taken.
   */
  private interceptedRun(ic: InterceptedCommand, data: Buffer, start: number): number {
    if (this.memoryWait || this.upstreamResponse !== null) return start;
    let lease: MemoryLease | null = null;
    if (this.host.reserveMemory) {
      lease = this.lineLease;
      if (lease === null) return start;
      this.lineLease = null;
      if (!lease.resize(data.length - start)) {
        if (lease.resize(0)) this.lineLease = lease;
        else lease.release();
        return start;
      }
    }
    const l = this.host.listener.limits;
    const limits: RunLimits = {
      maxLine: Math.min(l.maxLineLength + 2, l.maxBufferedBytes),
      maxLiteral: Math.min(HELD_ADMIT_MIN_BYTES - 1, l.maxLiteralSize),
      maxResponse: l.maxBufferedBytes,
    };
    const out: Buffer[] = [];
    let end = start;
    try {
      end = ic.responseRun!(data, start, limits, out);
    } finally {
      try {
        // what was answered goes out, also when a later response of the run threw (as one by one)
        if (out.length > 0) {
          heldFetchFastPath.runs++;
          this.out.send(out.length === 1 ? out[0]! : out);
        }
      } finally {
        if (lease !== null) {
          if (this.lineLease === null && lease.resize(0)) this.lineLease = lease;
          else lease.release();
        }
      }
    }
    return end;
  }

  /**
   * A continuation request from the upstream. It is legal only where postern is waiting for one: a
   * synchronizing literal it sent (its own, consumed here) or the client's (relayed), or IDLE's
   * `+ idling`. Anything else means the two sides disagree about the command stream: the session ends.
   */
  private upstreamContinuation(frame: LineFrame): void {
    const waiting = this.gateWaiting;
    if (!waiting || frame.literal) {
      throw new PosternError(ErrorCodes.UNVETTED_RESPONSE, 'upstream sent a continuation request nobody asked for');
    }
    this.gateWaiting = null;
    if (waiting.relay) this.out.send(frame.data);
    this.pumpGate();
  }

  private beginUpstreamResponse(frame: LineFrame): void {
    // a `* n FETCH` line (a list sync's, with its header literal) is read without decoding it; the same head
    const fetchNumber = untaggedFetchNumber(frame.data);
    const head = fetchNumber >= 0 ? untaggedFetchHead(frame.data, fetchNumber) : parseResponseHead(frame.data);
    const holdWholeResponse = (target: InFlight | null) => {
      // the session's pooled 0-byte lease when it has one (see lineLease), else a new one
      const pooled = this.lineLease;
      this.lineLease = null;
      this.upstreamResponse = {
        forward: false,
        target,
        head,
        assembler: new MessageAssembler(this.host.listener.limits.maxBufferedBytes, this.core.interceptor?.digestLiteralsFrom),
        lease: pooled ?? (this.host.reserveMemory ? this.host.reserveMemory(0, 'held IMAP response') : null),
        pooled: pooled !== null,
      };
      if (this.host.reserveMemory && !this.upstreamResponse.lease) this.refuseHold(this.upstreamResponse);
    };
    if (head.kind === 'tagged') {
      const idx = this.inflight.findIndex((c) => c.tag === head.tag);
      if (idx < 0) throw new PosternError(ErrorCodes.UNVETTED_RESPONSE, 'upstream sent a tagged response for a command nobody sent');
      const target = this.inflight[idx]!;
      if (this.gateWaiting?.tag === head.tag) this.commandEndedEarly(head.tag!);
      if (target.private || target.intercepted) {
        holdWholeResponse(target);
        return;
      }
      if (frame.literal) throw new PosternError(ErrorCodes.UNVETTED_RESPONSE, 'upstream tagged response announces a literal');
      if (!['OK', 'NO', 'BAD'].includes(head.keyword)) {
        throw new PosternError(ErrorCodes.UNVETTED_RESPONSE, `upstream tagged response "${head.keyword}" is not a status response`);
      }
      this.inflight.splice(idx, 1);
      this.core.interceptor?.observeTagged?.(target.tag, target.name, head);
      this.upstreamResponse = { forward: false, target, head, assembler: null };
      const idle = this.idle as { tag: string; bad: boolean } | null;
      if (idle?.tag === head.tag) {
        const badDone = idle!.bad;
        this.idle = null;
        if (badDone) {
          // like Dovecot: a line other than DONE inside IDLE ends IDLE and is answered BAD, never executed
          this.out.send(`${head.tag} BAD Expected DONE${CRLF}`);
          this.pumpGate();
          return;
        }
      }
      if (head.code && /^CAPABILITY /i.test(head.code)) this.out.send(this.rewriteCapabilityCode(frame.data, head));
      else this.out.send(frame.data);
      if (target.tag === this.logoutTag) {
        // after the LOGOUT completion the session ends, once this upstream segment has been handled
        // and the client has everything queued before it
        this.loggedOut = true;
        this.core.setClientPause('logout', true);
        this.core.finishAfterSegment({ kind: 'client-quit' });
      }
      this.pumpGate();
      // the interceptor may look ahead once this (line-only) response is done and nothing else is in flight
      this.offerAhead = this.core.interceptor?.lookupAhead !== undefined;
      return;
    }
    // untagged
    // a private lookup runs only while nothing else is in flight: every SEARCH / ESEARCH answer is its own
    const lookup = this.lookupFor || this.lookingAhead ? this.inflight.find((c) => c.lookup) : undefined;
    if (lookup && (head.keyword === 'SEARCH' || head.keyword === 'ESEARCH')) {
      holdWholeResponse(lookup);
      return;
    }
    const privateCap = this.inflight.find((c) => c.private && c.name === 'CAPABILITY');
    const clientCap = this.inflight.find((c) => !c.private && c.name === 'CAPABILITY');
    if (head.keyword === 'CAPABILITY' && privateCap && !clientCap) {
      holdWholeResponse(privateCap);
      return;
    }
    const intercepting = this.inflight.find((c) => c.intercepted);
    if (intercepting) {
      holdWholeResponse(intercepting);
      return;
    }
    if (this.core.interceptor) {
      // the choke point: on an inspecting listener every relayed response is screened whole
      if (frame.literal) {
        holdWholeResponse(null);
        return;
      }
      this.upstreamResponse = { forward: false, target: null, head, assembler: null };
      this.forwardScreened(head, [frame.data]);
      return;
    }
    if (head.keyword === 'CAPABILITY' && !frame.literal) {
      this.upstreamResponse = { forward: false, target: null, head, assembler: null };
      this.out.send(b(`* CAPABILITY ${filterCapabilities(splitCapabilities(head.text)).join(' ')}${CRLF}`));
      return;
    }
    if (head.code && /^CAPABILITY /i.test(head.code) && !frame.literal) {
      this.upstreamResponse = { forward: false, target: null, head, assembler: null };
      this.out.send(this.rewriteCapabilityCode(frame.data, head));
      return;
    }
    this.upstreamResponse = { forward: true, target: null, head, assembler: null };
  }

  /** Relays one whole untagged response on an inspecting listener, after the choke point let it pass. */
  private forwardScreened(head: ResponseHead, parts: Buffer[]): void {
    const verdict = screenResponse(head, parts);
    if (!verdict.ok) {
      throw new PosternError(ErrorCodes.UNVETTED_RESPONSE, `refusing to relay upstream response: ${verdict.reason}`);
    }
    const refused = head.keyword === 'FETCH' ? (this.core.interceptor?.screenFetch?.(parts) ?? null) : null;
    if (refused !== null) throw new PosternError(ErrorCodes.UNVETTED_RESPONSE, `refusing to relay upstream response: ${refused}`);
    this.core.interceptor?.observeUntagged?.(head, parts);
    if (head.keyword === 'CAPABILITY') this.out.send(b(`* CAPABILITY ${filterCapabilities(splitCapabilities(head.text)).join(' ')}${CRLF}`));
    else if (head.code && /^CAPABILITY /i.test(head.code)) this.out.send(this.rewriteCapabilityCode(parts[0]!, head));
    // part by part, not concatenated: the host coalesces the writes without copying a literal
    else for (const part of parts) this.out.send(part);
  }

  private rewriteCapabilityCode(line: Buffer, head: ResponseHead): Buffer {
    const caps = filterCapabilities(splitCapabilities(head.code!.slice(11)));
    const prefix = head.kind === 'tagged' ? head.tag! : '*';
    const text = line.toString('latin1').replace(/\r?\n$/, '');
    const afterStatus = text.slice(prefix.length + 1 + head.keyword.length);
    const close = afterStatus.indexOf(']');
    return b(`${prefix} ${head.keyword} [CAPABILITY ${caps.join(' ')}]${afterStatus.slice(close + 1)}${CRLF}`);
  }

  /** A whole response that was held: private command bookkeeping, an interceptor's rewrite, or the choke point. */
  private completeHeldResponse(
    head: ResponseHead,
    target: InFlight | null,
    parts: Buffer[],
    lease: MemoryLease | null = null,
    poolable: MemoryLease | null = null,
  ): void {
    // the held bytes stay in use until the interceptor's rendering settles; then they are returned to the budget
    let keepLease = false;
    try {
      keepLease = this.completeHeld(head, target, parts, lease);
    } finally {
      if (!keepLease && lease) {
        // the response's own lease (no admissions with it) is kept at 0 bytes for the next held response
        if (lease === poolable && heldFetchFastPath.enabled && this.lineLease === null && lease.resize(0)) this.lineLease = lease;
        else lease.release();
      }
    }
  }

  /** Returns true when the lease is handed to a pending rendering (released when it settles). */
  private completeHeld(head: ResponseHead, target: InFlight | null, parts: Buffer[], lease: MemoryLease | null): boolean {
    if (!target) {
      this.forwardScreened(head, parts);
      return false;
    }
    if (target.private) {
      if (head.kind === 'tagged') {
        this.inflight.splice(this.inflight.indexOf(target), 1);
        target.done?.(head, target.untagged ?? []);
        this.pumpGate();
      } else {
        const kept = (target.untagged ??= []);
        // a lookup's answer is one response: what comes beyond the bound is not kept (the lookup fails on the count)
        if (!target.lookup || kept.length < UID_LOOKUP_LIMITS.maxResponses) kept.push(parts);
      }
      return false;
    }
    const ic = target.intercepted!;
    if (head.kind === 'tagged') {
      if (parts.length > 1) throw new PosternError(ErrorCodes.UNVETTED_RESPONSE, 'upstream tagged response announces a literal');
      this.inflight.splice(this.inflight.indexOf(target), 1);
      if (!target.continued) {
        this.core.interceptor?.observeTagged?.(target.tag, target.name, head);
        const more = ic.continueWith?.(parts, head) ?? null;
        if (more !== null) {
          // the second half of the client's command: the client still waits, its responses are the interceptor's
          const tag = this.core.nextPrivateTag();
          this.inflight.push({ tag, name: target.name, private: false, intercepted: ic, continued: true });
          this.toUpstream({ kind: 'data', data: b(`${tag} ${more}${CRLF}`), tag });
          return false;
        }
      }
      const out = ic.onTagged(parts, head);
      if (out instanceof Promise) this.out.sendLater(out);
      else this.out.send(out);
      // the command left the in-flight table: answers to later commands wait behind its renderings
      this.updateUpstreamPause();
      this.pumpGate();
      this.interceptDone();
      return false;
    }
    const out = ic.onUntagged(parts, head);
    if (out === null) {
      this.forwardScreened(head, parts);
      return false;
    }
    if (out instanceof Promise) {
      this.out.sendLater(out);
      // after the queue's own handler: a rendering at the head of the queue is written (handed to the
      // host) before its lease is returned, so the host can keep it until the client took the bytes
      if (lease)
        void out.then(
          () => lease.release(),
          () => lease.release(),
        );
      return lease !== null;
    }
    this.out.send(out);
    return false;
  }

  /**
   * The memory budget refused to hold a response. An intercepted FETCH's message is withheld (the
   * command completes with NO [UNAVAILABLE]) and the rest of the response is dropped; anything else ends
   * the session.
   */
  private refuseHold(cur: UpstreamResponse): void {
    cur.lease?.release();
    cur.lease = null;
    this.endHoldWait(cur);
    for (const h of cur.holds ?? []) h.release();
    cur.holds = [];
    const ic = cur.target?.intercepted;
    if (ic?.withhold && cur.head.kind === 'untagged') {
      ic.withhold('postern is out of memory budget');
      cur.assembler?.reset();
      cur.dropping = true;
      return;
    }
    throw new PosternError(ErrorCodes.MEMORY_BUDGET, 'no memory budget left to hold an upstream response');
  }

  /**
   * Backpressure instead of holding (issue 10): a held response announced a literal of `size` bytes
   * (HELD_ADMIT_MIN_BYTES or more: smaller ones, a list sync's header fields, stay within the session's
   * own bounds and never wait behind other sessions' large messages).
   * Unless the host admits them now (SessionHost.holdResponseBytes, HELD_RESPONSE_PROCESS_BYTES), the
   * upstream is paused until it does: the bytes of the message are not read, so they are not in
   * memory. What the host had already read is assembled as usual (at most one read). Admission is in
   * arrival order across sessions, and a literal larger than the whole bound goes when nothing else is
   * held, so a single huge message never deadlocks; the wait counts against the hold deadline
   * (the upstream is paused: E_HOLD_TIMEOUT, and the client gets nothing of the response).
   */
  private admitLiteral(cur: UpstreamResponse, size: number): void {
    if (!this.host.holdResponseBytes || cur.dropping) return;
    const r = this.host.holdResponseBytes(size, 'held IMAP response', (lease) => {
      cur.holdWait = null;
      if (this.upstreamResponse !== cur || cur.dropping || this.core.state.kind !== 'relay') {
        lease.release();
        return;
      }
      (cur.holds ??= []).push(lease);
      if (this.memoryWait === cur) this.memoryWait = null;
      // what arrived meanwhile, in order; a further literal may make it wait again
      try {
        while (!this.memoryWait && this.deferredFrames.length > 0 && this.core.state.kind === 'relay') {
          const f = this.deferredFrames.shift()!;
          this.deferredBytes -= f.data.length;
          this.upstreamFrame(f);
        }
      } catch (err) {
        this.core.fail(err, 'upstream');
        return;
      }
      this.updateUpstreamPause();
    });
    if (r.lease) {
      (cur.holds ??= []).push(r.lease);
      return;
    }
    cur.holdWait = r.cancel;
    this.memoryWait = cur;
    this.updateUpstreamPause();
  }

  /** The response completed or was dropped: a wait for admission is moot (what arrived is held anyway). */
  private endHoldWait(cur: UpstreamResponse): void {
    const cancel = cur.holdWait;
    cur.holdWait = null;
    cancel?.();
    if (this.memoryWait === cur) {
      this.memoryWait = null;
      this.updateUpstreamPause();
    }
  }

  // ---------------------------------------------------------------- client -> upstream

  /**
   * Every client command is parsed whole against the IMAP grammar (protocol/imap/command.ts) before
   * anything of it goes upstream, and what goes upstream is postern's own serialisation of that parse.
   * So postern and the server cannot disagree about where a command starts or what it is. Small
   * literals (mailbox names, search strings) are collected (postern answers `+` itself); only APPEND
   * message data is streamed, behind a prefix that has already passed the grammar.
   */
  clientFrames(frames: Frame[]): void {
    for (let i = 0; i < frames.length; i++) {
      if (this.core.state.kind !== 'relay') return;
      const frame = frames[i]!;
      if (!this.cmd && frame.type === 'line' && frame.start) {
        if (this.idle && !this.idle.doneSent) {
          this.idleLine(frame);
          continue;
        }
        if (this.lookupFor || this.lookingAhead || this.inflight.some((c) => c.intercepted)) {
          // Untagged FETCH responses cannot be told apart between two FETCH commands in flight, so
          // nothing new goes upstream until the intercepted command has completed.
          this.core.holdFrames(frames.slice(i));
          this.waitingForIntercept = true;
          this.core.setClientPause('intercept', true);
          return;
        }
        this.cmd = { reader: new CommandReader(this.grammarOptions()), tag: null, name: null, literal: null, streamed: false, streamedCount: 0, refused: null };
      }
      if (!this.cmd) throw new PosternError(ErrorCodes.PROTOCOL, 'client data outside any command');
      this.clientFrame(this.cmd, frame);
      if (this.rejectRestOfBatch) {
        this.rejectRestOfBatch = false;
        return;
      }
    }
  }

  private clientFrame(c: ClientCommand, frame: Frame): void {
    if (frame.type === 'literal') {
      const lit = c.literal;
      if (!lit) throw new PosternError(ErrorCodes.PROTOCOL, 'literal data without a literal');
      if (!c.refused) {
        if (lit.streamed) this.toUpstream({ kind: 'data', data: frame.data, tag: c.tag! });
        else lit.chunks.push(frame.data);
      }
      if (frame.last) {
        c.literal = null;
        if (!c.refused) this.pushLiteral(c, lit.streamed ? { size: lit.size } : Buffer.concat(lit.chunks));
      }
      return;
    }
    if (c.refused) {
      // the rest of a refused command: non-synchronizing literals and the lines between them are skipped
      if (frame.literal && frame.literal.size > 0) c.literal = { size: frame.literal.size, chunks: [], streamed: false };
      if (!frame.literal) this.endRefused(c);
      return;
    }
    const r = c.reader.push(frame.data);
    if (!r.ok) {
      if (c.tag === null) c.tag = r.tag;
      if (frame.literal) this.refuseClientCommand(c, r.reason, frame.literal);
      else {
        this.cmd = null;
        if (c.streamed) throw new PosternError(ErrorCodes.COMMAND_SYNTAX, `malformed APPEND after message data: ${r.reason}`);
        this.host.log.debug(
          { event: 'command.refused', tag: r.tag, err: { code: ErrorCodes.COMMAND_SYNTAX, message: r.reason } },
          'client command refused by the grammar',
        );
        this.core.bad(r.tag ?? '*', `postern: ${r.reason}`);
      }
      return;
    }
    if (r.complete) {
      this.cmd = null;
      if (c.streamed) {
        // the rest of an APPEND after its last message literal
        const tail = serialiseCommand(r.command, this.upstreamLiteralOptions(), c.streamedCount);
        this.sendChunks(tail.chunks, c.tag!);
        this.maybeInject();
        return;
      }
      this.dispatchCommand(r.command);
      return;
    }
    c.tag = r.tag;
    c.name = r.name;
    const pending = r.pending;
    if (!pending || !frame.literal) throw new PosternError(ErrorCodes.PROTOCOL, 'command framing disagrees with the grammar');
    const size = pending.size;
    if (pending.streamable && r.prefix) {
      // APPEND message data: the prefix passed the grammar; the data is streamed behind it
      if (!c.streamed) {
        if (!this.admitClientTag(r.tag)) {
          this.refuseClientCommand(c, null, frame.literal);
          return;
        }
        this.inflight.push({ tag: r.tag, name: r.name, private: false });
      }
      // the client's `{n}` stays synchronizing upstream, so a server that refuses the APPEND spares it the upload
      const ser = serialiseCommand(r.prefix, pending.sync ? { literalPlus: false, literalMinus: false } : this.upstreamLiteralOptions(), c.streamedCount);
      c.streamed = true;
      c.streamedCount++;
      this.sendChunks(ser.chunks, r.tag);
      // a synchronizing literal upstream: the client's own `{n}` waits for the server's `+` (relayed);
      // a client `{n+}` the server cannot take as such is held by postern until that `+` (consumed)
      if (ser.streamed?.sync) this.toUpstream({ kind: 'plus', relay: pending.sync, tag: r.tag });
      else if (pending.sync) this.out.send(`+ Ready for literal data${CRLF}`);
      if (size === 0) this.pushLiteral(c, { size: 0 });
      else c.literal = { size, chunks: [], streamed: true };
      return;
    }
    if (pending.sync) this.out.send(`+ Ready for literal data${CRLF}`);
    if (size === 0) this.pushLiteral(c, Buffer.alloc(0));
    else c.literal = { size, chunks: [], streamed: false };
  }

  private pushLiteral(c: ClientCommand, part: CommandPart): void {
    const r = c.reader.push(part);
    if (!r.ok) {
      // cannot happen for a literal the grammar announced; fail closed all the same
      throw new PosternError(ErrorCodes.COMMAND_SYNTAX, `literal refused by the grammar: ${r.reason}`);
    }
  }

  /** Sends serialised chunks upstream; every chunk after the first waits for the server's `+` (consumed). */
  private sendChunks(chunks: Buffer[], tag: string): void {
    chunks.forEach((chunk, i) => {
      if (i > 0) this.toUpstream({ kind: 'plus', relay: false, tag });
      this.toUpstream({ kind: 'data', data: chunk, tag });
    });
  }

  private upstreamLiteralOptions(): { literalPlus: boolean; literalMinus: boolean } {
    return { literalPlus: this.core.upstreamCapabilities.has('LITERAL+'), literalMinus: this.core.upstreamCapabilities.has('LITERAL-') };
  }

  /** Refuses a command whose line announced a literal (the literal and the rest of the command are not forwarded). */
  private refuseClientCommand(c: ClientCommand, reason: string | null, literal: { size: number; nonSync: boolean }): void {
    const text = reason === null ? 'Tag reserved by postern' : `postern: ${reason}`;
    if (c.streamed) throw new PosternError(ErrorCodes.COMMAND_SYNTAX, `malformed APPEND: ${text}`);
    this.host.log.debug(
      { event: 'command.refused', tag: c.tag, err: { code: ErrorCodes.COMMAND_SYNTAX, message: text } },
      'client command refused by the grammar',
    );
    if (literal.nonSync) {
      c.refused = text;
      if (literal.size > 0) c.literal = { size: literal.size, chunks: [], streamed: false };
      return;
    }
    // a synchronizing literal is refused by answering BAD instead of `+`: the client will not send it
    this.cmd = null;
    this.core.clientFramer.cancelLiteral();
    this.core.bad(c.tag ?? '*', text);
    this.rejectRestOfBatch = true;
  }

  private endRefused(c: ClientCommand): void {
    this.cmd = null;
    this.core.bad(c.tag ?? '*', c.refused!);
  }

  /** A line inside IDLE: only DONE is legal. */
  private idleLine(frame: LineFrame): void {
    const idle = this.idle!;
    idle.doneSent = true;
    this.toUpstream({ kind: 'data', data: b(`DONE${CRLF}`), tag: idle.tag });
    if (isIdleDone(frame.data)) return;
    // Anything else ends IDLE (as Dovecot does) and is not executed; the IDLE is answered BAD.
    idle.bad = true;
    if (frame.literal) throw new PosternError(ErrorCodes.COMMAND_SYNTAX, 'a literal inside IDLE');
  }

  private grammarOptions(): CommandGrammarOptions {
    // postern offers LITERAL+ to its clients and converts literals for the upstream itself
    return { literalPlus: true, literalMinus: true, binary: this.core.upstreamCapabilities.has('BINARY'), maxLiteralInline: MAX_INLINE_LITERAL };
  }

  private admitClientTag(tag: string): boolean {
    if (tag.startsWith(this.core.privatePrefix)) return false;
    return true;
  }

  private interceptDone(): void {
    if (!this.waitingForIntercept) return;
    this.waitingForIntercept = false;
    this.core.resumeClient('intercept');
  }

  /** A complete client command that passed the grammar. */
  private dispatchCommand(cmd: ParsedCommand): void {
    const { tag, name } = cmd;
    if (!this.admitClientTag(tag)) {
      this.out.send(`${tag} BAD Tag reserved by postern${CRLF}`);
      return;
    }
    switch (name) {
      case 'STARTTLS':
        this.out.send(`${tag} BAD STARTTLS not available after login${CRLF}`);
        return;
      case 'COMPRESS':
        this.out.send(`${tag} NO [CANNOT] COMPRESS is not available through postern${CRLF}`);
        return;
      case 'LOGIN':
      case 'AUTHENTICATE':
        this.out.send(`${tag} BAD Already logged in${CRLF}`);
        return;
      case 'ENABLE': {
        const bad = cmd.args.find((a) => a.t !== 'atom' || !ENABLE_ALLOWED.has(a.v.toUpperCase()));
        if (bad) {
          this.out.send(`${tag} BAD postern: ENABLE ${bad.t === 'atom' ? bad.v : 'argument'} is not available through postern${CRLF}`);
          return;
        }
        break;
      }
      case 'LOGOUT':
        this.logoutTag = tag;
        break;
      default:
        break;
    }
    const { chunks } = serialiseCommand(cmd, this.upstreamLiteralOptions());
    const hasLiteral = cmd.args.some(function lit(v): boolean {
      return (
        (v.t === 'string' && (v.form === 'literal' || v.form === 'literal8')) ||
        (v.t === 'list' && v.v.some(lit)) ||
        (v.t === 'section' && !!v.fields?.some(lit))
      );
    });
    const line = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
    const head = commandHeadOf(cmd, line);
    if (this.core.interceptor) {
      const refusal = this.core.interceptor.refuse?.(head, line, hasLiteral, cmd);
      if (refusal) {
        this.out.send(`${tag} BAD ${refusal}${CRLF}`);
        return;
      }
      const lookup = this.core.interceptor.prepare && this.upstreamQuiet() ? this.core.interceptor.prepare(head, line, this.core, cmd) : null;
      if (lookup) {
        this.startLookup(lookup, { cmd, chunks, line, head }, 1);
        return;
      }
    }
    this.processCommand(cmd, chunks, line, head);
  }

  /**
   * Nothing is in flight upstream or waiting to go there: a private lookup's answers cannot be confused
   * with anything else. `privateOk`: postern's own commands other than lookups (CAPABILITY) may be in
   * flight, and a response to one of them may be being read (none of them is answered with SEARCH/ESEARCH).
   */
  private upstreamQuiet(privateOk = false): boolean {
    const cur = this.upstreamResponse;
    return (
      (privateOk ? this.inflight.every((c) => c.private && !c.lookup) : this.inflight.length === 0) &&
      this.gate.length === 0 &&
      this.gateWaiting === null &&
      (cur === null || (privateOk && cur.target?.private === true && !cur.target.lookup)) &&
      this.idle === null &&
      this.logoutTag === null &&
      this.pendingInjections.length === 0 &&
      this.lookupFor === null &&
      !this.lookingAhead
    );
  }

  /**
   * A client command completed and its response is done: when nothing else is in flight or waiting
   * (no client command being received or held, the session not ending), the interceptor may ask for a
   * private lookup ahead of the client's next command (lookupAhead).
   */
  private offerLookupAhead(): void {
    this.offerAhead = false;
    const ic = this.core.interceptor;
    if (!ic?.lookupAhead || this.core.state.kind !== 'relay') return;
    if (this.cmd !== null || this.waitingForIntercept || this.loggedOut || this.memoryWait !== null || !this.upstreamQuiet()) return;
    const lookup = ic.lookupAhead(this.core);
    if (lookup) this.startLookup(lookup, null, 1);
  }

  /**
   * Sends a private lookup; the client's command (`waiting`; null for a lookup ahead) and later client
   * input wait until it completed.
   */
  private startLookup(lookup: PreparedLookup, waiting: WaitingCommand | null, n: number): void {
    if (waiting) this.lookupFor = waiting;
    else this.lookingAhead = true;
    const tag = this.core.nextPrivateTag();
    this.inflight.push({ tag, name: 'UID', private: true, lookup: true, done: (h, untagged) => this.lookupDone(lookup, waiting, n, h, untagged) });
    this.toUpstream({ kind: 'data', data: b(`${tag} ${lookup.command}${CRLF}`), tag });
  }

  private lookupDone(lookup: PreparedLookup, waiting: WaitingCommand | null, n: number, head: ResponseHead, untagged: Buffer[][]): void {
    this.lookupFor = null;
    this.lookingAhead = false;
    if (this.core.state.kind !== 'relay') return;
    const next = lookup.done(head, untagged);
    if (next && n < UID_LOOKUP_LIMITS.maxLookupsPerCommand && this.upstreamQuiet()) {
      this.startLookup(next, waiting, n + 1);
      return;
    }
    // the client's command now goes on as it would have without the lookup; after a lookup ahead, the
    // client input held meanwhile is processed as it comes (a FETCH may still be prepared)
    if (waiting) this.processCommand(waiting.cmd, waiting.chunks, waiting.line, waiting.head);
    if (!this.lookupFor && !this.lookingAhead && !this.inflight.some((c) => c.intercepted)) this.interceptDone();
  }

  /** A client command that passed the grammar and the interceptor's refusal: intercepted, or forwarded as serialised. */
  private processCommand(cmd: ParsedCommand, chunks: Buffer[], line: Buffer, head: CommandHead): void {
    const { tag, name } = cmd;
    if (this.core.interceptor) {
      const ic = this.core.interceptor.intercept(head, line, this.core, cmd);
      if (ic) {
        this.inflight.push({ tag, name, private: false, intercepted: ic });
        this.updateUpstreamPause();
        this.toUpstream({ kind: 'data', data: ic.upstreamCommand, tag });
        return;
      }
    }
    // a SELECT/EXAMINE sent with no other client command in flight may take the private lookup right
    // behind it (postern's CAPABILITY refresh after the login may still be in flight: it has no SEARCH answers)
    const behind = (name === 'SELECT' || name === 'EXAMINE') && this.core.interceptor?.lookupBehind !== undefined && this.upstreamQuiet(true);
    this.inflight.push({ tag, name, private: false });
    this.sendChunks(chunks, tag);
    if (behind) {
      const lookup = this.core.interceptor!.lookupBehind!(head, this.core);
      if (lookup) this.startLookup(lookup, null, 1);
    }
    if (name === 'IDLE') {
      this.idle = { tag, doneSent: false, bad: false };
      this.toUpstream({ kind: 'plus', relay: true, tag });
    }
    this.maybeInject();
  }

  // ---------------------------------------------------------------- the ordered upstream gate

  private toUpstream(item: GateItem): void {
    if (!this.gateWaiting && this.gate.length === 0) {
      this.runGateItem(item);
      return;
    }
    this.gate.push(item);
    if (item.kind === 'data') this.gateBytes += item.data.length;
    if (this.gateBytes > this.host.listener.limits.maxBufferedBytes) {
      throw new PosternError(ErrorCodes.BUFFER_LIMIT, 'client sent more than the buffer limit while the server had not asked for it', {
        limit: this.host.listener.limits.maxBufferedBytes,
      });
    }
    this.core.setClientPause('gate', this.gateBytes > GATE_PAUSE_BYTES);
  }

  private runGateItem(item: GateItem): void {
    if (item.kind === 'data') this.host.sendUpstream(item.data);
    else this.gateWaiting = { tag: item.tag, relay: item.relay };
  }

  private pumpGate(): void {
    while (!this.gateWaiting && this.gate.length > 0) {
      const item = this.gate.shift()!;
      if (item.kind === 'data') this.gateBytes -= item.data.length;
      this.runGateItem(item);
    }
    this.core.setClientPause('gate', this.gateBytes > GATE_PAUSE_BYTES);
  }

  /** The server completed a command that was waiting for a continuation: what was queued behind it for that command is dropped. */
  private commandEndedEarly(tag: string): void {
    this.gateWaiting = null;
    const kept: GateItem[] = [];
    for (const item of this.gate) {
      if (item.tag === tag) {
        if (item.kind === 'data') this.gateBytes -= item.data.length;
      } else kept.push(item);
    }
    this.gate = kept;
    const c = this.cmd;
    if (c && c.tag === tag && c.streamed) {
      // the client waits for a `+` that will not come: it will not send the literal
      if (c.literal) this.core.clientFramer.cancelLiteral();
      this.cmd = null;
    }
    if (this.idle?.tag === tag) this.idle = null;
  }

  /** Queues a private command; it is sent at the next command boundary of the client stream. */
  inject(command: string, done: (head: ResponseHead, untagged: Buffer[][]) => void): void {
    this.pendingInjections.push({ command, done });
    this.maybeInject();
  }

  private maybeInject(): void {
    if (this.core.state.kind !== 'relay' || this.pendingInjections.length === 0) return;
    if (this.cmd !== null || this.idle !== null || this.logoutTag !== null) return;
    while (this.pendingInjections.length > 0) {
      const { command, done } = this.pendingInjections.shift()!;
      const tag = this.core.nextPrivateTag();
      this.inflight.push({ tag, name: command.split(' ')[0]!.toUpperCase(), private: true, done });
      this.toUpstream({ kind: 'data', data: b(`${tag} ${command}${CRLF}`), tag });
    }
  }
}

type GateItem = { kind: 'data'; data: Buffer; tag: string } | { kind: 'plus'; relay: boolean; tag: string };

/**
 * The held-response fast paths (Relay.heldFetchLine for one-line FETCH responses, and the pooled lease
 * of Relay.lineLease for every held response): on unless a test turns them off to compare with the full
 * path; `lines` counts the lines heldFetchLine took and `runs` the runs upstreamRun took (tests). Not
 * configuration.
 */
export const heldFetchFastPath = { enabled: true, lines: 0, runs: 0 };

/** runTarget's target on a pure relay (pureRun). */
export const PURE_RUN = 'pure relay';

/** What parseResponseHead says of every line isUntaggedFetch accepts, as far as the relay reads it (the number is not read). */
const UNTAGGED_FETCH_HEAD: ResponseHead = Object.freeze({ kind: 'untagged', keyword: 'FETCH', text: '' });

const isAlpha = (c: number | undefined): boolean => c !== undefined && ((c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a));

/**
 * `* <digits> FETCH` followed by anything but a letter: parseResponseHead reads every such line as an
 * untagged response with keyword FETCH (its `^(\d+) ([A-Za-z]+)` rule), and no other line is accepted.
 */
export function isUntaggedFetch(line: Buffer, at = 0): boolean {
  if (line[at] !== 0x2a /* * */ || line[at + 1] !== 0x20) return false;
  let i = at + 2;
  for (let c = line[i]; c !== undefined && c >= 0x30 && c <= 0x39; c = line[++i]);
  if (i === at + 2 || line[i] !== 0x20) return false;
  return (
    line[i + 1] === 0x46 /* F */ &&
    line[i + 2] === 0x45 /* E */ &&
    line[i + 3] === 0x54 /* T */ &&
    line[i + 4] === 0x43 /* C */ &&
    line[i + 5] === 0x48 /* H */ &&
    !isAlpha(line[i + 6])
  );
}

/**
 * The message number of a line isUntaggedFetch accepts, as parseResponseHead reads it (Number of its
 * digits), or -1 for any other line.
 */
export function untaggedFetchNumber(line: Buffer): number {
  if (!isUntaggedFetch(line)) return -1;
  let i = 2;
  let v = 0;
  for (let c = line[i]; c !== undefined && c >= 0x30 && c <= 0x39; c = line[++i]) v = v * 10 + (c - 0x30);
  // beyond 15 digits the sum may round differently from Number() of the digits
  return i - 2 <= 15 ? v : Number(line.toString('latin1', 2, i));
}

/**
 * What parseResponseHead returns for a line untaggedFetchNumber read (`* <number> FETCH` + a non-letter):
 * untagged, keyword FETCH, the number, and its text (the rest of the line without its line end, one
 * leading space dropped), decoded only when read.
 */
export function untaggedFetchHead(line: Buffer, number: number): ResponseHead {
  return new UntaggedFetchHead(line, number);
}

/**
 * untaggedFetchHead's head: a class, so that the lazy `text` is one getter on the prototype (an object
 * literal with a getter cost a closure and a slow-path literal per response line, most of a poll
 * line's handling in the profile).
 */
class UntaggedFetchHead implements ResponseHead {
  readonly kind = 'untagged' as const;
  readonly keyword = 'FETCH';
  private decoded: string | undefined = undefined;
  constructor(
    private readonly line: Buffer,
    readonly number: number,
  ) {}
  get text(): string {
    if (this.decoded === undefined) {
      const line = this.line;
      let end = line.length;
      if (end > 0 && line[end - 1] === 0x0a) end--;
      if (end > 0 && line[end - 1] === 0x0d) end--;
      let from = line.indexOf(0x20, 2) + 6; // after `* <digits> FETCH`
      if (from < end && line[from] === 0x20) from++;
      this.decoded = from < end ? line.toString('latin1', from, end) : '';
    }
    return this.decoded;
  }
}

/** The client command being received in the relay phase. */
interface ClientCommand {
  reader: CommandReader;
  tag: string | null;
  name: string | null;
  /** The literal being received: collected (small) or streamed upstream (APPEND message data). */
  literal: { size: number; chunks: Buffer[]; streamed: boolean } | null;
  /** Part of it already went upstream (APPEND): a grammar error from here on ends the session. */
  streamed: boolean;
  /** How many message literals of it were streamed. */
  streamedCount: number;
  /** Refused: the rest is skipped and BAD sent at its end. */
  refused: string | null;
}

/** The leases of a held response as one: its memory-budget lease and its admissions, returned together. */
function heldLease(cur: UpstreamResponse): MemoryLease | null {
  const all = [cur.lease ?? null, ...(cur.holds ?? [])].filter((l): l is MemoryLease => l !== null);
  if (all.length <= 1) return all[0] ?? null;
  return {
    get bytes() {
      return all.reduce((n, l) => n + l.bytes, 0);
    },
    resize: () => false,
    release: () => {
      for (const l of all) l.release();
    },
  };
}

function commandHeadOf(cmd: ParsedCommand, line: Buffer): CommandHead {
  const prefix = `${cmd.tag} ${cmd.name}`;
  const off = Buffer.byteLength(prefix, 'latin1');
  return { tag: cmd.tag, name: cmd.name, argsOffset: line[off] === 0x20 ? off + 1 : off };
}
