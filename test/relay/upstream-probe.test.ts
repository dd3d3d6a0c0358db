/**
 * The capability probe on real sockets (src/relay/upstream-probe.ts) against scripted servers: what it
 * sends (never a credential), STARTTLS with bytes injected after the OK, the certificate verified, the
 * deadline, a refused connection; and the schedule: nothing offered until a probe succeeds, retried
 * after a failure, the result kept when a later probe fails, a failure logged once, nothing after close().
 * (The success paths against real Dovecot, IMAP and POP3, are in test/integration/oauth2-relay.test.ts.)
 */
import { readFileSync } from 'node:fs';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ListenerConfig, StaticUpstream, UpstreamTlsMode } from '../../src/config/types.js';
import { ErrorCodes } from '../../src/errors.js';
import { createLogger } from '../../src/log/logger.js';
import { probeUpstream, startUpstreamProbes } from '../../src/relay/upstream-probe.js';
import { type ScriptedServer, startScriptedServer } from '../harness/scripted-server.js';
import { freePort, selfSignedCert, sleep, type TempDir, tempDir, waitFor } from '../harness/util.js';
import { testListener } from '../helpers/scripted-host.js';

let dir: TempDir;
let cert: { certFile: string; keyFile: string };
const servers: ScriptedServer[] = [];

beforeAll(async () => {
  dir = await tempDir('postern-probe-');
  cert = await selfSignedCert(dir.path);
});

afterAll(async () => {
  await Promise.all(servers.map((s) => s.close()));
  await dir?.remove();
});

async function server(opts: Parameters<typeof startScriptedServer>[0]): Promise<ScriptedServer> {
  const s = await startScriptedServer(opts);
  servers.push(s);
  return s;
}

function listener(
  port: number,
  mode: UpstreamTlsMode = 'none',
  protocol: 'imap' | 'pop3' = 'imap',
  caFile?: string,
): ListenerConfig & { upstream: StaticUpstream } {
  return testListener({
    protocol,
    upstream: { kind: 'static', host: 'localhost', port, tls: { mode, verify: true, caFile, minVersion: 'TLSv1.2' } },
  }) as ListenerConfig & { upstream: StaticUpstream };
}

/** An IMAP server answering CAPABILITY with `caps` and LOGOUT with BYE. */
function imapServer(caps: string, extra: Parameters<typeof startScriptedServer>[0] = {}) {
  return server({
    greeting: '* OK ready\r\n',
    onLine(line, conn) {
      const [tag, cmd] = line.split(' ');
      if (cmd === 'CAPABILITY') conn.write(`* CAPABILITY ${caps}\r\n${tag} OK done\r\n`);
      else if (cmd === 'LOGOUT') conn.end(`* BYE bye\r\n${tag} OK done\r\n`);
      else conn.write(`${tag} BAD what\r\n`);
    },
    ...extra,
  });
}

describe('probeUpstream', () => {
  it('IMAP without TLS: CAPABILITY, LOGOUT, and nothing else is sent', async () => {
    const s = await imapServer('IMAP4rev1 AUTH=PLAIN AUTH=OAUTHBEARER AUTH=XOAUTH2');
    expect(await probeUpstream(listener(s.port))).toEqual(['XOAUTH2', 'OAUTHBEARER']);
    await waitFor(() => s.lines.length === 2 || undefined);
    expect(s.lines.map((l) => l.line)).toEqual(['p1 CAPABILITY', 'p4 LOGOUT']);
  });

  it('STARTTLS: what the upstream injects after its OK is not read; only the list after TLS counts; the certificate is verified', async () => {
    const s = await server({
      greeting: '* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=XOAUTH2 AUTH=OAUTHBEARER] ready\r\n',
      starttls: cert,
      onLine(line, conn) {
        const [tag, cmd] = line.split(' ');
        if (cmd === 'STARTTLS') conn.upgrade(`${tag} OK go\r\n`, { inject: '* CAPABILITY IMAP4rev1 AUTH=XOAUTH2 AUTH=OAUTHBEARER\r\np3 OK injected\r\n' });
        else if (cmd === 'CAPABILITY') conn.write(`* CAPABILITY IMAP4rev1 AUTH=OAUTHBEARER\r\n${tag} OK done\r\n`);
        else if (cmd === 'LOGOUT') conn.end(`${tag} OK bye\r\n`);
      },
    });
    expect(await probeUpstream(listener(s.port, 'starttls', 'imap', cert.certFile))).toEqual(['OAUTHBEARER']);
    await waitFor(() => s.lines.length === 3 || undefined);
    expect(s.lines).toEqual([
      { conn: 1, tls: false, line: 'p2 STARTTLS' },
      { conn: 1, tls: true, line: 'p3 CAPABILITY' },
      { conn: 1, tls: true, line: 'p4 LOGOUT' },
    ]);
    // without the CA the upstream's certificate is not trusted: no result
    await expect(probeUpstream(listener(s.port, 'starttls'))).rejects.toMatchObject({ code: ErrorCodes.UPSTREAM_TLS });
  });

  it('POP3 with implicit TLS: CAPA, QUIT', async () => {
    const s = await server({
      greeting: '+OK ready\r\n',
      tls: { cert: readFileSync(cert.certFile), key: readFileSync(cert.keyFile) },
      onLine(line, conn) {
        if (line === 'CAPA') conn.write('+OK\r\nUSER\r\nSASL PLAIN XOAUTH2\r\n.\r\n');
        else if (line === 'QUIT') conn.end('+OK bye\r\n');
      },
    });
    expect(await probeUpstream(listener(s.port, 'implicit', 'pop3', cert.certFile))).toEqual(['XOAUTH2']);
    await waitFor(() => s.lines.length === 2 || undefined);
    expect(s.lines.map((l) => `${l.tls} ${l.line}`)).toEqual(['true CAPA', 'true QUIT']);
  });

  it('a silent server: the deadline; a refused connection; a server that hangs up', async () => {
    const silent = await server({ greeting: null });
    await expect(probeUpstream(listener(silent.port), { timeoutMs: 300 })).rejects.toMatchObject({ code: ErrorCodes.GREETING_TIMEOUT });
    await expect(probeUpstream(listener(await freePort()))).rejects.toMatchObject({ code: ErrorCodes.UPSTREAM_REFUSED });
    const rude = await server({ greeting: '* OK hi\r\n', onLine: (_l, conn) => conn.destroy() });
    await expect(probeUpstream(listener(rude.port))).rejects.toMatchObject({ code: ErrorCodes.UPSTREAM_CLOSED });
    const preauth = await server({ greeting: '* PREAUTH logged in\r\n' });
    await expect(probeUpstream(listener(preauth.port))).rejects.toMatchObject({ code: ErrorCodes.UPSTREAM_PREAUTH });
  });
});

describe('startUpstreamProbes', () => {
  function logSink() {
    const lines: Array<Record<string, unknown>> = [];
    const stream = new Writable({
      write(c, _e, cb) {
        for (const l of String(c).split('\n').filter(Boolean)) lines.push(JSON.parse(l));
        cb();
      },
    });
    return { log: createLogger({ level: 'debug' }, stream), lines };
  }

  it('nothing until a probe succeeds; retried after failures (logged once); kept when a later probe fails; refreshed; stopped by close()', async () => {
    let mode: 'down' | 'up' | 'xoauth2' = 'down';
    const s = await server({
      greeting: null,
      onConnect(conn) {
        if (mode === 'down') conn.destroy();
        else conn.write(`* OK [CAPABILITY IMAP4rev1 ${mode === 'up' ? 'AUTH=XOAUTH2 AUTH=OAUTHBEARER' : 'AUTH=XOAUTH2'}] hi\r\n`);
      },
      onLine(line, conn) {
        conn.end(`${line.split(' ')[0]} OK bye\r\n`);
      },
    });
    const l = listener(s.port);
    const routed = testListener({
      upstream: { kind: 'login-routed', port: s.port, tls: { mode: 'none', verify: true, minVersion: 'TLSv1.2' }, allow: ['x.test'], allowAnyHost: false },
    });
    const { log, lines } = logSink();
    const probes = startUpstreamProbes([l, routed], log, { retryMs: 40, refreshMs: 40, timeoutMs: 1000 });
    try {
      await probes.ready;
      expect(probes.mechanisms(l)).toBeNull();
      expect(probes.mechanisms(routed)).toBeNull();
      await waitFor(() => s.connections() >= 3 || undefined, { timeoutMs: 5000 });
      expect(probes.mechanisms(l)).toBeNull();
      // one warning however often it failed
      expect(lines.filter((x) => x.event === 'upstream.capabilities' && x.err)).toHaveLength(1);
      expect(lines[0]).toMatchObject({
        event: 'upstream.capabilities',
        reason: 'probe',
        listener: 'test',
        upstream: `localhost:${s.port}`,
        err: { code: ErrorCodes.UPSTREAM_CLOSED },
      });

      mode = 'up';
      await waitFor(() => probes.mechanisms(l) || undefined, { timeoutMs: 5000 });
      expect([...probes.mechanisms(l)!]).toEqual(['XOAUTH2', 'OAUTHBEARER']);
      mode = 'down';
      const n = s.connections();
      await waitFor(() => s.connections() >= n + 2 || undefined, { timeoutMs: 5000 });
      expect([...probes.mechanisms(l)!]).toEqual(['XOAUTH2', 'OAUTHBEARER']);
      mode = 'xoauth2';
      await waitFor(() => (probes.mechanisms(l)?.size === 1 ? true : undefined), { timeoutMs: 5000 });
      expect([...probes.mechanisms(l)!]).toEqual(['XOAUTH2']);
      expect(lines.filter((x) => x.event === 'upstream.capabilities' && !x.err).map((x) => x.capabilities)).toEqual([['XOAUTH2', 'OAUTHBEARER'], ['XOAUTH2']]);
    } finally {
      probes.close();
    }
    const after = s.connections();
    await sleep(200);
    expect(s.connections()).toBe(after);
  });
});
