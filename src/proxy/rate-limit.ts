/**
 * Request rate limits per client address ("rateLimit"; nginx's limit_req,
 * Traefik's rateLimit): a token bucket per address that holds `burst` requests
 * and refills at `requests` per `per`. Counted in each process on its own.
 * Hot path for limited routes: one Map lookup and a little arithmetic; idle
 * buckets are swept when the map grows, so no timer outlives a Plan, and the
 * map never holds more than MAX_TRACKED_ADDRESSES.
 *
 * Limiters live in a registry keyed by where they apply and their settings
 * (RateLimitRegistry), as upstream targets do, so a reload that keeps a limit
 * keeps its buckets: an edit to the config (or a certificate change that
 * reloads it) gives no client a fresh burst.
 */

import { parseDurationMs } from '../config/units.js';

interface Bucket {
  tokens: number;
  /** performance.now() of the last refill. */
  at: number;
}

/** The smallest number of addresses kept before idle ones are swept. */
const SWEEP_FLOOR = 4096;

/**
 * The most addresses one limiter tracks (about 12 MB). Clients that rotate addresses (an IPv6 /64
 * holds 2^64) keep every bucket below full under a slow limit ("5 per 1h"), so sweeping full ones
 * alone would let the map grow without bound; past this, after a sweep, the addresses seen first
 * are forgotten (they start again with a full bucket) until a quarter of the room is free.
 */
export const MAX_TRACKED_ADDRESSES = 100_000;

export class RateLimiter {
  readonly #perMs: number;
  readonly #burst: number;
  readonly #buckets = new Map<string, Bucket>();
  #sweepAt = SWEEP_FLOOR;

  /** `requests` per `perMs`, with room for `burst` at once. */
  constructor(requests: number, perMs: number, burst: number) {
    this.#perMs = requests / perMs;
    this.#burst = burst;
  }

  /**
   * Takes a token for `address`: 0 when the request may go on, else the whole seconds until one
   * is free (the Retry-After of the 429).
   */
  take(address: string): number {
    const now = performance.now();
    let b = this.#buckets.get(address);
    if (b === undefined) {
      if (this.#buckets.size >= this.#sweepAt) this.#sweep(now);
      b = { tokens: this.#burst, at: now };
      this.#buckets.set(address, b);
    } else {
      b.tokens = Math.min(this.#burst, b.tokens + (now - b.at) * this.#perMs);
      b.at = now;
    }
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil((1 - b.tokens) / this.#perMs / 1000));
  }

  /** Drops the buckets that have refilled completely (their addresses are as good as new), then the oldest past MAX_TRACKED_ADDRESSES. */
  #sweep(now: number): void {
    const buckets = this.#buckets;
    for (const [address, b] of buckets) {
      if (b.tokens + (now - b.at) * this.#perMs >= this.#burst) buckets.delete(address);
    }
    if (buckets.size >= MAX_TRACKED_ADDRESSES) {
      // Insertion order: the addresses seen first go first.
      let drop = buckets.size - (MAX_TRACKED_ADDRESSES * 3) / 4;
      for (const address of buckets.keys()) {
        if (drop-- <= 0) break;
        buckets.delete(address);
      }
    }
    this.#sweepAt = Math.min(MAX_TRACKED_ADDRESSES, Math.max(SWEEP_FLOOR, buckets.size * 2));
  }

  /** Addresses tracked now (tests, status). */
  get size(): number {
    return this.#buckets.size;
  }
}

/** A "rateLimit" setting as the config has it. */
export interface RateLimitSetting {
  readonly requests: number;
  readonly per: string;
  readonly burst?: number | undefined;
}

/**
 * Limiters by scope and settings, shared by successive Plans, so that buckets survive reloads. The
 * scope is where a limit applies: `host <name>` for a host's limit (one budget for its routes), or
 * `route <route id>` for a route's own. A limit whose settings changed (requests, per, burst; "1s" and
 * "1000ms" are the same) is a new limiter and starts with full buckets; one no Plan uses any more is
 * dropped when the next Plan is published (retain), so the registry never outgrows one config.
 */
export class RateLimitRegistry {
  readonly #byKey = new Map<string, RateLimiter>();

  /** The limiter for `setting` in `scope`, made once. */
  get(scope: string, setting: RateLimitSetting): RateLimiter {
    const perMs = parseDurationMs(setting.per);
    const burst = setting.burst ?? setting.requests;
    const key = `${scope}|${setting.requests}|${perMs}|${burst}`;
    let l = this.#byKey.get(key);
    if (l === undefined) {
      l = new RateLimiter(setting.requests, perMs, burst);
      this.#byKey.set(key, l);
    }
    return l;
  }

  /** Forgets the limiters a new Plan no longer uses. */
  retain(keep: ReadonlySet<RateLimiter>): void {
    for (const [key, l] of this.#byKey) if (!keep.has(l)) this.#byKey.delete(key);
  }

  /** Limiters kept now (tests). */
  get size(): number {
    return this.#byKey.size;
  }
}
