/**
 * What a notification may contain, and its two renderings (webhook JSON, email subject and text).
 *
 * A notification is built ONLY from the fields of AlarmInput, each checked here: text is cut to
 * ALARM_LIMITS.maxFieldChars with control characters removed, lists are deduplicated and capped at
 * ALARM_LIMITS.maxListItems, a reason is a lower-case word, a quarantine id is hex. Nothing else of
 * the event that raised it (a log record, an error message, a protocol line, a message body) can
 * reach a notification, so no password, token, AUTH payload or message content ever does.
 */
import type { AlarmType } from '../config/alarms.js';
import { ALARM_LIMITS } from '../limits.js';

export type { AlarmType } from '../config/alarms.js';

/** One event, as the producers describe it (src/alarms/tap.ts, or any caller of Alarms.emit). */
export interface AlarmInput {
  type: AlarmType;
  listener?: string;
  /** A collector account (config name), for a message the collector fetched. */
  account?: string;
  /** The client address (address:port as logged). */
  client?: string;
  /** The user as the upstream accepted it (never a refused login's text). */
  user?: string;
  /** The upstream host (host:port). */
  upstream?: string;
  viruses?: readonly string[];
  rules?: readonly string[];
  quarantineId?: string;
  /** A scanner endpoint (host:port or unix:/path). */
  endpoint?: string;
  /** clamd, rspamd. */
  engine?: string;
  /** A short machine word (endpoint_down, login_failures, certificate_expired...). */
  reason?: string;
  /** auto_block: when the block ends (ISO time). */
  until?: string;
  /** auto_block: how many blocks of this address in a row. */
  strikes?: number;
}

export interface Notification {
  source: 'postern';
  type: AlarmType;
  time: string;
  listener?: string;
  account?: string;
  client?: string;
  user?: string;
  upstream?: string;
  viruses?: string[];
  rules?: string[];
  quarantineId?: string;
  endpoint?: string;
  engine?: string;
  reason?: string;
  until?: string;
  strikes?: number;
}

/** The one notification sent at the end of an interval in which some of a type were suppressed. */
export interface SummaryNotification {
  source: 'postern';
  type: AlarmType;
  summary: true;
  time: string;
  intervalStart: string;
  intervalEnd: string;
  /** Notifications sent in the interval (the rate limit) and suppressed after it. */
  sent: number;
  suppressed: number;
  listeners: string[];
  accounts: string[];
  clients: string[];
  users: string[];
  upstreams: string[];
  viruses: string[];
  rules: string[];
  endpoints: string[];
}

export type Outgoing = Notification | SummaryNotification;

export function text(v: unknown): string | undefined {
  if (typeof v !== 'string') return undefined;
  const t = v.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, '').trim();
  if (t === '') return undefined;
  return t.length > ALARM_LIMITS.maxFieldChars ? `${t.slice(0, ALARM_LIMITS.maxFieldChars - 1)}…` : t;
}

function list(v: unknown): string[] | undefined {
  if (!Array.isArray(v)) return undefined;
  const out: string[] = [];
  for (const x of v) {
    const t = text(x);
    if (t !== undefined && !out.includes(t)) out.push(t);
    if (out.length >= ALARM_LIMITS.maxListItems) break;
  }
  return out.length > 0 ? out : undefined;
}

const WORD = /^[a-z][a-z0-9_]{0,39}$/;
const HEX_ID = /^[0-9a-f]{1,64}$/;
const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,3})?Z$/;

/** The notification for one event: only the checked fields of AlarmInput. */
export function buildNotification(input: AlarmInput, time: Date): Notification {
  const n: Notification = { source: 'postern', type: input.type, time: time.toISOString() };
  const set = <K extends keyof Notification>(k: K, v: Notification[K] | undefined) => {
    if (v !== undefined) n[k] = v;
  };
  set('listener', text(input.listener));
  set('account', text(input.account));
  set('client', text(input.client));
  set('user', text(input.user));
  set('upstream', text(input.upstream));
  set('viruses', list(input.viruses));
  set('rules', list(input.rules));
  set('quarantineId', typeof input.quarantineId === 'string' && HEX_ID.test(input.quarantineId) ? input.quarantineId : undefined);
  set('endpoint', text(input.endpoint));
  set('engine', typeof input.engine === 'string' && WORD.test(input.engine) ? input.engine : undefined);
  set('reason', typeof input.reason === 'string' && WORD.test(input.reason) ? input.reason : undefined);
  set('until', typeof input.until === 'string' && ISO.test(input.until) ? input.until : undefined);
  set('strikes', typeof input.strikes === 'number' && Number.isSafeInteger(input.strikes) && input.strikes >= 0 ? input.strikes : undefined);
  return n;
}

const TITLES: Record<AlarmType, string> = {
  virus: 'virus found',
  scan_error: 'scanner error',
  quarantine_failed: 'quarantine failed',
  auto_block: 'client address auto-blocked',
  upstream_tls: 'upstream TLS/certificate failure',
};

/** The email subject (one line, ASCII-safe words of the notification only). */
export function subjectOf(n: Outgoing): string {
  if ('summary' in n) return `[postern] ${n.suppressed} more "${TITLES[n.type]}" alarm(s) suppressed`;
  const what =
    n.type === 'virus'
      ? (n.viruses ?? []).slice(0, 3).join(', ')
      : n.type === 'auto_block'
        ? (n.client ?? '')
        : n.type === 'scan_error'
          ? (n.endpoint ?? n.engine ?? '')
          : (n.upstream ?? n.listener ?? '');
  return text(`[postern] ${TITLES[n.type]}${what ? `: ${what}` : ''}`) ?? '[postern] alarm';
}

/** The email text: one `key: value` line per field. */
export function emailText(n: Outgoing): string {
  const lines = [`postern alarm: ${TITLES[n.type]}${'summary' in n ? ' (summary of suppressed alarms)' : ''}`, ''];
  for (const [k, v] of Object.entries(n)) {
    if (k === 'source' || k === 'summary') continue;
    if (Array.isArray(v)) {
      if (v.length > 0) lines.push(`${k}: ${v.join(', ')}`);
    } else lines.push(`${k}: ${String(v)}`);
  }
  return `${lines.join('\n')}\n`;
}
