/**
 * The per-request state of one proxied exchange, in fixed fields. It is also
 * the undici dispatch handler for HTTP/1.1 upstreams: the handler methods live
 * on the prototype, so no closure is made per request.
 */
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Http2ServerRequest } from 'node:http2';
import type { Plan, RoutePlan } from '../config/plan.js';
import type { ErrorCode } from '../errors.js';
import type { UpstreamRequest } from '../upstream/open-request.js';
import type { Target } from '../upstream/target.js';
import { onClientDrain, onH1Error, onH1Headers, rawToHeaders } from './forward-h1.js';
import type { ProxyState } from './handle-request.js';
import type { ClientResponse } from './respond-error.js';

/** A client request, HTTP/1.1 or HTTP/2 compatibility API. */
export type ClientRequest = IncomingMessage | Http2ServerRequest;

/** Per-request state, in fixed fields. */
export class Exchange {
  readonly req: ClientRequest;
  readonly res: ClientResponse;
  readonly state: ProxyState;
  readonly plan: Plan;
  readonly h2: boolean;
  readonly start: number;
  host = '';
  connName = '';
  route: RoutePlan | undefined = undefined;
  target: Target | undefined = undefined;
  upstreamReq: UpstreamRequest | undefined = undefined;
  upstreamRes: IncomingMessage | undefined = undefined;
  status = 0;
  bytes = 0;
  requestBytes = 0;
  error: ErrorCode | undefined = undefined;
  errorDetail: string | undefined = undefined;
  attempts = 0;
  retriedStale = false;
  method: string;
  path = '';
  headers: OutgoingHttpHeaders | undefined = undefined;
  timedOut = false;
  /** undici path: aborts the upstream exchange. */
  abortUpstream: ((err?: Error) => void) | undefined = undefined;
  /** undici path: resumes a response paused for back-pressure. */
  resumeUpstream: (() => void) | undefined = undefined;
  /** Whether response headers were received from the upstream. */
  responseStarted = false;
  drainBound = false;

  constructor(req: ClientRequest, res: ClientResponse, state: ProxyState) {
    this.req = req;
    this.res = res;
    this.state = state;
    this.plan = state.plan;
    this.h2 = req.httpVersionMajor === 2;
    this.start = performance.now();
    this.method = req.method ?? 'GET';
  }

  // undici dispatch handler (HTTP/1.1 upstreams): methods on the prototype, no per-request closures.
  onConnect(abort: (err?: Error) => void): void {
    this.abortUpstream = abort;
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void): boolean {
    return onH1Headers(this, statusCode, rawHeaders, resume);
  }

  onData(chunk: Buffer): boolean {
    this.bytes += chunk.length;
    const ok = (this.res as ServerResponse).write(chunk);
    if (!ok && !this.drainBound) {
      this.drainBound = true;
      this.res.on('drain', onClientDrain.bind(this));
    }
    return ok;
  }

  onComplete(trailers: (Buffer | string)[] | null): void {
    if (trailers !== null && trailers.length > 0) (this.res as ServerResponse).addTrailers(rawToHeaders(trailers));
    this.res.end();
  }

  onError(err: Error): void {
    onH1Error(this, err as NodeJS.ErrnoException);
  }
}
