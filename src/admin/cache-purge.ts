/**
 * Purging the response cache over the admin API (`POST /cache/purge`): every stored response, a
 * host's, or a host's under a path prefix, in every process (each keeps its own cache). Not on the
 * request path.
 */
import { responseCache } from '../cache/response-cache.js';
import { parseJsonObject } from './json-body.js';

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
  const parsed = parseJsonObject(text, ['host', 'path'], '"host" and "path", or neither for everything', PURGE_BODY_EXAMPLE);
  if (!parsed.ok) return parsed;
  const o = parsed.body;
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
