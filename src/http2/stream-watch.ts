/**
 * What HTTP/2 streams owe the server besides their exchange: `limits.sendTimeout` and `limits.bodyTimeout` per stream, and a
 * bound on streams a client resets while Portico works on them (CVE-2023-44487, "rapid reset").
 *
 * - sendTimeout: a stream whose response bytes have not moved for that long (its client stopped
 *   reading, or keeps its flow-control window at zero, RFC 9113 §5.2) is reset, which cancels its
 *   upstream exchange, as an HTTP/1.1 connection that stops reading is closed (src/http1/h1-server.ts).
 *   The session's own timeout cannot do it: any frame (a PING) keeps the session alive, and the
 *   GOAWAY it sends waits for the open streams, the stalled one included.
 * - bodyTimeout (nginx's client_body_timeout): a stream whose request body has not moved for that long
 *   while Portico waited for it (its body is being read: flowing, nothing buffered) gets 408 from the
 *   proxy, or is reset once its response has started; its upstream exchange is cancelled. A stream
 *   whose body Portico is not reading (not wanted yet, or held back because the upstream is slow to
 *   take it) is not waiting on its client, and its clock stands still. The bytes are counted by a
 *   'data' listener the sweep adds once it first finds the body being read, so a body read whole within
 *   a second costs nothing, and none is counted on the request path.
 * - Rapid reset: nghttp2 sends GOAWAY after about 1,000 resets in a burst (33 a second after that) but
 *   leaves the connection open. Portico counts the streams a client resets after they reached the
 *   proxy (each cost an upstream request) in a token bucket per session, and past it sends GOAWAY
 *   ENHANCE_YOUR_CALM, resets the session's other streams and closes the connection (lingering
 *   briefly, reading and dropping, so the client's kernel does not discard the GOAWAY on a TCP reset).
 *
 * Streams in flight are kept in an intrusive list (fields on the response), linked and unlinked in a
 * few field writes; a sweep once a second reads each one's unsent bytes. Hot path: add() and the
 * 'close' listener.
 */
import { performance } from 'node:perf_hooks';
import { constants, type Http2Session, type ServerHttp2Stream } from 'node:http2';
import type { Socket } from 'node:net';
import type { H2ServerResponse } from './server-response.js';
import { kRawSocket, type SessionFacts } from './server-request.js';

const { NGHTTP2_ENHANCE_YOUR_CALM } = constants;

const CHECK_INTERVAL_MS = 1000;
/** How long a connection closed for too many resets may stay half-open, reading and dropping what still arrives. */
const LINGER_MS = 2000;

/**
 * Streams a client may reset mid-exchange in a burst (twice SETTINGS_MAX_CONCURRENT_STREAMS: a browser
 * leaving a page cancels at most every stream it has open), then {@link RESETS_PER_SECOND} a second.
 */
export const MAX_RESET_BURST = 512;
/** The sustained rate of mid-exchange resets a session is allowed after its burst. */
export const RESETS_PER_SECOND = 16;

/** What the watch reports, for a log line. */
export type StreamAbuse = 'send-timeout' | 'body-timeout' | 'rapid-reset';

const kWatch = Symbol('portico.streamWatch');
const kOpenStreams = Symbol('portico.openStreams');
const kResetBudget = Symbol('portico.resetBudget');
const kResetAt = Symbol('portico.resetAt');

interface WatchedStream {
  [kWatch]?: H2ServerResponse;
}

interface OpenCount {
  [kOpenStreams]?: number;
}

interface ResetBucket {
  [kResetBudget]?: number;
  [kResetAt]?: number;
}

/** The HTTP/2 streams in flight on one listener, checked once a second against sendTimeout and bodyTimeout. */
export class StreamWatch {
  /** limits.sendTimeout; 0 turns it off. */
  sendTimeoutMs = 60_000;
  /** limits.bodyTimeout; 0 turns it off. */
  bodyTimeoutMs = 60_000;
  #head: H2ServerResponse | undefined = undefined;
  #timer: NodeJS.Timeout | undefined = undefined;
  /** Called when a stream is given up for sendTimeout or bodyTimeout, or a session for too many resets (for a log line). */
  readonly #onAbuse: (what: StreamAbuse, session: Http2Session | undefined) => void;

  constructor(onAbuse: (what: StreamAbuse, session: Http2Session | undefined) => void) {
    this.#onAbuse = onAbuse;
  }

  /** Watches a new stream's response until its stream closes. Hot path. */
  add(res: H2ServerResponse): void {
    const head = this.#head;
    res.nextWatched = head;
    if (head !== undefined) head.prevWatched = res;
    this.#head = res;
    res.watch = this;
    const session = res.session as (Http2Session & OpenCount) | undefined;
    if (session !== undefined) session[kOpenStreams] = (session[kOpenStreams] ?? 0) + 1;
    (res.stream as ServerHttp2Stream & WatchedStream)[kWatch] = res;
    res.stream.on('close', onStreamClose);
    if (this.#timer === undefined) {
      this.#timer = setInterval(sweep, CHECK_INTERVAL_MS, this);
      this.#timer.unref();
    }
  }

  /** Stops watching `res`. Hot path. */
  remove(res: H2ServerResponse): void {
    if (res.watch !== this) return;
    const prev = res.prevWatched;
    const next = res.nextWatched;
    if (prev === undefined) this.#head = next;
    else prev.nextWatched = next;
    if (next !== undefined) next.prevWatched = prev;
    res.prevWatched = undefined;
    res.nextWatched = undefined;
    res.watch = undefined;
    const session = res.session as (Http2Session & OpenCount) | undefined;
    if (session !== undefined) session[kOpenStreams] = (session[kOpenStreams] as number) - 1;
    if (this.#head === undefined && this.#timer !== undefined) {
      clearInterval(this.#timer);
      this.#timer = undefined;
    }
  }

  /** Streams of `session` in flight (handed to the proxy, not yet closed). */
  openOn(session: Http2Session | undefined): number {
    return (session as (Http2Session & OpenCount) | undefined)?.[kOpenStreams] ?? 0;
  }

  /** Once a second: resets the streams whose response has not moved for sendTimeout; gives up on those whose request body has not for bodyTimeout. */
  check(now: number): void {
    const limit = this.sendTimeoutMs;
    const bodyLimit = this.bodyTimeoutMs;
    if (limit <= 0 && bodyLimit <= 0) return;
    let res = this.#head;
    while (res !== undefined) {
      const next = res.nextWatched;
      const stream = res.stream;
      if (limit > 0) {
        const unsent = stream.writableLength;
        if (unsent === 0 || unsent !== res.unsent) {
          res.unsent = unsent;
          res.unsentSince = now;
        } else if (now - res.unsentSince > limit && !stream.closed) {
          this.#onAbuse('send-timeout', res.session);
          // CANCEL: the stream is no longer wanted (RFC 9113 §7); its 'close' cancels the upstream exchange.
          res.cancel();
          res = next;
          continue;
        }
      }
      if (bodyLimit > 0 && isBodyStalled(res, now, bodyLimit)) {
        this.#onAbuse('body-timeout', res.session);
        // The proxy answers 408 (or resets a started response) and cancels the upstream exchange.
        if (res.exchange !== undefined) res.exchange.bodyTimedOut();
        else res.cancel();
      }
      res = next;
    }
  }

  /** A client reset a stream the proxy was working on: one token of its session's bucket. */
  noteClientReset(session: Http2Session & ResetBucket & SessionFacts): void {
    const now = performance.now();
    const at = session[kResetAt];
    let budget = at === undefined ? MAX_RESET_BURST : Math.min(MAX_RESET_BURST, (session[kResetBudget] as number) + ((now - at) * RESETS_PER_SECOND) / 1000);
    budget -= 1;
    session[kResetAt] = now;
    session[kResetBudget] = budget;
    if (budget >= 0) return;
    this.#onAbuse('rapid-reset', session);
    this.#closeSession(session);
  }

  /**
   * GOAWAY ENHANCE_YOUR_CALM (RFC 9113 §7) naming the last stream processed; the session's streams in
   * flight are reset (their 'close' cancels their upstream exchanges), then the connection closes.
   */
  #closeSession(session: Http2Session & SessionFacts): void {
    session.goaway(NGHTTP2_ENHANCE_YOUR_CALM, session.state.lastProcStreamID ?? 0);
    let res = this.#head;
    while (res !== undefined) {
      const next = res.nextWatched;
      if (res.session === session) res.cancel();
      res = next;
    }
    session.close();
    const socket = session[kRawSocket];
    if (socket !== undefined) setTimeout(destroySocket, LINGER_MS, socket).unref();
  }

  /** Stops the sweep (the listener closed). */
  stop(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }
}

/**
 * Whether `res`'s request body has not moved for longer than `limitMs` while Portico waited for it.
 * Waiting: the body is being read (flowing) with nothing buffered; otherwise (no body, read whole, not
 * wanted yet, or paused because the upstream is slow to take it) the clock restarts. Called once a second.
 */
function isBodyStalled(res: H2ServerResponse, now: number, limitMs: number): boolean {
  const stream = res.stream;
  if (res.bodyDropped || stream.endAfterHeaders || stream.readableEnded || stream.closed || stream.destroyed) return false;
  if (stream.readableFlowing !== true || stream.readableLength > 0) {
    res.bodySince = now;
    return false;
  }
  const bytes = res.bodyBytes;
  if (bytes < 0) {
    // First found waiting: from now on its bytes are counted (a listener added to a flowing stream leaves it flowing).
    res.bodyBytes = 0;
    res.bodySeen = 0;
    res.bodySince = now;
    stream.on('data', countBodyBytes);
    return false;
  }
  if (bytes !== res.bodySeen) {
    res.bodySeen = bytes;
    res.bodySince = now;
    return false;
  }
  return now - res.bodySince > limitMs;
}

/** 'data' on a stream whose body the sweep watches: its bytes counted. */
function countBodyBytes(this: ServerHttp2Stream & WatchedStream, chunk: Buffer): void {
  const res = this[kWatch];
  if (res !== undefined) res.bodyBytes += chunk.length;
}

function destroySocket(socket: Socket): void {
  socket.destroy();
}

function sweep(watch: StreamWatch): void {
  watch.check(performance.now());
}

/** A watched stream closed: unlinked; counted when its client reset it mid-exchange (`aborted`, and not Portico's own reset); then the proxy's listener. */
function onStreamClose(this: ServerHttp2Stream & WatchedStream): void {
  const res = this[kWatch];
  if (res === undefined) return;
  const watch = res.watch;
  if (watch !== undefined) {
    watch.remove(res);
    if (this.aborted && !res.resetHere) {
      const session = res.session;
      if (session !== undefined && !session.destroyed && !session.closed) watch.noteClientReset(session);
    }
  }
  // The proxy's own 'close' listener (H2ServerResponse.on).
  res.onClose?.();
}
