/**
 * The access log line, written straight to the logger's destination: the same JSON line that
 * `log.info({host, …}, 'access')` gives (pino's level, time and bindings first, the fields in a
 * fixed order, `"msg":"access"` last), put together in one template instead of through pino's
 * generic serializer, which walks the object's keys and checks each value's type on every request
 * (bench/optimisations.md §18). Lines other than the access line still go through pino.
 */
import type { IncomingHttpHeaders } from 'node:http';
import pino, { type Logger } from 'pino';

/** One request's access line; undefined fields are left out, as pino leaves them out. */
export interface AccessFields {
  /** The client's address: the connection's peer, the client its PROXY protocol header named, or behind a trusted proxy the client its X-Forwarded-For names. */
  readonly client: string;
  /** The connection's peer; written only when it differs from `client` (a trusted proxy whose X-Forwarded-For named the client). */
  readonly peer?: string | undefined;
  /** forwarding.requestId: the request's X-Request-ID. */
  readonly requestId?: string | undefined;
  /** The basicAuth user the request proved, if any. */
  readonly user?: string | undefined;
  readonly host: string | undefined;
  readonly sni: string | undefined;
  readonly method: string;
  readonly path: string | undefined;
  readonly route: string | undefined;
  readonly upstream: string | undefined;
  /** Routes with a response cache: "hit", "revalidated", "stale", or why the request went upstream ("miss", "refresh", "bypass"). */
  readonly cache?: string | undefined;
  readonly status: number;
  readonly bytes: number | undefined;
  /** An upgraded connection (tunnel): the bytes Portico received from the client after its head (`bytes`: those it handed to the client after the 101); see TunnelBytes. */
  readonly bytesIn?: number | undefined;
  readonly durationMs: number;
  /** Written as it is, unescaped: one of these constants. */
  readonly proto: 'h2' | 'http/1.1';
  readonly upgrade?: string | undefined;
  readonly aborted: boolean;
  readonly error: string | undefined;
  readonly detail: string | undefined;
  /** Why a tunnel (upgraded connection) was closed by Portico, such as "idle timeout"; undefined when a peer closed it. */
  readonly reason?: string | undefined;
  /** log.accessHeaders (lower-case names): those of them the request has are written under "headers". */
  readonly headerNames?: readonly string[] | undefined;
  /** The request's headers, read for `headerNames`. */
  readonly requestHeaders?: IncomingHttpHeaders | undefined;
}

/** Where access lines are written: a destination that takes whole lines. */
export interface LineStream {
  write(line: string): unknown;
}

/** The level number of pino's `info`. */
const INFO = 30;
/** Characters that a JSON string can hold as they are: printable ASCII but `"` and `\`. */
const PLAIN = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;

/** A JSON string literal for `s`: quoted as is when nothing in it needs escaping, else JSON.stringify's escaping. */
function jsonString(s: string): string {
  return s.length < 512 && PLAIN.test(s) ? `"${s}"` : JSON.stringify(s);
}

function field(key: string, value: string | undefined): string {
  return value === undefined ? '' : `,"${key}":${jsonString(value)}`;
}

/** `,"headers":{…}` with the named request headers the request has (repeated ones joined with ", "), or nothing. */
function headersField(names: readonly string[] | undefined, headers: IncomingHttpHeaders | undefined): string {
  if (names === undefined || headers === undefined) return '';
  let out = '';
  for (const name of names) {
    // A string or a list: a name Object.prototype has (`constructor`, `tostring`) reads its member on a request
    // without that header (HTTP/1.1 header objects are plain objects), which is no value of the request's.
    const v = headers[name];
    if (typeof v === 'string') out += `${out === '' ? '' : ','}${jsonString(name)}:${jsonString(v)}`;
    else if (Array.isArray(v)) out += `${out === '' ? '' : ','}${jsonString(name)}:${jsonString(v.join(', '))}`;
  }
  return out === '' ? '' : `,"headers":{${out}}`;
}

/** Writes access lines for `log`, to its destination, while its level lets `info` through. */
export class AccessLog {
  readonly #log: Logger;
  /** The logger's own destination: access lines go there unless setStream() names another. */
  readonly #logStream: LineStream;
  #stream: LineStream;
  /** The logger's bindings as pino serialises them (`,"pid":…`), put after the time. */
  readonly #bindings: string;

  constructor(log: Logger) {
    const stream = (log as unknown as Record<symbol, unknown>)[pino.symbols.streamSym] as LineStream | undefined;
    const bindings = (log as unknown as Record<symbol, unknown>)[pino.symbols.chindingsSym];
    if (typeof stream?.write !== 'function' || typeof bindings !== 'string') {
      throw new Error('this pino version does not expose its destination and bindings as pino.symbols says; the access log cannot be written');
    }
    this.#log = log;
    this.#logStream = stream;
    this.#stream = stream;
    this.#bindings = bindings;
  }

  /** Writes the access lines to `stream` (log.accessFile's destination), or with the logger's other lines when undefined. */
  setStream(stream: LineStream | undefined): void {
    this.#stream = stream ?? this.#logStream;
  }

  write(f: AccessFields): void {
    if (this.#log.levelVal > INFO) return;
    this.#stream.write(
      `{"level":30,"time":${Date.now()}${this.#bindings},"client":${jsonString(f.client)}${f.peer === f.client ? '' : field('peer', f.peer)}${field('requestId', f.requestId)}${field('user', f.user)}${field('host', f.host)}${field('sni', f.sni)},"method":${jsonString(f.method)}${field('path', f.path)}` +
        `${field('route', f.route)}${field('upstream', f.upstream)}${field('cache', f.cache)},"status":${f.status}${f.bytes === undefined ? '' : `,"bytes":${f.bytes}`}${f.bytesIn === undefined ? '' : `,"bytesIn":${f.bytesIn}`},"durationMs":${f.durationMs},"proto":"${f.proto}"` +
        `${field('upgrade', f.upgrade)}${f.aborted ? ',"aborted":true' : ''}${field('error', f.error)}${field('detail', f.detail)}${field('reason', f.reason)}${headersField(f.headerNames, f.requestHeaders)},"msg":"access"}\n`,
    );
  }
}
