/**
 * The error table: every error Portico reports has a stable code born here.
 *
 * Codes share the `PORTICO_` prefix so they stand apart from Node's own codes
 * in the same log. Request errors carry the HTTP status the client receives;
 * match errors by `code`, never by `instanceof` (undici's convention), since
 * errors cross worker boundaries as plain objects.
 */

/** One row of the error table. */
export interface ErrorSpec {
  /** HTTP status sent to the client, for request-path errors. */
  readonly status: number;
  /** Short, stable text: the response body for request errors. */
  readonly message: string;
}

/** Every error code Portico can produce, with its status and message. */
export const ERRORS = {
  // Request path (see docs in README "Errors and status codes").
  PORTICO_BAD_HOST: { status: 400, message: 'Bad Request: missing or invalid Host header' },
  PORTICO_BAD_REQUEST: { status: 400, message: 'Bad Request: the request headers are invalid' },
  PORTICO_MALFORMED_REQUEST: {
    status: 400,
    message: 'Bad Request: the request is not valid HTTP/1.1 (its request line, a header line or its chunked body is malformed or ambiguous)',
  },
  PORTICO_URI_TOO_LONG: { status: 414, message: 'URI Too Long: the request line exceeds the size limit; shorten the URL (send large data in the body)' },
  PORTICO_HEADERS_TOO_LARGE: { status: 431, message: 'Request Header Fields Too Large: the request headers exceed the size limit' },
  PORTICO_DUPLICATE_HOST: { status: 400, message: 'Bad Request: the request has more than one Host header' },
  PORTICO_BAD_TARGET: {
    status: 400,
    message: 'Bad Request: the request target must be a path starting with "/", an http:// or https:// URL without user info, or "*" for OPTIONS',
  },
  PORTICO_UPGRADE_WITH_BODY: { status: 400, message: 'Bad Request: an upgrade request (WebSocket) may not carry a body' },
  PORTICO_BAD_TRANSFER_ENCODING: { status: 400, message: 'Bad Request: an HTTP/1.0 request may not carry Transfer-Encoding' },
  PORTICO_TRANSFER_ENCODING_UNSUPPORTED: { status: 501, message: 'Not Implemented: the only transfer coding accepted on a request is "chunked"' },
  PORTICO_HTTP_VERSION: { status: 505, message: 'HTTP Version Not Supported: send HTTP/1.1 or HTTP/1.0 (or HTTP/2 negotiated by ALPN)' },
  PORTICO_SNI_HOST_MISMATCH: {
    status: 421,
    message: 'Misdirected Request: the Host does not match the TLS server name of this connection',
  },
  PORTICO_SCHEME_MISMATCH: {
    status: 421,
    message: 'Misdirected Request: the request target names an https:// URL on the plain HTTP port, or an http:// URL on the HTTPS port',
  },
  PORTICO_UNAUTHORIZED: { status: 401, message: 'Unauthorized: this site needs a user name and password' },
  PORTICO_FORBIDDEN: { status: 403, message: 'Forbidden: this client address may not use this site' },
  PORTICO_AUTH_BUSY: { status: 503, message: 'Service Unavailable: too many password checks are waiting; retry after the time Retry-After gives' },
  PORTICO_RATE_LIMITED: { status: 429, message: 'Too Many Requests: slow down, then retry after the time Retry-After gives' },
  PORTICO_NO_ROUTE: { status: 404, message: 'Not Found: no route for this host and path' },
  PORTICO_UNKNOWN_HOST: { status: 404, message: 'Not Found: this host is not served here' },
  PORTICO_UPSTREAM_UNREACHABLE: { status: 502, message: 'Bad Gateway: the upstream could not be reached' },
  PORTICO_UPSTREAM_FAILED: { status: 502, message: 'Bad Gateway: the upstream failed to answer' },
  PORTICO_UPSTREAM_TIMEOUT: { status: 504, message: 'Gateway Timeout: the upstream did not answer in time' },
  PORTICO_NO_HEALTHY_UPSTREAM: { status: 503, message: 'Service Unavailable: no healthy upstream target' },
  PORTICO_FORWARD_AUTH_FAILED: { status: 502, message: 'Bad Gateway: the authentication service could not be asked' },
  PORTICO_UPSTREAM_BUSY: { status: 503, message: 'Service Unavailable: every upstream target is at its request limit; retry after the time Retry-After gives' },
  PORTICO_BODY_TOO_LARGE: { status: 413, message: 'Content Too Large: the request body exceeds the limit' },
  PORTICO_BODY_TIMEOUT: { status: 408, message: 'Request Timeout: the request body stopped arriving (no bytes for longer than the body timeout)' },
  PORTICO_CONNECT_REFUSED: {
    status: 405,
    message: 'Method Not Allowed: Portico opens no CONNECT tunnels; over HTTP/2 it proxies WebSockets only (extended CONNECT with :protocol websocket, RFC 8441)',
  },
  PORTICO_PROTOCOL_UNSUPPORTED: {
    status: 501,
    message: 'Not Implemented: extended CONNECT (RFC 8441) is proxied only for :protocol websocket, on a route with an upstream',
  },
  PORTICO_METHOD_NOT_ALLOWED: { status: 405, message: 'Method Not Allowed: this path serves files; use GET or HEAD' },
  PORTICO_FILE_NOT_FOUND: { status: 404, message: 'Not Found: no such file' },
  PORTICO_FILE_FORBIDDEN: { status: 403, message: 'Forbidden: this file may not be read' },
  PORTICO_PRECONDITION_FAILED: { status: 412, message: 'Precondition Failed: the file is not the one If-Match or If-Unmodified-Since names; it has changed' },
  PORTICO_RANGE_NOT_SATISFIABLE: { status: 416, message: 'Range Not Satisfiable: the range is outside the file' },
  PORTICO_FILE_FAILED: { status: 500, message: 'Internal Server Error: the file could not be read' },
  PORTICO_NOT_CACHED: { status: 504, message: 'Gateway Timeout: the request asked for a stored response only (Cache-Control: only-if-cached), and none that it accepts is stored' },
  PORTICO_SHUTTING_DOWN: { status: 503, message: 'Service Unavailable: the proxy is shutting down' },
  // Configuration and startup (status is the CLI's view: not sent to clients).
  PORTICO_CONFIG_INVALID: { status: 500, message: 'the configuration is invalid' },
  PORTICO_CONFIG_UNREADABLE: { status: 500, message: 'the configuration file cannot be read' },
  PORTICO_CERT_INVALID: { status: 500, message: 'a certificate or key is invalid' },
  PORTICO_LISTEN_FAILED: { status: 500, message: 'a listener could not be opened' },
  PORTICO_ACME_FAILED: { status: 500, message: 'a certificate could not be obtained over ACME' },
} as const satisfies Record<string, ErrorSpec>;

/** A Portico error code. */
export type ErrorCode = keyof typeof ERRORS;

/** The codes of configuration and startup errors: never sent to a client. */
export const STARTUP_ERRORS: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['PORTICO_CONFIG_INVALID', 'PORTICO_CONFIG_UNREADABLE', 'PORTICO_CERT_INVALID', 'PORTICO_LISTEN_FAILED', 'PORTICO_ACME_FAILED']);

/** An error with a stable Portico code; `message` says what, where and how to fix. */
export class PorticoError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  constructor(code: ErrorCode, message?: string, options?: { cause?: unknown }) {
    super(message ?? ERRORS[code].message, options);
    this.name = 'PorticoError';
    this.code = code;
    this.status = ERRORS[code].status;
  }
}

/** Whether `err` carries the given Portico code. */
export function hasCode(err: unknown, code: ErrorCode): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === code;
}
