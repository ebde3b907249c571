/**
 * Forwarding to HTTP/1.1 upstreams over the target's kept connections
 * (src/upstream/h1-pool.ts), with the Exchange as the response handler:
 * response heads converted once, body chunks written with back-pressure,
 * failures mapped to statuses, safe retries.
 */
import type { H1ServerResponse } from '../http1/server-response.js';
import type { IncomingHttpHeaders } from 'node:http';
import type { UpstreamError } from '../upstream/h1-connection.js';
import type { Target } from '../upstream/target.js';
import type { Readable } from 'node:stream';
import type { Exchange } from './exchange.js';
import type { H2ServerResponse } from '../http2/server-response.js';
import { addFolded, buildH2ResponseHeaders, buildResponsePairs } from './forward-headers.js';
import { applyToObject, applyToPairs } from './header-rules.js';
import { fail, forward, hasRequestBody, retryElsewhere, watchRequestBody } from './handle-request.js';
import { resetResponse } from './respond-error.js';
import { IDEMPOTENT, isTargetFailure, upstreamErrorCode } from './upstream-errors.js';
import { forgetReadBuffer, giveBackReadBuffer } from '../upstream/read-buffers.js';
import { markEncodedObject, markEncodedPairs, markVaryObject, markWeakObject, objectGetter, pairsListGetter, type Encoding } from './compress.js';
import { decideEncoding, startEncoder } from './encode-response.js';
import { addSetCookie, stickySetCookie } from './sticky-cookie.js';
import { addCacheStatus, answerWithStale, startFill } from '../cache/cache-exchange.js';
import { interceptH1, releaseH1 } from './intercept-errors.js';
import { exchangeOf } from './exchange-of.js';
import { lowerName } from '../http1/header-name.js';

/** Sends the request on a connection of the target's HTTP/1.1 pool, the Exchange as handler. Hot path. */
export function dispatchH1(ex: Exchange, target: Target): void {
  const { req } = ex;
  let body: Readable | Buffer | null = null;
  let bodyLength = -1;
  if (ex.bodyBuffer !== undefined) {
    body = ex.bodyBuffer;
    bodyLength = body.length;
  } else if (hasRequestBody(req)) {
    const cl = req.headers['content-length'];
    if (cl !== undefined) {
      bodyLength = Number(cl);
      if (!Number.isSafeInteger(bodyLength) || bodyLength < 0) return fail(ex, 'PORTICO_BAD_REQUEST', 'invalid Content-Length');
    }
    body = watchRequestBody(ex);
  }
  const pool = target.h1Pool!;
  const conn = pool.acquire();
  ex.responseStarted = false;
  ex.upstreamConn = conn;
  try {
    conn.send(ex, ex.method, ex.path, ex.headers!, body, bodyLength, ex.upstream!.responseTimeoutMs);
  } catch (err) {
    // Nothing was written: the connection stays good.
    ex.upstreamConn = undefined;
    pool.release(conn);
    fail(ex, 'PORTICO_BAD_REQUEST', (err as UpstreamError).message);
  }
}

/** Header pairs (name, value, …) as the parser gives them, to a header object as node:http builds it (repeats folded by {@link addFolded}). */
export function pairsToHeaders(raw: string[]): IncomingHttpHeaders {
  const h: IncomingHttpHeaders = {};
  for (let i = 0; i + 1 < raw.length; i += 2) {
    addFolded(h, lowerName(raw[i] as string), raw[i + 1] as string);
  }
  return h;
}

export function onH1Headers(ex: Exchange, statusCode: number, pairs: string[]): boolean {
  const res = ex.res;
  ex.responseStarted = true;
  if (res.destroyed) {
    ex.cancelUpstream();
    return false;
  }
  ex.status = statusCode;
  // HTTP/1.1 clients take the pairs as they are; HTTP/2 folds repeated single-value headers, so it gets the object form.
  const cp = ex.route!.compress;
  let enc: Encoding | undefined;
  let length: string | undefined;
  // A response from the cache has its Cache-Status among its pairs and sets no sticky cookie.
  const sticky = ex.upstream!.sticky === undefined || ex.replaying ? undefined : stickySetCookie(ex.upstream!, ex.target!, ex.stickySent, !ex.plain);
  let cacheStatus: string | undefined;
  try {
    // A stale stored response the upstream confirmed (304) or failed to replace (5xx) is sent instead,
    // before an error page would be: stale content is better than an error.
    if (ex.stale !== undefined && !ex.replaying && answerWithStale(ex, statusCode, pairs, (x) => releaseH1(x, statusCode, pairsToHeaders(pairs)))) return false;
    // interceptErrors: an error with a page of the host's is answered with the page (the one check routes without it pay).
    const pages = ex.route!.upstreamErrorPages;
    if (pages !== undefined) {
      const page = pages.get(statusCode);
      if (page !== undefined) return interceptH1(ex, statusCode, pairsToHeaders(pairs), page);
    }
    // An upstream's response to a request the cache could not answer may be stored (not one replaced by a page).
    if (ex.cacheStatus !== undefined && !ex.replaying) cacheStatus = startFill(ex, statusCode, pairs);
    const rules = ex.route!.headerRules?.response;
    if (ex.h2) {
      const h2res = res as H2ServerResponse;
      // Sets trailersExpected: only a chunked body can end with trailers.
      const headers = buildH2ResponseHeaders(pairs, ex.plan.sendVia ? '2' : undefined, h2res);
      if (rules !== undefined) applyToObject(headers, rules);
      if (sticky !== undefined) addSetCookie(headers, sticky);
      if (cacheStatus !== undefined) addCacheStatus(headers, cacheStatus);
      if (cp !== undefined) {
        const d = decideEncoding(ex, cp, statusCode, objectGetter(headers));
        if (d === 'vary') markVaryObject(headers);
        else if (d === 'weak') markWeakObject(headers);
        else if (d !== undefined) {
          const declared = headers['content-length'];
          markEncodedObject(headers, d);
          // A HEAD's head is marked as its GET's would be; there is no body to encode.
          if (ex.method !== 'HEAD') {
            enc = d;
            length = typeof declared === 'string' ? declared : undefined;
          }
        }
      }
      h2res.writeHead(statusCode, headers);
    } else {
      let out = buildResponsePairs(pairs, ex.plan.sendVia ? '1.1' : undefined);
      // What llhttp parsed needs no second check in writeHead; what rules, cookies and marks add does.
      let checked = out.length;
      // The rules' names and values were checked with the config: the pairs stay known valid.
      if (rules !== undefined) {
        out = applyToPairs(out, rules);
        checked = out.length;
      }
      if (sticky !== undefined) out.push('set-cookie', sticky);
      if (cacheStatus !== undefined) out.push('cache-status', cacheStatus);
      if (cp !== undefined) {
        const get = pairsListGetter(out);
        const d = decideEncoding(ex, cp, statusCode, get);
        if (d !== undefined) {
          const mark = d === 'vary' || d === 'weak' ? undefined : d;
          // A HEAD's head is marked as its GET's would be; there is no body to encode.
          if (mark !== undefined && ex.method !== 'HEAD') {
            enc = mark;
            length = get('content-length');
          }
          out = markEncodedPairs(out, mark, mark !== undefined || d === 'weak');
          checked = 0;
        }
      }
      (res as H1ServerResponse).writeHead(statusCode, out, checked);
    }
  } catch (err) {
    ex.responseStarted = false;
    ex.cancelUpstream();
    ex.cacheFill = undefined;
    fail(ex, 'PORTICO_UPSTREAM_FAILED', `invalid response header from ${ex.target?.url ?? 'the cache'}: ${(err as NodeJS.ErrnoException).code ?? ''}`);
    return false;
  }
  if (enc !== undefined) startEncoder(ex, enc, length);
  return true;
}

/**
 * A write of a recyclable chunk completed (write callbacks come in the order of the writes): its read
 * buffer goes back. After a failed write the buffer is left to the garbage collector, as the socket may
 * have been torn down with the write still in flight.
 */
export function chunkWritten(this: Exchange, err?: Error | null): void {
  const chunk = this.written?.shift();
  if (chunk === undefined) return;
  if (err === undefined || err === null) giveBackReadBuffer(chunk);
  else forgetReadBuffer(chunk);
}

/** The client took what its response held: the upstream's response is read again. */
export function onClientDrain(this: Exchange): void {
  this.upstreamConn?.resume();
}

/** The encoder took what it held ('drain', `this`: the encoder, tagged with its exchange by startEncoder). */
export function onDrainResume(this: object): void {
  onClientDrain.call(exchangeOf(this));
}

export function onH1Error(ex: Exchange, err: UpstreamError): void {
  const code = err.code;
  const target = ex.target!;
  if (ex.responseStarted) {
    // The response had started: reset the client's response so truncation is visible.
    ex.error = 'PORTICO_UPSTREAM_FAILED';
    ex.errorDetail = `${target.url}: ${code} after response start`;
    ex.state.log.warn({ code: ex.error, upstream: target.url, route: ex.route?.id, detail: ex.errorDetail }, 'upstream error');
    resetResponse(ex.res);
    return;
  }
  if (ex.res.writableEnded || ex.res.destroyed) return;
  if (isTargetFailure(code)) target.reportFailure(code);
  // A kept-alive connection the upstream closed as the request went out (RFC 9112 §9.3.1): an
  // idempotent request without a body is sent once more on a fresh connection to the same target.
  if (err.stale && !ex.retriedStale && !hasRequestBody(ex.req) && IDEMPOTENT.has(ex.method)) {
    ex.retriedStale = true;
    ex.attempts--;
    return forward(ex, target);
  }
  if (retryElsewhere(ex, code)) return;
  const errCode = upstreamErrorCode(code);
  fail(ex, errCode, errCode === 'PORTICO_BAD_REQUEST' ? err.message : `${target.url}: ${code}`);
}
