/**
 * `limits.sendTimeout` for tunnels (WebSockets and other upgrades, over HTTP/1.1 or HTTP/2), and
 * `streams[].sendTimeout` for a stream port's connections (src/stream/stream-connection.ts): a tunnel whose
 * writes towards one side have not moved for that long (bytes waiting, none written since) is closed, as
 * nginx closes a connection after `send_timeout` (and `proxy_send_timeout` towards the upstream) and HAProxy
 * after `timeout client`/`timeout tunnel`.
 *
 * Why: a tunnel pipes each side into the other with back-pressure, so a client that stops reading (its TCP
 * window, or its HTTP/2 stream's flow-control window, shut) while the upstream keeps sending pauses the
 * upstream and holds both connections, the upstream's maxRequests slot and the buffered bytes; nothing else
 * ends it (tunnelIdleTimeout, or a stream's idleTimeout, sees the client still sending, or a write still
 * pending). Quiet tunnels have nothing waiting and are never closed by this.
 *
 * No work per chunk: one sweep a second over the open tunnels (a Set, added to when a tunnel opens), which
 * reads each direction's counters. For each direction, "done" is the bytes whose write has completed:
 * - towards the upstream (a net.Socket): bytesWritten (which counts bytes still buffered) less writableLength;
 * - towards the client (its socket, or its HTTP/2 stream, which has no byte count): what the upstream socket
 *   has read and handed on (bytesRead less readableLength: every byte to the client comes from there, through
 *   the pipe) less what the client's writable still holds.
 * A direction with bytes waiting whose "done" has not changed between looks for sendTimeout is stuck. An
 * upgraded tunnel's limit is read at each look, so a reload applies it to open tunnels at once, as to
 * requests; a stream connection's is fixed when it opens, as its other settings are.
 */
import { performance } from 'node:perf_hooks';
import type { Socket } from 'node:net';

const CHECK_INTERVAL_MS = 1000;

/** The side whose writes stalled: the client stopped reading, or the upstream did. */
export type StalledSide = 'client' | 'upstream';

/** The writable end towards the client: its socket, or its HTTP/2 stream. */
export interface TunnelOutput {
  readonly writableLength: number;
}

/** Where the current sendTimeout is read from (the proxy's state, whose plan a reload replaces). */
export interface SendTimeoutSource {
  readonly plan: { readonly limits: { readonly sendTimeoutMs: number } };
}

/** A tunnel's sendTimeout: read from a source at each look, or fixed for its life (in ms; 0 turns it off). */
export type SendTimeout = SendTimeoutSource | number;

/** One open tunnel and, per direction, its completed-bytes count at the last look and since when it has stood with bytes waiting. */
interface WatchedTunnel {
  readonly toClient: TunnelOutput;
  readonly up: Socket;
  readonly limit: SendTimeout;
  readonly onStalled: (side: StalledSide) => void;
  /** NaN while nothing waits, so that the first look with bytes waiting starts the clock. */
  clientDone: number;
  clientSince: number;
  upDone: number;
  upSince: number;
}

const kWatched = Symbol('portico.tunnelSend');

interface WatchedSocket extends Socket {
  [kWatched]?: WatchedTunnel;
}

const tunnels = new Set<WatchedTunnel>();
let timer: NodeJS.Timeout | undefined;

/**
 * Watches a tunnel between the client (its writable end `toClient`) and the upstream socket `up` until `up`
 * closes (every tunnel's close destroys its upstream socket): when the writes towards either side have not
 * moved for `limit` (a source's sendTimeout, or a fixed one in ms) while bytes wait, `onStalled` is called
 * once with that side, and the caller closes the tunnel. A fixed limit of 0 watches nothing. Cold path: once
 * per tunnel.
 */
export function watchTunnelSend(toClient: TunnelOutput, up: Socket, limit: SendTimeout, onStalled: (side: StalledSide) => void): void {
  if (typeof limit === 'number' && limit <= 0) return;
  const now = performance.now();
  const t: WatchedTunnel = { toClient, up, limit, onStalled, clientDone: Number.NaN, clientSince: now, upDone: Number.NaN, upSince: now };
  tunnels.add(t);
  (up as WatchedSocket)[kWatched] = t;
  up.once('close', onUpstreamClose);
  if (timer === undefined) {
    timer = setInterval(checkTunnels, CHECK_INTERVAL_MS);
    timer.unref();
  }
}

function onUpstreamClose(this: WatchedSocket): void {
  const t = this[kWatched];
  if (t !== undefined) unwatch(t);
}

function unwatch(t: WatchedTunnel): void {
  tunnels.delete(t);
  if (tunnels.size === 0 && timer !== undefined) {
    clearInterval(timer);
    timer = undefined;
  }
}

/** Once a second: each open tunnel's two directions, against sendTimeout. */
function checkTunnels(): void {
  const now = performance.now();
  for (const t of tunnels) {
    const up = t.up;
    if (up.destroyed) {
      unwatch(t);
      continue;
    }
    const limit = typeof t.limit === 'number' ? t.limit : t.limit.plan.limits.sendTimeoutMs;
    // Towards the client: what the upstream socket handed on, less what the client's end still holds.
    const toClient = t.toClient.writableLength;
    const clientDone = up.bytesRead - up.readableLength - toClient;
    if (toClient === 0 || clientDone !== t.clientDone) {
      t.clientDone = toClient === 0 ? Number.NaN : clientDone;
      t.clientSince = now;
    } else if (limit > 0 && now - t.clientSince > limit) {
      unwatch(t);
      t.onStalled('client');
      continue;
    }
    // Towards the upstream.
    const toUp = up.writableLength;
    const upDone = ((up.bytesWritten as number | undefined) ?? 0) - toUp;
    if (toUp === 0 || upDone !== t.upDone) {
      t.upDone = toUp === 0 ? Number.NaN : upDone;
      t.upSince = now;
    } else if (limit > 0 && now - t.upSince > limit) {
      unwatch(t);
      t.onStalled('upstream');
    }
  }
}
