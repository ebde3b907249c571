/**
 * The two sides an upgrade is proxied between, as handle-upgrade.ts sees them: what the request says
 * ({@link UpgradeRequest}) and how its client is answered ({@link UpgradeClient}). Two clients implement
 * it: an HTTP/1.1 connection that asked for `Upgrade` (RFC 9110 §7.8; upgrade-client-h1.ts) and an HTTP/2
 * stream opened with extended CONNECT for a WebSocket (RFC 8441; upgrade-client-h2.ts). Both go to the
 * upstream as an HTTP/1.1 upgrade, through the same gates (Host/SNI, routing, allowFrom, rateLimit,
 * basicAuth, forwardAuth, maxRequests) and the same access line.
 */
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders } from 'node:http';
import type { Socket } from 'node:net';
import type { Writable } from 'node:stream';
import type { ErrorCode } from '../errors.js';

/** The request of an upgrade, as it is routed, checked and forwarded. */
export interface UpgradeRequest {
  /** The method the upstream gets and routes match on: the HTTP/1.1 request's own; "GET" for an HTTP/2 WebSocket. */
  readonly method: string;
  /** The method the access line names: the client's own ("CONNECT" for an HTTP/2 WebSocket). */
  readonly loggedMethod: string;
  /** The request target (HTTP/2: `:path`). */
  readonly url: string;
  /** Its headers, with `host` (HTTP/2: `:authority`) and `upgrade` (HTTP/2: `:protocol`) as HTTP/1.1 has them. */
  readonly headers: IncomingHttpHeaders;
  /** The connection's peer (or the client a PROXY protocol header named). */
  readonly remoteAddress: string;
  /** The name the TLS connection was made for ('' on the plain HTTP listener). */
  readonly connName: string;
  /** The connection's verified client certificate as a Client-Cert value (RFC 9440), if it showed one. */
  readonly clientCert: string | undefined;
}

/**
 * The bytes a tunnel carried, without the heads (the client's request head, the 101 or HTTP/2 200): `out` the
 * bytes Portico handed to the client's connection (its TLS socket; HTTP/2: its stream, DATA payload without frame
 * headers), `in` the bytes Portico received from the client. WebSocket frames are counted whole, their own headers
 * included, as Portico does not parse them. Read from the connections' own counters when the tunnel closes.
 */
export interface TunnelBytes {
  readonly out: number;
  readonly in: number;
}

/** A writable's chunks that wait behind its write in progress: never handed to the connection. */
interface WithWritableBuffer {
  readonly writableBuffer?: readonly { readonly chunk: Buffer | string }[];
}

/**
 * The bytes `w` holds that it has not yet handed to its connection: the writes queued behind the one in progress
 * (which is counted as sent: it went to TLS, or to nghttp2's framing). A writable destroyed while a write is in
 * progress keeps this queue until its 'close' (Node's errorBuffer() leaves it then), and net.Socket's bytesWritten
 * counts it as written. Cold path: read once, when a tunnel closes.
 */
export function queuedBytes(w: Writable): number {
  const queue = (w as Writable & WithWritableBuffer).writableBuffer;
  if (queue === undefined) return 0;
  let n = 0;
  for (let i = 0; i < queue.length; i++) {
    const chunk = (queue[i] as { readonly chunk: Buffer | string }).chunk;
    n += typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.length;
  }
  return n;
}

/** How the client of an upgrade is answered, and how its tunnel is opened. */
export interface UpgradeClient {
  /** The client's protocol, for the access line. */
  readonly proto: 'http/1.1' | 'h2';
  /** The client has gone (its connection or stream closed). */
  readonly destroyed: boolean;
  /** Calls `fn` once when the client side closes; offClose() takes it back. */
  onceClose(fn: () => void): void;
  offClose(fn: () => void): void;
  /** Answers with Portico's error for `code` (and one extra header, such as Retry-After), then ends. */
  reject(code: ErrorCode, extra?: readonly [string, string]): void;
  /** Answers with a whole response of Portico's (a route's answer, a 308, a forwardAuth refusal), then ends. */
  answer(status: number, headers: OutgoingHttpHeaders, body: Buffer): void;
  /** Adds what the upstream request needs for this client beyond its headers (HTTP/2: a Sec-WebSocket-Key of Portico's). */
  prepare(headers: OutgoingHttpHeaders): void;
  /** Why the upstream's 101 cannot be taken (HTTP/2: a Sec-WebSocket-Accept not made from the key sent), or undefined. */
  refuseSwitch(res: IncomingMessage): string | undefined;
  /** Relays an upstream answer that declined the upgrade, then ends; returns the status the client got. */
  relayDeclined(res: IncomingMessage): number;
  /**
   * Answers the switch (HTTP/1.1 101, HTTP/2 200) and pipes bytes both ways between the client and `upSocket`,
   * `upHead` first; `closed` is called once the client side has closed. Returns the status the client got.
   */
  openTunnel(res: IncomingMessage, upSocket: Socket, upHead: Buffer, closed: (bytes: TunnelBytes) => void): number;
  /** The client's own socket, watched with the upstream's for tunnelIdleTimeout; undefined when the tunnel is a stream of a shared connection (HTTP/2). */
  readonly tunnelSocket: Socket | undefined;
  /** What the upstream's bytes are written to on their way to the client (its socket, or its HTTP/2 stream): watched for sendTimeout. */
  readonly tunnelOutput: Writable;
  /** Drops the client at once (an answer cut short, an idle tunnel). */
  destroy(): void;
}
