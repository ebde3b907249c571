/**
 * Response compression ("compress" on a host or route; nginx's gzip, Caddy's
 * encode): a proxied response is encoded with br or gzip when the client
 * accepts it (RFC 9110 §12.5.3), the upstream did not encode it, its media type
 * compresses, it is not too short, and nothing forbids it (no-transform, a
 * range, a status without a body). Only routes with "compress" pay anything.
 */
import { constants, createBrotliCompress, createGzip, type BrotliCompress, type Gzip } from 'node:zlib';
import type { OutgoingHttpHeaders } from 'node:http';
import { parseSizeBytes } from '../config/units.js';

export type Encoding = 'br' | 'gzip';

/** A route's compression settings. */
export interface CompressPlan {
  /** In the server's order of preference. */
  readonly encodings: readonly Encoding[];
  /** Responses with a Content-Length below this are sent as they are. */
  readonly minBytes: number;
}

/** A "compress" setting compiled; undefined when off. */
export function compileCompress(c: boolean | { encodings: Encoding[]; minLength: string } | undefined): CompressPlan | undefined {
  if (c === undefined || c === false) return undefined;
  if (c === true) return { encodings: ['br', 'gzip'], minBytes: 512 };
  return { encodings: c.encodings, minBytes: parseSizeBytes(c.minLength) };
}

/** An encoder: a zlib Transform with its kind of flush. */
export type Encoder = BrotliCompress | Gzip;

/**
 * The encoding for a client's Accept-Encoding: the accepted one (q > 0) with the highest q, ties
 * in the server's order; "*" stands for any encoding not listed. Undefined when none is accepted.
 */
export function negotiateEncoding(plan: CompressPlan, accept: string | string[] | undefined): Encoding | undefined {
  if (accept === undefined) return undefined;
  const text = Array.isArray(accept) ? accept.join(',') : accept;
  if (text === '') return undefined;
  let star = -1;
  const q = new Map<string, number>();
  for (const part of text.split(',')) {
    const semi = part.indexOf(';');
    const name = (semi === -1 ? part : part.slice(0, semi)).trim().toLowerCase();
    let weight = 1;
    if (semi !== -1) {
      const m = /(?:^|;)\s*q\s*=\s*([01](?:\.\d{0,3})?)\s*(?:;|$)/i.exec(part.slice(semi));
      if (m !== null) weight = Number(m[1]);
    }
    if (name === '*') star = weight;
    else q.set(name, weight);
  }
  let best: Encoding | undefined;
  let bestQ = 0;
  for (const enc of plan.encodings) {
    const w = q.get(enc) ?? (star === -1 ? 0 : star);
    if (w > bestQ) {
      best = enc;
      bestQ = w;
    }
  }
  return best;
}

const TYPES = new Set([
  'application/json',
  'application/javascript',
  'application/x-javascript',
  'application/ecmascript',
  'application/xml',
  'application/wasm',
  'application/x-ndjson',
  'application/graphql',
  'image/svg+xml',
  'image/x-icon',
  'image/vnd.microsoft.icon',
  'image/bmp',
  'font/ttf',
  'font/otf',
  'application/vnd.ms-fontobject',
]);

/** Whether a Content-Type names a media type worth compressing (text, JSON, XML, JavaScript, SVG, WebAssembly, uncompressed fonts). */
export function isCompressibleType(contentType: string | undefined): boolean {
  if (contentType === undefined) return false;
  const semi = contentType.indexOf(';');
  const type = (semi === -1 ? contentType : contentType.slice(0, semi)).trim().toLowerCase();
  if (type.startsWith('text/')) return type !== 'text/event-stream';
  return TYPES.has(type) || type.endsWith('+json') || type.endsWith('+xml');
}

/** Reads one response header by lower-case name: from a header object, or from [name, value, …] pairs. */
type HeaderGetter = (lowerName: string) => string | undefined;

/**
 * Whether a response may be encoded, apart from what the client accepts: a status with a body (not
 * 204, 206 or 304), no Content-Encoding of its own, a compressible type, no `Cache-Control:
 * no-transform` (RFC 9110 §7.7), and a Content-Length, when there is one, of at least `minBytes`.
 * The request method plays no part: a response to HEAD is judged by its head as its GET would be
 * (RFC 9110 §9.3.2), and only the encoder is left out (see decideEncoding).
 */
export function isCompressibleResponse(plan: CompressPlan, status: number, get: HeaderGetter): boolean {
  if (status < 200 || status === 204 || status === 206 || status === 304) return false;
  const ce = get('content-encoding');
  if (ce !== undefined && ce.trim().toLowerCase() !== 'identity') return false;
  if (!isCompressibleType(get('content-type'))) return false;
  const cc = get('cache-control');
  if (cc !== undefined && /(^|,)\s*no-transform\s*(,|$)/i.test(cc)) return false;
  const cl = get('content-length');
  return cl === undefined || !(Number(cl) < plan.minBytes);
}

function addVary(prev: string | undefined): string {
  if (prev === undefined || prev.trim() === '') return 'Accept-Encoding';
  if (/(^|,)\s*(accept-encoding|\*)\s*(,|$)/i.test(prev)) return prev;
  return `${prev}, Accept-Encoding`;
}

/** A strong ETag made weak: the encoded bytes differ from the upstream's (nginx does the same). */
function weakEtag(etag: string): string {
  return etag.startsWith('W/') ? etag : `W/${etag}`;
}

/**
 * Whether a 304 answers a client that holds the encoded variant of this response: the 304's ETag is
 * strong and the client's If-None-Match names it weak (`W/"v1"`), as Portico sent it on the encoded 200
 * (the upstream matched it by weak comparison, RFC 9110 §13.1.2). Such a 304 must carry the ETag and
 * Vary that 200 had (RFC 9110 §15.4.5): with the strong one, a cache finds no stored response with that
 * strong validator to update (RFC 9111 §4.3.4) and the client's copy is taken for another. Only for
 * 304s on routes with "compress": one or two substring searches of If-None-Match.
 */
export function isEncodedVariantValidated(ifNoneMatch: string | string[] | undefined, etag: string | undefined): boolean {
  if (ifNoneMatch === undefined || etag === undefined || etag.charCodeAt(0) !== 34 /* '"' */) return false;
  const inm = Array.isArray(ifNoneMatch) ? ifNoneMatch.join(', ') : ifNoneMatch;
  for (let at = inm.indexOf(etag, 2); at !== -1; at = inm.indexOf(etag, at + 1)) {
    if (inm.charCodeAt(at - 1) === 47 /* '/' */ && inm.charCodeAt(at - 2) === 87 /* 'W' */) return true;
  }
  return false;
}

/** A 304 for the encoded variant ({@link isEncodedVariantValidated}) gets its weak ETag and Vary: Accept-Encoding. */
export function markWeakObject(h: OutgoingHttpHeaders): void {
  if (typeof h.etag === 'string') h.etag = weakEtag(h.etag);
  h.vary = addVary(h.vary === undefined ? undefined : String(h.vary));
}

/** The response is encoded: a header object (HTTP/2 clients) gets Content-Encoding and Vary, loses its length and ranges. */
export function markEncodedObject(h: OutgoingHttpHeaders, enc: Encoding): void {
  delete h['content-length'];
  delete h['accept-ranges'];
  h['content-encoding'] = enc;
  h.vary = addVary(h.vary === undefined ? undefined : String(h.vary));
  if (typeof h.etag === 'string') h.etag = weakEtag(h.etag);
}

/** Adds Vary: Accept-Encoding to a header object: the response could have been encoded for another client. */
export function markVaryObject(h: OutgoingHttpHeaders): void {
  h.vary = addVary(h.vary === undefined ? undefined : String(h.vary));
}

/**
 * As markEncodedObject, for [name, value, …] pairs (HTTP/1.1 clients); `enc` undefined adds Vary only,
 * and with `weak` (a 304 for the encoded variant, {@link isEncodedVariantValidated}) a weak ETag too.
 */
export function markEncodedPairs(pairs: readonly string[], enc: Encoding | undefined, weak = enc !== undefined): string[] {
  const out: string[] = [];
  let vary: string | undefined;
  for (let i = 0; i + 1 < pairs.length; i += 2) {
    const name = pairs[i] as string;
    const value = pairs[i + 1] as string;
    const lower = name.toLowerCase();
    if (lower === 'vary') vary = vary === undefined ? value : `${vary}, ${value}`;
    // An upstream's "Content-Encoding: identity" (no coding; nothing else reaches an encoder) gives way to the encoding.
    else if (enc !== undefined && (lower === 'content-length' || lower === 'accept-ranges' || lower === 'content-encoding')) continue;
    else if (weak && lower === 'etag') out.push(name, weakEtag(value));
    else out.push(name, value);
  }
  if (enc !== undefined) out.push('content-encoding', enc);
  out.push('vary', addVary(vary));
  return out;
}

/** A header getter over [name, value, …] pairs (first occurrence). */
export function pairsGetter(pairs: readonly string[]): HeaderGetter {
  return (lowerName) => {
    for (let i = 0; i + 1 < pairs.length; i += 2) if ((pairs[i] as string).toLowerCase() === lowerName) return pairs[i + 1];
    return undefined;
  };
}

/**
 * A header getter over [name, value, …] pairs for list headers: every line of the header, joined with
 * ", " (RFC 9110 §5.3), as HTTP/2 clients get them folded; so a no-transform in a second Cache-Control
 * line, or a second Content-Encoding line, counts when deciding whether to compress.
 */
export function pairsListGetter(pairs: readonly string[]): HeaderGetter {
  return (lowerName) => {
    let value: string | undefined;
    for (let i = 0; i + 1 < pairs.length; i += 2) {
      if ((pairs[i] as string).toLowerCase() !== lowerName) continue;
      value = value === undefined ? pairs[i + 1] : `${value}, ${pairs[i + 1] as string}`;
    }
    return value;
  };
}

/** A header getter over a header object with lower-case names. */
export function objectGetter(h: OutgoingHttpHeaders): HeaderGetter {
  return (lowerName) => {
    const v = h[lowerName];
    return v === undefined ? undefined : Array.isArray(v) ? v.join(', ') : String(v);
  };
}

/** A new encoder: brotli at quality 4 or gzip at level 5, the speed-for-size trade-off of Caddy's and nginx's usual settings. */
export function createEncoder(enc: Encoding, sizeHint: number): Encoder {
  if (enc === 'gzip') return createGzip({ level: 5 });
  const params: Record<number, number> = { [constants.BROTLI_PARAM_QUALITY]: 4 };
  // The hint is a 32-bit parameter; a body that large needs no precise one.
  if (sizeHint > 0) params[constants.BROTLI_PARAM_SIZE_HINT] = Math.min(sizeHint, 2 ** 30);
  return createBrotliCompress({ params });
}

/** Pushes what the encoder holds out to the client (a streamed response must not wait for more input). */
export function flushEncoder(e: Encoder, enc: Encoding): void {
  if (enc === 'gzip') e.flush(constants.Z_SYNC_FLUSH);
  else e.flush();
}
