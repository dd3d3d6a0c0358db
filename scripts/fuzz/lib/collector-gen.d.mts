// Types for collector-gen.mjs (used by test/fuzz/collector.test.ts under tsconfig.test.json).
export interface Mut {
  pass: number;
  k: string;
  on?: string;
  len?: number;
  msg: number;
  other: number;
  cut: number;
  nth: number;
}
export interface Case {
  id?: string;
  proto: 'pop3' | 'imap';
  tls: 'none' | 'starttls';
  tokenSeed: string;
  mailbox: string[];
  passes: number;
  caps: { saslPlain: boolean; saslIr: boolean; uidplus: boolean };
  account: { maxMessagesPerPass: number; maxMessageBytes: number; keep: 'delete' | 'forever'; timeoutMs: number };
  delivery: 'accept' | 'temp' | 'perm' | 'unconfirmed' | 'down';
  deliveryMsg: number;
  deliveryPass: number;
  chunking: 'whole' | 'split' | 'drip';
  splitSeed: number;
  muts: Mut[];
}
export const EICAR: Buffer;
export const EXE: Buffer;
export const EXE_HEAD: Buffer;
export const KINDS: Record<string, { danger: string | null }>;
export function b64lines(buf: Buffer, width?: number): string[];
export function qpLines(buf: Buffer): string[];
export function uuLines(buf: Buffer, name: string): string[];
export function makeMessage(kind: string, token: string): Buffer;
export function makeMailbox(kase: Case): { key: string; kind: string; content: Buffer }[];
export function generateCase(seed: number, index: number, opts?: { proto?: 'pop3' | 'imap' }): Case;
export function mutLabel(m: Mut): string;
