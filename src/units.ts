/**
 * The one size grammar and the one duration rule of postern's YAML files: the main config
 * (src/config/schema.ts) and the policies (src/policy/schema.ts) both use these fields, so "25MB"
 * means the same number of bytes everywhere (docs/configuration.md, "Sizes and durations").
 *
 * Sizes: a whole number of bytes, or a whole number and a unit (one space allowed between them):
 *
 *   B              1
 *   K   KB   KiB   1,024
 *   M   MB   MiB   1,048,576
 *   G   GB   GiB   1,073,741,824
 *
 * K/M/G and KB/MB/GB are binary, as in the programs postern sits between: clamd reads
 * `StreamMaxLength 25M` as 25 MiB, Dovecot's size settings (`vsz_limit = 256M`) and Exim's `K`/`M`
 * are binary too, and postern's policies always read them that way. Units are case-sensitive as
 * written above; anything else is refused with its location: fractions (`1.5MiB`, write `1536KiB`),
 * lower case (`25mb`, `25k`), `kB` (the SI kilobyte would be 1,000), `Mb` (megabits), other words,
 * negative numbers and values beyond 2^53.
 *
 * Durations: every duration key ends in `_ms` and takes a whole number of milliseconds as a YAML
 * number (`idle_timeout_ms: 1860000`). A string such as "60s" is refused with the number to write
 * (`60000`), so that the key's name never disagrees with its value.
 */
import { z } from 'zod';

const SIZE_UNITS: Readonly<Record<string, number>> = {
  B: 1,
  K: 1024,
  KB: 1024,
  KiB: 1024,
  M: 1024 ** 2,
  MB: 1024 ** 2,
  MiB: 1024 ** 2,
  G: 1024 ** 3,
  GB: 1024 ** 3,
  GiB: 1024 ** 3,
};

export const SIZE_GRAMMAR = 'a whole number of bytes, or a whole number with B, K/KB/KiB, M/MB/MiB or G/GB/GiB (binary: 1K = 1024), e.g. 25MiB';

export type Parsed = { ok: true; value: number } | { ok: false; message: string };

/** Parses a size (see the grammar above). */
export function parseSize(value: unknown): Parsed {
  const bad = (why: string): Parsed => ({ ok: false, message: `${why}: expected ${SIZE_GRAMMAR}` });
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value) || value < 0) return bad(`${value} is not a whole number of bytes`);
    return { ok: true, value };
  }
  if (typeof value !== 'string') return bad(`${value === null ? 'null' : typeof value} is not a size`);
  const m = /^(\d+)(?: ?([A-Za-z]+))?$/.exec(value);
  if (!m) {
    if (/^\d+[.,]\d+ ?[A-Za-z]*$/.test(value)) return bad(`"${value}" has a fraction (write the next smaller unit, e.g. 1536KiB for 1.5MiB)`);
    return bad(`"${value}" is not a size`);
  }
  const n = Number(m[1]);
  const unit = m[2];
  if (unit === undefined) return Number.isSafeInteger(n) ? { ok: true, value: n } : bad(`"${value}" is too large`);
  const factor = SIZE_UNITS[unit];
  if (factor === undefined) {
    const hint =
      unit === 'kB' ? ' (kB is the SI kilobyte, 1000 bytes; postern sizes are binary)' : /^[kmg]i?b?$/i.test(unit) ? ' (units are case-sensitive)' : '';
    return bad(`unknown unit "${unit}"${hint}`);
  }
  const bytes = n * factor;
  return Number.isSafeInteger(bytes) ? { ok: true, value: bytes } : bad(`"${value}" is too large`);
}

const DURATION_HINT_UNITS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, min: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses a `*_ms` value: a whole number of milliseconds (a YAML number). */
export function parseMillis(value: unknown): Parsed {
  if (typeof value === 'number') {
    if (Number.isSafeInteger(value) && value >= 0) return { ok: true, value };
    return { ok: false, message: `${value} is not a whole number of milliseconds` };
  }
  if (typeof value === 'string') {
    const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(value);
    const factor = m ? DURATION_HINT_UNITS[m[2]!.toLowerCase() || 'ms'] : undefined;
    const ms = m && factor !== undefined ? Number(m[1]) * factor : NaN;
    const fix = Number.isSafeInteger(ms) ? `: write ${ms}` : '';
    return { ok: false, message: `keys ending in _ms take a whole number of milliseconds, not the string "${value}"${fix}` };
  }
  return { ok: false, message: 'expected a whole number of milliseconds' };
}

function field(parse: (v: unknown) => Parsed) {
  return z.unknown().transform((v, ctx) => {
    const r = parse(v);
    if (r.ok) return r.value;
    ctx.addIssue({ code: 'custom', message: r.message });
    return z.NEVER;
  });
}

/** A size field of a YAML schema (number of bytes out). */
export const sizeField = field(parseSize);
/** A `*_ms` field of a YAML schema (number of milliseconds out). */
export const millisField = field(parseMillis);
