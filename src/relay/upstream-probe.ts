/**
 * The capability probe of static upstreams, on sockets (issue 14): the composition root (src/cli.ts
 * serve) starts it beside the listeners and hands `mechanisms(listener)` to the server, which gives each
 * new session a snapshot (Connection.upstreamOAuth, read by the session as OAuthHostInfo). A static
 * listener offers XOAUTH2 / OAUTHBEARER only once a probe saw its upstream advertise them.
 *
 * One probe: connect (implicit TLS when configured, verified as a session's upstream connection is),
 * the dialogue of src/session/capability-probe.ts (greeting, CAPABILITY / CAPA, STARTTLS / STLS when
 * configured, again after TLS, LOGOUT / QUIT). No credential is ever sent. Each static listener is
 * probed at start, again every UPSTREAM_PROBE_LIMITS.refreshMs after a success and every retryMs after
 * a failure; a failure keeps what an earlier probe learned (the session checks the upstream again after
 * connecting). The timers are unref'd and stop with close(). Logged (event upstream.capabilities,
 * reason probe) when the result changes, and when probing starts or stops failing.
 */
import net from 'node:net';
import tls from 'node:tls';
import type { Logger } from 'pino';
import type { ListenerConfig, StaticUpstream } from '../config/types.js';
import { ErrorCodes, isPosternError, PosternError } from '../errors.js';
import { UPSTREAM_PROBE_LIMITS } from '../limits.js';
import { logErr } from '../log/logger.js';
import { CapabilityProbe, type ProbeStep } from '../session/capability-probe.js';
import type { OAuthMechanism } from '../session/oauth.js';
import { upstreamTlsOptions } from '../tls/contexts.js';

export interface UpstreamProbes {
  /** What the last successful probe of this listener's upstream saw; null: none succeeded yet, or not a static listener. */
  mechanisms(listener: ListenerConfig): ReadonlySet<OAuthMechanism> | null;
  /** Resolves once every static listener was probed once (whatever the outcome). */
  readonly ready: Promise<void>;
  /** Stops the timers and any probe in flight. */
  close(): void;
}

export interface ProbeTiming {
  timeoutMs: number;
  refreshMs: number;
  retryMs: number;
}

/**
 * Probes one static upstream once: the OAuth2 mechanisms it advertises (after TLS). Rejects with a
 * PosternError (connect, TLS, timeout, protocol). `signal` aborts it (E_SHUTDOWN).
 */
export function probeUpstream(
  listener: ListenerConfig & { upstream: StaticUpstream },
  opts: { timeoutMs?: number; signal?: AbortSignal } = {},
): Promise<OAuthMechanism[]> {
  const up = listener.upstream;
  const timeoutMs = opts.timeoutMs ?? UPSTREAM_PROBE_LIMITS.timeoutMs;
  return new Promise((resolve, reject) => {
    const probe = new CapabilityProbe({ protocol: listener.protocol, starttls: up.tls.mode === 'starttls', maxLineLength: listener.limits.maxLineLength });
    let sock: net.Socket;
    let settled = false;
    const finish = (err: PosternError | null, mechanisms?: OAuthMechanism[]) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      if (err) {
        sock.destroy();
        reject(err);
        return;
      }
      // LOGOUT / QUIT was written: close once it is flushed, and never wait for the server
      sock.end();
      setTimeout(() => sock.destroy(), 1000).unref();
      resolve(mechanisms!);
    };
    const timer = setTimeout(
      () => finish(new PosternError(ErrorCodes.GREETING_TIMEOUT, `capability probe of ${up.host}:${up.port} took longer than ${timeoutMs} ms`)),
      timeoutMs,
    );
    timer.unref();
    const onAbort = () => finish(new PosternError(ErrorCodes.SHUTDOWN, 'capability probe stopped'));
    opts.signal?.addEventListener('abort', onAbort, { once: true });

    const steps = (list: ProbeStep[]) => {
      for (const s of list) {
        if (settled) return;
        if (s.kind === 'send') sock.write(s.data);
        else if (s.kind === 'done') finish(null, s.mechanisms);
        else if (s.kind === 'failed') finish(s.err);
        else upgrade();
      }
    };
    const bind = (s: net.Socket) => {
      sock = s;
      s.on('data', (d: Buffer) => steps(probe.data(d)));
      s.on('error', (e: NodeJS.ErrnoException) =>
        finish(new PosternError(ErrorCodes.UPSTREAM_REFUSED, `capability probe of ${up.host}:${up.port}: ${e.code ?? e.message}`)),
      );
      s.on('close', () => finish(new PosternError(ErrorCodes.UPSTREAM_CLOSED, `${up.host}:${up.port} closed the connection during the capability probe`)));
    };
    const upgrade = () => {
      const raw = sock;
      // nothing the upstream sent after its OK is read as TLS data or as an answer
      raw.removeAllListeners('data');
      raw.removeAllListeners('close');
      raw.removeAllListeners('error');
      raw.on('error', () => undefined);
      const t = tls.connect({ socket: raw, ...upstreamTlsOptions(up.tls, up.host) }, () => {
        t.removeAllListeners('error');
        bind(t);
        steps(probe.tlsReady());
      });
      sock = t;
      t.once('error', (e) => finish(new PosternError(ErrorCodes.UPSTREAM_TLS, `capability probe of ${up.host}:${up.port}: TLS failed: ${e.message}`)));
    };

    if (up.tls.mode === 'implicit') {
      const t = tls.connect({ host: up.host, port: up.port, ...upstreamTlsOptions(up.tls, up.host) }, () => {
        t.removeAllListeners('error');
        bind(t);
      });
      sock = t;
      t.once('error', (e: NodeJS.ErrnoException) => {
        const code = e.code === 'ECONNREFUSED' || e.code === 'ENOTFOUND' || e.code === 'EHOSTUNREACH' ? ErrorCodes.UPSTREAM_REFUSED : ErrorCodes.UPSTREAM_TLS;
        finish(new PosternError(code, `capability probe of ${up.host}:${up.port}: ${e.code ?? e.message}`));
      });
    } else {
      const s = net.connect({ host: up.host, port: up.port });
      bind(s);
    }
  });
}

function isStatic(l: ListenerConfig): l is ListenerConfig & { upstream: StaticUpstream } {
  return l.upstream.kind === 'static';
}

/** Starts probing every static listener's upstream (see the module comment). */
export function startUpstreamProbes(listeners: readonly ListenerConfig[], log: Logger, timing: Partial<ProbeTiming> = {}): UpstreamProbes {
  const t: ProbeTiming = {
    timeoutMs: timing.timeoutMs ?? UPSTREAM_PROBE_LIMITS.timeoutMs,
    refreshMs: timing.refreshMs ?? UPSTREAM_PROBE_LIMITS.refreshMs,
    retryMs: timing.retryMs ?? UPSTREAM_PROBE_LIMITS.retryMs,
  };
  const learned = new Map<ListenerConfig, ReadonlySet<OAuthMechanism>>();
  const failing = new Map<ListenerConfig, string>();
  const timers = new Set<NodeJS.Timeout>();
  const abort = new AbortController();
  let closed = false;

  const once = async (l: ListenerConfig & { upstream: StaticUpstream }): Promise<void> => {
    const upstream = `${l.upstream.host}:${l.upstream.port}`;
    let next = t.refreshMs;
    try {
      const mechanisms = await probeUpstream(l, { timeoutMs: t.timeoutMs, signal: abort.signal });
      const before = learned.get(l);
      const changed = !before || before.size !== mechanisms.length || mechanisms.some((m) => !before.has(m));
      learned.set(l, new Set(mechanisms));
      if (changed || failing.has(l)) {
        log.info(
          { event: 'upstream.capabilities', reason: 'probe', listener: l.name, upstream, capabilities: mechanisms },
          mechanisms.length > 0 ? `upstream offers ${mechanisms.join(', ')}: relayed` : 'upstream offers no OAuth2 mechanism',
        );
      }
      failing.delete(l);
    } catch (e) {
      if (closed) return;
      next = t.retryMs;
      const err = logErr(e, isPosternError(e) ? e.code : ErrorCodes.UPSTREAM_REFUSED);
      if (failing.get(l) !== err.code) {
        log.warn(
          { event: 'upstream.capabilities', reason: 'probe', listener: l.name, upstream, err, retryMs: t.retryMs },
          learned.has(l) ? 'capability probe failed: keeping what was learned' : 'capability probe failed: no OAuth2 offered on this listener yet',
        );
      }
      failing.set(l, err.code);
    }
    if (closed) return;
    const timer = setTimeout(() => {
      timers.delete(timer);
      void once(l);
    }, next);
    timer.unref();
    timers.add(timer);
  };

  const ready = Promise.all(listeners.filter(isStatic).map((l) => once(l))).then(() => undefined);
  return {
    mechanisms: (l) => learned.get(l) ?? null,
    ready,
    close() {
      closed = true;
      abort.abort();
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
    },
  };
}
