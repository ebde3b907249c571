/**
 * Cache-Control directives (RFC 9111 §5.2) and the freshness rules built on them:
 * whether a request may be answered from the cache, and how long a response may be.
 */

/** The directives of Cache-Control values, names in lower case; a directive without argument maps to "". */
export function parseCacheControl(value: string | undefined): Map<string, string> | undefined {
  if (value === undefined || value === '') return undefined;
  const out = new Map<string, string>();
  // Directives are comma-separated tokens, each with an optional argument (a token or a quoted string, §5.2).
  const re = /\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*(?:=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*)))?\s*(?:,|$)/y;
  let m: RegExpExecArray | null;
  while (re.lastIndex < value.length && (m = re.exec(value)) !== null) {
    const name = (m[1] as string).toLowerCase();
    if (!out.has(name)) out.set(name, m[2] === undefined ? (m[3] ?? '') : m[2].replace(/\\(.)/g, '$1'));
  }
  return out;
}

/** A delta-seconds argument (RFC 9111 §1.2.2), or -1 when it is missing or malformed. */
export function deltaSeconds(arg: string | undefined): number {
  if (arg === undefined || !/^\d+$/.test(arg)) return -1;
  // A value too large to hold stands for 2^31 (§1.2.2).
  return Math.min(Number(arg), 2 ** 31);
}

/** What a request asks of the cache. */
export type RequestCacheMode =
  /** May be answered from the cache. */
  | 'lookup'
  /** Must go to the upstream (no-cache, max-age=0), whose answer may be stored. */
  | 'refresh'
  /** Not for the cache at all: neither answered from it nor stored (Authorization, a client certificate, Range, no-store). */
  | 'bypass';

/** A request's Cache-Control as the cache applies it (RFC 9111 §5.2.1). */
export interface CacheRequest {
  readonly mode: RequestCacheMode;
  /** The greatest age, in ms, of a stored response the request accepts (max-age), or -1: any age. */
  readonly maxAgeMs: number;
  /** How long a stored response must still stay fresh for the request, in ms (min-fresh); 0 when not asked. */
  readonly minFreshMs: number;
  /** How long past its freshness a stored response may be for the request, in ms (max-stale; Infinity without an argument); 0 when not asked. */
  readonly maxStaleMs: number;
  /** Answer only from the cache, else 504 (only-if-cached, §5.2.1.7). */
  readonly onlyIfCached: boolean;
}

/** A request with no Cache-Control directive that limits the cache: the common case, shared. */
export const PLAIN_LOOKUP: CacheRequest = Object.freeze({ mode: 'lookup', maxAgeMs: -1, minFreshMs: 0, maxStaleMs: 0, onlyIfCached: false });
const PLAIN_REFRESH: CacheRequest = Object.freeze({ mode: 'refresh', maxAgeMs: -1, minFreshMs: 0, maxStaleMs: 0, onlyIfCached: false });
const PLAIN_BYPASS: CacheRequest = Object.freeze({ mode: 'bypass', maxAgeMs: -1, minFreshMs: 0, maxStaleMs: 0, onlyIfCached: false });

/**
 * What the cache may do for a GET or HEAD request. A request with credentials (Authorization, or a
 * client certificate its connection showed: `clientCert`) is neither answered from the cache nor
 * stored (RFC 9111 §3.5), as HAProxy's cache does; a range request goes to the
 * upstream whole; no-store keeps its response out (§5.2.1.5); no-cache or max-age=0 skips the stored
 * response but may refresh it (§5.2.1.4, §5.2.1.1), as Pragma: no-cache does without Cache-Control (§5.4).
 * max-age=N, min-fresh and max-stale bound which stored responses the request accepts (§5.2.1.1–3), and
 * only-if-cached asks for a stored response or a 504 (§5.2.1.7). Hot path for cache routes: a request
 * without Cache-Control gets the shared PLAIN_LOOKUP.
 */
export function readCacheRequest(headers: Readonly<Record<string, string | string[] | undefined>>, clientCert = false): CacheRequest {
  const cc = headers['cache-control'];
  const credentials = clientCert || headers['authorization'] !== undefined || headers['range'] !== undefined;
  if (cc === undefined) {
    if (credentials) return PLAIN_BYPASS;
    const pragma = headers['pragma'];
    return pragma !== undefined && String(pragma).toLowerCase().includes('no-cache') ? PLAIN_REFRESH : PLAIN_LOOKUP;
  }
  const d = parseCacheControl(Array.isArray(cc) ? cc.join(', ') : cc);
  if (d === undefined) return credentials ? PLAIN_BYPASS : PLAIN_LOOKUP;
  const maxAge = deltaSeconds(d.get('max-age'));
  const mode: RequestCacheMode = credentials || d.has('no-store') ? 'bypass' : d.has('no-cache') || maxAge === 0 ? 'refresh' : 'lookup';
  const onlyIfCached = d.has('only-if-cached');
  const minFresh = deltaSeconds(d.get('min-fresh'));
  const staleArg = d.get('max-stale');
  // max-stale without an argument accepts any staleness; with a malformed one, none (§5.2.1.2).
  const maxStaleMs = staleArg === undefined ? 0 : staleArg === '' ? Infinity : Math.max(0, deltaSeconds(staleArg)) * 1000;
  if (maxAge < 0 && minFresh <= 0 && maxStaleMs === 0 && !onlyIfCached) {
    return mode === 'lookup' ? PLAIN_LOOKUP : mode === 'refresh' ? PLAIN_REFRESH : PLAIN_BYPASS;
  }
  return { mode, maxAgeMs: maxAge < 0 ? -1 : maxAge * 1000, minFreshMs: Math.max(0, minFresh) * 1000, maxStaleMs, onlyIfCached };
}

/** Statuses stored when the response says how long they stay fresh (RFC 9110 §15.1's heuristically cacheable ones that Portico can replay). */
const STORABLE_STATUS: ReadonlySet<number> = new Set([200, 203, 204, 300, 301, 308, 404, 410]);

/**
 * How long a response stays fresh, in ms from when it was generated, or -1 when it must not be stored:
 * a status Portico does not store, Cache-Control no-store, private or no-cache (each use would need a
 * revalidation Portico does not make), Set-Cookie (one client's cookie must not reach another), or
 * Vary: *. Its lifetime is s-maxage, else max-age (§4.2.1), else Expires minus Date, else
 * `defaultTtlMs` (0: not stored), as nginx's proxy_cache_valid gives one to responses that say nothing.
 */
export function freshnessLifetimeMs(status: number, headers: ReadonlyMap<string, string>, defaultTtlMs: number): number {
  if (!STORABLE_STATUS.has(status)) return -1;
  if (headers.has('set-cookie')) return -1;
  const vary = headers.get('vary');
  if (vary !== undefined && vary.split(',').some((v) => v.trim() === '*')) return -1;
  const cc = parseCacheControl(headers.get('cache-control'));
  if (cc !== undefined) {
    if (cc.has('no-store') || cc.has('private') || cc.has('no-cache')) return -1;
    const s = deltaSeconds(cc.get('s-maxage'));
    if (s >= 0) return s * 1000;
    const m = deltaSeconds(cc.get('max-age'));
    if (m >= 0) return m * 1000;
  }
  const expires = headers.get('expires');
  if (expires !== undefined) {
    // An invalid Expires, "0" included, means already expired (§5.3).
    const at = Date.parse(expires);
    if (Number.isNaN(at)) return 0;
    const date = Date.parse(headers.get('date') ?? '');
    return Math.max(0, at - (Number.isNaN(date) ? Date.now() : date));
  }
  return defaultTtlMs;
}

/**
 * How long past its freshness a response may be served stale under `directive`: "stale-if-error" (while
 * its upstream fails, RFC 5861 §4) or "stale-while-revalidate" (while a new copy is fetched, §3). The
 * response's own directive wins over the route's `configuredMs`; must-revalidate, proxy-revalidate and
 * s-maxage forbid a shared cache to serve it stale at all (RFC 9111 §5.2.2).
 */
export function staleWindowMs(headers: ReadonlyMap<string, string>, directive: 'stale-if-error' | 'stale-while-revalidate', configuredMs: number): number {
  const cc = parseCacheControl(headers.get('cache-control'));
  if (cc === undefined) return configuredMs;
  if (forbidsStale(cc)) return 0;
  const own = deltaSeconds(cc.get(directive));
  return own >= 0 ? own * 1000 : configuredMs;
}

/**
 * Whether a response's directives forbid a shared cache to send it stale without revalidating it:
 * must-revalidate (RFC 9111 §5.2.2.2), proxy-revalidate (§5.2.2.8), or s-maxage, which implies it (§5.2.2.10).
 */
export function forbidsStale(cc: ReadonlyMap<string, string> | undefined): boolean {
  return cc !== undefined && (cc.has('must-revalidate') || cc.has('proxy-revalidate') || cc.has('s-maxage'));
}
