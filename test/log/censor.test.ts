import { readFileSync } from 'node:fs';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import {
  CENSOR_FAILED,
  CIRCULAR,
  censorLogObject,
  LOG_CENSOR_MAX_DEPTH,
  LOG_CENSOR_MAX_NODES,
  REDACTED,
  SECRET_LOG_KEYS,
  TOO_DEEP,
  TOO_LARGE,
} from '../../src/log/censor.js';
import { createLogger } from '../../src/log/logger.js';

function sink() {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      chunks.push(String(chunk));
      cb();
    },
  });
  return {
    stream,
    text: () => chunks.join(''),
    lines: () =>
      chunks
        .join('')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

/** One record through the real logger: the parsed line and the raw text. */
function logged(obj: object, bindings?: Record<string, unknown>): { line: Record<string, unknown>; text: string } {
  const s = sink();
  const root = createLogger({ level: 'info' }, s.stream);
  (bindings ? root.child(bindings) : root).info(obj, 'x');
  const lines = s.lines();
  expect(lines).toHaveLength(1);
  return { line: lines[0]!, text: s.text() };
}

/**
 * The redact paths src/log/logger.ts gave pino before the censor (commit 780edd4), written out
 * literally: SECRET_KEYS.flatMap((k) => [k, `*.${k}`]). Each must stay censored.
 */
const OLD_REDACT_PATHS = [
  'password',
  '*.password',
  'pass',
  '*.pass',
  'passwd',
  '*.passwd',
  'secret',
  '*.secret',
  'credentials',
  '*.credentials',
  'authorization',
  '*.authorization',
  'saslResponse',
  '*.saslResponse',
  'initialResponse',
  '*.initialResponse',
  'token',
  '*.token',
  'accessToken',
  '*.accessToken',
  'bearer',
  '*.bearer',
];
const OLD_KEYS = OLD_REDACT_PATHS.filter((p) => !p.startsWith('*.'));

/** `{ k: v }` nested under `depth` objects (`a0.a1...`). */
function nest(depth: number, key: string, v: unknown): Record<string, unknown> {
  let o: Record<string, unknown> = { [key]: v, keep: 'kept' };
  for (let d = depth - 1; d >= 0; d--) o = { [`a${d}`]: o, keep: 'kept' };
  return o;
}
function at(o: unknown, depth: number): Record<string, unknown> {
  let cur = o as Record<string, unknown>;
  for (let d = 0; d < depth; d++) cur = cur[`a${d}`] as Record<string, unknown>;
  return cur;
}

describe('the censor covers every path the old pino redact covered', () => {
  it('lists the same keys as before', () => {
    expect([...SECRET_LOG_KEYS].sort()).toEqual([...OLD_KEYS].sort());
    expect(OLD_REDACT_PATHS).toHaveLength(22);
  });

  it.each(OLD_REDACT_PATHS)('%s', (p) => {
    const key = p.replace(/^\*\./, '');
    const secret = `S3cr3t-${key}-value`;
    const parents = p.startsWith('*.') ? ['auth', 'login', 'upstream', 'tls', 'x'] : [null];
    for (const parent of parents) {
      const obj = parent === null ? { event: 'login.ok', [key]: secret } : { event: 'login.ok', [parent]: { [key]: secret, mechanism: 'PLAIN' } };
      const { line, text } = logged(obj);
      expect(text).not.toContain(secret);
      if (parent === null) expect(line[key]).toBe(REDACTED);
      else expect(line[parent]).toEqual({ [key]: REDACTED, mechanism: 'PLAIN' });
      // the same through a child logger's bindings (pino's redact covered those too)
      const b = logged({ event: 'login.ok' }, obj as Record<string, unknown>);
      expect(b.text).not.toContain(secret);
      if (parent === null) expect(b.line[key]).toBe(REDACTED);
      else expect((b.line[parent] as Record<string, unknown>)[key]).toBe(REDACTED);
    }
  });
});

describe('and more than it did', () => {
  it.each(OLD_KEYS)('%s at every depth up to LOG_CENSOR_MAX_DEPTH', (key) => {
    for (let depth = 0; depth <= LOG_CENSOR_MAX_DEPTH; depth++) {
      const secret = `deep-${key}-${depth}-Zq`;
      const { line, text } = logged({ event: 'login.ok', ...nest(depth, key, secret) });
      expect(text).not.toContain(secret);
      expect(at(line, depth)[key]).toBe(REDACTED);
      expect(at(line, depth).keep).toBe('kept');
    }
  });

  it.each(OLD_KEYS)('%s in any letter case', (key) => {
    for (const k of [
      key.toUpperCase(),
      key.toLowerCase(),
      key[0]!.toUpperCase() + key.slice(1),
      key.replace(/[a-z]/g, (c, i: number) => (i % 2 ? c.toUpperCase() : c)),
    ]) {
      const secret = `case-${k}-Zq`;
      const { line, text } = logged({ [k]: secret, a: { [k]: secret }, b: { c: [{ [k]: secret }] } });
      expect(text).not.toContain(secret);
      expect(line[k]).toBe(REDACTED);
    }
  });

  it('in arrays: elements, arrays of arrays, arrays at the top and deep down', () => {
    const obj = {
      event: 'collector.message',
      replies: [{ rcpt: 'a@b', token: 'T1' }, 'plain', 7, null, [{ password: 'T2' }, [{ bearer: 'T3' }]]],
      rules: [{ rule: 'r', nested: { list: [{ secret: 'T4' }] } }],
      recipients: ['a@b', 'c@d'],
    };
    const { line, text } = logged(obj);
    for (const t of ['T1', 'T2', 'T3', 'T4']) expect(text).not.toContain(`"${t}"`);
    expect(line.replies).toEqual([{ rcpt: 'a@b', token: REDACTED }, 'plain', 7, null, [{ password: REDACTED }, [{ bearer: REDACTED }]]]);
    expect(line.rules).toEqual([{ rule: 'r', nested: { list: [{ secret: REDACTED }] } }]);
    expect(line.recipients).toEqual(['a@b', 'c@d']);
  });

  it('whatever the value is: number, null, object, array; an undefined value stays absent', () => {
    const { line, text } = logged({
      password: 12345678,
      token: null,
      secret: { a: 'inner-Zq' },
      credentials: ['arr-Zq'],
      pass: undefined,
      a: { bearer: undefined },
    });
    expect(line).toMatchObject({ password: REDACTED, token: REDACTED, secret: REDACTED, credentials: REDACTED, a: {} });
    expect('pass' in line).toBe(false);
    expect(text).not.toMatch(/12345678|inner-Zq|arr-Zq/);
  });

  it('in nested bindings of children and grandchildren', () => {
    const s = sink();
    const log = createLogger({ level: 'info' }, s.stream)
      .child({ sid: 's1', auth: { mech: 'PLAIN', initialResponse: 'B1-Zq' } })
      .child({ deep: { a: { b: [{ accessToken: 'B2-Zq' }] } } });
    log.info({ event: 'login.ok' }, 'x');
    expect(s.text()).not.toMatch(/B1-Zq|B2-Zq/);
    expect(s.lines()[0]).toMatchObject({ sid: 's1', auth: { mech: 'PLAIN', initialResponse: REDACTED }, deep: { a: { b: [{ accessToken: REDACTED }] } } });
  });

  it('an object with toJSON is censored as JSON would write it; Date and Buffer pass', () => {
    const withJson = { toJSON: () => ({ user: 'u', password: 'J1-Zq', inner: { token: 'J2-Zq' } }) };
    const when = new Date(0);
    const { line, text } = logged({ a: withJson, b: { c: withJson }, when, buf: Buffer.from('hi') });
    expect(text).not.toMatch(/J1-Zq|J2-Zq/);
    expect(line.a).toEqual({ user: 'u', password: REDACTED, inner: { token: REDACTED } });
    expect(line.when).toBe(when.toISOString());
    expect(line.buf).toEqual({ type: 'Buffer', data: [104, 105] });
    // a toJSON whose result has a toJSON again (pino's stringify would call it unwalked) is cut
    const chain = { toJSON: () => ({ toJSON: () => ({ password: 'J3-Zq' }) }) };
    const c = logged({ chain, d: { chain } });
    expect(c.text).not.toContain('J3-Zq');
    expect(c.line.chain).toBe(TOO_DEEP);
  });

  it('an Error: as `err` only code and message are written; nested elsewhere its secret fields are censored', () => {
    const e = Object.assign(new Error('boom'), { code: 'E_X', password: 'E1-Zq', cfg: { token: 'E2-Zq' } });
    const { line, text } = logged({ event: 'login.failed', err: e, other: { e } });
    expect(text).not.toMatch(/E1-Zq|E2-Zq/);
    expect(line.err).toEqual({ code: 'E_X', message: 'boom' });
    expect((line.other as { e: unknown }).e).toEqual({ code: 'E_X', password: REDACTED, cfg: { token: REDACTED } });
    // the caller's error is untouched, and a copy keeps what the err serializer reads
    expect(e.password).toBe('E1-Zq');
    const c = censorLogObject({ other: { x: e } }) as { other: { x: Error & { password: string } } };
    expect(c.other.x).toBeInstanceOf(Error);
    expect(c.other.x.message).toBe('boom');
    expect(c.other.x.stack).toBe(e.stack);
    expect(c.other.x.password).toBe(REDACTED);
    expect(Object.keys(c.other.x)).toEqual(Object.keys(e));
    // top-level `err` is left to the err serializer, which writes none of its own fields
    expect(censorLogObject({ err: e }).err).toBe(e);
  });
});

describe('the record is not changed, and nothing is copied when nothing is secret', () => {
  it('returns the same object when there is nothing to censor', () => {
    const rec = {
      event: 'message.inspected',
      mailbox: 'INBOX',
      uid: 7,
      rules: [{ part: '1', rule: 'exe', action: 'replace' }],
      viruses: [],
      spam: { level: 'ham', score: 1.5 },
    };
    const out = censorLogObject(rec);
    expect(out).toBe(rec);
    expect(out.rules).toBe(rec.rules);
  });

  it('copies only the path to a censored value; the input keeps its secrets', () => {
    const shared = { big: [1, 2, 3] };
    const rec = { a: { b: { password: 'P' }, keep: shared }, other: shared, list: [shared, { token: 'T' }] };
    const snapshot = structuredClone(rec);
    const out = censorLogObject(rec);
    expect(rec).toEqual(snapshot);
    expect(out).not.toBe(rec);
    expect(out.a).not.toBe(rec.a);
    expect(out.a.keep).toBe(shared);
    expect(out.other).toBe(shared);
    expect(out.list[0]).toBe(shared);
    expect(out).toEqual({ a: { b: { password: REDACTED }, keep: shared }, other: shared, list: [shared, { token: REDACTED }] });
  });
});

describe('fails closed', () => {
  it('drops containers deeper than LOG_CENSOR_MAX_DEPTH: a secret down there never appears', () => {
    for (const depth of [LOG_CENSOR_MAX_DEPTH + 1, LOG_CENSOR_MAX_DEPTH + 2, 50]) {
      const { line, text } = logged(nest(depth, 'password', 'TOO-deep-Zq'));
      expect(text).not.toContain('TOO-deep-Zq');
      // the container at depth LOG_CENSOR_MAX_DEPTH + 1 is replaced, its parent kept
      expect(at(line, LOG_CENSOR_MAX_DEPTH)[`a${LOG_CENSOR_MAX_DEPTH}`]).toBe(TOO_DEEP);
      expect(at(line, LOG_CENSOR_MAX_DEPTH).keep).toBe('kept');
    }
    // arrays count as levels too
    let arr: unknown = [{ secret: 'ARR-deep-Zq' }];
    for (let i = 0; i < LOG_CENSOR_MAX_DEPTH + 3; i++) arr = [arr];
    expect(logged({ arr }).text).not.toContain('ARR-deep-Zq');
  });

  it('a cycle is written as [Circular], its secrets censored', () => {
    const a: Record<string, unknown> = { name: 'a', password: 'CYC-Zq' };
    const b: Record<string, unknown> = { name: 'b', a, list: [] };
    a.b = b;
    (b.list as unknown[]).push(a, b);
    const { line, text } = logged({ event: 'x', a, b });
    expect(text).not.toContain('CYC-Zq');
    expect(line.a).toEqual({ name: 'a', password: REDACTED, b: { name: 'b', a: CIRCULAR, list: [CIRCULAR, CIRCULAR] } });
    // a self-referencing object with many keys stays cheap (no exponential walk)
    const wide: Record<string, unknown> = { token: 'WIDE-Zq' };
    for (let i = 0; i < 30; i++) wide[`k${i}`] = wide;
    const t0 = performance.now();
    expect(logged({ wide }).text).not.toContain('WIDE-Zq');
    expect(performance.now() - t0).toBeLessThan(5000);
  });

  it('a shared (not cyclic) graph wider than LOG_CENSOR_MAX_NODES containers is cut, secrets still hidden', () => {
    // 10 shared nodes per level, 8 levels: 10^8 paths without a budget
    let level: Record<string, unknown> = { token: 'DAG-Zq' };
    for (let d = 0; d < LOG_CENSOR_MAX_DEPTH; d++) {
      const next: Record<string, unknown> = {};
      for (let i = 0; i < 10; i++) next[`n${i}`] = level;
      level = next;
    }
    const out = JSON.stringify(censorLogObject({ level }));
    expect(out).not.toContain('DAG-Zq');
    expect(out).toContain(TOO_LARGE);
    expect(out.split(REDACTED).length - 1).toBeLessThanOrEqual(LOG_CENSOR_MAX_NODES);
  });

  it('a record whose walk throws keeps only its top-level primitives that are not secrets', () => {
    const rec = {
      event: 'login.failed',
      user: 'u',
      n: 3,
      password: 'THROW-Zq',
      get bad(): unknown {
        throw new Error('getter');
      },
      nested: { token: 'THROW2-Zq' },
    };
    const { line, text } = logged(rec);
    expect(text).not.toMatch(/THROW-Zq|THROW2-Zq/);
    expect(line).toMatchObject({ event: 'login.failed', user: 'u', n: 3, censor: CENSOR_FAILED });
    expect('nested' in line).toBe(false);
    const revoked = Proxy.revocable({}, {});
    revoked.revoke();
    const r2 = logged({ event: 'x', p: revoked.proxy, secret: 'REV-Zq' });
    expect(r2.text).not.toContain('REV-Zq');
    expect(r2.line.censor).toBe(CENSOR_FAILED);
  });

  it('random records: no secret value ever reaches the log (bounded: 400 cases)', () => {
    let seed = 12345;
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const keys = [...SECRET_LOG_KEYS, 'user', 'mailbox', 'rules', 'a', 'b', 'list'];
    let secrets = 0;
    const gen = (depth: number): unknown => {
      const kind = rnd(depth > 12 ? 2 : 5);
      if (kind === 0) return `v${rnd(1000)}`;
      if (kind === 1) return rnd(1000);
      if (kind === 2) return Array.from({ length: rnd(4) }, () => gen(depth + 1));
      const o: Record<string, unknown> = {};
      for (let i = rnd(4); i >= 0; i--) {
        let k = keys[rnd(keys.length)]!;
        if (rnd(3) === 0) k = k.toUpperCase();
        o[k] = SECRET_LOG_KEYS.some((s) => s.toLowerCase() === k.toLowerCase()) ? `SECRET${secrets++}X` : gen(depth + 1);
      }
      return o;
    };
    const deadline = Date.now() + 10_000;
    for (let c = 0; c < 400 && Date.now() < deadline; c++) {
      const rec = gen(0);
      const { text } = logged(typeof rec === 'object' && rec !== null && !Array.isArray(rec) ? rec : { rec });
      expect(text).not.toMatch(/SECRET\d+X/);
    }
    expect(secrets).toBeGreaterThan(100);
  });
});

describe('docs/logging.md', () => {
  it('names every secret key and the depth bound in its "No secrets" rule', () => {
    const doc = readFileSync('docs/logging.md', 'utf8');
    const rule = doc.split('\n- **').find((p) => p.startsWith('No secrets.**'));
    expect(rule).toBeDefined();
    for (const k of SECRET_LOG_KEYS) expect(rule).toContain(`\`${k}\``);
    expect(rule).toContain(REDACTED);
    expect(rule).toContain(TOO_DEEP);
    expect(rule).toContain(String(LOG_CENSOR_MAX_DEPTH));
    for (const mark of [CIRCULAR, TOO_LARGE, CENSOR_FAILED]) expect(rule).toContain(mark);
    expect(rule).toContain(LOG_CENSOR_MAX_NODES.toLocaleString('en-US'));
  });
});
