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
  /** Written rounded to hundredths of a millisecond. */
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

/**
 * A JSON string literal for the string last given, kept: the host, SNI, method, route and upstream of one
 * request are most often those of the one before, so their literals are made (and checked) once, not per line.
 */
class QuotedMemo {
  #last: string | undefined = undefined;
  #json = '""';

  get(s: string): string {
    if (s !== this.#last) {
      this.#json = jsonString(s);
      this.#last = s;
    }
    return this.#json;
  }
}

/**
 * A duration rounded to hundredths of a millisecond, as JSON.stringify writes the number (`12`, `12.5`,
 * `12.05`), from integers: formatting a fractional double is several times the cost of an integer.
 */
export function hundredthsText(ms: number): string {
  const c = Math.round(ms * 100);
  if (!(c >= 0 && c < 1e15)) return JSON.stringify(Math.round(ms * 100) / 100);
  const whole = Math.floor(c / 100);
  const frac = c - whole * 100;
  if (frac === 0) return `${whole}`;
  if (frac % 10 === 0) return `${whole}.${frac / 10}`;
  return frac < 10 ? `${whole}.0${frac}` : `${whole}.${frac}`;
}

/** Writes access lines for `log`, to its destination, while its level lets `info` through. */
export class AccessLog {
  readonly #log: Logger;
  /** The logger's own destination: access lines go there unless setStream() names another. */
  readonly #logStream: LineStream;
  #stream: LineStream;
  /** The logger's bindings as pino serialises them (`,"pid":…`), put after the time. */
  readonly #bindings: string;
  /** `{"level":30,"time":<ms>` and its bindings for the millisecond of the last line: many lines share one. */
  #timeMs = -1;
  #head = '';
  readonly #client = new QuotedMemo();
  readonly #host = new QuotedMemo();
  readonly #sni = new QuotedMemo();
  readonly #method = new QuotedMemo();
  readonly #route = new QuotedMemo();
  readonly #upstream = new QuotedMemo();

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
    const now = Date.now();
    if (now !== this.#timeMs) {
      this.#timeMs = now;
      this.#head = `{"level":30,"time":${now}${this.#bindings},"client":`;
    }
    // The fields most lines have in one template; the others each behind its own test.
    let line = this.#head + this.#client.get(f.client);
    if (f.peer !== f.client && f.peer !== undefined) line += `,"peer":${jsonString(f.peer)}`;
    if (f.requestId !== undefined) line += `,"requestId":${jsonString(f.requestId)}`;
    if (f.user !== undefined) line += `,"user":${jsonString(f.user)}`;
    if (f.host !== undefined) line += `,"host":${this.#host.get(f.host)}`;
    if (f.sni !== undefined) line += `,"sni":${this.#sni.get(f.sni)}`;
    line += `,"method":${this.#method.get(f.method)}`;
    if (f.path !== undefined) line += `,"path":${jsonString(f.path)}`;
    if (f.route !== undefined) line += `,"route":${this.#route.get(f.route)}`;
    if (f.upstream !== undefined) line += `,"upstream":${this.#upstream.get(f.upstream)}`;
    if (f.cache !== undefined) line += `,"cache":${jsonString(f.cache)}`;
    line += f.bytes === undefined ? `,"status":${f.status}` : `,"status":${f.status},"bytes":${f.bytes}`;
    if (f.bytesIn !== undefined) line += `,"bytesIn":${f.bytesIn}`;
    line += `,"durationMs":${hundredthsText(f.durationMs)},"proto":"${f.proto}"`;
    if (f.upgrade !== undefined) line += `,"upgrade":${jsonString(f.upgrade)}`;
    if (f.aborted) line += ',"aborted":true';
    if (f.error !== undefined) line += `,"error":${jsonString(f.error)}`;
    if (f.detail !== undefined) line += `,"detail":${jsonString(f.detail)}`;
    if (f.reason !== undefined) line += `,"reason":${jsonString(f.reason)}`;
    if (f.headerNames !== undefined) line += headersField(f.headerNames, f.requestHeaders);
    this.#stream.write(`${line},"msg":"access"}\n`);
  }
}
