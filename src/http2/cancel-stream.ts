/**
 * Cancelling an HTTP/2 stream: RST_STREAM CANCEL (RFC 9113 §8.7), sent at once, with whatever the stream still had
 * queued dropped.
 *
 * Through destroy(), never close(NGHTTP2_CANCEL): close() first ends the stream's writable side, and on Node 20 a
 * stream so closed with bytes still queued (a compressed answer cut by bodyTimeout) made its session send empty DATA
 * frames on it without end, allocating until std::bad_alloc ended the process
 * (test/upstream-h2-no-error-reset.test.ts). node:http2 sends CANCEL for a stream destroyed with Node's own
 * AbortError (as for a request whose AbortSignal fired), Node 20 to 26. Node keeps that class to itself; events.on()
 * throws one at once for a signal aborted already, so its constructor is taken from there.
 */
import { EventEmitter, on } from 'node:events';
import type { Http2Stream } from 'node:http2';

const CANCELLED: Error = ((): Error => {
  try {
    on(new EventEmitter(), 'never', { signal: AbortSignal.abort() });
  } catch (err) {
    const AbortErrorClass = (err as Error).constructor as new (message: string) => Error;
    return new AbortErrorClass('stream cancelled by Portico');
  }
  throw new Error('events.on() did not throw for an aborted signal: no AbortError to cancel HTTP/2 streams with');
})();

/** Resets `stream` with CANCEL now, dropping what it has queued; its 'error' (the AbortError) is for its own listener to ignore. */
export function cancelStream(stream: Http2Stream): void {
  stream.destroy(CANCELLED);
}
