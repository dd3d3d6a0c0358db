/**
 * The policy's header rules (`headers.strip`, `headers.add`): which fields of a header are dropped,
 * which are added. Pure. The rewrite stage applies them to the top-level header (scope top) and to
 * part headers (scope all); the IMAP inspector applies the same function to header-only fetches,
 * so a header fetch and a full fetch agree.
 */
import { matchableFieldValue } from '../../mime/headers.js';
import type { MimeNode } from '../../mime/parse.js';
import { parseHeaderBlock } from '../../mime/partmap.js';
import type { CompiledPolicy } from '../load.js';

export type HeaderStripRule = CompiledPolicy['headers']['strip'][number];

/**
 * Applies the policy's header rules to header-only data (a whole header ending with its blank line,
 * or a subset of fields). `add: false` skips added headers (for HEADER.FIELDS subsets).
 * Returns the input Buffer itself when nothing changes.
 */
export function applyHeaderRules(header: Buffer, policy: CompiledPolicy, opts: { add?: boolean } = {}): Buffer {
  const node = parseHeaderBlock(header, header.length + 1);
  return applyParsedHeaderRules(header, node, policy, opts.add !== false, []);
}

/**
 * The top-level header `h` of `buf` with the scope-top strip rules applied, the policy's added
 * fields (when `add`) and `extra` lines (antivirus tags) in front; ends where h's body starts.
 */
export function applyParsedHeaderRules(buf: Buffer, h: MimeNode, policy: CompiledPolicy, add: boolean, extra: readonly string[]): Buffer {
  const eol = eolOf(buf, h.headerStart);
  const kept = filterHeader(buf, h, policy.headers.strip);
  const adds = add ? addedHeaderLines(policy, eol) : [];
  for (const e of extra) adds.push(Buffer.from(e + eol, 'latin1'));
  if (!kept && adds.length === 0) return h.bodyStart === buf.length ? buf : buf.subarray(0, h.bodyStart);
  const parts = [...adds, ...(kept ?? [buf.subarray(h.headerStart, h.headerEnd)]), buf.subarray(h.headerEnd, Math.max(h.headerEnd, h.bodyStart))];
  return Buffer.concat(parts);
}

/** The strip rules that apply to part headers (scope: all). */
export function partHeaderRules(policy: CompiledPolicy): HeaderStripRule[] {
  return policy.headers.strip.filter((r) => r.scope === 'all');
}

/** Returns the kept fields of a header (null when nothing is dropped). */
export function filterHeader(buf: Buffer, n: MimeNode, rules: readonly HeaderStripRule[]): Buffer[] | null {
  if (rules.length === 0 || !fieldsTile(n)) return null;
  const out: Buffer[] = [];
  let dropped = false;
  for (const f of n.fields) {
    if (f.colon) {
      const name = f.name.trim().toLowerCase();
      // a value too long to match against the policy's expression counts as matching (strict reading)
      if (rules.some((r) => r.name.test(name) && (r.value === null || testValue(r.value, f.value)))) {
        dropped = true;
        continue;
      }
    }
    out.push(buf.subarray(f.start, f.end));
  }
  return dropped ? out : null;
}

/** The fields tile the header exactly (false when a header over max_header_size kept only some). */
function fieldsTile(n: MimeNode): boolean {
  if (n.fields.length === 0) return n.headerEnd === n.headerStart;
  return n.fields[0]!.start === n.headerStart && n.fields[n.fields.length - 1]!.end === n.headerEnd;
}

function testValue(re: RegExp, raw: string): boolean {
  const v = matchableFieldValue(raw);
  return v === undefined || re.test(v);
}

function addedHeaderLines(policy: CompiledPolicy, eol: string): Buffer[] {
  return policy.headers.add.map((a) => Buffer.from(`${a.name}: ${a.value.replace(/\{policy\}/g, policy.name)}${eol}`, 'latin1'));
}

function eolOf(buf: Buffer, from: number): '\r\n' | '\n' {
  const lf = buf.indexOf(0x0a, from);
  return lf > from && buf[lf - 1] === 0x0d ? '\r\n' : lf < 0 ? '\r\n' : '\n';
}
