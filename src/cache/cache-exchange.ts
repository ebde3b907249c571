/**
 * The response cache on the request path ("cache" on a host or route; nginx's
 * proxy_cache, HAProxy's cache): a GET or HEAD answered from the store, or
 * forwarded with a note of what to store; the upstream's response copied into
 * the store as it streams to the client; Cache-Status (RFC 9211) on both. A
 * stale response is revalidated with its validators (a 304 makes it fresh
 * again), and served while the upstream fails within its stale-if-error window.
 * Routes without a cache pay one field check in dispatch and one per response.
 */
import fresh from 'fresh';
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders } from 'node:http';
import type { Exchange } from '../proxy/exchange.js';
import { connectionTokens, DROP_RESPONSE } from '../proxy/forward-headers.js';
import { pairsGetter } from '../proxy/compress.js';
import { onH1Headers } from '../proxy/forward-h1.js';
import { abortUpstreamRequest, connectionClientCert, fail, isTrustedPeer, pickTarget, sendToUpstream, upstreamRequestHeaders, upstreamRstCode } from '../proxy/handle-request.js';
import { openUpstreamRequest, type UpstreamRequest } from '../upstream/open-request.js';
import { isEndedByReset } from '../upstream/h2-end-stream.js';
import type { Target } from '../upstream/target.js';
import type { ErrorCode } from '../errors.js';
import { deltaSeconds, forbidsStale, freshnessLifetimeMs, parseCacheControl, PLAIN_LOOKUP, readCacheRequest, staleWindowMs, type CacheRequest } from './cache-control.js';
import { giveBackReadBuffer } from '../upstream/read-buffers.js';
import { UpstreamError, type H1Handler } from '../upstream/h1-connection.js';
import { responseCache, variantKey, varyNames, type CachedResponse } from './response-cache.js';
import type { CachePlan } from './cache-plan.js';

/** A response being copied into the store while it streams to the client. */
export interface CacheFill {
  readonly base: string;
  readonly variant: string;
  readonly names: readonly string[];
  readonly status: number;
  readonly pairs: string[];
  readonly chunks: Buffer[];
  size: number;
  readonly max: number;
  readonly storedAt: number;
  readonly initialAgeS: number;
  readonly lifetimeMs: number;
  readonly staleMs: number;
  readonly refreshMs: number;
  readonly mayServeStale: boolean;
  readonly etag: string | undefined;
  readonly lastModified: string | undefined;
}

/** What a miss leaves for the response: the request's key and its route's settings. */
export interface CacheMiss {
  readonly base: string;
  readonly plan: CachePlan;
}

/** Methods that change nothing: every other one invalidates what is stored for its URL (RFC 9111 §4.4). */
const SAFE = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE']);

/** Response headers a 304 carries (RFC 9110 §15.4.5), besides Age and Cache-Status. */
const NOT_MODIFIED_HEADERS = new Set(['cache-control', 'content-location', 'date', 'etag', 'expires', 'vary']);

/** Response headers the store drops: those never forwarded (hop-by-hop), framing ones (Content-Length is set from the body), and Age (recomputed). */
const NOT_STORED: ReadonlySet<string> = new Set([...DROP_RESPONSE, 'content-length', 'age', 'trailer']);

/** Headers a 304 does not update in the stored response (RFC 9111 §3.2): its framing and the body's own. */
const NOT_UPDATED = new Set([...NOT_STORED, 'content-encoding', 'content-range', 'content-type']);

/** Upstream statuses after which a stale response is served instead, within its stale-if-error window (RFC 5861 §4). */
const STALE_ON_STATUS = new Set([500, 502, 503, 504]);

/** Portico's own answers after which a stale response is served instead (the upstream failed, is out or full). */
const STALE_ON_ERROR = new Set<ErrorCode>(['PORTICO_UPSTREAM_UNREACHABLE', 'PORTICO_UPSTREAM_FAILED', 'PORTICO_UPSTREAM_TIMEOUT', 'PORTICO_NO_HEALTHY_UPSTREAM', 'PORTICO_UPSTREAM_BUSY']);

/**
 * The request's key: its route, scheme, Host and normalised path with query (nginx's default
 * proxy_cache_key is $scheme$proxy_host$request_uri). The scheme keeps apart what a host served over
 * plain HTTP too ("plainHttp": "serve") answers each, such as an upstream's redirect of http to https.
 * The Host is the one the client sent, port and all, not the host name it routes by: the upstream gets
 * it as X-Forwarded-Host (and as Host by default), and an app that builds links or redirects from it
 * would otherwise have a "Host: example.com:1234" answer stored for every client (web cache poisoning
 * by an unkeyed port). From a trusted proxy, the forwarding headers the upstream gets as they came are
 * in the key too, for the same reason.
 */
function requestKey(ex: Exchange): string {
  const h = ex.req.headers;
  const sent = (ex.h2 ? ((h[':authority'] as string | undefined) ?? h.host) : h.host) ?? ex.host;
  const key = `${ex.route!.id}\n${ex.plain ? 'http' : 'https'}://${sent}\n${ex.url}`;
  return isTrustedPeer(ex.plan, ex.req.remoteAddress) ? key + forwardedByProxy(h) : key;
}

/** Request headers a trusted proxy's values of are forwarded to the upstream (kept or extended). */
const TRUSTED_FORWARDING = ['x-forwarded-host', 'x-forwarded-proto', 'x-forwarded-prefix', 'forwarded'];

/** The forwarding headers a trusted proxy sent, which reach the upstream as they came (see buildRequestHeaders). */
function forwardedByProxy(h: Exchange['req']['headers']): string {
  let out = '';
  for (let i = 0; i < TRUSTED_FORWARDING.length; i++) {
    const v = h[TRUSTED_FORWARDING[i] as string];
    out += `\n${v === undefined ? '' : Array.isArray(v) ? v.join(', ') : v}`;
  }
  return out;
}

/**
 * Requests for a key whose response one of them (the lock's holder, not listed) is fetching, by key
 * (nginx's proxy_cache_lock): they wait for it, then take it from the cache.
 */
const locks = new Map<string, Exchange[]>();

/**
 * Answers a request from the cache when it holds a fresh response for it, or makes it wait while another
 * request fetches that response; otherwise notes on the Exchange what its response may be stored as (a GET),
 * and returns false so that it is forwarded.
 */
export function answerFromCache(ex: Exchange, plan: CachePlan): boolean {
  const method = ex.method;
  if (method !== 'GET' && method !== 'HEAD') {
    if (!SAFE.has(method)) {
      const key = requestKey(ex);
      responseCache.invalidate(key);
      ex.cacheInvalidate = key;
    }
    return false;
  }
  const rq = cacheRequestOf(ex);
  if (rq.mode === 'bypass') {
    if (rq.onlyIfCached) return notCached(ex);
    ex.cacheResult = 'bypass';
    ex.cacheStatus = 'Portico; fwd=bypass';
    return false;
  }
  const base = requestKey(ex);
  let fwd = 'request';
  if (rq.mode === 'lookup') {
    fwd = lookUp(ex, base, rq);
    if (fwd === 'hit') return true;
    if (rq.onlyIfCached) return notCached(ex);
    if (plan.lockTimeoutMs > 0) {
      const waiters = locks.get(base);
      if (waiters !== undefined) {
        waiters.push(ex);
        ex.cacheLock = base;
        ex.lockTimer = setTimeout(onLockTimeout, plan.lockTimeoutMs, ex);
        return true;
      }
      // This GET fetches the response; others for it wait until it is stored (or turns out not to be).
      if (method === 'GET') {
        locks.set(base, []);
        ex.cacheLock = base;
      }
    }
  } else if (rq.onlyIfCached) {
    return notCached(ex);
  }
  noteMiss(ex, base, plan, fwd);
  return false;
}

const NOT_CACHED_STATUS: readonly [string, string] = ['cache-status', 'Portico; fwd=miss; detail=only-if-cached'];

/** only-if-cached and nothing stored the request accepts: 504 without asking the upstream (RFC 9111 §5.2.1.7). */
function notCached(ex: Exchange): true {
  ex.stale = undefined;
  ex.cacheResult = 'miss';
  ex.cacheStatus = NOT_CACHED_STATUS[1];
  responseCache.counters.misses++;
  ex.route!.stats.cacheMisses++;
  fail(ex, 'PORTICO_NOT_CACHED', undefined, NOT_CACHED_STATUS);
  return true;
}

/**
 * Answers from a fresh stored response ("hit"), or keeps a stale one on the Exchange for a revalidation
 * (it has a validator) or for the upstream failing (within its window); returns the RFC 9211 fwd reason.
 * A request's max-age and min-fresh can turn down a fresh response ("request"), and its max-stale accept
 * a stale one that does not forbid it.
 */
function lookUp(ex: Exchange, base: string, rq: CacheRequest): string {
  const found = responseCache.lookup(base, varyHeaders(ex));
  if (found === undefined) return 'uri-miss';
  const now = Date.now();
  if (now < found.expiresAt) {
    if (rq === PLAIN_LOOKUP || accepts(rq, found, now)) {
      responseCache.counters.hits++;
      ex.route!.stats.cacheHits++;
      replay(ex, found, hitStatus(found, now), 'hit');
      return 'hit';
    }
    // Fresh, but too old for this request: fetched again (or revalidated); it stays stored for others.
    if (found.etag !== undefined || found.lastModified !== undefined) ex.stale = found;
    return 'request';
  }
  if (rq.maxStaleMs > 0 && found.mayServeStale && now < found.expiresAt + rq.maxStaleMs && accepts(rq, found, now)) {
    responseCache.counters.hits++;
    ex.route!.stats.cacheHits++;
    replay(ex, found, `Portico; hit; ttl=${Math.floor((found.expiresAt - now) / 1000)}; detail=max-stale`, 'stale');
    return 'hit';
  }
  // stale-while-revalidate: sent at once, and a new copy fetched in the background (once at a time).
  if (now < found.refreshUntil && rq.maxAgeMs < 0 && rq.minFreshMs === 0 && (locks.has(base) || refreshInBackground(ex, found, base))) {
    responseCache.counters.hits++;
    ex.route!.stats.cacheHits++;
    replay(ex, found, `Portico; hit; ttl=${Math.floor((found.expiresAt - now) / 1000)}; detail=stale-while-revalidate`, 'stale');
    return 'hit';
  }
  if (found.etag !== undefined || found.lastModified !== undefined || now < found.staleUntil) ex.stale = found;
  else responseCache.remove(found);
  return 'stale';
}

/** Whether a stored response is young enough for a request's max-age and fresh long enough for its min-fresh (RFC 9111 §5.2.1.1, §5.2.1.3). */
function accepts(rq: CacheRequest, e: CachedResponse, now: number): boolean {
  if (rq.maxAgeMs >= 0 && e.initialAgeS * 1000 + (now - e.storedAt) > rq.maxAgeMs) return false;
  return rq.minFreshMs === 0 || e.expiresAt - now >= rq.minFreshMs;
}

/**
 * The request headers a stored response's Vary is matched against: those the upstream got (RFC 9111 §4.1 matches
 * the request the response was selected by). They are the client's, but on a route with forwardAuth the headers
 * the service's answer names (say Remote-User) are the service's alone, the client's copies removed
 * (applyAuthHeaders): a response with "Vary: Remote-User" is one user's, and keyed by the client's own (absent)
 * Remote-User it went to every user. Other routes pass the client's headers as they are; a forwardAuth route
 * pays one small object, its prototype the client's headers.
 */
function varyHeaders(ex: Exchange): Readonly<Record<string, string | string[] | undefined>> {
  const fa = ex.route!.forwardAuth;
  if (fa === undefined) return ex.req.headers;
  const view = Object.create(ex.req.headers) as Record<string, string | string[] | undefined>;
  const drop = fa.dropFromClient;
  for (let i = 0; i < drop.length; i++) view[drop[i] as string] = undefined;
  const copied = ex.authHeaders;
  if (copied !== undefined) for (let i = 0; i < copied.length; i++) view[(copied[i] as readonly [string, string])[0]] = (copied[i] as readonly [string, string])[1];
  return view;
}

/** A request the cache did not answer goes upstream: its Cache-Status, and for a GET what to store its response as. */
function noteMiss(ex: Exchange, base: string, plan: CachePlan, fwd: string): void {
  ex.cacheResult = fwd === 'uri-miss' ? 'miss' : fwd === 'request' ? 'refresh' : fwd;
  responseCache.counters.misses++;
  ex.route!.stats.cacheMisses++;
  ex.cacheStatus = `Portico; fwd=${fwd}`;
  // A HEAD's response has no body to store; a GET's may be stored.
  if (ex.method === 'GET') ex.cacheMiss = { base, plan };
}

/** The lock's holder is done with it (its response stored, not storable, or failed): its waiters go on. */
function unlock(ex: Exchange): void {
  const base = ex.cacheLock!;
  ex.cacheLock = undefined;
  unlockKey(base);
}

/** The lock on `base` is given up: the requests waiting on it go on. */
function unlockKey(base: string): void {
  const waiters = locks.get(base);
  locks.delete(base);
  // On the next tick: a waiter that misses again is forwarded, which is not for the holder's call stack.
  if (waiters !== undefined && waiters.length > 0) process.nextTick(resumeAll, waiters);
}

function resumeAll(waiters: readonly Exchange[]): void {
  for (let i = 0; i < waiters.length; i++) resume(waiters[i] as Exchange);
}

/** A waiting request goes on: from the cache when the response it waited for is there, else upstream on its own. */
function resume(ex: Exchange): void {
  clearTimeout(ex.lockTimer);
  ex.lockTimer = undefined;
  const base = ex.cacheLock!;
  ex.cacheLock = undefined;
  if (ex.res.destroyed || ex.res.writableEnded) return;
  const fwd = lookUp(ex, base, cacheRequestOf(ex));
  if (fwd === 'hit') return;
  noteMiss(ex, base, ex.route!.cache!, fwd);
  sendToUpstream(ex);
}

/**
 * The request's Cache-Control as the cache applies it. A client certificate is a credential like Authorization
 * (RFC 9111 §3.5): the upstream gets it as Client-Cert and may answer each client its own way.
 */
function cacheRequestOf(ex: Exchange): CacheRequest {
  return readCacheRequest(ex.req.headers, ex.hostPlan?.clientAuth !== undefined && connectionClientCert(ex.req) !== undefined);
}

/** A request waited the route's lockTimeout: it goes upstream on its own, as nginx's proxy_cache_lock_timeout lets it. */
function onLockTimeout(ex: Exchange): void {
  const waiters = locks.get(ex.cacheLock!);
  if (waiters !== undefined) waiters.splice(waiters.indexOf(ex), 1);
  resume(ex);
}

/**
 * An unsafe request's exchange is over: what is stored for its URL is dropped again (RFC 9111 §4.4 invalidates
 * on the response). A GET that went upstream while the upstream was still acting on this request may have
 * stored the state from before it; dropped only when the request came in, that answer would be served
 * until it expired, to the client who made the change too.
 */
export function invalidateAnswered(ex: Exchange): void {
  responseCache.invalidate(ex.cacheInvalidate!);
  ex.cacheInvalidate = undefined;
}

/** The client response of a request holding or waiting on a lock closed: the lock is given up, or the wait. */
export function leaveCacheLock(ex: Exchange): void {
  if (ex.lockTimer === undefined) return unlock(ex);
  clearTimeout(ex.lockTimer);
  ex.lockTimer = undefined;
  const waiters = locks.get(ex.cacheLock!);
  ex.cacheLock = undefined;
  if (waiters !== undefined) {
    const at = waiters.indexOf(ex);
    if (at !== -1) waiters.splice(at, 1);
  }
}

/** Cache-Status of a fresh stored response: a hit, with the seconds it stays fresh. */
function hitStatus(e: CachedResponse, now: number): string {
  return `Portico; hit; ttl=${Math.max(0, Math.floor((e.expiresAt - now) / 1000))}`;
}

/**
 * Sends a stored response: in full, headers only for HEAD, or 304 to a request whose validators match it.
 * `status` is its Cache-Status, `result` what the access line says (set first: the line may be written
 * as the response ends, within this call).
 */
function replay(ex: Exchange, e: CachedResponse, status: string, result: 'hit' | 'stale' | 'revalidated'): void {
  const now = Date.now();
  const age = e.initialAgeS + Math.floor((now - e.storedAt) / 1000);
  ex.cacheStatus = status;
  ex.cacheResult = result;
  ex.replaying = true;
  const h = ex.req.headers;
  const conditional = (h['if-none-match'] !== undefined || h['if-modified-since'] !== undefined) && e.status === 200;
  if (conditional && fresh(h, { etag: e.etag, 'last-modified': e.lastModified })) {
    const pairs: string[] = [];
    for (let i = 0; i < e.pairs.length; i += 2) {
      if (NOT_MODIFIED_HEADERS.has((e.pairs[i] as string).toLowerCase())) pairs.push(e.pairs[i] as string, e.pairs[i + 1] as string);
    }
    pairs.push('age', String(age), 'cache-status', status);
    if (onH1Headers(ex, 304, pairs)) ex.onUpstreamEnd(null, null);
    return;
  }
  const pairs = [...e.pairs, 'age', String(age), 'cache-status', status];
  // Answered already: a page replaced it (interceptErrors turned on since it was stored), or it failed.
  if (!onH1Headers(ex, e.status, pairs) || ex.res.writableEnded) return;
  ex.onUpstreamEnd(ex.method === 'HEAD' || e.body.length === 0 ? null : e.body, null);
}

/**
 * The upstream's response to a request the cache could not answer: returns its Cache-Status value,
 * and starts copying it into the store when it may be stored (`pairs` as the upstream sent them).
 */
export function startFill(ex: Exchange, status: number, pairs: readonly string[]): string {
  const miss = ex.cacheMiss;
  ex.cacheMiss = undefined;
  const cacheStatus = ex.cacheStatus!;
  if (miss === undefined) return cacheStatus;
  const d = describe(status, pairs, miss.plan, NOT_STORED);
  if (d === undefined || !fitsIn(d, miss.plan)) {
    // Nothing will be stored for the requests waiting on this one: they go upstream now.
    if (ex.cacheLock !== undefined) unlock(ex);
    return cacheStatus;
  }
  const names = varyNames(d.byName.get('vary'));
  ex.cacheFill = newFill(d, miss.base, variantKey(names, varyHeaders(ex)), names, status, miss.plan);
  return `${cacheStatus}; stored`;
}

/**
 * Puts Portico's Cache-Status member into a header object after those of the caches nearer the origin that the
 * upstream's response named (RFC 9211 §2: the list runs from the origin to the user agent), never in their place.
 * An HTTP/1.1 client's header pairs get it as a line of its own after theirs, which is the same list.
 */
export function addCacheStatus(headers: OutgoingHttpHeaders, member: string): void {
  const prev = headers['cache-status'];
  headers['cache-status'] = prev === undefined || prev === '' ? member : `${Array.isArray(prev) ? prev.join(', ') : String(prev)}, ${member}`;
}

/** What the store keeps of a response and how long it is fresh. */
interface Described {
  /** The header pairs kept (a Date added when it had none). */
  readonly kept: string[];
  /** Every header by lower-case name, repeated ones joined. */
  readonly byName: Map<string, string>;
  readonly storedAt: number;
  readonly lifetimeMs: number;
  readonly initialAgeS: number;
  /** How long past its freshness it may be served while the upstream fails. */
  readonly staleMs: number;
  /** How long past its freshness it may be served while a new copy is fetched in the background. */
  readonly refreshMs: number;
  /** A client's max-stale may have it stale. */
  readonly mayServeStale: boolean;
}

/** A response's headers as the store keeps them (without the names in `drop`), or undefined when it may not be stored. */
function describe(status: number, pairs: readonly string[], plan: CachePlan, drop: ReadonlySet<string>): Described | undefined {
  const kept: string[] = [];
  const byName = new Map<string, string>();
  const listed = connectionListed(pairs);
  for (let i = 0; i + 1 < pairs.length; i += 2) {
    const name = (pairs[i] as string).toLowerCase();
    const value = pairs[i + 1] as string;
    const prev = byName.get(name);
    byName.set(name, prev === undefined ? value : `${prev}, ${value}`);
    if (!drop.has(name) && (listed === undefined || !listed.has(name))) kept.push(pairs[i] as string, value);
  }
  const lifetimeMs = freshnessLifetimeMs(status, byName, plan.defaultTtlMs);
  const initialAgeS = Math.max(0, deltaSeconds(byName.get('age')));
  if (lifetimeMs <= initialAgeS * 1000) return undefined;
  const storedAt = Date.now();
  // A response without Date gets the time it was received (RFC 9110 §6.6.1), so that a hit says how old it is.
  if (!byName.has('date')) kept.push('date', new Date(storedAt).toUTCString());
  return {
    kept,
    byName,
    storedAt,
    lifetimeMs,
    initialAgeS,
    staleMs: staleWindowMs(byName, 'stale-if-error', plan.staleIfErrorMs),
    refreshMs: staleWindowMs(byName, 'stale-while-revalidate', plan.staleWhileRevalidateMs),
    mayServeStale: !forbidsStale(parseCacheControl(byName.get('cache-control'))),
  };
}

/**
 * The names an upstream's Connection lines list (hop-by-hop by that listing, RFC 9110 §7.6.1), or
 * undefined. The Connection header itself is not stored, so a hit could no longer tell that they are
 * hop-by-hop and would pass them on: they are left out when stored. Once per stored response.
 */
function connectionListed(pairs: readonly string[]): Set<string> | undefined {
  let listed: Set<string> | undefined;
  for (let i = 0; i + 1 < pairs.length; i += 2) {
    if ((pairs[i] as string).length === 10 && (pairs[i] as string).toLowerCase() === 'connection') listed = connectionTokens(pairs[i + 1], listed);
  }
  return listed;
}

/** A stored response as the cache keeps it, its size counted. */
function entry(
  base: string, variant: string, host: string, url: string, status: number, pairs: string[], body: Buffer,
  t: {
    readonly storedAt: number;
    readonly lifetimeMs: number;
    readonly initialAgeS: number;
    readonly staleMs: number;
    readonly refreshMs: number;
    readonly mayServeStale: boolean;
    readonly etag: string | undefined;
    readonly lastModified: string | undefined;
  },
): CachedResponse {
  let size = body.length + base.length + variant.length + 256;
  for (let i = 0; i < pairs.length; i++) size += (pairs[i] as string).length;
  const expiresAt = t.storedAt + t.lifetimeMs - t.initialAgeS * 1000;
  return {
    base, variant, host, url, status, pairs, body,
    storedAt: t.storedAt,
    initialAgeS: t.initialAgeS,
    expiresAt,
    staleUntil: expiresAt + t.staleMs,
    refreshUntil: expiresAt + t.refreshMs,
    mayServeStale: t.mayServeStale,
    etag: t.etag,
    lastModified: t.lastModified,
    size,
    used: false,
  };
}

/** Adds the stored response's validators to a request that revalidates it, in place of the client's own (RFC 9111 §4.3.1). */
export function addValidators(headers: Record<string, unknown>, e: CachedResponse): void {
  delete headers['if-none-match'];
  delete headers['if-modified-since'];
  if (e.etag !== undefined) headers['if-none-match'] = e.etag;
  else if (e.lastModified !== undefined) headers['if-modified-since'] = e.lastModified;
}

/**
 * The upstream's response to a request for a stale stored response (`ex.stale`): a 304 to its validators
 * makes it fresh again with the 304's headers (RFC 9111 §4.3.4) and it is sent; a 500, 502, 503 or 504
 * within its stale-if-error window sends it as it is, once `release` has let go of the upstream's response.
 * Returns whether the client was answered so; otherwise the upstream's response goes on as any other.
 */
export function answerWithStale(ex: Exchange, status: number, pairs: readonly string[], release: (ex: Exchange) => void): boolean {
  const e = ex.stale!;
  ex.stale = undefined;
  const now = Date.now();
  if (status === 304 && (e.etag !== undefined || e.lastModified !== undefined)) {
    release(ex);
    ex.cacheMiss = undefined;
    const updated = revalidated(e, pairs, ex.route!.cache!);
    if (updated === undefined) responseCache.remove(e);
    else responseCache.store(updated, varyNames(pairsGetter(updated.pairs)('vary')));
    if (ex.cacheLock !== undefined) unlock(ex);
    replay(ex, updated ?? e, `Portico; fwd=stale; fwd-status=304${updated === undefined ? '' : `; ttl=${Math.floor((updated.expiresAt - now) / 1000)}`}`, 'revalidated');
    return true;
  }
  if (STALE_ON_STATUS.has(status) && now < e.staleUntil) {
    release(ex);
    ex.cacheMiss = undefined;
    replay(ex, e, `Portico; fwd=stale; fwd-status=${status}; ttl=${Math.floor((e.expiresAt - now) / 1000)}`, 'stale');
    return true;
  }
  return false;
}

/**
 * Portico is about to answer a request for a stale stored response with an error of its own (the upstream
 * unreachable, failed, timed out, out of rotation or full): within the response's stale-if-error window it
 * is sent instead. Returns whether it was.
 */
export function serveStaleOnError(ex: Exchange, code: ErrorCode): boolean {
  const e = ex.stale!;
  ex.stale = undefined;
  const now = Date.now();
  if (!STALE_ON_ERROR.has(code) || now >= e.staleUntil || ex.res.headersSent) return false;
  ex.cacheMiss = undefined;
  ex.errorDetail = `served stale: ${code}`;
  replay(ex, e, `Portico; fwd=stale; detail=${code}; ttl=${Math.floor((e.expiresAt - now) / 1000)}`, 'stale');
  return true;
}


/** The stored response `e` updated by a 304's headers, fresh from now; undefined when those headers forbid storing it. */
function revalidated(e: CachedResponse, notModified: readonly string[], plan: CachePlan): CachedResponse | undefined {
  const update = new Set<string>();
  for (let i = 0; i + 1 < notModified.length; i += 2) {
    const name = (notModified[i] as string).toLowerCase();
    if (!NOT_UPDATED.has(name)) update.add(name);
  }
  const merged: string[] = [];
  for (let i = 0; i + 1 < e.pairs.length; i += 2) {
    const name = (e.pairs[i] as string).toLowerCase();
    if (!update.has(name) && name !== 'content-length') merged.push(e.pairs[i] as string, e.pairs[i + 1] as string);
  }
  for (let i = 0; i + 1 < notModified.length; i += 2) {
    if (update.has((notModified[i] as string).toLowerCase())) merged.push(notModified[i] as string, notModified[i + 1] as string);
  }
  // The 304's Age counts from now, as a fresh response's does.
  const age = pairsGetter(notModified)('age');
  if (age !== undefined) merged.push('age', age);
  const d = describe(e.status, merged, plan, NOT_STORED);
  if (d === undefined) return undefined;
  if (e.status !== 204) d.kept.push('content-length', String(e.body.length));
  return entry(e.base, e.variant, e.host, e.url, e.status, d.kept, e.body, {
    ...d,
    etag: d.byName.get('etag'),
    lastModified: d.byName.get('last-modified'),
  });
}

/** Adds a chunk to a response being stored; false once it is larger than the route stores. */
function addChunk(f: CacheFill, chunk: Buffer, copy: boolean): boolean {
  f.size += chunk.length;
  if (f.size > f.max) return false;
  f.chunks.push(copy ? Buffer.from(chunk) : chunk);
  return true;
}

/**
 * A stored body in a memory block of its own: a chunk that already is one is kept, others are copied into
 * one (Buffer.concat would take small ones from Node's shared 8 KiB pool, and a stored view keeps a whole
 * pool block, or a larger read buffer, alive for as long as it is stored).
 */
function ownBody(chunks: readonly Buffer[], size: number): Buffer {
  const one = chunks[0];
  if (chunks.length === 1 && one !== undefined && one.byteOffset === 0 && one.byteLength === one.buffer.byteLength) return one;
  const out = Buffer.allocUnsafeSlow(size);
  let at = 0;
  for (let i = 0; i < chunks.length; i++) at += (chunks[i] as Buffer).copy(out, at);
  return out;
}

/**
 * A body chunk of a response being stored; `copy` for a read buffer that goes back to the upstream side once
 * written. Past maxObjectSize (a body without Content-Length) the response will not be stored: the requests
 * waiting on it go upstream now, not when its last byte has reached this client or their lockTimeout passed.
 */
export function fillChunk(ex: Exchange, chunk: Buffer, copy: boolean): void {
  if (addChunk(ex.cacheFill!, chunk, copy)) return;
  ex.cacheFill = undefined;
  if (ex.cacheLock !== undefined) unlock(ex);
}

/** The response being stored is complete (trailers: a response that ends with them is not kept). */
export function finishFill(ex: Exchange, last: Buffer | null, hasTrailers: boolean): void {
  const f = ex.cacheFill!;
  ex.cacheFill = undefined;
  commitFill(f, ex.host, ex.url, last, hasTrailers);
  if (ex.cacheLock !== undefined) unlock(ex);
}

/** Stores a response whose body has all arrived (with `last`, its final chunk), unless it ended with trailers or grew too large. */
function commitFill(f: CacheFill, host: string, url: string, last: Buffer | null, hasTrailers: boolean): void {
  if (hasTrailers || (last !== null && !addChunk(f, last, false))) return;
  const body = ownBody(f.chunks, f.size);
  if (f.status !== 204) f.pairs.push('content-length', String(body.length));
  responseCache.store(entry(f.base, f.variant, host, url, f.status, f.pairs, body, f), f.names);
}

/** Whether a response declares a body the route may store (one without Content-Length is counted as it arrives). */
function fitsIn(d: Described, plan: CachePlan): boolean {
  const length = d.byName.get('content-length');
  return length === undefined || Number(length) <= plan.maxObjectBytes;
}

/** A response to be copied into the store as it arrives. */
function newFill(d: Described, base: string, variant: string, names: readonly string[], status: number, plan: CachePlan): CacheFill {
  return {
    base,
    variant,
    names,
    status,
    pairs: d.kept,
    chunks: [],
    size: 0,
    max: plan.maxObjectBytes,
    storedAt: d.storedAt,
    initialAgeS: d.initialAgeS,
    lifetimeMs: d.lifetimeMs,
    staleMs: d.staleMs,
    refreshMs: d.refreshMs,
    mayServeStale: d.mayServeStale,
    etag: d.byName.get('etag'),
    lastModified: d.byName.get('last-modified'),
  };
}

/** A chunk of an HTTP/2 upstream's response being stored ('data' listener, bound to the Exchange). */
export function onFillData(this: Exchange, chunk: Buffer): void {
  if (this.cacheFill !== undefined) fillChunk(this, chunk, false);
}

/** A received header object as pairs (name, value, …), without HTTP/2's pseudo-headers. */
export function headerObjectPairs(h: IncomingHttpHeaders): string[] {
  const pairs: string[] = [];
  for (const name in h) {
    if (name.charCodeAt(0) === 58 /* ':' */) continue;
    const v = h[name];
    if (v === undefined) continue;
    if (Array.isArray(v)) for (const one of v) pairs.push(name, one);
    else pairs.push(name, String(v));
  }
  return pairs;
}

/**
 * Starts fetching a new copy of a stale stored response without a client waiting for it
 * (stale-while-revalidate), on a target of the route (a kept HTTP/1.1 connection, or a stream of an HTTP/2
 * session): a GET with the request's headers and the stored response's validators, which holds the key's
 * lock until it ends. Returns false, having started nothing, when no target can take it now (none in
 * rotation, at maxRequests, or one whose protocol ALPN has yet to settle); the request then revalidates
 * in the foreground.
 */
function refreshInBackground(ex: Exchange, e: CachedResponse, base: string): boolean {
  const u = ex.upstream!;
  const target = pickTarget(u, ex.req.remoteAddress);
  if (target === undefined) return false;
  if (u.maxRequests !== 0 && target.limitedInFlight >= u.maxRequests) return false;
  const h2 = target.kind === 'h2-tls' || target.kind === 'h2c';
  if (!h2 && ((target.kind !== 'h1' && target.kind !== 'h1-tls') || target.h1Pool === undefined)) return false;
  ex.stale = e;
  const headers = upstreamRequestHeaders(ex, target, h2);
  ex.stale = undefined;
  const job = new BackgroundRefresh(e, ex.route!.cache!);
  if (h2) return refreshOverH2(job, target, ex.path, headers, u.responseTimeoutMs, base);
  const pool = target.h1Pool!;
  const conn = pool.acquire();
  locks.set(base, []);
  try {
    conn.send(job, 'GET', ex.path, headers, null, -1, u.responseTimeoutMs);
  } catch {
    // Nothing was written: the connection stays good, and the request revalidates in the foreground.
    pool.release(conn);
    locks.delete(base);
    return false;
  }
  return true;
}

/**
 * The background GET of refreshInBackground on an HTTP/2 target: a stream of the target's session, its
 * response handed to `job` as an HTTP/1.1 connection would hand it. A stream cut before END_STREAM, an
 * error or `timeoutMs` without an answer stores nothing. Cold path (one per stale key at a time).
 */
function refreshOverH2(job: BackgroundRefresh, target: Target, path: string, headers: OutgoingHttpHeaders, timeoutMs: number, base: string): boolean {
  let up: UpstreamRequest;
  try {
    up = openUpstreamRequest(target, 'GET', path, { ...headers });
  } catch {
    return false; // a header Node refuses: the request revalidates in the foreground, where it gets its 400
  }
  locks.set(base, []);
  let done = false;
  const failed = (code: string): void => {
    if (done) return;
    done = true;
    job.onUpstreamError(new UpstreamError(code, `background refresh: ${code}`, false));
  };
  up.on('error', (err: NodeJS.ErrnoException) => failed(err.code ?? 'ERROR'));
  if (timeoutMs > 0) {
    up.setTimeout(timeoutMs, () => {
      abortUpstreamRequest(up);
      failed('PORTICO_RESPONSE_TIMEOUT');
    });
  }
  up.on('response', (res: IncomingMessage) => {
    job.onUpstreamHeaders(res.statusCode ?? 502, headerObjectPairs(res.headers));
    res.on('data', (chunk: Buffer) => job.onUpstreamData(chunk, false));
    res.on('error', (err: NodeJS.ErrnoException) => failed(err.code ?? 'ERROR'));
    res.on('end', () => {
      // A stream reset before END_STREAM ends the response as if whole (see onUpstreamEnd): not stored.
      if (upstreamRstCode(up) !== 0 || isEndedByReset(up)) return failed('ERR_HTTP2_STREAM_ERROR');
      if (done) return;
      done = true;
      job.onUpstreamEnd(null, headerObjectPairs(res.trailers));
    });
  });
  up.end();
  return true;
}

class BackgroundRefresh implements H1Handler {
  readonly #stale: CachedResponse;
  readonly #plan: CachePlan;
  #fill: CacheFill | undefined;

  constructor(stale: CachedResponse, plan: CachePlan) {
    this.#stale = stale;
    this.#plan = plan;
  }

  onUpstreamHeaders(status: number, pairs: string[]): boolean {
    const e = this.#stale;
    if (status === 304 && (e.etag !== undefined || e.lastModified !== undefined)) {
      const updated = revalidated(e, pairs, this.#plan);
      if (updated === undefined) responseCache.remove(e);
      else responseCache.store(updated, varyNames(pairsGetter(updated.pairs)('vary')));
      return true;
    }
    const d = describe(status, pairs, this.#plan, NOT_STORED);
    if (d === undefined || !fitsIn(d, this.#plan)) return true;
    // The variant is the stale one's: the refresh went out with the headers of the request that found it.
    this.#fill = newFill(d, e.base, e.variant, varyNames(d.byName.get('vary')), status, this.#plan);
    return true;
  }

  onUpstreamData(chunk: Buffer, recyclable: boolean): boolean {
    const f = this.#fill;
    if (f !== undefined && !addChunk(f, chunk, recyclable)) this.#fill = undefined;
    // Nothing writes a read buffer here: it goes back at once, copied if it was kept.
    if (recyclable) giveBackReadBuffer(chunk);
    return true;
  }

  onUpstreamEnd(last: Buffer | null, trailers: string[] | null): void {
    const f = this.#fill;
    this.#fill = undefined;
    if (f !== undefined) commitFill(f, this.#stale.host, this.#stale.url, last, trailers !== null && trailers.length > 0);
    unlockKey(this.#stale.base);
  }

  onUpstreamError(_err: UpstreamError): void {
    this.#fill = undefined;
    unlockKey(this.#stale.base);
  }

  clientBehind(): boolean {
    return false;
  }
}
