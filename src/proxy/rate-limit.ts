/**
 * Request rate limits per client address ("rateLimit"; nginx's limit_req,
 * Traefik's rateLimit): a token bucket per client that holds `burst` requests
 * and refills at `requests` per `per`. Counted in each process on its own. A
 * client is an IPv4 address, or an IPv6 prefix ("ipv6Prefix", /64 by default:
 * one subscriber's network), so that rotating addresses within it gains nothing.
 * Hot path for limited routes: one key, one Map lookup and a little arithmetic; idle
 * buckets are swept when the map grows, so no timer outlives a Plan, and the
 * map never holds more than MAX_TRACKED_ADDRESSES.
 *
 * Limiters live in a registry keyed by where they apply and their settings
 * (RateLimitRegistry), as upstream targets do, so a reload that keeps a limit
 * keeps its buckets: an edit to the config (or a certificate change that
 * reloads it) gives no client a fresh burst.
 */

import { performance } from 'node:perf_hooks';
import { isIPv6 } from 'node:net';
import { parseDurationMs } from '../config/units.js';
import { stripAddress } from './forward-headers.js';
import { ipv6Bytes } from './ipv6-bytes.js';

/**
 * The IPv6 prefix length clients are grouped by when a limit does not say ("rateLimit.ipv6Prefix").
 * A /64 is one network of one subscriber: the interface identifier is its last 64 bits (RFC 4291
 * §2.5.1, RFC 7421), hosts pick and rotate those bits themselves (SLAAC temporary addresses, RFC
 * 8981), and ISPs hand each home a /64 to a /48 (RFC 6177). Counting each address on its own would
 * let any client take a fresh bucket per request.
 */
export const DEFAULT_IPV6_PREFIX = 64;

/** The 16 bytes of the IPv6 address being keyed: one per process, as keys are made synchronously. */
const keyBytes = Buffer.alloc(16);

/**
 * The key a client's requests are counted under: an IPv4 address as it is (IPv4-mapped IPv6 such
 * as "::ffff:127.0.0.1" included: that client is an IPv4 one, not every IPv4 client in ::/64), an IPv6
 * address as its first `ipv6PrefixBits` bits ("<hex>/<bits>"; 128: the address as it is), and
 * anything else (an X-Forwarded-For entry such as "unknown") as it is. Hot path: IPv4 costs one
 * character scan; IPv6 one validity check and one pass over its text into a reused buffer.
 */
export function rateLimitKey(address: string, ipv6PrefixBits: number): string {
  if (!address.includes(':')) return address;
  const v4 = stripAddress(address);
  if (v4 !== address) return v4;
  if (ipv6PrefixBits >= 128 || !isIPv6(address)) return address;
  const b = ipv6Bytes(address, keyBytes);
  // IPv4-mapped in hexadecimal (::ffff:7f00:1): the IPv4 client it is.
  if (b.readUInt32BE(0) === 0 && b.readUInt32BE(4) === 0 && b.readUInt32BE(8) === 0xffff) return `${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  let end = ipv6PrefixBits >> 3;
  const bits = ipv6PrefixBits & 7;
  if (bits !== 0) {
    b[end] = (b[end] as number) & (0xff << (8 - bits));
    end++;
  }
  return `${b.toString('hex', 0, end)}/${ipv6PrefixBits}`;
}

interface Bucket {
  tokens: number;
  /** performance.now() of the last refill. */
  at: number;
}

/** The smallest number of addresses kept before idle ones are swept. */
const SWEEP_FLOOR = 4096;

/**
 * The most clients (keys) one limiter tracks (about 12 MB). Clients that rotate addresses (a /48
 * holds 65,536 /64s; with "ipv6Prefix": 128 a /64 holds 2^64 addresses) keep every bucket below
 * full under a slow limit ("5 per 1h"), so sweeping full ones alone would let the map grow without
 * bound; past this, after a sweep, the clients seen first are forgotten (they start again with a
 * full bucket) until a quarter of the room is free.
 */
export const MAX_TRACKED_ADDRESSES = 100_000;

export class RateLimiter {
  readonly #perMs: number;
  readonly #burst: number;
  readonly #ipv6PrefixBits: number;
  readonly #buckets = new Map<string, Bucket>();
  #sweepAt = SWEEP_FLOOR;

  /** `requests` per `perMs`, with room for `burst` at once, IPv6 clients counted by their first `ipv6PrefixBits` bits. */
  constructor(requests: number, perMs: number, burst: number, ipv6PrefixBits = DEFAULT_IPV6_PREFIX) {
    this.#perMs = requests / perMs;
    this.#burst = burst;
    this.#ipv6PrefixBits = ipv6PrefixBits;
  }

  /**
   * Takes a token for the client at `address` (its rateLimitKey): 0 when the request may go on,
   * else the whole seconds until one is free (the Retry-After of the 429).
   */
  take(address: string): number {
    const now = performance.now();
    const key = rateLimitKey(address, this.#ipv6PrefixBits);
    let b = this.#buckets.get(key);
    if (b === undefined) {
      if (this.#buckets.size >= this.#sweepAt) this.#sweep(now);
      b = { tokens: this.#burst, at: now };
      this.#buckets.set(key, b);
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
  /** Default: DEFAULT_IPV6_PREFIX. */
  readonly ipv6Prefix?: number | undefined;
}

/**
 * Limiters by scope and settings, shared by successive Plans, so that buckets survive reloads. The
 * scope is where a limit applies: `host <name>` for a host's limit (one budget for its routes), or
 * `route <route id>` for a route's own. A limit whose settings changed (requests, per, burst, ipv6Prefix; "1s" and
 * "1000ms" are the same) is a new limiter and starts with full buckets; one no Plan uses any more is
 * dropped when the next Plan is published (retain), so the registry never outgrows one config.
 */
export class RateLimitRegistry {
  readonly #byKey = new Map<string, RateLimiter>();

  /** The limiter for `setting` in `scope`, made once. */
  get(scope: string, setting: RateLimitSetting): RateLimiter {
    const perMs = parseDurationMs(setting.per);
    const burst = setting.burst ?? setting.requests;
    const ipv6Prefix = setting.ipv6Prefix ?? DEFAULT_IPV6_PREFIX;
    const key = `${scope}|${setting.requests}|${perMs}|${burst}|${ipv6Prefix}`;
    let l = this.#byKey.get(key);
    if (l === undefined) {
      l = new RateLimiter(setting.requests, perMs, burst, ipv6Prefix);
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
