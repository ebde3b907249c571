/**
 * One HTTP/1.1 request as Portico's own server hands it to the request
 * handler: the fields of node:http's IncomingMessage that the proxy reads, and
 * the body as a Readable (empty and ended for a request without one).
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

export class H1ServerRequest extends Readable {
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
  #headers: IncomingHttpHeaders | undefined = undefined;
  readonly #source: BodySource;

  constructor(source: BodySource, socket: Socket, method: string, url: string, major: number, minor: number, rawHeaders: string[], keepAlive: boolean) {
    super();
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

  /** The request body: this request itself. */
  get body(): Readable {
    return this;
  }

  get remoteAddress(): string {
    return peerAddress(this.socket);
  }

  /** Built on first use, as node:http does. */
  get headers(): IncomingHttpHeaders {
    return (this.#headers ??= requestHeaders(this.rawHeaders));
  }

  override _read(): void {
    if (this.continuePending) {
      this.continuePending = false;
      this.socket.write('HTTP/1.1 100 Continue\r\n\r\n', 'latin1');
    }
    this.#source.resumeReading();
  }
}
