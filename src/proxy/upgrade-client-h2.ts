/**
 * WebSockets over HTTP/2 (RFC 8441): a stream opened with extended CONNECT (`:method` CONNECT,
 * `:protocol` websocket) is proxied as the HTTP/1.1 upgrade its `:authority` and `:path` name, through
 * handle-upgrade.ts like any other (Host/SNI check, routing, route gates, maxRequests, access line). The
 * upstream gets an HTTP/1.1 GET with `Upgrade: websocket` and a Sec-WebSocket-Key of Portico's (§5: the
 * HTTP/2 client sends none); its 101, once its Sec-WebSocket-Accept is checked (RFC 6455 §4.2.2), becomes
 * the stream's `:status` 200, and the stream's DATA carries the WebSocket's bytes both ways. Any other
 * CONNECT is refused: a plain one 405 (Portico opens no tunnels, as over HTTP/1.1), another `:protocol` 501.
 */
import { constants, type IncomingHttpHeaders, type OutgoingHttpHeaders, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { ERRORS, type ErrorCode } from '../errors.js';
import { cancelStream } from '../http2/cancel-stream.js';
import { kRawSocket, kRemoteAddress, type SessionFacts } from '../http2/server-request.js';
import { kClientCert, type WithClientCert } from '../tls/client-auth.js';
import { buildResponseHeaders, DROP_RESPONSE } from './forward-headers.js';
import { errorBody } from './respond-error.js';
import { kConnName, type ProxyState, type Tagged } from './handle-request.js';
import { proxyUpgrade } from './handle-upgrade.js';
import { TUNNEL_KEEPALIVE_MS } from './upgrade-client-h1.js';
import { queuedBytes, type TunnelBytes, type UpgradeClient, type UpgradeRequest } from './upgrade-client.js';
import { newWebSocketKey, webSocketAccept } from './websocket-key.js';

const { NGHTTP2_NO_ERROR } = constants;

/** The 101 headers that belong to the HTTP/1.1 handshake alone, or that a 2xx answer to CONNECT may not carry (RFC 9110 §8.6). */
const NOT_RELAYED_ON_SWITCH: ReadonlySet<string> = new Set(['sec-websocket-accept', 'content-length']);

/**
 * Closes a stream Portico has answered whole, with NO_ERROR (RFC 9113 §8.1): a CONNECT stream's client side
 * stays open otherwise. After the answer's frames went out: Node writes them in a native immediate, which runs
 * before this one (as dropRequestBody in handle-request.ts).
 */
function closeAnswered(stream: ServerHttp2Stream): void {
  setImmediate(closeStreamNoError, stream);
}

function closeStreamNoError(stream: ServerHttp2Stream): void {
  if (!stream.closed) stream.close(NGHTTP2_NO_ERROR);
}

/** Answers a stream with Portico's error for `code`, as respondError does, then closes it. */
function refuseStream(stream: ServerHttp2Stream, code: ErrorCode, extra?: readonly [string, string]): void {
  if (stream.destroyed || stream.headersSent) return void cancelStream(stream);
  const body = errorBody(code);
  const headers: OutgoingHttpHeaders = {
    ':status': ERRORS[code].status,
    'content-type': 'text/plain; charset=utf-8',
    'content-length': body.length,
    'cache-control': 'no-store',
    'x-portico-error': code,
  };
  if (extra !== undefined) headers[extra[0].toLowerCase()] = extra[1];
  stream.respond(headers);
  stream.end(body);
  closeAnswered(stream);
}

/** The client side of a WebSocket opened on an HTTP/2 stream with extended CONNECT. */
export class H2WebSocketClient implements UpgradeClient {
  readonly proto = 'h2';
  /** A stream of a shared connection: the upstream socket watches the tunnel's idle time alone. */
  readonly tunnelSocket = undefined;
  /** The stream: its writableLength holds what its client's flow-control window has not let out yet. */
  readonly tunnelOutput: ServerHttp2Stream;
  readonly #stream: ServerHttp2Stream;
  /** The Sec-WebSocket-Key sent upstream (every attempt the same). */
  readonly #key = newWebSocketKey();

  constructor(stream: ServerHttp2Stream) {
    this.#stream = stream;
    this.tunnelOutput = stream;
  }

  get destroyed(): boolean {
    return this.#stream.destroyed;
  }

  onceClose(fn: () => void): void {
    this.#stream.once('close', fn);
  }

  offClose(fn: () => void): void {
    this.#stream.off('close', fn);
  }

  reject(code: ErrorCode, extra?: readonly [string, string]): void {
    refuseStream(this.#stream, code, extra);
  }

  answer(status: number, headers: OutgoingHttpHeaders, body: Buffer): void {
    // A 2xx to CONNECT means the tunnel is open (RFC 9110 §15.3): a route's fixed answer cannot say that.
    if (status >= 200 && status < 300) return this.reject('PORTICO_PROTOCOL_UNSUPPORTED');
    const stream = this.#stream;
    if (stream.destroyed) return;
    const out: OutgoingHttpHeaders = { ':status': status };
    for (const name in headers) {
      const lower = name.toLowerCase();
      if (!DROP_RESPONSE.has(lower)) out[lower] = headers[name];
    }
    out['content-length'] = body.length;
    stream.respond(out);
    stream.end(body);
    closeAnswered(stream);
  }

  prepare(headers: OutgoingHttpHeaders): void {
    headers['sec-websocket-key'] = this.#key;
  }

  refuseSwitch(res: IncomingMessage): string | undefined {
    if (res.headers.upgrade?.toLowerCase() !== 'websocket') return `the upstream switched to ${JSON.stringify(res.headers.upgrade ?? '')}, not websocket`;
    if (res.headers['sec-websocket-accept'] !== webSocketAccept(this.#key)) return 'the upstream\'s Sec-WebSocket-Accept does not match the key sent (RFC 6455 §4.2.2)';
    return undefined;
  }

  relayDeclined(res: IncomingMessage): number {
    const status = res.statusCode ?? 502;
    // A 2xx would tell the client its WebSocket is open: the upstream served the request without switching.
    if (status >= 200 && status < 300) {
      res.resume();
      this.reject('PORTICO_UPSTREAM_FAILED');
      return ERRORS.PORTICO_UPSTREAM_FAILED.status;
    }
    const stream = this.#stream;
    if (stream.destroyed) {
      res.resume();
      return status;
    }
    try {
      stream.respond({ ...buildResponseHeaders(res.headers, undefined), ':status': status });
    } catch {
      // A head HTTP/2 cannot carry (the stream checks it as it serialises it).
      res.resume();
      this.reject('PORTICO_UPSTREAM_FAILED');
      return ERRORS.PORTICO_UPSTREAM_FAILED.status;
    }
    res.pipe(stream);
    res.once('end', () => closeAnswered(stream));
    return status;
  }

  openTunnel(res: IncomingMessage, upSocket: Socket, upHead: Buffer, closed: (bytes: TunnelBytes) => void): number {
    const stream = this.#stream;
    const headers: OutgoingHttpHeaders = { ':status': 200 };
    const relayed = buildResponseHeaders(res.headers, undefined);
    for (const name in relayed) if (!NOT_RELAYED_ON_SWITCH.has(name)) headers[name] = relayed[name];
    // Counted on the upstream connection, which every byte of the tunnel passes (the stream has no byte counts),
    // without its 101 head: what it read and handed on to the stream, and what it was given to write.
    const outFrom = upSocket.bytesRead - upHead.length;
    const inFrom = upSocket.bytesWritten;
    // A half-close passes through: the client's END_STREAM becomes a FIN to the upstream, the upstream's FIN the
    // stream's END_STREAM, and the other direction carries on. The stream closes once both have ended.
    upSocket.allowHalfOpen = true;
    upSocket.on('error', () => {});
    upSocket.once('close', () => {
      if (stream.closed) return;
      // Closed after a FIN: the END_STREAM it became goes out first. Cut off otherwise: the stream is reset, what
      // it still held for the client dropped.
      if (upSocket.readableEnded) stream.close(NGHTTP2_NO_ERROR);
      else cancelStream(stream);
    });
    // To the client: what the upstream socket read, less what it still holds (not yet piped) and what the stream
    // holds queued (not yet handed to nghttp2), as a client that stopped reading leaves them when its stream is
    // cancelled. Taken when the stream's destruction starts: the write nghttp2 was taking may complete before the
    // 'close', and the queue behind it is then emptied (Node's errorBuffer()), which would count it as sent.
    const toClient = (): number => upSocket.bytesRead - upSocket.readableLength - queuedBytes(stream) - outFrom;
    let outAtDestroy: number | undefined;
    const destroy = stream.destroy;
    stream.destroy = function destroyCounted(this: ServerHttp2Stream, error?: Error): ServerHttp2Stream {
      outAtDestroy ??= toClient();
      return destroy.call(this, error);
    };
    stream.once('close', () => {
      // Read before the upstream socket is destroyed. From the client: what the upstream socket was given, and what
      // the stream read that waits for it (back-pressure from an upstream that stopped reading).
      const out = outAtDestroy ?? toClient();
      const fromClient = ((upSocket.bytesWritten as number | undefined) ?? inFrom) - inFrom + stream.readableLength;
      upSocket.destroy();
      closed({ out, in: fromClient });
    });
    try {
      stream.respond(headers);
    } catch {
      // A 101 header HTTP/2 cannot carry (the stream checks the head as it serialises it): no tunnel.
      cancelStream(stream);
      return ERRORS.PORTICO_UPSTREAM_FAILED.status;
    }
    // TCP keep-alive on the client's connection too (see TUNNEL_KEEPALIVE_MS): the tunnel may be its only stream.
    (stream.session as (ServerHttp2Session & SessionFacts) | undefined)?.[kRawSocket]?.setKeepAlive(true, TUNNEL_KEEPALIVE_MS);
    if (upHead.length > 0) stream.write(upHead);
    upSocket.pipe(stream);
    stream.pipe(upSocket);
    return 200;
  }

  destroy(): void {
    if (!this.#stream.closed) cancelStream(this.#stream);
  }
}

/**
 * Builds the handler of the HTTPS listener's CONNECT streams (src/http2/stream-handler.ts): a WebSocket
 * (`:protocol` websocket) is proxied; any other is refused.
 */
export function createConnectHandler(state: ProxyState): (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => void {
  return function handleConnect(stream, headers) {
    const protocol = headers[':protocol'];
    if (protocol === undefined) return refuseStream(stream, 'PORTICO_CONNECT_REFUSED');
    if (protocol.toLowerCase() !== 'websocket') return refuseStream(stream, 'PORTICO_PROTOCOL_UNSUPPORTED');
    // RFC 8441 §4: :scheme and :path are those of the resource; HTTP/2 reaches Portico over TLS only (as a request's :scheme).
    const path = headers[':path'];
    if (headers[':scheme'] !== 'https' || path === undefined) return refuseStream(stream, 'PORTICO_BAD_REQUEST');
    // The request as an HTTP/1.1 upgrade has it, so that route matches ("headers": {"Upgrade": "websocket"}),
    // forwardAuth and the upstream see one WebSocket request whichever protocol the client spoke.
    const h: IncomingHttpHeaders = {};
    for (const name in headers) if (name.charCodeAt(0) !== 58 /* ':' */) h[name] = headers[name];
    const authority = headers[':authority'];
    if (authority !== undefined) h.host = authority;
    h.upgrade = 'websocket';
    const session = stream.session as (ServerHttp2Session & SessionFacts & Tagged & WithClientCert) | undefined;
    const req: UpgradeRequest = {
      method: 'GET',
      loggedMethod: 'CONNECT',
      url: path,
      headers: h,
      remoteAddress: session?.[kRemoteAddress] ?? '',
      connName: session?.[kConnName] ?? '',
      clientCert: session?.[kClientCert],
    };
    proxyUpgrade(state, 'https', req, new H2WebSocketClient(stream));
  };
}
