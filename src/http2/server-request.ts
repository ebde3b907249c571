/**
 * One HTTP/2 request as the proxy reads it, straight from node:http2's core
 * stream API: the stream, its header object, and the fields of a request the
 * proxy uses. It replaces node:http2's compatibility layer, whose request and
 * response objects (a Readable and a Stream per request, with their listeners)
 * cost a third of Node's own CPU per request in S2 (bench/optimisations.md,
 * section 15). The request body is the stream's readable side.
 */
import type { IncomingHttpHeaders, ServerHttp2Session, ServerHttp2Stream } from 'node:http2';
import type { Socket } from 'node:net';
import type { Readable } from 'node:stream';

/** Symbol under which an HTTP/2 session carries its client's address, read once from its socket. */
export const kRemoteAddress = Symbol('portico.remoteAddress');

/** Symbol under which an HTTP/2 session carries its TLS socket (node:http2 hands out only a proxy of it). */
export const kRawSocket = Symbol('portico.rawSocket');

/** What the listener notes on each session when it starts. */
export interface SessionFacts {
  [kRemoteAddress]?: string;
  [kRawSocket]?: Socket;
}

export class H2ServerRequest {
  readonly httpVersionMajor = 2;
  readonly stream: ServerHttp2Stream;
  /** The header block as node:http2 hands it over: lower-case names, pseudo-headers included. */
  readonly headers: IncomingHttpHeaders;
  /**
   * The same block as node:http2 received it: names (lower-case) and values in turn, repeats apart. Its
   * names are the header object's keys in the object's order; walking them instead of the object spares
   * a `for…in` over it, which V8 keeps as a dictionary and enumerates at a cost of its own per request.
   */
  readonly rawHeaders: readonly string[];
  readonly method: string;
  /** `:path`; absent only for CONNECT, which never reaches the proxy. */
  readonly url: string | undefined;
  readonly remoteAddress: string;

  constructor(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, rawHeaders: readonly string[]) {
    this.stream = stream;
    this.headers = headers;
    this.rawHeaders = rawHeaders;
    this.method = (headers[':method'] as string | undefined) ?? 'GET';
    this.url = headers[':path'] as string | undefined;
    this.remoteAddress = (stream.session as (ServerHttp2Session & SessionFacts) | undefined)?.[kRemoteAddress] ?? '';
  }

  /** The request body: the stream's readable side. */
  get body(): Readable {
    return this.stream;
  }

  /** The whole request has been read, or never will be (the stream is gone). */
  get complete(): boolean {
    const s = this.stream;
    return s.readableEnded || s.destroyed;
  }

  /** The client reset the stream before the exchange ended. */
  get aborted(): boolean {
    return this.stream.aborted;
  }
}
