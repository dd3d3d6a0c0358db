/**
 * The scanners' signature version, part of the verdict cache's key (src/inspect/verdict-store.ts):
 * new signatures re-vet every message. clamd answers `zVERSION\0` with
 * `ClamAV 1.0.7/27473/Sat Nov 28 09:32:04 2026\0` (engine / signature database version / its date).
 * The versions of every endpoint that answered are joined (sorted), so a fleet in the middle of an
 * update keys verdicts by the set it has. Asked at start and every
 * VERDICT_STORE_LIMITS.signatureRefreshMs; until an answer came, current() is null and the store is
 * not used (neither read nor written).
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

/** Polls clamd's VERSION on every endpoint; the store is usable once one answered. */
export class ClamdSignatures implements SignatureSource {
  private value: string | null = null;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  readonly ready: Promise<void>;

  constructor(
    private readonly endpoints: readonly ClamdEndpoint[],
    refreshMs: number = VERDICT_STORE_LIMITS.signatureRefreshMs,
  ) {
    this.ready = this.refresh();
    this.timer = setInterval(() => void this.refresh(), refreshMs);
    this.timer.unref();
  }

  async refresh(): Promise<void> {
    const answers = await Promise.all(this.endpoints.map((ep) => clamdVersion(ep)));
    if (this.closed) return;
    const known = [...new Set(answers.filter((a): a is string => a !== null))].sort();
    // no endpoint answered: keep the last known version (the scan itself will tempfail if clamd is gone)
    if (known.length > 0) this.value = `clamd:${known.join('|')}`;
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
