// Types for session-harness.mjs (used by test/fuzz/session*.test.ts under tsconfig.test.json).
import type { createSessionFactory } from '../../../src/inspect/factory.js';
import type { VerdictStore } from '../../../src/inspect/verdict-store.js';
import type { SessionLimits } from '../../../src/limits.js';
import type { Scanner } from '../../../src/scanners/types.js';
import type { Leak } from './session-common.mjs';

export interface HarnessDeps {
  createSessionFactory: typeof createSessionFactory;
  DEFAULT_SESSION_LIMITS: SessionLimits;
  /** When given, store cases (Case.store) run against a verdict store; without it they run as plain cases. */
  VerdictStore?: typeof VerdictStore;
}
export interface Step {
  /** Client chunks sent back to back (latin1 text). */
  c?: string[];
  /** A hostile upstream action. */
  h?: Record<string, unknown>;
  pre?: boolean;
  /** Class label of a mutation; `p` where it happened; `l` a detail. */
  k?: string;
  p?: string;
  l?: string;
  tie?: boolean;
  /** 'eicar-header': INBOX also holds a message with EICAR in its Subject (UID 6). */
  x?: string;
}
export interface Case {
  proto: 'imap' | 'pop3';
  mode?: 'client' | 'server' | 'both';
  /** 'none': a listener without a policy (plain relay). */
  policy: 'strip' | 'block' | 'none';
  vetOnMetadata?: boolean;
  usplit?: number;
  /** Deliver upstream bytes one at a time. */
  bytewise?: boolean;
  /**
   * A store case: the listener has a verdict store (content table on), emptied first; a first session,
   * the same client with an honest upstream (no hostile action), fills it; then the case's session.
   */
  store?: boolean;
  steps: Step[];
  id?: string;
}
export interface CaseResult {
  leak: Leak | null;
  errors: string[];
  end: string;
  stalled: boolean;
  loggedIn: boolean;
  fired: number;
  transcript?: [string, string][];
  logs?: string[];
}
export interface Env {
  close(): Promise<void>;
}
export interface ClassEntry {
  count: number;
  firstCase: string;
  placements?: Record<string, number>;
  items?: Record<string, number>;
  repro: { class: string; leak?: Leak; case: Case; transcript: [string, string][] } | null;
}
export interface Report {
  seed: number;
  casesRun: number;
  escapes: number;
  byProto: Record<string, { cases: number; escapes: number }>;
  classes: Record<string, ClassEntry>;
  stallClasses: Record<string, ClassEntry>;
  errors: { id: string; errors: string[] }[];
  ends: Record<string, number>;
  stalls: number;
  loginFailures: number;
  loginFailuresUnexplained: number;
  /** The first cases whose session ended on E_INTERNAL. */
  internalExamples: string[];
  ms: number;
}
export interface CampaignOptions {
  seed: number;
  cases: number;
  start?: number;
  timeMs?: number;
  proto?: 'imap' | 'pop3';
  mode?: 'client' | 'server' | 'both';
  minimizeBudgetMs?: number;
  minimizeRuns?: number;
  reproDir?: string;
  progress?: number;
  onProgress?: (r: Report) => void;
}
export function fakeScanner(): Scanner;
export function policyYaml(action: 'strip' | 'block'): string;
export function createEnv(deps: HarnessDeps): Env;
export function runCase(env: Env, kase: Case, opts?: { record?: boolean }): Promise<CaseResult>;
export function generateCase(seed: number, index: number, opts?: { proto?: string; mode?: string }): Case;
export function minimize(env: Env, kase: Case, budget?: number, property?: (r: CaseResult) => boolean): Promise<{ kase: Case; runs: number }>;
export function classify(kase: Case): string;
export function runCampaign(env: Env, opts: CampaignOptions): Promise<Report>;
export function slug(name: string): string;
export function writeRepros(report: Report, dir: string, opts?: { stalls?: boolean }): string[];
export function formatReport(report: Report, opts?: { repros?: boolean }): string;
