/**
 * Decide stage: what happens to the message, from the findings. Pure (it completes the findings
 * list it is given). Tempfail when the message could not be vetted (antivirus or spam on_error); else a block when any finding
 * blocks, after two rules that can turn a strip into a block: a strip inside a multipart/signed part
 * under `signed.on_change: block`, and a strip with nothing to replace (the top-level body).
 * Otherwise the message is rewritten (it is clean when the rewrite changes nothing).
 */
import type { MimeNode } from '../../mime/parse.js';
import type { CompiledPolicy } from '../load.js';
import type { ScanFindings } from './classify-scan.js';
import type { SpamFindings } from './classify-spam.js';
import type { Findings } from './findings.js';

export type Decision = 'tempfail' | 'block' | 'rewrite';

/** `spam`: the spam classification (its on_error tempfail withholds the message like the antivirus'). */
export function decide(findings: Findings, scan: ScanFindings, policy: CompiledPolicy, spam?: SpamFindings): Decision {
  if (scan.tempfail || spam?.tempfail) {
    // the verdict still lists what was found, behind the reason nothing is served
    if (spam?.tempfail)
      findings.prepend({
        part: '',
        rule: 'spam.on_error',
        action: 'tempfail',
        reason: 'spam scanner unavailable: message not vetted',
        spec: { action: 'allow', quarantine: false, log: true },
      });
    if (scan.tempfail)
      findings.prepend({
        part: '',
        rule: 'antivirus.on_error',
        action: 'tempfail',
        reason: 'scanner unavailable: message not vetted',
        spec: { action: 'allow', quarantine: false, log: true },
      });
    return 'tempfail';
  }
  // strips inside a signed part invalidate the signature: the policy decides whether that is acceptable
  if (policy.signed.onChange === 'block') {
    const signed = findings.list.find((f) => f.spec.action === 'strip' && f.target && isInsideSigned(f.target));
    if (signed) {
      findings.add({
        part: signed.part,
        rule: 'signed.on_change',
        action: 'block',
        reason: 'a change inside a signed part would break its signature',
        spec: { action: 'block', quarantine: signed.spec.quarantine, log: true },
      });
    }
  }
  // a strip with no replaceable entity (the top-level body) becomes a block
  for (const f of findings.list) {
    if (f.spec.action === 'strip' && !f.target) {
      f.spec = { ...f.spec, action: 'block' };
      f.action = 'block';
    }
  }
  return findings.blocks() ? 'block' : 'rewrite';
}

function isInsideSigned(node: MimeNode): boolean {
  for (let a = node.parent; a; a = a.parent) if (a.contentType === 'multipart/signed') return true;
  return false;
}
