/**
 * The response cache's store: responses kept in memory, least recently used
 * out first once `limits.cacheSize` is reached, one variant per combination of
 * the request headers their Vary names. One store per process (workers each
 * keep their own, as HAProxy's threads share one and nginx's workers share a
 * disk cache); it outlives Plans, so a reload keeps what is stored.
 */

/** A stored response, ready to be sent again. */
export interface CachedResponse {
  /** The request's key (route, host, path and query), shared by its variants. */
  readonly base: string;
  /** The variant's key under `base`: the values the request had for the Vary names ("" without Vary). */
  readonly variant: string;
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
  /** Date.now() until which it may be served stale while the upstream fails (stale-if-error). */
  readonly staleUntil: number;
  /** Date.now() until which it may be served stale while a new copy is fetched in the background (stale-while-revalidate). */
  readonly refreshUntil: number;
  /** Its directives let a client's max-stale have it stale (no must-revalidate, proxy-revalidate or s-maxage). */
  readonly mayServeStale: boolean;
  readonly etag: string | undefined;
  readonly lastModified: string | undefined;
  /** Bytes it counts against the cache's size. */
  readonly size: number;
  /** Answered a request since the eviction hand last passed it (second chance). */
  used: boolean;
}

/** Counters of one process's cache, for /status and /metrics. */
export interface CacheCounters {
  hits: number;
  misses: number;
  stores: number;
  evictions: number;
}

/** Request headers as Portico's servers give them (lower-case names). */
type RequestHeaders = Readonly<Record<string, string | string[] | undefined>>;

/** The responses stored for one request key: the Vary names of the last one stored, and the variants by their key. */
interface Slot {
  names: readonly string[];
  readonly variants: Map<string, CachedResponse>;
}

/**
 * The request's value for a Vary name, "" when it has none. Only a string or a list is a value: a name
 * Object.prototype has (`Vary: constructor`, `__proto__`) reads its member on a request without that header.
 */
function headerValue(h: RequestHeaders, name: string): string {
  const v = h[name];
  return typeof v === 'string' ? v.trim() : Array.isArray(v) ? v.join(', ') : '';
}

/** The variant key of a request, given the Vary names of its responses: "" without Vary. */
export function variantKey(varyNames: readonly string[], headers: RequestHeaders): string {
  if (varyNames.length === 0) return '';
  let key = varyNames.join(',');
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
  /** Stored responses by request key. */
  readonly #slots = new Map<string, Slot>();
  /** Every stored response, in the order the eviction hand meets them (a Set keeps insertion order). */
  readonly #ring = new Set<CachedResponse>();
  #bytes = 0;
  #maxBytes = 64 * 1024 * 1024;
  readonly counters: CacheCounters = { hits: 0, misses: 0, stores: 0, evictions: 0 };

  get bytes(): number {
    return this.#bytes;
  }

  get entries(): number {
    return this.#ring.size;
  }

  get maxBytes(): number {
    return this.#maxBytes;
  }

  /** Sets the size (limits.cacheSize), dropping responses past it. */
  setMaxBytes(max: number): void {
    this.#maxBytes = max;
    this.#evict();
  }

  /**
   * The stored response for a request, fresh or not (the caller judges), or undefined. Hot path for
   * routes with a cache: two Map lookups and a flag.
   */
  lookup(base: string, headers: RequestHeaders): CachedResponse | undefined {
    const slot = this.#slots.get(base);
    if (slot === undefined) return undefined;
    const e = slot.variants.get(variantKey(slot.names, headers));
    if (e !== undefined) e.used = true;
    return e;
  }

  /** Drops one stored response. */
  remove(e: CachedResponse): void {
    this.#remove(e);
  }

  /** Stores a response (replacing the one under its key); one larger than the whole cache is not kept. */
  store(e: CachedResponse, names: readonly string[]): void {
    if (e.size > this.#maxBytes) return;
    let slot = this.#slots.get(e.base);
    if (slot === undefined) {
      slot = { names, variants: new Map() };
      this.#slots.set(e.base, slot);
    } else {
      const old = slot.variants.get(e.variant);
      if (old !== undefined) this.#remove(old);
      // Responses that change their Vary: the last one's names pick the variants from now on, and the
      // others' entries (keyed with their names) are no longer found; they go when the hand reaches them.
      slot.names = names;
      if (!this.#slots.has(e.base)) this.#slots.set(e.base, slot);
    }
    slot.variants.set(e.variant, e);
    this.#ring.add(e);
    this.#bytes += e.size;
    this.counters.stores++;
    this.#evict(e);
  }

  /** Drops every variant of a request key (after an unsafe method on it, RFC 9111 §4.4). */
  invalidate(base: string): void {
    const slot = this.#slots.get(base);
    if (slot === undefined) return;
    for (const e of [...slot.variants.values()]) this.#remove(e);
  }

  /**
   * Drops the entries for `host` (every host when undefined) whose path starts with `pathPrefix`
   * (every path when undefined). Returns how many were dropped. Admin API; scans the whole cache.
   */
  purge(host: string | undefined, pathPrefix: string | undefined): number {
    let n = 0;
    for (const e of [...this.#ring]) {
      if (host !== undefined && e.host !== host) continue;
      if (pathPrefix !== undefined && !e.url.startsWith(pathPrefix)) continue;
      this.#remove(e);
      n++;
    }
    return n;
  }

  #remove(e: CachedResponse): void {
    if (!this.#ring.delete(e)) return;
    this.#bytes -= e.size;
    const slot = this.#slots.get(e.base);
    if (slot === undefined || slot.variants.get(e.variant) !== e) return;
    slot.variants.delete(e.variant);
    if (slot.variants.size === 0) this.#slots.delete(e.base);
  }

  /**
   * Past the size, drops responses by the second-chance rule (CLOCK, an approximation of least recently
   * used that costs a hit one flag instead of a reordering): the hand goes round from the oldest; one
   * used since the hand last passed is spared (its flag cleared, moved behind the hand), the first one
   * not used is dropped. `spare`, a response just stored, is passed over: it has not had its chance yet.
   */
  #evict(spare?: CachedResponse): void {
    while (this.#bytes > this.#maxBytes) {
      let victim: CachedResponse | undefined;
      for (const e of this.#ring) {
        if (e === spare) continue;
        if (!e.used) {
          victim = e;
          break;
        }
        e.used = false;
        this.#ring.delete(e);
        this.#ring.add(e);
      }
      // The pass meets the ones it spared again, flags cleared, so it finds one unless the cache is empty.
      if (victim === undefined) break;
      this.#remove(victim);
      this.counters.evictions++;
    }
  }
}

/** This process's cache. */
export const responseCache = new ResponseCache();
