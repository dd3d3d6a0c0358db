/**
 * Classify-scan stage: what the scanners' answers mean under the policy's `antivirus` section. Pure:
 * records from the scan stage in, findings (to `emit`), virus names, header tags and the tempfail
 * flag out. The scan stage asks `stopsScanning` after each answer, so an answer that makes the
 * message tempfail ends the scanning.
 *
 * - infected: the part is stripped (on_virus strip and the part can be replaced) or the message
 *   blocked; a virus only the whole message shows (no part to strip) blocks;
 * - error: on_error tempfail (the message is not vetted), block, or allow with a tag header;
 * - oversize (over max_size, over the scanner's limit, a ZIP member over max_size, which clamd
 *   would pass after scanning a prefix): on_oversize block, or allow with a tag header.
 */
import type { ScanOutcome } from '../../scanners/types.js';
import type { CompiledPolicy } from '../load.js';
import type { Verdict } from '../types.js';
import type { Emit, Finding } from './findings.js';
import type { LeafContents } from './rules.js';
import type { ScanRecord, ScanResult } from './scan.js';

export interface ScanFindings {
  /** Every virus name, first seen first. */
  viruses: string[];
  /** Header lines to add (`X-Postern-AV: unscanned; ...`), at most one per reason. */
  tags: string[];
  /** The message could not be vetted (on_error tempfail). */
  tempfail: boolean;
  /** A scanner answered with an error (whatever on_error made of it): the verdict is transient. */
  errored: boolean;
}

/** The classification when nothing was scanned. */
export function notScanned(): ScanFindings {
  return { viruses: [], tags: [], tempfail: false, errored: false };
}

/** Nothing more is scanned after this answer: an error under on_error tempfail. */
export function stopsScanning(av: CompiledPolicy['antivirus'], o: ScanOutcome): boolean {
  return o.kind === 'error' && av.onError === 'tempfail';
}

/** Turns the antivirus scan records (in plan order) into findings. */
export function classifyAntivirus(records: readonly ScanRecord[], contents: readonly LeafContents[], policy: CompiledPolicy, emit: Emit): ScanFindings {
  const av = policy.antivirus;
  const out = notScanned();
  const onOversize = (part: string, size: number) => {
    if (av.onOversize.action === 'block') {
      emit({ part, rule: 'antivirus.on_oversize', action: 'block', reason: `too large to scan (${size} bytes)`, spec: av.onOversize });
    } else if (!out.tags.some((t) => t.includes('oversize'))) out.tags.push(`${av.tagHeader}: unscanned; reason=oversize; policy=${policy.name}`);
  };
  const onError = (part: string, o: Extract<ScanOutcome, { kind: 'error' }>) => {
    out.errored = true;
    if (av.onError === 'tempfail') out.tempfail = true;
    else if (av.onError === 'block') {
      emit({
        part,
        rule: 'antivirus.on_error',
        action: 'block',
        reason: `scanner ${o.reason}: ${o.message}`,
        spec: { action: 'block', quarantine: false, log: true },
      });
    } else if (!out.tags.some((t) => t.includes('reason=error'))) out.tags.push(`${av.tagHeader}: unscanned; reason=error; policy=${policy.name}`);
  };
  /** Applies on_oversize / on_error to an answer; returns the virus names when it is infected (added to the verdict's list). */
  const judge = (r: ScanResult, part: string): string[] | undefined => {
    if (r.kind === 'over-max-size' || r.kind === 'over-scanner-limit') onOversize(part, r.size);
    else if (r.kind === 'answered' && r.outcome.kind === 'error') onError(part, r.outcome);
    else if (r.kind === 'answered' && r.outcome.kind === 'infected') {
      for (const v of r.outcome.viruses) if (!out.viruses.includes(v)) out.viruses.push(v);
      return r.outcome.viruses;
    }
    return undefined;
  };
  const infectedPart = (c: LeafContents, part: string, viruses: string[], what?: string) => {
    const names = viruses.join(', ');
    const target = av.onVirus.action === 'strip' ? c.leaf.target : undefined;
    emit({
      part,
      declaredType: c.leaf.type,
      filename: c.leaf.names[0],
      rule: 'antivirus',
      action: target ? 'strip' : 'block',
      reason: `virus found${what ? ` in ${what}` : ''}: ${names}`,
      virus: names,
      spec: target ? av.onVirus : { ...av.onVirus, action: 'block' },
      target,
    });
  };
  let messageInfected = false;
  let partInfected = false;
  // clamd scans an archive member only up to its MaxFileSize and then answers OK: a member bigger
  // than max_size (keep it <= clamd's MaxFileSize) counts as not scanned, whichever object carried
  // the archive to clamd (the part, or the raw message under scan_parts auto/none)
  if (records.length > 0 && !out.tempfail) for (const c of contents) if (c.largestMember > av.maxSize) onOversize(c.leaf.section, c.largestMember);
  for (const { job, result } of records) {
    switch (job.role) {
      case 'message-cr':
        // the CR reading of a message that could be sent is only sent when it is small enough itself
        if (result.kind === 'over-max-size') break;
        if (judge(result, '')) messageInfected = true;
        break;
      case 'message':
        if (judge(result, '')) messageInfected = true;
        break;
      case 'part':
      case 'forwarded-part':
      case 'embedded': {
        if (result.kind === 'empty') break;
        const viruses = judge(result, job.part);
        if (viruses) {
          partInfected = true;
          infectedPart(job.leaf!, job.part, viruses, job.what);
        }
        break;
      }
      case 'output':
        break;
    }
  }
  if (messageInfected && !partInfected && !out.tempfail) {
    emit({
      part: '',
      rule: 'antivirus',
      action: 'block',
      reason: `virus found: ${out.viruses.join(', ')}`,
      virus: out.viruses.join(', '),
      spec: { ...av.onVirus, action: 'block' },
    });
  }
  return out;
}

/**
 * What would be delivered is scanned once more when it is a notice (it quotes the subject, file
 * names and reasons, and the message may have been blocked before the antivirus ran) or when the
 * message carried a virus (it can sit where no part was stripped: a header, a preamble).
 */
export function outputNeedsScan(status: Verdict['status'], viruses: readonly string[]): boolean {
  return status === 'blocked' || (viruses.length > 0 && status !== 'clean');
}

/** Only a clean answer lets the output go out; infected, error, not scannable: a sterile notice instead. */
export function outputIsClean(r: ScanResult): boolean {
  return r.kind === 'answered' && r.outcome.kind === 'clean';
}

/** An output scan that did not answer for the bytes (a scanner error): what it made blocked is transient. */
export function outputScanFailed(r: ScanResult): boolean {
  return r.kind === 'answered' && r.outcome.kind === 'error';
}

/** The finding for a changed message whose output still carries a virus (or could not be scanned): block. */
export function dirtyOutputFinding(viruses: readonly string[], policy: CompiledPolicy): Finding {
  return {
    part: '',
    rule: 'antivirus',
    action: 'block',
    reason: 'virus found in what would be delivered',
    virus: viruses.join(', '),
    spec: { ...policy.antivirus.onVirus, action: 'block' },
  };
}
