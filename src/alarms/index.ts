/**
 * Alarms (issue 12, the seeds' "Proxy and AV Alarms"): notifications on a virus found, a scanner
 * error, a quarantine failure, an auto-block and an upstream TLS (certificate) failure, by email
 * and/or an HTTP webhook (docs/alarms.md).
 *
 * - `emit(input)` is the whole API for producers. It never throws, never awaits and never blocks:
 *   an event type switched off is ignored; the rate limit (src/alarms/rate.ts) decides whether it is
 *   sent or counted into the interval's one summary; a notification is built from the checked fields
 *   only (src/alarms/payload.ts) and put on each channel's bounded queue.
 * - A channel (email, webhook) delivers its queue one at a time: each attempt bounded by
 *   ALARM_LIMITS.sendTimeoutMs, at most ALARM_LIMITS.maxAttempts with a doubling delay; a full queue
 *   drops the new notification (`alarm.dropped`), a notification that failed every attempt is logged
 *   (`alarm.failed`); both at warn with E_ALARM. Sessions never wait for any of it.
 * - `close()` sends the pending summaries and waits up to ALARM_LIMITS.closeTimeoutMs for the queues.
 *
 * The composition root (src/cli.ts) builds one Alarms from `config.alarms` and lets src/alarms/tap.ts
 * raise the events from what the relay, the inspectors, the scanners and the edge already report.
 */
import type { Logger } from 'pino';
import type { AlarmsConfig } from '../config/alarms.js';
import { ErrorCodes } from '../errors.js';
import { ALARM_LIMITS } from '../limits.js';
import { logErr } from '../log/logger.js';
import { type AlarmInput, buildNotification, type Outgoing } from './payload.js';
import { AlarmRateLimit, realTimers, type Timers } from './rate.js';
import { emailTransport, readSecret, type Transport, webhookTransport } from './transports.js';

export type { AlarmInput, AlarmType, Notification, Outgoing, SummaryNotification } from './payload.js';

/** What producers are handed. */
export interface AlarmSink {
  emit(input: AlarmInput): void;
}

export interface ChannelOptions {
  queueMax?: number;
  maxAttempts?: number;
  retryDelayMs?: number;
  /** Hard bound of one attempt on top of the transport's own deadlines. */
  attemptTimeoutMs?: number;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}

/** One receiver: a bounded queue delivered in order, one notification at a time, retries bounded. */
export class Channel {
  private readonly queue: Outgoing[] = [];
  private running: Promise<void> | null = null;
  private stopped = false;
  private readonly queueMax: number;
  private readonly maxAttempts: number;
  private readonly retryDelayMs: number;
  private readonly attemptTimeoutMs: number;
  delivered = 0;
  failed = 0;
  dropped = 0;

  constructor(
    readonly transport: Transport,
    private readonly log: Logger,
    o: ChannelOptions = {},
  ) {
    this.queueMax = o.queueMax ?? ALARM_LIMITS.queueMax;
    this.maxAttempts = Math.max(1, o.maxAttempts ?? ALARM_LIMITS.maxAttempts);
    this.retryDelayMs = o.retryDelayMs ?? ALARM_LIMITS.retryDelayMs;
    this.attemptTimeoutMs = o.attemptTimeoutMs ?? ALARM_LIMITS.sendTimeoutMs * 2;
  }

  get pending(): number {
    return this.queue.length;
  }

  push(n: Outgoing): void {
    if (this.stopped) return;
    if (this.queue.length >= this.queueMax) {
      this.dropped++;
      this.log.warn(
        {
          event: 'alarm.dropped',
          channel: this.transport.name,
          type: n.type,
          limit: this.queueMax,
          err: { code: ErrorCodes.ALARM, message: `alarm queue full (${this.queueMax})` },
        },
        'alarm dropped: the queue is full',
      );
      return;
    }
    this.queue.push(n);
    if (!this.running) this.running = this.pump().finally(() => (this.running = null));
  }

  /** Resolves once the queue is empty, or after `ms`. */
  async idle(ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    while ((this.running || this.queue.length > 0) && Date.now() < deadline) {
      await Promise.race([this.running ?? Promise.resolve(), sleep(Math.max(1, Math.min(50, deadline - Date.now())))]);
    }
  }

  stop(): void {
    this.stopped = true;
    this.queue.length = 0;
    try {
      this.transport.close();
    } catch {
      // nothing to do
    }
  }

  private async pump(): Promise<void> {
    for (let n = this.queue.shift(); n !== undefined && !this.stopped; n = this.queue.shift()) {
      for (let attempt = 1; ; attempt++) {
        try {
          await this.attempt(n);
          this.delivered++;
          break;
        } catch (e) {
          if (attempt >= this.maxAttempts || this.stopped) {
            this.failed++;
            this.log.warn(
              { event: 'alarm.failed', channel: this.transport.name, type: n.type, attempts: attempt, err: logErr(e, ErrorCodes.ALARM) },
              'alarm not delivered',
            );
            break;
          }
          await sleep(this.retryDelayMs * 2 ** (attempt - 1));
        }
      }
    }
  }

  private attempt(n: Outgoing): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no result within ${this.attemptTimeoutMs} ms`)), this.attemptTimeoutMs);
      t.unref();
      let p: Promise<void>;
      try {
        p = this.transport.send(n);
      } catch (e) {
        clearTimeout(t);
        reject(e);
        return;
      }
      p.then(
        () => {
          clearTimeout(t);
          resolve();
        },
        (e: unknown) => {
          clearTimeout(t);
          reject(e);
        },
      );
    });
  }
}

export interface AlarmsDeps {
  log: Logger;
  /** Replace the transports (tests); default: from the config. */
  transports?: Transport[];
  now?: () => Date;
  timers?: Timers;
  channel?: ChannelOptions;
  env?: NodeJS.ProcessEnv;
}

export class Alarms implements AlarmSink {
  readonly channels: Channel[];
  private readonly rate: AlarmRateLimit;
  private readonly now: () => Date;
  private closed = false;

  constructor(
    readonly config: AlarmsConfig,
    private readonly deps: AlarmsDeps,
  ) {
    this.now = deps.now ?? (() => new Date());
    const transports =
      deps.transports ??
      [
        config.email ? emailTransport(config.email, { env: deps.env }) : null,
        config.webhook ? webhookTransport(config.webhook, { env: deps.env }) : null,
      ].filter((t): t is Transport => t !== null);
    this.channels = transports.map((t) => new Channel(t, deps.log, deps.channel));
    this.rate = new AlarmRateLimit(config.rate.max, config.rate.intervalMs, this.now, deps.timers ?? realTimers, (s) => this.dispatch(s));
  }

  emit(input: AlarmInput): void {
    try {
      if (this.closed || !this.config.enabled || this.config.events[input.type] !== true) return;
      const n = buildNotification(input, this.now());
      if (this.rate.admit(n)) this.dispatch(n);
    } catch (e) {
      this.deps.log.warn({ event: 'alarm.failed', type: input?.type, err: logErr(e) }, 'alarm could not be raised');
    }
  }

  private dispatch(n: Outgoing): void {
    for (const c of this.channels) c.push(n);
  }

  /** Sends the summaries of open intervals, waits for the queues (bounded), then stops. */
  async close(timeoutMs: number = ALARM_LIMITS.closeTimeoutMs): Promise<void> {
    if (this.closed) return;
    this.rate.flush();
    this.closed = true;
    await Promise.all(this.channels.map((c) => c.idle(timeoutMs)));
    for (const c of this.channels) c.stop();
  }
}

/** The alarms of a config, or null when there is no (enabled) `alarms:` section. Throws E_CONFIG for an unreadable secret. */
export function createAlarms(config: AlarmsConfig | undefined, log: Logger): Alarms | null {
  if (!config?.enabled) return null;
  return new Alarms(config, { log });
}

/** What `postern check` reports about the alarms: a password or token file that cannot be read, a variable not set. */
export function alarmsCheck(config: AlarmsConfig | undefined, env: NodeJS.ProcessEnv = process.env): string[] {
  const problems: string[] = [];
  if (!config?.enabled) return problems;
  const secrets: [string, import('../config/alarms.js').SecretRef | null | undefined][] = [
    ['email password', config.email?.auth?.password],
    ['webhook bearer token', config.webhook?.bearerToken],
  ];
  for (const [what, ref] of secrets) {
    if (!ref) continue;
    try {
      readSecret(ref, what, env);
    } catch (e) {
      problems.push((e as Error).message);
    }
  }
  return problems;
}
