/**
 * Rewrite stage: the bytes that are served instead of the message. Pure and deterministic.
 *
 * - block: a notice (policy.deny.block) that repeats only well-formed thread header fields of the
 *   original, never other original bytes; a sterile notice (nothing taken from the message) when
 *   the ordinary one would still carry a virus;
 * - rewrite: works on byte offsets into the message: untouched ranges are re-emitted as zero-copy
 *   subarrays and only replaced entities (stripped parts as policy.deny.strip notes, rewritten
 *   headers, antivirus and spam tags, the spam subject prefix) are new bytes, so kept parts are byte-identical and boundaries stay
 *   valid. A message nothing applies to comes back as the same Buffer: status clean.
 */

import { MAX_NOTICE_FIELD_BYTES } from '../../limits.js';
import { decodedFieldValue } from '../../mime/headers.js';
import type { MimeNode } from '../../mime/parse.js';
import type { HeaderField } from '../../mime/partmap.js';
import { encodeDenyBody, renderTemplate, strippedPart, type TemplateVars } from '../deny.js';
import type { CompiledPolicy } from '../load.js';
import type { Finding, Findings } from './findings.js';
import { applyHeaderRules, applyParsedHeaderRules, filterHeader, partHeaderRules } from './header-rules.js';
import { type ParsedMessage, topHeader } from './parse.js';
import type { Recovery } from './quarantine.js';
import { tagSubject } from './spam-subject.js';

export interface Rewritten {
  status: 'clean' | 'changed' | 'blocked';
  /** CRLF form; the message's own Buffer (`ParsedMessage.msg`) when clean. */
  output: Buffer;
}

/** Header fields a block notice keeps so threads and the message list stay intact. */
const KEPT_ON_BLOCK = new Set(['date', 'from', 'to', 'cc', 'subject', 'message-id', 'in-reply-to', 'references']);

/**
 * The served form for a decision. `recovery` is the id the texts show when the original is kept
 * (shown even when storing fails: the text must not depend on disk state); `tags` are header lines
 * to add (antivirus, message passed unscanned; spam status); `subjectPrefix` goes in front of the
 * subject of a message tagged as spam (spam-subject.ts).
 */
export function rewriteMessage(
  p: ParsedMessage,
  decision: 'block' | 'rewrite',
  findings: Findings,
  tags: readonly string[],
  recovery: Recovery,
  policy: CompiledPolicy,
  subjectPrefix: string | null = null,
): Rewritten {
  if (decision === 'block') return { status: 'blocked', output: blockNotice(p, findings, recovery, policy, false) };
  const output = rewrite(p, findings, tags, recovery, policy, subjectPrefix);
  return { status: output === p.msg ? 'clean' : 'changed', output };
}

/**
 * The notice that replaces a blocked message. `sterile` leaves out everything taken from the message
 * (names, types, subject, sender, reasons that quote them): used when the notice itself would carry a virus.
 */
export function blockNotice(p: ParsedMessage, findings: Findings, recovery: Recovery, policy: CompiledPolicy, sterile: boolean): Buffer {
  const { msg } = p;
  const root = topHeader(p, policy.limits);
  const acting = findings.acting();
  const eol = '\r\n';
  const out: Buffer[] = [];
  // only well-formed thread fields are repeated: a notice never carries other original bytes
  for (const f of sterile ? [] : root.fields) {
    if (!KEPT_ON_BLOCK.has(f.name.trim().toLowerCase()) || !keepableField(msg, f)) continue;
    const slice = msg.subarray(f.start, f.end);
    out.push(slice);
    if (slice[slice.length - 1] !== 0x0a) out.push(Buffer.from(eol));
  }
  if (sterile) out.push(Buffer.from(`Subject: [postern] message blocked${eol}`, 'latin1'));
  const blocking = acting.filter((f) => f.spec.action === 'block').concat(acting.filter((f) => f.spec.action !== 'block'));
  const text = renderTemplate(policy.deny.block, templateVars(p, root, blocking, findings, recovery, policy, sterile));
  const { body, cte } = encodeDenyBody(text, eol);
  out.push(
    Buffer.from(
      `MIME-Version: 1.0${eol}Content-Type: text/plain; charset=utf-8${eol}Content-Transfer-Encoding: ${cte}${eol}` +
        `X-Postern-Verdict: blocked; policy=${policy.name}${eol}${eol}`,
      'latin1',
    ),
  );
  const headerBuf = Buffer.concat(out);
  const finalHeader = applyHeaderRules(headerBuf, policy);
  return Buffer.concat([finalHeader, body]);
}

/** Strips, part header rules, top-level header rules, tags and the subject prefix, as non-overlapping replacements. */
function rewrite(
  p: ParsedMessage,
  findings: Findings,
  tags: readonly string[],
  recovery: Recovery,
  policy: CompiledPolicy,
  subjectPrefix: string | null,
): Buffer {
  const { msg, tree } = p;
  const root = topHeader(p, policy.limits);
  const replacements: { start: number; end: number; bytes: Buffer[] }[] = [];
  const replaced = new Set<MimeNode>();
  const byTarget = new Map<MimeNode, Finding[]>();
  for (const f of findings.acting()) {
    if (f.spec.action !== 'strip' || !f.target) continue;
    const list = byTarget.get(f.target) ?? [];
    list.push(f);
    byTarget.set(f.target, list);
  }
  for (const [target, list] of byTarget) {
    let covered = false;
    for (let a = target.parent; a && !covered; a = a.parent) covered = byTarget.has(a);
    if (covered) continue; // a stripped ancestor already removes it
    replaced.add(target);
    const text = renderTemplate(policy.deny.strip, templateVars(p, root, list, findings, recovery, policy, false));
    replacements.push({ start: target.headerStart, end: entityEnd(msg, target), bytes: [defuse(strippedPart(text, '\r\n'), target)] });
  }
  const allRules = partHeaderRules(policy);
  if (tree && allRules.length) {
    // part headers (scope: all); a leaf's encapsulated message is not a part header of this message
    const walk = (n: MimeNode) => {
      if (replaced.has(n)) return;
      if (n !== tree.root) {
        const kept = filterHeader(msg, n, allRules);
        if (kept) replacements.push({ start: n.headerStart, end: n.headerEnd, bytes: kept });
      }
      if (n.message && !p.leaves.some((l) => l.node === n)) walk(n.message);
      for (const c of n.children) walk(c);
    };
    walk(tree.root);
  }
  let top = applyParsedHeaderRules(msg, root, policy, true, tags);
  if (subjectPrefix !== null) top = tagSubject(top, subjectPrefix);
  if (top.length !== root.bodyStart || !top.equals(msg.subarray(0, root.bodyStart))) {
    replacements.push({ start: 0, end: root.bodyStart, bytes: [top] });
  }
  if (replacements.length === 0) return msg;
  replacements.sort((x, y) => x.start - y.start);
  const pieces: Buffer[] = [];
  let pos = 0;
  for (const r of replacements) {
    if (r.start < pos) continue; // nested in an earlier replacement
    pieces.push(msg.subarray(pos, r.start), ...r.bytes);
    pos = r.end;
  }
  pieces.push(msg.subarray(pos));
  return Buffer.concat(pieces);
}

/** Template variables for the findings a text is about. */
function templateVars(
  p: ParsedMessage,
  root: MimeNode,
  about: Finding[],
  findings: Findings,
  recovery: Recovery,
  policy: CompiledPolicy,
  sterile: boolean,
): TemplateVars {
  return {
    reason: sterile ? 'a virus was found in the message' : uniq(about.map((x) => x.reason)).join('; '),
    filename: sterile ? undefined : uniq(about.map((x) => x.filename ?? '').filter(Boolean)).join(', ') || undefined,
    type: sterile
      ? undefined
      : uniq(
          about
            .map((x) =>
              x.detectedType && x.detectedType !== x.declaredType ? `${x.declaredType ?? '?'} (detected ${x.detectedType})` : (x.declaredType ?? ''),
            )
            .filter(Boolean),
        ).join(', ') || undefined,
    virus: uniq(about.map((x) => x.virus ?? '').filter(Boolean)).join(', ') || undefined,
    action: about.some((x) => x.spec.action === 'block') ? 'block' : 'strip',
    policy: policy.name,
    rule: uniq(about.map((x) => x.rule)).join(', '),
    message_id: sterile ? undefined : headerValue(p.msg, root, 'message-id'),
    subject: sterile ? undefined : headerValue(p.msg, root, 'subject'),
    sender: sterile ? undefined : headerValue(p.msg, root, 'from'),
    recovery: findings.wantsQuarantine() ? recovery.id : 'none (original not kept)',
    part: uniq(about.map((x) => x.part)).join(', '),
  };
}

/**
 * A field a block notice may repeat: a well-formed single field of bounded size whose bytes no
 * reader can split into more lines (no CR without LF, no NUL), so no original content rides along.
 */
function keepableField(buf: Buffer, f: HeaderField): boolean {
  if (!f.colon || f.end - f.start > MAX_NOTICE_FIELD_BYTES) return false;
  const b = buf.subarray(f.start, f.end);
  if (b.indexOf(0) >= 0) return false;
  for (let i = b.indexOf(0x0d); i >= 0; i = b.indexOf(0x0d, i + 1)) if (b[i + 1] !== 0x0a) return false;
  return /^[\x21-\x39\x3b-\x7e]+:/.test(b.toString('latin1', 0, Math.min(b.length, 80)));
}

function headerValue(buf: Buffer, root: MimeNode, name: string): string | undefined {
  const f = root.fields.find((x) => x.colon && x.name.trim().toLowerCase() === name && keepableField(buf, x));
  return f ? decodedFieldValue(f.value) : undefined;
}

/**
 * End of an entity without the line ending in front of the next delimiter. Dovecot counts that line
 * ending into a message/rfc822 part whose encapsulated header was cut by the delimiter; a
 * replacement must leave it to the delimiter line.
 */
function entityEnd(msg: Buffer, n: MimeNode): number {
  const e = n.bodyEnd;
  if (e >= n.headerStart + 2 && msg[e - 2] === 0x0d && msg[e - 1] === 0x0a && msg[e] === 0x2d && msg[e + 1] === 0x2d) return e - 2;
  return e;
}

/** Deny text is generated, but defuse any line that would equal an enclosing delimiter anyway. */
function defuse(part: Buffer, target: MimeNode): Buffer {
  let s = part.toString('latin1');
  for (let a = target.parent; a; a = a.parent) {
    if (!a.boundary) continue;
    const b = `--${a.boundary}`;
    if (s.startsWith(b) || s.includes(`\n${b}`)) s = s.split(`\n${b}`).join(`\n ${b}`);
  }
  return Buffer.from(s, 'latin1');
}

function uniq<T>(a: T[]): T[] {
  return [...new Set(a)];
}
