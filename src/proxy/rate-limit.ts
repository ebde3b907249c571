/**
 * Request rate limits per client address ("rateLimit"; nginx's limit_req,
 * Traefik's rateLimit): a token bucket per address that holds `burst` requests
 * and refills at `requests` per `per`. Counted in each process on its own.
 * Hot path for limited routes: one Map lookup and a little arithmetic; idle
 * buckets are swept when the map grows, so no timer outlives a Plan.
 */

import { parseDurationMs } from '../config/units.js';

interface Bucket {
  tokens: number;
  /** performance.now() of the last refill. */
  at: number;
}

/** The smallest number of addresses kept before idle ones are swept. */
const SWEEP_FLOOR = 4096;

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

  /** Drops the buckets that have refilled completely (their addresses are as good as new). */
  #sweep(now: number): void {
    for (const [address, b] of this.#buckets) {
      if (b.tokens + (now - b.at) * this.#perMs >= this.#burst) this.#buckets.delete(address);
    }
    this.#sweepAt = Math.max(SWEEP_FLOOR, this.#buckets.size * 2);
  }

  /** Addresses tracked now (tests, status). */
  get size(): number {
    return this.#buckets.size;
  }
}

/** A "rateLimit" setting compiled into its limiter. */
export function compileRateLimit(l: { requests: number; per: string; burst?: number | undefined }): RateLimiter {
  return new RateLimiter(l.requests, parseDurationMs(l.per), l.burst ?? l.requests);
}
