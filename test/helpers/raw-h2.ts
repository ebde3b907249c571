/**
 * A raw HTTP/2 peer over TLS (ALPN h2) for tests that must send what node:http2's client refuses to:
 * connection-specific or upper-case header names, missing pseudo-headers, a DATA length that contradicts
 * content-length, CONTINUATION and control-frame floods, rapid resets. Header blocks are HPACK literals
 * without indexing and without Huffman coding (RFC 7541 §6.2.2), so no encoder state is needed; of the
 * server's header blocks only `:status` is decoded (static table, or a literal of digits, Huffman or not).
 */
import tls from 'node:tls';
import { once } from 'node:events';

export const FRAME = { DATA: 0, HEADERS: 1, PRIORITY: 2, RST_STREAM: 3, SETTINGS: 4, PUSH_PROMISE: 5, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8, CONTINUATION: 9 } as const;
export const FLAG = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4 } as const;
/** HTTP/2 error codes (RFC 9113 §7). */
export const H2_ERROR = { NO_ERROR: 0, PROTOCOL_ERROR: 1, INTERNAL_ERROR: 2, FLOW_CONTROL_ERROR: 3, REFUSED_STREAM: 7, CANCEL: 8, ENHANCE_YOUR_CALM: 11 } as const;

/** One frame received. */
export interface Frame {
  type: number;
  flags: number;
  stream: number;
  payload: Buffer;
}

/** Encodes an HPACK integer with an `n`-bit prefix (RFC 7541 §5.1). */
function hpackInt(value: number, n: number, first: number): number[] {
  const max = (1 << n) - 1;
  if (value < max) return [first | value];
  const out = [first | max];
  value -= max;
  while (value >= 128) {
    out.push((value % 128) + 128);
    value = Math.floor(value / 128);
  }
  out.push(value);
  return out;
}

function hpackString(s: string | Buffer): Buffer {
  const b = typeof s === 'string' ? Buffer.from(s, 'latin1') : s;
  return Buffer.concat([Buffer.from(hpackInt(b.length, 7, 0)), b]);
}

/** A header block of literals without indexing, new names, in the order given (names sent exactly as written). */
export function headerBlock(fields: readonly (readonly [string, string])[]): Buffer {
  const parts: Buffer[] = [];
  for (const [name, value] of fields) parts.push(Buffer.from([0]), hpackString(name), hpackString(value));
  return Buffer.concat(parts);
}

/** One field as a literal with incremental indexing and a new name (RFC 7541 §6.2.1): it enters the dynamic table, at index 62. */
export function indexedLiteral(name: string, value: string): Buffer {
  return Buffer.concat([Buffer.from([0x40]), hpackString(name), hpackString(value)]);
}

/** The usual request pseudo-headers for `authority`, then `extra`. */
export function requestFields(authority: string, path = '/', method = 'GET', extra: readonly [string, string][] = []): [string, string][] {
  return [[':method', method], [':scheme', 'https'], [':authority', authority], [':path', path], ...extra];
}

export function frame(type: number, flags: number, stream: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(stream & 0x7fffffff, 5);
  return Buffer.concat([head, payload]);
}

const STATIC_STATUS: Record<number, number> = { 8: 200, 9: 204, 10: 206, 11: 304, 12: 400, 13: 404, 14: 500 };
/** Huffman codes of the digits (RFC 7541 Appendix B): '0'–'2' in 5 bits, '3'–'9' in 6. */
const DIGIT_CODES: readonly (readonly [number, number])[] = [
  [0b00000, 5], [0b00001, 5], [0b00010, 5], [0b011001, 6], [0b011010, 6], [0b011011, 6], [0b011100, 6], [0b011101, 6], [0b011110, 6], [0b011111, 6],
];

function huffmanDigits(b: Buffer): string {
  let bits = '';
  for (const byte of b) bits += byte.toString(2).padStart(8, '0');
  let out = '';
  let at = 0;
  outer: while (at < bits.length) {
    for (let d = 0; d < 10; d++) {
      const [code, len] = DIGIT_CODES[d]!;
      if (at + len <= bits.length && parseInt(bits.slice(at, at + len), 2) === code) {
        out += String(d);
        at += len;
        continue outer;
      }
    }
    break; // padding (all ones)
  }
  return out;
}

/** The `:status` of a response header block (its first field), or 0 if it cannot be read. */
export function statusOf(block: Buffer): number {
  const b0 = block[0] ?? 0;
  if (b0 & 0x80) return STATIC_STATUS[b0 & 0x7f] ?? 0;
  // Literal with name index 8..14 (:status): with indexing 01xxxxxx, without 0000xxxx, never 0001xxxx.
  const idx = b0 & 0x40 ? b0 & 0x3f : b0 & 0x0f;
  if (idx < 8 || idx > 14) return 0;
  const lenByte = block[1] ?? 0;
  const value = block.subarray(2, 2 + (lenByte & 0x7f));
  return Number(lenByte & 0x80 ? huffmanDigits(value) : value.toString('latin1'));
}

/** A raw HTTP/2 connection: preface and an empty SETTINGS sent, every frame received kept in `frames`. */
export class RawH2 {
  readonly socket: tls.TLSSocket;
  readonly frames: Frame[] = [];
  closed = false;
  #buf: Buffer = Buffer.alloc(0);
  #waiters: (() => void)[] = [];

  private constructor(socket: tls.TLSSocket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('error', () => {});
    socket.on('close', () => {
      this.closed = true;
      this.#wake();
    });
  }

  static async connect(port: number, sni: string, ca: string, settings: Buffer = Buffer.alloc(0)): Promise<RawH2> {
    const socket = tls.connect({ host: '127.0.0.1', port, servername: sni, ca, ALPNProtocols: ['h2'] });
    await once(socket, 'secureConnect');
    if (socket.alpnProtocol !== 'h2') throw new Error(`ALPN gave ${String(socket.alpnProtocol)}`);
    const c = new RawH2(socket);
    socket.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), frame(FRAME.SETTINGS, 0, 0, settings)]));
    return c;
  }

  #onData(chunk: Buffer): void {
    this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
    while (this.#buf.length >= 9) {
      const len = this.#buf.readUIntBE(0, 3);
      if (this.#buf.length < 9 + len) break;
      const f: Frame = { type: this.#buf[3]!, flags: this.#buf[4]!, stream: this.#buf.readUInt32BE(5) & 0x7fffffff, payload: this.#buf.subarray(9, 9 + len) };
      this.#buf = this.#buf.subarray(9 + len);
      // Acknowledge the server's SETTINGS, as a well-behaved peer does.
      if (f.type === FRAME.SETTINGS && (f.flags & FLAG.ACK) === 0 && !this.socket.destroyed) this.socket.write(frame(FRAME.SETTINGS, FLAG.ACK, 0));
      this.frames.push(f);
    }
    this.#wake();
  }

  #wake(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const f of w) f();
  }

  /** Writes bytes unless the socket is gone; returns whether it could. */
  send(bytes: Buffer): boolean {
    if (this.socket.destroyed || this.closed) return false;
    this.socket.write(bytes);
    return true;
  }

  /** HEADERS (END_HEADERS; END_STREAM unless `endStream` is false) for `stream`. */
  request(stream: number, fields: readonly (readonly [string, string])[], endStream = true): boolean {
    return this.send(frame(FRAME.HEADERS, FLAG.END_HEADERS | (endStream ? FLAG.END_STREAM : 0), stream, headerBlock(fields)));
  }

  /** Resolves with the first frame (already received or to come) that `pred` accepts, or undefined once the connection closed or `timeoutMs` passed. */
  async waitFor(pred: (f: Frame) => boolean, timeoutMs = 5000): Promise<Frame | undefined> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.frames.find(pred);
      if (hit !== undefined) return hit;
      if (this.closed || Date.now() >= deadline) return undefined;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** The GOAWAY the server sent (its error code), waiting up to `timeoutMs`. */
  async goaway(timeoutMs = 5000): Promise<number | undefined> {
    const f = await this.waitFor((x) => x.type === FRAME.GOAWAY, timeoutMs);
    return f?.payload.readUInt32BE(4);
  }

  /** Resolves when the connection has closed (true), or false after `timeoutMs`. */
  async waitClosed(timeoutMs = 5000): Promise<boolean> {
    await this.waitFor(() => false, timeoutMs);
    return this.closed;
  }

  /** What the server answered on `stream`: its status, or the RST_STREAM error code; undefined if neither came. */
  async answer(stream: number, timeoutMs = 5000): Promise<{ status?: number; rst?: number } | undefined> {
    const f = await this.waitFor((x) => x.stream === stream && (x.type === FRAME.HEADERS || x.type === FRAME.RST_STREAM), timeoutMs);
    if (f === undefined) return undefined;
    return f.type === FRAME.HEADERS ? { status: statusOf(f.payload) } : { rst: f.payload.readUInt32BE(0) };
  }

  close(): void {
    this.socket.destroy();
  }
}
