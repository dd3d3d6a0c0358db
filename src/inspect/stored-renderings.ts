/**
 * FETCH items rendered from the stored verdicts of changed messages, kept per process for the next
 * sessions of the same mailbox (issue 10: a reconnecting client's list sync read and rendered each
 * changed message again, about 50 us each, on the path of its first FETCH).
 *
 * One memo per scope and basis (the caller's key), bound to one answer of the verdict store's index
 * (`view`: the shared, frozen maps the IMAP inspector built from it) and to the store's state when
 * it was made (`token`: VerdictStore.changeToken). Whether a session may answer from a memo is the
 * caller's decision (imap-inspector.ts: only while its index is that answer, uncorrected, and the
 * store is unchanged); this module only keeps them, least recently used first, within `maxBytes`
 * (each item counts its bytes plus KEPT_ITEM_OVERHEAD; an item over maxBytes/64 is not kept; what is
 * kept is a copy in memory of its own, never a view that keeps a larger buffer alive).
 */
import type { Verdict } from '../policy/types.js';

/** What renderStored() made of one changed message's stored verdict: its status and each item's rendering by key. */
export interface StoredRendering {
  status: Verdict['status'];
  items: Map<string, Buffer>;
}

/** The renderings made under one index answer of one scope and basis. */
export interface RenderingMemo {
  /** The index answer the memo is bound to. */
  readonly view: WeakRef<object>;
  /** The store's change token when the memo was made. */
  readonly token: string;
  readonly uids: Map<number, StoredRendering>;
  bytes: number;
}

/** What a kept item counts against the bound besides its bytes (its key, the map's entry, the Buffer object): an RFC822.SIZE is 20 bytes. */
export const KEPT_ITEM_OVERHEAD = 128;

function keptBytes(r: Buffer): number {
  return r.length + KEPT_ITEM_OVERHEAD;
}

/**
 * `r` in memory of its own: a small Buffer is a view of a shared 8 KB pool slab (a stored item
 * decoded from base64, a header literal) and would keep the whole slab alive with it, far more than
 * the bound counts.
 */
function ownCopy(r: Buffer): Buffer {
  if (r.byteOffset === 0 && r.buffer.byteLength === r.length) return r;
  const c = Buffer.allocUnsafeSlow(r.length);
  r.copy(c);
  return c;
}

export class StoredRenderings {
  /** Most recently used last. */
  private readonly memos = new Map<string, RenderingMemo>();
  private total = 0;

  constructor(private readonly maxBytes: number) {}

  /** Bytes counted in all. */
  get bytes(): number {
    return this.total;
  }

  /** The memo of `key` bound to `view` and `token` (made, replacing one bound otherwise, when there is none), now the most recently used. */
  bind(key: string, view: object, token: string): RenderingMemo {
    let memo = this.memos.get(key);
    if (!memo || memo.view.deref() !== view || memo.token !== token) {
      this.dropMemo(key);
      memo = { view: new WeakRef(view), token, uids: new Map(), bytes: 0 };
    } else this.memos.delete(key);
    this.memos.set(key, memo);
    return memo;
  }

  /**
   * Keeps `made` (item key, rendering) for `uid` in `memo`, the memo of `key`, unless that memo was
   * dropped or replaced meanwhile. The least recently used memos of other keys go first when the
   * bound needs room; what still does not fit is not kept. A rendering of another status replaces
   * what was kept for the uid.
   */
  keep(key: string, memo: RenderingMemo, uid: number, status: Verdict['status'], made: ReadonlyArray<readonly [string, Buffer]>): void {
    if (this.memos.get(key) !== memo) return;
    let kept = memo.uids.get(uid);
    if (kept && kept.status !== status) {
      this.drop(key, uid);
      kept = undefined;
    }
    let add = 0;
    const fresh: Array<readonly [string, Buffer]> = [];
    for (const m of made) {
      if (kept?.items.has(m[0]) || m[1].length > this.maxBytes / 64) continue;
      add += keptBytes(m[1]);
      fresh.push(m);
    }
    if (fresh.length === 0) return;
    for (const [k, m] of this.memos) {
      if (this.total + add <= this.maxBytes) break;
      if (m !== memo) this.dropMemo(k);
    }
    if (this.total + add > this.maxBytes) return;
    if (!kept) {
      kept = { status, items: new Map() };
      memo.uids.set(uid, kept);
    }
    for (const [k, r] of fresh) kept.items.set(k, ownCopy(r));
    memo.bytes += add;
    this.total += add;
  }

  /** Drops what the memo of `key` keeps for `uid` (its stored verdict was forgotten or found changed). */
  drop(key: string, uid: number): void {
    const m = this.memos.get(key);
    const r = m?.uids.get(uid);
    if (!m || !r) return;
    m.uids.delete(uid);
    let n = 0;
    for (const v of r.items.values()) n += keptBytes(v);
    m.bytes -= n;
    this.total -= n;
  }

  /** Drops the memo of `key`. */
  dropMemo(key: string): void {
    const m = this.memos.get(key);
    if (!m) return;
    this.memos.delete(key);
    this.total -= m.bytes;
  }

  /** Drops every memo. */
  clear(): void {
    this.memos.clear();
    this.total = 0;
  }
}
