/**
 * When to renew and when to retry. Renewal happens when `renewBefore` of the
 * lifetime remains (a share such as "33%", or a duration such as "30d"),
 * moved earlier by a random jitter; when the CA offers ACME Renewal
 * Information (RFC 9773), a random moment in its suggested window is used
 * instead. Failures back off exponentially with a cap (backoffMs, src/tls/backoff.ts,
 * shared with OCSP stapling).
 */
import { X509Certificate, AuthorityKeyIdentifierExtension } from '@peculiar/x509';

/** A parsed `renewBefore`. */
export type RenewBefore = { readonly share: number } | { readonly ms: number };

/** Parses `"33%"` or a duration already converted to ms by the caller. */
export function parseRenewBefore(text: string, parseDurationMs: (s: string) => number): RenewBefore {
  return text.endsWith('%') ? { share: Number(text.slice(0, -1)) / 100 } : { ms: parseDurationMs(text) };
}

/**
 * The moment to renew a certificate valid from `notBeforeMs` to `notAfterMs`.
 * A duration longer than half the lifetime is clamped to half, so a "30d"
 * setting with short-lived certificates does not renew on every check.
 */
export function renewalAt(notBeforeMs: number, notAfterMs: number, before: RenewBefore, random = Math.random): number {
  const lifetime = Math.max(0, notAfterMs - notBeforeMs);
  const ahead = 'share' in before ? lifetime * Math.min(1, Math.max(0, before.share)) : Math.min(before.ms, lifetime / 2);
  const jitter = random() * Math.min(lifetime * 0.02, 3_600_000);
  return Math.round(notAfterMs - ahead - jitter);
}

function base64url(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('base64url');
}

/**
 * The ARI certificate identifier (RFC 9773 §4.1): base64url of the
 * Authority Key Identifier's keyIdentifier, ".", base64url of the DER
 * serial number bytes (without tag and length). Undefined without an AKI.
 */
export function ariCertId(certPem: string | Buffer): string | undefined {
  const cert = new X509Certificate(typeof certPem === 'string' ? certPem : certPem.toString('utf8'));
  const aki = cert.getExtension(AuthorityKeyIdentifierExtension);
  if (aki?.keyId === undefined) return undefined;
  let hex = cert.serialNumber.toLowerCase();
  if (hex.length % 2 === 1) hex = `0${hex}`;
  // DER INTEGER is two's complement: a leading 1 bit needs a 0x00 byte.
  if (/^[89a-f]/.test(hex)) hex = `00${hex}`;
  return `${base64url(Buffer.from(aki.keyId, 'hex'))}.${base64url(Buffer.from(hex, 'hex'))}`;
}

/** A RenewalInfo answer (RFC 9773 §4.2), reduced to what scheduling needs. */
export interface RenewalWindow {
  readonly startMs: number;
  readonly endMs: number;
  /** When to ask again (the Retry-After header), ms from now. */
  readonly recheckMs: number;
}

/** Reads a RenewalInfo JSON body; undefined when it is not a valid window. */
export function parseRenewalInfo(body: unknown, retryAfterMs: number): RenewalWindow | undefined {
  const w = (body as { suggestedWindow?: { start?: unknown; end?: unknown } } | null)?.suggestedWindow;
  const start = typeof w?.start === 'string' ? Date.parse(w.start) : NaN;
  const end = typeof w?.end === 'string' ? Date.parse(w.end) : NaN;
  if (Number.isNaN(start) || Number.isNaN(end) || end < start) return undefined;
  // §4.3.2: clients should poll about twice a day; honour the server's Retry-After within sane bounds.
  const recheckMs = Math.min(Math.max(retryAfterMs > 0 ? retryAfterMs : 6 * 3_600_000, 60_000), 24 * 3_600_000);
  return { startMs: start, endMs: end, recheckMs };
}

/** A uniformly random moment in the window (§4.2); a window in the past means now. */
export function pickInWindow(window: RenewalWindow, now = Date.now(), random = Math.random): number {
  if (window.endMs <= now) return now;
  const start = Math.max(window.startMs, now);
  return Math.round(start + random() * (window.endMs - start));
}
