/**
 * Loads a policy YAML file, validates it (located errors via parseYamlWithSchema) and compiles it
 * into the immutable form the engine uses for every message.
 */
import { readFileSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import { ConfigError, parseYamlWithSchema } from '../config/validate.js';
import { DEFAULT_ANTIVIRUS_LIMITS, DEFAULT_ARCHIVE_LIMITS, DEFAULT_MIME_LIMITS } from '../limits.js';
import { compileGlob, compileTypePattern, type GlobMatcher } from './glob.js';
import { type PolicyYaml, policySchema } from './schema.js';
import type { ActionName } from './types.js';

export interface ActionSpec {
  action: ActionName;
  quarantine: boolean;
  log: boolean;
}

export interface CompiledTypeRule {
  index: number;
  patterns: string[];
  /** One matcher per pattern (src/policy/glob.ts: linear-time, no RegExp). */
  re: GlobMatcher[];
  spec: ActionSpec;
  reason?: string;
}

export interface CompiledPolicy {
  name: string;
  /** Absolute path of the file it was loaded from ('' when compiled from an object). */
  file: string;
  description: string;
  detectTypes: boolean;
  contentRules: CompiledTypeRule[];
  contentDefault: ActionSpec;
  filenameRules: CompiledTypeRule[];
  doubleExtension: ActionSpec | null;
  dangerousExtensions: Set<string>;
  archives: {
    inspect: boolean;
    maxDepth: number;
    maxEntries: number;
    maxTotalSize: number;
    maxRatio: number;
    onEncrypted: ActionSpec;
    onLimit: ActionSpec;
    /** Damaged, ambiguous (extractors could read it differently) or not inspectable (zip64, methods). */
    onAmbiguous: ActionSpec;
    /** An archive or container postern does not open (7z, RAR, tar, gzip, TNEF...: src/mime/unopened.ts). */
    onUnsupported: ActionSpec;
  };
  headers: {
    strip: { name: GlobMatcher; value: RegExp | null; scope: 'top' | 'all' }[];
    add: { name: string; value: string }[];
  };
  limits: {
    maxMessageSize: number;
    maxDepth: number;
    maxParts: number;
    maxHeaderSize: number;
    onLimit: ActionSpec;
    onMalformed: ActionSpec;
    onBadEncoding: ActionSpec;
  };
  signed: { onChange: 'strip' | 'block' };
  antivirus: {
    enabled: boolean;
    /** Objects larger than this are not sent to the scanner (on_oversize applies). */
    maxSize: number;
    onVirus: ActionSpec;
    onError: 'tempfail' | 'block' | 'allow';
    /** Something too large to scan (max_size, or the scanner's own limit): `allow` passes it unscanned with tagHeader. */
    onOversize: ActionSpec;
    /** Header added to the top level when a message passes unscanned (on_error/on_oversize allow). */
    tagHeader: string;
    /**
     * What is scanned besides the raw message (which clamd reads with its own MIME parser):
     * `auto` the decoded parts only where the raw scan cannot be trusted with them (stages/scan.ts
     * partsNeedingScan), `all` every decoded part, `none` none (the YAML's true/false are all/none).
     */
    scanParts: 'auto' | 'all' | 'none';
  };
  spam: {
    /** Score messages with the spam scanner (when the config has one). */
    enabled: boolean;
    /** `score`: tagScore/blockScore decide; `rspamd`: rspamd's own action does. */
    mode: 'score' | 'rspamd';
    /** Score from which a message is spam (onSpam); null: never by score. */
    tagScore: number | null;
    /** Score from which a message is rejected (onReject); null: never by score. */
    blockScore: number | null;
    onSpam: SpamActionSpec;
    onReject: SpamActionSpec;
    /** Put in front of the subject of a tagged message ('' = subject unchanged). */
    subjectPrefix: string;
    /** Add X-Spam-Status / X-Spam-Score / X-Spam-Symbols to a tagged message. */
    addHeaders: boolean;
    /** No score (rspamd down, deadline, an answer postern does not understand). */
    onError: 'tempfail' | 'block' | 'allow';
    /** Larger than the spam scanner's max_message_bytes: `allow` delivers it with `X-Spam-Status: Unknown`. */
    onOversize: ActionSpec;
    /** Header-name globs removed from the top-level header of every message (also in `headers.strip`). */
    stripHeaders: string[];
  };
  deny: { strip: string; block: string };
}

/** What the spam section does at a level: tag (subject prefix, headers), block (deny notice), allow (as it is). */
export interface SpamActionSpec {
  action: 'tag' | 'block' | 'allow';
  quarantine: boolean;
  log: boolean;
}

/** Header fields of upstream spam filters: a client or filter could trust them, and anyone can write them. */
export const DEFAULT_SPAM_STRIP_HEADERS = ['X-Spam*', 'X-Rspamd-*'];

/** rspamd's default thresholds: `add header` at 6, `reject` at 15. */
export const DEFAULT_SPAM_TAG_SCORE = 6;
export const DEFAULT_SPAM_BLOCK_SCORE = 15;
export const DEFAULT_SUBJECT_PREFIX = '[SPAM] ';

export const DEFAULT_STRIP_TEMPLATE = `An attachment was removed from this message by the mail gateway (policy "{policy}").

  File:    {filename}
  Type:    {type}
  Reason:  {reason}
  Virus:   {virus}
  Rule:    {rule}

Recovery id: {recovery}
If you need the original, ask your mail administrator and quote the recovery id.
`;

export const DEFAULT_BLOCK_TEMPLATE = `This message was blocked by the mail gateway (policy "{policy}").

  From:     {sender}
  Subject:  {subject}
  Message:  {message_id}
  Reason:   {reason}
  File:     {filename}
  Virus:    {virus}
  Rule:     {rule}

Recovery id: {recovery}
If you need the original, ask your mail administrator and quote the recovery id.
`;

const DEFAULT_DANGEROUS = [
  'exe',
  'com',
  'scr',
  'pif',
  'bat',
  'cmd',
  'vbs',
  'vbe',
  'js',
  'jse',
  'wsf',
  'wsh',
  'hta',
  'msi',
  'msp',
  'cpl',
  'jar',
  'ps1',
  'lnk',
  'reg',
  'dll',
  'sh',
  'app',
  'iso',
  'img',
  'vhd',
  'scf',
  'url',
  'website',
  'chm',
  'hlp',
  'xll',
  'msc',
  'sct',
  'wsc',
  'ws',
  'inf',
  'one',
  'onepkg',
  'iqy',
  'slk',
  'gadget',
  'application',
  'appref-ms',
  'diagcab',
  'library-ms',
  'search-ms',
  'settingcontent-ms',
  'msu',
  'mst',
  'psm1',
  'psd1',
  'jnlp',
  'vhdx',
  'appx',
  'msix',
];

function spec(v: unknown, dflt: ActionSpec): ActionSpec {
  if (v === undefined || v === null) return dflt;
  if (typeof v === 'string') return { action: v as ActionName, quarantine: false, log: true };
  const o = v as { action: ActionName; quarantine?: boolean; log?: boolean };
  return { action: o.action, quarantine: o.quarantine ?? false, log: o.log ?? true };
}

const A = (action: ActionName, quarantine = false): ActionSpec => ({ action, quarantine, log: true });

/** A spam action: `tag` and `block` keep the original in quarantine unless told otherwise. */
function spamSpec(
  v: SpamActionSpec['action'] | { action: SpamActionSpec['action']; quarantine?: boolean; log?: boolean } | undefined,
  dflt: SpamActionSpec['action'],
): SpamActionSpec {
  const o = v === undefined ? { action: dflt } : typeof v === 'string' ? { action: v } : v;
  return {
    action: o.action,
    quarantine: ('quarantine' in o ? o.quarantine : undefined) ?? o.action !== 'allow',
    log: ('log' in o ? o.log : undefined) ?? true,
  };
}

type RuleYaml = { match: string | string[]; action: ActionName; quarantine?: boolean; log?: boolean; reason?: string };

function compileRules(rules: RuleYaml[], norm: (p: string) => string, compile: (p: string) => GlobMatcher): CompiledTypeRule[] {
  return rules.map((r, index) => {
    const patterns = (Array.isArray(r.match) ? r.match : [r.match]).map(norm);
    return {
      index,
      patterns,
      re: patterns.map(compile),
      spec: { action: r.action, quarantine: r.quarantine ?? false, log: r.log ?? true },
      reason: r.reason,
    };
  });
}

/** Compiles a validated policy object. `name` is used when the YAML has no `name:`. */
export function compilePolicy(y: PolicyYaml, name: string, file = ''): CompiledPolicy {
  // both matchers are case-insensitive; content types are kept lower-cased for display
  const contentRules = compileRules(y.content_types?.rules ?? [], (p) => p.toLowerCase(), compileTypePattern);
  const filenameRules = compileRules(
    y.filenames?.rules ?? [],
    (p) => p,
    (p) => compileGlob(p, 'file name'),
  );
  const av = y.antivirus ?? {};
  const onVirus =
    av.on_virus === undefined
      ? A('strip', true)
      : typeof av.on_virus === 'string'
        ? A(av.on_virus, true)
        : { action: av.on_virus.action, quarantine: av.on_virus.quarantine ?? true, log: av.on_virus.log ?? true };
  // fail closed: what cannot be scanned is not delivered unscanned, and its original is kept for release
  const sp = y.spam ?? {};
  const spamEnabled = sp.enabled ?? false;
  const spamStrip = sp.strip_headers ?? DEFAULT_SPAM_STRIP_HEADERS;
  const onOversize =
    av.on_oversize === undefined
      ? A('block', true)
      : typeof av.on_oversize === 'string'
        ? A(av.on_oversize, av.on_oversize === 'block')
        : { action: av.on_oversize.action, quarantine: av.on_oversize.quarantine ?? av.on_oversize.action === 'block', log: av.on_oversize.log ?? true };
  return Object.freeze({
    name: y.name ?? name,
    file,
    description: y.description ?? '',
    detectTypes: y.detect_types ?? true,
    contentRules,
    contentDefault: spec(y.content_types?.default, A('allow')),
    filenameRules,
    doubleExtension: y.filenames?.double_extension === undefined ? null : spec(y.filenames.double_extension, A('allow')),
    dangerousExtensions: new Set((y.filenames?.dangerous_extensions ?? DEFAULT_DANGEROUS).map((e) => e.toLowerCase())),
    archives: {
      inspect: y.archives?.inspect ?? true,
      maxDepth: y.archives?.max_depth ?? DEFAULT_ARCHIVE_LIMITS.maxDepth,
      maxEntries: y.archives?.max_entries ?? DEFAULT_ARCHIVE_LIMITS.maxEntries,
      maxTotalSize: y.archives?.max_total_size ?? DEFAULT_ARCHIVE_LIMITS.maxTotalSize,
      maxRatio: y.archives?.max_ratio ?? DEFAULT_ARCHIVE_LIMITS.maxRatio,
      // an encrypted member cannot be inspected: stripped, the original kept for release
      onEncrypted: spec(y.archives?.on_encrypted, A('strip', true)),
      onLimit: spec(y.archives?.on_limit, A('strip')),
      onAmbiguous: spec(y.archives?.on_ambiguous, A('strip', true)),
      // what postern cannot open is not delivered unvetted: stripped, the original kept for release
      onUnsupported: spec(y.archives?.on_unsupported, A('strip', true)),
    },
    headers: {
      strip: [
        ...(y.headers?.strip ?? []).map((h) => ({
          name: compileGlob(h.name, 'header name'),
          value: h.value === undefined ? null : new RegExp(h.value, 'i'),
          scope: h.scope ?? ('top' as const),
        })),
        // an upstream's (or an attacker's) spam verdict never reaches the client beside postern's own
        ...(spamEnabled ? spamStrip.map((n) => ({ name: compileGlob(n, 'header name'), value: null, scope: 'top' as const })) : []),
      ],
      add: (y.headers?.add ?? []).map((h) => ({ name: h.name, value: h.value })),
    },
    limits: {
      maxMessageSize: y.limits?.max_message_size ?? DEFAULT_MIME_LIMITS.maxMessageSize,
      maxDepth: y.limits?.max_depth ?? DEFAULT_MIME_LIMITS.maxDepth,
      maxParts: y.limits?.max_parts ?? DEFAULT_MIME_LIMITS.maxParts,
      maxHeaderSize: y.limits?.max_header_size ?? DEFAULT_MIME_LIMITS.maxHeaderSize,
      onLimit: spec(y.limits?.on_limit, A('block', true)),
      onMalformed: spec(y.limits?.on_malformed, A('block', true)),
      onBadEncoding: spec(y.limits?.on_bad_encoding, A('allow')),
    },
    signed: { onChange: y.signed?.on_change ?? 'strip' },
    antivirus: {
      enabled: av.enabled ?? true,
      maxSize: av.max_size ?? DEFAULT_ANTIVIRUS_LIMITS.maxSize,
      onVirus,
      onError: av.on_error ?? 'tempfail',
      onOversize,
      tagHeader: av.tag_header ?? 'X-Postern-AV',
      scanParts: av.scan_parts === true ? 'all' : av.scan_parts === false ? 'none' : (av.scan_parts ?? 'auto'),
    },
    spam: {
      enabled: spamEnabled,
      mode: sp.use_rspamd_action ? ('rspamd' as const) : ('score' as const),
      tagScore: sp.use_rspamd_action ? null : sp.tag_score === undefined ? DEFAULT_SPAM_TAG_SCORE : sp.tag_score,
      blockScore: sp.use_rspamd_action ? null : sp.block_score === undefined ? DEFAULT_SPAM_BLOCK_SCORE : sp.block_score,
      // an altered or blocked message keeps its original in quarantine (POP3 may then delete it upstream)
      onSpam: spamSpec(sp.on_spam, 'tag'),
      onReject: spamSpec(sp.on_reject, 'block'),
      subjectPrefix: sp.subject_prefix ?? DEFAULT_SUBJECT_PREFIX,
      addHeaders: sp.add_headers ?? true,
      // fail closed: a message whose score is unknown is not delivered (see docs/configuration.md)
      onError: sp.on_error ?? 'tempfail',
      onOversize:
        sp.on_oversize === undefined
          ? A('allow')
          : typeof sp.on_oversize === 'string'
            ? A(sp.on_oversize, sp.on_oversize === 'block')
            : { action: sp.on_oversize.action, quarantine: sp.on_oversize.quarantine ?? sp.on_oversize.action === 'block', log: sp.on_oversize.log ?? true },
      stripHeaders: spamEnabled ? [...spamStrip] : [],
    },
    deny: {
      strip: y.deny_messages?.strip ?? DEFAULT_STRIP_TEMPLATE,
      block: y.deny_messages?.block ?? DEFAULT_BLOCK_TEMPLATE,
    },
  });
}

/** Resolves a policy reference: a bare name is `${policiesDir}/${name}.yaml`; anything with '/' or ending .yaml/.yml is a path. */
export function resolvePolicyPath(nameOrPath: string, policiesDir: string): string {
  if (nameOrPath.includes('/') || /\.ya?ml$/i.test(nameOrPath)) return resolve(nameOrPath);
  if (!/^[A-Za-z0-9._-]+$/.test(nameOrPath) || nameOrPath.startsWith('.')) {
    throw new ConfigError([{ file: policiesDir, line: 0, column: 0, path: 'policy', message: `invalid policy name "${nameOrPath}"` }]);
  }
  return resolve(policiesDir, `${nameOrPath}.yaml`);
}

/** Parses and compiles policy text; `file` is used in error locations and for the default name. */
export function compilePolicyText(text: string, file: string): CompiledPolicy {
  const y = parseYamlWithSchema(text, file, policySchema);
  return compilePolicy(y, basename(file).replace(/\.ya?ml$/i, ''), file);
}

export function loadPolicy(nameOrPath: string, policiesDir: string): CompiledPolicy {
  const file = resolvePolicyPath(nameOrPath, policiesDir);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError([{ file, line: 0, column: 0, path: '', message: `cannot read policy: ${(e as Error).message}` }]);
  }
  return compilePolicyText(text, file);
}
