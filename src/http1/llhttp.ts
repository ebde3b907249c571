/**
 * Node's own llhttp binding: the C parser behind node:http, reached through the
 * `_http_common` module that node:http itself uses. Portico keeps one parser
 * per connection, on both sides: its HTTP/1.1 server (src/http1/, 0.74× the
 * CPU per request of node:http's server in the S1 bench shape) and its
 * upstream connections (src/upstream/h1-connection.ts, 0.65× of undici's
 * dispatch API); bench/optimisations.md sections 6 and 9. HTTP parsing stays
 * llhttp's; nothing here reads HTTP bytes by hand.
 *
 * The binding is not a documented API, so its shape is checked once at
 * startup: if a future Node changes it, Portico stops with a message that says
 * so instead of misparsing.
 */
import { createRequire } from 'node:module';

/** The parts of Node's HTTPParser that Portico uses. */
export interface NodeHttpParser {
  initialize(type: number, resource: object, maxHeaderSize?: number, lenient?: number): void;
  /** Parses a chunk; returns the bytes consumed, or an Error with an `HPE_*` code. */
  execute(data: Buffer): number | Error;
  /** Makes the parser read `handle` directly in C++, into one shared buffer (how node:http's server reads); results arrive through kOnExecute. */
  consume(handle: object): void;
  unconsume(): void;
  /** Signals end of input (a close-delimited body ends here); an Error if a message was cut short. */
  finish(): number | Error | undefined;
  close(): void;
  free(): void;
  /** The buffer of the read being parsed (consume mode): where an upgrade's first bytes after the head are. */
  getCurrentBuffer(): Buffer;
}

interface HTTPParserClass {
  new (): NodeHttpParser;
  readonly REQUEST: number;
  readonly RESPONSE: number;
  readonly kOnHeaders: number;
  readonly kOnHeadersComplete: number;
  readonly kOnBody: number;
  readonly kOnMessageBegin: number;
  readonly kOnMessageComplete: number;
  readonly kOnExecute: number;
}

function loadParser(): { HTTPParser: HTTPParserClass; methods: readonly string[] } {
  const common = createRequire(import.meta.url)('_http_common') as { HTTPParser?: unknown; methods?: unknown };
  const P = common.HTTPParser as (Record<string, unknown> & { prototype?: Record<string, unknown> }) | undefined;
  const ok =
    typeof common.HTTPParser === 'function' &&
    P !== undefined &&
    typeof P.REQUEST === 'number' &&
    typeof P.RESPONSE === 'number' &&
    Array.isArray(common.methods) &&
    typeof P.prototype?.getCurrentBuffer === 'function' &&
    typeof P.kOnHeaders === 'number' &&
    typeof P.kOnHeadersComplete === 'number' &&
    typeof P.kOnBody === 'number' &&
    typeof P.kOnMessageComplete === 'number' &&
    typeof P.kOnMessageBegin === 'number' &&
    typeof P.kOnExecute === 'number' &&
    typeof P.prototype?.consume === 'function' &&
    typeof P.prototype?.execute === 'function';
  if (!ok) {
    throw new Error(
      `PORTICO_UNSUPPORTED_RUNTIME: this Node.js (${process.version}) does not expose the HTTP parser Portico uses (_http_common.HTTPParser); run Portico on Node 20.19–26`,
    );
  }
  return { HTTPParser: P as unknown as HTTPParserClass, methods: common.methods as readonly string[] };
}

const loaded = loadParser();
export const HTTPParser = loaded.HTTPParser;
/** Method names by the parser's method number (kOnHeadersComplete gives the number). */
export const METHODS = loaded.methods;
export const kOnHeaders = HTTPParser.kOnHeaders;
export const kOnHeadersComplete = HTTPParser.kOnHeadersComplete;
export const kOnBody = HTTPParser.kOnBody;
export const kOnMessageComplete = HTTPParser.kOnMessageComplete;
export const kOnMessageBegin = HTTPParser.kOnMessageBegin;
export const kOnExecute = HTTPParser.kOnExecute;

/** Frees a parser's native side (as node:http does with parsers it doesn't keep); call it outside the parser's own callbacks. Unconsuming twice is harmless. */
export function closeParser(p: NodeHttpParser): void {
  p.unconsume();
  p.close();
}

/** The native stream handle under a net.Socket or TLSSocket, as node:http's server drives it when its parser consumes the socket. */
export interface StreamHandle {
  readStart(): number;
  readStop(): number;
}

/** A socket's handle and its timeout refresh: a consumed socket emits no 'data', so its idle timer must be refreshed by hand, as node:http's server does. */
export interface ConsumableSocket {
  readonly _handle: StreamHandle | null;
  _unrefTimer(): void;
}
