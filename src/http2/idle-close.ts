/**
 * The end of an idle HTTP/2 session (limits.keepAliveTimeout): GOAWAY, then its connection must go.
 *
 * A client that reads nothing (one flooding SETTINGS or PING frames without reading their acknowledgements,
 * or one gone quiet with bytes unread) is no longer read once what it has not taken fills the sockets, and
 * it cannot be closed gracefully either: the GOAWAY stays queued (the session never finishes), or the TLS
 * socket's end waits for the client (the session is done, its socket not). So, `graceMs` after the GOAWAY:
 * - a session that has not moved a byte for that long while output waits (Node's session timeout fires only
 *   then, or when idle) has its socket destroyed;
 * - a session that is done but whose socket is still open has it destroyed.
 * A session that only waits for streams still open (a quiet WebSocket over HTTP/2, GOAWAY sent) is left to
 * them, as GOAWAY promises; a stalled stream is reset by sendTimeout (stream-watch.ts), and then this applies.
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

export function closeIdleSession(session: ServerHttp2Session, socket: Socket, graceMs: number): void {
  session.close();
  if (socket.destroyed) return;
  session.setTimeout(graceMs, () => {
    if (!session.destroyed && hasOutputWaiting(session, socket)) socket.destroy();
  });
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

/**
 * limits.keepAliveTimeout off ("0s"): no session is closed for being idle, but one whose output has not moved for
 * `stuckMs` (limits.sendTimeout) while some waits is destroyed: its client reads nothing, so it could not even be
 * told GOAWAY. Node's session timeout fires only after that long without a byte read or written (a write still
 * moving re-arms it), and again after the next activity, so a session idle when it fires is looked at again
 * once it has moved and stopped. The session must carry its raw socket (kRawSocket). Cold path: once per session.
 */
export function closeStuckSession(session: ServerHttp2Session, stuckMs: number): void {
  session.setTimeout(stuckMs, onSessionQuiet);
}

function onSessionQuiet(this: ServerHttp2Session & SessionFacts): void {
  const socket = this[kRawSocket];
  if (socket !== undefined && !this.destroyed && hasOutputWaiting(this, socket)) socket.destroy();
}
