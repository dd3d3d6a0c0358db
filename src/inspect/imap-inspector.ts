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
import { MAX_CACHED_SET } from '../limits.js';
import { logErr } from '../log/logger.js';
import { applyHeaderRules, type CompiledPolicy, inspectMessage } from '../policy/engine.js';
import type { EngineDeps } from '../policy/types.js';
import { mailboxOf, type ParsedCommand } from '../protocol/imap/command.js';
import { classifyItem, type FetchItem, type FetchItemList, formatItemName, parseFetchItems, setsSeen } from '../protocol/imap/fetch-items.js';
import { buildFetchResponse, type FetchResponse, type FetchResponseItem, parseFetchResponse } from '../protocol/imap/fetch-response.js';
import type { CommandHead, ResponseHead } from '../protocol/imap/parse.js';
import { checkRelayedFetchItem, METADATA_FETCH_ITEMS } from '../protocol/imap/response-screen.js';
import { literalBytes } from '../protocol/imap/write.js';
import type { ImapInterceptor, ImapSessionView, InterceptedCommand } from '../session/imap/index.js';
import { type Vetted, VettedCache } from './cache.js';
import { renderItem } from './render/index.js';

/**
 * Items Dovecot writes before everything else ("buffered" handlers), in request order; the rest —
 * BODY, BODYSTRUCTURE, ENVELOPE and every section — follow in request order (checked against real
 * Dovecot in test/integration/render-oracle.test.ts).
 */
const UNBUFFERED = new Set(['BODY', 'BODYSTRUCTURE', 'ENVELOPE']);
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

export interface ImapInspectorDeps {
  listener: ListenerConfig;
  policy: CompiledPolicy;
  engine: EngineDeps;
  log: Logger;
}

/** A header section no message has: fetching it non-PEEK sets \Seen at the cost of a few bytes. */
const SEEN_MARKER = 'BODY[HEADER.FIELDS (X-POSTERN-SEEN)]';

interface CommandState {
  /** Every UID was vetted before: the upstream FETCH carries no body. */
  fromCache?: boolean;
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

export class ImapInspector implements ImapInterceptor {
  private mailbox: string | null = null;
  private uidValidity: number | null = null;
  private readonly pendingSelect = new Map<string, string>();
  private selectingUidValidity: number | null = null;
  private readonly cache: VettedCache;
  private readonly inflightVets = new Map<string, Promise<Vetted | { tempfail: string }>>();
  /** ENVELOPE and top-level header fetches download and vet the message (inspect.vet_on_envelope). */
  private readonly vetOnEnvelope: boolean;
  /** The logged-in user (the spam check's recipient when it is an address). */
  private user: string | null = null;

  constructor(private readonly deps: ImapInspectorDeps) {
    this.cache = new VettedCache(deps.listener.inspect.cacheMemoryBytes);
    this.vetOnEnvelope = resolveVetOnEnvelope(deps.listener.inspect.vetOnEnvelope, deps.policy, deps.engine);
  }

  close(): void {
    this.cache.close();
  }

  observeUntagged(head: ResponseHead): void {
    if (this.pendingSelect.size > 0 && head.code) {
      const m = /^UIDVALIDITY (\d+)/i.exec(head.code);
      if (m) this.selectingUidValidity = Number(m[1]);
    }
  }

  observeTagged(tag: string, _command: string, head: ResponseHead): void {
    const box = this.pendingSelect.get(tag);
    if (box === undefined) return;
    this.pendingSelect.delete(tag);
    if (head.keyword === 'OK') {
      this.mailbox = box;
      this.uidValidity = this.selectingUidValidity;
    }
    this.selectingUidValidity = null;
  }

  refuse(head: CommandHead, line: Buffer, hasLiteral: boolean): string | null {
    if (head.name === 'FETCH' || head.name === 'UID FETCH') {
      // a literal would hide items from inspection; no real client sends one in FETCH
      if (hasLiteral) return 'postern: literals in FETCH are not supported';
      const args = crlfStrip(line.toString('latin1', head.argsOffset));
      const sp = args.indexOf(' ');
      if (sp <= 0) return null;
      let items: FetchItem[];
      try {
        items = parseFetchItems(args.slice(sp + 1)).items;
      } catch (err) {
        // fail closed: what postern cannot parse it cannot inspect (PREVIEW (LAZY), SNIPPET (FUZZY), ...)
        return `postern: ${(err as Error).message}`;
      }
      const unsafe = items.find((i) => classifyItem(i) === 'metadata' && !SAFE_METADATA.has(i.name));
      if (unsafe) return `postern: FETCH item ${unsafe.name} is not available through this inspecting proxy`;
      return null;
    }
    // URLFETCH, GENURLAUTH, RESETKEY and NOTIFY never get here: the command grammar knows none of them
    return null;
  }

  intercept(head: CommandHead, line: Buffer, session: ImapSessionView, command?: ParsedCommand): InterceptedCommand | null {
    const args = crlfStrip(line.toString('latin1', head.argsOffset));
    switch (head.name) {
      case 'SELECT':
      case 'EXAMINE': {
        // The old mailbox is deselected as soon as SELECT starts (RFC 9051 6.3.2); the new one is taken
        // from the grammar's parse (quoted, atom or literal alike) and becomes current only on the
        // server's tagged OK, with the UIDVALIDITY the server reported for it.
        this.mailbox = null;
        this.uidValidity = null;
        const box = command ? mailboxOf(command) : null;
        if (box !== null) this.pendingSelect.set(head.tag, mailboxKey(box));
        return null;
      }
      case 'CLOSE':
      case 'UNSELECT':
        this.mailbox = null;
        this.uidValidity = null;
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
    const sp = args.indexOf(' ');
    if (sp <= 0) return null;
    const seqSet = args.slice(0, sp);
    let parsed: FetchItemList;
    try {
      parsed = parseFetchItems(args.slice(sp + 1));
    } catch {
      return null; // unreachable: refuse() already answered BAD for unparseable item lists
    }
    const vetMeta = this.deps.listener.inspect.vetOnMetadata;
    const vetEnv = this.vetOnEnvelope;
    const classes = parsed.items.map(classifyItem);
    const hasEnvelope = parsed.items.some(isEnvelope);
    // vet_on_envelope: what a message list is built from (ENVELOPE, the header) shows the vetted message
    const needContent = classes.some((c) => c === 'content' || (vetMeta && c === 'content-metadata') || (vetEnv && c === 'header')) || (vetEnv && hasEnvelope);
    const hasHeader = classes.some((c) => c === 'header');
    // ENVELOPE alone is relayed as the server sends it until something was vetted in the session;
    // then it is served from the vetted message for those (the header-only path below)
    if (!needContent && !hasHeader && !(hasEnvelope && this.cache.stats.entries > 0)) return null;
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
      if (this.cache.stats.entries === 0) return this.headerOnly(state, line, false);
      const items = parsed.items.map((i) => (i.macro ? i.name : i.raw));
      const addUid = !parsed.items.some((i) => i.name === 'UID');
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
    for (let i = 0; i < parsed.items.length; i++) {
      const item = parsed.items[i]!;
      const cls = classes[i]!;
      if (cls === 'metadata' || (cls === 'content-metadata' && !vetMeta)) add(item.macro ? item.name : item.raw);
    }
    add('UID');
    const marksSeen = parsed.items.some(setsSeen);
    // Every UID already vetted in this session (Thunderbird's chunked fetches, Apple Mail's per-part
    // fetches): no body download; a tiny non-PEEK section still makes the server set \Seen itself.
    state.fromCache = head.name === 'UID FETCH' && this.allCached(seqSet);
    if (state.fromCache) {
      if (marksSeen) add(SEEN_MARKER);
    } else add(marksSeen ? 'BODY[]' : 'BODY.PEEK[]');
    return {
      upstreamCommand: build(upstreamItems),
      onUntagged: (parts, h) => (h.keyword === 'FETCH' ? this.onFetch(state, parts) : null),
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

  /** True when `set` names explicit UIDs (no `*`, at most MAX_CACHED_SET) that are all in the cache. */
  private allCached(set: string): boolean {
    if (this.mailbox === null || this.uidValidity === null || /[^0-9:,]/.test(set)) return false;
    let n = 0;
    for (const range of set.split(',')) {
      const [a, b] = range.split(':').map(Number);
      if (!a) return false;
      const lo = Math.min(a, b ?? a);
      const hi = Math.max(a, b ?? a);
      for (let u = lo; u <= hi; u++) {
        if (++n > MAX_CACHED_SET || !this.cache.has(VettedCache.key(this.mailbox, this.uidValidity, u))) return false;
      }
    }
    return n > 0;
  }

  private onFetch(state: CommandState, parts: Buffer[]): Buffer | Promise<Buffer> | null {
    const resp = parseFetchResponse(parts);
    const body = resp.items.find((i) => i.name === 'BODY[]');
    const uidItem = resp.items.find((i) => i.name === 'UID');
    const uid = uidItem?.atom ? Number(uidItem.atom) : null;
    if (state.fromCache && uid !== null) return this.renderVetted(state, resp, this.fromCache(uid), `UID ${uid}`);
    if (!body || body.literal === undefined) return null; // an unsolicited FLAGS update and the like
    return this.renderVetted(state, resp, this.vet(body.literal, uid), uid !== null ? `UID ${uid}` : `message ${resp.seq}`);
  }

  /** The rewritten response once the message is vetted; on a tempfail (or a cache miss, null) nothing, and `label` joins the tempfail list. */
  private renderVetted(state: CommandState, resp: FetchResponse, vetted: Promise<Vetted | { tempfail: string } | null>, label: string): Promise<Buffer> {
    const p = vetted.then((v) => {
      if (!v || 'tempfail' in v) {
        state.tempfail.push(label);
        return Buffer.alloc(0);
      }
      return this.render(state, resp.seq, resp.items, v);
    });
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

  private async vet(raw: Buffer, uid: number | null): Promise<Vetted | { tempfail: string }> {
    const key = uid !== null && this.mailbox !== null && this.uidValidity !== null ? VettedCache.key(this.mailbox, this.uidValidity, uid) : null;
    if (key) {
      const hit = await this.cache.get(key);
      if (hit) return hit;
      const inflight = this.inflightVets.get(key);
      if (inflight) return inflight;
    }
    const work = this.runEngine(raw, uid);
    if (key) this.inflightVets.set(key, work);
    try {
      const v = await work;
      if (key && !('tempfail' in v)) await this.cache.set(key, v);
      return v;
    } finally {
      if (key) this.inflightVets.delete(key);
    }
  }

  private async runEngine(raw: Buffer, uid: number | null): Promise<Vetted | { tempfail: string }> {
    const l = this.deps.listener;
    const ctx = {
      listener: l.name,
      protocol: 'imap' as const,
      user: this.user ?? undefined,
      mailbox: this.mailbox ?? undefined,
      uidValidity: this.uidValidity ?? undefined,
      uid: uid ?? undefined,
    };
    try {
      const r = await inspectMessage(raw, this.deps.policy, ctx, this.deps.engine);
      const v = r.verdict;
      this.deps.log.info(
        {
          event: 'message.inspected',
          mailbox: this.mailbox,
          uidValidity: this.uidValidity,
          uid,
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

  /** Renders the client's items in Dovecot's order: UID (UID FETCH), buffered items, implicit FLAGS, body items. */
  private render(state: CommandState, seq: number, serverItems: FetchResponseItem[], v: Vetted): Buffer {
    const byName = new Map(serverItems.map((i) => [i.name, i]));
    const out: Buffer[] = [];
    const emitted = new Set<string>();
    const vetMeta = this.deps.listener.inspect.vetOnMetadata;
    const emitServer = (name: string) => {
      const it = byName.get(name);
      if (it && !emitted.has(name)) {
        relayable(it);
        out.push(it.raw);
        emitted.add(name);
      }
    };
    // the ENVELOPE of a message the policy changed is the changed message's (a tagged subject, a
    // notice's header): it agrees with BODY[HEADER] and BODY[] in every fetch order
    const ownEnvelope = v.verdict.status !== 'clean';
    const emitItem = (item: FetchItem) => {
      const cls = classifyItem(item);
      const name = formatItemName(item).toUpperCase();
      if ((cls === 'metadata' && !(ownEnvelope && isEnvelope(item))) || (cls === 'content-metadata' && !vetMeta)) {
        emitServer(name);
        return;
      }
      if (emitted.has(name)) return;
      try {
        out.push(renderItem(v.output, v.structure, item));
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
    return buildFetchResponse(seq, out);
  }

  private async onDone(state: CommandState, parts: Buffer[], head: ResponseHead): Promise<Buffer> {
    await Promise.all(state.pending);
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
