/**
 * The response cache's store: responses kept in memory, least recently used
 * out first once `limits.cacheSize` is reached, one variant per combination of
 * the request headers their Vary names. One store per process (workers each
 * keep their own, as HAProxy's threads share one and nginx's workers share a
 * disk cache); it outlives Plans, so a reload keeps what is stored.
 */

/** A stored response, ready to be sent again. */
export interface CachedResponse {
  /** The variant's key: the request's key, the Vary names and the values the request had for them. */
  readonly key: string;
  /** The request's key (route, host, path and query), shared by its variants. */
  readonly base: string;
  /** The request's host name and normalised path with query, for purges. */
  readonly host: string;
  readonly url: string;
  readonly status: number;
  /** Header pairs (name, value, …): hop-by-hop, Age and framing headers removed, Content-Length of `body`. */
  readonly pairs: readonly string[];
  readonly body: Buffer;
  /** Date.now() when it was stored. */
  readonly storedAt: number;
  /** Its age in seconds when stored (the upstream's Age). */
  readonly initialAgeS: number;
  /** Date.now() after which it is stale. */
  readonly expiresAt: number;
  readonly etag: string | undefined;
  readonly lastModified: string | undefined;
  /** Bytes it counts against the cache's size. */
  readonly size: number;
}

/** Counters of one process's cache, for /status and /metrics. */
export interface CacheCounters {
  hits: number;
  misses: number;
  stores: number;
  evictions: number;
}

/** What a lookup found. */
export type Lookup = CachedResponse | 'stale' | undefined;

/** Request headers as Portico's servers give them (lower-case names). */
type RequestHeaders = Readonly<Record<string, string | string[] | undefined>>;

function headerValue(h: RequestHeaders, name: string): string {
  const v = h[name];
  return v === undefined ? '' : Array.isArray(v) ? v.join(', ') : v.trim();
}

/** The variant key of a request for `base`, given the Vary names of its responses. */
function variantKey(base: string, varyNames: readonly string[], headers: RequestHeaders): string {
  if (varyNames.length === 0) return base;
  let key = `${base}\n${varyNames.join(',')}`;
  for (let i = 0; i < varyNames.length; i++) key += `\n${headerValue(headers, varyNames[i] as string)}`;
  return key;
}

/** The Vary names of a response's Vary value, lower case, sorted, each once. */
export function varyNames(vary: string | undefined): readonly string[] {
  if (vary === undefined) return [];
  const names = new Set<string>();
  for (const v of vary.split(',')) {
    const n = v.trim().toLowerCase();
    if (n !== '') names.add(n);
  }
  return [...names].sort();
}

export class ResponseCache {
  /** Entries by variant key, least recently used first (a Map keeps insertion order). */
  readonly #entries = new Map<string, CachedResponse>();
  /** The Vary names last stored for each request key, with how many entries use them. */
  readonly #vary = new Map<string, { names: readonly string[]; entries: number }>();
  #bytes = 0;
  #maxBytes = 64 * 1024 * 1024;
  readonly counters: CacheCounters = { hits: 0, misses: 0, stores: 0, evictions: 0 };

  get bytes(): number {
    return this.#bytes;
  }

  get entries(): number {
    return this.#entries.size;
  }

  get maxBytes(): number {
    return this.#maxBytes;
  }

  /** Sets the size (limits.cacheSize), dropping the least recently used entries past it. */
  setMaxBytes(max: number): void {
    this.#maxBytes = max;
    this.#evict();
  }

  /**
   * The stored response for a request, or "stale" when there is one no longer fresh (it is dropped),
   * or undefined. A fresh one becomes the most recently used. Hot path for routes with a cache: a Map
   * lookup for the Vary names and one for the variant.
   */
  lookup(base: string, headers: RequestHeaders, now: number): Lookup {
    const vary = this.#vary.get(base);
    if (vary === undefined) return undefined;
    const key = variantKey(base, vary.names, headers);
    const e = this.#entries.get(key);
    if (e === undefined) return undefined;
    if (now >= e.expiresAt) {
      this.#remove(e);
      return 'stale';
    }
    this.#entries.delete(key);
    this.#entries.set(key, e);
    return e;
  }

  /** The key a response to this request would be stored under, given its Vary names. */
  keyFor(base: string, names: readonly string[], headers: RequestHeaders): string {
    return variantKey(base, names, headers);
  }

  /** Stores a response (replacing the one under its key); one larger than the whole cache is not kept. */
  store(e: CachedResponse, names: readonly string[]): void {
    if (e.size > this.#maxBytes) return;
    const old = this.#entries.get(e.key);
    if (old !== undefined) this.#remove(old);
    const vary = this.#vary.get(e.base);
    if (vary === undefined) this.#vary.set(e.base, { names, entries: 1 });
    else {
      // Responses that change their Vary: the last one's names pick the variants from now on, and the
      // others' entries (keyed with their names) are no longer found; they age out.
      vary.names = names;
      vary.entries++;
    }
    this.#entries.set(e.key, e);
    this.#bytes += e.size;
    this.counters.stores++;
    this.#evict();
  }

  /** Drops every variant of a request key (after an unsafe method on it, RFC 9111 §4.4). */
  invalidate(base: string): void {
    if (!this.#vary.has(base)) return;
    for (const e of [...this.#entries.values()]) if (e.base === base) this.#remove(e);
  }

  /**
   * Drops the entries for `host` (every host when undefined) whose path starts with `pathPrefix`
   * (every path when undefined). Returns how many were dropped. Admin API; scans the whole cache.
   */
  purge(host: string | undefined, pathPrefix: string | undefined): number {
    let n = 0;
    for (const e of [...this.#entries.values()]) {
      if (host !== undefined && e.host !== host) continue;
      if (pathPrefix !== undefined && !e.url.startsWith(pathPrefix)) continue;
      this.#remove(e);
      n++;
    }
    return n;
  }

  #remove(e: CachedResponse): void {
    if (this.#entries.get(e.key) !== e) return;
    this.#entries.delete(e.key);
    this.#bytes -= e.size;
    const vary = this.#vary.get(e.base);
    if (vary !== undefined && --vary.entries === 0) this.#vary.delete(e.base);
  }

  #evict(): void {
    while (this.#bytes > this.#maxBytes) {
      const oldest = this.#entries.values().next().value as CachedResponse | undefined;
      if (oldest === undefined) break;
      this.#remove(oldest);
      this.counters.evictions++;
    }
  }
}

/** This process's cache. */
export const responseCache = new ResponseCache();
