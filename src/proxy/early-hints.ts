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

/** The Exchange an HTTP/2 upstream request, and then its node:http2 stream, passes 103s on for. */
const kHintsFor = Symbol('portico.hintsFor');

interface HintsFor {
  [kHintsFor]?: Exchange;
}

/**
 * Passes on the 103s of an HTTP/2 upstream request: once it has its node:http2 stream ('socket'), that stream reports
 * each 1xx HEADERS block as 'headers' (http2-wrapper emits only the first one's status). Module-level listeners, the
 * Exchange kept on the request and the stream: no closure per request.
 */
export function watchH2Hints(ex: Exchange, up: UpstreamRequest): void {
  (up as UpstreamRequest & HintsFor)[kHintsFor] = ex;
  up.once('socket', onHintedSocket);
}

function onHintedSocket(this: UpstreamRequest & HintsFor): void {
  const stream = nativeStreamOf(this) as (ReturnType<typeof nativeStreamOf> & HintsFor) | undefined;
  if (stream === undefined) return;
  stream[kHintsFor] = this[kHintsFor];
  stream.on('headers', onH2Informational);
}

/** A 1xx from an HTTP/2 upstream: a 103 goes on to the client, any other is dropped. */
function onH2Informational(this: HintsFor, headers: IncomingHttpHeaders & { ':status'?: number }): void {
  const ex = this[kHintsFor];
  if (ex === undefined || headers[':status'] !== 103 || ex.upstreamRes !== undefined || !canHint(ex)) return;
  try {
    const out: OutgoingHttpHeaders = buildResponseHeaders(headers, ex.plan.sendVia ? (ex.h2 ? '2' : '1.1') : undefined);
    if (ex.h2) (ex.res as H2ServerResponse).writeEarlyHints(out);
    else (ex.res as H1ServerResponse).writeEarlyHints(out);
  } catch {
    // Not sent: the final response follows as usual.
  }
}
