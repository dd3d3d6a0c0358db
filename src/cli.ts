/**
 * The `postern` command. bin/postern.js calls main(argv) with the arguments after the program name
 * and uses the resolved number as the exit code: 0 success, 1 failure (invalid config, CA problem,
 * server error), 2 usage error.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createSecureContext } from 'node:tls';
import { parseArgs } from 'node:util';
import type { DestinationStream } from 'pino';
import * as admin from './admin/index.js';
import { countingCollectorLog } from './admin/metrics.js';
import { alarmsCheck, createAlarms } from './alarms/index.js';
import { tapLogger } from './alarms/tap.js';
import { clusterRole, isClusterWorker, runPrimary, startWorkerIpc, type WorkerIpc, workerConfig } from './cluster/index.js';
import * as collectorModule from './collector/cli-module.js';
import * as quarantineModule from './commands/quarantine.js';
import { pidFilePath, reloadCommand, removePidFile, writePidFile } from './commands/reload.js';
import * as scanModule from './commands/scan.js';
import * as schemaModule from './commands/schema.js';
import { DEFAULT_CONFIG_FILE, loadConfig, REPO_ROOT } from './config/load.js';
import { planReload } from './config/reload.js';
import type { ListenerConfig, PosternConfig, ScannerConfig, SpamConfig } from './config/types.js';
import { ConfigError, formatIssue, formatPath, type LocatedIssue, locateInText } from './config/validate.js';
import { type PolicyScanNeeds, policyWarnings } from './config/warnings.js';
import { ErrorCodes, isPosternError } from './errors.js';
import { raiseMallocThreshold, tuneHeap } from './heap-tuning.js';
import * as sessionsModule from './inspect/factory.js';
import { createLogger, flushLog, type Logger, logErr } from './log/logger.js';
import * as policyModule from './policy/load.js';
import * as serverModule from './relay/server.js';
import * as probesModule from './relay/upstream-probe.js';
import * as clamdModule from './scanners/clamd.js';
import * as rspamdModule from './scanners/rspamd.js';
import type { Scanner, SpamScanner } from './scanners/types.js';
import type { OAuthMechanism } from './session/oauth.js';
import type { Session, SessionHost } from './session/types.js';
import { type CertAuthority, caPaths, initCa, loadCa, openCa } from './tls/ca.js';
import { LeafMinter } from './tls/leaf.js';

// The composition root: the modules `postern` wires together. Tests replace any of them through CliIo.modules.
export interface ServerModule {
  startServer(
    config: PosternConfig,
    deps: {
      log: Logger;
      minter: LeafMinter;
      createSession: (host: SessionHost) => Session;
      onClose?: () => Promise<void> | void;
      upstreamOAuth?: (listener: ListenerConfig) => ReadonlySet<OAuthMechanism> | null;
      metrics?: serverModule.RelayMetrics;
    },
  ): Promise<{ close(graceMs?: number): Promise<void>; reload?(config: PosternConfig, deps: serverModule.ReloadDeps): Promise<serverModule.ReloadSummary> }>;
}
/** The OAuth2 capability probe of static upstreams (src/relay/upstream-probe.ts). */
export interface ProbesModule {
  startUpstreamProbes(
    listeners: readonly ListenerConfig[],
    log: Logger,
  ): { mechanisms(listener: ListenerConfig): ReadonlySet<OAuthMechanism> | null; close(): void };
}
export interface SessionsModule {
  createSessionFactory(
    config: PosternConfig,
    log: Logger,
    opts?: { metrics?: sessionsModule.InspectMetrics },
  ): { createSession(host: SessionHost): Session; close(): Promise<void> };
}
export interface PolicyLoadModule {
  loadPolicy(nameOrPath: string, policiesDir: string): unknown;
}
export interface ScanCommandModule {
  scanCommand(args: string[], deps: { policiesDir: string; scanner: Scanner | null; spamScanner: SpamScanner | null; quarantineDir: string }): Promise<number>;
}
export interface QuarantineCommandModule {
  quarantineCommand(args: string[], deps: { dir: string; retentionDays?: number }): Promise<number>;
}
export interface ClamdModule {
  createScanner(cfg: ScannerConfig, log: Logger): Scanner | Promise<Scanner>;
}
export interface RspamdModule {
  createSpamScanner(cfg: SpamConfig, log: Logger): SpamScanner;
}
export interface CollectorModule {
  startCollector(config: PosternConfig, log: Logger): { onSignal(): void; close(): Promise<void> };
  collectCommand(args: string[], config: PosternConfig, io: { stdout(s: string): void; stderr(s: string): void; log: Logger }): Promise<number>;
  collectorCheck(config: PosternConfig): { policies: string[]; warnings: string[]; problems: string[] };
}
export interface CliModules {
  collector: CollectorModule;
  probes: ProbesModule;
  server: ServerModule;
  sessions: SessionsModule;
  policy: PolicyLoadModule;
  scan: ScanCommandModule;
  quarantine: QuarantineCommandModule;
  clamd: ClamdModule;
  rspamd: RspamdModule;
}

const MODULES: CliModules = {
  collector: collectorModule,
  probes: probesModule,
  server: serverModule,
  sessions: sessionsModule,
  policy: policyModule,
  scan: scanModule,
  quarantine: quarantineModule,
  clamd: clamdModule,
  rspamd: rspamdModule,
};

/** Where output goes and what the process hooks are; tests replace them. */
export interface CliIo {
  stdout(data: string | Uint8Array): void;
  stderr(data: string): void;
  /** Hard exit, used on a second shutdown signal or when something keeps the process alive after shutdown. */
  exit(code: number): void;
  /** Source of SIGTERM/SIGINT (default: process). */
  signals: NodeJS.EventEmitter;
  /** Log destination for `serve` (default: the config's). */
  logDest?: DestinationStream;
  /** Module overrides (tests). */
  modules?: Partial<CliModules>;
}

const defaultIo: CliIo = {
  stdout: (d) => void process.stdout.write(d),
  stderr: (d) => void process.stderr.write(d),
  exit: (code) => process.exit(code),
  signals: process,
};

class UsageError extends Error {}

export const USAGE = `postern — IMAP/POP3 inspection proxy

Usage:
  postern serve [--config FILE]          run the proxy (creates the CA on first start)
  postern check [--config FILE]          validate the config and the policies it names
  postern ca init [--force] [--config FILE]
                                         create the CA (never replaces one without --force)
  postern ca show [--config FILE]        print the CA's subject, SHA-256 fingerprint, expiry and name constraints
  postern ca export [--format pem|der] [--out FILE] [--config FILE]
                                         export the CA certificate for mail clients / trust stores
  postern scan FILE.eml [--policy NAME|FILE] [--out FILE] [--json] [--no-av] [--no-spam] [--quarantine] [--config FILE]
                                         apply a policy to one message (dry run; --quarantine stores the original)
  postern quarantine list | show ID | release ID --out FILE | purge --older-than DAYS [--config FILE]
  postern verdicts stats [--json] [--config FILE]
                                         the verdict cache files of the config: stored verdicts, mailbox names, size
  postern verdicts clear [--json] [--config FILE]
                                         empty them: every message is vetted again (after changing clamd.conf
                                         or anything else postern cannot see; safe while serve runs)
  postern collect [--account NAME]... [--dry-run] [--config FILE]
                                         collector: one pass per account now (--dry-run: show, change nothing)
  postern collect --now NAME [--config FILE]
                                         ask a running serve to collect NAME now (SIGUSR1), else collect it here
  postern collect status [--json] [--config FILE]
                                         collector: last pass, counts, errors and backlog per account
  postern block list [--json] | add ADDR [--for 1h] | remove ADDR [--config FILE]
                                         the shared block list (SQLite, or Redis with state.redis;
                                         a running serve re-reads it within 1 s)
  postern reload [--config FILE]         check the config, then ask the running serve to reload it (SIGHUP
                                         to the pid in the state directory's postern.pid)
  postern admin hash-token [--stdin]     make admin.token_hash (a new random token, or the one on stdin)
  postern schema [--out DIR]             write JSON Schemas of the config and policy files (default DIR: schemas)
  postern --help | --version

Default config: ${DEFAULT_CONFIG_FILE}
Exit codes: 0 success, 1 failure, 2 usage error.
`;

function version(): string {
  try {
    return (JSON.parse(readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

function loadModule<K extends keyof CliModules>(io: CliIo, key: K): CliModules[K] {
  return (io.modules?.[key] as CliModules[K] | undefined) ?? MODULES[key];
}

/** parseArgs failures are usage errors (exit 2). */
function usage<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

const configOpt = { config: { type: 'string', short: 'c' } } as const;

function printIssues(io: CliIo, issues: LocatedIssue[]): void {
  for (const i of issues) io.stderr(`${formatIssue(i)}\n`);
}

/** Removes `--config FILE` / `--config=FILE` from args; notes (and keeps) `--no-av`. */
function extractGlobal(args: string[]): { rest: string[]; config?: string; noAv: boolean } {
  const rest: string[] = [];
  let config: string | undefined;
  let noAv = false;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') {
      rest.push(...args.slice(i));
      break;
    }
    if (a === '--config') {
      config = args[++i];
      if (config === undefined) throw new UsageError('--config needs a file');
    } else if (a.startsWith('--config=')) config = a.slice('--config='.length);
    else {
      if (a === '--no-av') noAv = true;
      rest.push(a);
    }
  }
  return { rest, config, noAv };
}

/** Runs the CLI. Never throws for expected failures: prints the reason and returns the exit code. */
export async function main(argv: string[], ioOverrides: Partial<CliIo> = {}): Promise<number> {
  const io: CliIo = { ...defaultIo, ...ioOverrides };
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case undefined:
        io.stderr(USAGE);
        return 2;
      case '--help':
      case '-h':
      case 'help':
        io.stdout(USAGE);
        return 0;
      case '--version':
      case '-V':
      case 'version':
        io.stdout(`postern ${version()}\n`);
        return 0;
      case 'serve':
        return await serve(rest, io);
      case 'check':
        return await check(rest, io);
      case 'ca':
        return await caCommand(rest, io);
      case 'scan':
        return await scan(rest, io);
      case 'quarantine':
        return await quarantine(rest, io);
      case 'verdicts':
        return await verdictsCmd(rest, io);
      case 'collect':
        return await collect(rest, io);
      case 'schema':
        try {
          return schemaModule.schemaCommand(rest, { stdout: (s) => io.stdout(s) });
        } catch (e) {
          if (e instanceof schemaModule.SchemaUsageError) throw new UsageError(e.message);
          throw e;
        }
      case 'block':
        return await blockCmd(rest, io);
      case 'reload':
        return await reloadCmd(rest, io);
      case 'admin':
        return await adminCmd(rest, io);
      default:
        throw new UsageError(`unknown command "${cmd}"`);
    }
  } catch (e) {
    if (e instanceof UsageError) {
      io.stderr(`postern: ${e.message}\n\n${USAGE}`);
      return 2;
    }
    if (e instanceof ConfigError) {
      printIssues(io, e.issues);
      return 1;
    }
    if (isPosternError(e)) {
      io.stderr(`postern: ${e.message} (${e.code})\n`);
      return 1;
    }
    io.stderr(`postern: ${(e as Error)?.stack ?? String(e)}\n`);
    return 1;
  }
}

// ---------- serve ----------

async function serve(args: string[], io: CliIo): Promise<number> {
  // V8's heap growing factor and malloc's mmap threshold (src/heap-tuning.ts), before any traffic
  const heapGrowingPercent = tuneHeap();
  const mallocMmapThreshold = await raiseMallocThreshold();
  const code = await serveProcess(args, io, heapGrowingPercent, mallocMmapThreshold);
  // a worker process (src/cluster/): the primary's IPC channel keeps it alive, so it leaves by itself
  if (isClusterWorker()) setTimeout(() => io.exit(code), 100).unref();
  return code;
}

async function serveProcess(args: string[], io: CliIo, heapGrowingPercent: number | null, mallocMmapThreshold: number | null): Promise<number> {
  const { values } = usage(() => parseArgs({ args, options: configOpt, strict: true }));
  // `workers:` above 1 (src/cluster/): the primary forks and watches the workers (and runs the admin
  // listener); each worker serves here with its share of the process-wide limits
  const loaded = loadConfig(values.config);
  const role = clusterRole(loaded);
  const config = workerConfig(loaded, role);
  if (role.kind === 'primary') {
    const plog = createLogger(config.log, io.logDest);
    const pidFile = keepPidFile(config, plog);
    try {
      return await runPrimary(config, role.count, plog, io);
    } finally {
      if (pidFile) removePidFile(pidFile);
    }
  }
  const baseLog = createLogger(config.log, io.logDest);
  // alarms (src/alarms/): the records of the relay, inspection, scanners, edge and probes raise them through this logger
  const alarms = createAlarms(config.alarms, baseLog);
  const log = alarms ? tapLogger(baseLog, alarms, config.listeners) : baseLog;
  let server: Awaited<ReturnType<ServerModule['startServer']>> | null = null;
  // OAuth2 on static listeners: what each upstream offers, learned without credentials (started with the listeners)
  let probes: { mechanisms(listener: ListenerConfig): ReadonlySet<OAuthMechanism> | null; close(): void } | null = null;
  // the admin listener (src/admin/): its metrics are handed to the relay and the inspection factory
  const metrics = config.admin ? new admin.Metrics(role.kind === 'worker' ? {} : { quarantineDir: config.quarantine.dir }) : undefined;
  let adminCa: CertAuthority | null = null;
  let adminMinter: LeafMinter | null = null;
  let sharedEdge: import('./edge/guard.js').EdgeGuard | null = null;
  if (config.listeners.length > 0) {
    const ca = openCa(config.ca, log);
    const minter = new LeafMinter(ca, { keyType: config.ca.leafKeyType ?? 'rsa' });
    adminCa = ca;
    adminMinter = minter;
    const { startServer } = loadModule(io, 'server');
    try {
      // the composition root: inspection (policies, scanner, quarantine) is built here and handed to the relay
      const sessions = loadModule(io, 'sessions').createSessionFactory(config, log, metrics ? { metrics } : undefined);
      const upstreamProbes = loadModule(io, 'probes').startUpstreamProbes(config.listeners, log);
      probes = upstreamProbes;
      // the edge state (src/edge/state.ts): with `state.redis` in Redis, shared by every instance; else the relay keeps it (memory + SQLite)
      sharedEdge = config.edge?.state ? await (await import('./edge/redis-state.js')).openSharedEdgeGuard(config, config.edge.state, log) : null;
      if (metrics) sharedEdge?.onLateBlock((e) => metrics.autoBlocked(e));
      server = await startServer(config, {
        ...(sharedEdge ? { edge: sharedEdge } : {}),
        log,
        minter,
        createSession: sessions.createSession,
        onClose: () => sessions.close(),
        upstreamOAuth: (l) => upstreamProbes.mechanisms(l),
        ...(metrics ? { metrics } : {}),
      });
    } catch (e) {
      probes?.close();
      await sharedEdge?.close();
      log.fatal({ event: 'process.start_failed', err: logErr(e) }, 'cannot start');
      await flushLog(log);
      io.stderr(`postern: cannot start: ${(e as Error).message}\n`);
      return 1;
    }
  }
  // the collector (src/collector/) runs beside the listeners, or alone
  let collector: { onSignal(): void; close(): Promise<void> } | null = null;
  if (config.collector && (role.kind !== 'worker' || role.index === 0)) {
    try {
      // its passes are counted for /metrics from its collector.pass lines
      collector = loadModule(io, 'collector').startCollector(config, metrics ? countingCollectorLog(log, metrics) : log);
    } catch (e) {
      log.fatal({ event: 'process.start_failed', err: logErr(e) }, 'cannot start the collector');
      probes?.close();
      await server?.close(0);
      await sharedEdge?.close();
      await flushLog(log);
      io.stderr(`postern: cannot start the collector: ${(e as Error).message}\n`);
      return 1;
    }
  }
  let adminServer: admin.RunningAdmin | null = null;
  let closing = false;
  if (config.admin && metrics && role.kind !== 'worker') {
    try {
      adminServer = await admin.startAdmin(config, {
        log,
        metrics,
        ca: adminCa,
        minter: adminMinter,
        ready: () => ({
          listeners: !closing && (server !== null || config.listeners.length === 0),
          policies: server !== null || config.listeners.length === 0,
        }),
      });
    } catch (e) {
      log.fatal({ event: 'process.start_failed', err: logErr(e) }, 'cannot start the admin listener');
      probes?.close();
      await Promise.all([server?.close(0), collector?.close()]);
      await sharedEdge?.close();
      await flushLog(log);
      io.stderr(`postern: cannot start the admin listener: ${(e as Error).message}\n`);
      return 1;
    }
  }
  const onUsr1 = () => collector?.onSignal();
  if (collector) io.signals.on('SIGUSR1', onUsr1);
  // SIGHUP (postern reload; the cluster primary passes it on to each worker): config and policies re-read
  const reloader = makeReloader({
    io,
    log,
    metrics,
    config,
    adjust: (c) => workerConfig(c, role),
    server: () => (closing ? null : server),
    probes: { get: () => probes, set: (p) => void (probes = p) },
  });
  const onHup = () => void reloader.reload();
  io.signals.on('SIGHUP', onHup);
  const pidFile = role.kind === 'worker' ? null : keepPidFile(config, log);
  log.info(
    {
      event: 'process.start',
      config: config.file,
      listeners: config.listeners.map((l) => `${l.name} ${l.protocol} ${l.host}:${l.port} tls=${l.tls.mode}`),
      heapGrowingPercent,
      mallocMmapThreshold,
    },
    'postern started',
  );

  let ipc: WorkerIpc | null = null;
  return await new Promise<number>((resolve) => {
    const onSignal = (signal: NodeJS.Signals) => {
      if (closing) {
        log.warn({ event: 'process.shutdown_forced', signal }, 'second signal during shutdown: exiting now');
        void flushLog(log).then(() => io.exit(1));
        return;
      }
      closing = true;
      const graceMs = reloader.config.limits.shutdownGraceMs;
      log.info({ event: 'process.shutdown', signal, graceMs }, 'shutting down: no new connections, sessions get the grace period');
      probes?.close();
      Promise.all([server?.close(graceMs), collector?.close(), adminServer?.close()])
        .then(() => alarms?.close())
        .then(
          () => 0,
          (err: unknown) => {
            log.error({ event: 'process.shutdown_failed', err: logErr(err) }, 'error during shutdown');
            return 1;
          },
        )
        .then(async (code) => {
          io.signals.off('SIGTERM', onSignal);
          io.signals.off('SIGINT', onSignal);
          io.signals.off('SIGUSR1', onUsr1);
          io.signals.off('SIGHUP', onHup);
          if (pidFile) removePidFile(pidFile);
          ipc?.close();
          await sharedEdge?.close();
          ipc?.close();
          log.info({ event: 'process.stop' }, 'stopped');
          await flushLog(log);
          resolve(code);
          // anything still holding the event loop (a stray timer or socket) must not keep a stopped
          // server alive; unref'd, this fires only in that case
          setTimeout(() => io.exit(code), 2000).unref();
        });
    };
    io.signals.on('SIGTERM', onSignal);
    io.signals.on('SIGINT', onSignal);
    if (role.kind === 'worker') {
      const stop = () => {
        if (!closing) onSignal('SIGTERM');
      };
      ipc = startWorkerIpc({ metrics, ready: () => !closing && server !== null, stop });
      ipc.announce();
    }
  });
}

/** Writes serve's pid file (src/commands/reload.ts) for `postern reload`; a failure is logged, not fatal. */
function keepPidFile(config: PosternConfig, log: Logger): string | null {
  const file = pidFilePath(config);
  if (!file) return null;
  try {
    writePidFile(file);
    return file;
  } catch (e) {
    log.warn(
      { event: 'process.pid_file_failed', file, err: logErr(e) },
      'cannot write the pid file: postern reload will not find this process (SIGHUP still reloads)',
    );
    return null;
  }
}

type RunningServerHandle = Awaited<ReturnType<ServerModule['startServer']>>;
type ProbesHandle = ReturnType<ProbesModule['startUpstreamProbes']>;

/**
 * The reload (SIGHUP): re-reads the config file and the policies it names and puts them in force
 * atomically (src/relay/server.ts reload), or logs why not (config.reload_failed, with the located
 * issues) and keeps the running config. One reload at a time: a SIGHUP during one runs once it ends.
 */
function makeReloader(o: {
  io: CliIo;
  log: Logger;
  metrics: admin.Metrics | undefined;
  config: PosternConfig;
  /** The worker's share of the limits (src/cluster/), applied to each new config as at start. */
  adjust: (c: PosternConfig) => PosternConfig;
  server: () => RunningServerHandle | null;
  probes: { get(): ProbesHandle | null; set(p: ProbesHandle | null): void };
}): { reload(): Promise<boolean>; readonly config: PosternConfig } {
  const { io, log, metrics } = o;
  let running = o.config;
  let chain: Promise<unknown> = Promise.resolve();
  const failed = (file: string, issues: string[], err: unknown, t0: number): false => {
    metrics?.configReloaded(false);
    log.error(
      { event: 'config.reload_failed', file, issues, ms: Date.now() - t0, err: logErr(err, ErrorCodes.CONFIG) },
      `config reload rejected, the running config stays: ${issues[0] ?? (err as Error)?.message ?? String(err)}${issues.length > 1 ? ` (and ${issues.length - 1} more)` : ''}`,
    );
    return false;
  };
  const once = async (): Promise<boolean> => {
    const t0 = Date.now();
    const file = running.file;
    const server = o.server();
    if (!server && running.listeners.length > 0) return false; // shutting down
    let next: PosternConfig;
    try {
      next = o.adjust(loadConfig(file));
    } catch (e) {
      return failed(file, e instanceof ConfigError ? e.issues.map(formatIssue) : [(e as Error).message], e, t0);
    }
    const plan = planReload(running, next);
    const restartNeeded = [...plan.restartNeeded];
    // the Redis connection (state:) is opened at start; the relay rebuilds the edge guard on it for the rest
    if (JSON.stringify(running.edge?.state ?? null) !== JSON.stringify(next.edge?.state ?? null)) restartNeeded.push('state');
    let summary: serverModule.ReloadSummary | null = null;
    if (server?.reload) {
      let factory: ReturnType<SessionsModule['createSessionFactory']>;
      try {
        factory = loadModule(io, 'sessions').createSessionFactory(plan.config, log, metrics ? { metrics } : undefined);
      } catch (e) {
        return failed(file, e instanceof ConfigError ? e.issues.map(formatIssue) : [(e as Error).message], e, t0);
      }
      const probes = loadModule(io, 'probes').startUpstreamProbes(plan.config.listeners, log);
      try {
        summary = await server.reload(plan.config, {
          createSession: factory.createSession,
          onClose: () => factory.close(),
          upstreamOAuth: (l) => probes.mechanisms(l),
        });
      } catch (e) {
        probes.close();
        await factory.close().catch(() => undefined);
        return failed(file, [locateListenerError(e, plan.config)], e, t0);
      }
      o.probes.get()?.close();
      o.probes.set(probes);
    } else if (plan.config.listeners.length > 0 || running.listeners.length > 0) {
      // serve started without listeners (collector only), or a server without reload (tests)
      restartNeeded.push('listeners');
      plan.config.listeners = running.listeners;
    }
    if (log.level !== plan.config.log.level) log.level = plan.config.log.level;
    running = plan.config;
    metrics?.configReloaded(true);
    if (restartNeeded.length > 0)
      log.warn(
        { event: 'config.restart_needed', file, sections: restartNeeded },
        `config reloaded, but these changes need a restart: ${restartNeeded.join(', ')}`,
      );
    log.info({ event: 'config.reloaded', file, ms: Date.now() - t0, ...(summary ?? {}), restartNeeded }, 'config reloaded');
    return true;
  };
  return {
    reload() {
      const p = chain.then(once, once);
      chain = p.catch(() => undefined);
      return p.catch((e: unknown) => failed(running.file, [(e as Error)?.message ?? String(e)], e, Date.now()));
    },
    get config() {
      return running;
    },
  };
}

/** A listener the server could not set up (TLS, address): located at its key in the config file. */
function locateListenerError(e: unknown, config: PosternConfig): string {
  const message = (e as Error)?.message ?? String(e);
  if (!(e instanceof serverModule.ListenerReloadError)) return message;
  const i = config.listeners.findIndex((l) => l.name === e.listener);
  if (i < 0) return message;
  const l = config.listeners[i]!;
  const at: (string | number)[] = e.what === 'tls' ? ['listeners', i, 'tls', ...(l.tls.certFile ? ['cert_file'] : [])] : ['listeners', i, 'port'];
  try {
    const pos = locateInText(readFileSync(config.file, 'utf8'), at);
    return formatIssue({ file: config.file, line: pos.line, column: pos.column, path: formatPath(at), message });
  } catch {
    return message;
  }
}

// ---------- check ----------

async function check(args: string[], io: CliIo): Promise<number> {
  const { values } = usage(() => parseArgs({ args, options: configOpt, strict: true }));
  const config = loadConfig(values.config);
  const issues: LocatedIssue[] = [];
  const problems: string[] = [];

  const collectorChecked = loadModule(io, 'collector').collectorCheck(config);
  problems.push(...collectorChecked.problems);
  problems.push(...alarmsCheck(config.alarms));
  for (const w of collectorChecked.warnings) io.stderr(`warning: ${w}\n`);
  const policies = [...new Set([...config.listeners.map((l) => l.policy).filter((p): p is string => p !== null), ...collectorChecked.policies])];
  const loaded: [string, PolicyScanNeeds][] = [];
  if (policies.length > 0) {
    const mod = loadModule(io, 'policy');
    for (const name of policies) {
      try {
        const p = await mod.loadPolicy(name, config.policiesDir);
        if (isScanNeeds(p)) loaded.push([name, p]);
      } catch (e) {
        if (e instanceof ConfigError) issues.push(...e.issues);
        else if (isPosternError(e) || e instanceof Error) problems.push(`policy ${name}: ${e.message}`);
        else problems.push(`policy ${name}: ${String(e)}`);
      }
    }
  }

  config.listeners.forEach((l, i) => {
    if (!l.tls.certFile || !l.tls.keyFile) return;
    try {
      createSecureContext({ cert: readFileSync(l.tls.certFile), key: readFileSync(l.tls.keyFile) });
    } catch (e) {
      problems.push(`${config.file}: listeners[${i}].tls: cannot use cert_file/key_file: ${(e as Error).message}`);
    }
  });

  const files = caPaths(config.ca);
  try {
    const ca = loadCa(config.ca);
    for (const w of ca.warnings) io.stderr(`warning: ${w}\n`);
  } catch (e) {
    // a missing CA is fine (serve creates it); an unusable one is not
    const missingBoth = !existsSync(files.certFile) && !existsSync(files.keyFile);
    if (!missingBoth) problems.push(`CA: ${(e as Error).message}`);
  }

  // what serve would log at start about the policies (src/config/warnings.ts): warnings on stderr, notes with the OK
  const stated = policyWarnings(config, loaded, { scanner: !!config.scanner, spamScanner: !!config.spam });
  for (const w of stated) if (w.level === 'warn') io.stderr(`warning: ${w.message}\n`);
  printIssues(io, issues);
  for (const p of problems) io.stderr(`${p}\n`);
  if (issues.length > 0 || problems.length > 0) return 1;
  for (const w of stated) if (w.level === 'info') io.stdout(`note: ${w.message}\n`);
  const accounts = config.collector ? `, ${config.collector.accounts.length} collector account(s)` : '';
  io.stdout(`config OK: ${config.file} (${config.listeners.length} listener(s)${accounts}, ${policies.length} polic${policies.length === 1 ? 'y' : 'ies'})\n`);
  return 0;
}

function isScanNeeds(p: unknown): p is PolicyScanNeeds {
  const o = p as { antivirus?: { enabled?: unknown }; spam?: { enabled?: unknown } } | null;
  return typeof o?.antivirus?.enabled === 'boolean' && typeof o.spam?.enabled === 'boolean';
}

// ---------- ca ----------

function describeCa(ca: CertAuthority): string {
  return [
    `certificate: ${ca.certFile}`,
    `key:         ${ca.keyFile}`,
    `subject:     ${ca.subject}`,
    `SHA-256:     ${ca.fingerprint256}`,
    `valid from:  ${ca.notBefore.toISOString()}`,
    `expires:     ${ca.notAfter.toISOString()}${ca.expired ? ' (EXPIRED)' : ''}`,
    `name constraints: ${ca.nameConstraintsText}`,
    '',
  ].join('\n');
}

async function caCommand(args: string[], io: CliIo): Promise<number> {
  const [sub, ...rest] = args;
  switch (sub) {
    case 'init': {
      const { values } = usage(() => parseArgs({ args: rest, options: { ...configOpt, force: { type: 'boolean' } }, strict: true }));
      const config = loadConfig(values.config);
      const ca = initCa(config.ca, { force: values.force === true });
      io.stdout(`created CA\n${describeCa(ca)}Import ${ca.certFile} into mail clients (postern ca export --format der for Windows/macOS).\n`);
      return 0;
    }
    case 'show': {
      const { values } = usage(() => parseArgs({ args: rest, options: configOpt, strict: true }));
      const config = loadConfig(values.config);
      const ca = loadCa(config.ca);
      io.stdout(describeCa(ca));
      for (const w of ca.warnings) io.stderr(`warning: ${w}\n`);
      return 0;
    }
    case 'export': {
      const { values } = usage(() =>
        parseArgs({ args: rest, options: { ...configOpt, format: { type: 'string', short: 'f' }, out: { type: 'string', short: 'o' } }, strict: true }),
      );
      const format = values.format ?? 'pem';
      if (format !== 'pem' && format !== 'der') throw new UsageError(`--format must be pem or der, not "${format}"`);
      const config = loadConfig(values.config);
      const ca = loadCa(config.ca);
      const data = format === 'pem' ? Buffer.from(ca.certPem) : ca.derBytes;
      if (values.out) {
        writeFileSync(values.out, data, { mode: 0o644 });
        io.stdout(`wrote ${path.resolve(values.out)} (${format}, SHA-256 ${ca.fingerprint256})\n`);
      } else {
        io.stdout(format === 'pem' ? ca.certPem : data);
      }
      return 0;
    }
    case undefined:
      throw new UsageError('ca needs a subcommand: init, show or export');
    default:
      throw new UsageError(`unknown ca subcommand "${sub}"`);
  }
}

// ---------- scan / quarantine (implemented by their own modules) ----------

async function scan(args: string[], io: CliIo): Promise<number> {
  const { rest, config: file, noAv } = extractGlobal(args);
  let config: PosternConfig;
  try {
    config = loadConfig(file);
  } catch (e) {
    if (e instanceof ConfigError) {
      printIssues(io, e.issues);
      return 2; // scan's own convention: 2 = error
    }
    throw e;
  }
  const { scanCommand } = loadModule(io, 'scan');
  let scanner: Scanner | null = null;
  let spamScanner: SpamScanner | null = null;
  const av = noAv ? null : config.scanner;
  const spam = rest.includes('--no-spam') ? null : config.spam;
  try {
    // scan output goes to stdout; scanner logs go to stderr
    const log = av || spam ? createLogger({ level: config.log.level === 'info' ? 'warn' : config.log.level }, io.logDest ?? (await stderrDestination())) : null;
    if (av && log) scanner = await loadModule(io, 'clamd').createScanner(av, log);
    if (spam && log) spamScanner = loadModule(io, 'rspamd').createSpamScanner(spam, log);
    return await scanCommand(rest, { policiesDir: config.policiesDir, scanner, spamScanner, quarantineDir: config.quarantine.dir });
  } finally {
    await scanner?.close();
    await spamScanner?.close();
  }
}

async function stderrDestination(): Promise<DestinationStream> {
  const pino = (await import('pino')).default;
  return pino.destination({ dest: 2, sync: true });
}

async function quarantine(args: string[], io: CliIo): Promise<number> {
  const { rest, config: file } = extractGlobal(args);
  const config = loadConfig(file);
  const { quarantineCommand } = loadModule(io, 'quarantine');
  return await quarantineCommand(rest, { dir: config.quarantine.dir, retentionDays: config.quarantine.retentionDays });
}

// ---------- verdicts (src/commands/verdicts.ts) ----------

async function verdictsCmd(args: string[], io: CliIo): Promise<number> {
  const { rest, config: file } = extractGlobal(args);
  const config = loadConfig(file);
  const { verdictsCommand, verdictFiles } = await import('./commands/verdicts.js');
  return verdictsCommand(rest, { files: verdictFiles(config), out: (s) => io.stdout(s), err: (s) => io.stderr(s) });
}

// ---------- block (src/edge/command.ts) ----------

async function blockCmd(args: string[], io: CliIo): Promise<number> {
  const { rest, config: file } = extractGlobal(args);
  const config = loadConfig(file);
  const { blockCommand, blockCommandRedis } = await import('./edge/command.js');
  if (config.edge?.state) return await blockCommandRedis(rest, { state: config.edge.state, out: (s) => io.stdout(s), err: (s) => io.stderr(s) });
  const file_ = config.edge?.blockListFile;
  if (!file_) throw new UsageError('the config has no block list');
  return blockCommand(rest, { file: file_, out: (s) => io.stdout(s), err: (s) => io.stderr(s) });
}

// ---------- reload (src/commands/reload.ts) ----------

async function reloadCmd(args: string[], io: CliIo): Promise<number> {
  const { values } = usage(() => parseArgs({ args, options: configOpt, strict: true }));
  // what serve would refuse is reported here, and nothing is signalled
  let checked: number;
  try {
    checked = await check(values.config === undefined ? [] : ['--config', values.config], io);
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    printIssues(io, e.issues);
    checked = 1;
  }
  if (checked !== 0) {
    io.stderr('postern: not reloaded: the config has problems (the running serve keeps its config)\n');
    return 1;
  }
  return reloadCommand(loadConfig(values.config), { stdout: (s) => io.stdout(s), stderr: (s) => io.stderr(s) });
}

// ---------- admin (src/admin/command.ts) ----------

async function adminCmd(args: string[], io: CliIo): Promise<number> {
  const readStdin = async () => {
    const chunks: Buffer[] = [];
    for await (const c of process.stdin as AsyncIterable<Buffer>) chunks.push(c);
    return Buffer.concat(chunks).toString('utf8');
  };
  try {
    return await admin.adminCommand(args, { stdout: (s) => io.stdout(s), readStdin });
  } catch (e) {
    if (e instanceof admin.AdminUsageError) throw new UsageError(e.message);
    throw e;
  }
}

// ---------- collect (src/collector/command.ts) ----------

async function collect(args: string[], io: CliIo): Promise<number> {
  tuneHeap();
  await raiseMallocThreshold();
  const { rest, config: file } = extractGlobal(args);
  const config = loadConfig(file);
  // pass summaries go to stdout; log lines to the configured file, else to stderr
  const log = createLogger(config.log, io.logDest ?? (config.log.file ? undefined : await stderrDestination()));
  try {
    return await loadModule(io, 'collector').collectCommand(rest, config, { stdout: (s) => io.stdout(s), stderr: (s) => io.stderr(s), log });
  } catch (e) {
    if (e instanceof collectorModule.CollectUsageError) throw new UsageError(e.message);
    throw e;
  } finally {
    await flushLog(log);
  }
}
