/**
 * The signature version that keys the verdict cache (src/inspect/signatures.ts): clamd's VERSION
 * answer, refreshed; a malformed, oversized or missing answer gives no version (the store unused).
 * A scripted clamd on loopback answers `zVERSION\0` with what each test says.
 */
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { ClamdSignatures, clamdVersion } from '../../src/inspect/signatures.js';

const servers: net.Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await new Promise((r) => s.close(r));
});

/** A fake clamd: every connection that sends zVERSION\0 gets `answer()` (null: no answer, the connection stays open). */
async function fakeClamd(answer: () => Buffer | null): Promise<number> {
  const srv = net.createServer((sock) => {
    let got = Buffer.alloc(0);
    sock.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      if (got.toString('latin1') === 'zVERSION\0') {
        const a = answer();
        if (a) sock.end(a);
      }
    });
    sock.on('error', () => {});
  });
  servers.push(srv);
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return (srv.address() as net.AddressInfo).port;
}

describe('clamd signature version', () => {
  it('reads the VERSION answer up to its NUL', async () => {
    const port = await fakeClamd(() => Buffer.from('ClamAV 1.0.7/27473/Sat Nov 28 09:32:04 2026\0'));
    expect(await clamdVersion({ host: '127.0.0.1', port })).toBe('ClamAV 1.0.7/27473/Sat Nov 28 09:32:04 2026');
  });

  it('an answer that is not ClamAV ..., one too long, no answer and no server give no version', async () => {
    const bad = await fakeClamd(() => Buffer.from('UNKNOWN COMMAND\0'));
    expect(await clamdVersion({ host: '127.0.0.1', port: bad })).toBeNull();
    const long = await fakeClamd(() => Buffer.from(`ClamAV ${'9'.repeat(5000)}`));
    expect(await clamdVersion({ host: '127.0.0.1', port: long })).toBeNull();
    const silent = await fakeClamd(() => null);
    expect(await clamdVersion({ host: '127.0.0.1', port: silent }, 200)).toBeNull();
    const gone = await fakeClamd(() => null);
    await new Promise((r) => servers.pop()!.close(r));
    expect(await clamdVersion({ host: '127.0.0.1', port: gone })).toBeNull();
  });

  it('ClamdSignatures: unknown until an endpoint answered, then clamd:<versions>; a new database is a new version; an outage keeps the last one', async () => {
    let db = 27473;
    let up = true;
    const port = await fakeClamd(() => (up ? Buffer.from(`ClamAV 1.0.7/${db}/Sat Nov 28 09:32:04 2026\0`) : Buffer.from('nope\0')));
    const s = new ClamdSignatures([{ host: '127.0.0.1', port }], 60_000);
    expect(s.current()).toBeNull();
    await s.ready;
    expect(s.current()).toBe('clamd:ClamAV 1.0.7/27473/Sat Nov 28 09:32:04 2026');
    db = 27474;
    await s.refresh();
    expect(s.current()).toBe('clamd:ClamAV 1.0.7/27474/Sat Nov 28 09:32:04 2026');
    up = false;
    await s.refresh();
    expect(s.current()).toBe('clamd:ClamAV 1.0.7/27474/Sat Nov 28 09:32:04 2026');
    s.close();
  });

  it('several endpoints: the sorted set of their versions', async () => {
    const a = await fakeClamd(() => Buffer.from('ClamAV 1.0.7/2/x\0'));
    const b = await fakeClamd(() => Buffer.from('ClamAV 1.0.7/1/x\0'));
    const s = new ClamdSignatures(
      [
        { host: '127.0.0.1', port: a },
        { host: '127.0.0.1', port: b },
      ],
      60_000,
    );
    await s.ready;
    expect(s.current()).toBe('clamd:ClamAV 1.0.7/1/x|ClamAV 1.0.7/2/x');
    s.close();
  });
});
