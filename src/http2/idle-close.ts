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

export function closeIdleSession(session: ServerHttp2Session, socket: Socket, graceMs: number): void {
  session.close();
  if (socket.destroyed) return;
  session.setTimeout(graceMs, () => {
    if (!session.destroyed && session.state.outboundQueueSize !== undefined && session.state.outboundQueueSize > 0) socket.destroy();
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
