/**
 * The one place a request error becomes a response: status and short body
 * from the error table; the client never sees internals.
 */
import { ERRORS, type ErrorCode } from '../errors.js';
import type { H1ServerResponse } from '../http1/server-response.js';
import type { H2ServerResponse } from '../http2/server-response.js';
import type { ErrorPage } from './error-pages.js';

/** A client response: Portico's own HTTP/1.1 server (src/http1/), or an HTTP/2 stream (src/http2/). */
export type ClientResponse = H1ServerResponse | H2ServerResponse;

const BODIES = new Map<ErrorCode, Buffer>();
for (const [code, spec] of Object.entries(ERRORS)) BODIES.set(code as ErrorCode, Buffer.from(`${spec.message}\n`));

/** The body of the error response for `code`: the host's page for its status, or the error table's message. */
export function errorBody(code: ErrorCode, page?: ErrorPage): Buffer {
  return page === undefined ? (BODIES.get(code) as Buffer) : page.body;
}

/**
 * Sends the error response for `code`; when the response has already started,
 * resets it instead so the client cannot mistake a truncated body for a whole one.
 */
export function respondError(res: ClientResponse, code: ErrorCode, closeConnection: boolean, extra?: readonly [string, string], page?: ErrorPage): void {
  if (res.headersSent) {
    resetResponse(res);
    return;
  }
  const body = errorBody(code, page);
  const headers: Record<string, string | number> = {
    'content-type': page === undefined ? 'text/plain; charset=utf-8' : page.contentType,
    'content-length': body.length,
    'cache-control': 'no-store',
    'x-portico-error': code,
  };
  // A 401's WWW-Authenticate (RFC 9110 §11.6.1), a 429's Retry-After (RFC 6585 §4).
  if (extra !== undefined) headers[extra[0]] = extra[1];
  // HTTP/1.1 only: HTTP/2 forbids connection-specific headers.
  if (closeConnection) headers.connection = 'close';
  res.writeHead(ERRORS[code].status, headers);
  res.end(body);
}

/**
 * Cuts a started response short so the client sees it as incomplete: HTTP/1.1
 * closes the connection; HTTP/2 resets the stream with INTERNAL_ERROR, since a
 * plain `destroy()` sends RST_STREAM NO_ERROR, which a client reads as the end
 * of a complete response (RFC 9113 §8.1).
 */
export function resetResponse(res: ClientResponse): void {
  if ('stream' in res) res.reset();
  else res.destroy();
}
