/**
 * One client connection of Portico's own HTTP/1.1 server: the TLS (or TCP)
 * socket and one llhttp parser that reads it in C++ (`parser.consume`, as
 * node:http's server reads its sockets), so no buffer is made per read and no
 * 'data' event fires. Requests are answered in order (pipelined ones wait
 * their turn); the connection closes after a response that says so, on a
 * request error, or when it stays idle past keepAliveTimeout. Hot path.
 */
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import {
  HTTPParser,
  METHODS,
  kOnBody,
  kOnExecute,
  kOnHeaders,
  kOnHeadersComplete,
  kOnMessageBegin,
  kOnMessageComplete,
  closeParser,
  type ConsumableSocket,
  type NodeHttpParser,
} from './llhttp.js';
import { H1ServerRequest, type BodySource } from './server-request.js';
import { H1ServerResponse, type ResponseOwner } from './server-response.js';
import type { H1Server } from './h1-server.js';
import { LINGER_MS } from './end-detached.js';
import { ERRORS, type ErrorCode } from '../errors.js';

interface OwnedParser extends NodeHttpParser {
  conn: H1ServerConnection;
}


/** Pipelined requests parsed ahead of their turn before the connection stops reading. */
const MAX_QUEUED = 4;

export class H1ServerConnection implements ResponseOwner, BodySource {
  readonly server: H1Server;
  readonly socket: Socket;
  readonly parser: OwnedParser;
  /** Close after the response in progress (shutdown, or a response that said close): nothing more is answered. */
  closing = false;
  /** Answer the requests already read, then close (the client sent its FIN, or a later request was refused). */
  draining = false;
  /** The error answer owed to a request behind others still being answered: sent in its turn, then the connection closes. */
  refusal: string | null = null;
  closed = false;
  /** The request whose bytes are being read (its body may still be arriving). */
  incoming: H1ServerRequest | null = null;
  /** The response being produced; null between requests. */
  active: H1ServerResponse | null = null;
  /** Requests parsed while an earlier one was still being answered. */
  readonly queue: H1ServerRequest[] = [];
  /** An upgrade request (WebSocket…): the socket leaves HTTP once the parser stops. */
  upgrade: H1ServerRequest | null = null;
  /** When the current head started arriving (Date.now()), 0 when not reading a head. */
  headersStart: number;
  /** When the current request started arriving, 0 once it was read whole. */
  requestStart = 0;
  /** Since when the connection has been idle between requests, 0 while busy. */
  idleSince = 0;
  /** A lingering close (see endSoon): until when the rest of a request body is read and dropped; 0 when not lingering. */
  lingerUntil = 0;
  readingPaused = false;
  /** Unsent response bytes at the last check, and since when that figure has not moved (sendTimeout). */
  unsent = 0;
  unsentSince = 0;
  /** Request body bytes read on this connection, the figure at the last check, and since when Portico has waited for more without any coming (bodyTimeout). */
  bodyBytes = 0;
  bodySeen = 0;
  bodySince = 0;
  /**
   * A line feed was read since the current head began, in a read before the one being parsed: its
   * request line is complete (414 or 431 on overflow, see isRequestLineOverflow). Noted only for a head
   * that spans reads.
   */
  headLineSeen = false;
  partHeaders: string[] = [];
  partUrl = '';
  // Socket listeners, kept so an upgrade can take exactly these off (the socket has others: net's own, the listener's).
  readonly #onEnd = this.onEnd.bind(this);
  readonly #onClose = this.onClose.bind(this);
  readonly #onDrain = this.onDrain.bind(this);

  constructor(server: H1Server, socket: Socket) {
    this.server = server;
    this.socket = socket;
    this.headersStart = Date.now();
    const parser = new HTTPParser() as OwnedParser;
    parser.initialize(HTTPParser.REQUEST, {}, server.maxHeaderBytes, 0);
    parser.conn = this;
    const slots = parser as unknown as Record<number, unknown>;
    slots[kOnMessageBegin] = parserOnMessageBegin;
    slots[kOnHeaders] = parserOnHeaders;
    slots[kOnHeadersComplete] = parserOnHeadersComplete;
    slots[kOnBody] = parserOnBody;
    slots[kOnMessageComplete] = parserOnMessageComplete;
    slots[kOnExecute] = parserOnExecute;
    this.parser = parser;
    // A client's FIN must not end the socket before its responses are written: handled in onEnd.
    socket.allowHalfOpen = true;
    socket.on('end', this.#onEnd);
    socket.on('error', onSocketError);
    socket.on('close', this.#onClose);
    socket.on('drain', this.#onDrain);
    const handle = (socket as unknown as ConsumableSocket)._handle;
    if (handle === null) {
      socket.destroy();
      return;
    }
    parser.consume(handle);
    // The socket may not be reading yet (a TLS socket just out of its handshake).
    handle.readStart();
    // Bytes read before the parser took the socket (those after a PROXY protocol header) go first:
    // in a microtask, before any read of the socket's own, once the server holds this connection.
    if (socket.readableLength > 0) queueMicrotask(() => this.#parseBuffered());
  }

  #parseBuffered(): void {
    const buf = this.socket.read() as Buffer | null;
    if (buf === null || this.closed) return;
    this.onExecuted(this.parser.execute(buf), buf);
  }

  get keepAliveHint(): string {
    return this.server.keepAliveHint;
  }

  /** Hands a parsed request to the server's handler, or queues it behind the one being answered. */
  admit(req: H1ServerRequest): void {
    // After a response that closes the connection (or a refused request), nothing more is answered.
    if (this.closing || this.refusal !== null) return;
    if (this.active !== null || this.queue.length > 0) {
      this.queue.push(req);
      if (this.queue.length >= MAX_QUEUED) this.pauseReading();
      return;
    }
    this.dispatch(req);
  }

  dispatch(req: H1ServerRequest): void {
    const res = new H1ServerResponse(this, req);
    this.active = res;
    this.idleSince = 0;
    if (this.server.expectContinue(req, res)) this.server.onRequest(req, res);
  }

  /** Called by the response when its last bytes were handed to the socket. */
  responseDone(res: H1ServerResponse): void {
    this.active = null;
    const req = res.req;
    if (!res.keepAlive) this.closing = true;
    if (!req.complete) {
      // Answered before the body was read (an error, or an upstream that didn't wait): the rest is dropped.
      req.dumped = true;
      req.body.resume();
    }
    res.emit('close');
    if (this.closing) {
      this.endSoon();
      return;
    }
    if (req.complete) this.next();
  }

  /** The next request in line, once the previous one was answered and read whole. */
  next(): void {
    if (this.closing || this.closed || this.active !== null) return;
    if (this.queue.length > 0) {
      // Not from inside the callback that ended the previous response (an upstream parser's).
      process.nextTick(dispatchNext, this);
      return;
    }
    if (this.refusal !== null) {
      // Every earlier request is answered: the refused one gets its error in its own turn.
      this.closing = true;
      this.socket.write(this.refusal, 'latin1');
      this.endSoon();
      return;
    }
    if (this.draining) {
      this.endSoon();
      return;
    }
    if (this.incoming === null) this.idleSince = Date.now();
    if (this.readingPaused) this.resumeReading();
  }

  pauseReading(): void {
    if (this.readingPaused || this.closed) return;
    this.readingPaused = true;
    (this.socket as unknown as ConsumableSocket)._handle?.readStop();
  }

  resumeReading(): void {
    if (!this.readingPaused || this.closed || this.refusal !== null) return;
    if (this.queue.length >= MAX_QUEUED) return;
    this.readingPaused = false;
    (this.socket as unknown as ConsumableSocket)._handle?.readStart();
  }

  /** Whether response bytes have waited unread, without any moving, for longer than `limitMs`. Called once a second. */
  sendStalled(now: number, limitMs: number): boolean {
    const unsent = this.socket.writableLength;
    if (unsent === 0 || unsent !== this.unsent) {
      this.unsent = unsent;
      this.unsentSince = now;
      return false;
    }
    return now - this.unsentSince > limitMs;
  }

  /**
   * Whether the body of the request being read has not moved for longer than `limitMs` while Portico
   * waited for it: the body is wanted (its reader is flowing, nothing buffered) and the socket is read.
   * A body not wanted yet, or held back because the upstream is slow to take it (reading paused), is
   * not waiting on the client: its clock restarts, as it starts when a request's body is first found
   * waited for (bodySince 0: a new request, or a new connection). Called once a second.
   */
  bodyStalled(now: number, limitMs: number): boolean {
    const req = this.incoming;
    const bytes = this.bodyBytes;
    if (this.bodySince === 0 || req === null || req.complete || this.readingPaused || this.lingerUntil !== 0 || bytes !== this.bodySeen || (!req.dumped && !req.bodyAwaited)) {
      this.bodySeen = bytes;
      this.bodySince = now;
      return false;
    }
    return now - this.bodySince > limitMs;
  }

  /**
   * bodyTimeout: the request being answered hands it to its exchange (408 if nothing was sent yet, else
   * the connection closes; its upstream exchange is cancelled); the rest of a body whose request was
   * answered already (read and dropped) ends the connection; any other gets the 408 refusal.
   */
  bodyTimedOut(): void {
    const res = this.active;
    const req = this.incoming;
    if (res !== null && res.req === req && res.exchange !== undefined) res.exchange.bodyTimedOut();
    else if (res === null && req !== null && req.dumped) this.endSoon();
    else this.refuse('PORTICO_BODY_TIMEOUT');
  }

  /**
   * Closes once what was written is flushed. While a request's body is still arriving (answered early:
   * a 413, an expectation refused), the connection lingers, as nginx's lingering close does: Portico
   * sends its FIN and reads and drops what comes until the client closes or LINGER_MS pass. Closing at
   * once with unread bytes would make the kernel answer with a reset, which can destroy the answer
   * before the client has read it.
   */
  endSoon(): void {
    this.closing = true;
    if (this.closed) return;
    const req = this.incoming;
    if (req !== null && !req.complete && this.lingerUntil === 0) {
      req.dumped = true;
      this.lingerUntil = Date.now() + LINGER_MS;
      this.resumeReading();
      this.socket.end();
      return;
    }
    this.socket.destroySoon();
  }

  /** Whether a lingering close has run its time (checked once a second). */
  lingeredOut(now: number): boolean {
    return this.lingerUntil !== 0 && now > this.lingerUntil;
  }

  /**
   * Answers a request the server can't take (bad syntax, oversized head, timeout) and closes. Given an
   * error code, the answer is that error's status, its message as the body and the code in
   * X-Portico-Error, as the request handler's errors are; given a status, an empty answer. Cold path.
   */
  refuse(why: number | ErrorCode): void {
    if (this.closed || this.closing || this.refusal !== null) return;
    const res = this.active;
    const answer = typeof why === 'number' ? `HTTP/1.1 ${why} ${STATUS_CODES[why] ?? ''}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n` : refusalWithBody(why);
    if ((res !== null && res.req !== this.incoming) || (res === null && this.queue.length > 0)) {
      // The error is a later request's: the ones read before it are answered first (RFC 9112 §9.3.2),
      // and the broken one, if it was queued, never reaches the handler.
      this.refusal = answer;
      this.pauseReading();
      const bad = this.incoming;
      if (bad !== null) {
        this.incoming = null;
        const i = this.queue.indexOf(bad);
        if (i >= 0) this.queue.splice(i, 1);
        bad.destroy();
      }
      return;
    }
    this.closing = true;
    if (res !== null) {
      if (res.headersSent) {
        // A response is on its way: the error can't be put in front of it.
        this.socket.destroy();
        return;
      }
      // The request being answered is abandoned (its 'close' cancels the upstream exchange); the 408 says why.
      this.active = null;
      res.destroyed = true;
      res.emit('close');
    }
    this.socket.write(answer, 'latin1');
    this.endSoon();
  }

  onExecuted(r: number | Error, buf?: Buffer): void {
    if (r instanceof Error) {
      const code = (r as NodeJS.ErrnoException).code ?? 'HPE_ERROR';
      this.server.log.debug({ code, remote: this.socket.remoteAddress }, 'bad http/1.1 request');
      if (code !== 'HPE_HEADER_OVERFLOW') this.refuse('PORTICO_MALFORMED_REQUEST');
      else this.refuse(this.isRequestLineOverflow(r, buf) ? 'PORTICO_URI_TOO_LONG' : 'PORTICO_HEADERS_TOO_LARGE');
      return;
    }
    // A head still incomplete after this read (rare: most arrive whole): note whether its request line ended.
    if (this.headersStart !== 0 && !this.headLineSeen) this.noteHeadLine(buf);
    const up = this.upgrade;
    if (up !== null) this.leaveForUpgrade(up, (buf ?? this.parser.getCurrentBuffer()).subarray(r));
  }

  /** Whether the read just parsed holds a line feed: the head in progress has its request line (or an earlier message's end: then 431 stays the answer). Cold path. */
  noteHeadLine(buf: Buffer | undefined): void {
    if ((buf ?? this.parser.getCurrentBuffer()).indexOf(10) !== -1) this.headLineSeen = true;
  }

  /**
   * llhttp reports one error, HPE_HEADER_OVERFLOW, when the head passes maxHeaderSize, whether in the
   * request line or in a header field (Node's parser counts both). RFC 9112 §3 asks for 414 when the
   * request target is longer than the server accepts, and RFC 6585 §5 for 431 for header fields: the
   * overflow is in the request line when no line feed came before it in this head, neither in an earlier
   * read (headLineSeen) nor in this one up to where llhttp stopped. llhttp has read and checked those
   * bytes; this only tells where it stopped. Cold path.
   */
  isRequestLineOverflow(err: Error, buf: Buffer | undefined): boolean {
    if (this.headLineSeen) return false;
    const b = buf ?? this.parser.getCurrentBuffer();
    const parsed = (err as Error & { bytesParsed?: number }).bytesParsed;
    const end = typeof parsed === 'number' && parsed >= 0 && parsed <= b.length ? parsed : b.length;
    return b.subarray(0, end).indexOf(10) === -1;
  }

  /** The socket stops being HTTP: the parser lets go of it and the upgrade handler gets it with the bytes after the head. */
  leaveForUpgrade(req: H1ServerRequest, head: Buffer): void {
    this.upgrade = null;
    if (this.active !== null || this.queue.length > 0 || this.closing) {
      this.socket.destroy();
      return;
    }
    this.detach();
    this.server.onUpgrade(req, this.socket, head);
  }

  /** Lets go of the socket: the parser stops reading it and Portico's listeners come off. */
  detach(): void {
    this.closed = true;
    this.server.forget(this);
    const s = this.socket;
    s.removeListener('end', this.#onEnd);
    s.removeListener('drain', this.#onDrain);
    s.removeListener('close', this.#onClose);
    s.removeListener('error', onSocketError);
    // The upgraded socket goes back to plain stream reading, and to the half-close rule of its server.
    s.allowHalfOpen = false;
    // Inside the parser's own callback: it lets go of the socket now and is freed once it has returned.
    this.parser.unconsume();
    setImmediate(closeParser, this.parser);
    (s as unknown as { readableFlowing: boolean | null }).readableFlowing = null;
  }

  private onEnd(): void {
    // A request cut short by the client's FIN is abandoned (and its upstream exchange cancelled).
    const req = this.incoming;
    if (req !== null && !req.complete) {
      this.socket.destroy();
      return;
    }
    // The client will send nothing more: answer what it asked, then close.
    this.draining = true;
    if (this.active === null && this.queue.length === 0) this.endSoon();
  }

  private onDrain(): void {
    this.active?.emit('drain');
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    this.server.forget(this);
    const res = this.active;
    if (res !== null) {
      this.active = null;
      res.destroyed = true;
      res.emit('close');
    }
    const req = this.incoming;
    if (req !== null && !req.complete) req.destroy();
    setImmediate(closeParser, this.parser);
  }
}

/** A refusal's whole answer for an error of the table: its status, its message as a plain-text body, its code. */
function refusalWithBody(code: ErrorCode): string {
  const { status, message } = ERRORS[code];
  const body = `${message}\n`;
  return `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nX-Portico-Error: ${code}\r\n\r\n${body}`;
}

function dispatchNext(conn: H1ServerConnection): void {
  if (conn.closing || conn.closed || conn.active !== null) return;
  const req = conn.queue.shift();
  if (req === undefined) return;
  conn.dispatch(req);
  if (conn.queue.length < MAX_QUEUED) conn.resumeReading();
}

function onSocketError(): void {
  // 'close' follows; a client that resets its connection is not an error of Portico's.
}

// Parser callbacks: `this` is the parser, which points back at its connection.

function parserOnExecute(this: OwnedParser, r: number | Error): void {
  this.conn.onExecuted(r);
}

function parserOnMessageBegin(this: OwnedParser): void {
  const c = this.conn;
  const now = Date.now();
  c.headersStart = now;
  c.headLineSeen = false;
  c.requestStart = now;
  c.idleSince = 0;
}

function parserOnHeaders(this: OwnedParser, headers: string[], url: string): void {
  const c = this.conn;
  c.partHeaders.push(...headers);
  c.partUrl += url;
}

function parserOnHeadersComplete(
  this: OwnedParser,
  versionMajor: number,
  versionMinor: number,
  headers: string[] | undefined,
  method: number,
  url: string | undefined,
  _statusCode: number,
  _statusMessage: string,
  upgrade: boolean,
  shouldKeepAlive: boolean,
): number {
  const c = this.conn;
  let all = headers ?? [];
  if (c.partHeaders.length > 0) {
    all = headers === undefined ? c.partHeaders : c.partHeaders.concat(headers);
    c.partHeaders = [];
  }
  let target = url ?? '';
  if (c.partUrl !== '') {
    target = c.partUrl + target;
    c.partUrl = '';
  }
  c.headersStart = 0;
  const name = METHODS[method] ?? 'GET';
  const req = new H1ServerRequest(c, c.socket, name, target, versionMajor, versionMinor, all, shouldKeepAlive && !c.closing);
  c.incoming = req;
  // bodyTimeout's clock starts when the sweep first finds this request's body waited for, not at an earlier check.
  c.bodySince = 0;
  // Only HTTP/1.x is spoken here (llhttp also takes "HTTP/0.9" and "HTTP/2.0" request lines): everything
  // after this point takes a request of major version 2 for an HTTP/2 stream (RFC 9110 §15.6.6: 505).
  if (versionMajor !== 1) {
    c.refuse('PORTICO_HTTP_VERSION');
    return 1;
  }
  if (upgrade && name === 'CONNECT') {
    c.refuse('PORTICO_CONNECT_REFUSED');
    return 1;
  }
  // Upgrades get the same head checks as requests (Host lines, Transfer-Encoding, absolute-form target).
  if (!c.server.acceptable(c, req, all)) return 1;
  if (upgrade) {
    // llhttp reads an upgrade request's body before it hands the socket over (and Portico would drop
    // it), and its declared length would go upstream on a request sent without one. WebSocket upgrades
    // have none (RFC 6455 §4.1).
    const h = req.headers;
    if (h['transfer-encoding'] !== undefined || (h['content-length'] !== undefined && h['content-length'] !== '0')) {
      c.refuse('PORTICO_UPGRADE_WITH_BODY');
      return 1;
    }
    c.upgrade = req;
    return 0;
  }
  c.admit(req);
  return 0;
}

function parserOnBody(this: OwnedParser, chunk: Buffer): void {
  const c = this.conn;
  c.bodyBytes += chunk.length;
  const req = c.incoming;
  if (req === null || req.dumped) return;
  if (!req.pushBody(chunk)) c.pauseReading();
}

function parserOnMessageComplete(this: OwnedParser): void {
  const c = this.conn;
  const req = c.incoming;
  if (req === null) return;
  c.incoming = null;
  c.requestStart = 0;
  req.complete = true;
  if (c.upgrade === req) return;
  if (!req.dumped) req.endBody();
  // Answered already (before its body was read whole): the next request may go.
  if (c.active === null && !req.destroyed) c.next();
}
