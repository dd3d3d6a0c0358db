/**
 * Policy YAML schema (snake_case keys). Strict objects: an unknown key is an error with its location,
 * so a typo never silently disables a rule. Defaults are filled in by load.ts (compilePolicy), not here.
 */
import { z } from 'zod';
import { sizeField } from '../units.js';
import { type GlobKind, globProblem } from './glob.js';

export const TEMPLATE_VARIABLES = [
  'reason',
  'filename',
  'type',
  'virus',
  'action',
  'policy',
  'rule',
  'message_id',
  'subject',
  'sender',
  'recovery',
  'part',
] as const;

/** A size (src/units.ts: the same grammar as postern.yaml; K/M/G and KB/MB/GB are binary). */
const size = sizeField;

const count = z.number().int().nonnegative();

/** An action, or `{ action, quarantine, log }` with one of the same actions. */
function actionSpecOf<const T extends readonly [string, ...string[]]>(actions: T) {
  const action = z.enum(actions);
  return z.union([action, z.strictObject({ action, quarantine: z.boolean().optional(), log: z.boolean().optional() })]);
}

const actionName = z.enum(['allow', 'strip', 'block']);

/** `strip` or `{ action: strip, quarantine: true, log: true }` */
export const actionSpec = actionSpecOf(['allow', 'strip', 'block']);

const template = z.string().superRefine((s, ctx) => {
  for (const m of s.matchAll(/\{([a-z_]+)\}/g)) {
    if (!(TEMPLATE_VARIABLES as readonly string[]).includes(m[1])) {
      ctx.addIssue({ code: 'custom', message: `unknown template variable {${m[1]}} (known: ${TEMPLATE_VARIABLES.join(', ')})` });
    }
  }
});

const typePattern = z.string().regex(/^(\*|[a-z0-9!#$&^_.+*-]+)\/(\*|[a-z0-9!#$&^_.+*-]+)$/i, 'expected type/subtype, wildcards allowed (image/*, */*)');

/** A name glob in the strict grammar of ./glob.ts (braces work; anything read two ways is refused). */
const globPattern = (kind: GlobKind) =>
  z
    .string()
    .min(1)
    .max(500)
    .superRefine((p, ctx) => {
      const problem = globProblem(p, kind);
      if (problem !== null) ctx.addIssue({ code: 'custom', message: `invalid ${kind} pattern "${p}": ${problem}` });
    });
const fileGlob = globPattern('file name');

const regexString = z.string().superRefine((s, ctx) => {
  try {
    new RegExp(s, 'i');
  } catch (e) {
    ctx.addIssue({ code: 'custom', message: `invalid regular expression: ${(e as Error).message}` });
  }
});

/** A content-type or file-name rule: `match` is one pattern or a non-empty list of them. */
const patternRule = (pattern: z.ZodString) =>
  z.strictObject({
    match: z.union([pattern, z.array(pattern).min(1)]),
    action: actionName,
    quarantine: z.boolean().optional(),
    log: z.boolean().optional(),
    reason: z.string().max(500).optional(),
  });

const contentRule = patternRule(typePattern);
const filenameRule = patternRule(fileGlob);

const headerName = z.string().regex(/^[!-9;-~]+$/, 'expected a header field name');

/** A spam score threshold (rspamd scores are decimals and may be negative). */
const spamScore = z.number().finite();

/** `tag`, `block`, `allow` or `{ action, quarantine, log }` (the spam section's actions). */
const spamActionSpec = actionSpecOf(['tag', 'block', 'allow']);

/** The scanners' on_oversize: `block` (default, original quarantined) or `allow` (passes unscanned, with tag_header). */
const onOversize = actionSpecOf(['allow', 'block']);

/**
 * The subject prefix of a tagged message: text, not header bytes (non-ASCII is RFC 2047-encoded
 * when it is written). No control characters, no line breaks; at most 64 characters.
 */
const subjectPrefix = z
  .string()
  .max(64, 'at most 64 characters')
  .refine((s) => !/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/.test(s), 'no control characters or line breaks')
  .refine((s) => Buffer.from(s, 'utf8').toString('utf8') === s, 'not well-formed text (lone surrogate)');

export const policySchema = z.strictObject({
  name: z
    .string()
    .regex(/^[A-Za-z0-9._-]{1,64}$/, 'letters, digits, ".", "_" and "-" only')
    .optional(),
  description: z.string().optional(),
  detect_types: z.boolean().optional(),
  content_types: z
    .strictObject({
      rules: z.array(contentRule).optional(),
      default: actionSpec.optional(),
    })
    .optional(),
  filenames: z
    .strictObject({
      rules: z.array(filenameRule).optional(),
      double_extension: actionSpec.optional(),
      /** Extensions that make "name.<doc>.<this>" a double-extension hit. */
      dangerous_extensions: z.array(z.string().regex(/^[a-z0-9]{1,10}$/i)).optional(),
    })
    .optional(),
  archives: z
    .strictObject({
      inspect: z.boolean().optional(),
      max_depth: count.optional(),
      max_entries: count.optional(),
      max_total_size: size.optional(),
      max_ratio: z.number().positive().optional(),
      on_encrypted: actionSpec.optional(),
      on_limit: actionSpec.optional(),
      on_ambiguous: actionSpec.optional(),
      on_unsupported: actionSpec.optional(),
    })
    .optional(),
  headers: z
    .strictObject({
      strip: z
        .array(
          z.strictObject({
            name: globPattern('header name'),
            value: regexString.optional(),
            scope: z.enum(['top', 'all']).optional(),
          }),
        )
        .optional(),
      add: z
        .array(
          z.strictObject({
            name: headerName,
            value: z
              .string()
              .regex(/^[\x20-\x7e]*$/, 'printable ASCII only')
              .refine((s) => [...s.matchAll(/\{([a-z_]+)\}/g)].every((m) => m[1] === 'policy'), 'only {policy} may be used in added headers'),
          }),
        )
        .optional(),
    })
    .optional(),
  limits: z
    .strictObject({
      max_message_size: size.optional(),
      max_depth: count.optional(),
      max_parts: count.optional(),
      max_header_size: size.optional(),
      on_limit: actionSpec.optional(),
      on_malformed: actionSpec.optional(),
      on_bad_encoding: actionSpec.optional(),
    })
    .optional(),
  signed: z
    .strictObject({
      on_change: z.enum(['strip', 'block']).optional(),
    })
    .optional(),
  antivirus: z
    .strictObject({
      enabled: z.boolean().optional(),
      max_size: size.optional(),
      on_virus: actionSpecOf(['strip', 'block']).optional(),
      on_error: z.enum(['tempfail', 'block', 'allow']).optional(),
      on_oversize: onOversize.optional(),
      tag_header: headerName.optional(),
      scan_parts: z.union([z.boolean(), z.enum(['auto', 'all', 'none'])]).optional(),
    })
    .optional(),
  spam: z
    .strictObject({
      enabled: z.boolean().optional(),
      // rspamd's own action decides (add header / rewrite subject: spam, reject: reject) instead of the thresholds
      use_rspamd_action: z.boolean().optional(),
      tag_score: spamScore.nullable().optional(),
      block_score: spamScore.nullable().optional(),
      on_spam: spamActionSpec.optional(),
      on_reject: spamActionSpec.optional(),
      subject_prefix: subjectPrefix.optional(),
      add_headers: z.boolean().optional(),
      on_error: z.enum(['tempfail', 'block', 'allow']).optional(),
      on_oversize: onOversize.optional(),
      strip_headers: z.array(globPattern('header name')).optional(),
    })
    .superRefine((s, ctx) => {
      if (s.use_rspamd_action) {
        for (const k of ['tag_score', 'block_score'] as const) {
          if (s[k] !== undefined)
            ctx.addIssue({ code: 'custom', path: [k], message: `${k} has no effect with use_rspamd_action: true (rspamd's own thresholds decide)` });
        }
        return;
      }
      if (s.tag_score === null && s.block_score === null)
        ctx.addIssue({ code: 'custom', path: ['block_score'], message: 'tag_score and block_score are both null: no score would ever count as spam' });
      if (typeof s.tag_score === 'number' && typeof s.block_score === 'number' && s.block_score < s.tag_score) {
        ctx.addIssue({ code: 'custom', path: ['block_score'], message: `block_score (${s.block_score}) is below tag_score (${s.tag_score})` });
      }
    })
    .optional(),
  deny_messages: z
    .strictObject({
      strip: template.optional(),
      block: template.optional(),
    })
    .optional(),
});

export type PolicyYaml = z.output<typeof policySchema>;
