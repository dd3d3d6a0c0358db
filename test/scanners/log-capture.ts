import { Writable } from 'node:stream';
import { type Logger, pino } from 'pino';

export interface CapturedLog {
  log: Logger;
  lines: Array<Record<string, unknown>>;
  /** Entries whose msg equals `msg`. */
  find(msg: string): Array<Record<string, unknown>>;
}

/** A pino logger writing parsed JSON entries into an array (tests assert on state-change logs). */
export function captureLog(level: pino.Level = 'debug'): CapturedLog {
  const lines: Array<Record<string, unknown>> = [];
  let partial = '';
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      partial += chunk.toString('utf8');
      let nl: number;
      while ((nl = partial.indexOf('\n')) >= 0) {
        const line = partial.slice(0, nl);
        partial = partial.slice(nl + 1);
        if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
      }
      cb();
    },
  });
  return { log: pino({ level }, stream), lines, find: (msg) => lines.filter((l) => l.msg === msg) };
}
