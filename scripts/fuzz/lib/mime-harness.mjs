// The MIME fuzzer's judge: one message through postern's engine, then its output through every
// reader (see mime-readers.mjs). Used by scripts/fuzz/mime.mjs (compiled code from dist/) and by
// test/fuzz/mime.test.ts (the TypeScript sources through vitest): the caller hands in the modules.
//
//   modules = { inspectMessage, loadPolicy, renderItem, parseFetchItems, simpleParser }

import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EICAR, generateCase } from './mime-gen.mjs';
import { bytesReader, imapReader, mailparserReader, PythonReader } from './mime-readers.mjs';

const here = dirname(fileURLToPath(import.meta.url));
export const POLICIES_DIR = join(here, '..', '..', '..', 'policies');

/** Test double for the scanner: infected when the bytes it is handed contain the EICAR string. */
export class EicarScanner {
  name = 'fuzz-eicar';
  calls = 0;
  async scan(data) {
    this.calls++;
    return data.includes(EICAR)
      ? { kind: 'infected', engine: this.name, endpoint: 'memory', viruses: ['Eicar-Test-Signature'], ms: 0 }
      : { kind: 'clean', engine: this.name, endpoint: 'memory', ms: 0 };
  }
  async scanChunks(chunks) {
    const parts = [];
    let n = 0;
    for await (const c of chunks) {
      parts.push(Buffer.from(c));
      n += c.length;
      if (n > 64 * 1024 * 1024) break;
    }
    return this.scan(Buffer.concat(parts));
  }
  async close() {}
}

const QUARANTINE = { put: async (_raw, meta) => String(meta.id) };
const NOW = () => new Date('2024-01-01T00:00:00Z');

/** Rules whose hits on a re-inspection of postern's own output mean something dangerous is still in it. */
const DANGER_RULE = /^(filenames|content_types|antivirus$|archives)/;

export async function createJudge(modules, opts = {}) {
  const policy = opts.policy ?? modules.loadPolicy('default', opts.policiesDir ?? POLICIES_DIR);
  const scanner = new EicarScanner();
  const python = new PythonReader(opts.python);
  const deps = { scanner, quarantine: QUARANTINE, now: NOW };
  const ctx = { protocol: 'imap', listener: 'fuzz', mailbox: 'INBOX', uidValidity: 1, uid: 1 };
  /** kinds (see kindOf) not counted as escapes, e.g. 'mz~embedded' (default: none, everything counts) */
  const ignore = new Set(opts.ignoreKinds ?? []);

  async function judge(raw, o = {}) {
    const t0 = performance.now();
    const r = await modules.inspectMessage(raw, policy, ctx, deps);
    const out = r.output;
    const readers = [];
    const notes = [];
    const imap = imapReader(out, r.structure, modules);
    const py = await python.read(out);
    const mp = await mailparserReader(out, modules.simpleParser);
    const by = bytesReader(out);
    readers.push(imap, py, mp, by);
    // postern as a reader of its own output: a second pass must find nothing dangerous
    const again = await modules.inspectMessage(out, policy, ctx, deps);
    const self = { findings: [], notes: [] };
    if (again.verdict.status !== 'clean') {
      for (const h of again.verdict.hits) {
        if (DANGER_RULE.test(h.rule)) self.findings.push({ reader: 'postern', kind: 'reinspect', where: `part ${h.part}`, detail: `${h.rule}: ${h.reason}` });
        else self.notes.push(`re-inspection of the output: ${again.verdict.status} (${h.rule}: ${h.reason})`);
      }
    }
    readers.push(self);
    const all = readers.flatMap((x) => x.findings);
    const findings = all.filter((f) => !ignore.has(kindOf(f)));
    for (const x of readers) notes.push(...x.notes);
    const res = {
      status: r.verdict.status,
      hits: r.verdict.hits.map((h) => ({ part: h.part, rule: h.rule, action: h.action, reason: h.reason, filename: h.filename })),
      changed: out !== raw && !out.equals(raw),
      findings: dedupe(findings),
      /** findings of kinds the caller chose to ignore (opts.ignoreKinds) */
      ignored: dedupe(all.filter((f) => ignore.has(kindOf(f)))),
      notes: notes.slice(0, 20),
      /** postern's second pass over its own output found it malformed (or other non-danger hits) */
      selfNotes: self.notes,
      ms: Math.round(performance.now() - t0),
      output: o.keepOutput ? out : undefined,
    };
    if (res.findings.length && !res.changed) {
      // postern passed the message unchanged: the readers' disagreement is on the original itself
      const seeing = new Set(res.findings.map((f) => readerFamily(f.reader)));
      res.differential = { sawDanger: [...seeing].sort(), sawNothing: READER_FAMILIES.filter((f) => !seeing.has(f)) };
    }
    return res;
  }

  /** The readers alone on any message (no postern): what a client would see of it unfiltered. */
  async function read(raw) {
    const readers = [imapReader(raw, null, modules), await python.read(raw), await mailparserReader(raw, modules.simpleParser), bytesReader(raw)];
    return { findings: dedupe(readers.flatMap((x) => x.findings)), notes: readers.flatMap((x) => x.notes) };
  }

  return {
    policy,
    judge,
    read,
    async judgeCase(seed, index, genOpts = {}) {
      const c = generateCase(seed, index, genOpts);
      return { gen: c, result: await judge(c.bytes) };
    },
    close: () => python.close(),
  };
}

export const READER_FAMILIES = ['imap', 'python', 'mailparser', 'bytes', 'postern'];
export function readerFamily(reader) {
  return reader.split(/[-+]/)[0];
}

function dedupe(findings) {
  const seen = new Set();
  const out = [];
  for (const f of findings) {
    const k = `${f.reader}|${f.kind}|${f.where}|${f.detail}`;
    if (seen.has(k)) continue;
    seen.add(k);
    out.push(f);
  }
  return out;
}

/**
 * Kind of a finding: 'mz', 'mz~embedded', 'eicar', 'reinspect', 'name', or 'name~nfkc' / 'name~nul' /
 * 'name~nul-dropped' when a name is only dangerous after NFKC or NUL handling (weaker evidence:
 * Windows itself does not apply NFKC); '<kind>~uu-lenient' for a uuencoded block whose begin line
 * lacks the octal mode or the name (decoded by lenient readers only).
 */
export function kindOf(f) {
  if (f.kind !== 'name') return f.kind;
  const m = /\/(nfkc|nul|nul-dropped)\)$/.exec(f.detail);
  return m ? `name~${m[1]}` : 'name';
}

/** The escape kinds of a result (what a minimised repro must keep showing). */
export function kinds(result) {
  return [...new Set(result.findings.map(kindOf))].sort();
}

/**
 * What a minimised repro must keep showing for one escape kind: exactly the readers that saw that
 * kind (so that minimising cannot drift to a different, simpler escape) and, for the byte-level
 * minimiser, postern's verdict.
 */
export function signatureOf(result, kind, withStatus = true) {
  const readers = [...new Set(result.findings.filter((f) => kindOf(f) === kind).map((f) => f.reader))].sort();
  return readers.length ? `${withStatus ? result.status : ''}|${kind}|${readers.join(',')}` : null;
}

/**
 * Generator-level minimisation for one escape kind: drops harmless parts, the EICAR subject, each
 * template danger and then each mutation whose removal keeps `kind` among the escape kinds.
 * Returns { skip, bare, drop, plainSubject, tags, families, result, bytes, dangers, eicarSubject }.
 */
export async function minimiseCase(judgeApi, seed, index, kind) {
  let want = null;
  const holds = async (o) => {
    const { gen, result } = await judgeApi.judgeCase(seed, index, o);
    // the verdict may change when a template part goes (the exe next to a uu block): readers only
    const sig = signatureOf(result, kind, false);
    want ??= sig;
    return sig !== null && sig === want ? { gen, result } : null;
  };
  let best = { skip: new Set(), bare: false, drop: new Set(), plainSubject: false };
  let last = await holds(best);
  if (!last) return null;
  const tryOpt = async (trial) => {
    const r = await holds(trial);
    if (r) {
      best = trial;
      last = r;
    }
  };
  await tryOpt({ ...best, bare: true });
  if (last.gen.eicarSubject) await tryOpt({ ...best, plainSubject: true });
  for (let k = 0; k < last.gen.allDangers; k++) await tryOpt({ ...best, drop: new Set([...best.drop, k]) });
  for (const k of last.gen.applied.slice()) await tryOpt({ ...best, skip: new Set([...best.skip, k]) });
  const g = last.gen;
  return {
    ...best,
    tags: g.tags,
    families: g.applied.map((k) => g.families[k]),
    result: last.result,
    bytes: g.bytes,
    dangers: g.dangers,
    eicarSubject: g.eicarSubject,
    shape: g.shape,
  };
}

/** Line-level ddmin of the bytes of a repro (same signatureOf), bounded by `budget` judge calls. */
export async function minimiseBytes(judgeApi, bytes, kind, budget = 300) {
  const split = (buf) => {
    const lines = [];
    let s = 0;
    for (let i = 0; i < buf.length; i++) {
      if (buf[i] === 0x0a || (buf[i] === 0x0d && buf[i + 1] !== 0x0a)) {
        lines.push(buf.subarray(s, i + 1));
        s = i + 1;
      }
    }
    if (s < buf.length) lines.push(buf.subarray(s));
    return lines;
  };
  let lines = split(bytes);
  let calls = 0;
  const want = signatureOf(await judgeApi.judge(bytes), kind);
  const holds = async (ls) => {
    calls++;
    const r = await judgeApi.judge(Buffer.concat(ls));
    return want !== null && signatureOf(r, kind) === want;
  };
  let n = 2;
  while (lines.length >= 2 && calls < budget) {
    const chunk = Math.ceil(lines.length / n);
    let reduced = false;
    for (let i = 0; i < lines.length && calls < budget; i += chunk) {
      const trial = [...lines.slice(0, i), ...lines.slice(i + chunk)];
      if (trial.length && (await holds(trial))) {
        lines = trial;
        n = Math.max(n - 1, 2);
        reduced = true;
        break;
      }
    }
    if (!reduced) {
      if (chunk === 1) break;
      n = Math.min(n * 2, lines.length);
    }
  }
  return { bytes: Buffer.concat(lines), calls };
}
