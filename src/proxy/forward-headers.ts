/**
 * Header rules between client and upstream: hop-by-hop headers and every
 * header named in Connection are removed first (RFC 9110 §7.6.1), then
 * Portico's own forwarding headers are added, so a client can neither delete
 * nor forge them.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import { isChunkedAlone } from '../http1/transfer-coding.js';
import { isName, lowerName } from '../http1/header-name.js';

/**
 * Every spelling of a header name with some of its "-" written "_" (the name itself left out). CGI, WSGI
 * and Rack servers turn both into one variable (`HTTP_X_FORWARDED_FOR`), so a client sending
 * `X_Forwarded_For` could have such an upstream take its value for the one Portico sets; nginx drops every
 * header with "_" by default for this reason (`underscores_in_headers`). Portico drops those spellings of
 * the headers it sets, and lets other names with "_" through. At most 2^dashes spellings, built once.
 */
export function underscoreSpellings(name: string): string[] {
  let spellings = [''];
  for (const ch of name) {
    if (ch === '-') spellings = spellings.flatMap((s) => [`${s}-`, `${s}_`]);
    else spellings = spellings.map((s) => s + ch);
  }
  return spellings.filter((s) => s !== name);
}

/** The headers Portico sets on every forwarded request (or may: X-Request-Id), whose "_" spellings are dropped. */
const SET_BY_PORTICO = ['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-prefix', 'x-request-id', 'client-cert', 'client-cert-chain'];

/**
 * Headers that also tell an app who the client is or which scheme it used, that Portico does not set,
 * and that apps and their frameworks believe: `X-Real-IP` and `True-Client-IP` (nginx's
 * `proxy_set_header X-Real-IP`, Akamai; chi's and Echo's real-IP middleware read them before
 * X-Forwarded-For), `X-Forwarded-Ssl: on` and `X-Forwarded-Scheme` (Rack reads both before
 * X-Forwarded-Proto), `Front-End-Https: on` (IIS/OWA), `X-Forwarded-Server`, and `X-Forwarded-Port`
 * (Symfony and Spring read it before the port in X-Forwarded-Host, which already carries the client's).
 * Dropped, with their "_" spellings, when the peer is not a trusted proxy, as Traefik does; a trusted
 * proxy's pass.
 */
const CLIENT_CLAIMS = ['x-real-ip', 'true-client-ip', 'x-forwarded-ssl', 'x-forwarded-scheme', 'front-end-https', 'x-forwarded-server', 'x-forwarded-port'];

/** Request headers never forwarded as received (hop-by-hop, rebuilt by Portico, or a "_" spelling of one it sets). */
const DROP_REQUEST = new Set([
  ...SET_BY_PORTICO.flatMap(underscoreSpellings),
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'te',
  'upgrade',
  'trailer',
  'host',
  'http2-settings',
  // The client's 100-continue was answered by Portico's own server; upstream bodies are streamed anyway.
  'expect',
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'x-forwarded-prefix',
  'forwarded',
  'via',
  // RFC 9440: set by Portico from a verified client certificate (hosts with clientAuth), never taken from a client.
  'client-cert',
  'client-cert-chain',
]);

/**
 * What a peer outside trustedProxies may not tell a service behind Portico about the client, besides the
 * X-Forwarded-For/-Proto/-Host and Forwarded that are rebuilt: the CLIENT_CLAIMS and X-Forwarded-Prefix,
 * with their "_" spellings. Also kept from the forwardAuth service's request (src/proxy/forward-auth.ts):
 * oauth2-proxy, for one, takes X-Real-IP as the client's address in its trusted-IP check.
 */
export const UNTRUSTED_CLAIMS: readonly string[] = [...CLIENT_CLAIMS, 'x-forwarded-prefix'].flatMap((n) => [n, ...underscoreSpellings(n)]);

/** What is dropped from an untrusted peer's request: DROP_REQUEST and the CLIENT_CLAIMS (one lookup per header either way). */
const DROP_UNTRUSTED_REQUEST: ReadonlySet<string> = new Set([...DROP_REQUEST, ...CLIENT_CLAIMS, ...CLIENT_CLAIMS.flatMap(underscoreSpellings)]);

/** Response headers never forwarded (hop-by-hop). */
export const DROP_RESPONSE: ReadonlySet<string> = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'http2-settings']);

/**
 * Fields an upstream's trailers may not carry on to a client (RFC 9110 §6.5.1): connection-specific
 * ones, framing and routing. Passed on, a connection-specific one makes node:http2 refuse the trailers,
 * and a whole response reaches an HTTP/2 client reset.
 */
const DROP_TRAILER: ReadonlySet<string> = new Set([...DROP_RESPONSE, 'content-length', 'host', 'trailer']);

/** Removes from upstream trailers (lower-case names) the fields a trailer section may not carry. Cold path: only responses with trailers. */
export function dropTrailerFields(trailers: IncomingHttpHeaders): IncomingHttpHeaders {
  for (const name in trailers) if (DROP_TRAILER.has(name)) delete trailers[name];
  return trailers;
}

/**
 * Throws (code PORTICO_UNSUPPORTED_TRANSFER_CODING) unless an HTTP/1.1 upstream's Transfer-Encoding is
 * `chunked` alone: the header is dropped on the way to the client, so another coding (`gzip, chunked`,
 * or `gzip` with the body ending at the close) would reach it as the body's own bytes, still coded.
 * nginx answers such a response 502 too. Called only where the header is found.
 */
export function checkTransferCoding(value: string | string[] | undefined): void {
  if (typeof value === 'string' && isChunkedAlone(value)) return;
  throw Object.assign(new Error('transfer coding other than chunked'), { code: 'PORTICO_UNSUPPORTED_TRANSFER_CODING' });
}

/** What the request rules need to know about the exchange. */
export interface ForwardFacts {
  /** Client address as seen on the socket. */
  readonly remoteAddress: string;
  /** Whether the peer is a trusted proxy (its forwarding headers are kept). */
  readonly trusted: boolean;
  /** Host header value as the client sent it (port kept). */
  readonly host: string;
  /** Value for the upstream Host header. */
  readonly upstreamHost: string;
  /** HTTP version for Via: "1.1" or "2". */
  readonly via: string | undefined;
  readonly forwarded: boolean;
  /** The scheme the client used: "https", or "http" on the plain listener. */
  readonly proto: 'http' | 'https';
  /** Whether the upstream speaks HTTP/2 (TE: trailers passes through). */
  readonly upstreamH2: boolean;
  /** The path prefix the route strips ("stripPrefix"), sent as X-Forwarded-Prefix; "" for none. */
  readonly prefix: string;
}

/**
 * The header names a Connection header lists (hop-by-hop by that listing), lower-case, or undefined for none.
 * With `into` (the names earlier Connection lines listed), they are added to it, and it is what comes back.
 */
export function connectionTokens(value: string | string[] | undefined, into?: Set<string>): Set<string> | undefined {
  if (value === undefined) return into;
  const text = Array.isArray(value) ? value.join(',') : value;
  if (text === '' || text === 'keep-alive' || text === 'close') return into;
  const set = into ?? new Set<string>();
  for (const t of text.split(',')) {
    const name = t.trim().toLowerCase();
    if (name !== '') set.add(name);
  }
  return set;
}

/** An IPv4-mapped IPv6 address as plain IPv4 ("::ffff:127.0.0.1" → "127.0.0.1"); others as they are. */
export function stripAddress(addr: string): string {
  return addr.startsWith('::ffff:') && addr.includes('.') ? addr.slice(7) : addr;
}

function forwardedNode(addr: string): string {
  return addr.includes(':') ? `"[${addr}]"` : addr;
}

function joinValue(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v.join(', ') : v;
}

/** Copies one request header from `h` to `out`, unless it is a pseudo-header, dropped, or listed by Connection. */
function copyRequestHeader(out: OutgoingHttpHeaders, h: IncomingHttpHeaders, name: string, drop: ReadonlySet<string>, listed: ReadonlySet<string> | undefined): void {
  if (name.charCodeAt(0) === 58 /* ':' pseudo-header */) return;
  if (drop.has(name)) return;
  if (listed !== undefined && listed.has(name)) return;
  out[name] = h[name];
}

/**
 * Builds the headers sent upstream. Hot path. `rawNames`, when given, is the block's names and values in
 * turn (an HTTP/2 request's rawHeaders), walked for `h`'s keys instead of `h` itself: the same names in the
 * same order (a repeated name is copied again, its folded value unchanged), without a `for…in` over
 * node:http2's header object, which is in dictionary mode.
 */
export function buildRequestHeaders(h: IncomingHttpHeaders, f: ForwardFacts, rawNames?: readonly string[]): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  const listed = connectionTokens(h.connection);
  const drop = f.trusted ? DROP_REQUEST : DROP_UNTRUSTED_REQUEST;
  if (rawNames !== undefined) {
    for (let i = 0; i < rawNames.length; i += 2) copyRequestHeader(out, h, rawNames[i] as string, drop, listed);
  } else {
    for (const name in h) copyRequestHeader(out, h, name, drop, listed);
  }
  if (f.upstreamH2 && typeof h.te === 'string' && /(^|,)\s*trailers\s*(;|,|$)/i.test(h.te)) out.te = 'trailers';
  out.host = f.upstreamHost;
  const client = stripAddress(f.remoteAddress);
  const prevFor = f.trusted ? joinValue(h['x-forwarded-for']) : undefined;
  out['x-forwarded-for'] = prevFor === undefined || prevFor === '' ? client : `${prevFor}, ${client}`;
  const prevProto = f.trusted ? joinValue(h['x-forwarded-proto']) : undefined;
  out['x-forwarded-proto'] = prevProto === undefined || prevProto === '' ? f.proto : prevProto;
  const prevHost = f.trusted ? joinValue(h['x-forwarded-host']) : undefined;
  out['x-forwarded-host'] = prevHost === undefined || prevHost === '' ? f.host : prevHost;
  // The public path prefix an app is mounted under: a trusted proxy's, then the one this route strips.
  const prevPrefix = f.trusted ? joinValue(h['x-forwarded-prefix']) : undefined;
  const prefix = prevPrefix === undefined ? f.prefix : prevPrefix.replace(/\/+$/, '') + f.prefix;
  if (prefix !== '') out['x-forwarded-prefix'] = prefix;
  if (f.forwarded) {
    const mine = `for=${forwardedNode(client)};host="${f.host}";proto=${f.proto}`;
    const prev = f.trusted ? joinValue(h.forwarded) : undefined;
    out.forwarded = prev === undefined || prev === '' ? mine : `${prev}, ${mine}`;
  }
  if (f.via !== undefined) {
    const prev = joinValue(h.via);
    out.via = appendVia(prev, f.via);
  }
  return out;
}

/** Builds the response headers sent to the client. Hot path. */
export function buildResponseHeaders(h: IncomingHttpHeaders, via: string | undefined): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  const listed = connectionTokens(h.connection);
  for (const name in h) {
    if (name.charCodeAt(0) === 58) continue;
    if (DROP_RESPONSE.has(name)) continue;
    if (listed !== undefined && listed.has(name)) continue;
    out[name] = h[name];
  }
  if (via !== undefined) {
    const prev = joinValue(h.via);
    out.via = appendVia(prev, via);
  }
  return out;
}

/**
 * What a response header name is to buildResponsePairs: 0 an ordinary header, passed on; DROPPED a
 * hop-by-hop one (DROP_RESPONSE), CONNECTION, TRANSFER_ENCODING and VIA those it reads. Decided by
 * the name's length first, so most names are never lower-cased (header-name.ts).
 */
const DROPPED = 1;
const CONNECTION = 2;
const TRANSFER_ENCODING = 3;
const VIA = 4;

function responseNameKind(name: string): number {
  switch (name.length) {
    case 2:
      return isName(name, 'te', 'TE') ? DROPPED : 0;
    case 3:
      return isName(name, 'via', 'Via') ? VIA : 0;
    case 7:
      return isName(name, 'upgrade', 'Upgrade') ? DROPPED : 0;
    case 10:
      if (isName(name, 'connection', 'Connection')) return CONNECTION;
      return isName(name, 'keep-alive', 'Keep-Alive') ? DROPPED : 0;
    case 14:
      return isName(name, 'http2-settings', 'HTTP2-Settings') ? DROPPED : 0;
    case 16:
      return isName(name, 'proxy-connection', 'Proxy-Connection') ? DROPPED : 0;
    case 17:
      return isName(name, 'transfer-encoding', 'Transfer-Encoding') ? TRANSFER_ENCODING : 0;
    default:
      return 0;
  }
}

/**
 * The response headers for an HTTP/1.1 client, straight from the upstream's header pairs to the
 * flat [name, value, …] list `writeHead` takes: no header object, names as the upstream wrote them,
 * repeated headers kept as separate lines. Throws on a transfer coding other than chunked
 * ({@link checkTransferCoding}). Every pair it returns is one llhttp parsed (or Portico's Via, made of
 * them), so the names are tokens and the values free of control characters: what writeHead checks,
 * which it may skip for them. Hot path.
 */
export function buildResponsePairs(pairs: string[], via: string | undefined): string[] {
  const n = pairs.length;
  let listed: Set<string> | undefined;
  let prevVia: string | undefined;
  // One pass: ordinary pairs are copied as they come; names the Connection header lists (rare) are
  // taken out afterwards, since it may come after them.
  const out: string[] = [];
  for (let i = 0; i < n; i += 2) {
    const name = pairs[i] as string;
    const kind = responseNameKind(name);
    if (kind === 0) {
      out.push(name, pairs[i + 1] as string);
    } else if (kind === CONNECTION) {
      listed = connectionTokens(pairs[i + 1], listed);
    } else if (kind === TRANSFER_ENCODING) {
      checkTransferCoding(pairs[i + 1]);
    } else if (kind === VIA) {
      if (via === undefined) out.push(name, pairs[i + 1] as string);
      else prevVia = prevVia === undefined ? pairs[i + 1] : `${prevVia}, ${pairs[i + 1]}`;
    }
  }
  const result = listed === undefined ? out : withoutListed(out, listed);
  if (via !== undefined) result.push('via', appendVia(prevVia, via));
  return result;
}

/**
 * Adds one received header line to a header object the way node:http folds repeats: `set-cookie` a list,
 * any other name joined with ", ". `name` is lower-case. A name Object.prototype also has (`constructor`,
 * `toString`) reads a function before it is set and is taken as a first line; `__proto__` cannot be a
 * property name and is left out, as node:http leaves it out.
 */
export function addFolded(h: OutgoingHttpHeaders, name: string, value: string): void {
  const prev = h[name];
  if (prev === undefined || typeof prev === 'function') h[name] = name === 'set-cookie' ? [value] : value;
  else if (Array.isArray(prev)) prev.push(value);
  else if (typeof prev === 'string') h[name] = `${prev}, ${value}`;
}

/**
 * The response headers for an HTTP/2 client, straight from the upstream's header pairs to the header
 * object `respond()` takes: names lower-case (common ones as interned constants, header-name.ts),
 * hop-by-hop headers and the names Connection lists left out, repeats folded ({@link addFolded}), Portico's
 * Via appended when `via` is given. Sets `into.trailersExpected` when the body is chunked (only then can
 * it end with trailers); throws on a transfer coding other than chunked ({@link checkTransferCoding}).
 * One pass, no intermediate object of the received headers. Hot path.
 */
export function buildH2ResponseHeaders(pairs: string[], via: string | undefined, into: { trailersExpected: boolean }): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  const n = pairs.length;
  let listed: Set<string> | undefined;
  let prevVia: string | undefined;
  let chunked = false;
  for (let i = 0; i < n; i += 2) {
    const name = pairs[i] as string;
    const value = pairs[i + 1] as string;
    const kind = responseNameKind(name);
    if (kind === 0) {
      addFolded(out, lowerName(name), value);
    } else if (kind === CONNECTION) {
      listed = connectionTokens(value, listed);
    } else if (kind === TRANSFER_ENCODING) {
      checkTransferCoding(value);
      chunked = true;
    } else if (kind === VIA) {
      if (via === undefined) addFolded(out, 'via', value);
      else prevVia = prevVia === undefined ? value : `${prevVia}, ${value}`;
    }
  }
  // Names the Connection header lists (rare; it may come after them) are taken out afterwards.
  if (listed !== undefined) for (const name of listed) delete out[name];
  if (via !== undefined) out.via = appendVia(prevVia, via);
  into.trailersExpected = chunked;
  return out;
}

/** Pairs without the names a Connection header listed (lower-case in `listed`). Cold path. */
function withoutListed(pairs: string[], listed: ReadonlySet<string>): string[] {
  const out: string[] = [];
  for (let i = 0; i < pairs.length; i += 2) if (!listed.has((pairs[i] as string).toLowerCase())) out.push(pairs[i] as string, pairs[i + 1] as string);
  return out;
}

/** A Via value with Portico's hop ("1.1 portico", "2 portico") after the ones a message already had (RFC 9110 §7.6.3). */
export function appendVia(prev: string | undefined, via: string): string {
  return prev === undefined ? `${via} portico` : `${prev}, ${via} portico`;
}
