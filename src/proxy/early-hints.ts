/**
 * 103 Early Hints (RFC 8297) from upstreams, passed on to the client before
 * the final response: over HTTP/2 as a 103 HEADERS frame, over HTTP/1.1 as an
 * interim `HTTP/1.1 103 Early Hints` head, never to HTTP/1.0 clients (RFC 9110
 * §15.2). Hop-by-hop headers are removed as from final responses; header rules
 * are not applied (they are written for the final response). Other 1xx are not
 * passed on: Portico answers `Expect: 100-continue` itself and drops 100 and
 * 102 from upstreams. Cold path: only responses with a 103 come here; HTTP/2
 * upstreams cost one 'headers' listener per request on routes with
 * `earlyHints` (the default) for clients that can take a 103.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import type { H1ServerRequest } from '../http1/server-request.js';
import type { H1ServerResponse } from '../http1/server-response.js';
import type { H2ServerResponse } from '../http2/server-response.js';
import type { UpstreamRequest } from '../upstream/open-request.js';
import { nativeStreamOf } from '../upstream/h2-end-stream.js';
import type { Exchange } from './exchange.js';
import { buildResponseHeaders, buildResponsePairs } from './forward-headers.js';
import { pairsToHeaders } from './forward-h1.js';

/**
 * Whether a 103 may go to this exchange's client now: the route passes them on and no final head was sent.
 * An HTTP/1.0 client is refused by the server itself (H1ServerResponse.writeEarlyHints).
 */
function canHint(ex: Exchange): boolean {
  const res = ex.res;
  return ex.route!.earlyHints && !ex.responseStarted && !res.headersSent && !res.writableEnded && !res.destroyed;
}

/**
 * A 103 from an HTTP/1.1 upstream (header pairs as received): sent on to the client when it may be. A hint
 * that cannot be written (a field value HTTP/2 refuses, a Transfer-Encoding) is dropped: it is advisory.
 */
export function forwardH1Hints(ex: Exchange, pairs: string[]): void {
  if (!canHint(ex)) return;
  try {
    if (ex.h2) {
      const headers = buildResponseHeaders(pairsToHeaders(pairs), ex.plan.sendVia ? '2' : undefined);
      (ex.res as H2ServerResponse).writeEarlyHints(headers);
    } else {
      (ex.res as H1ServerResponse).writeEarlyHints(buildResponsePairs(pairs, ex.plan.sendVia ? '1.1' : undefined));
    }
  } catch {
    // Not sent: the final response follows as usual.
  }
}

/**
 * Whether an HTTP/2 upstream request's 103s are worth listening for: the route passes them on and its client can take
 * them. Checked once per request, before the request is opened.
 */
export function wantsHints(ex: Exchange): boolean {
  return ex.route!.earlyHints && (ex.h2 || (ex.req as H1ServerRequest).atLeast11);
}

/**
 * An HTTP/2 upstream request's 'socket' listener (bound to its Exchange, the request as argument): its
 * node:http2 stream reports each 1xx HEADERS block as 'headers' (http2-wrapper emits only the first one's status).
 */
export function watchH2Hints(this: Exchange, up: UpstreamRequest): void {
  const stream = nativeStreamOf(up);
  if (stream !== undefined) stream.on('headers', onH2Informational.bind(this));
}

/** A 1xx from an HTTP/2 upstream: a 103 goes on to the client, any other is dropped. */
function onH2Informational(this: Exchange, headers: IncomingHttpHeaders & { ':status'?: number }): void {
  if (headers[':status'] !== 103 || this.upstreamRes !== undefined || !canHint(this)) return;
  try {
    const out: OutgoingHttpHeaders = buildResponseHeaders(headers, this.plan.sendVia ? (this.h2 ? '2' : '1.1') : undefined);
    if (this.h2) (this.res as H2ServerResponse).writeEarlyHints(out);
    else (this.res as H1ServerResponse).writeEarlyHints(out);
  } catch {
    // Not sent: the final response follows as usual.
  }
}
