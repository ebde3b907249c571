/**
 * A server name as hosts are looked up by: lower-cased, without one trailing dot. RFC 6066 §3 forbids the
 * dot, but some clients (openssl s_client, scripts given "example.com.") send it, and the Host check drops
 * it from the request's host too (README, the Host/SNI rule), so both sides of that check agree. Streams
 * (TLS passthrough) route by the same form. Handshakes only.
 */
export function sniName(servername: string): string {
  const lower = servername.toLowerCase();
  return lower.length > 1 && lower.endsWith('.') ? lower.slice(0, -1) : lower;
}
