/**
 * Closing a socket the HTTP/1.1 server let go of (an upgrade request: src/http1/server-connection.ts
 * leaveForUpgrade) when it is answered instead of tunnelled: a refusal (401, 403, 429, 503…), a route's
 * own answer, or an upstream's declined answer relayed.
 *
 * Such a socket is no longer read (the parser let go of it and nothing else reads it), so the client's
 * FIN never arrived as 'end', and a socket ended by Portico stayed open, half closed, after the client had
 * gone: one file descriptor, its TLS state and its listeners for every declined WebSocket upgrade, for the
 * life of the process (the connection was counted by limits.maxConnections too). Here the socket reads and
 * drops what comes once Portico's answer is on its way, closes when the client's FIN arrives, and is
 * destroyed LINGER_MS after its answer was sent if the client never closes (nginx's lingering_timeout,
 * as the server's own lingering close).
 */
import type { Socket } from 'node:net';

/**
 * How long a lingering close waits for the client (nginx's lingering_timeout): here, after an ended socket's
 * answer, for the client to close; in the HTTP/1.1 server (server-connection.ts), while the rest of a request
 * body is read and dropped.
 */
export const LINGER_MS = 5000;

const kLinger = Symbol('portico.detachedLinger');

interface LingeringSocket extends Socket {
  [kLinger]?: NodeJS.Timeout;
}

function destroySocket(socket: Socket): void {
  socket.destroy();
}

/** 'finish': the answer has been handed to the kernel; the client has LINGER_MS to close. */
function startLinger(this: LingeringSocket): void {
  if (this.destroyed) return;
  const timer = setTimeout(destroySocket, LINGER_MS, this);
  timer.unref();
  this[kLinger] = timer;
}

function stopLinger(this: LingeringSocket): void {
  if (this[kLinger] !== undefined) clearTimeout(this[kLinger]);
  this[kLinger] = undefined;
}

/**
 * Prepares a detached socket for its last answer: what the client sends from now on is read and dropped,
 * so its FIN closes the socket once Portico's own end() (direct, or a pipe's) has gone out. Half-open,
 * so a client that half-closed after its request still gets the whole answer. Call before writing it.
 */
export function closeAfterAnswer(socket: Socket): void {
  if (socket.destroyed) return;
  socket.allowHalfOpen = true;
  socket.once('finish', startLinger);
  socket.once('close', stopLinger);
  socket.resume();
}

/** Ends a detached socket with `data`, closing it as closeAfterAnswer() says. */
export function endDetached(socket: Socket, data?: string | Buffer): void {
  closeAfterAnswer(socket);
  if (data === undefined) socket.end();
  else socket.end(data);
}
