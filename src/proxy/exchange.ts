/**
 * The per-request state of one proxied exchange, in fixed fields. It is also
 * the response handler of HTTP/1.1 upstream connections: the handler methods
 * live on the prototype, so no closure is made per request.
 */
import { performance } from 'node:perf_hooks';
import type { ClientRequest as ClientRequestOut, IncomingMessage, OutgoingHttpHeaders } from 'node:http';
import type { Readable } from 'node:stream';
import type { H2ServerRequest } from '../http2/server-request.js';
import type { HostPlan, Plan, RoutePlan, UpstreamPlan } from '../config/plan.js';
import type { H1ServerRequest } from '../http1/server-request.js';
import type { ErrorCode } from '../errors.js';
import type { H1Connection, H1Handler, UpstreamError } from '../upstream/h1-connection.js';
import type { UpstreamRequest } from '../upstream/open-request.js';
import type { Target } from '../upstream/target.js';
import { chunkWritten, onClientDrain, onDrainResume, onH1Error, onH1Headers, pairsToHeaders } from './forward-h1.js';
import { dropTrailerFields } from './forward-headers.js';
import { forwardH1Hints } from './early-hints.js';
import { onBodyTimeout, type ProxyState } from './handle-request.js';
import type { ClientResponse } from './respond-error.js';
import { flushEncoder, type Encoder, type Encoding } from './compress.js';
import { fillChunk, finishFill, type CacheFill, type CacheMiss } from '../cache/cache-exchange.js';
import type { CachedResponse } from '../cache/response-cache.js';

/** A client request: Portico's own HTTP/1.1 server (src/http1/), or an HTTP/2 stream (src/http2/). */
export type ClientRequest = H1ServerRequest | H2ServerRequest;

/** Per-request state, in fixed fields. */
export class Exchange implements H1Handler {
  readonly req: ClientRequest;
  readonly res: ClientResponse;
  readonly state: ProxyState;
  readonly plan: Plan;
  readonly h2: boolean;
  /** Came in over plain HTTP (a host with plainHttp "serve"): no TLS, so no Host/SNI check, and X-Forwarded-Proto "http". */
  readonly plain: boolean;
  readonly start: number;
  host = '';
  connName = '';
  /** "cookie" load balancing: the target value the client's cookie carried. */
  stickySent: string | undefined = undefined;
  /** forwarding.requestId: the request's X-Request-ID, once known. */
  requestId: string | undefined = undefined;
  /** The basicAuth user the request proved. */
  user: string | undefined = undefined;
  /** The client's address when it was worked out (allowFrom, rateLimit): the peer, or the client behind a trusted proxy. */
  client: string | undefined = undefined;
  /** The host, once the request is known to be for it on this connection. */
  hostPlan: HostPlan | undefined = undefined;
  route: RoutePlan | undefined = undefined;
  /** The route's upstream, once the request is forwarded. */
  upstream: UpstreamPlan | undefined = undefined;
  target: Target | undefined = undefined;
  upstreamReq: UpstreamRequest | undefined = undefined;
  upstreamRes: IncomingMessage | undefined = undefined;
  status = 0;
  /**
   * The access line's `bytes`: response body bytes handed to the client's connection, as sent (after
   * compression); 0 for HEAD, 304 and other answers without a body. Counted where the bytes pass: the
   * upstream's chunks as they are written, the encoder's output, the file's chunks, a ready answer's body.
   */
  bytes = 0;
  requestBytes = 0;
  /** "requestBuffer": the whole body, read before sending (sent in one piece, and again to another target on a retry). */
  bodyBuffer: Buffer | undefined = undefined;
  error: ErrorCode | undefined = undefined;
  errorDetail: string | undefined = undefined;
  attempts = 0;
  /** Retries: the targets that failed this request (targetBit of each), so that none is tried twice. */
  failedTargets = 0;
  /** least-connections: the target this request counts against (Target.leastConnInFlight). */
  inFlightTarget: Target | undefined = undefined;
  /** maxRequests: the target whose slot this request holds (src/proxy/upstream-limit.ts). */
  slot: Target | undefined = undefined;
  /** maxRequests: while the request waits in its upstream's queue, the timer that gives up on it. */
  queueTimer: NodeJS.Timeout | undefined = undefined;
  /** "cookie" load balancing: the target index the client's cookie named (-1 for none), kept for a queued request. */
  affinity = -1;
  /** forwardAuth: the question to the authentication service while it is asked. */
  authReq: ClientRequestOut | undefined = undefined;
  /** forwardAuth: the headers its 2xx answer copies into the upstream request. */
  authHeaders: readonly (readonly [string, string])[] | undefined = undefined;
  retriedStale = false;
  method: string;
  path = '';
  /** The request's path and query after normalisation (what routing saw), before stripPrefix/addPrefix. */
  url = '';
  headers: OutgoingHttpHeaders | undefined = undefined;
  timedOut = false;
  /** HTTP/1.1 upstreams: the connection carrying this exchange, until its response ends or fails. */
  upstreamConn: H1Connection | undefined = undefined;
  /** Whether response headers were received from the upstream. */
  responseStarted = false;
  drainBound = false;
  /** Recyclable body chunks written to the client and not yet reported written, oldest first. */
  written: Buffer[] | undefined = undefined;
  onWritten: ((err?: Error | null) => void) | undefined = undefined;
  /** "compress": the encoder the response body goes through, and its encoding. */
  encoder: Encoder | undefined = undefined;
  encoding: Encoding = 'gzip';
  /** The body is streamed (no Content-Length): what the encoder holds goes out after each chunk. */
  flushEach = false;
  encoderDrainBound = false;
  /** "files" routes: the file's body stream, while it is read. */
  fileBody: Readable | undefined = undefined;
  /** "cache" routes: the response's Cache-Status (RFC 9211), once the cache was asked. */
  cacheStatus: string | undefined = undefined;
  /** "cache" routes: the access line's "cache" field ("hit", "revalidated", "stale", "miss", "refresh", "bypass"). */
  cacheResult: string | undefined = undefined;
  /** "cache" routes: a GET the cache could not answer, until its response arrives. */
  cacheMiss: CacheMiss | undefined = undefined;
  /** "cache" routes: the response being copied into the cache. */
  cacheFill: CacheFill | undefined = undefined;
  /** "cache" routes: a stale stored response for the request, revalidated upstream or served if the upstream fails. */
  stale: CachedResponse | undefined = undefined;
  /** "cache" routes: a stored response is being sent (not an upstream's). */
  replaying = false;
  /** "cache" routes: the request key whose lock this request holds (its response will be stored) or waits on (another's is being fetched). */
  cacheLock: string | undefined = undefined;
  /** "cache" routes: while waiting on another request's lock, the timer that gives up on it. */
  lockTimer: NodeJS.Timeout | undefined = undefined;
  /** "cache" routes: the request key an unsafe method (POST, PUT, …) invalidates again once it is answered. */
  cacheInvalidate: string | undefined = undefined;

  constructor(req: ClientRequest, res: ClientResponse, state: ProxyState) {
    this.req = req;
    this.res = res;
    this.state = state;
    this.plan = state.plan;
    this.h2 = req.httpVersionMajor === 2;
    this.plain = !this.h2 && ((req as H1ServerRequest).socket as { encrypted?: boolean }).encrypted !== true;
    this.start = performance.now();
    this.method = req.method ?? 'GET';
  }

  /** Gives up on the upstream exchange (client gone, or answered already). */
  cancelUpstream(): void {
    const c = this.upstreamConn;
    if (c === undefined) return;
    this.upstreamConn = undefined;
    c.abort();
  }

  // H1Handler (HTTP/1.1 upstreams): methods on the prototype, no per-request closures.
  onUpstreamHeaders(statusCode: number, headers: string[]): boolean {
    return onH1Headers(this, statusCode, headers);
  }

  onUpstreamHints(headers: string[]): void {
    forwardH1Hints(this, headers);
  }

  onUpstreamData(chunk: Buffer, recyclable: boolean): boolean {
    if (this.cacheFill !== undefined) fillChunk(this, chunk, recyclable);
    // An encoded body is counted as it leaves the encoder (startEncoder): `bytes` is what the client is sent.
    if (this.encoder !== undefined) return this.writeEncoded(chunk, recyclable);
    this.bytes += chunk.length;
    let ok: boolean;
    if (recyclable) {
      // A read buffer goes back to the upstream side once the client's socket has written it (large bodies only).
      (this.written ??= []).push(chunk);
      ok = this.res.write(chunk, (this.onWritten ??= chunkWritten.bind(this)));
    } else {
      ok = this.res.write(chunk);
    }
    if (!ok && !this.drainBound) {
      this.drainBound = true;
      // Bound: an HTTP/2 response registers it on its stream, which then calls it (once per exchange that fills its client).
      this.res.on('drain', onClientDrain.bind(this));
    }
    return ok;
  }

  /** A body chunk into the encoder; the upstream pauses while the encoder (or the client behind it) is full. */
  writeEncoded(chunk: Buffer, recyclable: boolean): boolean {
    const e = this.encoder!;
    let ok: boolean;
    if (recyclable) {
      // The encoder's write callback comes once it has consumed the chunk: then the read buffer can go back.
      (this.written ??= []).push(chunk);
      ok = e.write(chunk, (this.onWritten ??= chunkWritten.bind(this)));
    } else {
      ok = e.write(chunk);
    }
    if (this.flushEach) flushEncoder(e, this.encoding);
    if (!ok && !this.encoderDrainBound) {
      this.encoderDrainBound = true;
      e.on('drain', onDrainResume);
    }
    return ok;
  }

  onUpstreamEnd(last: Buffer | null, trailers: string[] | null): void {
    this.upstreamConn = undefined;
    if (this.cacheFill !== undefined) finishFill(this, last, trailers !== null && trailers.length > 0);
    if (trailers !== null && trailers.length > 0) this.res.addTrailers(dropTrailerFields(pairsToHeaders(trailers)));
    if (this.encoder !== undefined) {
      // The client's response ends when the encoder has given out its last bytes ('end', see startEncoder),
      // which counts them.
      this.encoder.end(last ?? undefined);
      return;
    }
    if (last === null) {
      this.res.end();
    } else {
      this.bytes += last.length;
      this.res.end(last);
    }
  }

  onUpstreamError(err: UpstreamError): void {
    this.upstreamConn = undefined;
    onH1Error(this, err);
  }

  /** limits.bodyTimeout: the request body stopped arriving while it was read (the client's server calls this). */
  bodyTimedOut(): void {
    onBodyTimeout(this);
  }

  /** More than the chunk just handed over still waits for its write (write callbacks come a loop turn later, even when the socket took it at once). */
  clientBehind(): boolean {
    return this.written !== undefined && this.written.length > 1;
  }
}
