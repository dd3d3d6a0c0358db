// Command-line pieces the socket-free fuzzers share (scripts/fuzz/session.mjs, collector.mjs): their
// options, their usage text (the script's own header comment) and the case a --replay or --case names.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** Options every such fuzzer takes: flag -> [key, 'number' | 'string' | 'flag']. */
const COMMON = {
  '--cases': ['cases', 'number'],
  '--seed': ['seed', 'number'],
  '--time': ['time', 'number'],
  '--start': ['start', 'number'],
  '--proto': ['proto', 'string'],
  '--repro-dir': ['reproDir', 'string'],
  '--dist': ['dist', 'string'],
  '--rev': ['rev', 'string'],
  '--replay': ['replay', 'string'],
  '--case': ['case', 'string'],
  '--print': ['print', 'flag'],
  '--json': ['json', 'flag'],
  '-h': ['help', 'flag'],
  '--help': ['help', 'flag'],
};

/** Parses argv into `defaults` plus the COMMON options and the fuzzer's `extra` ones; an unknown option throws. */
export function parseFuzzArgs(argv, defaults, extra = {}) {
  const spec = { ...COMMON, ...extra };
  const o = { ...defaults };
  for (let i = 0; i < argv.length; i++) {
    const s = spec[argv[i]];
    if (!s) throw new Error(`unknown option ${argv[i]}`);
    const [key, kind] = s;
    o[key] = kind === 'flag' ? true : kind === 'number' ? Number(argv[++i]) : argv[++i];
  }
  return o;
}

/** Prints lines `from`..`to` (0-based, end excluded) of the script's header comment, the usage. */
export function printUsage(scriptUrl, from, to) {
  console.log(
    readFileSync(fileURLToPath(scriptUrl), 'utf8')
      .split('\n')
      .slice(from, to)
      .map((l) => l.replace(/^\/\/ ?/, ''))
      .join('\n'),
  );
}

/**
 * The case `--replay FILE` (a repro JSON, `{ case }` or the case itself) or `--case seed:index:...`
 * names; `generate(seed, index, fields)` builds the latter from the fields after seed and index.
 */
export function namedCase(o, generate) {
  if (o.replay) {
    const j = JSON.parse(readFileSync(o.replay, 'utf8'));
    return j.case ?? j;
  }
  const [seed, index, ...fields] = o.case.split(':');
  return generate(Number(seed), Number(index), fields);
}
