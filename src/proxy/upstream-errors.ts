/**
 * One table from an upstream failure's code to the status Portico answers
 * with, for every transport (HTTP/1.1 pool, HTTP/2 client, the ALPN probe).
 */
import type { ErrorCode } from '../errors.js';

/**
 * Failures where the request never reached the upstream: a body-less request may go to the next target.
 * ENOENT and EACCES are a Unix socket target's "refused": no socket file, or no permission to connect to it.
 */
export const RETRYABLE = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'ENOENT', 'EACCES']);

/** Methods a proxy may send again after a failure (RFC 9110 §9.2.2). */
export const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

/**
 * Failures after the request may have reached the upstream but before any response: an idempotent
 * request without a body may go to another target (nginx's default `proxy_next_upstream error timeout`).
 */
export const FAILED_BEFORE_RESPONSE = new Set(['ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'PORTICO_UPSTREAM_CLOSED', 'PORTICO_CONNECT_TIMEOUT', 'PORTICO_RESPONSE_TIMEOUT']);

const UNREACHABLE = new Set([...RETRYABLE, 'ENOTFOUND', 'EAI_AGAIN']);
const TIMEOUT = new Set(['PORTICO_CONNECT_TIMEOUT', 'PORTICO_RESPONSE_TIMEOUT']);
const CLIENT_FAULT = new Set(['PORTICO_INVALID_REQUEST_HEAD', 'PORTICO_BODY_LENGTH_MISMATCH']);

/** Failures that count against a target's passive health: it could not be reached, or did not answer in time. */
export function isTargetFailure(code: string): boolean {
  return UNREACHABLE.has(code) || TIMEOUT.has(code) || code === 'ETIMEDOUT';
}

/** The answer for an upstream failure before its response started. */
export function upstreamErrorCode(code: string): ErrorCode {
  if (TIMEOUT.has(code)) return 'PORTICO_UPSTREAM_TIMEOUT';
  if (UNREACHABLE.has(code)) return 'PORTICO_UPSTREAM_UNREACHABLE';
  if (CLIENT_FAULT.has(code)) return 'PORTICO_BAD_REQUEST';
  return 'PORTICO_UPSTREAM_FAILED';
}
