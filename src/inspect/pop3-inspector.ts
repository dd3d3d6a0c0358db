/**
 * Inline inspection for POP3. RETR returns the sanitised message (dot-stuffing recomputed). TOP is
 * served from the sanitised message too: the session sends `RETR n` upstream in place of `TOP n m`
 * (see Pop3Hooks.upstreamCommand), so the whole message is vetted and no blocked byte escapes
 * through TOP. A message that could not be vetted gets `-ERR [SYS/TEMP]`. When the policy changed or
 * blocked a message and its original could not be quarantined, DELE for it is refused, so the
 * original stays on the server.
 */
import type { Logger } from 'pino';
import type { ListenerConfig } from '../config/types.js';
import { inspectMessage, type CompiledPolicy } from '../policy/engine.js';
import type { EngineDeps, Verdict } from '../policy/types.js';
import { stuff, unstuff } from '../protocol/pop3/framer.js';
import type { Pop3Hooks, Pop3PendingCommand } from '../session/pop3.js';

export interface Pop3InspectorDeps {
  listener: ListenerConfig;
  policy: CompiledPolicy;
  engine: EngineDeps;
  log: Logger;
}

/** Header block plus the first `lines` lines of the body (RFC 1939 TOP). */
export function topOf(message: Buffer, lines: number): Buffer {
  let headerEnd = -1;
  for (let i = 0; i < message.length; i++) {
    if (message[i] !== 0x0a) continue;
    if (i === 0) {
      headerEnd = 1;
      break;
    }
    if (message[i + 1] === 0x0a) {
      headerEnd = i + 2;
      break;
    }
    if (message[i + 1] === 0x0d && message[i + 2] === 0x0a) {
      headerEnd = i + 3;
      break;
    }
  }
  if (headerEnd === -1) return message;
  let pos = headerEnd;
  for (let n = 0; n < lines && pos < message.length; n++) {
    const lf = message.indexOf(0x0a, pos);
    pos = lf === -1 ? message.length : lf + 1;
  }
  return message.subarray(0, pos);
}

export class Pop3Inspector {
  /**
   * Verdicts of the messages vetted in this session, by message number (stable within a POP3 session,
   * and POP3 messages never change). Kept for every message: DELE needs them.
   */
  private readonly verdicts = new Map<number, Verdict>();
  /**
   * Sanitised outputs of changed/blocked messages, oldest first, within the listener's
   * inspect.cacheMemoryBytes: a client downloading a large mailbox must not pile every message up in
   * memory. An evicted message is simply inspected again if asked for again (the result is deterministic).
   */
  private readonly outputs = new Map<number, Buffer>();
  private outputBytes = 0;

  constructor(private readonly deps: Pop3InspectorDeps) {}

  hooks(): Pop3Hooks {
    return {
      upstreamCommand: (cmd) => (cmd.name === 'TOP' && cmd.args.length >= 1 ? `RETR ${cmd.args[0]}` : null),
      onMultiline: (cmd, body) => this.onMessage(cmd, body),
      onDele: (n) => this.onDele(n),
    };
  }

  private remember(n: number, output: Buffer): void {
    const budget = this.deps.listener.inspect.cacheMemoryBytes;
    if (output.length > budget) return;
    this.outputs.set(n, output);
    this.outputBytes += output.length;
    for (const [k, b] of this.outputs) {
      if (this.outputBytes <= budget) break;
      this.outputs.delete(k);
      this.outputBytes -= b.length;
    }
  }

  /** The sanitised message n, or an error text when it could not be vetted. */
  private async sanitised(n: number, raw: Buffer): Promise<{ output: Buffer; clean: boolean } | { error: string }> {
    const known = this.verdicts.get(n);
    if (known?.status === 'clean') return { output: raw, clean: true };
    const cached = known ? this.outputs.get(n) : undefined;
    if (cached) return { output: cached, clean: false };
    try {
      const r = await inspectMessage(raw, this.deps.policy, { listener: this.deps.listener.name, protocol: 'pop3', msgno: n }, this.deps.engine);
      const verdict = r.verdict;
      this.deps.log.info(
        {
          inspect: {
            msgno: n,
            sizeIn: verdict.sizeIn,
            sizeOut: verdict.sizeOut,
            verdict: verdict.status,
            rules: verdict.hits.map((h) => ({ part: h.part, rule: h.rule, action: h.action, reason: h.reason, filename: h.filename, type: h.declaredType })),
            viruses: verdict.viruses,
            quarantineId: verdict.quarantineId,
            quarantineFailed: verdict.quarantineFailed,
            scanMs: Math.round(verdict.scanMs),
          },
        },
        'message inspected',
      );
      if (verdict.status === 'tempfail') {
        return { error: `[SYS/TEMP] postern: message ${n} could not be scanned; try again later` };
      }
      this.verdicts.set(n, verdict);
      if (verdict.status !== 'clean') this.remember(n, r.output);
      return { output: r.output, clean: verdict.status === 'clean' };
    } catch (err) {
      this.deps.log.error({ err: (err as Error).message, msgno: n }, 'inspection failed; withholding message');
      return { error: `[SYS/TEMP] postern: message ${n} could not be inspected` };
    }
  }

  private async onMessage(cmd: Pop3PendingCommand, body: Buffer): Promise<Buffer | { error: string }> {
    const n = Number(cmd.args[0]);
    const v = await this.sanitised(n, unstuff(body));
    if ('error' in v) return v;
    if (cmd.name === 'TOP') {
      const lines = Number(cmd.args[1] ?? 0);
      return stuff(topOf(v.output, Number.isFinite(lines) && lines >= 0 ? lines : 0));
    }
    return v.clean ? body : stuff(v.output);
  }

  private onDele(n: number): string | null {
    const v = this.verdicts.get(n);
    if (v && v.status !== 'clean' && v.quarantineFailed) {
      this.deps.log.warn({ msgno: n }, 'DELE refused: message was altered and its original could not be quarantined');
      return `[SYS/PERM] postern: message ${n} was altered by policy and its original could not be quarantined; it stays on the server`;
    }
    return null;
  }
}
