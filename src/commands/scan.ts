/**
 * `postern scan FILE.eml [--policy NAME|FILE] [--out FILE] [--json] [--no-av] [--no-spam] [--quarantine]`
 * Runs one message through a policy the way the relay would (the antivirus and, when the policy's
 * spam section is on, the spam scanner of the config), so an operator can try a policy before
 * deploying it. A dry run: nothing is written to the quarantine unless `--quarantine` is given (the
 * output then says under which id the original would be stored). Exit codes: 0 clean, 1 changed or
 * blocked, 2 error (including an AV or spam tempfail).
 * The message has no envelope here: the spam scanner is told no recipient.
 */
import { promises as fs } from 'node:fs';
import { inspectMessage } from '../policy/engine.js';
import { loadPolicy } from '../policy/load.js';
import type { QuarantineStore, Verdict } from '../policy/types.js';
import { FileQuarantineStore } from '../quarantine/store.js';
import type { Scanner, SpamScanner } from '../scanners/types.js';

export interface ScanCommandOptions {
  policiesDir: string;
  scanner?: Scanner | null;
  /** The spam scanner (config `spam`); used when the policy's spam section is on. */
  spamScanner?: SpamScanner | null;
  quarantineDir?: string;
  out?: (s: string) => void;
  err?: (s: string) => void;
}

const USAGE = 'usage: postern scan FILE.eml [--policy NAME|FILE] [--out FILE] [--json] [--no-av] [--no-spam] [--quarantine]';

/** The dry run's store: answers with the id the original would get (the engine's deterministic recovery id), writes nothing. */
const DRY_RUN_STORE: QuarantineStore = { put: async (_raw, meta) => String(meta.id) };

export async function scanCommand(argv: string[], opts: ScanCommandOptions): Promise<number> {
  const out = opts.out ?? ((s: string) => void process.stdout.write(s));
  const err = opts.err ?? ((s: string) => void process.stderr.write(s));
  let file: string | undefined;
  let policyRef = 'default';
  let outFile: string | undefined;
  let json = false;
  let noAv = false;
  let noSpam = false;
  let store = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--policy' || a === '--out') {
      const v = argv[++i];
      if (v === undefined) {
        err(`${a} needs a value\n${USAGE}\n`);
        return 2;
      }
      if (a === '--policy') policyRef = v;
      else outFile = v;
    } else if (a === '--json') json = true;
    else if (a === '--no-av') noAv = true;
    else if (a === '--no-spam') noSpam = true;
    else if (a === '--quarantine') store = true;
    else if (a.startsWith('--') || file !== undefined) {
      err(`unexpected argument ${a}\n${USAGE}\n`);
      return 2;
    } else file = a;
  }
  if (!file) {
    err(USAGE + '\n');
    return 2;
  }
  try {
    const policy = loadPolicy(policyRef, opts.policiesDir);
    const raw = await fs.readFile(file);
    const res = await inspectMessage(
      raw,
      policy,
      {},
      {
        scanner: noAv ? null : (opts.scanner ?? null),
        spamScanner: noSpam ? null : (opts.spamScanner ?? null),
        quarantine: !store ? DRY_RUN_STORE : opts.quarantineDir ? new FileQuarantineStore({ dir: opts.quarantineDir }) : null,
      },
    );
    if (outFile) await fs.writeFile(outFile, res.output);
    const v = res.verdict;
    // `quarantined`: the original was written to the quarantine (only with --quarantine)
    if (json) out(JSON.stringify({ file, verdict: v, output: outFile ?? null, quarantined: store && !!v.quarantineId }, null, 2) + '\n');
    else out(humanVerdict(file, v, !!opts.quarantineDir, noAv || !opts.scanner, policy.spam.enabled && (noSpam || !opts.spamScanner), store));
    if (v.status === 'tempfail') return 2;
    return v.status === 'clean' ? 0 : 1;
  } catch (e) {
    err(`${(e as Error).message}\n`);
    return 2;
  }
}

/** `noSpam`: the policy's spam section is on but no spam scanner was used. */
function humanVerdict(file: string, v: Verdict, hasStore: boolean, noAv: boolean, noSpam: boolean, stored: boolean): string {
  const lines = [`${file}: ${v.status.toUpperCase()} (policy ${v.policy}, ${v.sizeIn} -> ${v.sizeOut} bytes, ${v.scanMs} ms)`];
  if (noAv) lines.push('  antivirus: not used');
  if (noSpam) lines.push('  spam check: not used');
  const sp = v.spam;
  if (sp?.outcome === 'scored') lines.push(`  spam: ${sp.level}, score ${(sp.score ?? 0).toFixed(2)} (rspamd action "${sp.action}"), applied ${sp.applied}`);
  else if (sp) lines.push(`  spam: ${sp.outcome}${sp.reason ? ` (${sp.reason})` : ''}, applied ${sp.applied}`);
  for (const h of v.hits) {
    const what = [
      h.part === '' ? 'message' : `part ${h.part}`,
      h.archivePath ? `member ${h.archivePath}` : '',
      h.filename ? `"${h.filename}"` : '',
      h.declaredType ?? '',
      h.detectedType && h.detectedType !== h.declaredType ? `(detected ${h.detectedType})` : '',
    ]
      .filter(Boolean)
      .join(' ');
    lines.push(`  ${h.action.toUpperCase()} ${what}: ${h.reason} [${h.rule}]`);
  }
  if (v.viruses.length) lines.push(`  viruses: ${v.viruses.join(', ')}`);
  if (v.quarantineId)
    lines.push(stored ? `  quarantined as ${v.quarantineId}` : `  would be quarantined as ${v.quarantineId} (dry run: --quarantine stores it)`);
  if (v.quarantineFailed) lines.push(hasStore ? '  quarantine FAILED: original not stored' : '  quarantine requested but no quarantine directory given');
  return lines.join('\n') + '\n';
}
