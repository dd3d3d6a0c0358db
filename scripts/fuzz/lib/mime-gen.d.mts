// Types for mime-gen.mjs (used by test/fuzz/mime.test.ts under tsconfig.test.json).
import type { GeneratedCase } from './mime-harness.mjs';
export const EICAR: Buffer;
export const MZ_MARKER: Buffer;
export const EXE: Buffer;
export const JS: Buffer;
export function b64lines(buf: Buffer, width?: number): string;
export function qpEncode(buf: Buffer, binary?: boolean): string;
export function uuencodeLines(buf: Buffer): string[];
export function uuBlock(buf: Buffer, name: string, mode?: string): string;
export function generateCase(
  seed: string | number,
  index: number,
  opts?: { skip?: Set<number>; bare?: boolean; drop?: Set<number>; plainSubject?: boolean },
): GeneratedCase;
