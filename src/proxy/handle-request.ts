/**
 * The request handler: Host/SNI check, routing, error mapping, access log, and
 * forwarding to HTTP/2 upstreams (HTTP/1.1 upstreams: forward-h1.ts). Hot path:
 * everything it needs was compiled into the Plan; it does no I/O besides the
 * proxied exchange.
 */
import { performance } from 'node:perf_hooks';
import type { H1ServerRequest } from '../http1/server-request.js';
import type { OpenTunnel } from './open-tunnels.js';
import type { IncomingMessage, IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import type { ServerHttp2Session, ServerHttp2Stream } from 'node:http2';
import type { Readable, Writable } from 'node:stream';
import type { H2ServerRequest } from '../http2/server-request.js';
import type { H2ServerResponse } from '../http2/server-response.js';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { constants as h2constants } from 'node:http2';
import type { AccessLog } from '../log/access-line.js';
import { lookupHost, lookupRoute, rewritePath, type HostPlan, type Plan, type UpstreamPlan, type WeightedTargets } from '../config/plan.js';
import { ERRORS, type ErrorCode } from '../errors.js';
import { openUpstreamRequest, type UpstreamRequest } from '../upstream/open-request.js';
import type { Target } from '../upstream/target.js';
import { buildRequestHeaders, buildResponseHeaders, dropTrailerFields } from './forward-headers.js';
import { applyToObject } from './header-rules.js';
import { normalizeHost } from './normalize-host.js';
import { normalizePath } from './normalize-path.js';
import { addSetCookie, readCookie, stickySetCookie } from './sticky-cookie.js';
import { errorBody, resetResponse, respondError, type ClientResponse } from './respond-error.js';
import { Exchange, type ClientRequest } from './exchange.js';
import { exchangeOf, tagExchange } from './exchange-of.js';
import { dispatchH1 } from './forward-h1.js';
import { wantsHints, watchH2Hints } from './early-hints.js';
import { answerHeaders, type AnswerPlan } from './route-answer.js';
import { clientAddress, isInList } from './client-address.js';
import { requestIdFor } from './request-id.js';
import { bufferRequestBody } from './request-buffer.js';
import { kClientCert, type WithClientCert } from '../tls/client-auth.js';
import { markEncodedObject, markVaryObject, markWeakObject, objectGetter, type Encoding } from './compress.js';
import { decideEncoding, dropEncoder, flushOnData, startEncoder } from './encode-response.js';
import { serveFiles } from '../files/serve-files.js';
import { applyAuthHeaders, askForwardAuth, verdictUser, type AuthVerdict } from './forward-auth.js';
import { anyAvailable, leaveQueue, releaseSlot, takeSlot, waitForSlot } from './upstream-limit.js';
import { addCacheStatus, addValidators, answerFromCache, answerWithStale, finishFill, headerObjectPairs, invalidateAnswered, leaveCacheLock, onFillData, serveStaleOnError, startFill } from '../cache/cache-exchange.js';
import { FAILED_BEFORE_RESPONSE, IDEMPOTENT, isTargetFailure, RETRYABLE, upstreamErrorCode } from './upstream-errors.js';
import { AUTH_BUSY } from './basic-auth.js';
import { interceptH2, releaseH2 } from './intercept-errors.js';
import { hasEndStream, isEndedByReset, takeRestOfBody } from '../upstream/h2-end-stream.js';

export type { ClientRequest } from './exchange.js';

const { NGHTTP2_NO_ERROR, NGHTTP2_REFUSED_STREAM } = h2constants;

/** The node:http2 stream under an http2-wrapper request: its RST_STREAM code tells how it closed. */
interface WrappedStream {
  readonly _request?: { readonly rstCode?: number; readonly destroyed: boolean; destroy(err?: Error): void } | undefined;
}

/** What an HTTP/2 upstream request's stream is destroyed with when Portico gives the exchange up: node:http2 sends RST_STREAM INTERNAL_ERROR. */
const UPSTREAM_CANCELLED = Object.assign(new Error('upstream request cancelled by Portico'), { code: 'PORTICO_UPSTREAM_CANCELLED' });

/**
 * Gives up an HTTP/2 upstream request (the client went away, its body is too large or stalled, the
 * upstream did not answer in time; `err` is what its 'error' then carries, none for Portico's own cancel).
 * http2-wrapper's destroy() destroys its stream without an error, which node:http2 sends as
 * RST_STREAM NO_ERROR, and a node:http2 upstream then ends the request body as if it were whole: a
 * cut-off upload was processed as complete. Its stream is destroyed with an error first, so the reset
 * says INTERNAL_ERROR and the upstream sees the request aborted. Cold path.
 */
export function abortUpstreamRequest(up: UpstreamRequest | undefined, err: Error = UPSTREAM_CANCELLED): void {
  if (up === undefined) return;
  const stream = (up as unknown as WrappedStream)._request;
  if (stream !== undefined && !stream.destroyed) stream.destroy(err);
  up.destroy(err === UPSTREAM_CANCELLED ? undefined : err);
}

/** The RST_STREAM code of an HTTP/2 upstream request's stream (0 while open or closed cleanly). Cold path. */
export function upstreamRstCode(up: UpstreamRequest | undefined): number {
  return (up as unknown as WrappedStream | undefined)?._request?.rstCode ?? 0;
}

/** Symbol under which a TLS socket (HTTP/1.1) or an HTTP/2 session carries its connection name. */
export const kConnName = Symbol('portico.connName');

/** A socket or session tagged with the name its TLS connection was made for. */
export interface Tagged {
  [kConnName]?: string;
}

/** Mutable state shared with the listeners: the current Plan. */
export interface ProxyState {
  plan: Plan;
  readonly log: Logger;
  /** Writes the access lines (to the log's destination, when `plan.accessLog`). */
  readonly access: AccessLog;
  /**
   * Why Portico is closing every connection still open, set just before it does: `"shutdown"` once
   * limits.shutdownTimeout has passed in a stop. The access lines of the requests and tunnels cut then say so
   * as their `reason`. Read only when a line is written for a cut request or a closed tunnel.
   */
  closeReason?: string | undefined;
  /** The open tunnels (upgrades), which a reload looks through for those it no longer serves (open-tunnels.ts). */
  readonly tunnels: Set<OpenTunnel>;
}

/** The Client-Cert value (RFC 9440) of the request's connection: its verified client certificate, if it showed one. */
export function connectionClientCert(req: ClientRequest): string | undefined {
  return connectionOf(req)[kClientCert];
}

/**
 * Whether a request for `reqHost` may use a connection opened for `connName`.
 * Strict by default (RFC 9110 §15.5.20: 421 for a misdirected request); the
 * per-host "same-certificate" relaxation allows HTTP/2 coalescing between names
 * served by the same certificate whose hosts both opt in.
 */
export function isAllowedOnConnection(plan: Plan, reqHostName: string, reqHost: HostPlan | undefined, connName: string): boolean {
  if (reqHostName === connName) return true;
  if (reqHost === undefined || !reqHost.sharing) return false;
  const connHost = lookupHost(plan, connName) ?? plan.defaultHost;
  return connHost !== undefined && connHost.sharing && connHost.certId === reqHost.certId;
}

/** Builds the `request` listener for the HTTPS server. */
export function createRequestHandler(state: ProxyState): (req: ClientRequest, res: ClientResponse) => void {
  return function handleRequest(req, res) {
    const ex = new Exchange(req, res, state);
    res.exchange = ex;
    res.on('close', onResponseClose);
    route(ex);
  };
}

export function fail(ex: Exchange, code: ErrorCode, detail?: string, extra?: readonly [string, string]): void {
  // A stale stored response for the request, within its stale-if-error window: sent instead of the error.
  if (ex.stale !== undefined && serveStaleOnError(ex, code)) return;
  ex.error = code;
  ex.errorDetail = detail;
  if (ex.target !== undefined && code !== 'PORTICO_BODY_TIMEOUT') ex.state.log.warn({ code, upstream: ex.target.url, route: ex.route?.id, detail }, 'upstream error');
  // 421 on HTTP/1.1 closes the connection: a client must not send more requests on it. So does a 413
  // with the body still arriving, as nginx does: rather than read the rest of a body that is too large,
  // the connection closes (lingering a moment, so the client reads the answer; src/http1/server-connection.ts);
  // and a 408 for a body that stopped arriving (bodyTimeout), whose rest is not worth waiting for.
  const pages = ex.hostPlan?.errorPages;
  const close = !ex.h2 && (code === 'PORTICO_SNI_HOST_MISMATCH' || ((code === 'PORTICO_BODY_TOO_LARGE' || code === 'PORTICO_BODY_TIMEOUT') && !ex.req.complete));
  const page = pages === undefined ? undefined : pages.get(ERRORS[code].status);
  // Counted before the answer is sent: an HTTP/1.1 response writes its access line as it ends.
  if (!ex.res.headersSent && ex.method !== 'HEAD') ex.bytes = errorBody(code, page).length;
  respondError(ex.res, code, close, extra, page);
  dropRequestBody(ex);
}

/**
 * A request answered before its body was read: the rest of the body is not wanted. HTTP/1.1 reads and
 * drops it (the connection must get past it); an HTTP/2 stream is closed with NO_ERROR once the answer is
 * sent (RFC 9113 §8.1), which tells the client to stop sending, as nginx does.
 */
export function dropRequestBody(ex: Exchange): void {
  if (ex.req.complete) return;
  if (!ex.h2) return void ex.req.body.resume();
  // A request without a body (GET, HEAD) has nothing to stop; closing its stream could even overtake the
  // answer (Node 26 resets a HEAD request's stream before its HEADERS frame went out).
  const stream = (ex.req as H2ServerRequest).stream;
  // After the frames of the answer went out: Node writes them in a native immediate, which runs before this
  // one. Closed at once, Node 26's nghttp2 drops the HEADERS of an answer without a body (a 204) for the reset.
  if (!stream.endAfterHeaders) setImmediate(closeStreamNoError, stream);
}

function closeStreamNoError(stream: ServerHttp2Stream): void {
  if (!stream.closed) stream.close(NGHTTP2_NO_ERROR);
}

/**
 * What a connection's last request's Host came to, kept on its socket (HTTP/1.1) or session (HTTP/2): the
 * next request with the same Host, under the same Plan, skips normalizing it, the host lookup and the
 * Host/SNI check (most connections ask for one host throughout).
 */
interface HostVerdict {
  readonly raw: string;
  readonly plan: Plan;
  readonly host: string;
  readonly hostPlan: HostPlan | undefined;
  /** The Host/SNI rule lets this host use the connection. */
  readonly allowed: boolean;
}

const kHostVerdict = Symbol('portico.hostVerdict');

export interface WithHostVerdict {
  [kHostVerdict]?: HostVerdict;
}

/**
 * The verdict on a request's Host (`rawHost`) on connection `conn` (its socket or session) under `plan`: the one kept
 * from the connection's last request when the Host and the Plan are the same, else made and kept. Undefined, and
 * nothing kept, for a Host that names no valid host. `plain`: the plain HTTP listener, where no Host/SNI rule applies;
 * it uses this too, so a request it proxies finds the verdict made (src/listen/http-listener.ts).
 */
export function hostVerdict(conn: WithHostVerdict, rawHost: string | undefined, plan: Plan, plain: boolean, connName: string): HostVerdict | undefined {
  const v = conn[kHostVerdict];
  if (v !== undefined && v.raw === rawHost && v.plan === plan) return v;
  const host = normalizeHost(rawHost);
  if (host === undefined) return undefined;
  const hostPlan = lookupHost(plan, host);
  return (conn[kHostVerdict] = { raw: rawHost as string, plan, host, hostPlan, allowed: plain || isAllowedOnConnection(plan, host, hostPlan, connName) });
}

/** What Portico keeps on a client connection: the name its TLS connection was made for, its client certificate, its last Host's verdict. */
type ConnectionFacts = Tagged & WithClientCert & WithHostVerdict;

/** The socket (HTTP/1.1) or session (HTTP/2) a request came on, where its connection's facts are kept. */
function connectionOf(req: ClientRequest): ConnectionFacts {
  return req.httpVersionMajor === 2 ? ((req as H2ServerRequest).stream.session as ServerHttp2Session & ConnectionFacts) : ((req as H1ServerRequest).socket as Socket & ConnectionFacts);
}

function route(ex: Exchange): void {
  const { req, plan } = ex;
  const rawHost = ex.h2 ? ((req.headers[':authority'] as string | undefined) ?? req.headers.host) : req.headers.host;
  // HTTP/2 reaches Portico only over TLS: an `http` (or other) :scheme names another origin (RFC 9110 §4.3.3, §7.4).
  if (ex.h2 && req.headers[':scheme'] !== 'https') return fail(ex, normalizeHost(rawHost) === undefined ? 'PORTICO_BAD_HOST' : 'PORTICO_BAD_REQUEST', 'the :scheme is not https');
  const conn = connectionOf(req);
  ex.connName = conn[kConnName] ?? '';
  const v = hostVerdict(conn, rawHost, plan, ex.plain, ex.connName);
  if (v === undefined) return fail(ex, 'PORTICO_BAD_HOST');
  ex.host = v.host;
  if (!v.allowed) return fail(ex, 'PORTICO_SNI_HOST_MISMATCH');
  // HTTP/2: a Host header beside the :authority must name the same host (RFC 9113 §8.3.1), or what reads
  // the Host (a route's match.headers) would see another host than the one checked against the connection.
  if (ex.h2) {
    const h = req.headers.host;
    if (h !== undefined && h !== rawHost && normalizeHost(h) !== v.host) return fail(ex, 'PORTICO_BAD_HOST', 'the Host header names another host than :authority');
  }
  const hostPlan = v.hostPlan;
  if (hostPlan === undefined || (ex.plain && !hostPlan.servePlain)) return fail(ex, 'PORTICO_UNKNOWN_HOST');
  ex.hostPlan = hostPlan;
  const target = req.url ?? '';
  if (target.charCodeAt(0) !== 47 /* '/' */) {
    if (target === '*') return answerAsterisk(ex);
    return fail(ex, 'PORTICO_BAD_REQUEST', 'request target is not origin-form');
  }
  const url = normalizePath(target);
  if (url === undefined) return fail(ex, 'PORTICO_BAD_REQUEST', 'the path climbs above the root, hides a dot segment behind an escaped slash, or has a # fragment');
  ex.url = url;
  const r = lookupRoute(hostPlan, url, req);
  if (r === undefined) return fail(ex, 'PORTICO_NO_ROUTE');
  ex.route = r;
  if (r.allow !== undefined || r.deny !== undefined || r.limit !== undefined) {
    const client = (ex.client = clientAddress(req.remoteAddress, req, plan.trustedProxies));
    if (r.deny !== undefined && isInList(r.deny, client)) return fail(ex, 'PORTICO_FORBIDDEN', 'denyFrom');
    if (r.allow !== undefined && !isInList(r.allow, client)) return fail(ex, 'PORTICO_FORBIDDEN');
    if (r.limit !== undefined) {
      const wait = r.limit.take(client);
      if (wait > 0) return fail(ex, 'PORTICO_RATE_LIMITED', undefined, ['retry-after', String(wait)]);
    }
  }
  ex.path = rewritePath(r, url);
  if (r.auth !== undefined) {
    const user = r.auth.check(req.headers.authorization);
    if (typeof user !== 'string') {
      if (user === undefined) return fail(ex, 'PORTICO_UNAUTHORIZED', undefined, ['www-authenticate', r.auth.challenge]);
      if (user === AUTH_BUSY) return fail(ex, 'PORTICO_AUTH_BUSY', undefined, ['retry-after', '1']);
      user.then(onAuthChecked.bind(ex), onAuthChecked.bind(ex, undefined));
      return;
    }
    ex.user = user;
  }
  admitted(ex);
}

/**
 * The methods Portico passes on to upstreams, for `OPTIONS *`: every method but CONNECT (405, no
 * tunnels), the standard ones listed (RFC 9110 §9, PATCH of RFC 5789). An upstream may still refuse one.
 */
const SERVER_ALLOW = 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE';

/**
 * An asterisk-form target (RFC 9112 §3.2.4, HTTP/2's `:path` "*", RFC 9113 §8.3.1): `OPTIONS *` asks
 * about the server as a whole, not a resource (RFC 9110 §9.3.7), so Portico answers it itself, after the
 * Host and Host/SNI checks like any request: 200, Allow, no body, as Apache does (nginx answers 400). No
 * route or upstream is involved. Any other method with "*" is 400. Cold path: only a target that does
 * not start with "/" gets here.
 */
function answerAsterisk(ex: Exchange): void {
  if (ex.method !== 'OPTIONS') return fail(ex, 'PORTICO_BAD_TARGET', 'the asterisk-form target "*" is only for OPTIONS (RFC 9112 §3.2.4)');
  ex.status = 200;
  ex.res.writeHead(200, { allow: SERVER_ALLOW, 'content-length': 0 });
  ex.res.end();
  // A body (none is expected) is read and dropped, bounded by bodyTimeout; not dropRequestBody(): on
  // Node 26 its RST_STREAM right after an answer without DATA cancels that answer's HEADERS unsent.
  if (!ex.req.complete) ex.req.body.resume();
}

/** Continues a request whose credentials were checked off-thread. */
function onAuthChecked(this: Exchange, user: string | undefined): void {
  if (this.res.destroyed) return;
  if (user === undefined) return fail(this, 'PORTICO_UNAUTHORIZED', undefined, ['www-authenticate', this.route!.auth!.challenge]);
  this.user = user;
  admitted(this);
}

/** A request past allowFrom, rateLimit and basicAuth: its route's authentication service is asked, if it has one. */
function admitted(ex: Exchange): void {
  const fa = ex.route!.forwardAuth;
  if (fa === undefined) return dispatch(ex);
  const { req, plan } = ex;
  ex.authReq = askForwardAuth(
    fa,
    {
      method: ex.method,
      headers: req.headers,
      // The normalised path, as routing saw it: the service must judge the same path the upstream gets,
      // never "/public/../admin" for a request that is served as "/admin".
      uri: ex.url,
      host: (ex.h2 ? ((req.headers[':authority'] as string | undefined) ?? req.headers.host) : req.headers.host) ?? ex.host,
      proto: ex.plain ? 'http' : 'https',
      client: ex.client ?? clientAddress(req.remoteAddress, req, plan.trustedProxies),
      trusted: isTrustedPeer(plan, req.remoteAddress),
    },
    onForwardAuth.bind(ex),
  );
}

/** The authentication service's verdict on a request. */
function onForwardAuth(this: Exchange, v: AuthVerdict): void {
  const ex = this;
  ex.authReq = undefined;
  if (ex.res.destroyed || ex.res.writableEnded) return;
  if (v.kind === 'allow') {
    ex.authHeaders = v.headers;
    ex.user ??= verdictUser(v.headers);
    return dispatch(ex);
  }
  if (v.kind === 'failed') {
    ex.state.log.warn({ route: ex.route!.id, detail: v.detail }, 'forwardAuth: the authentication service could not be asked');
    return fail(ex, 'PORTICO_FORWARD_AUTH_FAILED', v.detail);
  }
  // Its answer (a redirect to a login page, 401, 403) is the client's, as it was given.
  ex.errorDetail = 'answered by forwardAuth';
  ex.status = v.status;
  try {
    ex.res.writeHead(v.status, v.headers);
  } catch (err) {
    return fail(ex, 'PORTICO_FORWARD_AUTH_FAILED', `invalid header from the authentication service: ${(err as NodeJS.ErrnoException).code ?? ''}`);
  }
  if (ex.method !== 'HEAD') ex.bytes = v.body.length;
  ex.res.end(ex.method === 'HEAD' ? undefined : v.body);
  dropRequestBody(ex);
}

/** Sends a routed, admitted request on: the route's own answer, or an upstream target. */
function dispatch(ex: Exchange): void {
  const { req } = ex;
  const r = ex.route!;
  const u = r.upstream;
  if (u === undefined) return r.files === undefined ? answer(ex, r.answer!) : serveFiles(ex, r.files);
  ex.upstream = u;
  if (r.maxBodyBytes > 0) {
    const len = Number(req.headers['content-length'] ?? 0);
    if (len > r.maxBodyBytes) return fail(ex, 'PORTICO_BODY_TOO_LARGE');
  }
  if (r.cache !== undefined && answerFromCache(ex, r.cache)) return;
  if (u.requestBufferBytes !== 0 && hasRequestBody(req)) return bufferRequestBody(ex);
  sendToUpstream(ex);
}

/** Picks a target of the route's upstream for a request and forwards it there (or queues it, or answers 503). */
export function sendToUpstream(ex: Exchange): void {
  const { req } = ex;
  const u = ex.upstream!;
  let affinity = -1;
  if (u.sticky !== undefined) {
    const sent = readCookie(req.headers.cookie, u.sticky.cookie);
    if (sent !== undefined) {
      ex.stickySent = sent;
      affinity = u.sticky.byValue.get(sent) ?? -1;
    }
  }
  // "client-ip" hashes the client behind trusted proxies, as allowFrom and rateLimit judge it (kept on the Exchange for a queued request).
  const client = u.policy === 'client-ip' ? (ex.client ??= clientAddress(req.remoteAddress, req, ex.plan.trustedProxies)) : req.remoteAddress;
  const target = pickTarget(u, client, affinity);
  if (target !== undefined) return forward(ex, target);
  // Every available target at its maxRequests: wait for one; none available at all: 503.
  if (u.maxRequests !== 0 && anyAvailable(u)) return waitForSlot(ex, affinity);
  fail(ex, 'PORTICO_NO_HEALTHY_UPSTREAM');
}

/** Gives a "redirect" or "respond" route's answer; a request body is read and dropped. */
function answer(ex: Exchange, a: AnswerPlan): void {
  try {
    const headers = answerHeaders(a, ex.host, ex.path, ex.route!.headerRules?.response);
    ex.status = a.status;
    ex.res.writeHead(a.status, headers);
  } catch (err) {
    // A Location filled with a path HTTP/2 would not carry (node:http2 checks header values).
    return fail(ex, 'PORTICO_BAD_REQUEST', (err as NodeJS.ErrnoException).code ?? 'invalid header');
  }
  if (ex.method !== 'HEAD') ex.bytes = a.body.length;
  ex.res.end(ex.method === 'HEAD' ? undefined : a.body);
  dropRequestBody(ex);
}

/** Whether a request may go to `t` now: it is available (health, drain) and below the upstream's maxRequests. */
function canTake(u: UpstreamPlan, t: Target): boolean {
  return t.available && (u.maxRequests === 0 || t.limitedInFlight < u.maxRequests);
}

/** FNV-1a of a client address: a stable spread of clients over targets for "client-ip". */
function hashAddress(address: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < address.length; i++) h = Math.imul(h ^ address.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/**
 * The target for a request on this route, among the available ones (health), by the upstream's
 * policy: "round-robin" in turn (the cursor moves past the one picked, so the targets after an
 * unavailable one don't get its turns); "least-connections" the fewest in flight, ties in turn;
 * "client-ip" from the client address's hash onwards; "cookie" the target at `affinity` (the index
 * the client's cookie names, or -1) while it is available, else in turn. Undefined when none is
 * available. Hot path: with all targets healthy, round-robin reads one boolean.
 */
export function pickTarget(u: UpstreamPlan, clientAddress: string, affinity = -1): Target | undefined {
  const targets = u.targets;
  if (affinity >= 0 && canTake(u, targets[affinity] as Target)) return targets[affinity];
  if (u.weighted !== undefined) return pickWeighted(u, u.weighted, clientAddress);
  const n = targets.length;
  const policy = u.policy;
  const first = policy === 'client-ip' ? hashAddress(clientAddress) % n : u.next % n;
  const counting = policy === 'least-connections';
  const max = u.maxRequests;
  let best = -1;
  for (let k = 0; k < n; k++) {
    const i = first + k < n ? first + k : first + k - n;
    const t = targets[i] as Target;
    if (!t.available || (max !== 0 && t.limitedInFlight >= max)) continue;
    if (!counting) {
      best = i;
      break;
    }
    if (best === -1 || t.leastConnInFlight < (targets[best] as Target).leastConnInFlight) best = i;
  }
  if (best === -1) return undefined;
  if (policy !== 'client-ip') u.next = best + 1;
  return targets[best] as Target;
}

/**
 * pickTarget for upstreams with weights or backups: the regular targets first, the backups only when
 * no regular one is available. "round-robin" and "cookie" use nginx's smooth weighted round-robin
 * (each available target gains its weight in credit, the richest is picked and pays the total, so
 * 3:1 goes a, a, b, a); "least-connections" the fewest in flight per unit of weight; "client-ip" the
 * address's hash over the available weights.
 */
function pickWeighted(u: UpstreamPlan, w: WeightedTargets, clientAddress: string): Target | undefined {
  const targets = u.targets;
  const n = targets.length;
  for (let pass = 0; pass < 2; pass++) {
    const backup = pass === 1;
    let best = -1;
    let total = 0;
    for (let i = 0; i < n; i++) {
      if (w.backup[i] !== backup || !canTake(u, targets[i] as Target)) continue;
      total += w.weights[i] as number;
      if (u.policy === 'least-connections') {
        const load = (targets[i] as Target).leastConnInFlight / (w.weights[i] as number);
        if (best === -1 || load < (targets[best] as Target).leastConnInFlight / (w.weights[best] as number)) best = i;
      } else if (u.policy !== 'client-ip') {
        w.credit[i]! += w.weights[i] as number;
        if (best === -1 || (w.credit[i] as number) > (w.credit[best] as number)) best = i;
      }
    }
    if (total === 0) continue;
    if (u.policy === 'client-ip') {
      let at = hashAddress(clientAddress) % total;
      for (let i = 0; i < n; i++) {
        if (w.backup[i] !== backup || !canTake(u, targets[i] as Target)) continue;
        at -= w.weights[i] as number;
        if (at < 0) return targets[i];
      }
    }
    if (u.policy !== 'least-connections') w.credit[best]! -= total;
    return targets[best];
  }
  return undefined;
}

/**
 * Sends the request to another target after a failure before any response, where that is safe: a
 * request without a body whose connection was refused (nothing reached the upstream), or an idempotent
 * one without a body (RFC 9110 §9.2.2) that failed or timed out before its response began, as nginx's
 * default `proxy_next_upstream error timeout` does. At most one attempt per target, only to an
 * available one other than the target that failed. Returns whether it did.
 */
export function retryElsewhere(ex: Exchange, code: string): boolean {
  // A body read whole before sending ("requestBuffer") can be sent again; one streamed from the client cannot.
  if (ex.bodyBuffer === undefined && hasRequestBody(ex.req)) return false;
  if (!RETRYABLE.has(code) && !(IDEMPOTENT.has(ex.method) && FAILED_BEFORE_RESPONSE.has(code))) return false;
  const u = ex.upstream!;
  if (ex.attempts >= u.targets.length) return false;
  ex.failedTargets |= targetBit(u, ex.target!);
  const next = nextTarget(u, ex.target!, ex.failedTargets);
  if (next === undefined) return false;
  ex.state.log.warn({ upstream: ex.target!.url, code, route: ex.route!.id, next: next.url }, 'upstream failed, trying the next target');
  ex.timedOut = false;
  ex.upstreamReq = undefined;
  forward(ex, next);
  return true;
}

/** A target's bit in a set of targets already tried (targetBit of each, or-ed); 0, untracked, past the 31st target. */
export function targetBit(u: UpstreamPlan, t: Target): number {
  const i = u.targets.indexOf(t);
  return i >= 0 && i < 31 ? 1 << i : 0;
}

/**
 * The available target after `failed` in the upstream's order (nginx's "next upstream"), whatever
 * the policy: a sticky cookie, a client's hash or the round-robin cursor may all point at the one
 * that just failed. Targets in `tried` (targetBit) failed this request already and are passed over,
 * so that a request goes to each target once. Undefined when no other is available.
 */
export function nextTarget(u: UpstreamPlan, failed: Target, tried = 0): Target | undefined {
  const targets = u.targets;
  const n = targets.length;
  const at = targets.indexOf(failed);
  const backup = u.weighted?.backup;
  // Regular targets first; backups only when no regular one is left.
  for (let pass = 0; pass < (backup === undefined ? 1 : 2); pass++) {
    for (let k = 1; k < n; k++) {
      const i = (at + k) % n;
      const t = targets[i] as Target;
      if (!canTake(u, t) || t === failed || (i < 31 && (tried & (1 << i)) !== 0) || (backup !== undefined && backup[i] !== (pass === 1))) continue;
      // The cursor moves past it, as when a request picks a target in turn.
      if (u.policy !== 'client-ip') u.next = i + 1;
      return t;
    }
  }
  return undefined;
}

export function hasRequestBody(req: ClientRequest): boolean {
  if (req.httpVersionMajor === 2) return !(req as H2ServerRequest).stream.endAfterHeaders;
  const h = req.headers;
  return h['transfer-encoding'] !== undefined || (h['content-length'] !== undefined && h['content-length'] !== '0');
}

export function forward(ex: Exchange, target: Target): void {
  ex.target = target;
  ex.attempts++;
  if (ex.upstream!.maxRequests !== 0) takeSlot(ex, target);
  if (ex.upstream!.policy === 'least-connections') ex.inFlightTarget = moveInFlight(ex.inFlightTarget, target);
  const pending = target.resolveProtocol();
  if (pending !== undefined) {
    pending.then(
      () => forward2(ex, target),
      (err: Error) => {
        ex.errorDetail = err.message;
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== undefined && isTargetFailure(code)) target.reportFailure(code);
        fail(ex, code === undefined ? 'PORTICO_UPSTREAM_UNREACHABLE' : upstreamErrorCode(code), `${target.url}: ${code ?? err.message}`);
      },
    );
    return;
  }
  forward2(ex, target);
}

/** The headers of the request to `target`: the client's, with forwarding headers, request ID, header rules, forwardAuth's and a revalidation's validators. */
export function upstreamRequestHeaders(ex: Exchange, target: Target, h2up: boolean): OutgoingHttpHeaders {
  const { req, plan } = ex;
  const upstream = ex.upstream!;
  const remote = req.remoteAddress;
  const trusted = isTrustedPeer(plan, remote);
  const rawHost = (ex.h2 ? (req.headers[':authority'] as string | undefined) ?? req.headers.host : req.headers.host) ?? ex.host;
  const hh = upstream.hostHeader;
  const headers = buildRequestHeaders(req.headers as IncomingHttpHeaders, {
    remoteAddress: remote,
    trusted,
    host: rawHost,
    upstreamHost: hh === 'preserve' ? rawHost : hh === 'target' ? target.authority : hh,
    via: plan.sendVia ? (ex.h2 ? '2' : '1.1') : undefined,
    forwarded: plan.sendForwarded,
    proto: ex.plain ? 'http' : 'https',
    upstreamH2: h2up,
    prefix: ex.route!.stripLength > 0 ? ex.route!.path : '',
  }, ex.h2 ? (req as H2ServerRequest).rawHeaders : undefined);
  if (plan.requestId) headers['x-request-id'] = (ex.requestId ??= requestIdFor(req.headers, trusted));
  if (ex.hostPlan?.clientAuth !== undefined) {
    const cert = connectionClientCert(req);
    if (cert !== undefined) headers['client-cert'] = cert;
  }
  const rules = ex.route!.headerRules?.request;
  if (rules !== undefined) applyToObject(headers, rules);
  if (ex.authHeaders !== undefined) applyAuthHeaders(headers, ex.route!.forwardAuth!, ex.authHeaders);
  // A stale stored response is revalidated with its own validators.
  if (ex.stale !== undefined) addValidators(headers, ex.stale);
  return headers;
}

function forward2(ex: Exchange, target: Target): void {
  const { req } = ex;
  if (ex.res.writableEnded || ex.res.destroyed) return;
  const upstream = ex.upstream!;
  const h2up = target.kind === 'h2-tls' || target.kind === 'h2c';
  // Made once, and again for each attempt on an HTTP/2 target or when the Host sent upstream is the target's own.
  if (ex.headers === undefined || h2up || upstream.hostHeader === 'target') ex.headers = upstreamRequestHeaders(ex, target, h2up);
  if (!h2up) return dispatchH1(ex, target);
  let up: UpstreamRequest;
  try {
    up = openUpstreamRequest(target, ex.method, ex.path, { ...ex.headers });
  } catch (err) {
    // Invalid header names or values (ERR_INVALID_CHAR and kin): the client's fault.
    return fail(ex, 'PORTICO_BAD_REQUEST', (err as NodeJS.ErrnoException).code ?? 'invalid header');
  }
  ex.upstreamReq = up;
  tagExchange(up, ex);
  up.on('response', upOnResponse);
  up.on('error', upOnError);
  // http2-wrapper arms the timeout on its native stream and passes the stream's 'timeout' on to the request (a
  // callback given to setTimeout would be the stream's listener, run with the stream as `this`).
  up.setTimeout(upstream.responseTimeoutMs);
  up.on('timeout', upOnTimeout);
  if (wantsHints(ex)) watchH2Hints(ex, up);
  if (ex.bodyBuffer !== undefined) {
    up.end(ex.bodyBuffer);
  } else if (hasRequestBody(req)) {
    const body = watchRequestBody(ex);
    if (ex.h2) up.once('close', upOnClose);
    body.pipe(up);
  } else {
    up.end();
  }
}

/**
 * An HTTP/2 client's upstream request closed while the client's body was still arriving: an upstream that
 * answered whole and then reset its stream with NO_ERROR to stop the upload (RFC 9113 §8.1), or one Portico gave
 * up. pipe() leaves the body paused on what it had buffered, and node:http2 destroys a stream that then closes
 * with NO_ERROR (the client's END_STREAM or reset, or Portico's) only once its readable side has been read to
 * the end: the stream stayed open, with no 'close' and so no access line, until its session went. The rest of
 * the body is read and dropped, and the stream is closed with NO_ERROR once the answer is out (dropRequestBody):
 * now if the response has ended, else when it has (a compressed answer ends after the upstream's, once the
 * encoder has given out its last bytes). Cold path.
 */
function onUpstreamRequestClose(this: Exchange, up: UpstreamRequest): void {
  if (this.req.complete) return;
  // Unpiped here: pipe()'s own 'close' listener, which runs after this one, would otherwise pause the body again.
  this.req.body.unpipe(up);
  this.req.body.resume();
  // What the client still sends is dropped: waiting for it is nobody's business, bodyTimeout's included.
  (this.res as H2ServerResponse).bodyDropped = true;
  if (this.res.writableEnded) dropRequestBody(this);
  else (this.req as H2ServerRequest).stream.once('finish', dropRequestBody.bind(undefined, this));
}

// The HTTP/2 upstream request's and response's listeners (`this`: the emitter), each passing on to its handler.
function upOnResponse(this: UpstreamRequest, upRes: IncomingMessage): void {
  onUpstreamResponse.call(exchangeOf(this), upRes);
}
function upOnError(this: UpstreamRequest | IncomingMessage, err: NodeJS.ErrnoException): void {
  onUpstreamError.call(exchangeOf(this), err);
}
function upOnTimeout(this: UpstreamRequest): void {
  onUpstreamTimeout.call(exchangeOf(this));
}
function upOnClose(this: UpstreamRequest): void {
  onUpstreamRequestClose.call(exchangeOf(this), this);
}
function upResOnCountedData(this: IncomingMessage, chunk: Buffer): void {
  exchangeOf(this).bytes += chunk.length;
}
function upResOnFillData(this: IncomingMessage, chunk: Buffer): void {
  onFillData.call(exchangeOf(this), chunk);
}
function upResOnEnd(this: IncomingMessage): void {
  onUpstreamEnd.call(exchangeOf(this));
}
function upResOnAborted(this: IncomingMessage): void {
  onUpstreamAborted.call(exchangeOf(this));
}
function upResOnFlushData(this: IncomingMessage): void {
  flushOnData.call(exchangeOf(this));
}

/**
 * The request body on its way upstream, watched: counted against the route's maxBodySize, and, from an HTTP/2
 * client that resets its stream, cut short (the upstream request is cancelled, not ended).
 */
export function watchRequestBody(ex: Exchange): Readable {
  const body = ex.req.body;
  if (ex.route!.maxBodyBytes > 0 || ex.h2) tagExchange(body, ex);
  if (ex.route!.maxBodyBytes > 0) body.on('data', bodyOnCountedData);
  if (ex.h2) body.once('aborted', bodyOnAborted);
  return body;
}

function bodyOnCountedData(this: Readable, chunk: Buffer): void {
  countBody.call(exchangeOf(this), chunk);
}

function bodyOnAborted(this: Readable): void {
  onClientAbort.call(exchangeOf(this));
}

/** A client response's 'close' (`this`: the response, whose `exchange` the request handler set). */
function onResponseClose(this: ClientResponse): void {
  onClientClose.call(this.exchange as Exchange);
}

export function onClientAbort(this: Exchange): void {
  this.cancelUpstream();
  const up = this.upstreamReq;
  if (up === undefined) return;
  this.req.body.unpipe(up);
  abortUpstreamRequest(up);
}

/**
 * limits.bodyTimeout: the client stopped sending its request body while Portico read it (checked once a
 * second by src/http2/stream-watch.ts and src/http1/h1-server.ts). The upstream exchange is cancelled, as
 * for a body too large, and 408 answers if no response has started; else the response is cut (HTTP/2
 * stream reset, HTTP/1.1 connection closed), which cancels the exchange. The access line
 * carries PORTICO_BODY_TIMEOUT. Cold path.
 */
export function onBodyTimeout(ex: Exchange): void {
  const res = ex.res;
  if (!res.headersSent && !res.writableEnded && !res.destroyed) {
    abortUpstreamRequest(ex.upstreamReq);
    ex.cancelUpstream();
    return fail(ex, 'PORTICO_BODY_TIMEOUT');
  }
  // The response's 'close' (onClientClose) cancels the upstream exchange of a response cut short.
  ex.error = 'PORTICO_BODY_TIMEOUT';
  if ('stream' in res) res.cancel();
  else res.destroy();
}

export function countBody(this: Exchange, chunk: Buffer): void {
  this.requestBytes += chunk.length;
  // Not once the upstream has stopped the upload (its request closed: onUpstreamRequestClose): the rest of the
  // body is read only to be dropped, and the answer the upstream gave stands.
  if (this.requestBytes > this.route!.maxBodyBytes && this.upstreamReq?.destroyed !== true) {
    abortUpstreamRequest(this.upstreamReq);
    this.cancelUpstream();
    fail(this, 'PORTICO_BODY_TOO_LARGE');
  }
}

function onUpstreamTimeout(this: Exchange): void {
  this.timedOut = true;
  // The request body may still be on its way: the upstream must see it aborted, not ended.
  abortUpstreamRequest(this.upstreamReq, Object.assign(new Error('response timeout'), { code: 'PORTICO_RESPONSE_TIMEOUT' }));
}

function onUpstreamError(this: Exchange, err: NodeJS.ErrnoException): void {
  const ex = this;
  if (err === UPSTREAM_CANCELLED) return; // Portico gave the exchange up itself (abortUpstreamRequest)
  // The client has its whole answer already (an early 413, or a response relayed whole after which the rest of the
  // upload failed, as when an upstream that answered stops it, RFC 9113 §8.1): nothing to answer or cut. Resetting
  // the client's stream then would cut an answer already given (on Node 26 its END_STREAM was not yet out).
  if (ex.res.writableEnded) return;
  // A stream still waiting for its session's connection is cancelled with the session's own error as the
  // cause (ECONNREFUSED, PORTICO_CONNECT_TIMEOUT…), which says what happened and whether to try elsewhere.
  const code = (err.code === 'ERR_HTTP2_STREAM_CANCEL' ? (err.cause as NodeJS.ErrnoException | undefined)?.code : err.code) ?? err.code ?? 'ERROR';
  const target = ex.target!;
  if (ex.upstreamRes === undefined && isTargetFailure(code)) target.reportFailure(code);
  // A kept-alive connection the upstream closed while the request was on its way (RFC 9112 §9.3.1):
  // the request was never processed, so a request without a body is sent again on a fresh connection.
  // A stream the upstream refused (RST_STREAM REFUSED_STREAM, or above a GOAWAY's last stream) was not
  // processed (RFC 9113 §8.7): a request without a body is sent once more, on a session that takes it.
  if (
    ex.upstreamRes === undefined &&
    !ex.retriedStale &&
    !hasRequestBody(ex.req) &&
    ((code === 'ECONNRESET' && ex.upstreamReq?.reusedSocket === true) || (code === 'ERR_HTTP2_STREAM_ERROR' && upstreamRstCode(ex.upstreamReq) === NGHTTP2_REFUSED_STREAM))
  ) {
    ex.retriedStale = true;
    ex.attempts--;
    return forward(ex, target);
  }
  if (ex.upstreamRes === undefined && !ex.res.destroyed && retryElsewhere(ex, code)) return;
  if (ex.upstreamRes !== undefined) {
    // The response had started: reset the client's response so truncation is visible.
    ex.error = 'PORTICO_UPSTREAM_FAILED';
    ex.errorDetail = `${target.url}: ${code} after response start`;
    resetResponse(ex.res);
    return;
  }
  if (ex.res.destroyed) return; // client went away first; nothing to answer
  const errCode: ErrorCode = ex.timedOut ? 'PORTICO_UPSTREAM_TIMEOUT' : upstreamErrorCode(code);
  fail(ex, errCode, `${target.url}: ${code}`);
}

function onUpstreamResponse(this: Exchange, upRes: IncomingMessage): void {
  const ex = this;
  ex.upstreamRes = upRes;
  const res = ex.res;
  if (res.destroyed) {
    upRes.destroy();
    return;
  }
  ex.status = upRes.statusCode ?? 502;
  // A stale stored response the upstream confirmed (304) or failed to replace (5xx), before an error page.
  if (ex.stale !== undefined && answerWithStale(ex, ex.status, headerObjectPairs(upRes.headers), (x) => releaseH2(x, upRes))) return;
  // interceptErrors: an error with a page of the host's is answered with the page (the one check routes without it pay).
  const pages = ex.route!.upstreamErrorPages;
  if (pages !== undefined) {
    const page = pages.get(ex.status);
    if (page !== undefined) {
      try {
        return interceptH2(ex, upRes, page);
      } catch (err) {
        upRes.destroy();
        ex.upstreamRes = undefined;
        return fail(ex, 'PORTICO_UPSTREAM_FAILED', `invalid response header from ${ex.target!.url}: ${(err as NodeJS.ErrnoException).code ?? ''}`);
      }
    }
  }
  const headers = buildResponseHeaders(upRes.headers, ex.plan.sendVia ? (ex.h2 ? '2' : '1.1') : undefined);
  if (ex.cacheStatus !== undefined) addCacheStatus(headers, startFill(ex, ex.status, headerObjectPairs(upRes.headers)));
  const rules = ex.route!.headerRules?.response;
  if (rules !== undefined) applyToObject(headers, rules);
  if (ex.upstream!.sticky !== undefined) {
    const cookie = stickySetCookie(ex.upstream!, ex.target!, ex.stickySent, !ex.plain);
    if (cookie !== undefined) addSetCookie(headers, cookie);
  }
  const cp = ex.route!.compress;
  let enc: Encoding | undefined;
  if (cp !== undefined) {
    const d = decideEncoding(ex, cp, ex.status, objectGetter(headers));
    if (d === 'vary') markVaryObject(headers);
    else if (d === 'weak') markWeakObject(headers);
    else if (d !== undefined) {
      markEncodedObject(headers, d);
      // A HEAD's head is marked as its GET's would be; there is no body to encode.
      if (ex.method !== 'HEAD') enc = d;
    }
  }
  // An HTTP/2 upstream's response may end with trailers (gRPC's status does).
  if (ex.h2) (res as H2ServerResponse).trailersExpected = true;
  try {
    res.writeHead(ex.status, headers);
  } catch (err) {
    upRes.destroy();
    ex.upstreamRes = undefined;
    ex.cacheFill = undefined;
    return fail(ex, 'PORTICO_UPSTREAM_FAILED', `invalid response header from ${ex.target!.url}: ${(err as NodeJS.ErrnoException).code ?? ''}`);
  }
  // An encoded body is counted as it leaves the encoder (startEncoder), not here: `bytes` is what the client is sent.
  tagExchange(upRes, ex);
  if (ex.plan.accessLog && enc === undefined) upRes.on('data', upResOnCountedData);
  if (ex.cacheFill !== undefined) upRes.on('data', upResOnFillData);
  upRes.on('end', upResOnEnd);
  upRes.on('error', upOnError);
  if (ex.target!.kind === 'h2c' || ex.target!.kind === 'h2-tls') upRes.once('aborted', upResOnAborted);
  if (enc !== undefined) {
    const length = upRes.headers['content-length'];
    startEncoder(ex, enc, length);
    upRes.pipe(ex.encoder!);
    if (length === undefined) upRes.on('data', upResOnFlushData);
    return;
  }
  upRes.pipe(ex.h2 ? (res as H2ServerResponse).stream : (res as unknown as NodeJS.WritableStream), { end: false });
}

/** An upstream response that ended before it was complete: logged as an upstream error, and the client's response reset (HTTP/1.1: connection closed before the end; HTTP/2: RST_STREAM INTERNAL_ERROR). Cold path. */
function cutOff(ex: Exchange, why: string): void {
  ex.error = 'PORTICO_UPSTREAM_FAILED';
  ex.errorDetail = `${ex.target!.url}: ${why}`;
  ex.state.log.warn({ code: ex.error, upstream: ex.target!.url, route: ex.route?.id, detail: ex.errorDetail }, 'upstream error');
  ex.cacheFill = undefined;
  resetResponse(ex.res);
}

/**
 * An HTTP/2 upstream closed the stream while Portico was still sending the request body: http2-wrapper then
 * destroys the response without ending it ('aborted', and no 'end' or 'error' follows), which left the
 * client's response open. A response already ended (its END_STREAM relayed) is whole (RFC 9113 §8.1: a
 * NO_ERROR reset after it only stops the upload), and so is one whose END_STREAM came but whose bytes are still
 * on their way to a slower client (relayRest); any other is cut off. Cold path.
 */
function onUpstreamAborted(this: Exchange): void {
  if (this.res.destroyed || this.upstreamRes?.complete === true || this.res.writableEnded) return;
  if (hasEndStream(this.upstreamReq)) return relayRest(this);
  cutOff(this, 'stream reset (NO_ERROR) before the response was complete');
}

/**
 * The upstream sent its whole response (END_STREAM), then reset the stream with NO_ERROR to stop the upload, as Go's
 * HTTP/2 server does when its handler did not read the body, while the client was still being sent the response.
 * http2-wrapper destroys its response right after the 'aborted' this runs in, and node:http2's stream with it,
 * with the bytes they hold: every byte of the response has arrived (END_STREAM came), so what both still hold is
 * handed to the client now, and the response ended. The cache does not store such a response. Cold path.
 */
function relayRest(ex: Exchange): void {
  const upRes = ex.upstreamRes!;
  const dest = (ex.encoder ?? (ex.h2 ? (ex.res as H2ServerResponse).stream : ex.res)) as unknown as Writable;
  upRes.unpipe(dest);
  // Its bytes are counted here, with the stream's: not again by the 'data' listeners (access line, cache fill, flush).
  upRes.removeAllListeners('data');
  const rest = takeRestOfBody(ex.upstreamReq, upRes);
  if (rest === undefined) return cutOff(ex, 'stream reset while the response was still being relayed');
  ex.cacheFill = undefined;
  const counted = ex.encoder === undefined;
  for (const chunk of rest) {
    // Through an encoder, its output is counted (startEncoder).
    if (counted) ex.bytes += chunk.length;
    dest.write(chunk);
  }
  // An encoder ends the client's response once it has given out its last bytes; otherwise onUpstreamEnd does.
  ex.encoder?.end();
  onUpstreamEnd.call(ex);
}

function onUpstreamEnd(this: Exchange): void {
  const upRes = this.upstreamRes!;
  // node:http2 ends a response whose stream closed without END_STREAM as if it were whole when the
  // upstream's connection dropped (the stream is then cancelled, CANCEL), or when the upstream reset it
  // with NO_ERROR before its END_STREAM (RFC 9113 §8.1 allows that reset only after a complete response;
  // src/upstream/h2-end-stream.ts): that is a cut-off body, and the client's response is reset, never ended.
  if (upstreamRstCode(this.upstreamReq) !== NGHTTP2_NO_ERROR) return cutOff(this, 'stream closed before the response was complete');
  if (isEndedByReset(this.upstreamReq)) return cutOff(this, 'stream reset (NO_ERROR) before the response was complete');
  const trailers = upRes.trailers;
  // Trailers (gRPC status and the like) pass through when the client can carry them.
  let hasTrailers = false;
  for (const _ in trailers) {
    hasTrailers = true;
    break;
  }
  if (this.cacheFill !== undefined) finishFill(this, null, hasTrailers);
  if (hasTrailers) this.res.addTrailers(dropTrailerFields(trailers) as OutgoingHttpHeaders);
  // With an encoder, the response ends when it has given out its last bytes.
  if (this.encoder === undefined) this.res.end();
}

/** Whether the client response closed before it was complete. An HTTP/2 stream the client reset reads as finished once closed; its request says it was aborted. */
function isCutShort(ex: Exchange): boolean {
  return !ex.res.writableFinished || (ex.h2 && (ex.req as H2ServerRequest).aborted);
}

/**
 * least-connections: one in flight moves from `from` (undefined: none) to `to`, which is returned, to be
 * given back later. Requests and upgrades both count this way, on the Target, so the count outlives a reload.
 */
export function moveInFlight(from: Target | undefined, to: Target): Target {
  if (from !== undefined) from.leastConnInFlight--;
  to.leastConnInFlight++;
  return to;
}

function onClientClose(this: Exchange): void {
  const ex = this;
  if (ex.cacheLock !== undefined) leaveCacheLock(ex);
  if (ex.cacheInvalidate !== undefined) invalidateAnswered(ex);
  if (ex.slot !== undefined) releaseSlot(ex);
  if (ex.queueTimer !== undefined) leaveQueue(ex);
  if (ex.authReq !== undefined) {
    ex.authReq.destroy();
    ex.authReq = undefined;
  }
  if (ex.inFlightTarget !== undefined) {
    ex.inFlightTarget.leastConnInFlight--;
    ex.inFlightTarget = undefined;
  }
  if (isCutShort(ex)) {
    // The client went away (or the response was reset): cancel the upstream exchange.
    abortUpstreamRequest(ex.upstreamReq);
    ex.upstreamRes?.destroy();
    ex.cancelUpstream();
    if (ex.encoder !== undefined) dropEncoder(ex);
    ex.fileBody?.destroy();
  }
  const res = ex.res;
  const status = res.headersSent ? res.statusCode : 0;
  const durationMs = performance.now() - ex.start;
  (ex.route?.stats ?? ex.plan.unroutedStats).record(status, durationMs);
  if (ex.plan.accessLog) logAccess(ex, status, durationMs);
}

/** Whether the connection's peer is in forwarding.trustedProxies. */
export function isTrustedPeer(plan: Plan, remote: string): boolean {
  return plan.trustedProxies !== undefined && remote !== '' && plan.trustedProxies.check(remote, remote.includes(':') ? 'ipv6' : 'ipv4');
}

function logAccess(ex: Exchange, status: number, durationMs: number): void {
  const { req, plan } = ex;
  const peer = req.remoteAddress;
  if (plan.requestId) ex.requestId ??= requestIdFor(req.headers, isTrustedPeer(plan, peer));
  ex.state.access.write({
    client: ex.client ?? clientAddress(peer, req, plan.trustedProxies),
    peer,
    requestId: ex.requestId,
    user: ex.user,
    host: ex.host,
    sni: ex.connName,
    method: ex.method,
    path: ex.req.url,
    route: ex.route?.id,
    upstream: ex.target?.url,
    cache: ex.cacheResult,
    status,
    bytes: ex.bytes,
    durationMs,
    proto: ex.h2 ? 'h2' : 'http/1.1',
    aborted: isCutShort(ex),
    error: ex.error,
    detail: ex.errorDetail,
    reason: ex.state.closeReason,
    headerNames: plan.accessHeaders,
    requestHeaders: plan.accessHeaders.length === 0 ? undefined : req.headers,
  });
}
