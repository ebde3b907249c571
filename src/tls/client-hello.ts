/**
 * Reading just enough of a TLS ClientHello (RFC 8446 §4.1.2) to tell whether
 * it carries a server_name extension (RFC 6066 §3), and which name, before any
 * TLS state is made for the connection (or, for passthrough, without any).
 */

/** Largest first record worth waiting for: a TLS record holds at most 2^14 bytes (RFC 8446 §5.1). */
export const MAX_HELLO_BYTES = 5 + 16_384 + 256;

/**
 * A connection's first bytes, gathered until its first TLS record is whole (by the length in its
 * 5-byte header) or MAX_HELLO_BYTES have come: they are joined and handed back only then, so a
 * ClientHello trickled in a byte per read costs linear time, not a join and a parse per read
 * (quadratic: about 2 s of CPU for 16 KiB in 1-byte reads).
 */
export class HelloBytes {
  readonly #chunks: Buffer[] = [];
  #length = 0;
  /** Bytes wanted before a parse is worth it: the record header, then the whole first record. */
  #need = 5;

  /** Adds a read: all the bytes so far, joined, once they are worth parsing; otherwise undefined. */
  push(chunk: Buffer): Buffer | undefined {
    this.#chunks.push(chunk);
    this.#length += chunk.length;
    if (this.#length < this.#need && this.#length < MAX_HELLO_BYTES) return undefined;
    const buf = this.#chunks.length === 1 ? chunk : Buffer.concat(this.#chunks, this.#length);
    this.#chunks.length = 0;
    this.#chunks.push(buf);
    if (this.#need === 5 && buf[0] === 0x16) {
      this.#need = 5 + buf.readUInt16BE(3);
      if (this.#length < this.#need && this.#length < MAX_HELLO_BYTES) return undefined;
    }
    return buf;
  }
}

/** Where a ClientHello's extensions are, or why there are none to read. */
type Extensions = { readonly start: number; readonly end: number } | 'incomplete' | 'malformed' | 'none';

/**
 * Walks the fixed fields of the ClientHello at the start of `buf` to its extensions block:
 * 'incomplete' while its first record is not all there, 'malformed' for anything that is not a
 * well-formed single-record ClientHello, 'none' for a hello without extensions.
 */
function findExtensions(buf: Buffer): Extensions {
  if (buf.length < 5) return 'incomplete';
  if (buf[0] !== 0x16) return 'malformed'; // not a handshake record
  const end = 5 + buf.readUInt16BE(3);
  if (buf.length < end) return 'incomplete';
  if (buf[5] !== 0x01 || end < 9) return 'malformed'; // not a ClientHello
  const helloEnd = 9 + buf.readUIntBE(6, 3);
  if (helloEnd > end) return 'malformed'; // spans several records: rare, and never worth a guess
  let p = 9 + 2 + 32; // legacy_version, random
  if (p >= helloEnd) return 'malformed';
  p += 1 + (buf[p] as number); // legacy_session_id
  if (p + 2 > helloEnd) return 'malformed';
  p += 2 + buf.readUInt16BE(p); // cipher_suites
  if (p >= helloEnd) return 'malformed';
  p += 1 + (buf[p] as number); // legacy_compression_methods
  if (p + 2 > helloEnd) return 'none';
  return { start: p + 2, end: Math.min(helloEnd, p + 2 + buf.readUInt16BE(p)) };
}

/** Extension types (IANA TLS ExtensionType registry). */
const SERVER_NAME = 0x0000;
const ALPN = 0x0010;
const SESSION_TICKET = 0x0023;

/** The offset and length of the data of the first extension of `type` (RFC 8446 §4.2), or undefined. */
function findExtension(buf: Buffer, ext: { readonly start: number; readonly end: number }, type: number): { readonly at: number; readonly len: number } | undefined {
  let p = ext.start;
  while (p + 4 <= ext.end) {
    const len = buf.readUInt16BE(p + 2);
    if (buf.readUInt16BE(p) === type) return { at: p + 4, len: Math.min(len, ext.end - p - 4) };
    p += 4 + len;
  }
  return undefined;
}

/**
 * Whether the ClientHello at the start of `buf` has a server_name extension:
 * `undefined` while its first record is incomplete. Anything that is not a
 * well-formed single-record ClientHello counts as `true`, so only a hello that
 * provably lacks SNI is treated as such; the TLS stack rejects the malformed ones.
 */
export function hasServerName(buf: Buffer): boolean | undefined {
  const ext = findExtensions(buf);
  if (ext === 'incomplete') return undefined;
  if (ext === 'malformed') return true;
  if (ext === 'none') return false;
  return findExtension(buf, ext, SERVER_NAME) !== undefined;
}

/**
 * The host_name a ClientHello at the start of `buf` asks for (RFC 6066 §3), lower-cased: `undefined`
 * while its first record is incomplete, `''` when it names none or is not a well-formed single-record
 * ClientHello. For TLS passthrough, where Portico routes a connection by this name without terminating it, and
 * for the HTTPS listener, whose TLS server it picks and which names a resumed TLS 1.2 connection (https-listener.ts).
 */
export function readServerName(buf: Buffer): string | undefined {
  const ext = findExtensions(buf);
  if (ext === 'incomplete') return undefined;
  if (typeof ext === 'string') return '';
  const sn = findExtension(buf, ext, SERVER_NAME);
  if (sn === undefined) return '';
  // ServerNameList: a 2-byte length, then entries of a 1-byte type (0 = host_name) and a 2-byte length.
  const listEnd = Math.min(sn.at + sn.len, ext.end);
  let q = sn.at + 2;
  while (q + 3 <= listEnd) {
    const nameType = buf[q] as number;
    const nameLen = buf.readUInt16BE(q + 1);
    q += 3;
    if (q + nameLen > listEnd) return '';
    if (nameType === 0) return buf.toString('latin1', q, q + nameLen).toLowerCase();
    q += nameLen;
  }
  return '';
}

/**
 * Whether the ClientHello at the start of `buf` offers `protocol` in its ALPN extension (RFC 7301 §3.1).
 * False while it is incomplete, malformed or has no such extension. Cold path: only where a host asks
 * for client certificates and an ACME TLS-ALPN-01 challenge for it is pending.
 */
export function offersAlpn(buf: Buffer, protocol: string): boolean {
  const ext = findExtensions(buf);
  if (typeof ext === 'string') return false;
  const alpn = findExtension(buf, ext, ALPN);
  if (alpn === undefined) return false;
  // ProtocolNameList: a 2-byte length, then names of a 1-byte length each.
  const listEnd = alpn.at + alpn.len;
  let q = alpn.at + 2;
  while (q < listEnd) {
    const n = buf[q] as number;
    if (q + 1 + n > listEnd) return false;
    if (buf.toString('latin1', q + 1, q + 1 + n) === protocol) return true;
    q += 1 + n;
  }
  return false;
}

/**
 * Whether the ClientHello at the start of `buf` offers a TLS 1.2 session ticket to resume (RFC 5077 §3.1: a
 * session_ticket extension with data; an empty one only asks for a new ticket). Such a connection may resume
 * without OpenSSL learning its server name, so the HTTPS listener keeps the name this hello asked for.
 */
export function offersSessionTicket(buf: Buffer): boolean {
  const ext = findExtensions(buf);
  if (typeof ext === 'string') return false;
  const ticket = findExtension(buf, ext, SESSION_TICKET);
  return ticket !== undefined && ticket.len > 0;
}
