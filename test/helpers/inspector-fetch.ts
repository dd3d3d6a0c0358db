/**
 * Drives one client FETCH through an ImapInspector with scripted upstream answers, as the relay
 * would: the command is offered to intercept(); every untagged answer goes to the interception
 * (or, when it declines one or nothing was intercepted, to observeUntagged and straight to the
 * client); the tagged `OK` ends it, or starts the second half of a split FETCH. Returns the upstream command and the client bytes in order
 * (an output may be a list of pieces: the output queue writes them in order). Also the inspector
 * those tests drive: selectedInspector.
 */

import path from 'node:path';
import type { Logger } from 'pino';
import { ImapInspector } from '../../src/inspect/imap-inspector.js';
import { fixedSignatures } from '../../src/inspect/signatures.js';
import { policyHash, type VerdictStore } from '../../src/inspect/verdict-store.js';
import { type CompiledPolicy, loadPolicy } from '../../src/policy/load.js';
import type { QuarantineStore } from '../../src/policy/types.js';
import type { ParsedCommand } from '../../src/protocol/imap/command.js';
import { parseCommandHead, parseResponseHead } from '../../src/protocol/imap/parse.js';
import { FileQuarantineStore } from '../../src/quarantine/store.js';
import type { Scanner } from '../../src/scanners/types.js';
import type { ImapSessionView } from '../../src/session/imap/index.js';
import type { Output } from '../../src/session/imap/output.js';
import { testListener } from './scripted-host.js';

export interface DrivenFetch {
  intercepted: boolean;
  upstream: string;
  client: Buffer;
}

/** `answers(upstream)`: the upstream's untagged responses, each as its pieces (head, literal, rest). */
export async function driveFetch(ins: ImapInspector, command: string, view: ImapSessionView, answers: (upstream: string) => Buffer[][]): Promise<DrivenFetch> {
  const line = Buffer.from(`${command}\r\n`);
  const ic = ins.intercept(parseCommandHead(line)!, line, view);
  let upstream = ic ? ic.upstreamCommand.toString('latin1') : line.toString('latin1');
  const outs: (Output | Promise<Output>)[] = [];
  const relay = (responses: Buffer[][]) => {
    for (const parts of responses) {
      const head = parseResponseHead(parts[0]!);
      const out = ic ? ic.onUntagged(parts, head) : null;
      if (out === null) {
        ins.observeUntagged(head, parts);
        outs.push(Buffer.concat(parts));
      } else outs.push(out);
    }
  };
  relay(answers(upstream));
  const tag = command.split(' ')[0]!;
  const done = Buffer.from(`${tag} OK Fetch completed.\r\n`);
  // a split FETCH's second half (InterceptedCommand.continueWith) under the private tag `P.c`: answered
  // for the UIDs it names only, as the server would
  const more = ic?.continueWith?.([done], parseResponseHead(done)) ?? null;
  if (ic && more !== null) {
    const second = `P.c ${more}\r\n`;
    upstream += second;
    const named = uidsOf(/^UID FETCH (\S+) /.exec(more)![1]!);
    relay(answers(second).filter((parts) => named.has(Number(/\(UID (\d+)/.exec(parts[0]!.toString('latin1'))?.[1]))));
    const done2 = Buffer.from('P.c OK Fetch completed.\r\n');
    outs.push(ic.onTagged([done2], parseResponseHead(done2)));
  } else outs.push(ic ? ic.onTagged([done], parseResponseHead(done)) : done);
  const client = Buffer.concat((await Promise.all(outs)).flatMap((o) => (Buffer.isBuffer(o) ? [o] : [...o])));
  return { intercepted: ic !== null, upstream, client };
}

/** The UIDs a set of numbers and ranges names (`3,7:9`). */
function uidsOf(set: string): Set<number> {
  const out = new Set<number>();
  for (const r of set.split(',')) {
    const [a, b] = r.split(':').map(Number) as [number, number | undefined];
    for (let u = Math.min(a, b ?? a); u <= Math.max(a, b ?? a); u++) out.add(u);
  }
  return out;
}

/**
 * An ImapInspector with the default policy, no scanner, a quarantine under `dir`/q and the shared
 * verdict store, as a session of user `view.user` that has just selected INBOX (`exists` messages,
 * UIDVALIDITY 7). `selected` receives what intercept() answered for the SELECT (null: passed on).
 */
export function selectedInspector(o: {
  dir: string;
  /** The shared verdict store (null: none). */
  store: VerdictStore | null;
  view: ImapSessionView;
  exists: number;
  log: Logger;
  selected?: (intercepted: unknown) => void;
  /** inspect.cache_memory_bytes of the listener (default testListener's). */
  cacheMemoryBytes?: number;
  /** The antivirus scanner (default none: not scanned). */
  scanner?: Scanner;
  /** inspect.verdict_cache.by_content on (default off: testListener has no verdict_cache). */
  byContent?: boolean;
  /** The quarantine (default a FileQuarantineStore under `dir`/q). */
  quarantine?: QuarantineStore;
  /** The listener's policy (default `default`). */
  policy?: CompiledPolicy;
  /** The scanners' signature version keying the store (default ''). */
  signatures?: string;
}): ImapInspector {
  const policy = o.policy ?? loadPolicy('default', 'policies');
  const quarantine = o.quarantine ?? new FileQuarantineStore({ dir: path.join(o.dir, 'q'), retentionDays: 0 });
  const listener = testListener();
  if (o.cacheMemoryBytes !== undefined) listener.inspect = { ...listener.inspect, cacheMemoryBytes: o.cacheMemoryBytes };
  if (o.byContent && o.store)
    listener.inspect = { ...listener.inspect, verdictCache: { path: o.store.file, maxEntries: 1000, maxBytes: 1 << 24, byContent: { maxEntries: 1000 } } };
  const ins = new ImapInspector({
    listener,
    policy,
    engine: { scanner: o.scanner ?? null, quarantine },
    log: o.log,
    shared: o.store ? { store: o.store, policyHash: policyHash(policy), signatures: fixedSignatures(o.signatures ?? '') } : null,
  });
  const sel = Buffer.from('s1 SELECT INBOX\r\n');
  const parsed: ParsedCommand = { tag: 's1', name: 'SELECT', verb: 'SELECT', args: [{ t: 'string', form: 'atom', v: Buffer.from('INBOX') }] };
  const ic = ins.intercept(parseCommandHead(sel)!, sel, o.view, parsed);
  o.selected?.(ic);
  for (const l of [`* ${o.exists} EXISTS\r\n`, '* OK [UIDVALIDITY 7] UIDs valid\r\n']) ins.observeUntagged(parseResponseHead(Buffer.from(l)), [Buffer.from(l)]);
  ins.observeTagged('s1', 'SELECT', parseResponseHead(Buffer.from('s1 OK [READ-WRITE] Select completed\r\n')));
  return ins;
}
