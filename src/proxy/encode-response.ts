/**
 * Compression of one proxied response: the decision from its head and the
 * request's Accept-Encoding, and the encoder between the upstream body and the
 * client (src/proxy/compress.ts holds the rules). Only routes with "compress".
 */
import { exchangeOf, tagExchange } from './exchange-of.js';
import type { H2ServerResponse } from '../http2/server-response.js';
import type { Exchange } from './exchange.js';
import { createEncoder, flushEncoder, isCompressibleResponse, isEncodedVariantValidated, negotiateEncoding, type CompressPlan, type Encoding } from './compress.js';
import { forgetReadBuffer } from '../upstream/read-buffers.js';

/**
 * What to do with a response on a route with "compress": an encoding to apply, "vary" when it could
 * have been encoded for a client that accepts one (so caches must key on Accept-Encoding), "weak" for
 * a 304 to a client holding the encoded variant (its ETag made weak again, and the Vary), or
 * undefined when it is not a candidate at all.
 *
 * A HEAD gets the answer its GET would (RFC 9110 §9.3.2: the same header fields, Content-Encoding and
 * Vary included, as nginx's gzip sends them), decided from the upstream's head alone; the caller marks
 * the head with the encoding but starts no encoder, as there is no body (so `bytes` stays 0). The one
 * test of the method is made by the caller, and only for a response about to be encoded.
 */
export function decideEncoding(ex: Exchange, cp: CompressPlan, status: number, get: (lowerName: string) => string | undefined): Encoding | 'vary' | 'weak' | undefined {
  if (status === 304) return isEncodedVariantValidated(ex.req.headers['if-none-match'], get('etag')) ? 'weak' : undefined;
  if (!isCompressibleResponse(cp, status, get)) return undefined;
  return negotiateEncoding(cp, ex.req.headers['accept-encoding']) ?? 'vary';
}

/** Puts an encoder between the upstream body and the client, once the head is written. */
export function startEncoder(ex: Exchange, enc: Encoding, contentLength: string | undefined): void {
  const length = contentLength === undefined ? -1 : Number(contentLength);
  const e = createEncoder(enc, length);
  ex.encoder = e;
  ex.encoding = enc;
  ex.flushEach = contentLength === undefined;
  e.pipe(ex.h2 ? (ex.res as H2ServerResponse).stream : (ex.res as unknown as NodeJS.WritableStream), { end: false });
  // The access line counts the encoded bytes the client is sent, not the upstream's (one listener per response, on
  // the encoder's output, which the pipe above already reads as 'data'). After the pipe, so the pipe's flow control stands.
  tagExchange(e, ex);
  if (ex.plan.accessLog) e.on('data', countEncoded);
  e.once('end', endEncoded);
}

// The encoder's listeners: module-level, reading the exchange it was tagged with (no bound function per response).
function countEncoded(this: NodeJS.ReadWriteStream, chunk: Buffer): void {
  exchangeOf(this).bytes += chunk.length;
}

function endEncoded(this: NodeJS.ReadWriteStream): void {
  const res = exchangeOf(this).res;
  if (!res.destroyed) res.end();
}

/** The client went away: the encoder is freed, and read buffers it still held are left to the garbage collector. */
export function dropEncoder(ex: Exchange): void {
  const e = ex.encoder!;
  e.unpipe();
  e.destroy();
  const held = ex.written;
  if (held !== undefined) {
    for (const b of held) forgetReadBuffer(b);
    held.length = 0;
  }
}

/** Streamed bodies from HTTP/2 upstreams: what the encoder holds goes out after each chunk. */
export function flushOnData(this: Exchange): void {
  if (this.encoder !== undefined) flushEncoder(this.encoder, this.encoding);
}
