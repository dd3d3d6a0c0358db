/**
 * `postern collect` and the collector's part of `postern check` (src/cli.ts delegates here):
 *
 *   postern collect [--account NAME]... [--dry-run]   one pass per (named) account, now
 *   postern collect --now NAME                        ask a running `postern serve` (SIGUSR1), or run it here
 *   postern collect status [--json]                   per account: last pass, counts, errors, backlog
 *
 * A pass's summary goes to stdout, its log lines to the configured log (stderr when the log goes to
 * stdout). Exit codes: 0 every pass ok, 1 a pass failed (or a config/state problem), 2 usage.
 * `--dry-run` connects, lists and fetches like a pass and prints what it would do; it writes no state,
 * delivers nothing, deletes nothing and quarantines nothing. Like a pass, each message is admitted by
 * the collector's bound (COLLECTOR_PROCESS_HOLD_BYTES, ./hold.ts) before it is downloaded, and the
 * admission is returned once it is inspected.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import type { Logger } from 'pino';
import type { CollectorAccountConfig, PosternConfig } from '../config/types.js';
import { locateInText } from '../config/validate.js';
import { ErrorCodes, PosternError } from '../errors.js';
import { inspectMessage } from '../policy/engine.js';
import { loadPolicy } from '../policy/load.js';
import type { QuarantineStore } from '../policy/types.js';
import { admissionBytes, admit, collectorHoldGate } from './hold.js';
import { isLoop, readHeader } from './message.js';
import type { PassSummary } from './pass.js';
import { resolveRecipients } from './recipients.js';
import { Collector, type CollectorOptions, openRemote } from './service.js';
import { CollectorState, processAlive } from './state.js';

export class CollectUsageError extends Error {}

export interface CollectIo {
  stdout(s: string): void;
  stderr(s: string): void;
  /** The logger for passes (the CLI builds it from the config). */
  log: Logger;
  /** Sends a signal to a process (tests replace it). */
  kill?: (pid: number, signal: NodeJS.Signals) => void;
  options?: CollectorOptions;
}

function account(config: PosternConfig, name: string): CollectorAccountConfig {
  const a = config.collector?.accounts.find((x) => x.name === name);
  if (!a)
    throw new CollectUsageError(`no collector account "${name}" (configured: ${(config.collector?.accounts ?? []).map((x) => x.name).join(', ') || 'none'})`);
  return a;
}

function summaryLine(s: PassSummary): string {
  const base = `${s.account}: ${s.result}`;
  if (s.result === 'busy') return `${base} (another process is collecting this account right now)\n`;
  const counts = `listed ${s.listed}, fetched ${s.fetched}, delivered ${s.delivered}, deferred ${s.deferred}, failed ${s.failed}, held ${s.held}, deleted ${s.deleted}, backlog ${s.backlog}, ${s.ms} ms`;
  const err = s.err ? ` — ${(s.err as { code?: string }).code ?? 'E_INTERNAL'}: ${s.err.message}` : '';
  return `${base}: ${counts}${err}\n`;
}

export async function collectCommand(args: string[], config: PosternConfig, io: CollectIo): Promise<number> {
  if (!config.collector) throw new CollectUsageError(`${config.file} has no collector section`);
  if (args[0] === 'status') return status(args.slice(1), config, io);
  let values: { account?: string[]; now?: string; 'dry-run'?: boolean };
  try {
    values = parseArgs({
      args,
      options: { account: { type: 'string', multiple: true, short: 'a' }, now: { type: 'string' }, 'dry-run': { type: 'boolean' } },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (e) {
    throw new CollectUsageError((e as Error).message);
  }
  if (values.now !== undefined && (values.account || values['dry-run'])) throw new CollectUsageError('--now takes one account and no other option');
  if (values.now !== undefined) return now(values.now, config, io);
  const names = (values.account ?? []).map((n) => account(config, n).name);
  if (values['dry-run']) return dryRun(names, config, io);
  const collector = new Collector(config, io.log, io.options);
  try {
    const results = await collector.runOnce(names);
    for (const s of results) io.stdout(summaryLine(s));
    return results.some((s) => s.result === 'error') ? 1 : 0;
  } finally {
    await collector.close();
  }
}

/** `--now NAME`: a running serve gets the request through the state database and SIGUSR1; otherwise one pass here. */
async function now(name: string, config: PosternConfig, io: CollectIo): Promise<number> {
  const a = account(config, name);
  const st = CollectorState.open(config.collector!.stateDir);
  try {
    const pid = Number(st.getMeta('serve_pid') ?? 0);
    if (pid > 0 && pid !== process.pid && processAlive(pid)) {
      st.addTrigger([a.name], Date.now());
      (io.kill ?? ((p, s) => process.kill(p, s)))(pid, 'SIGUSR1');
      io.stdout(`asked postern serve (pid ${pid}) to collect ${a.name} now\n`);
      return 0;
    }
  } finally {
    st.close();
  }
  const collector = new Collector(config, io.log, io.options);
  try {
    const [s] = await collector.runOnce([a.name]);
    io.stdout(summaryLine(s!));
    return s!.result === 'error' ? 1 : 0;
  } finally {
    await collector.close();
  }
}

function ago(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return `${s} s ago`;
  if (s < 7200) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

async function status(args: string[], config: PosternConfig, io: CollectIo): Promise<number> {
  let json = false;
  try {
    json = parseArgs({ args, options: { json: { type: 'boolean' } }, strict: true }).values.json === true;
  } catch (e) {
    throw new CollectUsageError((e as Error).message);
  }
  const names = config.collector!.accounts.map((a) => a.name);
  let st: CollectorState;
  try {
    st = CollectorState.open(config.collector!.stateDir, { readonly: true });
  } catch (e) {
    if (json) io.stdout(`${JSON.stringify({ accounts: names.map((n) => ({ account: n, lastPass: null })) })}\n`);
    else io.stdout(`no collector state yet (${(e as Error).message})\n`);
    return 0;
  }
  try {
    const rows = st.status(names);
    const pid = Number(st.getMeta('serve_pid') ?? 0);
    const serving = pid > 0 && processAlive(pid) ? pid : null;
    if (json) {
      io.stdout(`${JSON.stringify({ serve: serving, accounts: rows })}\n`);
      return 0;
    }
    io.stdout(serving ? `postern serve is collecting (pid ${serving})\n` : 'no postern serve is collecting\n');
    const t = Date.now();
    for (const r of rows) {
      const acc = config.collector!.accounts.find((a) => a.name === r.account)!;
      const p = r.lastPass;
      io.stdout(`\n${r.account}${acc.enabled ? '' : ' (disabled)'}  ${acc.protocol}://${acc.username}@${acc.host}:${acc.port}\n`);
      io.stdout(
        p
          ? `  last pass:  ${new Date(p.finishedAt).toISOString()} (${ago(t - p.finishedAt)}), ${p.result}${p.failures > 1 ? `, ${p.failures} failures in a row` : ''}\n`
          : '  last pass:  never\n',
      );
      if (p?.errorCode) io.stdout(`  last error: ${p.errorCode}: ${p.error ?? ''}\n`);
      if (p)
        io.stdout(
          `  that pass:  listed ${p.listed}, fetched ${p.fetched}, delivered ${p.delivered}, deferred ${p.deferred}, failed ${p.failed}, held ${p.held}, deleted ${p.deleted}\n`,
        );
      const c = r.counts;
      io.stdout(
        `  on server:  ${c.delivered} delivered (kept or to delete), ${c.pending} pending (${r.pendingRecipients} recipient(s) waiting), ${c.failed} refused, ${c.held} held, ${c.duplicate} duplicate, ${c.dropped} dropped${c.quarantined ? `, ${c.quarantined} quarantined (spam)` : ''}\n`,
      );
      if (r.unconfirmed > 0)
        io.stdout(
          `  unconfirmed: ${r.unconfirmed} (delivery interrupted after the data was sent: not sent again, left on the server; check the target mailbox)\n`,
        );
      io.stdout(`  backlog:    ${r.backlog}\n`);
    }
    return 0;
  } finally {
    st.close();
  }
}

/** Lists and fetches like a pass; prints what would happen; writes and sends nothing. */
async function dryRun(names: string[], config: PosternConfig, io: CollectIo): Promise<number> {
  const accounts = names.length > 0 ? names.map((n) => account(config, n)) : config.collector!.accounts.filter((a) => a.enabled);
  let st: CollectorState | null = null;
  try {
    st = CollectorState.open(config.collector!.stateDir, { readonly: true });
  } catch {
    st = null; // nothing collected yet: every message is new
  }
  const noQuarantine: QuarantineStore = { put: async () => 'dry-run-not-stored' };
  const gate = io.options?.holdGate ?? collectorHoldGate;
  let failed = false;
  try {
    for (const a of accounts) {
      const policy = a.policy ? loadPolicy(a.policy, config.policiesDir) : null;
      let remote: Awaited<ReturnType<typeof openRemote>> | null = null;
      try {
        remote = await (io.options?.open ?? openRemote)(a);
        for (const folder of a.folders) {
          const box = await remote.open(folder);
          const known = st ? st.present(a.name, box.folder, box.uidvalidity) : new Map<string, { status: string }>();
          const todo = box.messages.filter((m) => {
            const r = known.get(m.uid);
            return !r || r.status === 'pending';
          });
          io.stdout(
            `${a.name}${folder ? `/${folder}` : ''}: ${box.messages.length} listed, ${todo.length} to collect (at most ${a.maxMessagesPerPass} per pass)\n`,
          );
          for (const m of todo.slice(0, a.maxMessagesPerPass)) {
            const id = a.protocol === 'imap' ? `uid ${m.ref}` : `#${m.ref} ${m.uid}`;
            if (m.size > a.maxMessageBytes) {
              io.stdout(`  ${id}: ${m.size} bytes: too large (max_message_size), would stay on the server\n`);
              continue;
            }
            // admitted like a pass's fetch (the process's collector bound), returned once inspected, on every path
            const lease = (await admit(gate, admissionBytes(a.protocol, m.size, a.maxMessageBytes)).lease)!;
            try {
              const raw = await remote.fetch(m, lease);
              if (!raw) continue;
              const info = readHeader(raw);
              if (isLoop(info, a)) {
                io.stdout(`  ${id}: carries this mailbox's trace field: would stay on the server\n`);
                continue;
              }
              let to: string[];
              let what = 'deliver';
              if (a.mode === 'user') to = [a.recipient!];
              else {
                const r = resolveRecipients(info.headerBlock, {
                  acceptedDomains: a.acceptedDomains,
                  envelopeHeaders: a.envelopeHeaders,
                  unknownRecipients: a.unknownRecipients,
                  ...(a.postmaster ? { postmaster: a.postmaster } : {}),
                });
                to = r.action === 'deliver' ? r.recipients : r.action === 'postmaster' && a.postmaster ? [a.postmaster] : [];
                if (r.action === 'drop') what = 'drop (no accepted recipient)';
                else if (r.action === 'keep_on_server' || to.length === 0) what = 'keep on the server (no accepted recipient)';
              }
              let verdict = 'uninspected';
              if (policy) {
                const v = (
                  await inspectMessage(raw, policy, { listener: `collector:${a.name}`, protocol: a.protocol }, { scanner: null, quarantine: noQuarantine })
                ).verdict;
                verdict = v.status + (v.hits.length ? ` (${v.hits.map((h) => h.rule).join(', ')})` : '');
              }
              io.stdout(
                `  ${id}: ${raw.length} bytes ${info.messageId || '(no Message-ID)'} -> ${to.join(', ') || '-'}: ${what}, verdict ${verdict}${policy ? ' (without antivirus)' : ''}\n`,
              );
            } finally {
              lease.release();
            }
          }
        }
        remote.abort();
      } catch (e) {
        remote?.abort();
        failed = true;
        io.stdout(`${a.name}: error ${(e as { code?: string }).code ?? 'E_INTERNAL'}: ${(e as Error).message}\n`);
      }
    }
  } finally {
    st?.close();
  }
  return failed ? 1 : 0;
}

export interface CollectorCheck {
  policies: string[];
  /** Located warnings (`file:line:col: key: text`). */
  warnings: string[];
  /** Problems that make the config unusable (a password that cannot be read). */
  problems: string[];
}

/** The collector's part of `postern check`: its policies, warnings (inline passwords, no policy, passwords in clear), unreadable password sources. */
export function collectorCheck(config: PosternConfig): CollectorCheck {
  const out: CollectorCheck = { policies: [], warnings: [], problems: [] };
  const c = config.collector;
  if (!c) return out;
  let text = '';
  try {
    text = readFileSync(config.file, 'utf8');
  } catch {
    text = '';
  }
  const at = (p: (string | number)[], msg: string) => {
    const l = locateInText(text, p);
    return `${config.file}:${l.line}:${l.column}: ${p.map((x, i) => (typeof x === 'number' ? `[${x}]` : i === 0 ? x : `.${x}`)).join('')}: ${msg}`;
  };
  c.accounts.forEach((a, i) => {
    if (a.policy) out.policies.push(a.policy);
    else out.warnings.push(at(['collector', 'accounts', i, 'policy'], `account "${a.name}" has no policy: its messages are delivered uninspected`));
    if (a.password.kind === 'inline')
      out.warnings.push(
        at(['collector', 'accounts', i, 'password'], `account "${a.name}" has its password in the config file: use password_file (mode 0600) or password_env`),
      );
    if (a.tls.mode === 'none')
      out.warnings.push(at(['collector', 'accounts', i, 'tls'], `account "${a.name}" logs in without TLS: the password crosses the network in clear`));
    if (a.password.kind !== 'inline') {
      try {
        readSecretForCheck(a.password);
      } catch (e) {
        out.problems.push(at(['collector', 'accounts', i, a.password.kind === 'file' ? 'password_file' : 'password_env'], (e as Error).message));
      }
    }
  });
  if (c.delivery.auth?.password.kind === 'inline')
    out.warnings.push(at(['collector', 'delivery', 'auth', 'password'], 'the delivery password is in the config file: use password_file or password_env'));
  out.policies = [...new Set(out.policies)];
  return out;
}

function readSecretForCheck(s: CollectorAccountConfig['password']): void {
  if (s.kind === 'env') {
    if (!process.env[s.name]) throw new PosternError(ErrorCodes.COLLECTOR_SECRET, `environment variable ${s.name} is not set (it must be when postern runs)`);
    return;
  }
  if (s.kind === 'file') {
    try {
      if ((readFileSync(s.file, 'utf8').split(/\r?\n/)[0] ?? '') === '') throw new Error('empty');
    } catch (e) {
      throw new PosternError(ErrorCodes.COLLECTOR_SECRET, `password file ${s.file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  }
}
