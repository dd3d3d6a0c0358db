import net from 'node:net';
import { it } from 'vitest';
import { startDovecot } from '../harness/dovecot.js';

async function raw(port: number, chunks: string[], wait = 300): Promise<string> {
  const s = net.connect(port, '127.0.0.1');
  let out = '';
  s.on('data', (d) => (out += d.toString('latin1')));
  await new Promise((r) => s.once('connect', r));
  await new Promise((r) => setTimeout(r, 100));
  for (const c of chunks) { s.write(c); await new Promise((r) => setTimeout(r, 60)); }
  await new Promise((r) => setTimeout(r, wait));
  s.destroy();
  return out;
}

it('probe', async () => {
  const d = await startDovecot();
  await d.deliver('alice', 'Subject: hi\r\n\r\nbody one\r\n');
  const L = 'a LOGIN alice alicepass\r\nb SELECT INBOX\r\n';
  const probes: string[][] = (JSON.parse(process.env.PROBES ?? '[]') as string[][]);
  for (const p of probes) {
    const out = await raw(d.ports.imap, [L, ...p]);
    console.log('=== ' + JSON.stringify(p) + '\n' + out.split('\r\n').filter(l => !/^\* (OK \[|FLAGS|\d+ EXISTS|\d+ RECENT)/.test(l)).slice(2).join('\n'));
  }
  await d.stop();
}, 60000);
