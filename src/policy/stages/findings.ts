/**
 * Findings: what the stages of the engine found, in the order they found it. A finding is a public
 * RuleHit (src/policy/types.ts) plus the action spec of the rule that raised it and, for a strip,
 * the entity it replaces. Every stage hands its findings to one collector (`Findings.add`), which
 * bounds the listed ones: the verdict, the log line and the deny text are built from its list.
 */
import { MAX_LISTED_HITS } from '../../limits.js';
import type { MimeNode } from '../../mime/parse.js';
import type { ActionSpec } from '../load.js';
import type { ActionName, RuleHit } from '../types.js';

export interface Finding extends RuleHit {
  spec: ActionSpec;
  /** Entity to replace for a strip; undefined = whole message. */
  target?: MimeNode;
}

/** Where a pure stage hands each finding, in order (the collector's `add`, or an array's push in tests). */
export type Emit = (f: Finding) => void;

export const SEVERITY: Record<ActionName, number> = { allow: 0, strip: 1, block: 2 };

/** The stricter of two action specs (the first on a tie). */
export function stricter(a: ActionSpec, b: ActionSpec): ActionSpec {
  return SEVERITY[b.action] > SEVERITY[a.action] ? b : a;
}

/**
 * The collector. Every finding up to MAX_LISTED_HITS is listed. Past that a finding is still kept
 * when it changes the outcome (another entity to strip, a stricter action, a quarantine), never
 * dropped for space; so the first finding of every outcome is always listed.
 */
export class Findings {
  readonly list: Finding[] = [];
  private readonly outcomes = new Set<string>();
  private readonly targetIds = new Map<MimeNode, number>();

  /** Bound to the collector: hand it to a stage as its Emit. */
  readonly add: Emit = (f) => {
    const outcome = acts(f) ? this.outcomeOf(f) : '';
    if (this.list.length < MAX_LISTED_HITS || (outcome && !this.outcomes.has(outcome))) this.list.push(f);
    if (outcome) this.outcomes.add(outcome);
  };

  /** Puts one finding in front of the list, outside the bound (the tempfail finding). */
  prepend(f: Finding): void {
    this.list.unshift(f);
  }

  /** Some finding blocks the message. */
  blocks(): boolean {
    return this.list.some((f) => f.spec.action === 'block');
  }

  /** The findings that act (strip, block, or a spam tag). */
  acting(): Finding[] {
    return this.list.filter(acts);
  }

  /** An acting finding asks for the original in quarantine. */
  wantsQuarantine(): boolean {
    return this.list.some((f) => acts(f) && f.spec.quarantine);
  }

  private outcomeOf(f: Finding): string {
    let id = 0;
    if (f.spec.action === 'strip' && f.target) {
      id = this.targetIds.get(f.target) ?? this.targetIds.size + 1;
      this.targetIds.set(f.target, id);
    }
    return `${f.action === 'tag' ? 'tag' : f.spec.action}|${f.spec.quarantine ? 'q' : ''}|${id}`;
  }
}

/**
 * A finding acts when it changes what is delivered: a strip or a block (its spec), or a spam tag
 * (its spec says `allow`, as nothing is removed, but the message gets a subject prefix and headers).
 */
function acts(f: Finding): boolean {
  return f.spec.action !== 'allow' || f.action === 'tag';
}

/** The finding as the verdict lists it (action from its spec, tempfail and tag kept; quarantine/log flags). */
export function publicHit(f: Finding): RuleHit {
  const { spec: _spec, target: _target, ...rest } = f;
  const out: RuleHit = { ...rest, action: rest.action === 'tempfail' || rest.action === 'tag' ? rest.action : f.spec.action };
  if (f.spec.quarantine) out.quarantine = true;
  if (!f.spec.log) out.log = false;
  return out;
}
