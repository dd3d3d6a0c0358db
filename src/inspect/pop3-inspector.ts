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
  /** Verdicts of the messages vetted in this session, by message number (stable within a POP3 session). */
  private readonly vetted = new Map<number, { output: Buffer; verdict: Verdict }>();

  constructor(private readonly deps: Pop3InspectorDeps) {}

  hooks(): Pop3Hooks {
    return {
      upstreamCommand: (cmd) => (cmd.name === 'TOP' && cmd.args.length >= 1 ? `RETR ${cmd.args[0]}` : null),
      onMultiline: (cmd, body) => this.onMessage(cmd, body),
      onDele: (n) => this.onDele(n),
    };
  }

  private async onMessage(cmd: Pop3PendingCommand, body: Buffer): Promise<Buffer | { error: string }> {
    const n = Number(cmd.args[0]);
    let v = this.vetted.get(n);
    if (!v) {
      const raw = unstuff(body);
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
        v = { output: r.output, verdict };
        this.vetted.set(n, v);
      } catch (err) {
        this.deps.log.error({ err: (err as Error).message, msgno: n }, 'inspection failed; withholding message');
        return { error: `[SYS/TEMP] postern: message ${n} could not be inspected` };
      }
    }
    if (cmd.name === 'TOP') {
      const lines = Number(cmd.args[1] ?? 0);
      return stuff(topOf(v.output, Number.isFinite(lines) && lines >= 0 ? lines : 0));
    }
    return v.verdict.status === "clean" ? body : stuff(v.output);
  }

  private onDele(n: number): string | null {
    const v = this.vetted.get(n);
    if (v && v.verdict.status !== 'clean' && v.verdict.quarantineFailed) {
      this.deps.log.warn({ msgno: n }, 'DELE refused: message was altered and its original could not be quarantined');
      return `[SYS/PERM] postern: message ${n} was altered by policy and its original could not be quarantined; it stays on the server`;
    }
    return null;
  }
}
