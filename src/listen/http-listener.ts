/**
 * The plain HTTP listener: answers ACME HTTP-01 challenges, redirects
 * configured hosts to https with 308 (same host, path and query), proxies the
 * hosts whose plainHttp is "serve", and gives 404 to every other host. It
 * speaks HTTP/1.1 through Portico's own server (src/http1/), with the same
 * limits as the HTTPS listener.
 */
import net from 'node:net';
import type { Logger } from 'pino';
import type { Plan } from '../config/plan.js';
import { H1Server } from '../http1/h1-server.js';
import type { H1ServerRequest } from '../http1/server-request.js';
import type { H1ServerResponse } from '../http1/server-response.js';
import { createRequestHandler, hostVerdict, type ProxyState, type WithHostVerdict } from '../proxy/handle-request.js';
import { createUpgradeHandler } from '../proxy/handle-upgrade.js';
import { httpsLocation } from '../proxy/https-location.js';
import { allClosed, capConnections, closeServers, LAST_LINES_MS, listenOptions, SHUTDOWN } from './listen-options.js';
import { kClientAddress, PROXY_HEADER_TIMEOUT_MS, proxyRefusalLog, readProxyHeader, type ProxiedSocket } from './proxy-protocol.js';

/** Answers HTTP-01 challenges (RFC 8555 §8.3): the key authorization for a pending token. */
export interface Http01ChallengeSource {
  keyAuthorization(token: string): string | undefined;
}

const CHALLENGE_PREFIX = '/.well-known/acme-challenge/';

/** What the HTTP listener needs. */
export interface HttpListenerDeps {
  readonly state: ProxyState;
  readonly log: Logger;
  http01?: Http01ChallengeSource;
  /** Every connection starts with a PROXY protocol header (listen.http.proxyProtocol). */
  readonly proxyProtocol?: boolean;
}


function plain(res: H1ServerResponse, status: number, body: string, extra?: Record<string, string>): void {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body), ...extra });
  res.end(body);
}

/** One plain HTTP listener: a TCP server per address, one HTTP/1.1 server behind them. */
export class HttpListener {
  readonly netServers: net.Server[] = [];
  readonly h1: H1Server;
  readonly #deps: HttpListenerDeps;
  /** Every open connection, upgraded ones (WebSocket tunnels) too, for the shutdown deadline. */
  readonly #sockets = new Set<net.Socket>();

  constructor(deps: HttpListenerDeps) {
    this.#deps = deps;
    const proxy = createRequestHandler(deps.state);
    const handle = (req: H1ServerRequest, res: H1ServerResponse): void => {
      const url = req.url;
      if (url.startsWith(CHALLENGE_PREFIX)) {
        const token = url.slice(CHALLENGE_PREFIX.length);
        const answer = deps.http01?.keyAuthorization(token);
        if (answer !== undefined) {
          deps.log.info({ token }, 'acme http-01 challenge answered');
          return plain(res, 200, answer);
        }
        return plain(res, 404, 'Not Found: no pending ACME challenge for this token\n');
      }
      const plan = deps.state.plan;
      // Kept on the connection as the request handler keeps it, which then finds it made for a request it proxies.
      const verdict = hostVerdict(req.socket as net.Socket & WithHostVerdict, req.headers.host, plan, true, '');
      const hostPlan = verdict?.hostPlan;
      if (verdict === undefined || hostPlan === undefined) return plain(res, 404, 'Not Found: this host is not served here\n');
      if (hostPlan.servePlain) return proxy(req, res);
      const location = httpsLocation(plan, verdict.host, url);
      plain(res, 308, `Permanent Redirect: ${location}\n`, { location });
    };
    // Upgrades (WebSockets) of the hosts with plainHttp "serve" are proxied too; other hosts' get the same 308.
    this.h1 = new H1Server({ log: deps.log, onRequest: handle, onUpgrade: createUpgradeHandler(deps.state, 'http') });
    this.h1.applyLimits(deps.state.plan.limits);
  }

  /** The Plan's header size and timeouts, as on the https listener; at start and on every reload. */
  applyLimits(plan: Plan): void {
    this.h1.applyLimits(plan.limits);
    for (const s of this.netServers) s.maxConnections = plan.limits.maxConnections;
  }

  /** Starts listening on one address; `reusePort`: a worker's own socket beside the other workers' (listen-options.ts). */
  listen(port: number, address: string, reusePort = false): Promise<void> {
    const refused = this.#deps.proxyProtocol === true ? proxyRefusalLog(this.#deps.log, port) : undefined;
    const server = net.createServer({ noDelay: true }, (socket) => {
      this.#sockets.add(socket);
      socket.once('close', () => this.#sockets.delete(socket));
      if (refused === undefined) return this.h1.accept(socket);
      readProxyHeader(
        socket,
        PROXY_HEADER_TIMEOUT_MS,
        (client) => {
          if (client !== undefined) (socket as net.Socket & ProxiedSocket)[kClientAddress] = client;
          this.h1.accept(socket);
        },
        (reason) => refused(reason, socket.remoteAddress),
      );
    });
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(listenOptions(port, address, reusePort), () => {
        server.off('error', reject);
        capConnections(server, this.#deps.state.plan.limits.maxConnections, this.#deps.log, port);
        this.netServers.push(server);
        resolve();
      });
    });
  }

  /**
   * Stops accepting; idle connections close now, busy ones after their response, and tunnels when either
   * side closes them. Whatever is still open after `deadlineMs` is closed. Resolves when every connection is.
   */
  async close(deadlineMs: number): Promise<void> {
    const done = closeServers(this.netServers, deadlineMs, () => {
      this.#deps.state.closeReason = SHUTDOWN;
      this.h1.destroyAll();
      for (const s of this.#sockets) s.destroy();
    });
    this.h1.closeIdle();
    await done;
    // What the deadline destroyed writes its access lines as it closes, which may come after the listening sockets'.
    await allClosed(this.#sockets, LAST_LINES_MS);
  }
}
