/**
 * One HTTP/2 response, written through node:http2's core stream API: the
 * parts of a response the proxy uses (writeHead, write, end, addTrailers,
 * 'drain', 'close'), each a direct call on the stream. The stream checks the
 * head as it serialises it (the status range, connection-specific headers), so
 * a head HTTP/2 cannot carry throws from writeHead before anything is sent.
 * Header names need no check of their own here: they come from llhttp or
 * nghttp2, which accept only valid names, or from Portico itself.
 */
import { constants, type Http2Session, type OutgoingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import type { StreamWatch } from './stream-watch.js';
import { cancelStream } from './cancel-stream.js';

/** The error a reset stream is destroyed with: node:http2 sends RST_STREAM INTERNAL_ERROR for it (its 'error' is ignored, src/http2/stream-handler.ts). */
const RESET = new Error('response reset by Portico');


const KEEP_OPEN = { endStream: false, waitForTrailers: false } as const;
const KEEP_OPEN_FOR_TRAILERS = { endStream: false, waitForTrailers: true } as const;
const END_NOW = { endStream: true, waitForTrailers: false } as const;

/**
 * Response bytes a stream may hold unsent before the upstream is asked to pause. The stream's own
 * 16 KiB paused the upstream after every 64 KiB read, so a large body was never read in large
 * buffers (src/upstream/read-buffers.ts); 128 KiB: 0.72–0.81× the CPU per MiB of a 1 MiB download
 * alone on its connection, 1.01–1.14× with ten at once on one (bench/optimisations.md, section 20).
 */
const STREAM_BUFFER = 128 * 1024;

/**
 * Streams open on a session past which each gets only the stream's own 16 KiB ({@link CROWDED_BUFFER}):
 * a client holding 256 streams open without reading would otherwise pin about 256 KiB each (the buffer,
 * plus the upstream read that crossed it), 66 MiB per connection; with it, about a third of that.
 * Sixteen keeps the large buffer for a handful of parallel downloads (the ten of section 20).
 */
const CROWD = 16;
const CROWDED_BUFFER = 16 * 1024;

/** Who answers for a request whose body stopped arriving (limits.bodyTimeout): the proxy's Exchange. */
export interface BodyTimeoutHandler {
  /** The request body has not moved for bodyTimeout while it was being read: answer 408 or reset, and cancel the upstream exchange. */
  bodyTimedOut(): void;
}

export class H2ServerResponse {
  readonly stream: ServerHttp2Stream;
  statusCode = 200;
  /**
   * Set before writeHead when the response may end with trailers (a chunked or HTTP/2 upstream
   * response): the stream then stays open after its last DATA frame until the trailers are sent.
   * Other responses end with their last DATA frame, one callback fewer.
   */
  trailersExpected = false;
  #trailers: OutgoingHttpHeaders | undefined = undefined;
  /** end() was called. Not the stream's writableEnded: node:http2 ends a HEAD request's stream before any response. */
  #ended = false;
  /** The stream's session, kept: node:http2 forgets it once the stream is destroyed, before its 'close'. */
  readonly session: Http2Session | undefined;
  /** Portico reset the stream itself (reset()): its close is not counted as the client's reset. */
  resetHere = false;
  // The listener's StreamWatch (src/http2/stream-watch.ts): its list links and the sendTimeout record.
  watch: StreamWatch | undefined = undefined;
  prevWatched: H2ServerResponse | undefined = undefined;
  nextWatched: H2ServerResponse | undefined = undefined;
  /** The 'close' listener registered through on() while watched; the StreamWatch calls it. */
  onClose: (() => void) | undefined = undefined;
  /** Unsent response bytes at the last sweep, and since when that figure has not moved. */
  unsent = 0;
  unsentSince = 0;
  /** Answers for the request when its body stalls (set by the request handler). */
  exchange: BodyTimeoutHandler | undefined = undefined;
  /**
   * bodyTimeout: request body bytes read since the sweep started counting them (-1: not yet, no 'data'
   * listener), the figure at the last sweep, and since when Portico has waited for more without any coming.
   */
  bodyBytes = -1;
  bodySeen = 0;
  bodySince = 0;
  /** The upstream stopped the upload (onUpstreamRequestClose): the rest of the body is read and dropped, so a pause in it is no stall. */
  bodyDropped = false;

  constructor(stream: ServerHttp2Stream) {
    this.stream = stream;
    this.session = stream.session;
  }

  /**
   * Resets the stream with INTERNAL_ERROR, so the client cannot take what it got as a whole response.
   * Through destroy(), not close(code): close() first ends the writable side, and with nothing left to
   * write that sends END_STREAM before the RST_STREAM (whose code then reads NO_ERROR), so a response
   * cut short without trailers pending reached the client as complete. A destroyed stream skips the end.
   */
  reset(): void {
    this.resetHere = true;
    this.stream.destroy(RESET);
  }

  /**
   * Resets a stream that is no longer wanted (sendTimeout, a body timeout after the answer began, or its session
   * closed as abusive): with CANCEL (RFC 9113 §8.7) while response bytes wait to be sent, dropping them
   * (cancel-stream.ts says why never through close()), else as reset() does.
   */
  cancel(): void {
    this.resetHere = true;
    if (this.stream.writableLength === 0) this.stream.destroy(RESET);
    else cancelStream(this.stream);
  }

  get headersSent(): boolean {
    return this.stream.headersSent;
  }

  get writableEnded(): boolean {
    return this.#ended;
  }

  /**
   * Ended, and everything written went out: the stream finished writing, or it closed without an
   * error code (both sides' END_STREAM were exchanged; a response written at once can close before
   * its 'finish', which is why writableFinished alone is not the test).
   */
  get writableFinished(): boolean {
    const stream = this.stream;
    return this.#ended && (stream.writableFinished || (stream.closed && stream.rstCode === constants.NGHTTP2_NO_ERROR));
  }

  get destroyed(): boolean {
    return this.stream.destroyed;
  }

  /** Sends the head. Takes `headers` over (its `:status` is set here). Throws, sending nothing, on an invalid head. */
  writeHead(status: number, headers: OutgoingHttpHeaders): this {
    const stream = this.stream;
    if (stream.destroyed || stream.closed) return this;
    headers[':status'] = status;
    if (this.trailersExpected) {
      stream.respond(headers, KEEP_OPEN_FOR_TRAILERS);
      stream.once('wantTrailers', this.#sendTrailers.bind(this));
    } else {
      stream.respond(headers, KEEP_OPEN);
    }
    this.statusCode = status;
    return this;
  }

  /**
   * Sends a `103 Early Hints` HEADERS frame (RFC 8297) before the final response. Takes `headers` over (its
   * `:status` is set here); throws, sending nothing, on a head HTTP/2 cannot carry. Nothing is sent once the
   * final head is. Cold path.
   */
  writeEarlyHints(headers: OutgoingHttpHeaders): void {
    const stream = this.stream;
    if (stream.headersSent || stream.destroyed || stream.closed) return;
    headers[':status'] = 103;
    stream.additionalHeaders(headers);
  }

  /**
   * Writes one body chunk; false once the stream holds {@link STREAM_BUFFER} or more unsent (16 KiB
   * when its session has more than {@link CROWD} streams open), and
   * 'drain' follows (the stream's own 16 KiB mark is lower, so it has asked for the drain too).
   */
  write(chunk: Buffer | string, written?: (err?: Error | null) => void): boolean {
    const stream = this.stream;
    stream.write(chunk, written);
    const unsent = stream.writableLength;
    if (unsent < CROWDED_BUFFER) return true;
    return unsent < STREAM_BUFFER && (this.watch === undefined || this.watch.openOn(this.session) <= CROWD);
  }

  /** Trailers to send after the body; only a response with `trailersExpected` carries them. */
  addTrailers(trailers: OutgoingHttpHeaders): void {
    this.#trailers = trailers;
  }

  end(chunk?: Buffer | string): this {
    const stream = this.stream;
    if (this.#ended || stream.destroyed) return this;
    this.#ended = true;
    if (!stream.headersSent) {
      if (chunk === undefined) {
        stream.respond({ ':status': this.statusCode }, END_NOW);
        return this;
      }
      this.writeHead(this.statusCode, {});
    }
    // HEAD, 204 and 304: the stream ended with the head.
    if (stream.writableEnded) return this;
    if (chunk === undefined) stream.end();
    else stream.end(chunk);
    return this;
  }

  /**
   * 'drain' goes straight to the stream. 'close' (one listener: the proxy's) is called by the
   * StreamWatch's own listener once it has done its bookkeeping, so a stream carries one 'close'
   * listener, not two (two make node's emitter allocate an array per stream, and a copy per emit).
   */
  on(event: 'close' | 'drain', listener: () => void): this {
    if (event === 'close' && this.watch !== undefined) this.onClose = listener;
    else this.stream.on(event, listener);
    return this;
  }

  #sendTrailers(): void {
    const stream = this.stream;
    if (stream.destroyed || stream.closed) return;
    try {
      stream.sendTrailers(this.#trailers ?? {});
    } catch {
      // A trailer HTTP/2 cannot carry (a connection-specific or pseudo-header): the body is whole but
      // its trailers are not, so the client must not take the response as complete.
      this.reset();
    }
  }
}
