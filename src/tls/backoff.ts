/**
 * Retry delays for the certificate services that ask a remote party again after a failure: ACME orders and
 * renewals (src/acme/manager.ts) and OCSP fetches (ocsp-stapler.ts). Exponential, capped, and jittered by ±25 %,
 * so that processes which fail together (every worker fetches OCSP for itself; many hosts renew at once) do not
 * all retry in the same second. A module of its own, importing nothing: the stapler may use it without loading
 * the ACME modules or their ASN.1 stack, which are loaded only when needed.
 */

/**
 * Delay before retry number `failures` (1 = first retry): `baseMs` · 2^(failures − 1), times a random factor
 * in [0.75, 1.25), capped at `maxMs` (at the cap the delay is `maxMs` exactly).
 * @param random Source of the jitter, in [0, 1). @default Math.random
 */
export function backoffMs(failures: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  const raw = baseMs * 2 ** Math.min(30, Math.max(0, failures - 1));
  return Math.round(Math.min(maxMs, raw * (0.75 + random() * 0.5)));
}
