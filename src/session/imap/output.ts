/**
 * The IMAP session's output to the client: one ordered queue. Bytes go out at once while nothing is
 * queued; a held response (an interceptor's rendering, a promise) takes its place in the queue and
 * everything sent after it waits behind it, so a rewritten FETCH keeps its position relative to what
 * the upstream sent later. While the head is not rendered the host's `keepalive` timer may write
 * untagged OK lines (the only bytes allowed between responses); between queued responses the queue asks
 * the host whether the client has read its output (awaitClientDrain / onClientDrained), so a slow reader
 * does not make postern render everything at once.
 *
 * The queue does not pause the upstream itself: it counts what it holds (`held`: held responses not
 * written yet, rendered or not; `queuedBytes`: plain bytes waiting behind them) and reports every
 * change through `onChange`, and the relay decides whether to read on (relay.ts updateUpstreamPause:
 * several messages of one FETCH are vetted while later ones arrive, within MAX_VETS_IN_FLIGHT and
 * OUTPUT_QUEUE_PAUSE_BYTES).
 *
 * An output may be one buffer or a list of pieces (a rendered FETCH response: its head, views of the
 * sanitised message, its tail), so a large message is never copied into one buffer to be queued: the
 * pieces are written in order, one host.sendClient each (the host's write batch joins adjacent views
 * without copying), and every count of queued bytes is the sum of the pieces.
 */

import type { SessionHost } from '../types.js';
import { b, CRLF } from './state.js';

/** What the queue writes: one buffer, or pieces written in order (nothing concatenated). */
export type Output = Buffer | readonly Buffer[];

/** Bytes of an output (the sum of its pieces). */
export function outputBytes(o: Output): number {
  if (Buffer.isBuffer(o)) return o.length;
  let n = 0;
  for (const piece of o) n += piece.length;
  return n;
}

/** A held response in the queue: written once its rendering settles. */
interface HeldOutput {
  held: true;
  settled: { ok: true; data: Output } | { ok: false; err: unknown } | null;
}

/** A plain output in the queue, with its byte count. */
interface PlainOutput {
  held: false;
  data: Output;
  bytes: number;
}

/** What the queue needs of its session. */
export interface OutputOwner {
  readonly host: SessionHost;
  readonly closed: boolean;
  fail(err: unknown, side: 'upstream'): void;
}

export class ClientOutput {
  private readonly queue: Array<PlainOutput | HeldOutput> = [];
  /** The queue is being written out: later output waits behind it. */
  private flushing = false;
  /** pump() is running. */
  private pumping = false;
  /** Waiting for onClientDrained before the next queued response. */
  private waitingDrain = false;
  /** The held response at the head of the queue, not rendered yet (the only time a keep-alive line may be written). */
  private awaitingHeld: HeldOutput | null = null;
  /** The client has part of a response relayed frame by frame: nothing else may be written now, not even a BYE. */
  midOutput = false;
  /** Runs once everything queued has been written (the session ends after a LOGOUT). */
  private afterFlush: (() => void) | null = null;
  /** Held responses in the queue, not written yet (rendered or not). */
  private heldCount = 0;
  /** Bytes of the plain outputs in the queue, all pieces counted (behind a held response, or waiting for the client to drain). */
  private plainBytes = 0;
  /** Called whenever `held`, `queuedBytes` or `idle` may have changed (the relay's upstream pause). */
  onChange: (() => void) | null = null;

  constructor(private readonly owner: OutputOwner) {}

  /** Nothing is queued: a line written now goes out at once. */
  get idle(): boolean {
    return this.queue.length === 0 && !this.flushing;
  }

  /** Held responses queued and not written yet (rendered or not). */
  get held(): number {
    return this.heldCount;
  }

  /** Bytes of plain (not held) output queued. */
  get queuedBytes(): number {
    return this.plainBytes;
  }

  /** Sends (or queues behind a held response); pieces go out in order. After the session closed only a BYE line is still sent. */
  send(data: Output | string): void {
    if (this.owner.closed && typeof data === 'string' && !data.startsWith('* BYE')) return;
    const out = typeof data === 'string' ? b(data) : data;
    if (!this.idle) {
      const bytes = outputBytes(out);
      this.queue.push({ held: false, data: out, bytes });
      this.plainBytes += bytes;
      this.onChange?.();
      return;
    }
    this.write(out);
  }

  /** Queues a promised output (a held, rewritten response, one buffer or its pieces); later output waits behind it. */
  sendLater(p: Promise<Output>): void {
    const held: HeldOutput = { held: true, settled: null };
    this.queue.push(held);
    this.heldCount++;
    this.flushing = true;
    p.then(
      (data) => {
        held.settled = { ok: true, data };
        this.pump();
      },
      (err: unknown) => {
        held.settled = { ok: false, err };
        this.pump();
      },
    );
    this.pump();
    this.onChange?.();
  }

  onClientDrained(): void {
    if (!this.waitingDrain) return;
    this.waitingDrain = false;
    this.pump();
  }

  /** The host's `keepalive` timer fired. */
  keepalive(): void {
    if (this.awaitingHeld && !this.owner.closed) this.owner.host.sendClient(b(`* OK postern: still inspecting message content${CRLF}`));
  }

  /** Runs `fn` once everything queued so far has been written: at once when nothing is queued. A second call while one waits is ignored. */
  whenFlushed(fn: () => void): void {
    if (this.idle) fn();
    else this.afterFlush ??= fn;
  }

  /** Drops everything queued (the hold deadline passed: what is still being inspected is never sent). */
  drop(): void {
    this.afterFlush = null;
    this.queue.length = 0;
    this.heldCount = 0;
    this.plainBytes = 0;
    this.awaitingHeld = null;
    this.waitingDrain = false;
    this.flushing = false;
    this.owner.host.setTimer?.('keepalive', null);
    this.onChange?.();
  }

  /** Writes the queue out in order, as far as the held responses at its head are rendered and the client reads. */
  private pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (this.queue.length > 0) {
        if (this.owner.closed) {
          this.queue.length = 0;
          this.heldCount = 0;
          this.plainBytes = 0;
          return;
        }
        if (this.waitingDrain) return;
        const head = this.queue[0]!;
        let out: Output;
        if (!head.held) out = head.data;
        else {
          if (!head.settled) {
            if (this.awaitingHeld !== head) {
              // a long scan must not make the client give up: untagged OK lines are legal between
              // responses; the host owns the timer and calls onTimer('keepalive')
              this.awaitingHeld = head;
              this.owner.host.setTimer?.('keepalive', this.owner.host.listener.inspect.keepaliveMs || null);
            }
            return;
          }
          if (this.awaitingHeld === head) {
            this.awaitingHeld = null;
            this.owner.host.setTimer?.('keepalive', null);
          }
          if (!head.settled.ok) {
            this.queue.length = 0;
            this.heldCount = 0;
            this.plainBytes = 0;
            this.flushing = false;
            this.owner.fail(head.settled.err, 'upstream');
            return;
          }
          out = head.settled.data;
        }
        this.queue.shift();
        if (!head.held) this.plainBytes -= head.bytes;
        else this.heldCount--;
        this.write(out);
        this.onChange?.();
        // a client that reads slowly must not make postern render every queued response at once
        const host = this.owner.host;
        if (this.queue.length > 0 && host.awaitClientDrain && !host.awaitClientDrain()) {
          this.waitingDrain = true;
          return;
        }
      }
      if (this.flushing) {
        this.flushing = false;
        this.onChange?.();
        const then = this.afterFlush;
        this.afterFlush = null;
        then?.();
      }
    } finally {
      this.pumping = false;
    }
  }

  /** One output to the host: a buffer as it is, pieces one by one in order (empty pieces skipped). */
  private write(out: Output): void {
    const host = this.owner.host;
    if (Buffer.isBuffer(out)) {
      host.sendClient(out);
      return;
    }
    for (const piece of out) if (piece.length > 0) host.sendClient(piece);
  }
}
