/** The clamd harness itself: private config, both listeners, and a port clash detected fast. */

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { type ClamdHandle, clamdCommand, startClamd } from '../harness/clamd.js';
import { startScriptedServer } from '../harness/scripted-server.js';

let clamd: ClamdHandle | undefined;
afterAll(async () => {
  await clamd?.stop();
});

it('starts a private clamd answering PING on TCP and the unix socket, from the project database', async () => {
  clamd = await startClamd();
  expect(await clamdCommand({ port: clamd.port }, 'PING')).toBe('PONG\0');
  expect(await clamdCommand({ socket: clamd.socket }, 'PING')).toBe('PONG\0');
  expect(await clamdCommand({ port: clamd.port }, 'VERSION')).toMatch(/^ClamAV 1\.\d+\.\d+/);
  const conf = readFileSync(join(clamd.dir, 'clamd.conf'), 'utf8');
  expect(conf).toMatch(/^AlertExceedsMax yes$/m);
  expect(conf).not.toMatch(/^User /m);
  expect(clamd.log()).toMatch(/Loaded 2 signatures/);
});

it('a port taken while clamd is down: restart() fails fast with a bind error, then works once the port is free', async () => {
  await clamd!.kill();
  const squatter = await startScriptedServer({ port: clamd!.port, onConnect: (c) => c.destroy() });
  const t0 = Date.now();
  await expect(clamd!.restart()).rejects.toThrow(/could not bind/);
  expect(Date.now() - t0).toBeLessThan(15_000);
  expect(clamd!.running()).toBe(false);
  await squatter.close();
  await clamd!.restart();
  expect(await clamdCommand({ port: clamd!.port }, 'PING')).toBe('PONG\0');
}, 30_000);
