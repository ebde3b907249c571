/**
 * Purging the response cache over the admin API (`POST /cache/purge`): every stored response, a
 * host's, or a host's under a path prefix, in every process (each keeps its own cache). Not on the
 * request path.
 */
import { responseCache } from '../cache/response-cache.js';

/** What the purge endpoint takes, as shown in its error messages. */
export const PURGE_BODY_EXAMPLE = '{"host": "example.com", "path": "/assets/"}';

/** Largest body the purge endpoint reads. */
export const MAX_PURGE_BODY_BYTES = 16 * 1024;

/** What to purge: undefined fields match everything. */
export interface PurgeRequest {
  readonly host: string | undefined;
  readonly path: string | undefined;
}

/** One process's answer to a purge. */
export interface ProcessPurge {
  readonly pid: number;
  /** Stored responses dropped. */
  readonly purged: number;
}

/** The purge a body asks for (an empty body or {} purges everything), or what is wrong with it. */
export function parsePurgeRequest(text: string): ({ readonly ok: true } & PurgeRequest) | { readonly ok: false; readonly error: string } {
  if (text.trim() === '') return { ok: true, host: undefined, path: undefined };
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return { ok: false, error: `the request body is not JSON; send an object such as ${PURGE_BODY_EXAMPLE}, or {} for everything` };
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return { ok: false, error: `the request body must be a JSON object such as ${PURGE_BODY_EXAMPLE}` };
  const o = body as Record<string, unknown>;
  const extra = Object.keys(o).filter((k) => k !== 'host' && k !== 'path');
  if (extra.length > 0) return { ok: false, error: `unknown field${extra.length > 1 ? 's' : ''} ${extra.map((k) => JSON.stringify(k)).join(', ')}; the fields are "host" and "path", such as ${PURGE_BODY_EXAMPLE}` };
  const { host, path } = o;
  if (host !== undefined && (typeof host !== 'string' || host === '')) return { ok: false, error: '"host" must be a host name as the client sends it, such as "example.com"' };
  if (path !== undefined && (typeof path !== 'string' || !path.startsWith('/'))) return { ok: false, error: '"path" must be a path prefix starting with "/", such as "/assets/"' };
  if (path !== undefined && host === undefined) return { ok: false, error: '"path" needs a "host": a path prefix is purged on one host' };
  return { ok: true, host: host?.toLowerCase(), path };
}

/** Purges this process's cache. */
export function purgeInProcess(r: PurgeRequest): ProcessPurge {
  return { pid: process.pid, purged: responseCache.purge(r.host, r.path) };
}
