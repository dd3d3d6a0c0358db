/**
 * The policy's lookups for one value, shared by every rule that judges a name or a type (parts,
 * files embedded in text, archive members): which `content_types` rule a type meets, which
 * `filenames` rule (or the double-extension rule) a name meets. Pure.
 */
import type { ActionSpec, CompiledPolicy } from '../load.js';

/** The policy's decision for one value: the action spec, the rule's name, its reason text if it has one. */
export interface RuleDecision {
  spec: ActionSpec;
  rule: string;
  reason?: string;
}

function matchRules(rules: CompiledPolicy['contentRules'], value: string) {
  for (const r of rules) if (r.re.some((re) => re.test(value))) return r;
  return undefined;
}

/** typeDecision's answers per compiled policy: a mailbox has few distinct types, each matched once. */
const typeDecisions = new WeakMap<CompiledPolicy, Map<string, RuleDecision>>();
/** Distinct types remembered per policy (then the memory starts over). */
const TYPE_DECISIONS_KEPT = 512;

/** The content_types rule for a type (the default when none matches). */
export function typeDecision(policy: CompiledPolicy, t: string): RuleDecision {
  let memo = typeDecisions.get(policy);
  if (!memo) typeDecisions.set(policy, (memo = new Map()));
  const known = memo.get(t);
  if (known) return known;
  const r = matchRules(policy.contentRules, t);
  const d: RuleDecision = r
    ? { spec: r.spec, rule: `content_types.rules[${r.index}]`, reason: r.reason }
    : { spec: policy.contentDefault, rule: 'content_types.default' };
  if (memo.size >= TYPE_DECISIONS_KEPT) memo.clear();
  memo.set(t, Object.freeze(d));
  return d;
}

/** The filenames rule for a name, or the double-extension rule; undefined when none applies. */
export function filenameDecision(policy: CompiledPolicy, name: string): RuleDecision | undefined {
  const r = matchRules(policy.filenameRules, name);
  if (r && r.spec.action !== 'allow') return { spec: r.spec, rule: `filenames.rules[${r.index}]`, reason: r.reason };
  if (policy.doubleExtension && policy.doubleExtension.action !== 'allow' && doubleExtension(policy, name)) {
    return { spec: policy.doubleExtension, rule: 'filenames.double_extension', reason: `double extension in ${name}` };
  }
  return r ? { spec: r.spec, rule: `filenames.rules[${r.index}]` } : undefined;
}

function doubleExtension(policy: CompiledPolicy, name: string): boolean {
  const parts = name.toLowerCase().split('.');
  if (parts.length < 3) return false;
  const last = parts[parts.length - 1]!;
  const prev = parts[parts.length - 2]!;
  return policy.dangerousExtensions.has(last) && /^[a-z]{2,5}$/.test(prev) && !policy.dangerousExtensions.has(prev);
}

/** One finding per file-name rule that any of the names triggers (the first name that did is reported). */
export function filenameHits(policy: CompiledPolicy, names: readonly string[], add: (fr: RuleDecision, name: string) => void): void {
  const seen = new Set<string>();
  for (const n of names) {
    const fr = filenameDecision(policy, n);
    if (!fr || fr.spec.action === 'allow' || seen.has(fr.rule)) continue;
    seen.add(fr.rule);
    add(fr, n);
  }
}
