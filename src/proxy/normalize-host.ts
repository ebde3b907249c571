/**
 * Normalising a Host header or :authority for comparison with the TLS server
 * name: lower case, port removed, one trailing dot removed, IPv6 literal
 * brackets removed. Returns undefined for anything that is not a valid host
 * (RFC 9110 §7.2: uri-host [ ":" port ]): an empty label, a port past 65535.
 */

/** Dot-separated labels of letters, digits and hyphens: no empty label ("a..b", ".a"). */
const VALID = /^[a-z0-9-]+(?:\.[a-z0-9-]+)*$/;
const VALID_V6 = /^[0-9a-f:.]+$/;

/** Normalises `Host` (RFC 9110 §7.2) to a bare lower-case name, or undefined when invalid. Hot path. */
export function normalizeHost(raw: string | undefined): string | undefined {
  if (raw === undefined || raw.length === 0 || raw.length > 260) return undefined;
  let host = raw.toLowerCase();
  if (host.charCodeAt(0) === 91 /* [ */) {
    const close = host.indexOf(']');
    if (close === -1) return undefined;
    const rest = host.slice(close + 1);
    if (rest !== '' && !(/^:\d{1,5}$/.test(rest) && Number(rest.slice(1)) <= 65535)) return undefined;
    const v6 = host.slice(1, close);
    return VALID_V6.test(v6) ? v6 : undefined;
  }
  const colon = host.indexOf(':');
  if (colon !== -1) {
    const port = host.slice(colon + 1);
    if (!/^\d{1,5}$/.test(port) || Number(port) > 65535) return undefined;
    host = host.slice(0, colon);
  }
  if (host.endsWith('.')) host = host.slice(0, -1);
  if (host.length === 0 || !VALID.test(host)) return undefined;
  return host;
}
