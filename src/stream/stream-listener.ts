/**
 * The listener of one stream port: each connection is forwarded as the current
 * Plan's stream for this port says (its targets change on reload; a stream
 * removed by a reload takes no more connections). On stop, open connections
 * get the shutdown deadline to finish, then are closed.
 */
import net from 'node:net';
import type { Logger } from 'pino';
import type { Plan } from '../config/plan.js';
import { capConnections, LAST_LINES_MS, listenOptions, SHUTDOWN, waitAtMost } from '../listen/listen-options.js';
import { StreamConnection, StreamStats } from './stream-connection.js';
import { CONFIG_RELOAD } from '../proxy/open-tunnels.js';
import { kClientAddress, kClientPort, PROXY_HEADER_TIMEOUT_MS, proxyRefusalLog, readProxyHeader, type ProxiedSocket } from '../listen/proxy-protocol.js';


export class StreamListener {
  readonly port: number;
  readonly #state: { readonly plan: Plan };
  readonly #log: Logger;
  readonly #servers: net.Server[] = [];
  readonly #live = new Set<StreamConnection>();
  /** Resolves close()'s wait once the last connection has ended. */
  #drained: (() => void) | undefined;
  readonly stats = new StreamStats();
  #proxyRefused: ((reason: string, remote: string | undefined) => void) | undefined;

  constructor(port: number, state: { readonly plan: Plan }, log: Logger) {
    this.port = port;
    this.#state = state;
    this.#log = log;
  }

  /** Starts listening on one address; `reusePort` as for the HTTP listeners (listen-options.ts). */
  listen(address: string, reusePort = false): Promise<void> {
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (socket) => this.#accept(socket));
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(listenOptions(this.port, address, reusePort), () => {
        server.off('error', reject);
        capConnections(server, this.#state.plan.limits.maxConnections, this.#log, this.port);
        this.#servers.push(server);
        resolve();
      });
    });
  }

  #accept(socket: net.Socket): void {
    const sp = this.#state.plan.streams.get(this.port);
    if (sp === undefined) {
      socket.destroy();
      return;
    }
    if (!sp.acceptProxy) return this.#forward(socket);
    this.#proxyRefused ??= proxyRefusalLog(this.#log, this.port);
    readProxyHeader(
      socket,
      PROXY_HEADER_TIMEOUT_MS,
      (client, clientPort) => {
        if (client !== undefined) {
          (socket as net.Socket & ProxiedSocket)[kClientAddress] = client;
          (socket as net.Socket & ProxiedSocket)[kClientPort] = clientPort;
        }
        this.#forward(socket);
      },
      (reason) => this.#proxyRefused!(reason, socket.remoteAddress),
    );
    // Connections arrive paused (pauseOnConnect): the header has to be read.
    socket.resume();
  }

  /** A connection is over (both sides closed, its line written): shutdown waits for exactly that. */
  readonly #onDone = (c: StreamConnection): void => {
    this.#live.delete(c);
    if (this.#live.size === 0) this.#drained?.();
  };

  #forward(socket: net.Socket): void {
    const plan = this.#state.plan;
    const sp = plan.streams.get(this.port);
    if (sp === undefined) {
      socket.destroy();
      return;
    }
    const c = new StreamConnection(socket, sp, { log: this.#log, logConnections: plan.accessLog, stats: this.stats, onDone: this.#onDone });
    this.#live.add(c);
    c.start();
    if (sp.sniExact !== undefined) socket.resume();
  }

  /** Connections open now. */
  get open(): number {
    return this.#live.size;
  }

  /** A reloaded Plan's connection cap. */
  applyLimits(plan: Plan): void {
    for (const s of this.#servers) s.maxConnections = plan.limits.maxConnections;
  }

  /**
   * A reload whose config no longer has this port closes its open connections, with `reason` "config reload" on
   * their lines (the listener stays bound until a restart, refusing new ones); returns how many it closed.
   */
  closeIfRemoved(plan: Plan): number {
    if (plan.streams.has(this.port)) return 0;
    const n = this.#live.size;
    for (const c of [...this.#live]) c.closeFor(CONFIG_RELOAD);
    return n;
  }

  /** Stops accepting; connections still open after `deadlineMs` are closed. */
  async close(deadlineMs: number): Promise<void> {
    for (const s of this.#servers) s.close();
    if (this.#live.size > 0) await waitAtMost(this.#whenDrained(), deadlineMs);
    if (this.#live.size === 0) return;
    // Cut at the deadline: their lines (reason "shutdown") are written as both sides close, before the process exits.
    const drained = this.#whenDrained();
    for (const c of [...this.#live]) c.closeFor(SHUTDOWN);
    await waitAtMost(drained, LAST_LINES_MS);
  }

  /** Resolves when the last open connection is over (#onDone). */
  #whenDrained(): Promise<void> {
    return new Promise((resolve) => {
      this.#drained = resolve;
    });
  }
}
