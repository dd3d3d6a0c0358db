// Types for mime-harness.mjs (used by test/fuzz/mime.test.ts under tsconfig.test.json).
import type { simpleParser } from 'mailparser';
import type { renderItem } from '../../../src/inspect/render.js';
import type { inspectMessage } from '../../../src/policy/engine.js';
import type { loadPolicy } from '../../../src/policy/load.js';
import type { parseFetchItems } from '../../../src/protocol/imap/fetch-items.js';
export interface Finding {
  reader: string;
  kind: string;
  where: string;
  detail: string;
}
export interface JudgeResult {
  status: 'clean' | 'changed' | 'blocked' | 'tempfail';
  hits: { part: string; rule: string; action: string; reason: string; filename?: string }[];
  changed: boolean;
  findings: Finding[];
  ignored: Finding[];
  notes: string[];
  selfNotes: string[];
  ms: number;
  differential?: { sawDanger: string[]; sawNothing: string[] };
}
export interface GeneratedCase {
  bytes: Buffer;
  tags: string[];
  families: string[];
  applied: number[];
  shape: string;
  dangers: string[];
  allDangers: number;
  eicarSubject: boolean;
}
/** The code under test, handed in (compiled from dist/ by mime.mjs, the sources by the vitest test). */
export interface JudgeModules {
  inspectMessage: typeof inspectMessage;
  loadPolicy: typeof loadPolicy;
  renderItem: typeof renderItem;
  parseFetchItems: typeof parseFetchItems;
  simpleParser: typeof simpleParser;
}
export interface Judge {
  policy: unknown;
  judge(raw: Buffer): Promise<JudgeResult>;
  read(raw: Buffer): Promise<{ findings: Finding[]; notes: string[] }>;
  judgeCase(seed: string | number, index: number, genOpts?: object): Promise<{ gen: GeneratedCase; result: JudgeResult }>;
  close(): Promise<void>;
}
export const POLICIES_DIR: string;
export function createJudge(modules: JudgeModules, opts?: { policy?: unknown; policiesDir?: string; python?: string; ignoreKinds?: string[] }): Promise<Judge>;
export function kindOf(f: Finding): string;
export function kinds(result: JudgeResult): string[];
export function readerFamily(reader: string): string;
export const READER_FAMILIES: string[];
