/**
 * How a listener binds, and what a bind failure means to the person running Portico.
 *
 * With `workers`, Node's cluster by default has the primary accept every connection and pass it to a
 * worker over IPC (round-robin): for a new TLS connection that hop cost about a quarter of the
 * connection's CPU (bench/optimisations.md §19). Where Node can bind with SO_REUSEPORT (22.12 and
 * later, on Linux), each worker binds its own socket on the same address and port instead, and the kernel
 * spreads new connections over them, as nginx's `reuseport` does; the primary never touches a
 * connection. On older Node the cluster's round-robin stays.
 */
import type { ListenOptions, Server } from 'node:net';
import type { Logger } from 'pino';
import { PorticoError } from '../errors.js';
import { throttledWarn } from '../log/throttled-warn.js';

/**
 * Whether workers here bind with SO_REUSEPORT: Node accepts `reusePort` in `listen()` from 22.12 and 23.1
 * (older versions ignore the option), and only on Linux does the kernel spread connections over the sockets
 * (Node raises an error on platforms without the option, and macOS would hand every connection to one socket).
 */
export function nodeHasReusePort(version = process.versions.node, platform: string = process.platform): boolean {
  if (platform !== 'linux') return false;
  const [major = 0, minor = 0] = version.split('.').map(Number);
  return major >= 23 ? !(major === 23 && minor < 1) : major === 22 && minor >= 12;
}

/** The options for binding `address:port`; `reusePort`: a worker's own socket, shared with the other workers through SO_REUSEPORT. */
export function listenOptions(port: number, address: string, reusePort: boolean): ListenOptions {
  const options: ListenOptions & { reusePort?: boolean } = { port, host: address, ipv6Only: address.includes(':') };
  if (reusePort) {
    // exclusive: bind here rather than through the cluster primary.
    options.exclusive = true;
    options.reusePort = true;
  }
  return options;
}

/** An IPv6 address this host cannot bind (no IPv6): skipped with a warning rather than fatal. */
export function isIpv6Unavailable(address: string, err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return address.includes(':') && (code === 'EAFNOSUPPORT' || code === 'EADDRNOTAVAIL');
}

/** The error for a listener that could not be opened, saying why and what to do. */
export function listenFailed(address: string, port: number, err: unknown): PorticoError {
  const code = (err as NodeJS.ErrnoException).code;
  const fix =
    code === 'EADDRINUSE'
      ? `another process holds the port (\`ss -ltnp 'sport = :${port}'\` names it): stop it, or give this listener another port in the config (listen.https.port, listen.http.port, or the stream's port)`
      : code === 'EACCES'
        ? 'ports below 1024 need privileges: run as root, give Node CAP_NET_BIND_SERVICE (`setcap cap_net_bind_service=+ep "$(command -v node)"`, or systemd\'s AmbientCapabilities=CAP_NET_BIND_SERVICE), or listen on a port of 1024 or more'
        : 'check listen.addresses (an address this host does not have?)';
  return new PorticoError('PORTICO_LISTEN_FAILED', `cannot listen on ${address}:${port} (${code ?? (err as Error).message}); ${fix}`, { cause: err });
}

/**
 * Caps a listening socket's open connections at `max` (limits.maxConnections; Node closes the ones past it
 * at once) and logs the connections so dropped: a warn line at most once a minute, with how many.
 */
export function capConnections(server: Server, max: number, log: Logger, port: number): void {
  server.maxConnections = max;
  const note = throttledWarn(log, 'connection refused: limits.maxConnections reached', 'more connections refused in the minute after: limits.maxConnections reached', 'dropped');
  server.on('drop', () => note({ port, maxConnections: server.maxConnections }));
}

/** The `reason` on the access and stream lines of what the shutdown deadline cut. */
export const SHUTDOWN = 'shutdown';

/**
 * How long a stop waits, after the deadline destroyed what was still open, for those connections' 'close' events: the
 * access and stream lines of the requests and tunnels cut there are written in them, and the process exits right after
 * the stop (they came after the listening socket's own close, and some were lost: a WebSocket cut by a worker's stop).
 */
export const LAST_LINES_MS = 1000;

/** Resolves when `p` does, or after `ms`, whichever is first. */
export async function waitAtMost(p: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([p, new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}

/**
 * Resolves once every one of `emitters` has emitted 'close', or after `ms`: for the members of a set that each
 * leaves on its own 'close'. (Not judged by `closed`: a destroyed socket says closed before its 'close' listeners,
 * which write the lines, have run.)
 */
export function allClosed(emitters: Iterable<NodeJS.EventEmitter>, ms: number): Promise<void> {
  const waits: Promise<unknown>[] = [];
  for (const e of emitters) waits.push(new Promise((resolve) => e.once('close', resolve)));
  return waits.length === 0 ? Promise.resolve() : waitAtMost(Promise.all(waits), ms);
}

/**
 * Stops `servers` accepting and resolves once every connection they accepted has closed; `atDeadline`
 * runs if some are still open after `deadlineMs` (it closes them, so the wait ends).
 */
export async function closeServers(servers: readonly Server[], deadlineMs: number, atDeadline: () => void): Promise<void> {
  const closed = Promise.all(servers.map((srv) => new Promise<void>((resolve) => srv.close(() => resolve()))));
  const timer = setTimeout(atDeadline, deadlineMs);
  timer.unref();
  await closed;
  clearTimeout(timer);
}
