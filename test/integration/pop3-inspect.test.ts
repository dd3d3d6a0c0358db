import { it } from 'vitest';
import { startDovecot } from '../harness/dovecot.js';
import { RawConn, sleep } from '../harness/util.js';
it('probe', async () => {
  const d = await startDovecot();
  for (let i = 0; i < 3; i++) await d.deliver('alice', `From: a@b\r\nSubject: m${i}\r\n\r\nbody ${i}\r\n`);
  const c = await RawConn.connect(d.ports.pop3);
  await c.waitFor('+OK');
  c.write('USER alice\r\nPASS alicepass\r\n');
  await sleep(300);
  for (const cmd of ['RETR 1x', 'RETR 01', 'RETR +1', 'RETR 1 junk', 'TOP 1', 'TOP 1 -1', 'TOP 1 x', 'DELE 1x', 'DELE 1 2', 'DELE 1\t', 'DELE  2', 'LIST', 'STAT']) {
    c.clear(); c.write(cmd + '\r\n'); await sleep(150);
    console.log(JSON.stringify(cmd), '=>', JSON.stringify(c.text.slice(0, 200)));
  }
  c.close(); await d.stop();
});
