/**
 * "interceptErrors" (nginx's proxy_intercept_errors with error_page, Traefik's
 * errors middleware): an upstream's 4xx or 5xx response whose status has one of
 * its host's pages reaches the client as that page, with the upstream's status
 * and the few headers a client needs to act on it; the upstream's body is never
 * sent. Cold path: the request path only reads RoutePlan.upstreamErrorPages.
 */
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders } from 'node:http';
import type { H1Connection, H1Handler } from '../upstream/h1-connection.js';
import { giveBackReadBuffer } from '../upstream/read-buffers.js';
import type { ErrorPage } from './error-pages.js';
import type { Exchange } from './exchange.js';
import { abortUpstreamRequest, dropRequestBody, hasRequestBody } from './handle-request.js';
import { applyToObject } from './header-rules.js';
import { appendVia } from './forward-headers.js';
import { addSetCookie, stickySetCookie } from './sticky-cookie.js';

/**
 * Upstream headers an intercepted response keeps: they tell the client what to do about the status, not
 * about the body they came with. WWW-Authenticate for 401 (RFC 9110 §11.6.1), Proxy-Authenticate for 407
 * (§11.7.1), Retry-After for 503, 429 and 413 (§10.2.3), Allow for 405 (§10.2.1), Accept-Patch and
 * Accept-Post for 415 (RFC 5789 §3.1, W3C LDP §7.1); and a 416's Content-Range (sendPage). Everything else describes the body the page replaces
 * (Content-Length, Content-Encoding, ETag, Last-Modified…), the upstream's connection, or state the
 * upstream sets (Set-Cookie), which nginx drops too.
 */
const KEPT_HEADERS = ['www-authenticate', 'proxy-authenticate', 'retry-after', 'allow', 'accept-patch', 'accept-post'] as const;

/**
 * The most of an HTTP/1.1 upstream's error body read and dropped so that its connection can be reused:
 * an error body is usually a few KiB, and reading that costs less than a new connection (and TLS
 * handshake). A longer body, or one that runs past this, closes the connection instead.
 */
const DISCARD_MAX_BYTES = 64 * 1024;

/** What the access line's "detail" says of a response whose body was replaced. */
const DETAIL = 'replaced by the error page';

/**
 * Sends `page` as the answer to an upstream response of `status` whose headers were `received`.
 * Throws, having sent nothing, when a kept header cannot go to the client (the caller fails the exchange).
 */
function sendPage(ex: Exchange, status: number, received: IncomingHttpHeaders, page: ErrorPage): void {
  const headers: OutgoingHttpHeaders = {
    'content-type': page.contentType,
    'content-length': page.body.length,
    'cache-control': 'no-store',
  };
  for (let i = 0; i < KEPT_HEADERS.length; i++) {
    const name = KEPT_HEADERS[i] as string;
    const v = received[name];
    if (v !== undefined) headers[name] = v;
  }
  // A 416's Content-Range ("bytes */1234") gives the length of the resource, not of the body the page replaces
  // (RFC 9110 §15.5.17): a client resuming a download learns from it where the file ends.
  if (status === 416 && received['content-range'] !== undefined) headers['content-range'] = received['content-range'];
  const via = ex.plan.sendVia ? (ex.h2 ? '2' : '1.1') : undefined;
  if (via !== undefined) {
    const prev = received.via;
    headers.via = appendVia(Array.isArray(prev) ? prev.join(', ') : prev, via);
  }
  // Still a proxied response of this route: its header rules apply, and a sticky session keeps its target.
  const rules = ex.route!.headerRules?.response;
  if (rules !== undefined) applyToObject(headers, rules);
  const u = ex.upstream!;
  if (u.sticky !== undefined && ex.target !== undefined) {
    const cookie = stickySetCookie(u, ex.target, ex.stickySent, !ex.plain);
    if (cookie !== undefined) addSetCookie(headers, cookie);
  }
  ex.res.writeHead(status, headers);
  ex.errorDetail = DETAIL;
  const head = ex.method === 'HEAD';
  ex.bytes = head ? 0 : page.body.length;
  ex.res.end(head ? undefined : page.body);
}

/**
 * An HTTP/1.1 upstream's error response with a page (forward-h1.ts, in its head's parser callback):
 * the page goes to the client, and the exchange lets go of the connection ({@link releaseH1}).
 * Returns false when the connection was closed. Throws as {@link sendPage}, the exchange still
 * holding the connection.
 */
export function interceptH1(ex: Exchange, status: number, received: IncomingHttpHeaders, page: ErrorPage): boolean {
  sendPage(ex, status, received, page);
  return releaseH1(ex, status, received);
}

/**
 * Lets go of an HTTP/1.1 upstream response whose head arrived and whose body is not wanted (the client
 * was answered otherwise: an error page, a response from the cache). The connection is kept for the next
 * exchange when it can be: the request went out whole, the upstream keeps it alive, and the body is
 * declared (or chunked) and short, read and dropped by a {@link DiscardBody}; else it is closed. A
 * request body still arriving is dropped. Returns false when the connection was closed.
 */
export function releaseH1(ex: Exchange, status: number, received: IncomingHttpHeaders): boolean {
  // The exchange is the connection's handler, so it holds the connection here; a response from the
  // response cache (stored before the setting was turned on) has none.
  const conn = ex.upstreamConn;
  if (conn === undefined) return true;
  ex.upstreamConn = undefined;
  let keep = conn.keepAlive && conn.requestDone;
  // HEAD, 204 and 304 responses have no body (RFC 9112 §6.3): their head was all of them.
  if (keep && !conn.isHead && status !== 204 && status !== 304) {
    const length = received['content-length'];
    keep = length === undefined ? received['transfer-encoding'] !== undefined : Number(length) <= DISCARD_MAX_BYTES;
  }
  // The rest of this response goes to the discarder from here on (the parser callbacks read the handler afresh).
  if (keep) conn.handler = new DiscardBody(conn);
  else conn.abort();
  // A request body still arriving is not wanted any more, as after Portico's own early answers.
  dropRequestBody(ex);
  return keep;
}

/**
 * An HTTP/2 upstream's error response with a page (handle-request.ts): the page goes to the client and
 * the upstream's stream is cancelled ({@link releaseH2}). Throws as {@link sendPage}, having cancelled nothing.
 */
export function interceptH2(ex: Exchange, upRes: IncomingMessage, page: ErrorPage): void {
  sendPage(ex, ex.status, upRes.headers, page);
  releaseH2(ex, upRes);
}

/**
 * Lets go of an HTTP/2 upstream's response whose body is not wanted: its stream is cancelled
 * (RST_STREAM), which leaves its connection to the other streams; a request body still arriving is dropped.
 * A request with a body is reset with INTERNAL_ERROR (abortUpstreamRequest): a plain destroy() sends NO_ERROR,
 * and a node:http2 upstream then ends a request body still on its way as if it were whole ('end' after the
 * bytes it got), so an upload cut off here could be taken for a complete one.
 */
export function releaseH2(ex: Exchange, upRes: IncomingMessage): void {
  // With the client answered otherwise and no upstream response kept, an 'error' from the cancelled stream is ignored.
  ex.upstreamRes = undefined;
  const up = ex.upstreamReq;
  ex.upstreamReq = undefined;
  // First: destroying the response destroys its stream too, with NO_ERROR.
  if (hasRequestBody(ex.req)) abortUpstreamRequest(up);
  else up?.destroy();
  upRes.destroy();
  dropRequestBody(ex);
}

/**
 * Reads and drops the rest of an intercepted HTTP/1.1 error body, so that the connection can go back
 * to its pool when the body ends (h1-connection.ts releases it); past {@link DISCARD_MAX_BYTES} the
 * connection is closed instead. Recycled read buffers go back at once: nothing writes them.
 */
class DiscardBody implements H1Handler {
  readonly #conn: H1Connection;
  #left = DISCARD_MAX_BYTES;

  constructor(conn: H1Connection) {
    this.#conn = conn;
  }

  onUpstreamHeaders(): boolean {
    // The head was the exchange's; only its body and end come here.
    return true;
  }

  onUpstreamData(chunk: Buffer, recyclable: boolean): boolean {
    if (recyclable) giveBackReadBuffer(chunk);
    this.#left -= chunk.length;
    if (this.#left < 0) this.#conn.abort();
    return true;
  }

  onUpstreamEnd(): void {
    // The body was dropped whole: the connection goes back to its pool by itself.
  }

  onUpstreamError(): void {
    // The client has its answer; the connection is closed already.
  }

  clientBehind(): boolean {
    return false;
  }
}
