/**
 * Reading just enough of a TLS ClientHello (RFC 8446 §4.1.2) to tell whether
 * it carries a server_name extension (RFC 6066 §3), before any TLS state is
 * made for the connection.
 */

/** Largest first record worth waiting for: a TLS record holds at most 2^14 bytes (RFC 8446 §5.1). */
export const MAX_HELLO_BYTES = 5 + 16_384 + 256;

/**
 * Whether the ClientHello at the start of `buf` has a server_name extension:
 * `undefined` while its first record is incomplete. Anything that is not a
 * well-formed single-record ClientHello counts as `true`, so only a hello that
 * provably lacks SNI is treated as such; the TLS stack rejects the malformed ones.
 */
export function hasServerName(buf: Buffer): boolean | undefined {
  if (buf.length < 5) return undefined;
  if (buf[0] !== 0x16) return true; // not a handshake record
  const end = 5 + buf.readUInt16BE(3);
  if (buf.length < end) return undefined;
  if (buf[5] !== 0x01 || end < 9) return true; // not a ClientHello
  const helloEnd = 9 + buf.readUIntBE(6, 3);
  if (helloEnd > end) return true; // spans several records: rare, and never worth a guess
  let p = 9 + 2 + 32; // legacy_version, random
  if (p >= helloEnd) return true;
  p += 1 + (buf[p] as number); // legacy_session_id
  if (p + 2 > helloEnd) return true;
  p += 2 + buf.readUInt16BE(p); // cipher_suites
  if (p >= helloEnd) return true;
  p += 1 + (buf[p] as number); // legacy_compression_methods
  if (p + 2 > helloEnd) return false; // no extensions at all
  const extEnd = Math.min(helloEnd, p + 2 + buf.readUInt16BE(p));
  p += 2;
  while (p + 4 <= extEnd) {
    if (buf.readUInt16BE(p) === 0x0000) return true; // server_name
    p += 4 + buf.readUInt16BE(p + 2);
  }
  return false;
}
