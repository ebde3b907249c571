/**
 * One HTTP/1.1 request as Portico's own server hands it to the request
 * handler: the fields of node:http's IncomingMessage that the proxy reads, and
 * the body as a Readable (empty and ended for a request without one). The
 * Readable is made only when the body is asked for or its first bytes arrive:
 * most requests (GET, HEAD) have none, and a stream per request was about 2 %
 * of the S1 request path (bench/optimisations.md §33).
 */
import { Readable } from 'node:stream';
import type { IncomingHttpHeaders } from 'node:http';
import type { Socket } from 'node:net';
import { requestHeaders } from './request-headers.js';
import { peerAddress } from '../listen/proxy-protocol.js';

/** Reading more of the connection when the body's reader wants more. */
export interface BodySource {
  resumeReading(): void;
}

/** A request's body: read from the connection as its reader wants it. */
class H1RequestBody extends Readable {
  readonly #req: H1ServerRequest;

  constructor(req: H1ServerRequest) {
    super();
    this.#req = req;
  }

  override _read(): void {
    this.#req.bodyWanted();
  }
}

export class H1ServerRequest {
  readonly method: string;
  /** The request target; an absolute-form one (RFC 9112 §3.2.2) is turned into origin-form when the head is checked (H1Server#acceptable). */
  url: string;
  readonly httpVersionMajor: number;
  readonly httpVersionMinor: number;
  readonly rawHeaders: string[];
  readonly socket: Socket;
  /** Whether the client asked to keep the connection (llhttp's reading of Connection and the version). */
  readonly shouldKeepAlive: boolean;
  /** The whole message, body included, has been read. */
  complete = false;
  /** The response went out before the body was read: what still arrives is dropped. */
  dumped = false;
  /** The `Expect` header, trimmed and lower-case, noted when the head was checked. */
  expect: string | undefined = undefined;
  /**
   * The client sent `Expect: 100-continue` and waits for "100 Continue" before its body: sent when
   * the body is first read (RFC 9110 §10.1.1, as nginx does), so a request refused before that (413,
   * 401, no route) is answered without the client ever sending its body.
   */
  continuePending = false;
  /** The request was abandoned (its connection closed, or it was refused): its body, if made, is destroyed. */
  destroyed = false;
  #headers: IncomingHttpHeaders | undefined = undefined;
  #body: H1RequestBody | null = null;
  readonly #source: BodySource;

  constructor(source: BodySource, socket: Socket, method: string, url: string, major: number, minor: number, rawHeaders: string[], keepAlive: boolean) {
    this.#source = source;
    this.socket = socket;
    this.method = method;
    this.url = url;
    this.httpVersionMajor = major;
    this.httpVersionMinor = minor;
    this.rawHeaders = rawHeaders;
    this.shouldKeepAlive = keepAlive;
  }

  /** HTTP/1.1 or later: chunked encoding and 100 Continue are understood (not by 1.0, nor 0.9). */
  get atLeast11(): boolean {
    return this.httpVersionMajor > 1 || (this.httpVersionMajor === 1 && this.httpVersionMinor >= 1);
  }

  get httpVersion(): string {
    return `${this.httpVersionMajor}.${this.httpVersionMinor}`;
  }

  /** The request body, made on first use: ended at once for a request read whole without one. */
  get body(): Readable {
    return this.#body ?? this.#makeBody();
  }

  #makeBody(): H1RequestBody {
    const body = new H1RequestBody(this);
    this.#body = body;
    if (this.destroyed) body.destroy();
    else if (this.complete && !this.dumped) body.push(null);
    return body;
  }

  /** A piece of the body read from the connection; false when the reader wants no more for now. */
  pushBody(chunk: Buffer): boolean {
    return (this.#body ?? this.#makeBody()).push(chunk);
  }

  /** The body was read whole (`complete` is set): its reader gets its end. */
  endBody(): void {
    this.#body?.push(null);
  }

  /** Whether the body's reader is waiting for more (reading it, with nothing buffered): bodyTimeout's test. */
  get bodyAwaited(): boolean {
    const b = this.#body;
    return b !== null && b.readableFlowing === true && b.readableLength === 0;
  }

  /** Abandons the request: a body being read ends with an error for its reader. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.#body?.destroy();
  }

  get remoteAddress(): string {
    return peerAddress(this.socket);
  }

  /** Built on first use, as node:http does. */
  get headers(): IncomingHttpHeaders {
    return (this.#headers ??= requestHeaders(this.rawHeaders));
  }

  /** The body's reader wants more: "100 Continue" if the client waits for it, and the connection is read again. */
  bodyWanted(): void {
    if (this.continuePending) {
      this.continuePending = false;
      this.socket.write('HTTP/1.1 100 Continue\r\n\r\n', 'latin1');
    }
    this.#source.resumeReading();
  }
}
