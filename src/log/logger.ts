/**
 * pino JSON logging and the redaction of protocol lines. Secrets never reach the log: structured
 * fields with credential-like names are censored by pino, and protocol lines go through redactLine,
 * which passes only lines it recognises as harmless and masks the arguments of every command that
 * carries a credential.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import pino, { type DestinationStream, type Logger } from 'pino';
import type { LogConfig } from '../config/types.js';

export type { Logger } from 'pino';

export const REDACTED = '[redacted]';

/** Field names whose values are censored wherever they appear (top level or one level down). */
const SECRET_KEYS = ['password', 'pass', 'passwd', 'secret', 'credentials', 'authorization', 'saslResponse', 'initialResponse'];
const REDACT_PATHS = SECRET_KEYS.flatMap((k) => [k, `*.${k}`]);

/**
 * Creates the process logger. `dest` overrides the configured destination (tests pass a sink).
 * With `cfg.file` the log goes to that file (directory created); otherwise to stdout.
 */
export function createLogger(cfg: LogConfig, dest?: DestinationStream): Logger {
  let stream = dest;
  if (!stream) {
    if (cfg.file) {
      mkdirSync(path.dirname(cfg.file), { recursive: true });
      stream = pino.destination({ dest: cfg.file, append: true, sync: false, mkdir: true });
    } else {
      stream = pino.destination({ dest: 1, sync: false });
    }
  }
  return pino(
    {
      level: cfg.level,
      base: { name: 'postern', pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: REDACT_PATHS, censor: REDACTED },
      serializers: { err: pino.stdSerializers.err },
      formatters: { level: (label) => ({ level: label }) },
    },
    stream,
  );
}

/** Longest text redactLine returns; protocol lines can be 64 KiB and logs should stay readable. */
export const MAX_LOGGED_LINE = 512;

export interface RedactOptions {
  /**
   * The line is a client's answer inside a SASL exchange (after `+` / `+ challenge`), or the rest
   * of a command after a literal: mask it whole. When unknown, lines that do not look like a
   * command are masked anyway.
   */
  saslContinuation?: boolean;
  /** Cap on the returned length (default MAX_LOGGED_LINE). */
  maxLength?: number;
}

// `tag SP word [SP word] rest`: commands, and responses (`* OK`, `a1 NO`, `+ text`) alike. Lines
// with another shape from a client are SASL answers or literal remainders and are masked whole.
const IMAP_LINE = /^(\S+) (\S+)(?: (\S+))?(.*)$/s;
// Commands whose arguments are (or may be) credentials: everything after the command is masked.
const IMAP_SECRET = new Set(['LOGIN', 'AUTHENTICATE']);
const POP3_COMMANDS = new Set([
  'USER', 'PASS', 'APOP', 'AUTH', 'STAT', 'LIST', 'RETR', 'DELE', 'NOOP', 'RSET', 'QUIT', 'TOP', 'UIDL', 'CAPA', 'STLS', 'UTF8', 'LANG',
]);

function finish(text: string, max: number): string {
  const clean = text.replace(/\r?\n$/, '').replace(/[\x00-\x08\x0a-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  return clean.length > max ? `${clean.slice(0, max)}…[${clean.length} chars]` : clean;
}

/**
 * Returns a loggable version of one protocol line sent by a client (server lines pass through
 * unchanged when they look like responses). Masks:
 * - IMAP: every argument of LOGIN; AUTHENTICATE's mechanism is kept, its initial response masked;
 *   any line that is not `tag SP command ...` (SASL continuation answers, post-literal remainders).
 * - POP3: PASS, APOP and AUTH arguments after the mechanism; any line whose first word is not a
 *   POP3 command (SASL continuation answers).
 */
export function redactLine(line: string | Buffer, protocol: 'imap' | 'pop3', opts: RedactOptions = {}): string {
  const max = opts.maxLength ?? MAX_LOGGED_LINE;
  // invalid UTF-8 decodes to U+FFFD without swallowing the next ASCII byte, so word splitting stays right
  const text = (typeof line === 'string' ? line : line.toString('utf8')).replace(/\r?\n$/, '').replace(/\r$/, '');
  if (opts.saslContinuation) return REDACTED;
  return protocol === 'imap' ? finish(redactImap(text), max) : finish(redactPop3(text), max);
}

function redactImap(text: string): string {
  // bare `*` cancels a SASL exchange, `+` is an empty continuation, DONE ends IDLE: no secret in any
  if (text === '*' || text === '+' || text === '+ ' || text.toUpperCase() === 'DONE') return text;
  const m = IMAP_LINE.exec(text);
  if (!m) return REDACTED;
  const [, tag, word, sub, rest] = m;
  const upper = word!.toUpperCase();
  if (upper === 'AUTHENTICATE' && sub !== undefined) return `${tag} ${word} ${sub}${rest ? ` ${REDACTED}` : ''}`;
  if (IMAP_SECRET.has(upper)) return `${tag} ${word} ${REDACTED}`;
  return text;
}

function redactPop3(text: string): string {
  if (text.startsWith('+OK') || text.startsWith('-ERR') || text.startsWith('+ ') || text === '+') return text;
  const m = /^([A-Za-z0-9]{1,8})(?: (.*))?$/s.exec(text);
  if (!m) return REDACTED;
  const cmd = m[1]!.toUpperCase();
  const args = m[2];
  if (!POP3_COMMANDS.has(cmd)) return REDACTED;
  if (args === undefined) return text;
  if (cmd === 'PASS') return `${m[1]} ${REDACTED}`;
  if (cmd === 'APOP') {
    const user = args.split(' ')[0];
    return `${m[1]} ${user} ${REDACTED}`;
  }
  if (cmd === 'AUTH') {
    const [mech, ...ir] = args.split(' ');
    return ir.length > 0 ? `${m[1]} ${mech} ${REDACTED}` : text;
  }
  return text;
}
