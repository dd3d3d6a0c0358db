/**
 * What the spam scanner changes for listeners: `inspect.vet_on_envelope` (auto / true / false, and
 * how `auto` resolves with the policy and the scanner) and the default `hold_timeout_ms` (POP3
 * sends nothing while a message is checked, so the hold must outlast both scanners' deadlines).
 */
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseConfigText } from '../../src/config/load.js';
import { resolveVetOnEnvelope } from '../../src/inspect/imap-inspector.js';
import { DEFAULT_SPAM_LIMITS, effectiveFlowLimits, effectiveHoldTimeoutMs, HOLD_TIMEOUT_MARGIN_MS } from '../../src/limits.js';
import { compilePolicyText } from '../../src/policy/load.js';
import type { SpamScanner } from '../../src/scanners/types.js';
import { tempDir } from './helpers.js';

const tmp = tempDir('postern-spam-listener-');
afterAll(() => tmp.cleanup());

let n = 0;
const listener = (extra = '', policy = 'default') => `  - name: l${++n}
    protocol: pop3
    port: ${11000 + n}
    tls: { mode: starttls }
    upstream: { kind: static, host: mail.example.com }
    policy: ${policy}
${extra}`;
const parse = (text: string) => parseConfigText(text, path.join(tmp.dir, 'p.yaml'));
const SPAM = 'spam: { type: rspamd, endpoints: [{ host: 127.0.0.1, port: 11333 }], timeout_ms: 7000 }\n';
const CLAMD = 'scanner: { type: clamd, endpoints: [{ host: 127.0.0.1, port: 3310 }], timeout_ms: 20000 }\n';

describe('hold_timeout_ms with a spam scanner', () => {
  it('default: scanner.timeout_ms + spam.timeout_ms + the margin, on listeners with a policy', () => {
    const c = parse(`${CLAMD}${SPAM}listeners:\n${listener()}${listener('', 'null')}`);
    expect(c.listeners[0]!.limits.holdTimeoutMs).toBe(20000 + 7000 + HOLD_TIMEOUT_MARGIN_MS);
    // no policy: nothing is checked, the relay's default applies
    expect(c.listeners[1]!.limits.holdTimeoutMs).toBeUndefined();
    // the relay's computation (the same function) agrees with what the loader wrote, for both listeners
    const deadlines = { scannerTimeoutMs: c.scanner!.timeoutMs, spamTimeoutMs: c.spam!.timeoutMs };
    expect(effectiveFlowLimits(c.listeners[0]!.limits, effectiveHoldTimeoutMs(c.listeners[0]!, deadlines)).holdTimeoutMs).toBe(87_000);
    expect(effectiveHoldTimeoutMs({ ...c.listeners[0]!, limits: { ...c.listeners[0]!.limits, holdTimeoutMs: undefined } }, deadlines)).toBe(87_000);
    expect(effectiveHoldTimeoutMs(c.listeners[1]!, deadlines)).toBe(20000 + HOLD_TIMEOUT_MARGIN_MS);
  });

  it('without clamd: spam.timeout_ms + the margin; default spam timeout', () => {
    expect(parse(`${SPAM}listeners:\n${listener()}`).listeners[0]!.limits.holdTimeoutMs).toBe(7000 + HOLD_TIMEOUT_MARGIN_MS);
    expect(parse(`spam: { type: rspamd, endpoints: [{ host: 127.0.0.1, port: 11333 }] }\nlisteners:\n${listener()}`).listeners[0]!.limits.holdTimeoutMs).toBe(
      DEFAULT_SPAM_LIMITS.timeoutMs + HOLD_TIMEOUT_MARGIN_MS,
    );
  });

  it('an explicit value (also 0, and the global default) is kept; without spam nothing changes', () => {
    expect(parse(`${SPAM}listeners:\n${listener('    limits: { hold_timeout_ms: 5000 }\n')}`).listeners[0]!.limits.holdTimeoutMs).toBe(5000);
    expect(parse(`${SPAM}listeners:\n${listener('    limits: { hold_timeout_ms: 0 }\n')}`).listeners[0]!.limits.holdTimeoutMs).toBe(0);
    expect(parse(`${SPAM}limits: { hold_timeout_ms: 4000 }\nlisteners:\n${listener()}`).listeners[0]!.limits.holdTimeoutMs).toBe(4000);
    expect(parse(`${CLAMD}listeners:\n${listener()}`).listeners[0]!.limits.holdTimeoutMs).toBeUndefined();
  });
});

describe('inspect.vet_on_envelope', () => {
  it('auto by default; true, false and auto accepted; anything else refused', () => {
    expect(parse(`listeners:\n${listener()}`).listeners[0]!.inspect.vetOnEnvelope).toBe('auto');
    for (const v of ['true', 'false', 'auto']) {
      expect(String(parse(`listeners:\n${listener(`    inspect: { vet_on_envelope: ${v} }\n`)}`).listeners[0]!.inspect.vetOnEnvelope)).toBe(v);
    }
    expect(() => parse(`listeners:\n${listener('    inspect: { vet_on_envelope: yes-please }\n')}`)).toThrow(/vet_on_envelope/);
  });

  it('auto is on only when the policy scores spam and there is a spam scanner', () => {
    const scanner: SpamScanner = { name: 's', check: async () => ({ kind: 'oversize', engine: 's', size: 0, limit: 0 }), close: async () => {} };
    const on = compilePolicyText('spam: { enabled: true }\n', '/v/on.yaml');
    const off = compilePolicyText('name: off\n', '/v/off.yaml');
    expect(resolveVetOnEnvelope('auto', on, { spamScanner: scanner })).toBe(true);
    expect(resolveVetOnEnvelope(undefined, on, { spamScanner: scanner })).toBe(true);
    expect(resolveVetOnEnvelope('auto', on, {})).toBe(false);
    expect(resolveVetOnEnvelope('auto', off, { spamScanner: scanner })).toBe(false);
    expect(resolveVetOnEnvelope(true, off, {})).toBe(true);
    expect(resolveVetOnEnvelope(false, on, { spamScanner: scanner })).toBe(false);
  });
});
