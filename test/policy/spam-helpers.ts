import type { SpamAction, SpamOutcome, SpamSymbol } from '../../src/scanners/types.js';

/** A scored rspamd answer (required_score 15, as rspamd's default). */
export function scored(
  score: number,
  action: SpamAction = 'no action',
  symbols: SpamSymbol[] = [{ name: 'A_SYM', score }],
): Extract<SpamOutcome, { kind: 'scored' }> {
  return { kind: 'scored', engine: 'rspamd', endpoint: 'mem', score, requiredScore: 15, action, symbols, skipped: false, ms: 3 };
}
