/**
 * The WebSocket opening handshake's key and its proof (RFC 6455 §4.1, §4.2.2). A WebSocket opened over
 * HTTP/2 (RFC 8441 §5) carries no Sec-WebSocket-Key, so Portico makes one for the HTTP/1.1 upgrade it
 * sends upstream and checks the upstream's Sec-WebSocket-Accept against it: a 101 not made for this key
 * comes from something that is not the WebSocket server asked (a cache, a misrouted connection).
 */
import { createHash, randomBytes } from 'node:crypto';

/** The GUID RFC 6455 §1.3 appends to the key before hashing. */
const WEBSOCKET_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** A fresh Sec-WebSocket-Key: 16 random bytes in base64 (RFC 6455 §4.1, item 7). */
export function newWebSocketKey(): string {
  return randomBytes(16).toString('base64');
}

/** The Sec-WebSocket-Accept a server answers `key` with: base64 of SHA-1(key + GUID) (RFC 6455 §4.2.2, item 5.4). */
export function webSocketAccept(key: string): string {
  return createHash('sha1').update(key + WEBSOCKET_GUID).digest('base64');
}
