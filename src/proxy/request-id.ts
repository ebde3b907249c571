/**
 * Request IDs (forwarding.requestId): each request's X-Request-ID, kept from a
 * trusted proxy in front, otherwise a new random UUID, so one request can be
 * followed through the proxies, Portico's access log and the upstream's logs.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';

/** What a kept ID may look like: visible ASCII, at most 200 characters. */
const VALID_ID = /^[\x21-\x7e]{1,200}$/;

/** The request's ID: the X-Request-ID a trusted peer sent, when well-formed, else a new one. */
export function requestIdFor(headers: IncomingHttpHeaders, trusted: boolean): string {
  if (trusted) {
    const sent = headers['x-request-id'];
    if (typeof sent === 'string' && VALID_ID.test(sent)) return sent;
  }
  return randomUUID();
}
