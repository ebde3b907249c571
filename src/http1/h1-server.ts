/**
 * Portico's own HTTP/1.1 server, for the HTTPS listener's HTTP/1.1
 * connections and the plain HTTP listener. It replaces node:http's server on
 * the request path: llhttp (Node's own parser) reads each socket in C++, and
 * requests reach the handler as small objects with the IncomingMessage and
 * ServerResponse members the proxy uses. Side by side on the S1 bench shape,
 * the same proxy cost 0.74× the CPU per request of one on node:http's server
 * (bench/optimisations.md, section 9).
 *
 * What node:http's server did and this one keeps: keep-alive with a
 * `Keep-Alive: timeout` hint, pipelined requests answered in order, HTTP/1.0
 * clients (no chunked encoding; close-delimited bodies), `Expect:
 * 100-continue`, Host required on HTTP/1.1, 400/431 for bad or oversized
 * heads, 408 after headersTimeout or requestTimeout, or when a body stops
 * arriving for bodyTimeout, idle connections closed
 * after keepAliveTimeout, and (as nginx's send_timeout) connections whose
 * client stopped reading closed after sendTimeout, a Date header, and upgrades handed over with the
 * bytes that followed their head.
 */
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { LimitsPlan } from '../config/plan.js';
import { endDetached } from './end-detached.js';
import { H1ServerConnection } from './server-connection.js';
import type { H1ServerRequest } from './server-request.js';
import type { H1ServerResponse } from './server-response.js';
import { isName } from './header-name.js';
import { isChunkedAlone } from './transfer-coding.js';

export type H1RequestHandler = (req: H1ServerRequest, res: H1ServerResponse) => void;
export type H1UpgradeHandler = (req: H1ServerRequest, socket: Socket, head: Buffer) => void;

export interface H1ServerOptions {
  readonly log: Logger;
  readonly onRequest: H1RequestHandler;
  /** Upgrades (WebSocket…); without one, an upgrade request gets 400. */
  readonly onUpgrade?: H1UpgradeHandler;
}

/** How often connections are checked against their deadlines: a timeout fires at most this much late. */
const CHECK_INTERVAL_MS = 1000;

export class H1Server {
  readonly log: Logger;
  readonly onRequest: H1RequestHandler;
  readonly #onUpgrade: H1UpgradeHandler | undefined;
  readonly #conns = new Set<H1ServerConnection>();
  maxHeaderBytes = 16 * 1024;
  headersTimeoutMs = 60_000;
  requestTimeoutMs = 300_000;
  bodyTimeoutMs = 60_000;
  keepAliveTimeoutMs = 5_000;
  sendTimeoutMs = 60_000;
  keepAliveHint = 'timeout=5';
  /** Shutting down: every connection closes after its response in progress. */
  closing = false;
  #timer: NodeJS.Timeout | undefined = undefined;

  constructor(options: H1ServerOptions) {
    this.log = options.log;
    this.onRequest = options.onRequest;
    this.#onUpgrade = options.onUpgrade;
  }

  /** The Plan's limits; at start and on every reload (connections open already keep their header limit). */
  applyLimits(limits: LimitsPlan): void {
    this.maxHeaderBytes = limits.maxHeaderBytes;
    this.headersTimeoutMs = limits.headersTimeoutMs;
    this.requestTimeoutMs = limits.requestTimeoutMs;
    this.bodyTimeoutMs = limits.bodyTimeoutMs;
    this.keepAliveTimeoutMs = limits.keepAliveTimeoutMs;
    this.sendTimeoutMs = limits.sendTimeoutMs;
    this.keepAliveHint = limits.keepAliveTimeoutMs > 0 ? `timeout=${Math.max(1, Math.floor(limits.keepAliveTimeoutMs / 1000))}` : '';
  }

  /** Serves HTTP/1.1 on a connected socket (TLS already established for HTTPS). */
  accept(socket: Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    const conn = new H1ServerConnection(this, socket);
    if (conn.closed || socket.destroyed) return;
    this.#conns.add(conn);
    if (this.#timer === undefined) {
      this.#timer = setInterval(checkDeadlines, CHECK_INTERVAL_MS, this);
      this.#timer.unref();
    }
  }

  forget(conn: H1ServerConnection): void {
    this.#conns.delete(conn);
  }

  /**
   * Requests the server refuses before any handler sees them, in one pass over the head's header
   * pairs (which also notes `Expect` on the request). Hot path: an origin-form request with one Host
   * and no Transfer-Encoding pays one length check per header name.
   *
   * - RFC 9112 §3.2: an HTTP/1.1 request without Host, or any request with more than one Host line, is
   *   400 (node:http, and this server before, let the first Host win: a request that two readers can
   *   route to two hosts).
   * - RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 request is faulty framing (400, as nginx); a
   *   transfer coding other than a lone "chunked" is not implemented (501): llhttp takes
   *   "gzip, chunked" as chunked, and the upstream would get the still-gzipped bytes as the body.
   * - RFC 9112 §3.2.2: an absolute-form target is accepted, and becomes origin-form with the Host
   *   taken from its authority (see toOriginForm).
   */
  acceptable(conn: H1ServerConnection, req: H1ServerRequest, pairs: string[]): boolean {
    let hosts = 0;
    let hostAt = -1;
    let te = false;
    let teOther = false;
    for (let i = 0; i < pairs.length; i += 2) {
      const n = pairs[i] as string;
      const len = n.length;
      if (len === 4) {
        if (isName(n, 'host', 'Host')) {
          hosts++;
          hostAt = i + 1;
        }
      } else if (len === 6) {
        if (isName(n, 'expect', 'Expect')) req.expect = (pairs[i + 1] as string).trim().toLowerCase();
      } else if (len === 17 && isName(n, 'transfer-encoding', 'Transfer-Encoding')) {
        te = true;
        if (!isChunkedAlone(pairs[i + 1] as string)) teOther = true;
      }
    }
    if (hosts === 0 ? req.atLeast11 : hosts > 1) {
      conn.refuse(hosts === 0 ? 'PORTICO_BAD_HOST' : 'PORTICO_DUPLICATE_HOST');
      return false;
    }
    if (te) {
      if (!req.atLeast11) {
        conn.refuse('PORTICO_BAD_TRANSFER_ENCODING');
        return false;
      }
      if (teOther) {
        conn.refuse('PORTICO_TRANSFER_ENCODING_UNSUPPORTED');
        return false;
      }
    }
    const url = req.url;
    if (url.charCodeAt(0) !== 47 /* '/' */ && url !== '*') return toOriginForm(conn, req, pairs, hostAt);
    return true;
  }

  /**
   * `Expect: 100-continue`: the interim "100 Continue" waits until the body is first read (H1ServerRequest);
   * any other expectation gets 417. False when answered.
   */
  expectContinue(req: H1ServerRequest, res: H1ServerResponse): boolean {
    const expect = req.expect;
    if (expect === undefined) return true;
    if (expect === '100-continue') {
      // An HTTP/1.0 client does not know 100 (RFC 9110 §10.1.1), and one whose body has arrived whole needs none.
      if (req.atLeast11 && !req.complete) req.continuePending = true;
      return true;
    }
    res.writeHead(417, ['Content-Length', '0', 'Connection', 'close']);
    res.end();
    return false;
  }

  onUpgrade(req: H1ServerRequest, socket: Socket, head: Buffer): void {
    if (this.#onUpgrade === undefined) {
      endDetached(socket, 'HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    this.#onUpgrade(req, socket, head);
  }

  /** Stops taking requests: idle connections close now, busy ones after their response. */
  closeIdle(): void {
    this.closing = true;
    for (const c of this.#conns) {
      c.closing = true;
      if (c.active === null && c.queue.length === 0 && c.incoming === null) c.endSoon();
    }
  }

  /** Closes every connection at once (the shutdown deadline passed). */
  destroyAll(): void {
    for (const c of this.#conns) c.socket.destroy();
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** Once a second: 408 for heads, requests or bodies that take too long, close for idle keep-alive connections and for clients that stopped reading. */
  checkDeadlines(): void {
    const now = Date.now();
    for (const c of this.#conns) {
      if (c.closed) continue;
      if (c.lingeredOut(now)) {
        c.socket.destroy();
        continue;
      }
      // A timeout of 0 is off, as in node:http.
      if (c.headersStart !== 0 && this.headersTimeoutMs > 0 && now - c.headersStart > this.headersTimeoutMs) {
        this.log.debug({ remote: c.socket.remoteAddress }, 'request head not received within headersTimeout');
        c.refuse(408);
      } else if (c.requestStart !== 0 && this.requestTimeoutMs > 0 && now - c.requestStart > this.requestTimeoutMs) {
        this.log.debug({ remote: c.socket.remoteAddress }, 'request not received within requestTimeout');
        c.refuse(408);
      } else if (this.bodyTimeoutMs > 0 && c.bodyStalled(now, this.bodyTimeoutMs)) {
        this.log.debug({ remote: c.socket.remoteAddress }, 'request body not received within bodyTimeout');
        c.bodyTimedOut();
      } else if (c.idleSince !== 0 && this.keepAliveTimeoutMs > 0 && now - c.idleSince > this.keepAliveTimeoutMs) {
        c.endSoon();
      } else if (this.sendTimeoutMs > 0 && c.sendStalled(now, this.sendTimeoutMs)) {
        // A client that stopped reading: its response (and the upstream exchange behind it) is given up.
        this.log.debug({ remote: c.socket.remoteAddress }, 'response not read within sendTimeout');
        c.socket.destroy();
      }
    }
  }
}


/**
 * An absolute-form request target: scheme, then the authority up to the first "/", "?" or "#", then
 * the rest. The scheme is matched here; the authority becomes the Host, which the handlers check as
 * any Host (RFC 9110 §7.2 syntax, then the Host/SNI rule).
 */
const ABSOLUTE_FORM = /^(https?):\/\/([^/?#]*)(.*)$/i;

/**
 * RFC 9112 §3.2.2: "a server MUST accept the absolute-form", and an origin server MUST ignore the Host
 * header of such a request and use the target's authority instead. The request is rewritten once,
 * here, to what an origin-form request for that authority looks like (path and query as its target,
 * the authority as its Host), so routing, the Host/SNI check (421 for an authority the TLS server name
 * does not cover), redirects, files, the access log and the upstream request all see one host. A
 * scheme other than http or https, or user info, is 400; https:// on the plain HTTP port or http:// on
 * the HTTPS port is 421 (RFC 9110 §7.4: that origin is not served on this connection). Cold path: only
 * a target that does not start with "/" gets here.
 */
function toOriginForm(conn: H1ServerConnection, req: H1ServerRequest, pairs: string[], hostAt: number): boolean {
  const m = ABSOLUTE_FORM.exec(req.url);
  const authority = m?.[2];
  const rest = m?.[3] ?? '';
  if (m === null || authority === undefined || authority.includes('@') || (rest !== '' && rest.charCodeAt(0) !== 47 && rest.charCodeAt(0) !== 63)) {
    conn.refuse('PORTICO_BAD_TARGET');
    return false;
  }
  const https = (m[1] as string).length === 5;
  if (https !== ((conn.socket as { encrypted?: boolean }).encrypted === true)) {
    conn.refuse('PORTICO_SCHEME_MISMATCH');
    return false;
  }
  req.url = rest === '' ? '/' : rest.charCodeAt(0) === 63 /* '?' */ ? `/${rest}` : rest;
  if (hostAt >= 0) pairs[hostAt] = authority;
  else pairs.push('Host', authority);
  return true;
}

function checkDeadlines(server: H1Server): void {
  server.checkDeadlines();
}
