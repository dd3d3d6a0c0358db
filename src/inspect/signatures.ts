/**
 * The scanners' signature version, part of the verdict cache's key (src/inspect/verdict-store.ts):
 * new signatures re-vet every message. clamd answers `zVERSION\0` with
 * `ClamAV 1.0.7/27473/Sat Nov 28 09:32:04 2026\0` (engine / signature database version / its date).
 * Asked at start and every VERDICT_STORE_LIMITS.signatureRefreshMs. The last version each configured
 * endpoint answered is remembered; the key is the set of those versions (distinct, sorted, joined),
 * one per endpoint the scanner may send a message to, so a fleet in the middle of an update keys
 * verdicts by the set it has and a verdict is reused only while the whole fleet is unchanged. Until
 * every endpoint has answered once, current() is null and the store is not used (neither read nor
 * written): an endpoint that was restarting or busy at the refresh still gets scans (round-robin),
 * and its old signatures' "clean" must not be stored under the others' newer version. An endpoint
 * that stops answering keeps its last version (its scans fail meanwhile; if it comes back changed,
 * the next refresh changes the key).
 */
import net from 'node:net';
import type { ClamdEndpoint } from '../config/types.js';
import { VERDICT_STORE_LIMITS } from '../limits.js';

const VERSION_CMD = Buffer.from('zVERSION\0', 'latin1');
const MAX_REPLY = VERDICT_STORE_LIMITS.maxVersionReplyBytes;

/** One VERSION exchange; null on any failure (connect, timeout, an answer that is not `ClamAV ...`). */
export function clamdVersion(ep: ClamdEndpoint, timeoutMs: number = VERDICT_STORE_LIMITS.signatureTimeoutMs): Promise<string | null> {
  return new Promise((resolve) => {
    const sock = ep.socket ? net.createConnection(ep.socket) : net.createConnection({ host: ep.host ?? '127.0.0.1', port: ep.port ?? 3310 });
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const done = (v: string | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(v);
    };
    const timer = setTimeout(() => done(null), timeoutMs);
    sock.on('connect', () => sock.write(VERSION_CMD));
    sock.on('data', (d: Buffer) => {
      chunks.push(d);
      size += d.length;
      const all = Buffer.concat(chunks);
      const nul = all.indexOf(0);
      // an answer longer than the bound is no version (not a cut one)
      if (nul > MAX_REPLY || (nul < 0 && size > MAX_REPLY)) done(null);
      else if (nul >= 0) {
        const text = all.toString('latin1', 0, nul).trim();
        done(/^ClamAV [\x20-\x7e]+$/.test(text) ? text : null);
      }
    });
    sock.on('end', () => {
      if (size > MAX_REPLY) return done(null);
      const text = Buffer.concat(chunks).toString('latin1').replace(/\0.*$/s, '').trim();
      done(/^ClamAV [\x20-\x7e]+$/.test(text) ? text : null);
    });
    sock.on('error', () => done(null));
  });
}

export interface SignatureSource {
  /** The current signature version string ('' when no scanner is involved); null = unknown (do not use the store). */
  current(): string | null;
  close(): void;
}

/** A fixed version (no scanner in use, or a scanner object that carries its own identity). */
export function fixedSignatures(v: string): SignatureSource {
  return { current: () => v, close: () => {} };
}

/** Polls clamd's VERSION on every endpoint; the store is usable once every endpoint answered. */
export class ClamdSignatures implements SignatureSource {
  private value: string | null = null;
  /** The last version each endpoint answered (by its index in `endpoints`); undefined: never answered. */
  private readonly versions: (string | undefined)[];
  /** Per endpoint, the refresh its remembered version came from: an older refresh that ends later does not overwrite it. */
  private readonly from: number[];
  private refreshes = 0;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  readonly ready: Promise<void>;

  constructor(
    private readonly endpoints: readonly ClamdEndpoint[],
    refreshMs: number = VERDICT_STORE_LIMITS.signatureRefreshMs,
  ) {
    this.versions = endpoints.map(() => undefined);
    this.from = endpoints.map(() => 0);
    this.ready = this.refresh();
    this.timer = setInterval(() => void this.refresh(), refreshMs);
    this.timer.unref();
  }

  async refresh(): Promise<void> {
    const n = ++this.refreshes;
    const answers = await Promise.all(this.endpoints.map((ep) => clamdVersion(ep)));
    if (this.closed) return;
    answers.forEach((a, i) => {
      // no answer: the endpoint keeps its last known version (its scans tempfail while it is gone)
      if (a !== null && n > this.from[i]!) {
        this.versions[i] = a;
        this.from[i] = n;
      }
    });
    // fail closed: an endpoint never heard from may scan with any signatures, so nothing is keyed
    if (this.endpoints.length === 0 || this.versions.some((v) => v === undefined)) {
      this.value = null;
      return;
    }
    this.value = `clamd:${[...new Set(this.versions as string[])].sort().join('|')}`;
  }

  current(): string | null {
    return this.value;
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
