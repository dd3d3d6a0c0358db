/**
 * The two ways a notification leaves postern: an HTTP(S) webhook (JSON POST, certificate verified,
 * optional bearer token) and email (nodemailer SMTP, STARTTLS or implicit TLS verified). Each send is
 * one attempt bounded by ALARM_LIMITS.sendTimeoutMs; it resolves when the receiver accepted the
 * notification and rejects otherwise (the channel retries). Error messages name the receiver by its
 * origin only: a webhook URL's path and query may carry a secret and are never logged.
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { isIP } from 'node:net';
import type { AlarmEmailConfig, AlarmWebhookConfig, SecretRef } from '../config/alarms.js';
import { ErrorCodes, PosternError } from '../errors.js';
import { nodemailer } from '../lazy-nodemailer.js';
import { ALARM_LIMITS } from '../limits.js';
import { emailText, type Outgoing, subjectOf } from './payload.js';

export interface Transport {
  /** `webhook https://host:port`, `email smtp.example.org:587` (for the log). */
  readonly name: string;
  send(n: Outgoing): Promise<void>;
  close(): void;
}

/** The first line of a secret file, or an environment variable; E_CONFIG when missing or empty. */
export function readSecret(s: SecretRef, what: string, env: NodeJS.ProcessEnv = process.env): string {
  if (s.kind === 'env') {
    const v = env[s.name];
    if (v === undefined || v === '') throw new PosternError(ErrorCodes.CONFIG, `alarms: ${what}: environment variable ${s.name} is not set`);
    return v;
  }
  let t: string;
  try {
    t = readFileSync(s.file, 'utf8');
  } catch (e) {
    throw new PosternError(ErrorCodes.CONFIG, `alarms: ${what}: cannot read ${s.file}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  const line = t.split(/\r?\n/)[0] ?? '';
  if (line === '') throw new PosternError(ErrorCodes.CONFIG, `alarms: ${what}: ${s.file} is empty`);
  return line;
}

function fail(message: string): PosternError {
  return new PosternError(ErrorCodes.ALARM, message);
}

export interface WebhookOptions {
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

export function webhookTransport(cfg: AlarmWebhookConfig, opts: WebhookOptions = {}): Transport {
  const url = new URL(cfg.url);
  const token = cfg.bearerToken ? readSecret(cfg.bearerToken, 'webhook bearer token', opts.env) : null;
  if (token !== null && !/^[\x21-\x7e]+$/.test(token))
    throw new PosternError(ErrorCodes.CONFIG, 'alarms: webhook bearer token: expected printable ASCII without spaces');
  const ca = cfg.caFile ? readFileSync(cfg.caFile) : undefined;
  const timeoutMs = opts.timeoutMs ?? ALARM_LIMITS.sendTimeoutMs;
  const name = `webhook ${url.origin}`;
  return {
    name,
    send(n) {
      const body = Buffer.from(JSON.stringify(n));
      const headers: Record<string, string> = {
        ...cfg.headers,
        'content-type': 'application/json',
        'content-length': String(body.length),
        'user-agent': 'postern-alarms',
        ...(token !== null ? { authorization: `Bearer ${token}` } : {}),
      };
      return new Promise<void>((resolve, reject) => {
        let done = false;
        const finish = (err: Error | null) => {
          if (done) return;
          done = true;
          clearTimeout(timer);
          if (err) {
            req.destroy();
            reject(err);
          } else resolve();
        };
        const onResponse = (res: http.IncomingMessage) => {
          let read = 0;
          res.on('data', (c: Buffer) => {
            read += c.length;
            if (read > ALARM_LIMITS.maxResponseBytes) res.destroy();
          });
          res.on('error', () => undefined);
          const status = res.statusCode ?? 0;
          const settle = () => finish(status >= 200 && status < 300 ? null : fail(`${name} answered ${status}`));
          res.on('end', settle);
          res.on('close', settle);
        };
        const common = {
          method: 'POST',
          hostname: url.hostname.replace(/^\[|\]$/g, ''),
          port: url.port || undefined,
          path: `${url.pathname}${url.search}`,
          headers,
          agent: false as const,
        };
        const req =
          url.protocol === 'https:'
            ? https.request(
                { ...common, rejectUnauthorized: true, ...(ca ? { ca } : {}), ...(isIP(common.hostname) ? {} : { servername: common.hostname }) },
                onResponse,
              )
            : http.request(common, onResponse);
        const timer = setTimeout(() => finish(fail(`${name}: no answer within ${timeoutMs} ms`)), timeoutMs);
        timer.unref();
        req.on('error', (e: NodeJS.ErrnoException) => finish(fail(`${name}: ${e.code ?? e.message}`)));
        req.end(body);
      });
    },
    close() {
      // agent: false: no pooled connections to end
    },
  };
}

export interface EmailOptions {
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

export function emailTransport(cfg: AlarmEmailConfig, opts: EmailOptions = {}): Transport {
  const pass = cfg.auth ? readSecret(cfg.auth.password, 'email password', opts.env) : null;
  const timeoutMs = opts.timeoutMs ?? ALARM_LIMITS.sendTimeoutMs;
  const ca = cfg.caFile ? readFileSync(cfg.caFile) : undefined;
  const name = `email ${cfg.host}:${cfg.port}`;
  // nodemailer is loaded here, for an e-mail alarm only (src/lazy-nodemailer.ts)
  const transport = nodemailer().createTransport({
    host: cfg.host,
    port: cfg.port,
    secure: cfg.tls === 'implicit',
    requireTLS: cfg.tls === 'starttls',
    ignoreTLS: cfg.tls === 'none',
    tls: { rejectUnauthorized: cfg.verify, ...(ca ? { ca } : {}), ...(isIP(cfg.host) ? {} : { servername: cfg.host }) },
    ...(cfg.auth && pass !== null ? { auth: { user: cfg.auth.user, pass } } : {}),
    connectionTimeout: timeoutMs,
    greetingTimeout: timeoutMs,
    socketTimeout: timeoutMs,
    logger: false,
    debug: false,
  });
  return {
    name,
    async send(n) {
      try {
        const info = await transport.sendMail({ from: cfg.from, to: cfg.to, subject: subjectOf(n), text: emailText(n) });
        if (info.accepted.length === 0) throw fail(`${name}: every recipient refused`);
      } catch (e) {
        if (e instanceof PosternError) throw e;
        const err = e as { code?: string; responseCode?: number; message?: string };
        // nodemailer's message may quote the server's reply; the code and reply code say enough
        throw fail(`${name}: ${err.code ?? 'error'}${err.responseCode ? ` ${err.responseCode}` : ''}`);
      }
    },
    close() {
      transport.close();
    },
  };
}
