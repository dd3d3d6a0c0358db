// Harness B of the session fuzzer: the client-side mutations of harness A sent over a raw socket to a
// running postern whose upstream is a real Dovecot (test/fuzz/session-dovecot.test.ts starts both).
// Only client mutations apply (the real server is honest); the invariant is the same: no byte of the
// protected payloads reaches the client. Bounded per step (quiet window, max wait) and per campaign.
import net from 'node:net';
import { asBuf, asText, findLeak } from './session-common.mjs';
import { classify, generateCase, slug } from './session-harness.mjs';

/** The client chunks of a step (saved transcripts write a single chunk as a string). */
const chunksOf = (s) => (Array.isArray(s.c) ? s.c : s.c ? [s.c] : []);

const LOGIN = { imap: 'L0 LOGIN alice alicepass\r\n', pop3: 'USER bob\r\nPASS bobpass\r\n' };

/** Cases for a real server: client mutations only; POP3 never QUITs (a QUIT would commit DELEs to the shared maildrop). */
export function generateSocketCase(seed, index, opts = {}) {
  const k = generateCase(seed, index, { ...opts, mode: 'client' });
  if (k.proto === 'pop3') {
    k.steps = k.steps.map((s) => (s.c ? { ...s, c: chunksOf(s).map((x) => x.replace(/(^|\n)QUIT\r?\n/gi, '$1NOOP\r\n')) } : s)).filter((s) => s.c);
  }
  k.steps = k.steps.filter((s) => s.c);
  return k;
}

/**
 * Runs one case over a socket: login, then each client step (its chunks back to back), waiting after
 * each step until the connection has been quiet for `quietMs` (at most `maxStepMs`).
 */
export async function runSocketCase(ports, kase, opts = {}) {
  const quietMs = opts.quietMs ?? 60;
  const maxStepMs = opts.maxStepMs ?? 1500;
  const sock = net.connect(ports[kase.proto], '127.0.0.1');
  sock.setNoDelay(true);
  const received = [];
  const transcript = [];
  let last = Date.now();
  let closed = false;
  const rec = (dir, b) => {
    const t = asText(b);
    const l = transcript[transcript.length - 1];
    if (l && l[0] === dir) l[1] += t;
    else transcript.push([dir, t]);
  };
  sock.on('data', (d) => {
    received.push(d);
    rec('postern>client', d);
    last = Date.now();
  });
  sock.on('error', () => undefined);
  sock.on('close', () => (closed = true));
  const waitQuiet = async (first) => {
    const start = Date.now();
    const before = received.length;
    for (;;) {
      await new Promise((r) => setTimeout(r, 10));
      const now = Date.now();
      if (closed || now - start > maxStepMs) return;
      // wait for a first answer (up to a third of the step budget), then for a quiet window
      if (received.length === before && now - start < (first ? maxStepMs : maxStepMs / 3)) continue;
      if (now - last >= quietMs) return;
    }
  };
  await new Promise((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  await waitQuiet(true);
  const send = (text) => {
    if (closed) return;
    rec('client>postern', text);
    sock.write(asBuf(text));
  };
  if (!opts.rawLogin) send(LOGIN[kase.proto]);
  // the login answer (postern logs in upstream first): wait for it explicitly
  const answered = opts.rawLogin ? /./ : kase.proto === 'imap' ? /\r\nL0 (OK|NO|BAD)/ : /\r\n\+OK\r\n(\+OK|-ERR)/;
  const loginDeadline = Date.now() + (opts.loginMs ?? 10_000);
  while (!closed && Date.now() < loginDeadline && !answered.test(Buffer.concat(received).toString('latin1'))) await new Promise((r) => setTimeout(r, 10));
  const loginText = Buffer.concat(received).toString('latin1');
  const loggedIn = kase.proto === 'imap' ? /\r\nL0 OK/.test(loginText) : /\r\n\+OK\r\n\+OK/.test(loginText);
  if (!opts.rawLogin) await waitQuiet(false);
  // IMAP: a step is done once every tag it sent has its tagged answer (or after a quiet window)
  const tagsOf = (text) =>
    text
      .split(/\r?\n|\r/)
      .map((l) => /^([A-Za-z0-9.]+) /.exec(l)?.[1])
      .filter(Boolean);
  for (const s of kase.steps) {
    if (closed) break;
    // saved transcripts write a single chunk as a string
    const chunks = chunksOf(s);
    for (const c of chunks) send(c);
    const tags = kase.proto === 'imap' ? tagsOf(chunks.join('')) : [];
    const stepStart = Date.now();
    for (;;) {
      await new Promise((r) => setTimeout(r, 5));
      const text = Buffer.concat(received).toString('latin1');
      const now = Date.now();
      if (closed || now - stepStart > maxStepMs) break;
      if (tags.length && tags.every((t) => text.includes(`\r\n${t} OK`) || text.includes(`\r\n${t} NO`) || text.includes(`\r\n${t} BAD`))) break;
      if (now - last >= quietMs && now - stepStart >= quietMs) break;
    }
  }
  // anything still on its way (answers to smuggled commands come late)
  await waitQuiet(false);
  sock.destroy();
  const bytes = Buffer.concat(received);
  return { leak: findLeak(bytes), loggedIn, closedByPostern: closed, transcript };
}

async function minimizeSocket(ports, kase, budget, deadline) {
  let best = JSON.parse(JSON.stringify(kase));
  let runs = 0;
  const leaks = async (k) => {
    runs++;
    return (await runSocketCase(ports, k)).leak !== null;
  };
  for (let i = best.steps.length - 1; i >= 0 && runs < budget && Date.now() < deadline; i--) {
    const k = JSON.parse(JSON.stringify(best));
    k.steps.splice(i, 1);
    if (await leaks(k)) best = k;
  }
  return best;
}

/**
 * Runs `cases` socket cases from `seed`, `concurrency` at a time, within `timeMs`; minimises the first
 * escape of each class (time permitting). Returns a report shaped like harness A's.
 */
export async function runSocketCampaign(ports, opts) {
  const t0 = Date.now();
  const report = { seed: opts.seed, casesRun: 0, byProto: {}, escapes: 0, classes: {}, loginFailures: 0, ms: 0 };
  let next = opts.start ?? 0;
  const end = next + opts.cases;
  const deadline = t0 + opts.timeMs;
  const found = [];
  const worker = async () => {
    while (next < end && Date.now() < deadline) {
      const i = next++;
      const kase = generateSocketCase(opts.seed, i, { proto: opts.proto });
      let r;
      try {
        r = await runSocketCase(ports, kase, opts);
      } catch (err) {
        report.errors = [...(report.errors ?? []), `${kase.id}: ${err.message}`];
        continue;
      }
      report.casesRun++;
      const p = (report.byProto[kase.proto] ??= { cases: 0, escapes: 0 });
      p.cases++;
      if (!r.loggedIn) {
        report.loginFailures++;
        if ((report.loginFailureExamples ??= []).length < 3) report.loginFailureExamples.push(`${kase.id}: ${JSON.stringify(r.transcript.slice(-2))}`);
      }
      if (r.leak) {
        report.escapes++;
        p.escapes++;
        found.push({ kase, leak: r.leak, transcript: r.transcript });
      }
    }
  };
  await Promise.all(Array.from({ length: opts.concurrency ?? 6 }, worker));
  // classes: minimise one escape per unminimised label set, as time allows
  const minDeadline = t0 + opts.timeMs + (opts.minimizeMs ?? 15_000);
  for (const f of found) {
    let min = f.kase;
    const pre = classify(f.kase);
    if (!Object.values(report.classes).some((c) => c.rawClasses.has(pre)) && Date.now() < minDeadline)
      min = await minimizeSocket(ports, f.kase, 30, minDeadline);
    const name = classify(min);
    const existing = Object.values(report.classes).find((c) => c.rawClasses.has(pre));
    const entry = existing ?? (report.classes[name] ??= { count: 0, firstCase: f.kase.id, rawClasses: new Set(), repro: null });
    entry.rawClasses.add(pre);
    entry.count++;
    if (!entry.repro) {
      const rec = await runSocketCase(ports, min);
      entry.repro = {
        class: `real Dovecot: ${name}`,
        invariant: 'no byte of the protected payloads reaches the client',
        leak: rec.leak ?? f.leak,
        case: min,
        transcript: rec.leak ? rec.transcript : f.transcript,
      };
    }
  }
  for (const c of Object.values(report.classes)) c.rawClasses = [...c.rawClasses];
  report.ms = Date.now() - t0;
  return report;
}

export function formatSocketReport(report) {
  const lines = [
    `session fuzz against real Dovecot: seed ${report.seed}, ${report.casesRun} cases in ${(report.ms / 1000).toFixed(1)} s (${Object.entries(report.byProto)
      .map(([p, v]) => `${p} ${v.cases}`)
      .join(', ')}); escapes ${report.escapes} in ${Object.keys(report.classes).length} classes; login failures ${report.loginFailures}`,
  ];
  for (const [name, c] of Object.entries(report.classes)) {
    lines.push(`  [${c.count}] ${name} (first ${c.firstCase})`);
    if (c.repro) {
      lines.push(`      leak of ${c.repro.leak.payload}: ...${JSON.stringify(c.repro.leak.context.slice(-100))}`);
      for (const s of c.repro.case.steps) lines.push(`      step ${JSON.stringify(chunksOf(s).join(''))}`);
    }
  }
  for (const e of report.errors ?? []) lines.push(`  error: ${e}`);
  for (const e of report.loginFailureExamples ?? []) lines.push(`  login failed: ${e}`);
  return lines.join('\n');
}

export function socketReproFiles(report) {
  return Object.entries(report.classes)
    .filter(([, c]) => c.repro)
    .map(([name, c]) => ({
      name: `dovecot-${slug(name)}.json`,
      body:
        JSON.stringify(
          {
            ...c.repro,
            count: c.count,
            firstCase: c.firstCase,
            seed: report.seed,
            replay: 'test/fuzz/session-dovecot.test.ts replays it against real Dovecot',
          },
          null,
          1,
        ) + '\n',
    }));
}

// ------------------------------------------------------------------ model check

/**
 * A summary of an IMAP server's answers that matters for smuggling: the tagged completions in order
 * (tag and status), how many FETCH responses carrying a literal came before each, untagged BAD and
 * continuation requests.
 */
export function answerSignature(bytes) {
  const out = [];
  let total = 0;
  let pos = 0;
  const s = bytes.toString('latin1');
  while (pos < s.length) {
    let line = '';
    let hadLiteral = false;
    // one response: lines joined across literals
    for (;;) {
      const nl = s.indexOf('\n', pos);
      if (nl === -1) {
        line += s.slice(pos);
        pos = s.length;
        break;
      }
      const part = s.slice(pos, nl + 1);
      pos = nl + 1;
      line += part;
      const m = /~?\{(\d+)\+?\}\r?\n$/.exec(part);
      if (!m) break;
      hadLiteral = true;
      pos += Number(m[1]);
    }
    if (line.startsWith('* ') && / FETCH \(/.test(line) && hadLiteral) total++;
    else if (line.startsWith('* BAD')) out.push('* BAD');
    else if (line.startsWith('+')) out.push('+');
    else if (!line.startsWith('*') && line.trim()) {
      const m = /^(\S+) (OK|NO|BAD)/.exec(line);
      out.push(m ? `${m[1]} ${m[2]}` : line.trim().slice(0, 20));
    }
  }
  // Dovecot runs some commands in parallel (a NOOP completes after a FETCH pipelined behind it), so
  // neither the order of completions nor which completion a FETCH came before is compared: the set of
  // completions and the number of FETCH responses carrying a literal are
  return `${total}F | ${out.sort().join(' | ')}`;
}

/** Cases for the model check: client mutations over IMAP, no APPEND/COPY/STORE (they change the mailbox). */
export function modelCheckCase(seed, index) {
  const k = generateSocketCase(seed, index, { proto: 'imap' });
  if (/APPEND|COPY|STORE|EXPUNGE|CLOSE|MOVE/i.test(k.steps.map((s) => chunksOf(s).join('')).join(''))) return null;
  return k;
}

/**
 * Sends a case's client bytes straight to a real IMAP server (no postern) and to the harness's upstream
 * model, and compares their answer signatures. Returns { same, real, model }.
 */
export async function compareWithModel(port, kase, ImapUpstream, opts = {}) {
  const login = `L0 LOGIN ${opts.user ?? 'bob'} ${opts.pass ?? 'bobpass'}\r\n`;
  const direct = await runSocketCase({ imap: port }, { ...kase, steps: [{ c: [login] }, ...kase.steps] }, { ...opts, rawLogin: true });
  const model = new ImapUpstream();
  model.connect();
  model.out.length = 0;
  model.receive(asBuf(login));
  for (const s of kase.steps) for (const c of chunksOf(s)) model.receive(asBuf(c));
  const realBytes = asBuf(
    direct.transcript
      .filter(([d]) => d === 'postern>client')
      .map(([, t]) => t)
      .join(''),
  );
  const drop = (sig) =>
    sig
      .split(' | ')
      .filter((x) => x !== 'L0 OK')
      .join(' | ');
  const real = drop(answerSignature(realBytes));
  const mine = drop(answerSignature(Buffer.concat(model.out)));
  return { same: real === mine, real, model: mine };
}
