/**
 * Request buffering ("requestBuffer" on an upstream; nginx's proxy_request_buffering, HAProxy's
 * http-buffer-request): a request's body is read, up to the limit, before a target is picked, so a slow
 * upload ties up no upstream connection, and no worker of a small app server, while it arrives. A body
 * that fits is kept whole (Exchange.bodyBuffer) and sent in one piece; a larger one is put back into the
 * request's stream once the limit is passed and streams on from there. Only on routes that ask for it.
 */
import type { Readable } from 'node:stream';
import type { Exchange } from './exchange.js';
import { fail, sendToUpstream } from './handle-request.js';

/** One body being read before its request is sent. */
class BodyReading {
  readonly #ex: Exchange;
  readonly #body: Readable;
  readonly #chunks: Buffer[] = [];

  constructor(ex: Exchange) {
    this.#ex = ex;
    this.#body = ex.req.body;
    this.#body.on('data', this.#onData);
    this.#body.once('end', this.#onEnd);
  }

  /** Stops reading; returns what was read, in one buffer. */
  stop(): Buffer {
    this.#body.off('data', this.#onData);
    this.#body.off('end', this.#onEnd);
    this.#ex.bodyReading = undefined;
    const chunks = this.#chunks;
    return chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks);
  }

  readonly #onData = (chunk: Buffer): void => {
    const ex = this.#ex;
    this.#chunks.push(chunk);
    ex.requestBytes += chunk.length;
    const max = ex.route!.maxBodyBytes;
    if (max > 0 && ex.requestBytes > max) {
      this.stop();
      return fail(ex, 'PORTICO_BODY_TOO_LARGE');
    }
    if (ex.requestBytes <= ex.upstream!.requestBufferBytes) return;
    // Past the limit: what was read goes back to the front of the stream, which is sent from there as it arrives.
    this.#body.pause();
    this.#body.unshift(this.stop());
    ex.requestBytes = 0;
    if (!ex.res.destroyed) sendToUpstream(ex);
  };

  readonly #onEnd = (): void => {
    const ex = this.#ex;
    ex.bodyBuffer = this.stop();
    if (!ex.res.destroyed) sendToUpstream(ex);
  };
}

/** Starts reading `ex`'s body; the request goes on to sendToUpstream() once it is read or the limit passed. */
export function bufferRequestBody(ex: Exchange): void {
  ex.bodyReading = new BodyReading(ex);
}
