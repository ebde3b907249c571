/**
 * One HTTP/1.1 response written by Portico's own server: the parts of
 * node:http's ServerResponse the proxy uses (writeHead, write, end,
 * addTrailers, 'drain', 'close'). The head is serialised here, framed by
 * Content-Length or chunked encoding (close-delimited for HTTP/1.0 clients),
 * and goes out in one write with the first body bytes. Header names and
 * values are checked as node:http checks them, so nothing can split the head.
 */
import { EventEmitter } from 'node:events';
import { STATUS_CODES, type OutgoingHttpHeaders } from 'node:http';
import type { Socket } from 'node:net';
import type { H1ServerRequest } from './server-request.js';
import { isName } from './header-name.js';

/** What a response tells its connection. */
export interface ResponseOwner {
  /** The connection must close after this response (shutdown in progress, or it was asked to). */
  readonly closing: boolean;
  /** `Keep-Alive` hint sent with keep-alive responses, e.g. "timeout=5". */
  readonly keepAliveHint: string;
  responseDone(res: H1ServerResponse): void;
}

/** Who answers for a request whose body stopped arriving (limits.bodyTimeout): the proxy's Exchange. */
export interface BodyTimeoutHandler {
  /** The request body has not moved for bodyTimeout while it was being read: answer 408 or close, and cancel the upstream exchange. */
  bodyTimedOut(): void;
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const INVALID_VALUE = /[^\t\x20-\x7e\x80-\xff]/;

function invalid(code: string, message: string): Error {
  return Object.assign(new TypeError(message), { code });
}

let dateCache = '';
let dateSecond = 0;
/** The Date header's value, made once a second. */
function httpDate(): string {
  const now = Date.now();
  const s = Math.floor(now / 1000);
  if (s !== dateSecond) {
    dateSecond = s;
    dateCache = new Date(now).toUTCString();
  }
  return dateCache;
}

const CRLF = '\r\n';

/**
 * Response bytes a connection may hold unsent before the writer (the upstream) is asked to
 * pause. node:http's 16 KiB made a 64 KiB upstream read pause and resume the upstream for
 * every chunk read; 256 KiB lets chunks gather into one TLS write: 0.65–0.75× the CPU per
 * MiB of 1 MiB responses (bench/optimisations.md, section 10).
 */
const RESPONSE_BUFFER = 256 * 1024;

/**
 * Bodies up to this size end a response in one string write with its head (latin1 keeps every byte as it
 * is); larger ones go as a Buffer beside it, where a copy into a string would cost more than the writev.
 */
const SMALL_BODY = 2048;

const F_LENGTH = 1;
const F_CHUNKED = 2;
const F_DATE = 4;
const F_CLOSE = 8;
/** What the head being written so far says about framing (writeHead is synchronous, so one scratch word serves). */
let flags = 0;

/** `name: value` with CRLF, once both are checked as node:http checks them (nothing can split the head). */
function fieldLine(name: string, value: string, what: 'header' | 'trailer'): string {
  if (!TOKEN.test(name)) throw invalid('ERR_INVALID_HTTP_TOKEN', `invalid ${what} name "${name}"`);
  if (INVALID_VALUE.test(value)) throw invalid('ERR_INVALID_CHAR', `invalid character in ${what} "${name}"`);
  return `${name}: ${value}${CRLF}`;
}

/** A header object as pairs (name, value, …), a list value giving one pair per item. */
function objectPairs(headers: OutgoingHttpHeaders): string[] {
  const pairs: string[] = [];
  for (const name in headers) {
    const v = headers[name];
    if (v === undefined) continue;
    if (Array.isArray(v)) for (const one of v) pairs.push(name, String(one));
    else pairs.push(name, String(v));
  }
  return pairs;
}

/**
 * One header line; notes framing headers in `flags`, and drops Connection and Keep-Alive, which the
 * server writes itself. Checked as node:http checks it unless `checked` (a pair llhttp parsed: its name
 * is a token and its value has no control characters, as fieldLine requires).
 */
function headerLine(name: string, value: string, checked: boolean): string {
  switch (name.length) {
    case 4:
      if (isName(name, 'date', 'Date')) flags |= F_DATE;
      break;
    case 10:
      if (isName(name, 'connection', 'Connection')) {
        if (/\bclose\b/i.test(value)) flags |= F_CLOSE;
        return '';
      }
      if (isName(name, 'keep-alive', 'Keep-Alive')) return '';
      break;
    case 14:
      if (isName(name, 'content-length', 'Content-Length')) flags |= F_LENGTH;
      break;
    case 17:
      if (isName(name, 'transfer-encoding', 'Transfer-Encoding') && /\bchunked\b/i.test(value)) flags |= F_CHUNKED;
      break;
  }
  return checked ? `${name}: ${value}${CRLF}` : fieldLine(name, value, 'header');
}
const LAST_CHUNK = '0\r\n\r\n';

export class H1ServerResponse extends EventEmitter {
  readonly req: H1ServerRequest;
  readonly socket: Socket;
  readonly #owner: ResponseOwner;
  statusCode = 200;
  statusMessage = '';
  headersSent = false;
  writableEnded = false;
  writableFinished = false;
  destroyed = false;
  /** Answers for the request when its body stalls (set by the request handler). */
  exchange: BodyTimeoutHandler | undefined = undefined;
  /** The connection stays open after this response. */
  keepAlive: boolean;
  #head: string | null = null;
  #chunked = false;
  #bodyless = false;
  #trailers = '';

  constructor(owner: ResponseOwner, req: H1ServerRequest) {
    super();
    this.#owner = owner;
    this.req = req;
    this.socket = req.socket;
    this.keepAlive = req.shouldKeepAlive;
  }

  /**
   * Header pairs (name, value, …) or an object; throws ERR_INVALID_HTTP_TOKEN / ERR_INVALID_CHAR as node:http
   * does. The first `checked` entries of a pair list are known valid (pairs llhttp parsed) and not checked again.
   */
  writeHead(status: number, headers?: OutgoingHttpHeaders | readonly string[], checked = 0): this {
    if (this.destroyed) return this;
    if (this.headersSent) throw invalid('ERR_HTTP_HEADERS_SENT', 'response headers already sent');
    let head = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Unknown'}${CRLF}`;
    flags = 0;
    const pairs = headers === undefined ? [] : Array.isArray(headers) ? (headers as readonly string[]) : objectPairs(headers as OutgoingHttpHeaders);
    for (let i = 0; i + 1 < pairs.length; i += 2) head += headerLine(pairs[i] as string, pairs[i + 1] as string, i + 1 < checked);
    const hasLength = (flags & F_LENGTH) !== 0;
    const hasChunked = (flags & F_CHUNKED) !== 0;
    const hasDate = (flags & F_DATE) !== 0;
    const close = (flags & F_CLOSE) !== 0;
    const req = this.req;
    this.#bodyless = req.method === 'HEAD' || status === 204 || status === 304 || status < 200;
    if (!this.#bodyless && !hasLength) {
      if (hasChunked) this.#chunked = true;
      else if (req.atLeast11) {
        this.#chunked = true;
        head += `Transfer-Encoding: chunked${CRLF}`;
      } else {
        // An HTTP/1.0 client can't read chunked encoding: the body ends when the connection closes.
        this.keepAlive = false;
      }
    }
    // A final answer to a client still waiting for "100 Continue": it will not send its body now (or may
    // send it anyway), so the connection can't carry another request (RFC 9110 §10.1.1).
    if (req.continuePending && status >= 200) {
      req.continuePending = false;
      if (!req.complete) this.keepAlive = false;
    }
    if (close || this.#owner.closing) this.keepAlive = false;
    if (!hasDate) head += `Date: ${httpDate()}${CRLF}`;
    const hint = this.#owner.keepAliveHint;
    if (!this.keepAlive) head += `Connection: close${CRLF}${CRLF}`;
    else if (hint === '') head += `Connection: keep-alive${CRLF}${CRLF}`;
    else head += `Connection: keep-alive${CRLF}Keep-Alive: ${hint}${CRLF}${CRLF}`;
    this.statusCode = status;
    this.statusMessage = STATUS_CODES[status] ?? 'Unknown';
    this.headersSent = true;
    this.#head = head;
    return this;
  }

  /**
   * Writes a `103 Early Hints` interim response (RFC 8297) at once, before the final head: header pairs or an
   * object, checked as writeHead checks them (throws, writing nothing, on an invalid one). Nothing is written
   * once the final head is sent, nor to an HTTP/1.0 client, which must not get a 1xx (RFC 9110 §15.2). Cold path.
   */
  writeEarlyHints(headers: OutgoingHttpHeaders | readonly string[]): void {
    if (this.headersSent || this.destroyed || !this.req.atLeast11) return;
    const pairs = Array.isArray(headers) ? (headers as readonly string[]) : objectPairs(headers as OutgoingHttpHeaders);
    let head = `HTTP/1.1 103 Early Hints${CRLF}`;
    for (let i = 0; i + 1 < pairs.length; i += 2) head += fieldLine(pairs[i] as string, pairs[i + 1] as string, 'header');
    this.socket.write(`${head}${CRLF}`, 'latin1');
  }

  /**
   * Writes one body chunk (with the head, the first time); false when the socket's buffer is full ('drain'
   * follows). `written` is called once the socket has written the chunk (with an error if it could not).
   */
  write(chunk: Buffer | string, written?: (err?: Error | null) => void): boolean {
    if (this.writableEnded || this.destroyed) return false;
    if (!this.headersSent) this.writeHead(this.statusCode);
    const s = this.socket;
    const head = this.#head;
    const len = typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.length;
    if (this.#bodyless || len === 0) {
      if (head === null) return !s.writableNeedDrain;
      this.#head = null;
      return s.write(head, 'latin1');
    }
    if (head !== null) {
      this.#head = null;
      if (!this.#chunked) {
        s.cork();
        s.write(head, 'latin1');
        s.write(chunk, written);
        s.uncork();
        return s.writableLength < RESPONSE_BUFFER;
      }
      s.cork();
      s.write(`${head}${len.toString(16)}${CRLF}`, 'latin1');
    } else if (this.#chunked) {
      s.cork();
      s.write(`${len.toString(16)}${CRLF}`, 'latin1');
    } else {
      s.write(chunk, written);
      return s.writableLength < RESPONSE_BUFFER;
    }
    s.write(chunk, written);
    s.write(CRLF, 'latin1');
    s.uncork();
    return s.writableLength < RESPONSE_BUFFER;
  }

  /** Trailer fields, sent after a chunked body (ignored otherwise, as node:http does). */
  addTrailers(trailers: OutgoingHttpHeaders): void {
    const pairs = objectPairs(trailers);
    for (let i = 0; i + 1 < pairs.length; i += 2) this.#trailers += fieldLine(pairs[i] as string, pairs[i + 1] as string, 'trailer');
  }

  /** Ends the response: the last chunk (through write()), the head if still unsent, and the end of a chunked body, corked into one write. */
  end(chunk?: Buffer | string): this {
    if (this.writableEnded || this.destroyed) return this;
    const head = this.#head;
    if (head !== null && chunk !== undefined && typeof chunk !== 'string' && chunk.length <= SMALL_BODY && !this.#chunked && !this.#bodyless) {
      // A small whole answer (the usual API response): head and body as one string in one write, instead of
      // two writes corked into a writev.
      this.#head = null;
      this.socket.write(head + chunk.toString('latin1'), 'latin1');
      return this.#ended();
    }
    if (!this.headersSent) {
      const status = this.statusCode;
      // A whole response known up front gets a Content-Length, not chunked encoding.
      const length = chunk === undefined ? 0 : typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.length;
      this.writeHead(status, status === 204 || status === 304 ? [] : ['Content-Length', String(length)]);
    }
    const s = this.socket;
    s.cork();
    if (chunk !== undefined) this.write(chunk);
    const rest = this.#head;
    if (rest !== null) {
      this.#head = null;
      s.write(rest, 'latin1');
    }
    if (this.#chunked) s.write(this.#trailers === '' ? LAST_CHUNK : `0${CRLF}${this.#trailers}${CRLF}`, 'latin1');
    s.uncork();
    return this.#ended();
  }

  #ended(): this {
    this.writableEnded = true;
    this.writableFinished = true;
    this.#owner.responseDone(this);
    return this;
  }

  /** Cuts the response short: the connection closes, so the client can't take a partial body for a whole one. */
  destroy(): this {
    if (this.destroyed) return this;
    this.destroyed = true;
    this.socket.destroy();
    return this;
  }
}
