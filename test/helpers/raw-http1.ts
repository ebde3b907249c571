/**
 * Reading HTTP/1.x responses off the wire, byte for byte, for tests that check
 * exact framing (chunked or not, close-delimited, what follows a response).
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import type { TestContext } from 'node:test';
import tls from 'node:tls';
import { setTimeout as delay } from 'node:timers/promises';

/** A WebSocket upgrade request's head (RFC 6455 §4.1, the RFC's sample key), with `extra` header lines (each ending in CRLF). */
export function rawUpgradeRequest(host: string, path: string, extra = ''): string {
  return `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n${extra}Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`;
}

/** A response head: the status line, the status, headers (lower-case names, repeated ones joined with ", ") and every header line in order. */
export function parseHead(head: string): { statusLine: string; status: number; headers: Record<string, string>; lines: [string, string][] } {
  const [statusLine = '', ...rest] = head.split('\r\n');
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1] ?? 0);
  const headers: Record<string, string> = {};
  const lines: [string, string][] = [];
  for (const line of rest) {
    const colon = line.indexOf(':');
    if (colon === -1) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    lines.push([name, value]);
    headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`;
  }
  return { statusLine, status, headers, lines };
}

/** One HTTP response as read off the wire. */
export interface WireResponse {
  statusLine: string;
  status: number;
  /** Lower-case names; repeated headers joined with ", ". */
  headers: Record<string, string>;
  /** Every header line, in order, lower-case names. */
  lines: [string, string][];
  chunked: boolean;
  body: Buffer;
  text: string;
}

/** Parses one response at the start of `buf` (Content-Length, chunked, bodiless, or up to the close); undefined while incomplete. */
export function parseResponse(buf: Buffer, opts: { head: boolean; closed: boolean }): { res: WireResponse; used: number } | undefined {
  const headEnd = buf.indexOf('\r\n\r\n');
  if (headEnd === -1) return undefined;
  const { statusLine, status, headers, lines } = parseHead(buf.toString('latin1', 0, headEnd));
  let pos = headEnd + 4;
  const make = (body: Buffer, chunked: boolean, used: number): { res: WireResponse; used: number } => ({
    res: { statusLine, status, headers, lines, chunked, body, text: body.toString('latin1') },
    used,
  });
  if (opts.head || (status >= 100 && status < 200) || status === 204 || status === 304) return make(Buffer.alloc(0), false, pos);
  if (/\bchunked\b/i.test(headers['transfer-encoding'] ?? '')) {
    const parts: Buffer[] = [];
    for (;;) {
      const lineEnd = buf.indexOf('\r\n', pos);
      if (lineEnd === -1) return undefined;
      const size = Number.parseInt((buf.toString('latin1', pos, lineEnd).split(';')[0] ?? '').trim(), 16);
      if (Number.isNaN(size)) throw new Error(`bad chunk size line ${JSON.stringify(buf.toString('latin1', pos, lineEnd))}`);
      pos = lineEnd + 2;
      if (size === 0) break;
      if (buf.length < pos + size + 2) return undefined;
      parts.push(buf.subarray(pos, pos + size));
      pos += size + 2;
    }
    if (buf.length < pos + 2) return undefined;
    if (buf[pos] === 13 && buf[pos + 1] === 10) pos += 2;
    else {
      const end = buf.indexOf('\r\n\r\n', pos);
      if (end === -1) return undefined;
      pos = end + 4;
    }
    return make(Buffer.concat(parts), true, pos);
  }
  const len = headers['content-length'];
  if (len !== undefined) {
    const n = Number(len);
    if (buf.length < pos + n) return undefined;
    return make(Buffer.from(buf.subarray(pos, pos + n)), false, pos + n);
  }
  if (!opts.closed) return undefined;
  return make(Buffer.from(buf.subarray(pos)), false, buf.length);
}

/** A raw HTTP/1.x client over TLS (ALPN http/1.1) or plain TCP: exact bytes out, responses read off the wire in order. */
export class RawClient {
  #chunks: Buffer[] = [];
  #wake: (() => void) | undefined;
  closed = false;
  closedAt = 0;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (c: Buffer) => {
      this.#chunks.push(c);
      this.#wake?.();
    });
    socket.on('error', () => {});
    socket.once('close', () => {
      this.closed = true;
      this.closedAt = performance.now();
      this.#wake?.();
    });
  }

  /** Over TLS (ALPN http/1.1) when `tls` is given, plain TCP otherwise; closed when the test ends, if there is one. */
  static async open(t: TestContext | undefined, opts: { port: number; tls?: { servername: string; ca: string } }): Promise<RawClient> {
    let socket: net.Socket;
    if (opts.tls !== undefined) {
      const s = tls.connect({ host: '127.0.0.1', port: opts.port, servername: opts.tls.servername, ca: opts.tls.ca, ALPNProtocols: ['http/1.1'] });
      s.on('error', () => {});
      await once(s, 'secureConnect');
      assert.equal(s.alpnProtocol, 'http/1.1');
      socket = s;
    } else {
      socket = net.connect(opts.port, '127.0.0.1');
      socket.on('error', () => {});
      await once(socket, 'connect');
    }
    const c = new RawClient(socket);
    t?.after(() => c.destroy());
    return c;
  }

  /** Writes bytes as one write; resolves once handed to the socket. */
  write(data: string | Buffer): Promise<void> {
    return new Promise((resolve, reject) => {
      this.socket.write(typeof data === 'string' ? Buffer.from(data, 'latin1') : data, (err) => (err ? reject(err) : resolve()));
    });
  }

  /** Bytes received and not consumed yet. */
  get pending(): Buffer {
    if (this.#chunks.length > 1) this.#chunks = [Buffer.concat(this.#chunks)];
    return this.#chunks[0] ?? Buffer.alloc(0);
  }

  /** Drops the first `n` bytes received. */
  consume(n: number): void {
    const rest = this.pending.subarray(n);
    this.#chunks = rest.length > 0 ? [rest] : [];
  }

  /** Waits until `pred` holds (checked on every arrival and at close), at most `timeoutMs`. */
  async until(pred: () => boolean, timeoutMs: number): Promise<boolean> {
    const deadline = performance.now() + timeoutMs;
    while (!pred()) {
      if (this.closed) return pred();
      const left = deadline - performance.now();
      if (left <= 0) return false;
      const ac = new AbortController();
      await Promise.race([
        new Promise<void>((r) => {
          this.#wake = r;
        }),
        delay(left, undefined, { signal: ac.signal }).catch(() => {}),
      ]);
      ac.abort();
      this.#wake = undefined;
    }
    return true;
  }

  /** Reads (and consumes) the next whole response; fails if none arrives within `timeoutMs`. */
  async response(opts: { head?: boolean; timeoutMs?: number } = {}): Promise<WireResponse> {
    const head = opts.head ?? false;
    let got: { res: WireResponse; used: number } | undefined;
    await this.until(() => (got = parseResponse(this.pending, { head, closed: this.closed })) !== undefined, opts.timeoutMs ?? 3000);
    if (got === undefined) {
      throw new Error(`no complete response (${this.closed ? 'connection closed' : 'timed out'}); have ${JSON.stringify(this.pending.toString('latin1').slice(0, 500))}`);
    }
    this.consume(got.used);
    return got.res;
  }

  /** Whether the server closes the connection within `ms`. */
  closesWithin(ms: number): Promise<boolean> {
    return this.until(() => this.closed, ms);
  }

  destroy(): void {
    this.socket.destroy();
  }
}

