// The collector fuzzer's oracle: the invariants checked on one case's record (collector-harness.mjs
// runCase). Pure: the self-test in test/fuzz/collector.test.ts hands it planted records.
//
//   a  every pass resolves, within the time bound, with a summary; a failed pass carries a coded
//      PosternError (E_..., not E_INTERNAL); no exception or rejection escapes.
//   b  nothing delivered carries a payload: no EICAR, no MZ executable head, raw or decoded (base64
//      runs, quoted-printable, uuencode), in any data handed to the delivery server.
//   c  no mail lost. For every message the server really removed (POP3: DELE then a committed QUIT;
//      IMAP: \Deleted then EXPUNGE / UID EXPUNGE):
//      - truth (the server never lied about that message: its bytes were always served as they are,
//        its identity never given to another message): its exact bytes were delivered (accepted),
//        or its exact bytes are in the quarantine and something was delivered for it (the notice or
//        the altered message, recognised by its identity or its token);
//      - decision (the server lied about it, so its fate is partly the server's doing): postern must
//        still only delete what it delivered in its own view: something was delivered under the very
//        identity it deleted (POP3 UIDL; IMAP UIDVALIDITY:UID), or bytes the server served under that
//        identity were delivered (or quarantined) under another one (postern's duplicate path).
//      - and postern never DELEs a POP3 message whose UIDL the listing gave twice (it says it leaves
//        those alone).
//   d  bounded: after a flood (24 MiB of untagged data or junk lines), the heap (with external
//      buffers, after a GC) grew by less than half of it.
//   e  the password (and the AUTH PLAIN response carrying it) is in no log line and no error.
import { createHash } from 'node:crypto';
import { EICAR, EXE_HEAD } from './collector-gen.mjs';
import { FLOOD_BYTES } from './collector-server.mjs';
import { qpDecodeLenient, uuDecodeBlocks } from './mime-readers.mjs';

export const PASS_TIME_BOUND_MS = 20_000;

/** Splits a delivered transaction into postern's trace fields and the message (output). */
export function splitDelivered(data) {
  const t = data.toString('latin1');
  const at = t.indexOf('X-Postern-Collected: ');
  if (at < 0) return { traceUid: null, output: data };
  const eol = t.indexOf('\r\n', at);
  const m = /; uid=(\S+)/.exec(t.slice(at, eol));
  return { traceUid: m ? m[1] : null, output: data.subarray(eol + 2) };
}

function b64Runs(text) {
  const out = [];
  let run = [];
  for (const line of text.split(/\r\n|\n|\r/)) {
    if (/^[A-Za-z0-9+/]{4,}={0,2}$/.test(line.trim())) run.push(line.trim());
    else if (run.length) {
      out.push(run.join(''));
      run = [];
    }
  }
  if (run.length) out.push(run.join(''));
  return out.map((r) => Buffer.from(r, 'base64'));
}

/** The first payload found in `buf`, raw or decoded: { payload, form } or null. */
export function findPayload(buf) {
  const look = (b, form) => {
    if (b.includes(EICAR)) return { payload: 'EICAR', form };
    if (b.includes(EXE_HEAD)) return { payload: 'MZ executable', form };
    return null;
  };
  const text = buf.toString('latin1');
  return (
    look(buf, 'raw') ??
    b64Runs(text).reduce((f, d) => f ?? look(d, 'base64'), null) ??
    look(qpDecodeLenient(buf), 'quoted-printable') ??
    uuDecodeBlocks(buf).reduce((f, b) => f ?? look(b.data, 'uuencode'), null)
  );
}

/**
 * rec = {
 *   proto, passes: [{ result, errCode, errMessage, errIsPosternError, ms, timedOut, exceptions }],
 *   deliveries: [{ pass, session, uidvalidity, data, accepted }],
 *   quarantined: [Buffer],
 *   server: { contents: { key: Buffer }, tokens: { key: token }, lied: [key], sessions: [{ n, uidvalidity, ids: { ref: { key, id } }, dupIds }],
 *             removed: [{ pass, session, key, ref, id }], decisions: [{ key, id, dup }], floods: [{ where, measured, cutShort }], echoed },
 *   logs: [string], secrets: [string],
 * }
 * Returns [{ inv, kind, detail }].
 */
export function checkCase(rec) {
  const out = [];
  // a
  rec.passes.forEach((p, i) => {
    if (p.timedOut) out.push({ inv: 'a', kind: 'hang', detail: `pass ${i} did not end within ${PASS_TIME_BOUND_MS} ms` });
    for (const e of p.exceptions ?? []) out.push({ inv: 'a', kind: 'exception', detail: `pass ${i}: ${e}` });
    if (p.result === 'error' && !(p.errIsPosternError && /^E_[A-Z0-9_]+$/.test(p.errCode ?? '')))
      out.push({ inv: 'a', kind: 'uncoded-error', detail: `pass ${i}: ${p.errCode ?? '(no code)'} ${p.errMessage}` });
    if (p.errCode === 'E_INTERNAL') out.push({ inv: 'a', kind: 'internal', detail: `pass ${i}: ${p.errMessage}` });
    if (p.result === 'busy') out.push({ inv: 'a', kind: 'busy', detail: `pass ${i} found the lease taken` });
  });
  // b
  for (const d of rec.deliveries) {
    const f = findPayload(d.data);
    if (f) out.push({ inv: 'b', kind: 'unvetted', detail: `pass ${d.pass}: ${f.payload} (${f.form}) in a delivery` });
  }
  // c
  const srv = rec.server;
  const accepted = rec.deliveries.filter((d) => d.accepted).map((d) => ({ ...d, ...splitDelivered(d.data) }));
  const lied = new Set(srv.lied);
  /** identities (as postern writes them in its trace, plus the session's UIDVALIDITY) a message was announced under */
  const idsOf = (key) => {
    const ids = [];
    for (const s of srv.sessions)
      for (const [ref, v] of Object.entries(s.ids)) if (v.key === key) ids.push({ uv: s.uidvalidity, uid: rec.proto === 'pop3' ? v.id : ref });
    return ids;
  };
  const deliveredUnder = (uv, uid) => accepted.some((d) => d.traceUid === uid && (rec.proto === 'pop3' || d.uidvalidity === uv));
  const sha = (b) => createHash('sha256').update(b).digest('hex');
  const handled = [...accepted.map((d) => sha(d.output)), ...rec.quarantined.map(sha)];
  for (const r of srv.removed) {
    const content = srv.contents[r.key];
    const token = srv.tokens[r.key];
    if (!lied.has(r.key)) {
      if (accepted.some((d) => d.output.equals(content))) continue;
      const q = rec.quarantined.some((b) => b.equals(content));
      const told = accepted.some(
        (d) => idsOf(r.key).some((i) => d.traceUid === i.uid && (rec.proto === 'pop3' || d.uidvalidity === i.uv)) || d.output.includes(token),
      );
      if (q && told) continue;
      out.push({
        inv: 'c',
        kind: 'lost',
        detail: `pass ${r.pass}: ${r.key} (ref ${r.ref}, id ${r.id}) removed; its bytes were ${q ? 'quarantined but nothing delivered for it' : 'never delivered'} (the server never lied about it)`,
      });
      continue;
    }
    const uv = rec.proto === 'imap' ? Number(String(r.id).split(':')[0]) : 0;
    const uid = rec.proto === 'imap' ? String(r.id).split(':')[1] : r.id;
    if (r.id !== null && deliveredUnder(uv, uid)) continue;
    // postern's own view: the bytes it fetched under this identity are a message it delivered (or
    // quarantined) under another one (its Message-ID + size + SHA-256 duplicate / recognised path)
    const served = new Set(srv.sessions.flatMap((s) => s.fetches.filter((f) => r.id !== null && f.id === r.id).flatMap((f) => f.served ?? [])));
    if (handled.some((h) => served.has(h))) continue;
    out.push({
      inv: 'c',
      kind: 'lost-decision',
      detail: `pass ${r.pass}: ${r.key} removed under ${r.id}; postern delivered nothing under that identity, nor any bytes the server served under it`,
    });
  }
  for (const dcs of srv.decisions)
    if (dcs.dup) out.push({ inv: 'c', kind: 'ambiguous-deleted', detail: `DELE of ${dcs.key}, whose UIDL ${dcs.id} the listing gave twice` });
  // d
  for (const f of srv.floods) {
    if (f.measured && f.measured.grew > FLOOD_BYTES / 2)
      out.push({
        inv: 'd',
        kind: 'unbounded',
        detail: `after a ${FLOOD_BYTES >> 20} MiB flood during ${f.where} the heap had grown by ${(f.measured.grew / 1048576).toFixed(1)} MiB`,
      });
  }
  // e
  for (const s of rec.secrets) {
    const where = rec.logs.find((l) => l.includes(s)) ?? rec.passes.find((p) => (p.errMessage ?? '').includes(s))?.errMessage;
    if (where) out.push({ inv: 'e', kind: srv.echoed ? 'password-logged-echo' : 'password-logged', detail: `${where.slice(0, 300)}` });
  }
  return out;
}
