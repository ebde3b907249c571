/**
 * The plain HTTP listener: answers ACME HTTP-01 challenges, redirects
 * configured hosts to https with 308 (same host, path and query), proxies the
 * hosts whose plainHttp is "serve", and gives 404 to every other host.
 */
import http from 'node:http';
import type { Logger } from 'pino';
import { lookupHost, type Plan } from '../config/plan.js';
import { normalizeHost } from '../proxy/normalize-host.js';
import { createRequestHandler, type ProxyState } from '../proxy/handle-request.js';

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
}

function plain(res: http.ServerResponse, status: number, body: string, extra?: Record<string, string>): void {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body), ...extra });
  res.end(body);
}

/** Creates the plain HTTP server (not yet listening). */
export function createHttpListener(deps: HttpListenerDeps): http.Server {
  const proxy = createRequestHandler(deps.state);
  const server = http.createServer({ requireHostHeader: true }, (req, res) => {
    const url = req.url ?? '/';
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
    const host = normalizeHost(req.headers.host);
    const hostPlan = host === undefined ? undefined : lookupHost(plan, host);
    if (host === undefined || hostPlan === undefined) return plain(res, 404, 'Not Found: this host is not served here\n');
    if (hostPlan.servePlain) return proxy(req, res);
    const hostPart = host.includes(':') ? `[${host}]` : host;
    const location = `https://${hostPart}${plan.httpsPortSuffix}${url.startsWith('/') ? url : '/'}`;
    plain(res, 308, `Permanent Redirect: ${location}\n`, { location });
  });
  applyHttpLimits(server, deps.state.plan);
  server.on('clientError', (_err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    else socket.destroy();
  });
  return server;
}

/** The Plan's header size and timeouts, as on the https listener (hosts served over plain HTTP get the same limits); at start and on every reload. */
export function applyHttpLimits(server: http.Server, plan: Plan): void {
  const l = plan.limits;
  // Read per connection by node:http (the https listener sets it the same way); missing from the types.
  (server as http.Server & { maxHeaderSize: number }).maxHeaderSize = l.maxHeaderBytes;
  server.headersTimeout = l.headersTimeoutMs;
  server.requestTimeout = l.requestTimeoutMs;
  server.keepAliveTimeout = l.keepAliveTimeoutMs;
}
