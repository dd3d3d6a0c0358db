/**
 * A real third-party POP3 client for integration tests: python3's poplib driven by a list of
 * operations, its results returned as JSON (one entry per operation, or { error } for a -ERR).
 * Operations: ['stat'], ['list'], ['list1', n], ['retr', n], ['top', n, lines], ['dele', n],
 * ['noop'], ['quit']. RETR/TOP give { status, octets, msg (base64 of the lines poplib returns,
 * CRLF-joined) }.
 */
import { run } from '../harness/util.js';

const PY_CLIENT = String.raw`
import base64, json, poplib, sys
a = json.loads(sys.argv[1])
p = poplib.POP3('127.0.0.1', a['port'], timeout=20)
p.user(a['user']); p.pass_(a['password'])
out = []
for op in a['ops']:
    try:
        if op[0] == 'stat': out.append(list(p.stat()))
        elif op[0] == 'list':
            resp, lines, _ = p.list()
            out.append([l.decode() for l in lines])
        elif op[0] == 'list1': out.append(p.list(op[1]).decode('latin1'))
        elif op[0] in ('retr', 'top'):
            resp, lines, octets = p.retr(op[1]) if op[0] == 'retr' else p.top(op[1], op[2])
            out.append({'status': resp.decode('latin1'), 'octets': octets, 'msg': base64.b64encode(b'\r\n'.join(lines) + b'\r\n').decode()})
        elif op[0] == 'dele': out.append(p.dele(op[1]).decode('latin1'))
        elif op[0] == 'noop': out.append(p.noop().decode('latin1'))
        elif op[0] == 'quit': out.append(p.quit().decode('latin1'))
    except poplib.error_proto as e:
        out.append({'error': e.args[0].decode('latin1')})
print(json.dumps(out))
`;

export type PyOut = Array<[number, number] | string[] | string | { status: string; octets: number; msg: string } | { error: string }>;

/** Runs the operations in one poplib session (USER/PASS login) on 127.0.0.1:`port`. */
export async function poplib(port: number, user: string, password: string, ops: Array<[string, ...number[]]>): Promise<PyOut> {
  const r = await run('python3', ['-c', PY_CLIENT, JSON.stringify({ port, user, password, ops })], { timeoutMs: 25_000 });
  if (r.code !== 0) throw new Error(`poplib client failed: ${r.stderr.toString()}`);
  return JSON.parse(r.stdout.toString()) as PyOut;
}

/** The message bytes of a RETR/TOP result. */
export const msgOf = (x: PyOut[number]) => Buffer.from((x as { msg: string }).msg, 'base64');
