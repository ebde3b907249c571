/**
 * WebSocket (RFC 6455) and other HTTP/1.1 upgrades: the same Host/SNI check
 * and routing as requests, then bytes both ways until either side closes.
 * Upgrades go to HTTP/1.1 targets only. Under an upstream's "maxRequests" an
 * upgrade holds a slot of its target from when it is sent until its tunnel
 * (or the declined answer) has closed, as HAProxy's maxconn counts a tunnel
 * for its whole life; one that finds every target full gets 503 at once.
 * Under "least-connections" it counts as in flight on its target for as
 * long, so that new requests go to the targets with fewer open tunnels.
 * A tunnel with no bytes either way for its upstream's "tunnelIdleTimeout"
 * is closed on both sides.
 */
import http from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';
import type { H1ServerRequest } from '../http1/server-request.js';
import { lookupHost, lookupRoute, rewritePath, type Plan } from '../config/plan.js';
import { httpsLocation } from './https-location.js';
import { ERRORS, type ErrorCode } from '../errors.js';
import { buildRequestHeaders, connectionTokens, DROP_RESPONSE } from './forward-headers.js';
import { kClientCert, type WithClientCert } from '../tls/client-auth.js';
import { applyToObject } from './header-rules.js';
import { anyAvailable, freeTargetSlot, takeTargetSlot } from './upstream-limit.js';
import { applyAuthHeaders, askForwardAuth, verdictUser } from './forward-auth.js';
import { isAllowedOnConnection, isTrustedPeer, kConnName, moveInFlight, nextTarget, pickTarget, targetBit, type ProxyState, type Tagged } from './handle-request.js';
import { requestIdFor } from './request-id.js';
import { normalizeHost } from './normalize-host.js';
import { normalizePath } from './normalize-path.js';
import { readCookie } from './sticky-cookie.js';
import { answerHeaders, answerUpgrade } from './route-answer.js';
import { clientAddress, isInList } from './client-address.js';
import { isTargetFailure, RETRYABLE, upstreamErrorCode } from './upstream-errors.js';
import { AUTH_BUSY } from './basic-auth.js';
import type { Target } from '../upstream/target.js';
import { watchTunnelIdle } from './tunnel-idle.js';

function reject(socket: Socket, code: ErrorCode, extra?: string): void {
  const spec = ERRORS[code];
  const body = `${spec.message}\n`;
  socket.end(
    `HTTP/1.1 ${spec.status} ${http.STATUS_CODES[spec.status] ?? ''}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nX-Portico-Error: ${code}\r\n${extra === undefined ? '' : `${extra}\r\n`}Connection: close\r\n\r\n${body}`,
  );
}

/** The 308 to https that a plain HTTP request for a host without `plainHttp: "serve"` gets (http-listener.ts), as a raw answer. */
function redirectToHttps(plan: Plan, host: string, url: string): string {
  const location = httpsLocation(plan, host, url);
  const body = `Permanent Redirect: ${location}\n`;
  return rawHead(308, 'Permanent Redirect', ['Content-Type', 'text/plain; charset=utf-8', 'Content-Length', String(Buffer.byteLength(body)), 'Location', location, 'Connection', 'close']) + body;
}

/** Idle time before a tunnel's TCP keep-alive probes start (Go's servers, so Caddy and Traefik, use 15 s; the OS then probes until it gives up). */
const TUNNEL_KEEPALIVE_MS = 60_000;

/** An Upgrade header that names the h2c protocol. */
const H2C = /(?:^|,)\s*h2c\s*(?:,|$)/i;

/** Headers of a declined upgrade's answer that are not relayed (hop-by-hop and framing). */
const DECLINED_DROP = /^(connection|transfer-encoding|keep-alive|upgrade|proxy-connection)$/i;

/**
 * A 101's headers for the client: the upstream's, less the hop-by-hop ones and those its Connection lists
 * (RFC 9110 §7.6.1: a Keep-Alive, a Proxy-Connection, a header meant for Portico alone), then the two a
 * switch needs, Connection: Upgrade and the upstream's Upgrade.
 */
function switchingHeaders(raw: readonly string[], upgrade: string | undefined): string[] {
  let listed: Set<string> | undefined;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if ((raw[i] as string).toLowerCase() !== 'connection') continue;
    for (const t of connectionTokens(raw[i + 1]) ?? []) (listed ??= new Set()).add(t);
  }
  const out: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = (raw[i] as string).toLowerCase();
    if (!DROP_RESPONSE.has(name) && listed?.has(name) !== true) out.push(raw[i] as string, raw[i + 1] as string);
  }
  out.push('Connection', 'Upgrade');
  if (upgrade !== undefined) out.push('Upgrade', upgrade);
  return out;
}

function rawHead(status: number, message: string, rawHeaders: readonly string[]): string {
  let head = `HTTP/1.1 ${status} ${message}\r\n`;
  for (let i = 0; i < rawHeaders.length; i += 2) head += `${rawHeaders[i]}: ${rawHeaders[i + 1]}\r\n`;
  return `${head}\r\n`;
}

/**
 * Builds the `upgrade` listener for the HTTPS server, or (`scheme` "http") for the plain HTTP listener: there
 * a host with `plainHttp: "serve"` has its upgrades proxied as its requests are (no Host/SNI check, as there
 * is no TLS; `X-Forwarded-Proto: http`), and any other host's get the 308 to https its requests get.
 */
export function createUpgradeHandler(state: ProxyState, scheme: 'https' | 'http' = 'https'): (req: H1ServerRequest, socket: Socket, head: Buffer) => void {
  return function handleUpgrade(req, socket, head) {
    socket.on('error', () => socket.destroy());
    // "h2c" is HTTP/2 over cleartext TCP (RFC 9113 §3.1), never over the TLS this connection is. Forwarded,
    // an upstream that took it would give the client an HTTP/2 connection of its own, whose requests
    // Portico never routes or checks (h2c smuggling).
    if (H2C.test(req.headers.upgrade ?? '')) return reject(socket, 'PORTICO_BAD_REQUEST');
    const plan = state.plan;
    const rawHost = req.headers.host;
    const host = normalizeHost(rawHost);
    if (host === undefined || rawHost === undefined) return reject(socket, 'PORTICO_BAD_HOST');
    const connName = scheme === 'https' ? ((req.socket as Socket & Tagged)[kConnName] ?? '') : '';
    const hostPlan = lookupHost(plan, host);
    if (scheme === 'https' && !isAllowedOnConnection(plan, host, hostPlan, connName)) return reject(socket, 'PORTICO_SNI_HOST_MISMATCH');
    if (hostPlan === undefined) return reject(socket, 'PORTICO_UNKNOWN_HOST');
    if (scheme === 'http' && !hostPlan.servePlain) return void socket.end(redirectToHttps(plan, host, req.url));
    const url = (req.url ?? '/').startsWith('/') ? normalizePath(req.url ?? '/') : undefined;
    if (url === undefined) return reject(socket, 'PORTICO_BAD_REQUEST');
    const route = lookupRoute(hostPlan, url, req);
    if (route === undefined) return reject(socket, 'PORTICO_NO_ROUTE');
    if (route.allow !== undefined || route.deny !== undefined || route.limit !== undefined) {
      const client = clientAddress(req.remoteAddress, req.headers, plan.trustedProxies);
      if (route.deny !== undefined && isInList(route.deny, client)) return reject(socket, 'PORTICO_FORBIDDEN');
      if (route.allow !== undefined && !isInList(route.allow, client)) return reject(socket, 'PORTICO_FORBIDDEN');
      const wait = route.limit === undefined ? 0 : route.limit.take(client);
      if (wait > 0) return reject(socket, 'PORTICO_RATE_LIMITED', `Retry-After: ${wait}`);
    }
    let user: string | undefined;
    let authCopied: readonly (readonly [string, string])[] | undefined;
    const proceed = (): void => {
      const u = route.upstream;
      // A "files" route serves GET and HEAD only: an upgrade is not something a file can take.
      if (route.files !== undefined) return reject(socket, 'PORTICO_METHOD_NOT_ALLOWED', 'Allow: GET, HEAD');
      if (u === undefined) {
        const a = route.answer!;
        route.stats.record(a.status, 0);
        return answerUpgrade(socket, a, answerHeaders(a, host, rewritePath(route, url), route.headerRules?.response), req.method === 'HEAD');
      }
      const sent = u.sticky === undefined ? undefined : readCookie(req.headers.cookie, u.sticky.cookie);
      const balanceBy = u.policy === 'client-ip' ? clientAddress(req.remoteAddress, req.headers, plan.trustedProxies) : req.remoteAddress;
      const first = pickTarget(u, balanceBy, sent === undefined ? -1 : (u.sticky!.byValue.get(sent) ?? -1));
      // Every available target at its maxRequests: no queue for upgrades, 503 at once (with a request's Retry-After).
      if (first === undefined) return u.maxRequests !== 0 && anyAvailable(u) ? reject(socket, 'PORTICO_UPSTREAM_BUSY', 'Retry-After: 1') : reject(socket, 'PORTICO_NO_HEALTHY_UPSTREAM');
      const path = rewritePath(route, url);
      const remote = req.remoteAddress;
      const trusted = isTrustedPeer(plan, remote);
      const requestId = plan.requestId ? requestIdFor(req.headers, trusted) : undefined;
      const started = performance.now();
      // The target the upgrade counts against, or undefined: one of its maxRequests slots and, with
      // least-connections, one of its connections in flight, so that a target holding long-lived tunnels gets
      // fewer new requests (HAProxy's leastconn counts tunnels too). Taken when the upgrade is sent (moved by a
      // retry), given back once: when it fails, when the declined answer has been relayed, when the client
      // leaves before the upstream answered, or when the tunnel's upstream side has closed.
      let held: Target | undefined;
      let counted: Target | undefined;
      const hold = (target: Target): void => {
        const before = held;
        held = target;
        if (u.maxRequests !== 0) takeTargetSlot(target);
        if (u.policy === 'least-connections') counted = moveInFlight(counted, target);
        if (before !== undefined && u.maxRequests !== 0) freeTargetSlot(before);
      };
      const release = (): void => {
        const t = held;
        if (t === undefined) return;
        held = undefined;
        if (counted !== undefined) {
          counted.leastConnInFlight--;
          counted = undefined;
        }
        if (u.maxRequests !== 0) freeTargetSlot(t);
      };
      // The upstream request until its exchange is over (a 101, or a declined answer relayed), and whether the tunnel is up.
      let pending: http.ClientRequest | undefined;
      let tunnelled = false;
      // A client that leaves before the tunnel is up cancels the upstream request (and frees the slot); a tunnel
      // frees its slot when its upstream side has closed, which the client's close brings about.
      socket.once('close', () => {
        if (tunnelled) return;
        pending?.destroy();
        release();
      });
      // One attempt per target: a target that was never reached (refused, no socket file) passes the upgrade on to the next.
      const attempt = (target: Target, attempts: number, failed: number): void => {
        if (target.kind === 'h2c' || target.kind === 'h2-tls') {
          release();
          return reject(socket, 'PORTICO_UPSTREAM_FAILED');
        }
        const headers = buildRequestHeaders(req.headers, {
          remoteAddress: remote,
          trusted,
          host: rawHost,
          upstreamHost: u.hostHeader === 'preserve' ? rawHost : u.hostHeader === 'target' ? target.authority : u.hostHeader,
          via: plan.sendVia ? '1.1' : undefined,
          forwarded: plan.sendForwarded,
          proto: scheme,
          upstreamH2: false,
          prefix: route.stripLength > 0 ? route.path : '',
        });
        if (requestId !== undefined) headers['x-request-id'] = requestId;
        if (hostPlan.clientAuth !== undefined) {
          const cert = (req.socket as Socket & WithClientCert)[kClientCert];
          if (cert !== undefined) headers['client-cert'] = cert;
        }
        const rules = route.headerRules?.request;
        if (rules !== undefined) applyToObject(headers, rules);
        if (authCopied !== undefined) applyAuthHeaders(headers, route.forwardAuth!, authCopied);
        headers.connection = 'upgrade';
        headers.upgrade = req.headers.upgrade;
        const where = target.socketPath === undefined ? { host: target.hostname, port: target.port } : { socketPath: target.socketPath };
        const options = { ...where, method: req.method, path, headers, setHost: false, timeout: u.connectTimeoutMs };
        let up: http.ClientRequest;
        try {
          up = target.kind === 'h1' ? http.request(options) : https.request({ ...options, ...target.tlsOptions() });
        } catch {
          release();
          return reject(socket, 'PORTICO_BAD_REQUEST');
        }
        hold(target);
        pending = up;
        let answered = false;
        // The access line: at once for an answer, and for a tunnel when it has closed, with the bytes each way
        // through it and its whole life (as nginx logs an upgraded request); the route's stats take the 101 at once.
        const finish = (status: number, error?: string, tunnel?: { readonly out: number; readonly in: number }, reason?: string): void => {
          const ms = performance.now() - started;
          if (tunnel === undefined) route.stats.record(status, ms);
          if (plan.accessLog) {
            state.access.write({ client: clientAddress(req.remoteAddress, req.headers, plan.trustedProxies), peer: req.remoteAddress, requestId, user, host, sni: connName, method: req.method, path: req.url, route: route.id, upstream: target.url, status, bytes: tunnel?.out, bytesIn: tunnel?.in, durationMs: Math.round(ms), proto: 'http/1.1', upgrade: req.headers.upgrade, aborted: false, error, detail: undefined, reason, headerNames: plan.accessHeaders, requestHeaders: req.headers });
          }
        };
        // connectTimeout until the connection (and its TLS) is up, then responseTimeout for the answer, as for a
        // request's head: a WebSocket app may take its time to accept (auth, a session lookup) before its 101.
        let timeoutCode = 'PORTICO_CONNECT_TIMEOUT';
        up.once('socket', (s: Socket) => {
          const connected = (): void => {
            timeoutCode = 'PORTICO_RESPONSE_TIMEOUT';
            up.setTimeout(u.responseTimeoutMs);
          };
          if (s.connecting) s.once(target.kind === 'h1' ? 'connect' : 'secureConnect', connected);
          else connected();
        });
        up.on('timeout', () => up.destroy(Object.assign(new Error('timeout'), { code: timeoutCode })));
        up.on('error', (err: NodeJS.ErrnoException) => {
          // A declined answer cut short: the client sees the connection close, not a truncated answer (its slot is freed with the answer).
          if (answered) return void socket.destroy();
          if (err.code !== undefined && isTargetFailure(err.code)) target.reportFailure(err.code);
          if (socket.destroyed) {
            release();
            return finish(502, err.code);
          }
          const tried = failed | targetBit(u, target);
          const next = err.code !== undefined && RETRYABLE.has(err.code) && attempts < u.targets.length ? nextTarget(u, target, tried) : undefined;
          if (next !== undefined) {
            state.log.warn({ upstream: target.url, code: err.code, route: route.id, next: next.url }, 'upstream failed, trying the next target');
            return attempt(next, attempts + 1, tried);
          }
          release();
          state.log.warn({ upstream: target.url, code: err.code, route: route.id }, 'upstream error');
          // As for a request: 504 for a timeout, 502 unreachable for a refusal, 502 failed for a reset or a close; the access line says the same status.
          const answer = upstreamErrorCode(err.code ?? '');
          reject(socket, answer);
          finish(ERRORS[answer].status, err.code);
        });
        up.on('response', (res) => {
          answered = true;
          // The target is held until the answer has been relayed (or the client left, above).
          res.once('close', () => {
            pending = undefined;
            release();
          });
          // The upstream declined the upgrade: relay its answer and close.
          // The body arrives decoded and the connection closes after it, so framing headers are not relayed.
          const kept: string[] = [];
          const raw = res.rawHeaders;
          for (let i = 0; i + 1 < raw.length; i += 2) {
            const name = raw[i] as string;
            if (!DECLINED_DROP.test(name)) kept.push(name, raw[i + 1] as string);
          }
          kept.push('Connection', 'close');
          socket.write(rawHead(res.statusCode ?? 502, res.statusMessage ?? '', kept));
          res.pipe(socket);
          finish(res.statusCode ?? 0);
        });
        up.on('upgrade', (res, upSocket, upHead) => {
          answered = true;
          tunnelled = true;
          pending = undefined;
          // The tunnel holds its target until the upstream connection has closed (a client that leaves closes it below).
          upSocket.once('close', release);
          up.setTimeout(0);
          upSocket.setTimeout(0);
          // The request's own timeout handler would destroy the upstream socket when the tunnel's idle timer fires on it.
          up.removeAllListeners('timeout');
          // TCP keep-alive on both connections: an idle tunnel whose peer vanished without a FIN (power lost, a
          // NAT or firewall that forgot it) is otherwise never noticed, and holds its upstream connection, its
          // maxRequests slot and its file descriptors forever. Live idle tunnels are not closed by it.
          socket.setKeepAlive(true, TUNNEL_KEEPALIVE_MS);
          upSocket.setKeepAlive(true, TUNNEL_KEEPALIVE_MS);
          socket.write(rawHead(101, res.statusMessage ?? 'Switching Protocols', switchingHeaders(res.rawHeaders, res.headers.upgrade)));
          // Counted from here: the tunnel's bytes, without the heads (the client's bytes after its head were read already).
          const outFrom = socket.bytesWritten;
          const inFrom = socket.bytesRead - head.length;
          if (upHead.length > 0) socket.write(upHead);
          // The client's bytes that came after its head are the new protocol's: they go only now. Sent
          // with the request, an upstream that declines the upgrade would read them as a request of its
          // own ("GET /admin" behind an upgrade for "/ws": smuggled past routing and auth).
          if (head.length > 0) upSocket.write(head);
          // A half-close passes through, as on streams: a side that ends its sending (a FIN) still gets the
          // other's answer (Docker's attach and exec end stdin so, then read the output). Each socket closes once
          // both of its directions have ended.
          socket.allowHalfOpen = true;
          upSocket.allowHalfOpen = true;
          upSocket.on('error', () => socket.destroy());
          socket.on('close', () => upSocket.destroy());
          upSocket.on('close', () => socket.destroy());
          upSocket.pipe(socket);
          socket.pipe(upSocket);
          // tunnelIdleTimeout: no byte either way for that long closes both sides (src/proxy/tunnel-idle.ts).
          let reason: string | undefined;
          watchTunnelIdle(socket, upSocket, u.tunnelIdleTimeoutMs, () => {
            reason = 'idle timeout';
            socket.destroy();
            upSocket.destroy();
          });
          const stats = route.stats;
          stats.openUpgrades++;
          stats.record(101, performance.now() - started);
          socket.once('close', () => {
            stats.openUpgrades--;
            finish(101, undefined, { out: socket.bytesWritten - outFrom, in: socket.bytesRead - inFrom }, reason);
          });
        });
        up.end();
      };
      attempt(first, 1, 0);
    };
    // forwardAuth: the authentication service is asked before the upgrade goes on; its refusal is the client's answer.
    const authorized = (): void => {
      const fa = route.forwardAuth;
      if (fa === undefined) return proceed();
      const authReq = askForwardAuth(
        fa,
        { method: req.method, headers: req.headers, uri: url, host, proto: scheme, client: clientAddress(req.remoteAddress, req.headers, plan.trustedProxies) },
        (v) => {
          socket.off('close', cancel);
          if (socket.destroyed) return;
          if (v.kind === 'allow') {
            authCopied = v.headers;
            user ??= verdictUser(v.headers);
            return proceed();
          }
          if (v.kind === 'failed') {
            state.log.warn({ route: route.id, detail: v.detail }, 'forwardAuth: the authentication service could not be asked');
            return reject(socket, 'PORTICO_FORWARD_AUTH_FAILED');
          }
          const pairs: string[] = [];
          for (const [name, value] of Object.entries(v.headers)) {
            if (value === undefined) continue;
            for (const one of Array.isArray(value) ? value : [String(value)]) pairs.push(name, one);
          }
          pairs.push('connection', 'close');
          socket.end(Buffer.concat([Buffer.from(rawHead(v.status, http.STATUS_CODES[v.status] ?? '', pairs), 'latin1'), v.body]));
        },
      );
      const cancel = (): void => void authReq.destroy();
      socket.once('close', cancel);
    };
    if (route.auth !== undefined) {
      const checked = route.auth.check(req.headers.authorization);
      if (checked === undefined) return reject(socket, 'PORTICO_UNAUTHORIZED', `WWW-Authenticate: ${route.auth.challenge}`);
      if (checked === AUTH_BUSY) return reject(socket, 'PORTICO_AUTH_BUSY', 'Retry-After: 1');
      if (typeof checked !== 'string') {
        void checked.then((u) => {
          if (socket.destroyed) return;
          if (u === undefined) return reject(socket, 'PORTICO_UNAUTHORIZED', `WWW-Authenticate: ${route.auth!.challenge}`);
          user = u;
          authorized();
        });
        return;
      }
      user = checked;
    }
    authorized();
  };
}
