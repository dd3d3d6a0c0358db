// Types for session-common.mjs (used by test/fuzz/session*.test.ts under tsconfig.test.json).
export interface Leak {
  offset: number;
  payload: string;
  context: string;
}
export const EICAR: Buffer;
export const MZ_MARKER: Buffer;
export const EXE: Buffer;
export const EXE_B64: Buffer;
export const EICAR_B64: Buffer;
export const MESSAGES: Record<'clean' | 'exe' | 'eicarPart' | 'eicarB64' | 'eicarBody' | 'eicarHeader', Buffer>;
export const HOSTILE_PAYLOADS: Record<string, Buffer>;
export function findLeak(data: Buffer): Leak | null;
export function eicarScanner(name?: string): import('../../../src/scanners/types.js').Scanner;
