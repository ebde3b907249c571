/**
 * The end of an HTTP/2 session that is idle (limits.keepAliveTimeout), or whose output is stuck (limits.sendTimeout).
 *
 * A client that reads nothing (one flooding SETTINGS or PING frames without reading their acknowledgements,
 * or one gone quiet with bytes unread) is no longer read once what it has not taken fills the sockets, and
 * it cannot be closed gracefully either: the GOAWAY stays queued (the session never finishes), or the TLS
 * socket's end waits for the client (the session is done, its socket not). So, `graceMs` after the GOAWAY:
 * - a session that has not moved a byte for that long while output waits has its socket destroyed: Node's
 *   session timeout fires only then, or when idle, and fires again after each later stretch of activity;
 * - a session that is done but whose socket is still open has it destroyed;
 * - and every `graceMs` after that the session is looked at again, for what no timeout shows: output that
 *   became stuck without any activity (a stream Portico closed, tunnelIdleTimeout say, whose RST_STREAM or last
 *   bytes do not fit in the full sockets, leaving a closed session with bytes unsent) is destroyed once it has
 *   not moved for a whole look.
 * A session that only waits for streams still open and moving (a quiet WebSocket over HTTP/2, GOAWAY sent) is
 * left to them, as GOAWAY promises; a stalled request stream is reset by sendTimeout (stream-watch.ts).
 *
 * With keepAliveTimeout off ("0s") no session is closed for being idle, but one whose output has not moved for
 * sendTimeout while some waits is destroyed (closeStuckSession); with sendTimeout off too, nothing bounds it.
 */
import type { ServerHttp2Session } from 'node:http2';
import type { Socket } from 'node:net';
import { kRawSocket, type SessionFacts } from './server-request.js';

/** The part of a socket's native handle read here: the bytes it has been given and not yet written to the kernel. */
interface WithHandle {
  _handle?: { writeQueueSize?: number } | null;
}

/**
 * Whether `session` has output that has not gone out: frames nghttp2 holds, or bytes its TLS socket was handed and
 * could not write (node:http2 writes to the socket's native handle, so its writableLength stays 0).
 */
export function hasOutputWaiting(session: ServerHttp2Session, socket: Socket): boolean {
  const queued = session.state.outboundQueueSize;
  if (queued !== undefined && queued > 0) return true;
  const handle = (socket as Socket & WithHandle)._handle;
  return handle !== undefined && handle !== null && (handle.writeQueueSize ?? 0) > 0;
}

/** Sends GOAWAY to an idle session, then bounds what remains of it by `graceMs` (see the module comment). Cold path. */
export function closeIdleSession(session: ServerHttp2Session, socket: Socket, graceMs: number): void {
  session.close();
  if (socket.destroyed) return;
  closeStuckSession(session, graceMs);
  // Node's session timeout ends with the session; its socket may outlive it.
  const timer = setInterval(() => {
    if (socket.destroyed) clearInterval(timer);
    else if (session.destroyed) {
      clearInterval(timer);
      socket.destroy();
    }
  }, graceMs);
  timer.unref();
  socket.once('close', () => clearInterval(timer));
}

const kStuckMs = Symbol('portico.stuckMs');
const kWrittenAtLook = Symbol('portico.writtenAtLook');

interface StuckWatch {
  [kStuckMs]?: number;
  [kWrittenAtLook]?: number;
}

/**
 * Destroys `session`'s socket once it has written no byte for `stuckMs` while output waits: its client reads
 * nothing, so it could not even be told GOAWAY. Idle sessions are left alone. The session is looked at when
 * Node's session timeout fires (`stuckMs` without a stream moving a byte), and again every `stuckMs` while it
 * stays quiet, since a client's control frames (a PING or SETTINGS flood) and what the TLS socket writes on its
 * own do not re-arm that timeout: output waiting at a look with no byte written since the one before (or since
 * this was called) is stuck. So a stuck session goes between `stuckMs` and twice that after its output stopped. The session must carry its raw
 * socket (kRawSocket). Cold path: a timer per quiet session, every `stuckMs`; none on the request path.
 */
export function closeStuckSession(session: ServerHttp2Session, stuckMs: number): void {
  const s = session as ServerHttp2Session & StuckWatch;
  if (s[kStuckMs] === undefined) session.on('timeout', onSessionQuiet);
  s[kStuckMs] = stuckMs;
  s[kWrittenAtLook] = (session as ServerHttp2Session & SessionFacts)[kRawSocket]?.bytesWritten ?? -1;
  session.setTimeout(stuckMs);
}

function onSessionQuiet(this: ServerHttp2Session & SessionFacts & StuckWatch): void {
  const socket = this[kRawSocket];
  const stuckMs = this[kStuckMs];
  if (socket === undefined || stuckMs === undefined || this.destroyed || socket.destroyed) return;
  const written = socket.bytesWritten;
  if (written === this[kWrittenAtLook] && hasOutputWaiting(this, socket)) return void socket.destroy();
  this[kWrittenAtLook] = written;
  // A new timer: node:http2 does not fire a session timeout again until it is set again.
  this.setTimeout(stuckMs);
}

/** node:http2's own symbol for a session's timeout timer (Symbol('timeout')), found on the first session that closes. */
let kNodeTimeout: symbol | undefined;

/**
 * A session's 'close' listener: clears the timeout timer node:http2 leaves behind. Its closeSession()
 * marks the session destroyed and then calls setTimeout(0), which returns at once for a destroyed
 * session (Node 20), so the timer of a session with a timeout (keepAliveTimeout, closeStuckSession)
 * stays armed after the session has closed and holds the session, its TLS socket and their buffers
 * (about 30 KB) until it fires: keepAliveTimeout (60 s by default) after the last activity. Under
 * connection churn that is every HTTP/2 connection of the last minute kept in memory.
 */
export function clearSessionTimer(this: ServerHttp2Session): void {
  if (kNodeTimeout === undefined) {
    for (const s of Object.getOwnPropertySymbols(this)) if (s.description === 'timeout') kNodeTimeout = s;
    if (kNodeTimeout === undefined) return;
  }
  const timer = (this as unknown as Record<symbol, NodeJS.Timeout | undefined>)[kNodeTimeout];
  if (timer !== undefined) clearTimeout(timer);
}
