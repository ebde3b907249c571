/**
 * One keep-alive HTTP/1.1 connection to an upstream: a socket (TCP or TLS)
 * and the llhttp parser kept with it for its whole life. It carries one
 * exchange at a time: writes the request head in one write, streams the
 * request body (chunked when its length is unknown), and reports the response
 * to an {@link H1Handler} whose methods live on its prototype, so no closure is
 * made per request. Hot path.
 *
 * A large Content-Length body on a cleartext connection is not read through
 * the parser: after the head, the parser lets go of the socket and the body is
 * read straight into recycled buffers (read-buffers.ts) that go to the client
 * as they are; the parser takes the socket back for the next response.
 */
import type { OutgoingHttpHeaders } from 'node:http';
import type { Socket } from 'node:net';
import type { Readable } from 'node:stream';
import {
  HTTPParser,
  kOnBody,
  kOnExecute,
  kOnHeaders,
  kOnHeadersComplete,
  kOnMessageBegin,
  kOnMessageComplete,
  closeParser,
  type ConsumableSocket,
  type NodeHttpParser,
} from '../http1/llhttp.js';
import type { H1Pool } from './h1-pool.js';
import { READ_BUFFER_SIZE, SCRATCH, giveBackReadBuffer, takeReadBuffer } from './read-buffers.js';
import { isName } from '../http1/header-name.js';

/** Receives one upstream response. */
export interface H1Handler {
  /** Response head. Header names and values alternate, as received. Return false after aborting the connection. */
  onUpstreamHeaders(status: number, headers: string[]): boolean;
  /**
   * One body chunk; false asks for a pause until {@link H1Connection.resume}. A `recyclable` chunk is a
   * view of a read buffer: give it back with `giveBackReadBuffer` once it is written (never before).
   */
  onUpstreamData(chunk: Buffer, recyclable: boolean): boolean;
  /** A 103 Early Hints (RFC 8297) before the final response; header pairs as received. Optional: handlers without it (a background refresh) drop them. Cold path. */
  onUpstreamHints?(headers: string[]): void;
  /** The response is complete; `last` is its final body chunk, held back so head and body can go out in one write. */
  onUpstreamEnd(last: Buffer | null, trailers: string[] | null): void;
  onUpstreamError(err: UpstreamError): void;
  /** Whether body chunks handed over earlier still wait to be written to the client (it reads slower than the upstream sends). */
  clientBehind(): boolean;
}

/** Why an upstream exchange failed; `code` is a socket code (ECONNREFUSED…), an llhttp code (HPE_…) or a PORTICO_… one. */
export class UpstreamError extends Error {
  readonly code: string;
  /**
   * The connection had served earlier exchanges and nothing of this response arrived: the
   * upstream closed an idle keep-alive connection as the request went out (RFC 9112 §9.3.1),
   * so the request was not processed.
   */
  readonly stale: boolean;

  constructor(code: string, message: string, stale: boolean) {
    super(message);
    this.name = 'UpstreamError';
    this.code = code;
    this.stale = stale;
  }
}

/** How long an idle upstream connection is kept at most: below the 5 s of Node's own server and the 60–75 s of nginx; shorter when the upstream's Keep-Alive header asks. */
export const KEEP_ALIVE_MS = 4000;

/** Body bytes left after the head's read from which a body is read raw rather than through the parser. */
const RAW_BODY_MIN = 32 * 1024;

/** A header value or path that would split the request head. */
const UNSAFE_VALUE = /[\r\n\0]/;
const UNSAFE_PATH = /[\x00-\x20\x7f]/;

interface OwnedParser extends NodeHttpParser {
  conn: H1Connection;
}

/** Content-Length or Transfer-Encoding (the caller has checked the length is 14 or 17). */
function isFramingHeader(name: string): boolean {
  return name.length === 14 ? isName(name, 'content-length', 'Content-Length') : isName(name, 'transfer-encoding', 'Transfer-Encoding');
}

export class H1Connection {
  readonly pool: H1Pool;
  readonly socket: Socket;
  readonly parser: OwnedParser;
  handler: H1Handler | null = null;
  /** Whether this connection completed an exchange before. */
  reused = false;
  /** Set once the socket is open. */
  connected = false;
  closed = false;
  /** Until when it may be reused from the pool (performance.now()). */
  idleDeadline = 0;
  /** How long it may stay idle: the pool's keep-alive, shortened by the upstream's `Keep-Alive: timeout` hint. */
  keepAliveMs: number;
  /** The timeout in force: the connect timeout (the socket's), then the response timeout of the exchange (Portico's own timer). */
  timeoutMs: number;
  /**
   * When the exchange last made progress (performance.now()): the request sent, a body chunk written, a body
   * read. responseTimeout counts from here. Kept as a time rather than refreshing a timer at each of them: a
   * socket timeout is refreshed by node on every write and write completion (timers.active(), and the C++
   * timer it reschedules), a few thousand instructions per request; this is a store.
   */
  lastIo = 0;
  /** The response timer: fires at most `timeoutMs` after it was armed, then looks at {@link lastIo}. */
  #timer: NodeJS.Timeout | undefined = undefined;

  // The exchange in flight.
  keepAlive = true;
  isHead = false;
  gotBytes = false;
  headersDone = false;
  informational = false;
  requestDone = true;
  /** Header pairs flushed early by the parser (more than 32), and trailers. */
  partHeaders: string[] = [];
  trailers: string[] | null = null;
  /** The latest body chunk, held until the next one, the end of the response, or the end of the current read. */
  pending: Buffer | null = null;
  paused = false;
  bodySrc: Readable | null = null;
  /**
   * Whether the request body's chunks wait in the corked socket until {@link flushBody} (on setImmediate): the chunks
   * one turn of the event loop reads from the client (a TLS read decrypts into pieces of at most 16 KiB, each its own
   * chunk) then leave in one writev instead of a write each. Uploads only; a request without a body never corks.
   */
  bodyCorked = false;
  bodyChunked = false;
  /** Request body bytes still expected when its length was declared; -1 when chunked. */
  bodyLeft = -1;
  /** The response completed inside the current read: back to the pool once the read is parsed. */
  done = false;
  /** Bytes followed the complete response in the same read. */
  stray = false;
  /** Cleartext connections read large bodies raw (the pool gave the socket an `onread` for it). */
  readonly rawCapable: boolean;
  /** The declared length of this response's body, until the decision to read it raw or not; -1 when none applies. */
  rawCandidate = -1;
  /** Body bytes the parser has delivered for this response. */
  bodySeen = 0;
  /** Body bytes still to read raw; -1 when the parser reads the socket. */
  rawLeft = -1;
  /** A raw read of this body filled a usual buffer: the body arrives faster than it is read. */
  fastBody = false;
  /** The recycled buffer the socket reads into next, until a read fills it or the connection closes. */
  readBuf: Buffer | null = null;
  #responseTimeoutMs = 0;

  // Listeners bound once per connection.
  readonly #onBodyData = this.onBodyData.bind(this);
  /** The socket's internals node:http's server uses when its parser consumes a socket (llhttp.ts). */
  get #internals(): ConsumableSocket {
    return this.socket as unknown as ConsumableSocket;
  }
  readonly #onBodyEnd = this.onBodyEnd.bind(this);

  constructor(pool: H1Pool, socket: Socket, connectTimeoutMs: number, rawCapable: boolean) {
    this.pool = pool;
    this.socket = socket;
    this.rawCapable = rawCapable;
    this.timeoutMs = connectTimeoutMs;
    this.keepAliveMs = KEEP_ALIVE_MS;
    const parser = new HTTPParser() as OwnedParser;
    parser.initialize(HTTPParser.RESPONSE, {}, 0, 0);
    parser.conn = this;
    const slots = parser as unknown as Record<number, unknown>;
    slots[kOnHeaders] = parserOnHeaders;
    slots[kOnHeadersComplete] = parserOnHeadersComplete;
    slots[kOnBody] = parserOnBody;
    slots[kOnMessageComplete] = parserOnMessageComplete;
    this.parser = parser;
    socket.setNoDelay(true);
    if (connectTimeoutMs > 0) socket.setTimeout(connectTimeoutMs);
    socket.on(pool.secure ? 'secureConnect' : 'connect', this.onConnect.bind(this));
    slots[kOnMessageBegin] = parserOnMessageBegin;
    slots[kOnExecute] = parserOnExecute;
    socket.on('end', this.onSocketEnd.bind(this));
    socket.on('error', this.onSocketError.bind(this));
    socket.on('close', this.onSocketClose.bind(this));
    socket.on('timeout', this.onSocketTimeout.bind(this));
    socket.on('drain', this.onSocketDrain.bind(this));
  }

  /**
   * Sends one request. `bodyLength` is the declared Content-Length, or -1 to send the body
   * chunked. Throws an UpstreamError (code PORTICO_INVALID_REQUEST_HEAD) before writing anything
   * if a header value or the path would break the request head.
   */
  send(
    handler: H1Handler,
    method: string,
    path: string,
    headers: OutgoingHttpHeaders,
    body: Readable | Buffer | null,
    bodyLength: number,
    timeoutMs: number,
  ): void {
    if (UNSAFE_PATH.test(path)) throw new UpstreamError('PORTICO_INVALID_REQUEST_HEAD', 'request path has a space or control character', false);
    let head = `${method} ${path} HTTP/1.1\r\n`;
    let lengthZero = false;
    // Every value, joined, for one check of them all once the head is built (a regular-expression test per
    // value was about 2 % of an S1 request's instructions).
    let values = '';
    for (const name in headers) {
      const v = headers[name];
      if (v === undefined) continue;
      // The body's framing is written below from what Portico sends, never copied: a client's
      // "Connection: content-length" once removed the header while the body still went, and the
      // upstream read that body as a request of its own (smuggled past routing, on a pooled connection).
      if ((name.length === 14 || name.length === 17) && isFramingHeader(name)) {
        if (name.length === 14) lengthZero = String(v) === '0';
        continue;
      }
      if (typeof v === 'string') {
        values += v;
        head += `${name}: ${v}\r\n`;
      } else if (typeof v === 'number') {
        head += `${name}: ${v}\r\n`;
      } else {
        for (const one of v) {
          values += one;
          head += `${name}: ${one}\r\n`;
        }
      }
    }
    // One search per character over all the values (a character-class regular expression steps through every character).
    if (values.includes('\r') || values.includes('\n') || values.includes('\0')) throw new UpstreamError('PORTICO_INVALID_REQUEST_HEAD', `header ${unsafeHeader(headers)} has CR, LF or NUL`, false);
    this.handler = handler;
    this.keepAlive = true;
    this.stray = false;
    this.isHead = method === 'HEAD';
    this.gotBytes = false;
    this.headersDone = false;
    this.informational = false;
    this.paused = false;
    this.rawCandidate = -1;
    this.bodySeen = 0;
    this.#responseTimeoutMs = timeoutMs;
    // lastIo: stamped by the pool's acquire() a moment ago (one clock read for both), or by onConnect.
    if (this.connected) {
      if (timeoutMs !== this.timeoutMs) this.#setResponseTimeout(timeoutMs);
      else if (this.#timer === undefined && timeoutMs > 0) this.#arm(timeoutMs);
    }
    if (body === null) {
      this.requestDone = true;
      // No body: a "Content-Length: 0" the request had is kept (some servers want one on a POST); nothing else.
      this.socket.write(lengthZero ? `${head}content-length: 0\r\n\r\n` : `${head}\r\n`, 'latin1');
      return;
    }
    if (Buffer.isBuffer(body)) {
      // A body read whole before sending ("requestBuffer"): head and body in one writev.
      this.requestDone = true;
      this.socket.cork();
      this.socket.write(`${head}content-length: ${body.length}\r\n\r\n`, 'latin1');
      this.socket.write(body);
      this.socket.uncork();
      return;
    }
    this.requestDone = false;
    this.bodyLeft = bodyLength;
    this.bodyChunked = bodyLength < 0;
    this.socket.write(this.bodyChunked ? `${head}transfer-encoding: chunked\r\n\r\n` : `${head}content-length: ${bodyLength}\r\n\r\n`, 'latin1');
    this.bodySrc = body;
    body.on('data', this.#onBodyData);
    body.on('end', this.#onBodyEnd);
    // A body paused to be put back together ("requestBuffer" past its limit) flows from here.
    if (body.readableFlowing === false) body.resume();
  }

  /**
   * Resumes a response paused for back-pressure. The time paused was the client's, not the upstream's: the
   * upstream's silence counts from now, or a timer due in the same turn would cut it before its bytes, which
   * waited in the socket all along, are read.
   */
  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.lastIo = performance.now();
    if (!this.closed) this.#internals._handle?.readStart();
  }

  /** The handler gives up on the exchange (client gone, answered already): the connection is closed, no more callbacks. */
  abort(): void {
    this.handler = null;
    this.close();
  }

  /** Closes the connection (idle sweep, pool shutdown, or a failed exchange). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.detachBody();
    this.pool.forget(this);
    this.socket.destroy();
    // The socket will read no more: the buffer it was given for its next read goes back.
    if (this.readBuf !== null) {
      giveBackReadBuffer(this.readBuf);
      this.readBuf = null;
    }
  }

  private onConnect(): void {
    this.connected = true;
    // The parser reads the socket in C++ from here on, into node:http's shared read buffer: no
    // buffer per read and no 'data' event (S4 measured 0.88× the CPU per MiB of 'data' + execute()).
    const handle = this.#internals._handle;
    if (handle !== null) this.parser.consume(handle);
    // From here the response timeout is Portico's own timer; the socket's (the connect timeout) is off.
    this.socket.setTimeout(0);
    this.lastIo = performance.now();
    this.#setResponseTimeout(this.#responseTimeoutMs > 0 ? this.#responseTimeoutMs : 0);
  }

  /** A new response timeout (0: none), armed from now. */
  #setResponseTimeout(t: number): void {
    this.timeoutMs = t;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    if (t > 0) this.#arm(t);
  }

  #arm(ms: number): void {
    this.#timer = setTimeout(onResponseTimer, ms, this);
    this.#timer.unref();
  }

  /** The response timer fired: a timeout if nothing happened for `timeoutMs`, else armed again for the rest. */
  responseTimerFired(): void {
    this.#timer = undefined;
    const t = this.timeoutMs;
    if (this.closed || t <= 0) return;
    const quiet = performance.now() - this.lastIo;
    // Waiting for the client to read (paused), not for the upstream: looked at again later.
    if (quiet < t || (this.paused && this.handler !== null)) return this.#arm(Math.max(1, Math.ceil(this.paused ? t : t - quiet)));
    this.onSocketTimeout();
  }

  private onBodyData(chunk: Buffer): void {
    if (this.bodyLeft >= 0) {
      if (chunk.length > this.bodyLeft) return this.fail('PORTICO_BODY_LENGTH_MISMATCH', 'request body is longer than its Content-Length');
      this.bodyLeft -= chunk.length;
    }
    if (chunk.length === 0) return;
    this.lastIo = performance.now();
    const s = this.socket;
    // Back-pressure is judged once the batch is written (flushBody): while corked, every write reports a full buffer.
    if (!this.bodyCorked) {
      this.bodyCorked = true;
      s.cork();
      setImmediate(flushBodyOf, this);
    }
    if (this.bodyChunked) {
      s.write(`${chunk.length.toString(16)}\r\n`, 'latin1');
      s.write(chunk);
      s.write('\r\n', 'latin1');
    } else {
      s.write(chunk);
    }
  }

  /** Writes the body chunks batched since the last turn of the event loop, in one writev; pauses the body if the socket could not take them all. */
  flushBody(): void {
    this.bodyCorked = false;
    const s = this.socket;
    if (s.destroyed) return;
    s.uncork();
    if (s.writableLength > s.writableHighWaterMark) this.bodySrc?.pause();
  }

  private onBodyEnd(): void {
    if (this.bodyChunked) this.socket.write('0\r\n\r\n', 'latin1');
    this.requestDone = true;
    this.detachBody();
  }

  private detachBody(): void {
    const src = this.bodySrc;
    if (src === null) return;
    this.bodySrc = null;
    src.off('data', this.#onBodyData);
    src.off('end', this.#onBodyEnd);
  }

  private onSocketDrain(): void {
    // The upstream took what the socket held: progress, as a body chunk written is.
    this.lastIo = performance.now();
    const src = this.bodySrc;
    if (src !== null && src.isPaused()) src.resume();
  }

  /** After the parser read and parsed one chunk from the socket. */
  onExecuted(r: number | Error): void {
    // responseTimeout bounds the wait for the head as a whole (from the request's last byte written),
    // and only the silences of the body after it: a head trickled a byte at a time, or an endless
    // run of 1xx responses, must not keep the timer fresh. A response this read completed makes no progress
    // worth a clock read (the next request starts the wait afresh): most responses arrive in one read.
    if (this.headersDone && !this.done) this.lastIo = performance.now();
    if (this.done) {
      // Released only now, so bytes after the response in this read can't reach the next exchange.
      this.done = false;
      if (this.keepAlive && !this.stray && !this.closed && !(r instanceof Error)) this.pool.release(this);
      else this.close();
      return;
    }
    if (this.handler === null) {
      // Bytes on an idle connection: not a response to anything; the connection can't be trusted.
      this.close();
      return;
    }
    if (r instanceof Error) {
      const code = (r as NodeJS.ErrnoException).code ?? 'HPE_ERROR';
      return this.fail(code, `invalid HTTP/1.1 response: ${code}`);
    }
    const p = this.pending;
    if (p !== null && this.handler !== null) {
      // Streamed responses (server-sent events and the like) go out as they arrive.
      this.pending = null;
      if (!this.handler.onUpstreamData(p, false)) this.pauseResponse();
    }
    const declared = this.rawCandidate;
    if (declared >= 0) {
      // Decided once, after the read that held the head: the rest of a large body is read raw.
      this.rawCandidate = -1;
      const left = declared - this.bodySeen;
      if (left >= RAW_BODY_MIN && this.handler !== null && !this.closed) {
        this.rawLeft = left;
        this.fastBody = false;
        this.parser.unconsume();
      }
    }
  }

  /**
   * The buffer the socket reads into next (its `onread` buffer): a recycled one while a body is read raw,
   * a large one once a read of this body filled a usual one (it arrives faster than it is read), while
   * more than that is still to come and the client keeps up. A client that falls behind gets usual
   * buffers again, so a slow client holds at most two large ones (one waiting for its write, one
   * its socket reads into next), and the process at most MAX_LARGE_OUT (read-buffers.ts).
   */
  nextReadBuffer(): Buffer {
    if (this.rawLeft < 0 || this.closed) return SCRATCH;
    const h = this.handler;
    const large = this.fastBody && this.rawLeft > READ_BUFFER_SIZE && !this.paused && h !== null && !h.clientBehind();
    return (this.readBuf = takeReadBuffer(large));
  }

  /** A read while the parser does not consume the socket (`onread` callback): the raw body of the response. */
  onRawRead(nread: number, buf: Buffer): void {
    if (nread >= READ_BUFFER_SIZE) this.fastBody = true;
    this.readBuf = null;
    let chunk: Buffer;
    if (buf === SCRATCH) {
      // The first read after the head lands in the shared buffer: its bytes move to a buffer of their own.
      chunk = takeReadBuffer();
      SCRATCH.copy(chunk, 0, 0, nread);
      chunk = chunk.subarray(0, nread);
    } else {
      chunk = buf.subarray(0, nread);
    }
    if (this.rawLeft < 0) {
      // Not reading a body raw: the parser reads these bytes (on_body copies what it keeps).
      const r = this.parser.execute(chunk);
      giveBackReadBuffer(chunk);
      this.onExecuted(r);
      return;
    }
    const h = this.handler;
    if (h === null) {
      giveBackReadBuffer(chunk);
      this.close();
      return;
    }
    if (nread > this.rawLeft) {
      // Bytes after the body: not a response to anything, so the connection is not reused.
      chunk = chunk.subarray(0, this.rawLeft);
      this.stray = true;
    }
    this.rawLeft -= chunk.length;
    this.lastIo = performance.now();
    if (this.rawLeft > 0) {
      if (!h.onUpstreamData(chunk, true)) this.pauseResponse();
      return;
    }
    // The body is complete: the parser starts afresh and reads the socket again for the next response.
    this.rawLeft = -1;
    this.parser.initialize(HTTPParser.RESPONSE, {}, 0, 0);
    const handle = this.#internals._handle;
    if (!this.stray && handle !== null) this.parser.consume(handle);
    h.onUpstreamData(chunk, true);
    if (this.handler === null) return;
    this.complete();
    this.done = false;
    if (this.keepAlive && !this.stray && !this.closed) this.pool.release(this);
    else this.close();
  }

  pauseResponse(): void {
    if (this.paused || this.closed) return;
    this.paused = true;
    this.#internals._handle?.readStop();
  }

  private onSocketEnd(): void {
    if (this.handler !== null) {
      // A body delimited by the connection's close ends here; anything else was cut short.
      const r = this.parser.finish();
      if (r instanceof Error || this.handler !== null) this.fail('PORTICO_UPSTREAM_CLOSED', 'the upstream closed the connection before the response was complete');
    }
    this.done = false;
    this.close();
  }

  private onSocketError(err: NodeJS.ErrnoException): void {
    this.fail(err.code ?? 'ERROR', err.message);
  }

  private onSocketClose(): void {
    if (this.handler !== null) this.fail('PORTICO_UPSTREAM_CLOSED', 'the upstream closed the connection before the response was complete');
    else this.close();
    // Frees the native parser (as node:http does for parsers it doesn't keep), outside any parser callback.
    setImmediate(closeParser, this.parser);
  }

  private onSocketTimeout(): void {
    if (this.handler === null) return this.close();
    if (!this.connected) return this.fail('PORTICO_CONNECT_TIMEOUT', `no connection within ${this.timeoutMs} ms`);
    if (this.paused) return; // waiting for the client to read, not for the upstream
    this.fail('PORTICO_RESPONSE_TIMEOUT', `no response data for ${this.timeoutMs} ms`);
  }

  /** Ends the exchange in error and closes the connection. */
  fail(code: string, message: string): void {
    const h = this.handler;
    this.handler = null;
    // A timeout is no sign of a connection closed under the request: the request may be at work upstream.
    const stale = this.reused && !this.gotBytes && code !== 'PORTICO_RESPONSE_TIMEOUT';
    this.close();
    h?.onUpstreamError(new UpstreamError(code, message, stale));
  }

  /** The response is complete: back to the pool if the connection may carry another exchange. */
  complete(): void {
    const h = this.handler!;
    this.handler = null;
    this.rawCandidate = -1;
    const last = this.pending;
    this.pending = null;
    const trailers = this.trailers;
    this.trailers = null;
    this.partHeaders = [];
    if (!this.requestDone) {
      // The upstream answered before the request body was sent: the rest can't be framed on this connection.
      this.keepAlive = false;
      this.detachBody();
    }
    this.reused = true;
    if (this.paused) {
      this.paused = false;
      if (!this.closed) this.#internals._handle?.readStart();
    }
    this.done = true;
    h.onUpstreamEnd(last, trailers);
  }
}

/** The name of a header whose value holds CR, LF or NUL (the head was refused for it). Cold path. */
function unsafeHeader(headers: OutgoingHttpHeaders): string {
  for (const name in headers) {
    const v = headers[name];
    if (v !== undefined && typeof v !== 'number' && (Array.isArray(v) ? v : [v]).some((one) => UNSAFE_VALUE.test(one))) return name;
  }
  return '(unknown)';
}

/** setImmediate's callback for a connection's batched body chunks (one function for every connection: no closure per batch). */
function flushBodyOf(conn: H1Connection): void {
  conn.flushBody();
}

/** A run of 1 to 15 decimal digits (optional spaces or tabs around it) as a number; -1 for anything else. */
function decimal(v: string): number {
  let start = 0;
  let end = v.length;
  while (start < end && (v.charCodeAt(start) === 32 || v.charCodeAt(start) === 9)) start++;
  while (end > start && (v.charCodeAt(end - 1) === 32 || v.charCodeAt(end - 1) === 9)) end--;
  if (end === start || end - start > 15) return -1;
  let n = 0;
  for (let i = start; i < end; i++) {
    const d = v.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return -1;
    n = n * 10 + d;
  }
  return n;
}

/**
 * The body length a response declares with one Content-Length and no Transfer-Encoding (the
 * parser has checked the framing by now); -1 otherwise, and the parser reads the body.
 */
function declaredLength(pairs: string[]): number {
  let length = -1;
  for (let i = 0; i < pairs.length; i += 2) {
    const name = pairs[i] as string;
    if (name.length === 14 && isName(name, 'content-length', 'Content-Length')) {
      if (length >= 0) return -1;
      length = decimal(pairs[i + 1] as string);
      if (length < 0) return -1;
    } else if (name.length === 17 && isName(name, 'transfer-encoding', 'Transfer-Encoding')) {
      return -1;
    }
  }
  return length;
}

const KEEP_ALIVE_TIMEOUT = /(?:^|[,;\s])timeout\s*=\s*(\d+)/i;

/**
 * How long a connection may stay idle after this response: the pool's keep-alive, or one second
 * less than the upstream's `Keep-Alive: timeout=N` if that is shorter, so Portico drops the
 * connection before the upstream does (0: don't keep it).
 */
function keepAliveHint(pairs: string[]): number {
  for (let i = 0; i < pairs.length; i += 2) {
    const name = pairs[i] as string;
    if (name.length !== 10 || !isName(name, 'keep-alive', 'Keep-Alive')) continue;
    const m = KEEP_ALIVE_TIMEOUT.exec(pairs[i + 1] as string);
    if (m !== null) return Math.max(0, Math.min(KEEP_ALIVE_MS, Number(m[1]) * 1000 - 1000));
  }
  return KEEP_ALIVE_MS;
}

// Parser callbacks: `this` is the parser, which points back at its connection.

/** The response timer's callback (module-level: no closure per connection). */
function onResponseTimer(conn: H1Connection): void {
  conn.responseTimerFired();
}

function parserOnExecute(this: OwnedParser, r: number | Error): void {
  this.conn.onExecuted(r);
}

function parserOnMessageBegin(this: OwnedParser): void {
  const c = this.conn;
  if (c.done || c.handler === null) c.stray = true;
  else c.gotBytes = true;
}

function parserOnHeaders(this: OwnedParser, headers: string[]): void {
  const c = this.conn;
  if (c.headersDone) (c.trailers ??= []).push(...headers);
  else c.partHeaders.push(...headers);
}

/** Header pairs without Content-Length (a 204's; cold path). */
function withoutLength(pairs: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < pairs.length; i += 2) {
    const name = pairs[i] as string;
    if (name.length !== 14 || !isName(name, 'content-length', 'Content-Length')) out.push(name, pairs[i + 1] as string);
  }
  return out;
}

/** Whether response header pairs carry Connection: close. */
function saysClose(pairs: readonly string[]): boolean {
  for (let i = 0; i + 1 < pairs.length; i += 2) {
    if ((pairs[i] as string).toLowerCase() === 'connection' && /(?:^|,)\s*close\s*(?:,|$)/i.test(pairs[i + 1] as string)) return true;
  }
  return false;
}

function parserOnHeadersComplete(
  this: OwnedParser,
  versionMajor: number,
  versionMinor: number,
  headers: string[] | undefined,
  _method: number | undefined,
  _url: string | undefined,
  statusCode: number,
  _statusMessage: string,
  _upgrade: boolean,
  shouldKeepAlive: boolean,
): number {
  const c = this.conn;
  const h = c.handler;
  if (h === null) return 1;
  let all = headers;
  if (c.partHeaders.length > 0) {
    all = headers === undefined ? c.partHeaders : c.partHeaders.concat(headers);
    c.partHeaders = [];
  }
  // llhttp takes any three digits and any HTTP/x.y: a status outside 100–599 (RFC 9110 §15) or a version
  // other than 1.x is not an HTTP/1.1 answer, and nothing of it may reach a client.
  if (statusCode > 599 || statusCode < 100 || versionMajor !== 1) {
    c.fail('PORTICO_INVALID_STATUS_LINE', `status line with HTTP/${versionMajor}.${versionMinor} ${statusCode}`);
    return 1;
  }
  if (statusCode < 200) {
    if (statusCode === 101) {
      c.fail('PORTICO_UNEXPECTED_UPGRADE', 'the upstream switched protocols on a request that did not ask to');
      return 1;
    }
    // 100 Continue, 102, 103 Early Hints: informational, the final response follows. A 103 is offered to the
    // handler (the route may pass it on); 100 and 102 are dropped: Portico answers a client's Expect itself.
    c.informational = true;
    if (statusCode === 103 && h.onUpstreamHints !== undefined) h.onUpstreamHints(all ?? []);
    return 1;
  }
  c.headersDone = true;
  // llhttp judges keep-alive before it learns that a HEAD answer has no body, so an HTTP/1.1 answer to HEAD
  // without Content-Length (as Node's own server sends) reads as "close-delimited"; it is complete here.
  c.keepAlive = shouldKeepAlive || (c.isHead && versionMajor === 1 && versionMinor === 1 && all !== undefined && !saysClose(all));
  // A 204 has no body, and a Content-Length on one is forbidden (RFC 9110 §8.6): passed on, it makes an
  // HTTP/2 client reset the stream, and an HTTP/1.1 client that believes it wait for a body that never comes.
  const pairs = statusCode === 204 && all !== undefined ? withoutLength(all) : (all ?? []);
  if (shouldKeepAlive) c.keepAliveMs = keepAliveHint(pairs);
  if (c.rawCapable && !c.isHead && statusCode !== 204 && statusCode !== 304) c.rawCandidate = declaredLength(pairs);
  h.onUpstreamHeaders(statusCode, pairs);
  return c.isHead ? 1 : 0;
}

function parserOnBody(this: OwnedParser, chunk: Buffer): void {
  const c = this.conn;
  const h = c.handler;
  if (h === null) return;
  c.bodySeen += chunk.length;
  const p = c.pending;
  c.pending = chunk;
  if (p !== null && !h.onUpstreamData(p, false)) c.pauseResponse();
}

function parserOnMessageComplete(this: OwnedParser): void {
  const c = this.conn;
  if (c.handler === null) return;
  if (c.informational) {
    c.informational = false;
    return;
  }
  c.complete();
}
