/**
 * The client side of an HTTP/1.1 upgrade (RFC 9110 §7.8; WebSocket's RFC 6455 §4): the raw socket the
 * HTTP/1.1 server handed over with the bytes after the request head. Answers are written as raw heads
 * with `Connection: close`; the tunnel relays the upstream's 101 and then bytes both ways.
 */
import http, { type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import type { Socket } from 'node:net';
import { ERRORS, type ErrorCode } from '../errors.js';
import { closeAfterAnswer, endDetached } from '../http1/end-detached.js';
import { connectionTokens, DROP_RESPONSE } from './forward-headers.js';
import { queuedBytes, type TunnelBytes, type UpgradeClient } from './upgrade-client.js';

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
    listed = connectionTokens(raw[i + 1], listed);
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

/** An HTTP/1.1 client whose request asked to upgrade; `head` holds its bytes after the request head. */
export class H1UpgradeClient implements UpgradeClient {
  readonly proto = 'http/1.1';
  readonly #socket: Socket;
  readonly #head: Buffer;
  readonly tunnelSocket: Socket;
  readonly tunnelOutput: Socket;

  constructor(socket: Socket, head: Buffer) {
    this.#socket = socket;
    this.tunnelSocket = socket;
    this.tunnelOutput = socket;
    this.#head = head;
    socket.on('error', () => socket.destroy());
  }

  get destroyed(): boolean {
    return this.#socket.destroyed;
  }

  onceClose(fn: () => void): void {
    this.#socket.once('close', fn);
  }

  offClose(fn: () => void): void {
    this.#socket.off('close', fn);
  }

  reject(code: ErrorCode, extra?: readonly [string, string]): void {
    const spec = ERRORS[code];
    const body = `${spec.message}\n`;
    endDetached(
      this.#socket,
      `HTTP/1.1 ${spec.status} ${http.STATUS_CODES[spec.status] ?? ''}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nX-Portico-Error: ${code}\r\n${extra === undefined ? '' : `${extra[0]}: ${extra[1]}\r\n`}Connection: close\r\n\r\n${body}`,
    );
  }

  answer(status: number, headers: OutgoingHttpHeaders, body: Buffer): void {
    let text = `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}\r\n`;
    for (const name in headers) {
      const value = headers[name];
      if (value === undefined) continue;
      for (const one of Array.isArray(value) ? value : [String(value)]) text += `${name}: ${one}\r\n`;
    }
    text += 'connection: close\r\n\r\n';
    closeAfterAnswer(this.#socket);
    this.#socket.write(text, 'latin1');
    this.#socket.end(body);
  }

  prepare(): void {}

  refuseSwitch(): undefined {
    return undefined;
  }

  relayDeclined(res: IncomingMessage): number {
    // The body arrives decoded and the connection closes after it, so framing headers are not relayed.
    const kept: string[] = [];
    const raw = res.rawHeaders;
    for (let i = 0; i + 1 < raw.length; i += 2) {
      const name = raw[i] as string;
      if (!DECLINED_DROP.test(name)) kept.push(name, raw[i + 1] as string);
    }
    kept.push('Connection', 'close');
    const status = res.statusCode ?? 502;
    // The pipe ends the socket after the body; the client's FIN then closes it (src/http1/end-detached.ts).
    closeAfterAnswer(this.#socket);
    this.#socket.write(rawHead(status, res.statusMessage ?? '', kept));
    res.pipe(this.#socket);
    return status;
  }

  openTunnel(res: IncomingMessage, upSocket: Socket, upHead: Buffer, closed: (bytes: TunnelBytes) => void): number {
    const socket = this.#socket;
    const head = this.#head;
    socket.setKeepAlive(true, TUNNEL_KEEPALIVE_MS);
    socket.write(rawHead(101, res.statusMessage ?? 'Switching Protocols', switchingHeaders(res.rawHeaders, res.headers.upgrade)));
    // Counted from here: the tunnel's bytes, without the heads. The client's bytes after its head were read already:
    // `head`, and what came while the upstream had not answered yet, which waits in the socket (paused) for the pipe.
    const outFrom = socket.bytesWritten;
    const inFrom = socket.bytesRead - head.length - socket.readableLength;
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
    // bytesWritten still counts the writes a destroyed socket had queued behind the one in progress: never sent.
    socket.once('close', () => closed({ out: ((socket.bytesWritten as number | undefined) ?? outFrom) - queuedBytes(socket) - outFrom, in: socket.bytesRead - inFrom }));
    return 101;
  }

  destroy(): void {
    this.#socket.destroy();
  }
}

/**
 * Idle time before a tunnel's TCP keep-alive probes start (Go's servers, so Caddy and Traefik, use 15 s; the OS
 * then probes until it gives up). An idle tunnel whose peer vanished without a FIN (power lost, a NAT or firewall
 * that forgot it) is otherwise never noticed, and holds its upstream connection, its maxRequests slot and its
 * file descriptors forever. Live idle tunnels are not closed by it.
 */
export const TUNNEL_KEEPALIVE_MS = 60_000;
