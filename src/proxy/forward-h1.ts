/**
 * Forwarding to HTTP/1.1 upstreams through undici's Pool.dispatch, with the
 * Exchange as the handler: response heads converted once, body chunks written
 * with back-pressure, failures mapped to statuses, safe retries.
 */
import type { IncomingHttpHeaders, ServerResponse } from 'node:http';
import type { ErrorCode } from '../errors.js';
import type { Target } from '../upstream/target.js';
import type { ClientRequest, Exchange } from './exchange.js';
import { buildResponseHeaders } from './forward-headers.js';
import { countBody, fail, forward, hasRequestBody, onClientAbort, pickTarget, RETRYABLE } from './handle-request.js';
import { resetResponse } from './respond-error.js';

/** The reason given to undici when Portico cancels an upstream exchange. */
export const CLIENT_GONE = Object.assign(new Error('client went away'), { code: 'PORTICO_CLIENT_GONE' });

/** Methods a proxy may send again after a failure (RFC 9110 §9.2.2). */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

/** Sends the request to an HTTP/1.1 target through its undici pool, the Exchange as handler. Hot path. */
export function dispatchH1(ex: Exchange, target: Target): void {
  const { req, plan } = ex;
  const upstream = ex.route!.upstream;
  let body: ClientRequest | null = null;
  if (hasRequestBody(req)) {
    body = req;
    if (plan.limits.maxBodyBytes > 0) req.on('data', countBody.bind(ex));
    if (ex.h2) req.once('aborted', onClientAbort.bind(ex));
  }
  ex.abortUpstream = undefined;
  ex.responseStarted = false;
  target.h1Pool!.dispatch(
    {
      path: ex.path,
      method: ex.method,
      headers: ex.headers as Record<string, string | string[]>,
      body,
      headersTimeout: upstream.responseTimeoutMs,
      bodyTimeout: upstream.responseTimeoutMs,
    },
    ex,
  );
}

/** Raw header buffers (name, value, …) to a header object as node:http builds it. */
export function rawToHeaders(raw: (Buffer | string)[]): IncomingHttpHeaders {
  const h: IncomingHttpHeaders = {};
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const n = raw[i] as Buffer | string;
    const v = raw[i + 1] as Buffer | string;
    const name = (typeof n === 'string' ? n : n.toString('latin1')).toLowerCase();
    const value = typeof v === 'string' ? v : v.toString('latin1');
    const prev = h[name];
    if (prev === undefined) h[name] = name === 'set-cookie' ? [value] : value;
    else if (Array.isArray(prev)) prev.push(value);
    else h[name] = `${prev}, ${value}`;
  }
  return h;
}

export function onH1Headers(ex: Exchange, statusCode: number, rawHeaders: Buffer[], resume: () => void): boolean {
  const res = ex.res;
  ex.responseStarted = true;
  ex.resumeUpstream = resume;
  if (res.destroyed) {
    ex.abortUpstream?.(CLIENT_GONE);
    return false;
  }
  ex.status = statusCode;
  const headers = buildResponseHeaders(rawToHeaders(rawHeaders), ex.plan.sendVia ? (ex.h2 ? '2' : '1.1') : undefined);
  try {
    (res as ServerResponse).writeHead(statusCode, headers);
  } catch (err) {
    ex.responseStarted = false;
    ex.abortUpstream?.(CLIENT_GONE);
    fail(ex, 'PORTICO_UPSTREAM_FAILED', `invalid response header from ${ex.target!.url}: ${(err as NodeJS.ErrnoException).code ?? ''}`);
    return false;
  }
  return true;
}

export function onClientDrain(this: Exchange): void {
  this.resumeUpstream?.();
}

const H1_UNREACHABLE = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'ENOTFOUND', 'EAI_AGAIN']);
const H1_TIMEOUT = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT']);
const H1_CLIENT_FAULT = new Set(['UND_ERR_INVALID_ARG', 'UND_ERR_NOT_SUPPORTED', 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH']);

export function onH1Error(ex: Exchange, err: NodeJS.ErrnoException): void {
  const code = err.code ?? 'ERROR';
  if (err === CLIENT_GONE || code === 'PORTICO_CLIENT_GONE') return; // we cancelled it: the client is gone or answered
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
  const upstream = ex.route!.upstream;
  const bodyless = !hasRequestBody(ex.req);
  if (RETRYABLE.has(code) && ex.attempts < upstream.targets.length && bodyless) {
    ex.state.log.warn({ upstream: target.url, code, route: ex.route!.id }, 'upstream refused, trying next target');
    return forward(ex, pickTarget(ex.route!));
  }
  // A kept-alive connection the upstream closed as the request went out (RFC 9112 §9.3.1): an
  // idempotent request without a body is sent once more on a fresh connection.
  if ((code === 'UND_ERR_SOCKET' || code === 'ECONNRESET') && !ex.retriedStale && bodyless && IDEMPOTENT.has(ex.method)) {
    ex.retriedStale = true;
    ex.attempts--;
    return forward(ex, target);
  }
  if (H1_CLIENT_FAULT.has(code)) return fail(ex, 'PORTICO_BAD_REQUEST', code);
  const errCode: ErrorCode = H1_TIMEOUT.has(code) ? 'PORTICO_UPSTREAM_TIMEOUT' : H1_UNREACHABLE.has(code) ? 'PORTICO_UPSTREAM_UNREACHABLE' : 'PORTICO_UPSTREAM_FAILED';
  fail(ex, errCode, `${target.url}: ${code}`);
}
