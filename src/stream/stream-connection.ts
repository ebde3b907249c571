/**
 * One forwarded TCP connection: for TLS passthrough, the ClientHello is read
 * (never answered) to learn the server name; then a target is connected, the
 * bytes read so far are sent first, and the two sockets are piped both ways
 * with back-pressure. A half-close passes through (each side may end its
 * writing and keep reading); an error, the idle timeout, the send timeout (a
 * side that stopped reading) or a failed connect closes both.
 */
import { performance } from 'node:perf_hooks';
import net from 'node:net';
import type { Logger } from 'pino';
import { HelloBytes, MAX_HELLO_BYTES, readServerName } from '../tls/client-hello.js';
import { sniName } from '../tls/sni-name.js';
import { RETRYABLE } from '../proxy/upstream-errors.js';
import { streamGroupFor, type StreamGroup, type StreamPlan, type StreamTarget } from './stream-plan.js';
import { buildProxyHeader, kClientPort, peerAddress, type ProxiedSocket } from '../listen/proxy-protocol.js';
import { watchTunnelIdle } from '../proxy/tunnel-idle.js';
import { watchTunnelSend, type StalledSide } from '../proxy/tunnel-send.js';

/** Closes that Portico chose, not failures: their reason goes on the line, which is not a "stream failed" one. */
const IDLE_TIMEOUT = 'idle timeout';
const SEND_TIMEOUT = 'send timeout';

/** Counters of one stream port (admin API metrics), kept for the life of its listener. */
export class StreamStats {
  /** Connections that ended. */
  closed = 0;
  /** Of those, the ones that failed (no target for the name, target unreachable, …). */
  failed = 0;
  /** Bytes from clients, and to them. */
  bytesIn = 0;
  bytesOut = 0;
}

/** What a connection needs from its listener. */
export interface StreamContext {
  readonly log: Logger;
  /** Whether to log a line per connection (log.access). */
  readonly logConnections: boolean;
  readonly stats: StreamStats;
  /** Called once the connection is over: both sides closed and its line written. */
  readonly onDone: (c: StreamConnection) => void;
}

export class StreamConnection {
  readonly #client: net.Socket;
  /** The client's address, read now: a closed socket no longer has its remoteAddress, and the line is written on close. */
  readonly #clientAddress: string;
  readonly #sp: StreamPlan;
  readonly #ctx: StreamContext;
  readonly #start = performance.now();
  #up: net.Socket | undefined;
  #target: StreamTarget | undefined;
  #sni: string | undefined;
  /** The client's bytes read before a target was connected (TLS passthrough: the ClientHello), sent to it first. */
  #head: Buffer | undefined;
  #hello: HelloBytes | undefined;
  #timer: NodeJS.Timeout | undefined;
  #attempts = 0;
  #error: string | undefined;
  /** Why Portico closed a connection that did not fail (closeFor()). */
  #reason: string | undefined;
  /** With a send timeout: which side stopped reading. */
  #detail: string | undefined;
  #closed = 0;
  /** The upstream socket connected (its 'close' will come too). */
  #connected = false;

  constructor(client: net.Socket, sp: StreamPlan, ctx: StreamContext) {
    this.#client = client;
    this.#clientAddress = peerAddress(client);
    this.#sp = sp;
    this.#ctx = ctx;
    client.setNoDelay(true);
    client.on('error', (err: NodeJS.ErrnoException) => this.#fail(`client ${err.code ?? err.message}`));
    client.once('close', () => this.#onClose());
    // Until a target is connected, the client alone; then both sockets together (src/proxy/tunnel-idle.ts).
    if (sp.idleTimeoutMs > 0) {
      client.setTimeout(sp.idleTimeoutMs);
      client.on('timeout', this.#onIdle);
    }
  }

  readonly #onIdle = (): void => this.#fail(IDLE_TIMEOUT);

  readonly #onSendStalled = (side: StalledSide): void => {
    if (this.#error === undefined) this.#detail = side === 'client' ? 'the client stopped reading' : 'the upstream stopped reading';
    this.#fail(SEND_TIMEOUT);
  };

  start(): void {
    if (this.#sp.sniExact === undefined) return this.#connect(this.#sp.upstream!);
    this.#timer = setTimeout(() => this.#fail('no TLS ClientHello in time'), this.#sp.helloTimeoutMs);
    this.#client.on('data', this.#onHello);
    this.#client.once('end', this.#onHelloEnd);
  }

  /** A client that ends its sending before its ClientHello is whole will never finish it: closed now, not at helloTimeout. */
  readonly #onHelloEnd = (): void => this.#fail('client ended before its TLS ClientHello was whole');

  /**
   * Ends both sides now because Portico chose to (the shutdown deadline, a reload that removed the stream's port):
   * `reason` goes on the connection's `stream` line, which is not a `stream failed` one.
   */
  closeFor(reason: string): void {
    this.#reason ??= reason;
    this.destroy();
  }

  /** Ends both sides now. */
  destroy(): void {
    this.#client.destroy();
    this.#up?.destroy();
  }

  readonly #onHello = (chunk: Buffer): void => {
    const buf = (this.#hello ??= new HelloBytes()).push(chunk);
    if (buf === undefined) return;
    let name = readServerName(buf);
    if (name === undefined) {
      if (buf.length < MAX_HELLO_BYTES) return;
      name = '';
    }
    this.#head = buf;
    this.#hello = undefined;
    clearTimeout(this.#timer);
    this.#client.off('data', this.#onHello);
    this.#client.off('end', this.#onHelloEnd);
    this.#client.pause();
    this.#sni = name;
    const g = streamGroupFor(this.#sp, sniName(name));
    if (g === undefined) return this.#fail(name === '' ? 'no server name in the ClientHello, and no "upstream" for that' : `no target for server name ${JSON.stringify(name)}`);
    this.#connect(g);
  };

  /** The next target in turn that its health checks leave in rotation, or undefined when none is. */
  #pick(g: StreamGroup): StreamTarget | undefined {
    const n = g.targets.length;
    for (let k = 0; k < n; k++) {
      const t = g.targets[g.next % n] as StreamTarget;
      g.next = (g.next + 1) % 1_000_000_007;
      if (t.health === undefined || t.health.available) return t;
    }
    return undefined;
  }

  #connect(g: StreamGroup): void {
    const n = g.targets.length;
    const target = this.#pick(g);
    if (target === undefined) return this.#fail('no target in rotation: every one failed its health checks');
    this.#attempts++;
    this.#target = target;
    const up = net.connect({ host: target.host, port: target.port, allowHalfOpen: true, noDelay: true });
    this.#up = up;
    const timer = setTimeout(() => up.destroy(Object.assign(new Error('connect timeout'), { code: 'PORTICO_CONNECT_TIMEOUT' })), this.#sp.connectTimeoutMs);
    const onConnectError = (err: NodeJS.ErrnoException): void => {
      clearTimeout(timer);
      const code = err.code ?? err.message;
      if (this.#client.destroyed) return;
      if ((RETRYABLE.has(code) || code === 'PORTICO_CONNECT_TIMEOUT') && this.#attempts < n) {
        this.#ctx.log.warn({ stream: this.#sp.port, upstream: target.url, code }, 'stream target unreachable, trying the next one');
        return this.#connect(g);
      }
      this.#fail(`upstream ${target.url} ${code}`);
    };
    up.once('error', onConnectError);
    up.once('connect', () => {
      clearTimeout(timer);
      this.#connected = true;
      up.off('error', onConnectError);
      up.on('error', (err: NodeJS.ErrnoException) => this.#fail(`upstream ${err.code ?? err.message}`));
      up.once('close', () => this.#onClose());
      // Idle only when neither socket has moved a byte for idleTimeout: a one-way flow under back-pressure (a slow
      // reader) leaves the other socket still, and used to close a connection whose bytes were still moving.
      this.#client.off('timeout', this.#onIdle);
      watchTunnelIdle(this.#client, up, this.#sp.idleTimeoutMs, this.#onIdle);
      // sendTimeout: a side that stopped reading would otherwise hold the connection for good, back-pressure
      // pausing the other side and bytes still moving the other way keeping idleTimeout off (src/proxy/tunnel-send.ts).
      watchTunnelSend(this.#client, up, this.#sp.sendTimeoutMs, this.#onSendStalled);
      const send = this.#sp.sendProxy;
      if (send !== undefined) {
        const c = this.#client as net.Socket & ProxiedSocket;
        up.write(buildProxyHeader(send, peerAddress(c), c[kClientPort] ?? c.remotePort ?? 0, c.localAddress ?? '', c.localPort ?? 0));
      }
      if (this.#head !== undefined) up.write(this.#head);
      this.#head = undefined;
      this.#client.pipe(up);
      up.pipe(this.#client);
      this.#client.resume();
    });
  }

  #fail(reason: string): void {
    this.#error ??= reason;
    clearTimeout(this.#timer);
    this.destroy();
  }

  #onClose(): void {
    // Once for the client, once for a connected upstream: log when both are done.
    this.#closed++;
    if (this.#up !== undefined && !this.#up.destroyed) this.#up.destroy();
    if (!this.#client.destroyed) this.#client.destroy();
    if (this.#closed < (this.#connected ? 2 : 1)) return;
    const line = {
      stream: this.#sp.port,
      client: this.#clientAddress,
      sni: this.#sni,
      upstream: this.#target?.url,
      bytesIn: this.#client.bytesRead,
      bytesOut: this.#client.bytesWritten,
      durationMs: Math.round(performance.now() - this.#start),
      error: this.#error,
      // As on a WebSocket's access line: why Portico closed a connection that did not fail.
      reason: this.#error === IDLE_TIMEOUT || this.#error === SEND_TIMEOUT ? this.#error : this.#reason,
      detail: this.#detail,
    };
    const stats = this.#ctx.stats;
    stats.closed++;
    stats.bytesIn += line.bytesIn;
    stats.bytesOut += line.bytesOut;
    if (this.#error !== undefined && line.reason === undefined && !this.#error.startsWith('client ')) {
      stats.failed++;
      this.#ctx.log.warn(line, 'stream failed');
    } else if (this.#ctx.logConnections) this.#ctx.log.info(line, 'stream');
    this.#ctx.onDone(this);
  }
}
