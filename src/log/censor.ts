/**
 * The censor of structured log fields: the values of credential-like keys never reach the log.
 *
 * pino calls censorLogObject on every record (`formatters.log`) and on every child logger's bindings
 * (`formatters.bindings`), before its serializers and before JSON. It replaced pino's `redact` with
 * wildcard paths (`*.password`), which cost 35-56 us per log call and a quarter of the heap
 * allocated on the bulk policy path; this walk costs well under a microsecond for a usual record
 * (scripts/bench-log-censor.mjs) and covers more:
 * - a key in SECRET_LOG_KEYS, in any letter case, at any depth up to LOG_CENSOR_MAX_DEPTH, in
 *   objects and in arrays (the old paths covered the exact spelling at the top level and one level
 *   down, and no array element), has its value replaced by REDACTED whatever it is (string, number,
 *   object); an undefined value stays undefined (JSON omits it);
 * - the record is never changed: the objects on the path to a censored value are copied (an Error
 *   keeps its prototype, message and stack); a record with nothing to censor is returned as it is,
 *   with no allocation;
 * - fail closed: a container (object or array) deeper than LOG_CENSOR_MAX_DEPTH is replaced by
 *   TOO_DEEP, a container met again on its own path by CIRCULAR, every container after the first
 *   LOG_CENSOR_MAX_NODES by TOO_LARGE, and a record whose walk throws (a throwing getter, a
 *   revoked Proxy) is reduced to its top-level string, number and boolean fields that are not
 *   secrets (plus CENSOR_FAILED in `censor`); an object with a `toJSON` method (other than Date and
 *   binary data) is replaced by what toJSON returns, censored, since that is what JSON would write
 *   (TOO_DEEP if that has a toJSON again);
 * - `err` at the top level is left to pino's err serializer (src/log/logger.ts), which keeps only
 *   `code`, `message` and `stack`: none of its own fields is written, secret or not.
 * Protocol lines are not fields: they go through redactLine (logger.ts) before they are logged.
 */

import { LOG_CENSOR_KEY_CACHE_MAX, LOG_CENSOR_MAX_DEPTH, LOG_CENSOR_MAX_NODES } from '../limits.js';

export const REDACTED = '[redacted]';
export const TOO_DEEP = '[too deep]';
export const CIRCULAR = '[Circular]';
export const TOO_LARGE = '[too large]';
export const CENSOR_FAILED = 'failed';

/** Keys whose values are never logged, compared in lower case (docs/logging.md "No secrets"). */
export const SECRET_LOG_KEYS: readonly string[] = [
  'password',
  'pass',
  'passwd',
  'secret',
  'credentials',
  'authorization',
  'saslResponse',
  'initialResponse',
  'token',
  'accessToken',
  'bearer',
];

export { LOG_CENSOR_MAX_DEPTH, LOG_CENSOR_MAX_NODES };

const SECRET = new Set(SECRET_LOG_KEYS.map((k) => k.toLowerCase()));
/** Key -> secret?, for the names postern logs (a fixed vocabulary): no lower-casing per call. Bounded. */
const keyCache = new Map<string, boolean>();

export function isSecretLogKey(key: string): boolean {
  let r = keyCache.get(key);
  if (r === undefined) {
    r = SECRET.has(key.toLowerCase());
    if (keyCache.size < LOG_CENSOR_KEY_CACHE_MAX) keyCache.set(key, r);
  }
  return r;
}

const hasOwn = Object.prototype.hasOwnProperty;

/** Containers left in this record's budget (reset per record; saved and restored if a getter logs). */
let budget = 0;
/** The containers on the path being walked (cycle check; at most LOG_CENSOR_MAX_DEPTH + 1). */
const path: object[] = [];

/**
 * The record (or bindings) with every secret censored and the fail-closed bounds applied: the same
 * object when nothing had to change.
 */
export function censorLogObject<T extends object>(obj: T): T {
  const savedBudget = budget;
  const savedPath = path.length;
  budget = LOG_CENSOR_MAX_NODES;
  try {
    return censorContainer(obj, 0, true) as T;
  } catch {
    return fallback(obj) as T;
  } finally {
    budget = savedBudget;
    path.length = savedPath;
  }
}

function censorContainer(v: object, depth: number, top: boolean): unknown {
  if (v instanceof Date || ArrayBuffer.isView(v) || v instanceof ArrayBuffer) return v;
  if (depth > LOG_CENSOR_MAX_DEPTH) return TOO_DEEP;
  if (--budget < 0) return TOO_LARGE;
  for (let i = 0; i < path.length; i++) if (path[i] === v) return CIRCULAR;
  const toJSON = (v as { toJSON?: unknown }).toJSON;
  if (typeof toJSON === 'function') {
    const j: unknown = toJSON.call(v, '');
    if (typeof j !== 'object' || j === null || j === v) return j;
    // JSON calls toJSON once; a result with a toJSON of its own would be called again by pino's stringify
    if (typeof (j as { toJSON?: unknown }).toJSON === 'function') return TOO_DEEP;
    return censorContainer(j, depth, false);
  }
  path.push(v);
  let out: unknown;
  if (Array.isArray(v)) {
    let copy: unknown[] | undefined;
    for (let i = 0; i < v.length; i++) {
      const e = v[i];
      if (typeof e !== 'object' || e === null) continue;
      const r = censorContainer(e, depth + 1, false);
      if (r !== e) {
        copy ??= v.slice();
        copy[i] = r;
      }
    }
    out = copy ?? v;
  } else {
    const o = v as Record<string, unknown>;
    let copy: Record<string, unknown> | undefined;
    for (const k in o) {
      if (!hasOwn.call(o, k)) continue;
      const e = o[k];
      let r: unknown = e;
      if (isSecretLogKey(k)) {
        if (e !== undefined && e !== REDACTED) r = REDACTED;
      } else if (typeof e === 'object' && e !== null && !(top && k === 'err')) {
        r = censorContainer(e, depth + 1, false);
      }
      if (r !== e) {
        copy ??= copyObject(o);
        copy[k] = r;
      }
    }
    out = copy ?? o;
  }
  path.pop();
  return out;
}

/** A shallow copy with the same prototype and own properties (an Error keeps message and stack, unenumerable). */
function copyObject(o: Record<string, unknown>): Record<string, unknown> {
  const proto = Object.getPrototypeOf(o) as object | null;
  if (proto === Object.prototype || proto === null) return proto === null ? Object.assign(Object.create(null), o) : { ...o };
  const copy = Object.create(proto) as Record<string, unknown>;
  for (const k of Object.getOwnPropertyNames(o)) {
    const d = Object.getOwnPropertyDescriptor(o, k)!;
    // accessors become their value, read once here: the censored value is what is written
    Object.defineProperty(copy, k, { value: 'value' in d ? d.value : o[k], enumerable: d.enumerable, writable: true, configurable: true });
  }
  return copy;
}

/** The walk threw: only the top-level primitive fields that are not secrets. */
function fallback(obj: object): Record<string, unknown> {
  const out: Record<string, unknown> = { censor: CENSOR_FAILED };
  try {
    for (const k of Object.keys(obj)) {
      if (isSecretLogKey(k) || k === 'censor') continue;
      try {
        const e = (obj as Record<string, unknown>)[k];
        if (typeof e === 'string' || typeof e === 'number' || typeof e === 'boolean') out[k] = e;
      } catch {
        /* an unreadable field is left out */
      }
    }
  } catch {
    /* no keys at all: only censor */
  }
  return out;
}
