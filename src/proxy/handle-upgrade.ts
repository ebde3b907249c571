/**
 * WebSocket (RFC 6455) and other HTTP/1.1 upgrades, and WebSockets over
 * HTTP/2 (RFC 8441, upgrade-client-h2.ts): the same Host/SNI check and
 * routing as requests, then bytes both ways until either side closes.
 * Upgrades go to HTTP/1.1 targets only. Under an upstream's "maxRequests" an
 * upgrade holds a slot of its target from when it is sent until its tunnel
 * (or the declined answer) has closed, as HAProxy's maxconn counts a tunnel
 * for its whole life; one that finds every target full gets 503 at once.
 * Under "least-connections" it counts as in flight on its target for as
 * long, so that new requests go to the targets with fewer open tunnels.
 * A tunnel with no bytes either way for its upstream's "tunnelIdleTimeout"
 * is closed on both sides, and so is one whose writes towards either side
 * have not moved for limits.sendTimeout while bytes wait (tunnel-send.ts).
 */
import { performance } from 'node:perf_hooks';
import http from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';
import type { H1ServerRequest } from '../http1/server-request.js';
import { lookupHost, lookupRoute, rewritePath, type Plan } from '../config/plan.js';
import { httpsLocation } from './https-location.js';
import { ERRORS, type ErrorCode } from '../errors.js';
import { buildRequestHeaders } from './forward-headers.js';
import { kClientCert, type WithClientCert } from '../tls/client-auth.js';
import { applyToObject } from './header-rules.js';
import { anyAvailable, freeTargetSlot, takeTargetSlot } from './upstream-limit.js';
import { applyAuthHeaders, askForwardAuth, verdictUser } from './forward-auth.js';
import { isAllowedOnConnection, isTrustedPeer, kConnName, moveInFlight, nextTarget, pickTarget, targetBit, type ProxyState, type Tagged } from './handle-request.js';
import { requestIdFor } from './request-id.js';
import { normalizeHost } from './normalize-host.js';
import { normalizePath } from './normalize-path.js';
import { readCookie } from './sticky-cookie.js';
import { answerHeaders } from './route-answer.js';
import { clientAddress, isInList } from './client-address.js';
import { isTargetFailure, RETRYABLE, upstreamErrorCode } from './upstream-errors.js';
import { AUTH_BUSY } from './basic-auth.js';
import type { Target } from '../upstream/target.js';
import { H1UpgradeClient, TUNNEL_KEEPALIVE_MS } from './upgrade-client-h1.js';
import type { UpgradeClient, UpgradeRequest } from './upgrade-client.js';
import { watchTunnelIdle } from './tunnel-idle.js';
import { watchTunnelSend } from './tunnel-send.js';
import type { OpenTunnel } from './open-tunnels.js';

/** The 308 to https that a plain HTTP request for a host without `plainHttp: "serve"` gets (http-listener.ts). */
function redirectToHttps(client: UpgradeClient, plan: Plan, host: string, url: string): void {
  const location = httpsLocation(plan, host, url);
  const body = Buffer.from(`Permanent Redirect: ${location}\n`);
  client.answer(308, { 'content-type': 'text/plain; charset=utf-8', 'content-length': body.length, location }, body);
}

/** An Upgrade header that names the h2c protocol. */
const H2C = /(?:^|,)\s*h2c\s*(?:,|$)/i;

const EMPTY = Buffer.alloc(0);

/**
 * Builds the `upgrade` listener for the HTTPS server, or (`scheme` "http") for the plain HTTP listener: there
 * a host with `plainHttp: "serve"` has its upgrades proxied as its requests are (no Host/SNI check, as there
 * is no TLS; `X-Forwarded-Proto: http`), and any other host's get the 308 to https its requests get.
 */
export function createUpgradeHandler(state: ProxyState, scheme: 'https' | 'http' = 'https'): (req: H1ServerRequest, socket: Socket, head: Buffer) => void {
  return function handleUpgrade(req, socket, head) {
    const client = new H1UpgradeClient(socket, head);
    // "h2c" is HTTP/2 over cleartext TCP (RFC 9113 §3.1), never over the TLS this connection is. Forwarded,
    // an upstream that took it would give the client an HTTP/2 connection of its own, whose requests
    // Portico never routes or checks (h2c smuggling).
    if (H2C.test(req.headers.upgrade ?? '')) return client.reject('PORTICO_BAD_REQUEST');
    const s = req.socket as Socket & Tagged & WithClientCert;
    const upgrade: UpgradeRequest = {
      method: req.method,
      loggedMethod: req.method,
      url: req.url,
      headers: req.headers,
      remoteAddress: req.remoteAddress,
      connName: scheme === 'https' ? (s[kConnName] ?? '') : '',
      clientCert: s[kClientCert],
    };
    proxyUpgrade(state, scheme, upgrade, client);
  };
}

/**
 * Refuses an upgrade at its Host, Host/SNI, routing or address checks, with its access line, as a request refused
 * there has one (an attempt to reach a host through another's connection shows in the log). Cold path.
 */
function refuseLogged(state: ProxyState, req: UpgradeRequest, client: UpgradeClient, code: ErrorCode, host: string | undefined, route?: string, extra?: readonly [string, string]): void {
  const plan = state.plan;
  if (plan.accessLog) {
    state.access.write({ client: clientAddress(req.remoteAddress, req, plan.trustedProxies), peer: req.remoteAddress, host, sni: req.connName, method: req.loggedMethod, path: req.url, route, upstream: undefined, status: ERRORS[code].status, bytes: undefined, durationMs: 0, proto: client.proto, upgrade: req.headers.upgrade, aborted: false, error: code, detail: undefined, headerNames: plan.accessHeaders, requestHeaders: req.headers });
  }
  client.reject(code, extra);
}

/**
 * Proxies one upgrade, from an HTTP/1.1 client or an HTTP/2 one (RFC 8441), to an HTTP/1.1 upstream: the
 * Host/SNI check (421), routing, the route's gates (denyFrom, allowFrom, rateLimit, basicAuth, forwardAuth),
 * a target within maxRequests (503 at once when all are full), retries on a refused connection, the
 * upstream's answer relayed (or its failure mapped to 502/503/504), then the tunnel and its access line.
 */
export function proxyUpgrade(state: ProxyState, scheme: 'https' | 'http', req: UpgradeRequest, client: UpgradeClient): void {
  const plan = state.plan;
  const rawHost = req.headers.host;
  const host = normalizeHost(rawHost);
  if (host === undefined || rawHost === undefined) return refuseLogged(state, req, client, 'PORTICO_BAD_HOST', undefined);
  const connName = req.connName;
  const hostPlan = lookupHost(plan, host);
  if (scheme === 'https' && !isAllowedOnConnection(plan, host, hostPlan, connName)) return refuseLogged(state, req, client, 'PORTICO_SNI_HOST_MISMATCH', host);
  if (hostPlan === undefined) return refuseLogged(state, req, client, 'PORTICO_UNKNOWN_HOST', host);
  if (scheme === 'http' && !hostPlan.servePlain) return redirectToHttps(client, plan, host, req.url);
  const url = req.url.startsWith('/') ? normalizePath(req.url) : undefined;
  if (url === undefined) return refuseLogged(state, req, client, 'PORTICO_BAD_REQUEST', host);
  const route = lookupRoute(hostPlan, url, req);
  if (route === undefined) return refuseLogged(state, req, client, 'PORTICO_NO_ROUTE', host);
  if (route.allow !== undefined || route.deny !== undefined || route.limit !== undefined) {
    const from = clientAddress(req.remoteAddress, req, plan.trustedProxies);
    if (route.deny !== undefined && isInList(route.deny, from)) return refuseLogged(state, req, client, 'PORTICO_FORBIDDEN', host, route.id);
    if (route.allow !== undefined && !isInList(route.allow, from)) return refuseLogged(state, req, client, 'PORTICO_FORBIDDEN', host, route.id);
    const wait = route.limit === undefined ? 0 : route.limit.take(from);
    if (wait > 0) return refuseLogged(state, req, client, 'PORTICO_RATE_LIMITED', host, route.id, ['Retry-After', String(wait)]);
  }
  let user: string | undefined;
  let authCopied: readonly (readonly [string, string])[] | undefined;
  const proceed = (): void => {
    const u = route.upstream;
    // A "files" route serves GET and HEAD only: an upgrade is not something a file can take.
    if (route.files !== undefined) return client.reject('PORTICO_METHOD_NOT_ALLOWED', ['Allow', 'GET, HEAD']);
    if (u === undefined) {
      const a = route.answer!;
      route.stats.record(a.status, 0);
      return client.answer(a.status, answerHeaders(a, host, rewritePath(route, url), route.headerRules?.response), req.method === 'HEAD' ? EMPTY : a.body);
    }
    const sent = u.sticky === undefined ? undefined : readCookie(req.headers.cookie, u.sticky.cookie);
    const balanceBy = u.policy === 'client-ip' ? clientAddress(req.remoteAddress, req, plan.trustedProxies) : req.remoteAddress;
    const first = pickTarget(u, balanceBy, sent === undefined ? -1 : (u.sticky!.byValue.get(sent) ?? -1));
    // Every available target at its maxRequests: no queue for upgrades, 503 at once (with a request's Retry-After).
    if (first === undefined) return u.maxRequests !== 0 && anyAvailable(u) ? client.reject('PORTICO_UPSTREAM_BUSY', ['Retry-After', '1']) : client.reject('PORTICO_NO_HEALTHY_UPSTREAM');
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
    client.onceClose(() => {
      if (tunnelled) return;
      pending?.destroy();
      release();
    });
    // One attempt per target: a target that was never reached (refused, no socket file) passes the upgrade on to the next.
    const attempt = (target: Target, attempts: number, failed: number): void => {
      if (target.kind === 'h2c' || target.kind === 'h2-tls') {
        release();
        return client.reject('PORTICO_UPSTREAM_FAILED');
      }
      const headers = buildRequestHeaders(req.headers, {
        remoteAddress: remote,
        trusted,
        host: rawHost,
        upstreamHost: u.hostHeader === 'preserve' ? rawHost : u.hostHeader === 'target' ? target.authority : u.hostHeader,
        // Via names the protocol the client's request came in (RFC 9110 §7.6.3): "2" for an RFC 8441 WebSocket.
        via: plan.sendVia ? (client.proto === 'h2' ? '2' : '1.1') : undefined,
        forwarded: plan.sendForwarded,
        proto: scheme,
        upstreamH2: false,
        prefix: route.stripLength > 0 ? route.path : '',
      });
      if (requestId !== undefined) headers['x-request-id'] = requestId;
      if (hostPlan.clientAuth !== undefined) {
        if (req.clientCert !== undefined) headers['client-cert'] = req.clientCert;
      }
      const rules = route.headerRules?.request;
      if (rules !== undefined) applyToObject(headers, rules);
      if (authCopied !== undefined) applyAuthHeaders(headers, route.forwardAuth!, authCopied);
      headers.connection = 'upgrade';
      headers.upgrade = req.headers.upgrade;
      client.prepare(headers);
      const where = target.socketPath === undefined ? { host: target.hostname, port: target.port } : { socketPath: target.socketPath };
      const options = { ...where, method: req.method, path, headers, setHost: false, timeout: u.connectTimeoutMs };
      let up: http.ClientRequest;
      try {
        up = target.kind === 'h1' ? http.request(options) : https.request({ ...options, ...target.tlsOptions() });
      } catch {
        release();
        return client.reject('PORTICO_BAD_REQUEST');
      }
      hold(target);
      pending = up;
      let answered = false;
      // The access line: at once for an answer, and for a tunnel when it has closed, with the bytes each way
      // through it and its whole life (as nginx logs an upgraded request); the route's stats take the 101 at once.
      const finish = (status: number, error?: string, tunnel?: { readonly out: number; readonly in: number }, reason?: string, detail?: string): void => {
        const ms = performance.now() - started;
        if (tunnel === undefined) route.stats.record(status, ms);
        if (plan.accessLog) {
          state.access.write({ client: clientAddress(req.remoteAddress, req, plan.trustedProxies), peer: req.remoteAddress, requestId, user, host, sni: connName, method: req.loggedMethod, path: req.url, route: route.id, upstream: target.url, status, bytes: tunnel?.out, bytesIn: tunnel?.in, durationMs: Math.round(ms), proto: client.proto, upgrade: req.headers.upgrade, aborted: false, error, detail, reason, headerNames: plan.accessHeaders, requestHeaders: req.headers });
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
        if (answered) return client.destroy();
        if (err.code !== undefined && isTargetFailure(err.code)) target.reportFailure(err.code);
        if (client.destroyed) {
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
        client.reject(answer);
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
        finish(client.relayDeclined(res));
      });
      up.on('upgrade', (res, upSocket, upHead) => {
        answered = true;
        pending = undefined;
        // The client left as the answer came (its close released the target), or the 101 is not one it can take.
        const refused = client.destroyed ? 'the client left' : client.refuseSwitch(res);
        if (refused !== undefined) {
          upSocket.destroy();
          if (client.destroyed) return;
          release();
          state.log.warn({ upstream: target.url, code: 'PORTICO_UPSTREAM_FAILED', route: route.id, detail: refused }, 'upstream error');
          client.reject('PORTICO_UPSTREAM_FAILED');
          return finish(ERRORS.PORTICO_UPSTREAM_FAILED.status, 'PORTICO_UPSTREAM_FAILED');
        }
        tunnelled = true;
        // The tunnel holds its target until the upstream connection has closed (a client that leaves closes it).
        upSocket.once('close', release);
        up.setTimeout(0);
        upSocket.setTimeout(0);
        // The request's own timeout handler would destroy the upstream socket when the tunnel's idle timer fires on it.
        up.removeAllListeners('timeout');
        // TCP keep-alive (TUNNEL_KEEPALIVE_MS) on the upstream connection; the client's side sets its own.
        upSocket.setKeepAlive(true, TUNNEL_KEEPALIVE_MS);
        const stats = route.stats;
        let reason: string | undefined;
        let detail: string | undefined;
        // Known to reloads until it closes: one the new config no longer routes here is closed (open-tunnels.ts).
        const open: OpenTunnel = {
          host,
          url,
          req,
          routeId: route.id,
          close: (why) => {
            reason ??= why;
            client.destroy();
            upSocket.destroy();
          },
        };
        state.tunnels.add(open);
        const status = client.openTunnel(res, upSocket, upHead, (bytes) => {
          stats.openUpgrades--;
          state.tunnels.delete(open);
          // At the shutdown deadline the listener closes the client's side: the line says so.
          finish(status, undefined, bytes, reason ?? state.closeReason, detail);
        });
        // tunnelIdleTimeout: no byte either way for that long closes both sides (src/proxy/tunnel-idle.ts). Every
        // byte of an HTTP/2 client's WebSocket passes the upstream socket too, which then watches alone.
        watchTunnelIdle(client.tunnelSocket ?? upSocket, upSocket, u.tunnelIdleTimeoutMs, () => {
          reason = 'idle timeout';
          client.destroy();
          upSocket.destroy();
        });
        // sendTimeout: a side that stopped reading, its writes not moving for that long while bytes wait, would
        // otherwise hold the tunnel for good, back-pressure pausing the other side (src/proxy/tunnel-send.ts).
        // An HTTP/2 client's stream is cancelled (cancelStream(), through client.destroy()), its connection serving on.
        watchTunnelSend(client.tunnelOutput, upSocket, state, (side) => {
          reason ??= 'send timeout';
          detail = side === 'client' ? 'the client stopped reading' : 'the upstream stopped reading';
          client.destroy();
          upSocket.destroy();
        });
        stats.openUpgrades++;
        stats.record(status, performance.now() - started);
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
      { method: req.method, headers: req.headers, uri: url, host: rawHost, proto: scheme, client: clientAddress(req.remoteAddress, req, plan.trustedProxies), trusted: isTrustedPeer(plan, req.remoteAddress) },
      (v) => {
        client.offClose(cancel);
        if (client.destroyed) return;
        if (v.kind === 'allow') {
          authCopied = v.headers;
          user ??= verdictUser(v.headers);
          return proceed();
        }
        if (v.kind === 'failed') {
          state.log.warn({ route: route.id, detail: v.detail }, 'forwardAuth: the authentication service could not be asked');
          return client.reject('PORTICO_FORWARD_AUTH_FAILED');
        }
        client.answer(v.status, v.headers, v.body);
      },
    );
    const cancel = (): void => void authReq.destroy();
    client.onceClose(cancel);
  };
  if (route.auth !== undefined) {
    const checked = route.auth.check(req.headers.authorization);
    if (checked === undefined) return client.reject('PORTICO_UNAUTHORIZED', ['WWW-Authenticate', route.auth.challenge]);
    if (checked === AUTH_BUSY) return client.reject('PORTICO_AUTH_BUSY', ['Retry-After', '1']);
    if (typeof checked !== 'string') {
      void checked.then((u) => {
        if (client.destroyed) return;
        if (u === undefined) return client.reject('PORTICO_UNAUTHORIZED', ['WWW-Authenticate', route.auth!.challenge]);
        user = u;
        authorized();
      });
      return;
    }
    user = checked;
  }
  authorized();
}
