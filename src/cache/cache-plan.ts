/** A host's or route's "cache" setting, compiled. */
import { parseDurationMs, parseSizeBytes } from '../config/units.js';

/** A route's cache settings, compiled. */
export interface CachePlan {
  /** Lifetime of responses that give none (no max-age, s-maxage or Expires), in ms; 0: they are not stored. */
  readonly defaultTtlMs: number;
  /** Largest response body stored, in bytes. */
  readonly maxObjectBytes: number;
  /** How long past its freshness a stored response may be served while the upstream fails, in ms (a response's own stale-if-error wins); 0: never. */
  readonly staleIfErrorMs: number;
  /** How long past its freshness a stored response is served while a new copy is fetched in the background, in ms (a response's own stale-while-revalidate wins); 0: never. */
  readonly staleWhileRevalidateMs: number;
  /** How long a request waits for another one fetching the same response (nginx's proxy_cache_lock_timeout), in ms; 0: it does not wait. */
  readonly lockTimeoutMs: number;
}

/** The plan for a "cache" value: undefined for none (absent or false). */
export function compileCache(
  c:
    | boolean
    | { defaultTtl?: string | undefined; maxObjectSize: string; staleIfError?: string | undefined; staleWhileRevalidate?: string | undefined; lockTimeout: string }
    | undefined,
): CachePlan | undefined {
  if (c === undefined || c === false) return undefined;
  if (c === true) return { defaultTtlMs: 0, maxObjectBytes: 1024 * 1024, staleIfErrorMs: 0, staleWhileRevalidateMs: 0, lockTimeoutMs: 5000 };
  return {
    defaultTtlMs: c.defaultTtl === undefined ? 0 : parseDurationMs(c.defaultTtl),
    maxObjectBytes: parseSizeBytes(c.maxObjectSize),
    staleIfErrorMs: c.staleIfError === undefined ? 0 : parseDurationMs(c.staleIfError),
    staleWhileRevalidateMs: c.staleWhileRevalidate === undefined ? 0 : parseDurationMs(c.staleWhileRevalidate),
    lockTimeoutMs: parseDurationMs(c.lockTimeout),
  };
}
