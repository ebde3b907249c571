/**
 * The PROXY protocol (HAProxy's, versions 1 and 2), for listeners behind a
 * TCP load balancer (AWS NLB, HAProxy `send-proxy`, Google Cloud's TCP proxy)
 * that prefixes each connection with the client's address: read before
 * anything else on the connection, then the client address of every request on
 * it. Spec: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt
 */
import { isIPv4, isIPv6, type Socket } from 'node:net';
import { stripAddress } from '../proxy/forward-headers.js';
import { ipv6Bytes } from '../proxy/ipv6-bytes.js';
import { throttledWarn, type WarnLog } from '../log/throttled-warn.js';

/** The v2 signature (spec §2.2). */
const V2_SIG = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
/** A v1 line is at most 107 bytes with its CRLF (spec §2.1). */
const V1_MAX = 107;
/** TLVs and all, a v2 header this long is not one a load balancer sends. */
const V2_MAX = 16 + 2048;

/** A parsed header: the client's address, or undefined when the sender speaks for itself (LOCAL, UNKNOWN). */
export interface ProxyHeader {
  readonly source: string | undefined;
  /** The client's port, with `source`. */
  readonly sourcePort?: number;
  /** Bytes the header took. */
  readonly length: number;
}

/** Parses a PROXY header at the start of `buf`: the header, 'more' when it is not complete yet, or why it is not one. */
export function parseProxyHeader(buf: Buffer): ProxyHeader | 'more' | { readonly error: string } {
  if (buf.length === 0) return 'more';
  if (buf[0] === 0x0d) return parseV2(buf);
  if (buf[0] === 0x50 /* P */) return parseV1(buf);
  return { error: 'the connection did not start with a PROXY protocol header' };
}

function parseV1(buf: Buffer): ProxyHeader | 'more' | { readonly error: string } {
  const prefix = 'PROXY ';
  for (let i = 0; i < Math.min(buf.length, prefix.length); i++) if (buf[i] !== prefix.charCodeAt(i)) return { error: 'the connection did not start with a PROXY protocol header' };
  const end = buf.indexOf('\r\n', 0, 'latin1');
  if (end === -1) return buf.length >= V1_MAX ? { error: 'PROXY v1 line longer than 107 bytes' } : 'more';
  if (end + 2 > V1_MAX) return { error: 'PROXY v1 line longer than 107 bytes' };
  const parts = buf.toString('latin1', prefix.length, end).split(' ');
  const length = end + 2;
  if (parts[0] === 'UNKNOWN') return { source: undefined, length };
  if (parts.length !== 5 || (parts[0] !== 'TCP4' && parts[0] !== 'TCP6')) return { error: `malformed PROXY v1 line ${JSON.stringify(buf.toString('latin1', 0, end))}` };
  const [proto, src, dst, sport, dport] = parts as [string, string, string, string, string];
  const isFamily = proto === 'TCP4' ? isIPv4 : isIPv6;
  if (!isFamily(src) || !isFamily(dst) || !isPort(sport) || !isPort(dport)) return { error: `malformed PROXY v1 line ${JSON.stringify(buf.toString('latin1', 0, end))}` };
  return { source: src, sourcePort: Number(sport), length };
}

function isPort(s: string): boolean {
  return /^(0|[1-9]\d{0,4})$/.test(s) && Number(s) <= 65535;
}

function parseV2(buf: Buffer): ProxyHeader | 'more' | { readonly error: string } {
  const n = Math.min(buf.length, V2_SIG.length);
  if (!buf.subarray(0, n).equals(V2_SIG.subarray(0, n))) return { error: 'the connection did not start with a PROXY protocol header' };
  if (buf.length < 16) return 'more';
  const verCmd = buf[12] as number;
  if (verCmd >> 4 !== 2) return { error: `PROXY v2 header with version ${verCmd >> 4}` };
  const cmd = verCmd & 0x0f;
  if (cmd > 1) return { error: `PROXY v2 header with unknown command ${cmd}` };
  const len = buf.readUInt16BE(14);
  const length = 16 + len;
  if (length > V2_MAX) return { error: `PROXY v2 header of ${length} bytes` };
  if (buf.length < length) return 'more';
  // LOCAL: the load balancer's own connection (a health check): the peer is the client.
  if (cmd === 0) return { source: undefined, length };
  const family = (buf[13] as number) >> 4;
  if (family === 1 && len >= 12) return { source: `${buf[16]}.${buf[17]}.${buf[18]}.${buf[19]}`, sourcePort: buf.readUInt16BE(24), length };
  if (family === 2 && len >= 36) {
    const words: string[] = [];
    for (let i = 0; i < 8; i++) words.push(buf.readUInt16BE(16 + 2 * i).toString(16));
    return { source: compressIPv6(words), sourcePort: buf.readUInt16BE(48), length };
  }
  // UNSPEC or AF_UNIX: nothing to say about the client.
  if (family === 0 || family === 3) return { source: undefined, length };
  return { error: `PROXY v2 header with address family ${family} and ${len} bytes of addresses` };
}

/** An IPv6 address in the usual short form (RFC 5952): the longest run of zero words as "::". */
function compressIPv6(words: string[]): string {
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (words[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === '0') j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best === -1) return words.join(':');
  const mapped = best === 0 && bestLen === 5 && words[5] === 'ffff';
  if (mapped) {
    const hi = parseInt(words[6] as string, 16);
    const lo = parseInt(words[7] as string, 16);
    return `::ffff:${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
  }
  return `${words.slice(0, best).join(':')}::${words.slice(best + bestLen).join(':')}`;
}

/** Time a new connection has to send its PROXY protocol header. */
export const PROXY_HEADER_TIMEOUT_MS = 10_000;

/** The client address a PROXY header gave a connection. */
export const kClientAddress = Symbol('portico.clientAddress');

/** The client port a PROXY header gave a connection. */
export const kClientPort = Symbol('portico.clientPort');

/** A socket that may carry the client address from a PROXY header. */
export interface ProxiedSocket {
  [kClientAddress]?: string;
  [kClientPort]?: number;
}

/** The client's address on a connection: from its PROXY header when it had one, else its peer's. */
export function peerAddress(socket: Socket & ProxiedSocket): string {
  return socket[kClientAddress] ?? socket.remoteAddress ?? '';
}

/**
 * Reads the PROXY header off a new connection, then calls `done` with the client address
 * (undefined: the peer's) and the connection paused with the bytes after the header put back.
 * A connection without a valid header within `timeoutMs` is closed, and `fail` told why.
 */
export function readProxyHeader(socket: Socket, timeoutMs: number, done: (source: string | undefined, sourcePort: number | undefined) => void, fail: (reason: string) => void): void {
  let buf: Buffer = Buffer.alloc(0);
  // The timeout's listener comes off with the timer: left on, it would fire with any later idle timer of the
  // socket (a stream's or a tunnel's idle timeout), closing the connection as if its header had never come.
  const finish = (): void => {
    socket.off('data', onData);
    socket.off('error', onError);
    socket.off('timeout', onTimeout);
    socket.setTimeout(0);
  };
  const onData = (chunk: Buffer): void => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    const r = parseProxyHeader(buf);
    if (r === 'more') return;
    finish();
    if ('error' in r) {
      socket.destroy();
      return fail(r.error);
    }
    socket.pause();
    if (buf.length > r.length) socket.unshift(buf.subarray(r.length));
    done(r.source, r.sourcePort);
  };
  const onError = (): void => {
    finish();
    socket.destroy();
  };
  socket.on('data', onData);
  socket.on('error', onError);
  const onTimeout = (): void => {
    finish();
    socket.destroy();
    fail(`no PROXY protocol header within ${timeoutMs} ms`);
  };
  socket.setTimeout(timeoutMs, onTimeout);
}

/**
 * Logs refused PROXY headers without flooding: the first at warn with its reason (a load balancer
 * that does not send the header makes every connection fail), then a count at most once a minute.
 */
export function proxyRefusalLog(log: WarnLog, port: number): (reason: string, remote: string | undefined) => void {
  const note = throttledWarn(log, 'connection closed: no valid PROXY protocol header (listen.*.proxyProtocol is on)', 'more connections closed in the minute after: no valid PROXY protocol header', 'refused');
  return (reason, remote) => note({ port, remote, reason });
}

/** A connection's identity, the same on a TCP socket and on the TLS socket wrapping it. */
export function connectionKey(s: Socket): string {
  return `${s.remoteAddress}|${s.remotePort}|${s.localAddress}|${s.localPort}`;
}

/**
 * The PROXY header Portico sends ahead of a stream's bytes (streams[].sendProxyProtocol), for the
 * client at `src`:`srcPort` that connected to `dst`:`dstPort`. An IPv4 client that reached an IPv6 address
 * (or the reverse: a client named by a PROXY header in front, a dual-stack listener) is sent as TCP6 with the
 * IPv4 side mapped (::ffff:a.b.c.d), as HAProxy does, so the receiver still learns the client; only what is
 * not an IP address at all gives UNKNOWN (v1) or LOCAL (v2), and the receiver uses the connection's own.
 */
export function buildProxyHeader(version: 'v1' | 'v2', src: string, srcPort: number, dst: string, dstPort: number): Buffer {
  let s = stripAddress(src);
  let d = stripAddress(dst);
  const s4 = isIPv4(s);
  const d4 = isIPv4(d);
  if ((!s4 && !isIPv6(s)) || (!d4 && !isIPv6(d))) {
    return version === 'v1' ? Buffer.from('PROXY UNKNOWN\r\n', 'latin1') : Buffer.concat([V2_SIG, Buffer.from([0x20, 0x00, 0x00, 0x00])]);
  }
  const v4 = s4 && d4;
  if (!v4) {
    if (s4) s = `::ffff:${s}`;
    if (d4) d = `::ffff:${d}`;
  }
  if (version === 'v1') return Buffer.from(`PROXY ${v4 ? 'TCP4' : 'TCP6'} ${s} ${d} ${srcPort} ${dstPort}\r\n`, 'latin1');
  const addrs = v4 ? Buffer.alloc(12) : Buffer.alloc(36);
  if (v4) {
    s.split('.').forEach((b, i) => (addrs[i] = Number(b)));
    d.split('.').forEach((b, i) => (addrs[4 + i] = Number(b)));
    addrs.writeUInt16BE(srcPort, 8);
    addrs.writeUInt16BE(dstPort, 10);
  } else {
    ipv6Bytes(s).copy(addrs, 0);
    ipv6Bytes(d).copy(addrs, 16);
    addrs.writeUInt16BE(srcPort, 32);
    addrs.writeUInt16BE(dstPort, 34);
  }
  const head = Buffer.from([0x21, v4 ? 0x11 : 0x21, 0, 0]);
  head.writeUInt16BE(addrs.length, 2);
  return Buffer.concat([V2_SIG, head, addrs]);
}
