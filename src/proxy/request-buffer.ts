/**
 * Request buffering ("requestBuffer" on an upstream; nginx's proxy_request_buffering, HAProxy's
 * http-buffer-request): a request's body is read, up to the limit, before a target is picked, so a slow
 * upload ties up no upstream connection, and no worker of a small app server, while it arrives. A body
 * that fits is kept whole (Exchange.bodyBuffer) and sent in one piece; a larger one is put back into the
 * request's stream once the limit is passed and streams on from there. Only on routes that ask for it;
 * their listeners are module-level functions reading the reading's state kept on the body stream, so a
 * buffered request costs one small object, no closure.
 */
import type { Readable } from 'node:stream';
import type { Exchange } from './exchange.js';
import { fail, sendToUpstream } from './handle-request.js';

/** One body being read before its request is sent: its exchange and the chunks read so far. */
interface Reading {
  readonly ex: Exchange;
  readonly chunks: Buffer[];
}

const kReading = Symbol('portico.bodyReading');

/** A request body being read, with its Reading, until it is read or the limit passed. */
type ReadBody = Readable & { [kReading]?: Reading | undefined };

/** Starts reading `ex`'s body; the request goes on to sendToUpstream() once it is read or the limit passed. */
export function bufferRequestBody(ex: Exchange): void {
  const body = ex.req.body as ReadBody;
  body[kReading] = { ex, chunks: [] };
  body.on('data', onBodyData);
  body.once('end', onBodyEnd);
}

/** Stops reading; returns what was read, in one buffer. */
function stopReading(body: ReadBody, r: Reading): Buffer {
  body.off('data', onBodyData);
  body.off('end', onBodyEnd);
  body[kReading] = undefined;
  const chunks = r.chunks;
  return chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks);
}

function onBodyData(this: ReadBody, chunk: Buffer): void {
  const r = this[kReading]!;
  const ex = r.ex;
  r.chunks.push(chunk);
  ex.requestBytes += chunk.length;
  const max = ex.route!.maxBodyBytes;
  if (max > 0 && ex.requestBytes > max) {
    stopReading(this, r);
    return fail(ex, 'PORTICO_BODY_TOO_LARGE');
  }
  if (ex.requestBytes <= ex.upstream!.requestBufferBytes) return;
  // Past the limit: what was read goes back to the front of the stream, which is sent from there as it arrives.
  this.pause();
  this.unshift(stopReading(this, r));
  ex.requestBytes = 0;
  if (!ex.res.destroyed) sendToUpstream(ex);
}

function onBodyEnd(this: ReadBody): void {
  const r = this[kReading]!;
  const ex = r.ex;
  ex.bodyBuffer = stopReading(this, r);
  if (!ex.res.destroyed) sendToUpstream(ex);
}
