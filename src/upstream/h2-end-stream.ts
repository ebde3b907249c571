/**
 * How an HTTP/2 upstream response ended: with the upstream's END_STREAM, or because its stream was reset
 * with RST_STREAM NO_ERROR before it. node:http2 ends the readable side of a stream closed with NO_ERROR as
 * if its body were whole (its onStreamClose pushes the end of data), so the two look alike to its user, and
 * a response an upstream abandoned mid-body (a node:http2 server's `stream.destroy()` sends such a reset)
 * reached clients as complete. RFC 9113 §8.1 allows a NO_ERROR reset only after a complete response, to stop
 * the request's upload: one before END_STREAM is a cut-off response.
 *
 * Telling them apart: END_STREAM ends the readable side while the stream is still open; the reset ends it
 * after the stream was marked closed. The stream's push() notes which came first. Set on the node:http2
 * stream when http2-wrapper has just opened it (its 'socket' event), before any frame of it was received.
 */
import { Readable } from 'node:stream';
import type { ClientHttp2Stream } from 'node:http2';

const kEndedBy = Symbol('portico.h2EndedBy');
const BY_END_STREAM = 1;
const BY_RESET = 2;

interface NotedStream {
  readonly closed: boolean;
  [kEndedBy]?: number;
}

/** http2-wrapper's request, with the node:http2 stream it opened. */
interface WrappedRequest {
  readonly _request?: ClientHttp2Stream | undefined;
}

/** The node:http2 stream an http2-wrapper request opened (set by its 'socket' event), or undefined before that. */
export function nativeStreamOf(up: unknown): ClientHttp2Stream | undefined {
  return (up as WrappedRequest | undefined)?._request;
}

/** The stream's push(), noting whether the end of data came with the stream open (END_STREAM) or closed (a reset). Hot path: one check per chunk. */
function pushNotingEnd(this: ClientHttp2Stream & NotedStream, chunk: unknown, encoding?: BufferEncoding): boolean {
  if (chunk === null && this[kEndedBy] === undefined) this[kEndedBy] = this.closed ? BY_RESET : BY_END_STREAM;
  return Readable.prototype.push.call(this, chunk, encoding);
}

/** An http2-wrapper request's 'socket' listener: its node:http2 stream notes how its response ends. */
export function noteEndOfStream(this: WrappedRequest): void {
  const stream = this._request;
  if (stream !== undefined) stream.push = pushNotingEnd;
}

/** Whether an HTTP/2 upstream request's response ended because its stream was reset (NO_ERROR) before the upstream's END_STREAM. Cold path. */
export function isEndedByReset(up: unknown): boolean {
  return (nativeStreamOf(up) as NotedStream | undefined)?.[kEndedBy] === BY_RESET;
}

/** Whether the upstream's END_STREAM was received: the response is whole, whatever reset followed it. Cold path. */
export function hasEndStream(up: unknown): boolean {
  return (nativeStreamOf(up) as NotedStream | undefined)?.[kEndedBy] === BY_END_STREAM;
}

/**
 * Takes every byte of a response whose END_STREAM has arrived (hasEndStream) that http2-wrapper's response `res` and
 * the node:http2 stream under it still hold, for a response whose stream the upstream then reset with NO_ERROR:
 * http2-wrapper destroys `res`, and the stream with it, right after the 'aborted' this is called in. Undefined when
 * there is no stream to take them from. Cold path.
 */
export function takeRestOfBody(up: unknown, res: Readable): Buffer[] | undefined {
  const raw = nativeStreamOf(up);
  if (raw === undefined) return undefined;
  // http2-wrapper's own 'data' listener would push the stream's bytes into its response again.
  raw.removeAllListeners('data');
  const chunks: Buffer[] = [];
  for (const from of [res, raw]) {
    let chunk: Buffer | null;
    while ((chunk = from.read() as Buffer | null) !== null) chunks.push(chunk);
  }
  return chunks;
}

