/**
 * The scripted fake server itself (test/harness/scripted-server.ts): what the fault tests rely on it
 * to record and to do, checked with plain sockets.
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { serverPool, startScriptedServer } from './scripted-server.js';
import { selfSignedCert, type TempDir, tempDir } from './util.js';

let dir: TempDir;
let cert: { certFile: string; keyFile: string };
const servers = serverPool();
const start = servers.start;

beforeAll(async () => {
  dir = await tempDir('postern-scripted-');
  cert = await selfSignedCert(dir.path);
});
afterEach(async () => {
  await servers.closeAll();
});
afterAll(async () => {
  await dir?.remove();
});

/** A plain client that collects what it receives as text. */
async function client(port: number): Promise<{ sock: net.Socket; text: () => string; closed: Promise<void> }> {
  const sock = net.connect(port, '127.0.0.1');
  let text = '';
  sock.on('data', (d) => (text += d.toString('latin1')));
  sock.on('error', () => undefined);
  const closed = new Promise<void>((r) => sock.on('close', () => r()));
  await new Promise((r) => sock.once('connect', r));
  return { sock, text: () => text, closed };
}

async function until(cond: () => boolean, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('scripted server', () => {
  it('greets, records every line per connection (CR dropped), answers through the connection', async () => {
    const s = await start({ greeting: 'hello\r\n', onLine: (line, c) => c.write(`echo ${c.id} ${line}\r\n`) });
    const a = await client(s.port);
    const b = await client(s.port);
    a.sock.write('one\r\ntw');
    a.sock.write('o\n');
    b.sock.write('three\r\n');
    await until(() => a.text().includes('echo 1 two') && b.text().includes('echo 2 three'));
    expect(a.text()).toBe('hello\r\necho 1 one\r\necho 1 two\r\n');
    expect(s.lines).toEqual([
      { conn: 1, tls: false, line: 'one' },
      { conn: 1, tls: false, line: 'two' },
      { conn: 2, tls: false, line: 'three' },
    ]);
    expect(s.connections()).toBe(2);
    expect(s.open()).toBe(2);
    a.sock.destroy();
    await until(() => s.open() === 1);
  });

  it('upgrade: the answer and the injected bytes arrive in plaintext before the handshake; later lines are recorded as TLS; plaintext read after the answered line is recorded, never answered', async () => {
    const s = await start({
      starttls: cert,
      onLine: (line, c) => {
        if (line === 'STARTTLS') c.upgrade('OK go\r\n', { inject: 'FORGED\r\n' });
        else c.write(`${c.tls ? 'secure' : 'plain'} ${line}\r\n`);
      },
    });
    const c = await client(s.port);
    c.sock.write('A\r\nSTARTTLS\r\nSMUGGLED\r\ntail');
    await until(() => c.text().includes('FORGED\r\n'));
    expect(c.text()).toBe('plain A\r\nOK go\r\nFORGED\r\n');
    const t = tls.connect({ socket: c.sock, ca: readCa(), servername: 'localhost' });
    await new Promise((r) => t.once('secureConnect', r));
    let secureText = '';
    t.on('data', (d) => (secureText += d.toString()));
    t.write('B\r\n');
    await until(() => secureText.includes('secure B'));
    expect(s.handshakes()).toBe(1);
    expect(s.lines.map((l) => `${l.tls ? 'tls' : 'plain'} ${l.line}`)).toEqual(['plain A', 'plain STARTTLS', 'plain SMUGGLED', 'plain tail', 'tls B']);
    expect(s.open()).toBe(1);
    t.destroy();
    await until(() => s.open() === 0);
  });

  it('implicit TLS: onConnect runs after the handshake, with the tls.createServer options given', async () => {
    const s = await start({ tls: { cert: readCa(), key: readKey() }, onConnect: (c) => c.end(`hi ${c.tls}\n`) });
    const t = tls.connect({ host: '127.0.0.1', port: s.port, ca: readCa(), servername: 'localhost' });
    let text = '';
    t.on('data', (d) => (text += d.toString()));
    await new Promise((r) => t.once('end', r));
    expect(text).toBe('hi true\n');
    expect(s.handshakes()).toBe(1);
    t.destroy();
    await until(() => s.open() === 0);
  });

  it('a separator other than LF (clamd z-commands end with NUL)', async () => {
    const s = await start({ separator: '\0', onLine: (line, c) => line === 'zPING' && c.end('PONG\0') });
    const c = await client(s.port);
    c.sock.write('zPING\0');
    await c.closed;
    expect(c.text()).toBe('PONG\0');
    expect(s.lines).toEqual([{ conn: 1, tls: false, line: 'zPING' }]);
  });

  it('read: false never reads; close() destroys what is still open', async () => {
    const s = await start({ read: false });
    const c = await client(s.port);
    c.sock.write('ignored\r\n');
    await until(() => s.open() === 1);
    await new Promise((r) => setTimeout(r, 50));
    expect(s.lines).toEqual([]);
    await s.close();
    await c.closed;
  });

  it('a taken port: listening rejects', async () => {
    const s = await start({ onConnect: (c) => c.destroy() });
    await expect(startScriptedServer({ port: s.port })).rejects.toThrow(/EADDRINUSE/);
  });
});

function readCa(): Buffer {
  return readFileSync(cert.certFile);
}
function readKey(): Buffer {
  return readFileSync(cert.keyFile);
}
