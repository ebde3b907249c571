/**
 * The idle timeout of a tunnel: an upgraded connection (WebSocket, upstream "tunnelIdleTimeout") or a stream
 * port's connection (streams[].idleTimeout), closed once no byte has moved in either direction for its
 * timeout, as HAProxy's `timeout tunnel` and nginx's stream `proxy_timeout` do.
 *
 * No timer per chunk: each of the tunnel's two sockets gets Node's own idle timer (socket.setTimeout, which
 * its reads and writes refresh, and a write still draining holds off). A socket whose timer fires has been
 * still for the timeout, but bytes may still be moving through the other one: a download to a slow client
 * keeps the client socket writing while the upstream socket, paused by back-pressure, reads nothing. So the
 * socket notes how many bytes it had moved when its timer fired, and the tunnel is closed when the other
 * socket's timer has fired too and its count has not changed since: then both have been still for the
 * timeout.
 */
import type { Socket } from 'node:net';

const kPeer = Symbol('portico.tunnelPeer');
const kIdleAt = Symbol('portico.tunnelIdleAt');
const kOnIdle = Symbol('portico.tunnelOnIdle');

interface TunnelSocket extends Socket {
  [kPeer]?: TunnelSocket;
  /** Bytes this socket had moved (read + written) when its idle timer last fired; undefined before. */
  [kIdleAt]?: number;
  [kOnIdle]?: () => void;
}

/** Bytes a socket has read and written (a destroyed socket's bytesWritten may read undefined). */
function movedBytes(s: Socket): number {
  return s.bytesRead + ((s.bytesWritten as number | undefined) ?? 0);
}

/** A socket's 'timeout' listener: closes the tunnel if its peer has been still as long. */
function onSocketIdle(this: TunnelSocket): void {
  this[kIdleAt] = movedBytes(this);
  const peer = this[kPeer];
  if (peer === undefined) return;
  const peerAt = peer[kIdleAt];
  if (peerAt !== undefined && peerAt === movedBytes(peer)) this[kOnIdle]?.();
}

/**
 * Closes a tunnel between `a` and `b` (through `onIdle`, called once) when neither has moved a byte for
 * `timeoutMs`; 0 for no idle timeout. Replaces any idle timer either socket had. `a` and `b` may be the
 * same socket, when every byte of the tunnel passes it.
 */
export function watchTunnelIdle(a: Socket, b: Socket, timeoutMs: number, onIdle: () => void): void {
  if (timeoutMs <= 0) return;
  let called = false;
  const once = (): void => {
    if (called) return;
    called = true;
    onIdle();
  };
  // One socket alone (a === b) watches itself: its own reads and writes are the tunnel's both ways.
  for (const [s, peer] of a === b ? ([[a, a]] as const) : ([[a, b], [b, a]] as const)) {
    const t = s as TunnelSocket;
    t[kPeer] = peer as TunnelSocket;
    t[kIdleAt] = undefined;
    t[kOnIdle] = once;
    t.setTimeout(timeoutMs);
    t.on('timeout', onSocketIdle);
  }
}
