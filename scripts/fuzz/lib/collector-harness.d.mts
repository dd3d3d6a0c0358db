// Types for collector-harness.mjs (used by test/fuzz/collector.test.ts under tsconfig.test.json).

import type { ImapMailbox } from '../../../src/collector/imap.js';
import type { runPass } from '../../../src/collector/pass.js';
import type { Pop3Mailbox } from '../../../src/collector/pop3.js';
import type { resolveRecipients } from '../../../src/collector/recipients.js';
import type { CollectorState } from '../../../src/collector/state.js';
import type { PosternError } from '../../../src/errors.js';
import type { logErr } from '../../../src/log/logger.js';
import type { inspectMessage } from '../../../src/policy/engine.js';
import type { loadPolicy } from '../../../src/policy/load.js';
import type { HoldGate } from '../../../src/relay/memory.js';
import type { Case } from './collector-gen.mjs';
import type { Finding, PassRecord } from './collector-oracle.mjs';

export interface HarnessDeps {
  runPass: typeof runPass;
  CollectorState: typeof CollectorState;
  Pop3Mailbox: typeof Pop3Mailbox;
  ImapMailbox: typeof ImapMailbox;
  resolveRecipients: typeof resolveRecipients;
  inspectMessage: typeof inspectMessage;
  loadPolicy: typeof loadPolicy;
  HoldGate: typeof HoldGate;
  logErr: typeof logErr;
  PosternError: typeof PosternError;
}
export interface Env {
  deps: HarnessDeps;
  /** Null when node could not expose gc (the heap check of floods is then skipped). */
  gc: (() => void) | null;
  close(): Promise<void>;
}
export interface CaseResult {
  findings: Finding[];
  passes: (PassRecord & { counts: Record<string, number> | null; ms: number })[];
  fired: string[];
  server?: Record<string, unknown>;
  deliveries?: { pass: number; session: number; accepted: boolean; bytes: number; head: string }[];
  logs?: string[];
}
export interface ClassEntry {
  key: string;
  /** The hostile actions of its minimal case: a later case with the same finding and all of them is counted here. */
  labels: string[];
  proto: string;
  count: number;
  firstCase: string;
  examples: string[];
  repro: { class: string; invariant: string; findings: Finding[]; case: Case } | null;
}
export interface Report {
  seed: number;
  casesRun: number;
  passesRun: number;
  byProto: Record<string, { cases: number; findings: number }>;
  findings: number;
  classes: Record<string, ClassEntry>;
  results: Record<string, number>;
  fired: Record<string, number>;
  ms: number;
}
export interface CampaignOptions {
  seed: number;
  cases: number;
  start?: number;
  timeMs?: number;
  proto?: 'pop3' | 'imap';
  minimizeBudgetMs?: number;
  minimizeRuns?: number;
  reproDir?: string;
  progress?: number;
  onProgress?: (r: Report) => void;
}
export const POLICIES_DIR: string;
export function createEnv(deps: HarnessDeps): Env;
export function runCase(env: Env, kase: Case, opts?: { record?: boolean }): Promise<CaseResult>;
export function minimize(env: Env, kase: Case, want: string, budget?: number): Promise<{ kase: Case; runs: number }>;
export function classify(kase: Case, finding: Finding): string;
export function runCampaign(env: Env, opts: CampaignOptions): Promise<Report>;
export function slug(name: string): string;
export function writeRepros(report: Report, dir: string): string[];
export function formatReport(report: Report): string;
