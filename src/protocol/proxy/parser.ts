/**
 * PROXY protocol v1 and v2 header parser (HAProxy's proxy-protocol.txt), pure and incremental: feed it
 * bytes as they come (any split, one byte at a time included); it answers `need` until it has the
 * whole header, then `done` with the header and the bytes after it, or `error`. Strict and bounded:
 * - v1: `PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\r\n`, single spaces, addresses of the stated family
 *   parsed strictly, ports decimal without leading zeros, at most 107 bytes; `PROXY UNKNOWN...\r\n`
 *   (anything up to CRLF) carries no address.
 * - v2: the 12-byte signature, version 2, command LOCAL or PROXY, family UNSPEC, TCP over IPv4 or IPv6
 *   (UDP and UNIX refused: postern proxies TCP only); the length at most PROXY_LIMITS.maxV2Bytes; the
 *   address block of its family's size; TLVs walked, bounded by the length, and skipped.
 * Anything else is an error: the caller ends the connection without a byte.
 */
import { canonicalIp, formatIp, parseIp } from '../../edge/ip.js';
import { PROXY_LIMITS } from '../../limits.js';

export interface ProxyHeader {
  version: 1 | 2;
  /** LOCAL (v2) or UNKNOWN (v1, v2 UNSPEC): the connection is the proxy's own; use the peer address. */
  local: boolean;
  source: { address: string; port: number } | null;
  destination: { address: string; port: number } | null;
}

export type ProxyResult = { state: 'need' } | { state: 'done'; header: ProxyHeader; rest: Buffer } | { state: 'error'; reason: string };

export const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const V1_PREFIX = Buffer.from('PROXY ', 'latin1');
/** The longest v1 header the spec allows, CRLF included. */
export const V1_MAX_BYTES = PROXY_LIMITS.v1MaxBytes;

/** Whether `b` (the first bytes of a connection) starts, or could start, a PROXY header. */
export function looksLikeProxy(b: Buffer): 'yes' | 'no' | 'maybe' {
  const cmp = (sig: Buffer): 'yes' | 'no' | 'maybe' => {
    const n = Math.min(b.length, sig.length);
    if (!b.subarray(0, n).equals(sig.subarray(0, n))) return 'no';
    return n === sig.length ? 'yes' : 'maybe';
  };
  const a = cmp(V1_PREFIX);
  const c = cmp(V2_SIGNATURE);
  if (a === 'yes' || c === 'yes') return 'yes';
  if (a === 'maybe' || c === 'maybe') return 'maybe';
  return 'no';
}

const PORT = /^(?:0|[1-9][0-9]{0,4})$/;

function v1Port(t: string): number | null {
  if (!PORT.test(t)) return null;
  const n = Number(t);
  return n <= 65535 ? n : null;
}

function parseV1(line: string): ProxyResult {
  // line: without CRLF
  if (line.startsWith('PROXY UNKNOWN')) {
    if (line.length > 'PROXY UNKNOWN'.length && line[13] !== ' ') return { state: 'error', reason: 'v1: malformed UNKNOWN line' };
    return { state: 'done', header: { version: 1, local: true, source: null, destination: null }, rest: Buffer.alloc(0) };
  }
  const parts = line.split(' ');
  if (parts.length !== 6 || parts[0] !== 'PROXY')
    return { state: 'error', reason: 'v1: expected PROXY <TCP4|TCP6> <src> <dst> <sport> <dport> with single spaces' };
  const fam = parts[1];
  if (fam !== 'TCP4' && fam !== 'TCP6') return { state: 'error', reason: `v1: unknown protocol "${fam!.slice(0, 8)}"` };
  const want = fam === 'TCP4' ? 4 : 6;
  const src = parseIpStrict(parts[2]!, want);
  const dst = parseIpStrict(parts[3]!, want);
  if (!src || !dst) return { state: 'error', reason: `v1: address not a valid ${fam} address` };
  const sp = v1Port(parts[4]!);
  const dp = v1Port(parts[5]!);
  if (sp === null || dp === null) return { state: 'error', reason: 'v1: port not a decimal 0..65535 without leading zeros' };
  return {
    state: 'done',
    header: { version: 1, local: false, source: { address: src, port: sp }, destination: { address: dst, port: dp } },
    rest: Buffer.alloc(0),
  };
}

/** The address text in canonical form, when it is an address of the family written (TCP6 must be written as IPv6). */
function parseIpStrict(t: string, family: 4 | 6): string | null {
  if (family === 4 && t.includes(':')) return null;
  if (family === 6 && !t.includes(':')) return null;
  const a = parseIp(t);
  return a ? formatIp(a) : null;
}

function ip4(b: Buffer, off: number): string {
  return `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;
}

/** An IPv6 address block; an IPv4-mapped one is reported as the IPv4 address. */
function ip6(b: Buffer, off: number): string {
  return canonicalIp(formatIp({ family: 6, bytes: new Uint8Array(b.subarray(off, off + 16)) }));
}

function parseV2(buf: Buffer): ProxyResult {
  if (buf.length < 16) return { state: 'need' };
  const verCmd = buf[12]!;
  if (verCmd >> 4 !== 2) return { state: 'error', reason: `v2: version ${verCmd >> 4}` };
  const cmd = verCmd & 0x0f;
  if (cmd !== 0 && cmd !== 1) return { state: 'error', reason: `v2: unknown command ${cmd}` };
  const famProto = buf[13]!;
  const len = buf.readUInt16BE(14);
  if (16 + len > PROXY_LIMITS.maxV2Bytes) return { state: 'error', reason: `v2: header of ${16 + len} bytes is over the limit of ${PROXY_LIMITS.maxV2Bytes}` };
  if (buf.length < 16 + len) return { state: 'need' };
  const body = buf.subarray(16, 16 + len);
  const rest = buf.subarray(16 + len);
  let addrLen: number;
  if (famProto === 0x00) addrLen = 0;
  else if (famProto === 0x11) addrLen = 12;
  else if (famProto === 0x21) addrLen = 36;
  else return { state: 'error', reason: `v2: family/protocol 0x${famProto.toString(16).padStart(2, '0')} not supported (TCP over IPv4/IPv6 or UNSPEC only)` };
  if (cmd === 0 || famProto === 0x00) {
    // LOCAL (the proxy's own connection, e.g. a health check) or UNSPEC: no client address; the
    // address block and TLVs are discarded unread (the spec's rule), within the length bound above
    return { state: 'done', header: { version: 2, local: true, source: null, destination: null }, rest: Buffer.from(rest) };
  }
  if (len < addrLen) return { state: 'error', reason: `v2: ${len} bytes is too short for the address block (${addrLen})` };
  // TLVs: type(1) length(2) value, each wholly inside the header; skipped
  let off = addrLen;
  while (off < len) {
    if (len - off < 3) return { state: 'error', reason: 'v2: truncated TLV' };
    const tl = body.readUInt16BE(off + 1);
    if (off + 3 + tl > len) return { state: 'error', reason: 'v2: TLV runs past the header' };
    off += 3 + tl;
  }
  const header: ProxyHeader =
    famProto === 0x11
      ? {
          version: 2,
          local: false,
          source: { address: ip4(body, 0), port: body.readUInt16BE(8) },
          destination: { address: ip4(body, 4), port: body.readUInt16BE(10) },
        }
      : {
          version: 2,
          local: false,
          source: { address: ip6(body, 0), port: body.readUInt16BE(32) },
          destination: { address: ip6(body, 16), port: body.readUInt16BE(34) },
        };
  return { state: 'done', header, rest: Buffer.from(rest) };
}

/** Incremental parser: keeps at most the bound of bytes until the header is complete. */
export class ProxyHeaderParser {
  private buf: Buffer = Buffer.alloc(0);
  private finished: ProxyResult | null = null;

  push(chunk: Buffer): ProxyResult {
    if (this.finished) return this.finished;
    this.buf = this.buf.length === 0 ? Buffer.from(chunk) : Buffer.concat([this.buf, chunk]);
    const r = this.step();
    if (r.state !== 'need') {
      this.finished = r;
      this.buf = Buffer.alloc(0);
    }
    return r;
  }

  private step(): ProxyResult {
    const kind = looksLikeProxy(this.buf);
    if (kind === 'no') return { state: 'error', reason: 'no PROXY protocol header' };
    if (kind === 'maybe') return { state: 'need' };
    if (this.buf.subarray(0, V1_PREFIX.length).equals(V1_PREFIX)) {
      const lf = this.buf.indexOf(0x0a);
      const limit = Math.min(this.buf.length, V1_MAX_BYTES);
      if (lf === -1 || lf >= V1_MAX_BYTES) {
        if (this.buf.length >= V1_MAX_BYTES) return { state: 'error', reason: `v1: no CRLF within ${V1_MAX_BYTES} bytes` };
        // a CR must only come right before the LF
        const cr = this.buf.subarray(0, limit).indexOf(0x0d);
        if (cr !== -1 && cr !== limit - 1) return { state: 'error', reason: 'v1: CR not followed by LF' };
        return { state: 'need' };
      }
      if (lf === 0 || this.buf[lf - 1] !== 0x0d) return { state: 'error', reason: 'v1: line not ended by CRLF' };
      const line = this.buf.subarray(0, lf - 1);
      for (const c of line) if (c < 0x20 || c > 0x7e) return { state: 'error', reason: 'v1: control or non-ASCII byte in the line' };
      const r = parseV1(line.toString('latin1'));
      if (r.state !== 'done') return r;
      return { ...r, rest: Buffer.from(this.buf.subarray(lf + 1)) };
    }
    return parseV2(this.buf);
  }
}
