/**
 * Keeps the limits, the error codes and docs/configuration.md in step (issue 9: "every limit in
 * src/limits.ts or the claim removed, every declared error code raised somewhere or deleted"):
 * - every code declared in src/errors.ts is raised somewhere in src/ and listed in the docs' error-code
 *   table; every E_* string in src/ and in the docs is a declared code;
 * - every limit exported from src/limits.ts has a row in a table of docs/configuration.md whose
 *   default is the value in the code, and every row of the fixed-limit tables names an export;
 * - no module outside src/limits.ts defines a limit-like numeric constant of its own, except the ones
 *   listed below with the reason.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ErrorCodes } from '../../src/errors.js';
import * as limits from '../../src/limits.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const DOCS = readFileSync(path.join(ROOT, 'docs/configuration.md'), 'utf8');

function sourceFiles(dir: string): string[] {
  return readdirSync(path.join(ROOT, dir), { withFileTypes: true }).flatMap((e) => {
    const rel = `${dir}/${e.name}`;
    if (e.isDirectory()) return sourceFiles(rel);
    return e.isFile() && e.name.endsWith('.ts') ? [rel] : [];
  });
}

const SOURCES = new Map(sourceFiles('src').map((f) => [f, readFileSync(path.join(ROOT, f), 'utf8')]));

// ------------------------------------------------------------------------------- markdown tables

interface Row {
  header: string[];
  cells: string[];
  line: number;
}

/** Splits a table line at unescaped `|`. */
function cellsOf(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  for (let i = 1; i < line.length; i++) {
    const c = line[i]!;
    if (c === '\\' && line[i + 1] === '|') {
      cur += '|';
      i++;
    } else if (c === '|') {
      out.push(cur.trim());
      cur = '';
    } else cur += c;
  }
  return out;
}

/** Every body row of every table, with its header. */
function tableRows(md: string): Row[] {
  const lines = md.split('\n');
  const rows: Row[] = [];
  let header: string[] | null = null;
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i]!;
    if (!l.startsWith('|')) {
      header = null;
      continue;
    }
    if (!header) {
      if (/^\|[-| :]+\|$/.test(lines[i + 1] ?? '')) {
        header = cellsOf(l);
        i++;
      }
      continue;
    }
    rows.push({ header, cells: cellsOf(l), line: i + 1 });
  }
  return rows;
}

const ROWS = tableRows(DOCS);

/** The rows whose first cell is exactly `name` in backticks. */
function rowsNamed(name: string): Row[] {
  return ROWS.filter((r) => r.cells[0] === `\`${name}\``);
}

/** How a byte count or number may be written in the docs (src/units.ts: K/KB/KiB... are binary). */
function renderings(n: number): string[] {
  const out = [String(n)];
  for (const [unit, f] of [
    ['G', 1024 ** 3],
    ['M', 1024 ** 2],
    ['K', 1024],
  ] as const) {
    if (n >= f && n % f === 0) out.push(`${n / f}${unit}iB`, `${n / f}${unit}B`, `${n / f}${unit}`);
  }
  return out;
}

function defaultCell(r: Row): string | undefined {
  const i = r.header.findIndex((h) => h === 'Default' || h === 'Value');
  return i < 0 ? undefined : r.cells[i];
}

// ------------------------------------------------------------------------------------ the limits

/** Exported config-default objects: the prefix of their keys in the docs (snake_case after it). */
const CONFIG_OBJECTS: Record<string, string> = {
  DEFAULT_SESSION_LIMITS: '',
  DEFAULT_SERVER_LIMITS: '',
  DEFAULT_FLOW_LIMITS: '',
  DEFAULT_SCANNER_LIMITS: 'scanner.',
  DEFAULT_MIME_LIMITS: 'limits.',
  DEFAULT_ARCHIVE_LIMITS: 'archives.',
  DEFAULT_ANTIVIRUS_LIMITS: 'antivirus.',
  DEFAULT_SPAM_LIMITS: 'spam.',
};

const snake = (k: string) => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

interface Documented {
  /** Where the value lives in src/limits.ts. */
  source: string;
  /** The first cell of its docs row, without backticks. */
  docName: string;
  value: number | undefined;
}

/** Every limit src/limits.ts exports, with the name its docs row must carry. */
function exportedLimits(): Documented[] {
  const out: Documented[] = [];
  for (const [name, v] of Object.entries(limits)) {
    if (typeof v === 'function') continue;
    if (typeof v === 'number') {
      // DEFAULT_X of a config key is documented as its key: DEFAULT_MEMORY_BUDGET_BYTES -> memory_budget_bytes
      const docName = name.startsWith('DEFAULT_') ? name.slice('DEFAULT_'.length).toLowerCase() : name;
      out.push({ source: name, docName, value: v });
      continue;
    }
    if (typeof v !== 'object' || v === null) throw new Error(`src/limits.ts exports ${name} of an unexpected kind`);
    const prefix = CONFIG_OBJECTS[name];
    if (prefix === undefined && name.startsWith('DEFAULT_')) {
      throw new Error(`${name}: a config-default object needs its docs key prefix in CONFIG_OBJECTS of this test`);
    }
    for (const [k, kv] of Object.entries(v as Record<string, unknown>)) {
      if (kv !== undefined && typeof kv !== 'number') throw new Error(`${name}.${k} is not a number`);
      out.push({ source: `${name}.${k}`, docName: prefix === undefined ? `${name}.${k}` : prefix + snake(k), value: kv as number | undefined });
    }
  }
  return out;
}

describe('limits (src/limits.ts) and docs/configuration.md', () => {
  const all = exportedLimits();

  it('the table parser and the export walk see what they should (the checks below can fail)', () => {
    expect(all.length).toBeGreaterThan(50);
    expect(all).toContainEqual({ source: 'DEFAULT_SESSION_LIMITS.maxLineLength', docName: 'max_line_length', value: 64 * 1024 });
    expect(all).toContainEqual({ source: 'POP3_LIMITS.maxPreLoginCommands', docName: 'POP3_LIMITS.maxPreLoginCommands', value: 50 });
    expect(all).toContainEqual({ source: 'DEFAULT_MEMORY_BUDGET_BYTES', docName: 'memory_budget_bytes', value: 1024 ** 3 });
    expect(defaultCell(rowsNamed('max_line_length')[0]!)).toBe('`64KiB`');
    expect(renderings(64 * 1024)).toEqual(expect.arrayContaining(['65536', '64KiB', '64KB', '64K']));
    expect(cellsOf('| `a` \\| `b` | c |')).toEqual(['`a` | `b`', 'c']);
  });

  it('every exported limit has exactly one docs row, and its default there is the value in the code', () => {
    const problems: string[] = [];
    for (const l of all) {
      const rows = rowsNamed(l.docName);
      if (rows.length !== 1) {
        problems.push(`${l.source}: ${rows.length} rows named \`${l.docName}\` in docs/configuration.md (expected 1)`);
        continue;
      }
      if (l.value === undefined) continue; // derived default (hold_timeout_ms), described in words
      const cell = defaultCell(rows[0]!);
      if (cell === undefined) {
        problems.push(`${l.source}: the row of \`${l.docName}\` (line ${rows[0]!.line}) has no Default/Value column`);
        continue;
      }
      if (!renderings(l.value).some((r) => cell.startsWith(`\`${r}\``))) {
        problems.push(`${l.source} = ${l.value}, but docs/configuration.md:${rows[0]!.line} says ${cell}`);
      }
    }
    expect(problems).toEqual([]);
  });

  it('every row of the fixed-limit tables names a limit src/limits.ts exports, with an error code or —', () => {
    const names = new Set(all.map((l) => l.docName));
    const fixed = ROWS.filter((r) => r.header[0] === 'Limit');
    expect(fixed.length).toBeGreaterThan(30);
    const problems: string[] = [];
    for (const r of fixed) {
      const m = /^`([A-Za-z0-9_.]+)`$/.exec(r.cells[0] ?? '');
      if (!m || !names.has(m[1]!)) problems.push(`docs/configuration.md:${r.line}: ${r.cells[0]} is not a limit exported from src/limits.ts`);
      const code = r.cells[r.header.indexOf('Error code')] ?? '';
      if (code !== '—' && !code.split(', ').every((c) => /^`E_[A-Z_]+`$/.test(c))) problems.push(`docs/configuration.md:${r.line}: error code cell "${code}"`);
    }
    expect(problems).toEqual([]);
  });

  /**
   * Numeric constants outside src/limits.ts whose names look like limits. A new one fails this test:
   * move it to src/limits.ts (with a docs row), or add it here with the reason it is not a limit.
   */
  const NOT_HERE: Record<string, string> = {
    'src/protocol/imap/command.ts:MAX_U32': 'RFC 9051 number range (grammar), not a postern choice',
    'src/protocol/imap/command.ts:MAX_63': 'RFC 9051 mod-sequence range (grammar)',
    'src/protocol/pop3/framer.ts:MAX_POP3_NUMBER': 'message-number range of the POP3 grammar',
    'src/protocol/pop3/framer.ts:INITIAL_CAPACITY': 'initial size of a growing buffer bounded by max_line_length',
    'src/config/schema.ts:DEFAULT_QUARANTINE_RETENTION_DAYS': 'a retention period, not a bound (docs: quarantine.retention_days)',
    'src/inspect/factory.ts:QUARANTINE_PURGE_INTERVAL_MS': 'a schedule, not a bound',
    'src/tls/ca.ts:CA_VALIDITY_YEARS': 'certificate validity, not a bound',
    'src/tls/leaf.ts:LEAF_VALIDITY_DAYS': 'certificate validity, not a bound',
    'src/log/logger.ts:MAX_LOGGED_LINE': 'length of log text (src/log), not of anything relayed',
    'src/log/logger.ts:MAX_LOGGED_ERROR': 'length of log text (src/log), not of anything relayed',
    'src/log/trace.ts:TRACE_HEAD_BYTES': 'length of protocol-trace text (src/log)',
    'src/log/trace.ts:TAIL_BYTES': 'length of protocol-trace text (src/log)',
    'src/mime/zip.ts:MAX_COMMENT': 'ZIP format maximum (16-bit field), not a postern choice',
    'src/policy/stages/spam-subject.ts:MAX_LINE': 'RFC 5322 line length (998), a format rule of the subject rewrite',
    'src/policy/stages/spam-subject.ts:WORD_BYTES': 'RFC 2047 encoded-word payload size (75-character words), a format rule',
    'src/protocol/imap/write.ts:STRICT_QUOTED_MAX': 'decides the form a string is written in (quoted or literal), not a buffer',
    'src/mime/decode.ts:QP_MAX_WS': "Dovecot's quoted-printable rule (RFC 2045 line length): longer whitespace is damage (on_bad_encoding), nothing is cut",
  };
  const LIMIT_LIKE =
    /^\s*(?:export )?const ((?=[A-Z])[A-Z0-9_]*(?:MAX|LIMIT|BYTES|_MS|TIMEOUT|DEPTH|SIZE|CAPACITY|WINDOW|DAYS|YEARS|RESTARTS|NESTING|COUNT)[A-Z0-9_]*) = [-0-9(]/gm;

  it('no module outside src/limits.ts defines a limit of its own (or it is listed here with the reason)', () => {
    const found: string[] = [];
    for (const [file, text] of SOURCES) {
      if (file === 'src/limits.ts') continue;
      for (const m of text.matchAll(LIMIT_LIKE)) found.push(`${file}:${m[1]}`);
    }
    expect(found.length).toBeGreaterThan(0);
    expect(found.filter((f) => !(f in NOT_HERE))).toEqual([]);
    // an entry whose constant is gone (moved) is removed from the list
    expect(Object.keys(NOT_HERE).filter((k) => !found.includes(k))).toEqual([]);
  });
});

// ------------------------------------------------------------------------------------ error codes

describe('error codes (src/errors.ts)', () => {
  const declared = Object.entries(ErrorCodes) as [string, string][];
  const codes = new Set(declared.map(([, c]) => c));
  const docRows = ROWS.filter((r) => r.header[0] === 'Code');

  it('every declared code is raised somewhere in src/ (not only compared with or mapped to a text)', () => {
    const unused: string[] = [];
    for (const [key, code] of declared) {
      const raised = [...SOURCES].some(([file, text]) => {
        if (file === 'src/errors.ts') return false;
        if (text.includes(`'${code}'`)) return true;
        for (const m of text.matchAll(new RegExp(`(.{0,4})ErrorCodes\\.${key}\\b(.?.?)`, 'g'))) {
          const comparison = /[=!]==? ?$/.test(m[1]!);
          const mapKey = m[1]!.endsWith('[') && m[2] === ']:';
          if (!comparison && !mapKey) return true;
        }
        return false;
      });
      if (!raised) unused.push(code);
    }
    expect(unused).toEqual([]);
  });

  it('every E_* string in src/ is a declared code', () => {
    const stray: string[] = [];
    for (const [file, text] of SOURCES) {
      if (file === 'src/errors.ts') continue;
      for (const m of text.matchAll(/'(E_[A-Z_]+)'/g)) if (!codes.has(m[1]!)) stray.push(`${file}: ${m[1]}`);
    }
    expect(stray).toEqual([]);
  });

  it('docs/configuration.md lists every declared code once in its error-code table, and only those', () => {
    expect(docRows.length).toBeGreaterThan(0);
    const listed = docRows.map((r) => /^`(E_[A-Z_]+)`$/.exec(r.cells[0] ?? '')?.[1] ?? `(not a code: ${r.cells[0]})`);
    expect([...listed].sort()).toEqual([...codes].sort());
  });

  it('every E_* name in the docs and the README is a declared code', () => {
    const stray: string[] = [];
    for (const f of ['README.md', 'CONTRIBUTING.md', ...readdirSync(path.join(ROOT, 'docs')).map((d) => `docs/${d}`)]) {
      let text: string;
      try {
        text = readFileSync(path.join(ROOT, f), 'utf8');
      } catch {
        continue;
      }
      for (const m of text.matchAll(/\bE_[A-Z][A-Z_]+\b/g)) if (!codes.has(m[0])) stray.push(`${f}: ${m[0]}`);
    }
    expect(stray).toEqual([]);
  });
});
