/**
 * The operations metrics of src/admin/metrics.ts: config reloads, the block list and auto-blocks, the
 * collector's passes (counted from its `collector.pass` log lines by countingCollectorLog), and one
 * scanner health source per engine across reloads. Read back through the registry's text format.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { countingCollectorLog, Metrics } from '../../src/admin/metrics.js';
import { countingLog } from '../../src/inspect/factory.js';
import { ADMIN_LIMITS } from '../../src/limits.js';
import { createLogger } from '../../src/log/logger.js';
import { PROTECTED_FILE_NAME } from '../../src/quarantine/protected.js';
import { FileQuarantineStore } from '../../src/quarantine/store.js';
import { testListener } from '../helpers/scripted-host.js';

function sample(body: string, prefix: string): number | undefined {
  const line = body.split('\n').find((l) => l.startsWith(`${prefix} `));
  return line === undefined ? undefined : Number(line.slice(prefix.length + 1));
}

/** A logger at info whose lines are kept in `lines`. */
function arrayLogger() {
  const lines: string[] = [];
  const base = createLogger(
    { level: 'info' },
    new Writable({
      write(c, _e, cb) {
        lines.push(String(c));
        cb();
      },
    }),
  );
  return { lines, base };
}

describe('operations metrics', () => {
  // attacker's review (2026-12-03): every `*.json` of the directory was counted (the POP3 protected list
  // among them), and the directory was listed on every scrape
  it('quarantine entries: records with a valid id only, listed at most every ADMIN_LIMITS.quarantineCountTtlMs', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'postern-qcount-'));
    try {
      const store = new FileQuarantineStore({ dir });
      await store.put(Buffer.from('Subject: a\r\n\r\na\r\n'), { policy: 'default' });
      await store.put(Buffer.from('Subject: b\r\n\r\nb\r\n'), { policy: 'default' });
      writeFileSync(path.join(dir, PROTECTED_FILE_NAME), '{"entries":[]}\n');
      writeFileSync(path.join(dir, 'README.json'), '{}');
      writeFileSync(path.join(dir, 'abcdef0123456789.json.1a2b3c.tmp'), '{}');
      let now = 1_000_000;
      const m = new Metrics({ quarantineDir: dir, now: () => now });
      const entries = async () => sample(await m.registry.metrics(), 'postern_quarantine_entries');
      expect(await entries()).toBe(2);
      await store.put(Buffer.from('Subject: c\r\n\r\nc\r\n'), { policy: 'default' });
      // within the interval: the last count, the directory is not listed again
      now += ADMIN_LIMITS.quarantineCountTtlMs - 1;
      expect(await entries()).toBe(2);
      now += 1;
      expect(await entries()).toBe(3);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('config reloads: both results from 0, the last success time moves only on success', async () => {
    const m = new Metrics();
    let text = await m.registry.metrics();
    expect(sample(text, 'postern_config_reloads_total{result="success"}')).toBe(0);
    expect(sample(text, 'postern_config_reloads_total{result="failure"}')).toBe(0);
    const started = sample(text, 'postern_config_last_reload_success_timestamp_seconds')!;
    expect(Math.abs(started - Date.now() / 1000)).toBeLessThan(5);
    await new Promise((r) => setTimeout(r, 20));
    m.configReloaded(false);
    text = await m.registry.metrics();
    expect(sample(text, 'postern_config_reloads_total{result="failure"}')).toBe(1);
    expect(sample(text, 'postern_config_last_reload_success_timestamp_seconds')).toBe(started);
    m.configReloaded(true);
    text = await m.registry.metrics();
    expect(sample(text, 'postern_config_reloads_total{result="success"}')).toBe(1);
    expect(sample(text, 'postern_config_last_reload_success_timestamp_seconds')!).toBeGreaterThan(started);
  });

  it('blocked addresses by reason, read when scraped (expired ones not counted); auto-blocks counted', async () => {
    const m = new Metrics();
    const now = Date.now();
    let entries = [
      { address: '192.0.2.1', until: now + 60_000, reason: 'login_failures' as const, strikes: 1 },
      { address: '192.0.2.2', until: now + 60_000, reason: 'login_failures' as const, strikes: 2 },
      { address: '192.0.2.3', until: now - 1, reason: 'rule' as const, strikes: 1 },
      { address: '192.0.2.4', until: now + 60_000, reason: 'manual' as const, strikes: 0 },
    ];
    m.blockList(() => entries);
    m.autoBlocked(entries[0]!);
    m.autoBlocked(entries[1]!);
    let text = await m.registry.metrics();
    expect(sample(text, 'postern_blocked_addresses{reason="login_failures"}')).toBe(2);
    expect(sample(text, 'postern_blocked_addresses{reason="manual"}')).toBe(1);
    expect(sample(text, 'postern_blocked_addresses{reason="rule"}')).toBeUndefined();
    expect(sample(text, 'postern_auto_blocks_total{reason="login_failures"}')).toBe(2);
    entries = [];
    text = await m.registry.metrics();
    expect(text).not.toMatch(/^postern_blocked_addresses\{/m);
  });

  it('edge state: up 1 while it answers, 0 during a Redis outage, outages counted; nothing without a source', async () => {
    const m = new Metrics();
    let text = await m.registry.metrics();
    expect(text).not.toMatch(/^postern_edge_state_up\{/m);
    let health = { backend: 'redis' as const, connected: true, downSince: null as string | null, outages: 0, dropped: 0 };
    m.edgeState(() => health);
    text = await m.registry.metrics();
    expect(sample(text, 'postern_edge_state_up{backend="redis"}')).toBe(1);
    expect(sample(text, 'postern_edge_state_outages{backend="redis"}')).toBe(0);
    health = { ...health, connected: false, downSince: new Date().toISOString(), outages: 1 };
    text = await m.registry.metrics();
    expect(sample(text, 'postern_edge_state_up{backend="redis"}')).toBe(0);
    expect(sample(text, 'postern_edge_state_outages{backend="redis"}')).toBe(1);
  });

  it('content-hash verdict hits: counted from message.inspected lines with cached: "content", also as clean inspections', async () => {
    const m = new Metrics();
    const { lines, base } = arrayLogger();
    const l = testListener({ name: 'imaps', protocol: 'imap' });
    const log = countingLog(base, l, m);
    log.info({ event: 'message.inspected', uid: 1, verdict: 'clean', rules: [], cached: 'content' }, 'message inspected');
    log.info({ event: 'message.inspected', uid: 2, verdict: 'clean', rules: [] }, 'message inspected');
    log.info(
      { event: 'message.inspected', uid: 3, verdict: 'changed', rules: [{ rule: 'filenames[0]', action: 'strip' }], cached: 'other' },
      'message inspected',
    );
    log.info({ event: 'session.open', cached: 'content' }, 'not an inspection');
    const text = await m.registry.metrics();
    expect(sample(text, 'postern_content_verdict_hits_total{listener="imaps",protocol="imap"}')).toBe(1);
    expect(sample(text, 'postern_messages_inspected_total{listener="imaps",protocol="imap",verdict="clean"}')).toBe(2);
    expect(sample(text, 'postern_messages_inspected_total{listener="imaps",protocol="imap",verdict="changed"}')).toBe(1);
    expect(lines).toHaveLength(4);
  });

  it('downloads served from the verdict store: counted from message.served lines with from: "store", not as inspections', async () => {
    const m = new Metrics();
    const { lines, base } = arrayLogger();
    const log = countingLog(base, testListener({ name: 'pop3s', protocol: 'pop3' }), m);
    log.info({ event: 'message.served', msgno: 1, from: 'store', bytes: 10, bytesOut: 10, verdict: 'clean' }, 'message served on its stored verdict');
    log.info({ event: 'message.served', msgno: 2, from: 'store', bytes: 10, bytesOut: 10, verdict: 'clean' }, 'message served on its stored verdict');
    log.info({ event: 'message.served', msgno: 3, from: 'elsewhere', verdict: 'clean' }, 'not from the store');
    log.info({ event: 'message.inspected', msgno: 4, from: 'store', verdict: 'clean', rules: [] }, 'an inspection');
    const text = await m.registry.metrics();
    expect(sample(text, 'postern_verdict_store_served_total{listener="pop3s",protocol="pop3"}')).toBe(2);
    expect(sample(text, 'postern_messages_inspected_total{listener="pop3s",protocol="pop3",verdict="clean"}')).toBe(1);
    expect(lines).toHaveLength(4);
  });

  it('collector passes by account and result, messages by outcome, from the collector.pass log lines', async () => {
    const m = new Metrics();
    const { lines, base } = arrayLogger();
    const log = countingCollectorLog(base, m);
    const counts = { listed: 5, fetched: 4, delivered: 3, deferred: 1, failed: 0, held: 0, deleted: 3, backlog: 1 };
    log.info({ event: 'collector.pass', account: 'shop', result: 'ok', ...counts }, 'collector pass done');
    log.warn({ event: 'collector.pass', account: 'shop', result: 'error', ...counts, delivered: 0, failed: 2 }, 'collector pass failed');
    log.info({ event: 'collector.message', account: 'shop', result: 'ok' }, 'not a pass');
    const text = await m.registry.metrics();
    expect(sample(text, 'postern_collector_passes_total{account="shop",result="ok"}')).toBe(1);
    expect(sample(text, 'postern_collector_passes_total{account="shop",result="error"}')).toBe(1);
    expect(sample(text, 'postern_collector_messages_total{account="shop",outcome="delivered"}')).toBe(3);
    expect(sample(text, 'postern_collector_messages_total{account="shop",outcome="failed"}')).toBe(2);
    expect(sample(text, 'postern_collector_messages_total{account="shop",outcome="deleted"}')).toBe(6);
    // the lines still reach the log, unchanged
    expect(lines).toHaveLength(3);
    expect(JSON.parse(lines[1]!)).toMatchObject({ level: 'warn', event: 'collector.pass', failed: 2 });
    // child loggers of the tapped logger are the base logger's (the collector logs on the logger it is given)
    expect(typeof log.child).toBe('function');
  });

  it('scanner health: a reload’s new scanner replaces the source of the same engine', async () => {
    const m = new Metrics();
    m.scannerHealth('clamd', () => [{ endpoint: 'old:3310', state: 'down' }] as never);
    m.scannerHealth('clamd', () => [{ endpoint: 'new:3310', state: 'up' }] as never);
    expect(m.scanners()).toHaveLength(1);
    const text = await m.registry.metrics();
    expect(text).toContain('postern_scanner_endpoint_up{engine="clamd",endpoint="new:3310",state="up"} 1');
    expect(text).not.toContain('old:3310');
  });
});
