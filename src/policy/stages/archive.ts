/**
 * The one archive judgement. Every ZIP the rules stage meets is opened and judged here, whatever
 * carries it: a MIME part (attachment, a part of a forwarded message), or a file embedded in text
 * (uuencode, begin-base64, yEnc, BinHex: src/mime/embedded.ts). So every archive rule applies
 * identically to each carrier (issue 8: an attacker picks the carrier the rules forgot; issue 9: one
 * copy of each rule):
 *
 * - when a file is a ZIP: its magic number, a declared ZIP type without one, or (whatever its first
 *   bytes) a ZIP end record at its end, which extractors find (data prepended to a ZIP, a PDF or
 *   image with a ZIP appended);
 * - `archives.on_limit` (depth, entries, inflate budget, ratio: src/mime/zip.ts stops there; the
 *   inflate budget, `archives.max_total_size`, is the message's: one InflateBudget shared by every
 *   archive judged for it, so many small bombs in one message cost what one does) and
 *   `archives.on_ambiguous` (anything two extractors could read differently), each reported;
 * - for every member, nested ones included: `archives.on_encrypted`, every reading of its name
 *   (header, Unicode Path field, charsets, NFKC: the strictest file-name rule wins; readings that
 *   cannot all be checked are `on_ambiguous`), its detected type under the content-type rules;
 * - the largest uncompressed member (the antivirus counts one over max_size as not scanned:
 *   classify-scan.ts).
 *
 * Pure: the findings are returned (the caller reports them after the file's own type and name
 * findings, and decides which entity a strip replaces through `base.target`).
 */
import { isExecutableOrArchiveType, ZIP_TYPE } from '../../mime/detect.js';
import { type HiddenArchiveHit, hiddenArchiveReason } from '../../mime/hidden-archive.js';
import { nameForms } from '../../mime/names.js';
import { CMS_READABLE_TYPE, openCms } from '../../mime/sealed.js';
import { GZIP_TYPE, TAR_TYPE } from '../../mime/tar.js';
import { type UnopenedArchive, unopenedArchive } from '../../mime/unopened.js';
import { type ArchiveContent, archiveOutsideCms, containsZip, type InflateBudget, inspectTarOrGzip, inspectZip, type ZipReport } from '../../mime/zip.js';
import type { CompiledPolicy } from '../load.js';
import { filenameDecision, type RuleDecision, typeDecision } from './decisions.js';
import { type Finding, SEVERITY } from './findings.js';

/** What a finding about the archive repeats of the file that carries it. */
export type ArchiveFindingBase = Pick<Finding, 'part' | 'declaredType' | 'filename' | 'target'>;

/** A file that may be a ZIP. */
export interface ArchiveCandidate {
  /** Type from the content's magic number (undefined: none found, or detect_types off). */
  detected: string | undefined;
  /** Declared type ('' for a file embedded in text: it has none). */
  declared: string;
  /** The decoded content (called at most once). */
  data: () => Buffer;
  /** Cheap pre-check: may the decoded content end in a ZIP end record? (a part checks its tail streaming) */
  mayEndInZip: () => boolean;
  /** Every name the file has (raw; read here as nameForms reads them): an archive's extension makes it one. */
  names: readonly string[];
  /** An archive that starts after other bytes (src/mime/hidden-archive.ts; called at most once, only for a file not opened here). */
  hiddenArchive: () => HiddenArchiveHit | undefined;
}

export interface ArchiveJudgement {
  /** The file was opened as a ZIP. */
  opened: boolean;
  /** The detected type, refined (docx, odt, jar...) when the magic number said ZIP. */
  detected: string | undefined;
  findings: Finding[];
  /** Largest uncompressed member (0: none). */
  largestMember: number;
  /** Members the rules read further: messages, and CMS content opened inside the archive (src/mime/zip.ts ArchiveContent). */
  inside?: ArchiveContent[];
  /**
   * CMS signed data (or data) opened (src/mime/sealed.ts openCms): its content, which the caller
   * judges as the file (and, where a reader takes it so, the message) it is. No on_unsupported then.
   */
  sealed?: Buffer;
}

const ZIP_DECLARED = /^application\/(x-)?zip(-compressed)?$/;

/**
 * Opens the file when it is a ZIP (see the header) and judges it; `prefix` starts every reason,
 * `inflate` is the message's inflate budget (shared by all its archives).
 */
export function judgeArchive(c: ArchiveCandidate, policy: CompiledPolicy, base: ArchiveFindingBase, prefix: string, inflate: InflateBudget): ArchiveJudgement {
  const closed: ArchiveJudgement = { opened: false, detected: c.detected, findings: [], largestMember: 0 };
  if (!policy.archives.inspect) return closed;
  let data: Buffer | undefined;
  const a = policy.archives;
  const limits = { maxDepth: a.maxDepth, maxEntries: a.maxEntries, maxTotalSize: a.maxTotalSize, maxRatio: a.maxRatio };
  // a gzip or a tar by its bytes: opened (src/mime/tar.ts), whatever its name
  const tarOrGzip = c.detected === GZIP_TYPE ? 'gzip' : c.detected === TAR_TYPE ? 'tar' : undefined;
  if (tarOrGzip) {
    const rep = inspectTarOrGzip(tarOrGzip, c.data(), limits, inflate, c.names);
    return { opened: true, detected: c.detected, ...judgeMembers(rep, policy, { ...base, detectedType: c.detected }, prefix), inside: rep.contents };
  }
  // CMS signed data with its content inside (a signed invoice.xml.p7m, an opaque-signed message): opened
  // when it reads one way only (the caller judges the content; sealedFileFindings the rest of its bytes)
  let cmsFault: string | undefined;
  if (c.detected === CMS_READABLE_TYPE) {
    data = c.data();
    const cms = openCms(data);
    if ('fault' in cms) cmsFault = cms.fault;
    else
      return {
        opened: true,
        detected: c.detected,
        findings: sealedFileFindings(cms.outside, policy, base, prefix),
        largestMember: 0,
        sealed: cms.content,
      };
  }
  let isZip = c.detected === ZIP_TYPE || (!c.detected && ZIP_DECLARED.test(c.declared));
  if (!isZip && c.mayEndInZip()) isZip = containsZip((data ??= c.data()));
  // a ZIP by its magic number opens as a ZIP in every reader that looks at the bytes, whatever its name
  let unopened = unopenedArchive(c.detected, c.declared, c.detected === ZIP_TYPE ? [] : c.names);
  if (unopened && cmsFault) unopened = { ...unopened, by: `${unopened.by}; ${cmsFault}` };
  const unsupported = unopened ? unsupportedFinding(policy, { ...base, detectedType: c.detected }, prefix, unopened, base.filename) : [];
  if (!isZip) return { ...closed, findings: [...unsupported, ...hiddenArchiveFinding(c, policy, base, prefix)] };
  const rep = inspectZip(data ?? c.data(), limits, inflate);
  const detected = c.detected === ZIP_TYPE ? rep.type : c.detected;
  const members = judgeMembers(rep, policy, { ...base, detectedType: detected }, prefix);
  return { opened: true, detected, findings: [...unsupported, ...members.findings], largestMember: members.largestMember, inside: rep.contents };
}

/**
 * What the bytes of opened CMS show besides its content: an archive in the structure outside the
 * content (a ZIP in an unsigned attribute ends the file, and unzip, bsdtar and Python open it there;
 * 7-Zip finds others behind other bytes: attacker's review) is `archives.on_ambiguous`. The content
 * is blanked for this search (`outside`: one OCTET STRING or each chunk of it), so a signed ZIP is
 * not taken twice; the caller judges the content, its names (`backup.tar.gz` of
 * `backup.tar.gz.p7m`) included. Bare base64 CMS has no such bytes.
 */
function sealedFileFindings(outsideOf: (() => Buffer) | undefined, policy: CompiledPolicy, base: ArchiveFindingBase, prefix: string): Finding[] {
  const spec = policy.archives.onAmbiguous;
  if (spec.action === 'allow' || !outsideOf) return [];
  const what = archiveOutsideCms(outsideOf());
  if (!what) return [];
  return [
    {
      ...base,
      detectedType: CMS_READABLE_TYPE,
      rule: 'archives.on_ambiguous',
      action: spec.action,
      reason: `${prefix}${what}`,
      spec,
    },
  ];
}

/**
 * `archives.on_ambiguous` for a file that is not an archive from its first byte but holds one further
 * in: 7-Zip finds one in the first 8 MiB, GNU tar a tar at any 512-byte boundary (src/mime/hidden-archive.ts).
 */
function hiddenArchiveFinding(c: ArchiveCandidate, policy: CompiledPolicy, base: ArchiveFindingBase, prefix: string): Finding[] {
  const spec = policy.archives.onAmbiguous;
  if (spec.action === 'allow' || (c.detected && isExecutableOrArchiveType(c.detected))) return [];
  const hidden = c.hiddenArchive();
  if (!hidden) return [];
  return [
    {
      ...base,
      detectedType: c.detected,
      rule: 'archives.on_ambiguous',
      action: spec.action,
      reason: `${prefix}${hiddenArchiveReason(hidden, 'file')}`,
      spec,
    },
  ];
}

/** `archives.on_unsupported` for a file (or member) postern does not open; none when the policy allows it. */
function unsupportedFinding(
  policy: CompiledPolicy,
  where: ArchiveFindingBase & Pick<Finding, 'detectedType' | 'archivePath'>,
  prefix: string,
  u: UnopenedArchive,
  label: string | undefined,
): Finding[] {
  const spec = policy.archives.onUnsupported;
  if (spec.action === 'allow') return [];
  const what = label ? `${label.slice(0, 200)} is` : 'the file is';
  return [
    {
      ...where,
      rule: 'archives.on_unsupported',
      action: spec.action,
      reason: `${prefix}${what} ${/^[AEIOU]/.test(u.format) ? 'an' : 'a'} ${u.format} archive (by ${u.by}), which postern cannot open to inspect`,
      spec,
    },
  ];
}

/** The archive rules on an inspected ZIP: limits, ambiguity, then every member in order. */
export function judgeMembers(
  rep: ZipReport,
  policy: CompiledPolicy,
  base: ArchiveFindingBase & Pick<Finding, 'detectedType'>,
  prefix = '',
): { findings: Finding[]; largestMember: number } {
  const findings: Finding[] = [];
  let largestMember = 0;
  const { onLimit, onAmbiguous, onEncrypted } = policy.archives;
  if (rep.limit && onLimit.action !== 'allow') {
    findings.push({ ...base, rule: 'archives.on_limit', action: onLimit.action, reason: `${prefix}archive not fully inspected: ${rep.limit}`, spec: onLimit });
  }
  if (rep.malformed && onAmbiguous.action !== 'allow') {
    findings.push({
      ...base,
      rule: 'archives.on_ambiguous',
      action: onAmbiguous.action,
      reason: `${prefix}archive is damaged or ambiguous (extractors may read it differently): ${rep.malformed}`,
      spec: onAmbiguous,
    });
  }
  for (const m of rep.members) {
    if (m.size > largestMember) largestMember = m.size;
    const member = { ...base, archivePath: m.path };
    if (m.encrypted && onEncrypted.action !== 'allow') {
      findings.push({
        ...member,
        rule: 'archives.on_encrypted',
        action: onEncrypted.action,
        reason: `${prefix}encrypted archive member ${m.path} cannot be inspected`,
        spec: onEncrypted,
      });
    }
    // every name a reader could show for the member (header, Unicode Path field, charsets): strictest wins
    const mforms = nameForms(m.names.length ? m.names : [m.name]);
    if (mforms.problems.length > 0 && onAmbiguous.action !== 'allow') {
      findings.push({
        ...member,
        rule: 'archives.on_ambiguous',
        action: onAmbiguous.action,
        reason: `${prefix}archive member ${m.path.slice(0, 200)}: ${mforms.problems.join('; ')}`,
        spec: onAmbiguous,
      });
    }
    // a member opened (ZIP, tar, gzip by its bytes) had its own members judged; its name does not make it another archive
    let unopened = m.opened ? undefined : unopenedArchive(m.detectedType, '', m.detectedType === ZIP_TYPE ? [] : mforms.forms);
    if (unopened && m.unopenedWhy) unopened = { ...unopened, by: `${unopened.by}; ${m.unopenedWhy}` };
    if (unopened) findings.push(...unsupportedFinding(policy, { ...member, detectedType: m.detectedType }, prefix, unopened, `archive member ${m.path}`));
    let fr: RuleDecision | undefined;
    for (const mname of mforms.forms) {
      const d = filenameDecision(policy, mname);
      if (d && (!fr || SEVERITY[d.spec.action] > SEVERITY[fr.spec.action])) fr = d;
    }
    if (fr && fr.spec.action !== 'allow') {
      findings.push({
        ...member,
        rule: fr.rule,
        action: fr.spec.action,
        reason: `${prefix}${fr.reason ?? `archive member ${m.path} matches a forbidden file name`}`,
        spec: fr.spec,
      });
    }
    if (m.detectedType) {
      const td = typeDecision(policy, m.detectedType);
      if (td.spec.action !== 'allow')
        findings.push({
          ...member,
          rule: td.rule,
          action: td.spec.action,
          reason: `${prefix}${td.reason ?? `archive member ${m.path} is ${m.detectedType}`}`,
          spec: td.spec,
        });
    }
    // an executable behind other bytes (src/mime/zip.ts hiddenExecutable): judged as that executable's type
    if (m.hiddenExecutable) {
      const h = m.hiddenExecutable;
      const td = typeDecision(policy, h.type);
      if (td.spec.action !== 'allow')
        findings.push({
          ...member,
          rule: td.rule,
          action: td.spec.action,
          reason: `${prefix}${td.reason ?? `detected type ${h.type} not allowed`}: archive member ${m.path.slice(0, 200)} has a ${h.format} header at offset ${h.offset} of its content`,
          spec: td.spec,
        });
    }
  }
  return { findings, largestMember };
}
