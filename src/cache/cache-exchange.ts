/**
 * The response cache on the request path ("cache" on a host or route; nginx's
 * proxy_cache, HAProxy's cache): a GET or HEAD answered from the store, or
 * forwarded with a note of what to store; the upstream's response copied into
 * the store as it streams to the client; Cache-Status (RFC 9211) on both.
 * Routes without a cache pay one field check in dispatch and one per response.
 */
import fresh from 'fresh';
import type { IncomingHttpHeaders } from 'node:http';
import type { Exchange } from '../proxy/exchange.js';
import { onH1Headers } from '../proxy/forward-h1.js';
import { deltaSeconds, freshnessLifetimeMs, requestCacheMode } from './cache-control.js';
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

/** Response headers the store drops: hop-by-hop and framing ones (Content-Length is set from the body), and Age (recomputed). */
const NOT_STORED = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'http2-settings', 'content-length', 'age', 'trailer']);

function requestKey(ex: Exchange): string {
  return `${ex.route!.id}\n${ex.host}\n${ex.url}`;
}

/**
 * Answers a request from the cache when it holds a fresh response for it; otherwise notes on the
 * Exchange what its response may be stored as (a GET), and returns false so that it is forwarded.
 */
export function answerFromCache(ex: Exchange, plan: CachePlan): boolean {
  const method = ex.method;
  if (method !== 'GET' && method !== 'HEAD') {
    if (!SAFE.has(method)) responseCache.invalidate(requestKey(ex));
    return false;
  }
  const headers = ex.req.headers;
  const mode = requestCacheMode(headers);
  if (mode === 'bypass') {
    ex.cacheResult = 'bypass';
    ex.cacheStatus = 'Portico; fwd=bypass';
    return false;
  }
  const base = requestKey(ex);
  let fwd = 'request';
  if (mode === 'lookup') {
    const found = responseCache.lookup(base, headers, Date.now());
    if (found !== undefined && found !== 'stale') {
      responseCache.counters.hits++;
      replay(ex, found);
      return true;
    }
    fwd = found === 'stale' ? 'stale' : 'uri-miss';
  }
  ex.cacheResult = fwd === 'uri-miss' ? 'miss' : fwd === 'request' ? 'refresh' : fwd;
  responseCache.counters.misses++;
  ex.cacheStatus = `Portico; fwd=${fwd}`;
  // A HEAD's response has no body to store; a GET's may be stored.
  if (method === 'GET') ex.cacheMiss = { base, plan };
  return false;
}

/** Sends a stored response: in full, headers only for HEAD, or 304 to a request whose validators match it. */
function replay(ex: Exchange, e: CachedResponse): void {
  const now = Date.now();
  const age = e.initialAgeS + Math.floor((now - e.storedAt) / 1000);
  const status = `Portico; hit; ttl=${Math.max(0, Math.floor((e.expiresAt - now) / 1000))}`;
  ex.cacheStatus = status;
  ex.cacheResult = 'hit';
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
  const kept: string[] = [];
  const byName = new Map<string, string>();
  for (let i = 0; i + 1 < pairs.length; i += 2) {
    const name = (pairs[i] as string).toLowerCase();
    const value = pairs[i + 1] as string;
    const prev = byName.get(name);
    byName.set(name, prev === undefined ? value : `${prev}, ${value}`);
    if (!NOT_STORED.has(name)) kept.push(pairs[i] as string, value);
  }
  const lifetimeMs = freshnessLifetimeMs(status, byName, miss.plan.defaultTtlMs);
  const initialAgeS = Math.max(0, deltaSeconds(byName.get('age')));
  if (lifetimeMs <= initialAgeS * 1000) return cacheStatus;
  const length = byName.get('content-length');
  if (length !== undefined && Number(length) > miss.plan.maxObjectBytes) return cacheStatus;
  const storedAt = Date.now();
  // A response without Date gets the time it was received (RFC 9110 §6.6.1), so that a hit says how old it is.
  if (!byName.has('date')) kept.push('date', new Date(storedAt).toUTCString());
  const names = varyNames(byName.get('vary'));
  ex.cacheFill = {
    base: miss.base,
    variant: variantKey(names, ex.req.headers),
    names,
    status,
    pairs: kept,
    chunks: [],
    size: 0,
    max: miss.plan.maxObjectBytes,
    storedAt,
    initialAgeS,
    lifetimeMs,
    etag: byName.get('etag'),
    lastModified: byName.get('last-modified'),
  };
  return `${cacheStatus}; stored`;
}

/** Adds a chunk to a response being stored; false once it is larger than the route stores. */
function addChunk(f: CacheFill, chunk: Buffer, copy: boolean): boolean {
  f.size += chunk.length;
  if (f.size > f.max) return false;
  f.chunks.push(copy ? Buffer.from(chunk) : chunk);
  return true;
}

/** A body chunk of a response being stored; `copy` for a read buffer that goes back to the upstream side once written. */
export function fillChunk(ex: Exchange, chunk: Buffer, copy: boolean): void {
  if (!addChunk(ex.cacheFill!, chunk, copy)) ex.cacheFill = undefined;
}

/** The response being stored is complete (trailers: a response that ends with them is not kept). */
export function finishFill(ex: Exchange, last: Buffer | null, hasTrailers: boolean): void {
  const f = ex.cacheFill!;
  ex.cacheFill = undefined;
  if (hasTrailers || (last !== null && !addChunk(f, last, false))) return;
  const body = f.chunks.length === 1 ? (f.chunks[0] as Buffer) : Buffer.concat(f.chunks, f.size);
  const pairs = f.pairs;
  if (f.status !== 204) pairs.push('content-length', String(body.length));
  let size = body.length + f.base.length + f.variant.length + 256;
  for (let i = 0; i < pairs.length; i++) size += (pairs[i] as string).length;
  responseCache.store(
    {
      base: f.base,
      variant: f.variant,
      host: ex.host,
      url: ex.url,
      status: f.status,
      pairs,
      body,
      storedAt: f.storedAt,
      initialAgeS: f.initialAgeS,
      expiresAt: f.storedAt + f.lifetimeMs - f.initialAgeS * 1000,
      etag: f.etag,
      lastModified: f.lastModified,
      size,
      used: false,
    },
    f.names,
  );
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
