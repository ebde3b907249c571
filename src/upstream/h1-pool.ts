/**
 * The keep-alive pool of one HTTP/1.1 target: idle connections on a stack (the
 * most recently used first, so the rest can time out), a new connection when
 * none is idle, and a sweep that closes connections idle past their deadline
 * (the keep-alive timeout, or the upstream's shorter hint), before the
 * upstream closes them itself. A connection past its deadline is never reused.
 */
import { performance } from 'node:perf_hooks';
import net from 'node:net';
import tls from 'node:tls';
import { H1Connection } from './h1-connection.js';
import { SCRATCH } from './read-buffers.js';

export interface H1PoolOptions {
  readonly host: string;
  readonly port: number;
  /** A Unix socket to connect to instead of host and port (cleartext only). */
  readonly socketPath?: string | undefined;
  readonly connectTimeoutMs: number;
  /** TLS settings for https targets; undefined for cleartext. */
  readonly tls:
    | { readonly servername: string; readonly rejectUnauthorized: boolean; readonly ca: Buffer | undefined; readonly cert?: Buffer | undefined; readonly key?: Buffer | undefined }
    | undefined;
}

export class H1Pool {
  readonly secure: boolean;
  readonly #opts: H1PoolOptions;
  /** Idle connections, oldest first. */
  readonly #idle: H1Connection[] = [];
  #sweep: NodeJS.Timeout | undefined;
  #closed = false;
  /** Connections open (idle or busy), for tests and metrics. */
  open = 0;

  constructor(opts: H1PoolOptions) {
    this.#opts = opts;
    this.secure = opts.tls !== undefined;
  }

  /**
   * An idle connection, or a new one (its socket connects in the background; the request is queued on it).
   * An idle one comes stamped with the time (`lastIo`, from which its responseTimeout counts): send on it at once.
   */
  acquire(): H1Connection {
    const idle = this.#idle;
    const now = performance.now();
    while (idle.length > 0) {
      const c = idle.pop()!;
      if (c.closed) continue;
      if (now < c.idleDeadline) {
        c.lastIo = now;
        return c;
      }
      c.close(); // idle too long: the upstream may be closing it right now
    }
    return this.#connect();
  }

  /** Takes a connection back after a complete exchange. */
  release(c: H1Connection): void {
    if (this.#closed || c.keepAliveMs <= 0) return c.close();
    c.idleDeadline = performance.now() + c.keepAliveMs;
    this.#idle.push(c);
    this.#sweep ??= setInterval(this.#sweepIdle.bind(this), 1000).unref();
  }

  /** Called by a connection when it closes. */
  forget(c: H1Connection): void {
    this.open--;
    const i = this.#idle.indexOf(c);
    if (i >= 0) this.#idle.splice(i, 1);
  }

  /** Closes idle connections and every connection released from now on. */
  close(): void {
    this.#closed = true;
    if (this.#sweep !== undefined) clearInterval(this.#sweep);
    this.#sweep = undefined;
    for (const c of this.#idle.splice(0)) c.close();
  }

  #connect(): H1Connection {
    const o = this.#opts;
    let socket: net.Socket;
    if (o.tls === undefined) {
      // Reads go to the parser (it consumes the socket); a large body is read raw into recycled buffers.
      let conn: H1Connection | undefined;
      socket = net.connect({
        ...(o.socketPath === undefined ? { host: o.host, port: o.port } : { path: o.socketPath }),
        onread: {
          buffer: () => conn?.nextReadBuffer() ?? SCRATCH,
          callback: (nread: number, buf: Uint8Array) => {
            conn?.onRawRead(nread, buf as Buffer);
            return true;
          },
        },
      });
      conn = new H1Connection(this, socket, o.connectTimeoutMs, true);
      this.open++;
      return conn;
    } else {
      const t = o.tls;
      socket = tls.connect({
        host: o.host,
        port: o.port,
        // SNI is a host name, never an address (RFC 6066 §3).
        servername: t.servername !== '' && net.isIP(t.servername) === 0 ? t.servername : undefined,
        rejectUnauthorized: t.rejectUnauthorized,
        ca: t.ca,
        ...(t.cert === undefined ? {} : { cert: t.cert, key: t.key }),
        ALPNProtocols: ['http/1.1'],
      });
    }
    this.open++;
    return new H1Connection(this, socket, o.connectTimeoutMs, false);
  }

  #sweepIdle(): void {
    const idle = this.#idle;
    const now = performance.now();
    for (let i = idle.length - 1; i >= 0; i--) {
      const c = idle[i]!;
      if (c.idleDeadline <= now) {
        idle.splice(i, 1);
        c.close();
      }
    }
    if (idle.length === 0 && this.#sweep !== undefined) {
      clearInterval(this.#sweep);
      this.#sweep = undefined;
    }
  }
}
