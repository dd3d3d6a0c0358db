/**
 * Drives one client FETCH through an ImapInspector with scripted upstream answers, as the relay
 * would: the command is offered to intercept(); every untagged answer goes to the interception
 * (or, when it declines one or nothing was intercepted, to observeUntagged and straight to the
 * client); the tagged `OK` ends it. Returns the upstream command and the client bytes in order
 * (an output may be a list of pieces: the output queue writes them in order).
 */
import type { ImapInspector } from '../../src/inspect/imap-inspector.js';
import { parseCommandHead, parseResponseHead } from '../../src/protocol/imap/parse.js';
import type { ImapSessionView } from '../../src/session/imap/index.js';
import type { Output } from '../../src/session/imap/output.js';

export interface DrivenFetch {
  intercepted: boolean;
  upstream: string;
  client: Buffer;
}

/** `answers(upstream)`: the upstream's untagged responses, each as its pieces (head, literal, rest). */
export async function driveFetch(ins: ImapInspector, command: string, view: ImapSessionView, answers: (upstream: string) => Buffer[][]): Promise<DrivenFetch> {
  const line = Buffer.from(`${command}\r\n`);
  const ic = ins.intercept(parseCommandHead(line)!, line, view);
  const upstream = ic ? ic.upstreamCommand.toString('latin1') : line.toString('latin1');
  const outs: (Output | Promise<Output>)[] = [];
  for (const parts of answers(upstream)) {
    const head = parseResponseHead(parts[0]!);
    const out = ic ? ic.onUntagged(parts, head) : null;
    if (out === null) {
      ins.observeUntagged(head, parts);
      outs.push(Buffer.concat(parts));
    } else outs.push(out);
  }
  const tag = command.split(' ')[0]!;
  const done = Buffer.from(`${tag} OK Fetch completed.\r\n`);
  outs.push(ic ? ic.onTagged([done], parseResponseHead(done)) : done);
  const client = Buffer.concat((await Promise.all(outs)).flatMap((o) => (Buffer.isBuffer(o) ? [o] : [...o])));
  return { intercepted: ic !== null, upstream, client };
}
