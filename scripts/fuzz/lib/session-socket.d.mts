// Types for session-socket.mjs (used by test/fuzz/session-dovecot.test.ts under tsconfig.test.json).
import type { Leak } from './session-common.mjs';
import type { Case } from './session-harness.mjs';

export interface SocketPorts {
  imap?: number;
  pop3?: number;
}
export interface SocketCaseResult {
  leak: Leak | null;
  loggedIn: boolean;
  closedByPostern: boolean;
  transcript: [string, string][];
}
export interface SocketReport {
  seed: number;
  casesRun: number;
  escapes: number;
  loginFailures: number;
  classes: Record<string, { count: number; firstCase: string; repro: unknown }>;
  ms: number;
}
export function generateSocketCase(seed: number, index: number, opts?: { proto?: string }): Case;
export function runSocketCase(
  ports: SocketPorts,
  kase: Pick<Case, 'proto' | 'steps'> & { id?: string },
  opts?: { quietMs?: number; maxStepMs?: number; loginMs?: number },
): Promise<SocketCaseResult>;
export function runSocketCampaign(
  ports: SocketPorts,
  opts: { seed: number; cases: number; start?: number; timeMs: number; concurrency?: number; minimizeMs?: number; proto?: string },
): Promise<SocketReport>;
export function formatSocketReport(report: SocketReport): string;
export function socketReproFiles(report: SocketReport): { name: string; body: string }[];
export function answerSignature(bytes: Buffer): string;
export function modelCheckCase(seed: number, index: number): (Case & { steps: { c: string[] }[] }) | null;
export function compareWithModel(
  port: number,
  kase: Case,
  model: new () => { out: Buffer[]; connect(): void; receive(b: Buffer): void },
  opts?: { user?: string; pass?: string },
): Promise<{ same: boolean; real: string; model: string }>;
