/**
 * A parser held to a reference reading (a regular expression) on bounded random mutations of edge
 * cases (test/inspect/poll-line.test.ts, list-head.test.ts).
 */
import { expect } from 'vitest';
import { mulberry32 as prng } from './prng.js';

/**
 * Bounded random mutations of texts, for a parser held to a reference reading (a regular expression):
 * up to `max` cases within `ms` milliseconds, each one of the first `from` texts of `cases` with zero to
 * two characters replaced (by one of `alphabet`), inserted (one of `alphabet`) or deleted, handed to `check`.
 * Returns how many cases ran and how many of them `accepted` said the reference accepts.
 */
function mutationRounds(o: {
  seed: number;
  cases: readonly string[];
  from: number;
  alphabet: string;
  max: number;
  ms: number;
  accepted: (s: string) => boolean;
  check: (s: string) => void;
}): { n: number; accepted: number } {
  const rnd = prng(o.seed);
  const deadline = Date.now() + o.ms;
  let n = 0;
  let accepted = 0;
  for (; n < o.max && Date.now() < deadline; n++) {
    let s = o.cases[Math.floor(rnd() * o.from)]!;
    for (let k = Math.floor(rnd() * 3); k > 0; k--) {
      const at = Math.floor(rnd() * (s.length + 1));
      const op = rnd();
      const ch = o.alphabet[Math.floor(rnd() * o.alphabet.length)]!;
      if (op < 0.4) s = s.slice(0, at) + ch + s.slice(at + 1);
      else if (op < 0.7) s = s.slice(0, at) + ch + s.slice(at);
      else s = s.slice(0, at) + s.slice(at + 1);
    }
    if (o.accepted(s)) accepted++;
    o.check(s);
  }
  return { n, accepted };
}

/**
 * mutationRounds, asserting that it ran enough cases (over 1,000) and that the reference accepted
 * some of them and refused others (a round that only ever tests one answer tests nothing).
 */
export function expectAgreementOnMutations(o: Parameters<typeof mutationRounds>[0]): void {
  const { n, accepted } = mutationRounds(o);
  expect(n).toBeGreaterThan(1000);
  expect(accepted).toBeGreaterThan(10);
  expect(accepted).toBeLessThan(n);
}
