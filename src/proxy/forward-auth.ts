/**
 * "forwardAuth" (Traefik's ForwardAuth, nginx's auth_request, Caddy's forward_auth): before a route
 * serves a request, Portico asks an authentication service (Authelia, Authentik, oauth2-proxy, an
 * app's own endpoint) with a GET that carries the request's headers and where it was going
 * (X-Forwarded-Method, -Proto, -Host, -Uri, -For). A 2xx lets the request through, with the headers
 * the service named (say Remote-User) copied into what goes upstream, replacing any the client sent;
 * any other answer (a 302 to a login page, a 401, a 403) goes back to the client as the service gave it.
 * An unreachable or slow service fails closed: 502 PORTICO_FORWARD_AUTH_FAILED.
 *
 * Compiled once per config (an Agent keeps connections to the service alive); requests on routes
 * without it pay one `undefined` check.
 */
import http, { type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import https from 'node:https';
import { UNTRUSTED_CLAIMS, underscoreSpellings } from './forward-headers.js';

/** Request headers never sent to the authentication service: hop-by-hop, framing, and what Portico sets itself. */
const NOT_SENT = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
  'content-length',
  'expect',
  'host',
  'x-forwarded-method',
  'x-forwarded-proto',
  'x-forwarded-host',
  'x-forwarded-uri',
  'x-forwarded-for',
  'forwarded',
]);

/**
 * What is not sent when the peer is not a trusted proxy: also the headers that would tell the service
 * about the client (X-Real-IP, X-Forwarded-Port, …), and the "_" spellings of the X-Forwarded-* Portico
 * sets here, which a CGI-style service reads as those.
 */
const NOT_SENT_UNTRUSTED: ReadonlySet<string> = new Set([
  ...NOT_SENT,
  ...UNTRUSTED_CLAIMS,
  ...['x-forwarded-method', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-uri', 'x-forwarded-for'].flatMap(underscoreSpellings),
]);

/** Headers of the service's answer not passed to the client: hop-by-hop and framing (Portico frames the body itself). */
const NOT_RETURNED = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'content-length']);

/** Largest answer body from the service passed to a client (a login page or a short message): more is an error. */
const MAX_ANSWER_BYTES = 1024 * 1024;

export interface ForwardAuthConfig {
  readonly url: string;
  readonly requestHeaders?: readonly string[] | undefined;
  readonly responseHeaders: readonly string[];
  readonly timeout: string;
}

export interface ForwardAuthPlan {
  readonly url: URL;
  /** Path and query of the service's URL, as requested. */
  readonly path: string;
  readonly agent: http.Agent;
  readonly secure: boolean;
  /** Request headers sent (lower case), or undefined for all but NOT_SENT. */
  readonly requestHeaders: readonly string[] | undefined;
  /** Headers copied from a 2xx answer into the upstream request (lower case); the client's copies are always removed. */
  readonly responseHeaders: readonly string[];
  /** What the client sent under a copied name is dropped: those names and their "_" spellings (forward-headers.ts). */
  readonly dropFromClient: readonly string[];
  readonly timeoutMs: number;
}

/** What the request tells the service about itself. */
export interface AuthRequestFacts {
  readonly method: string;
  readonly headers: IncomingHttpHeaders;
  /** The request's path and query after normalisation (what routing saw), so the service judges the path that is served. */
  readonly uri: string;
  /**
   * The request's Host (HTTP/2: `:authority`) as the client sent it, port included, as the upstream gets it in
   * X-Forwarded-Host: a service that builds the URL to come back to after its login page (Authelia, oauth2-proxy)
   * must not lose a port other than 443.
   */
  readonly host: string;
  readonly proto: 'http' | 'https';
  /** The client's address (behind a trusted proxy, the one its X-Forwarded-For names). */
  readonly client: string;
  /** Whether the peer is in forwarding.trustedProxies (its claims about the client pass to the service). */
  readonly trusted: boolean;
}

/** The service's verdict: through (with the headers to copy), an answer for the client, or a failure. */
export type AuthVerdict =
  | { readonly kind: 'allow'; readonly headers: readonly (readonly [string, string])[] }
  | { readonly kind: 'deny'; readonly status: number; readonly headers: OutgoingHttpHeaders; readonly body: Buffer }
  | { readonly kind: 'failed'; readonly detail: string };

export function compileForwardAuth(c: ForwardAuthConfig, timeoutMs: number): ForwardAuthPlan {
  const url = new URL(c.url);
  const secure = url.protocol === 'https:';
  const options = { keepAlive: true, keepAliveMsecs: 1000, maxFreeSockets: 16, timeout: timeoutMs };
  return {
    url,
    path: `${url.pathname}${url.search}`,
    agent: secure ? new https.Agent(options) : new http.Agent(options),
    secure,
    requestHeaders: c.requestHeaders?.map((h) => h.toLowerCase()),
    responseHeaders: c.responseHeaders.map((h) => h.toLowerCase()),
    dropFromClient: c.responseHeaders.flatMap((h) => [h.toLowerCase(), ...underscoreSpellings(h.toLowerCase())]),
    timeoutMs,
  };
}

/** The headers of the GET to the service. */
function authHeaders(fa: ForwardAuthPlan, f: AuthRequestFacts): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  const names = fa.requestHeaders ?? Object.keys(f.headers);
  const notSent = f.trusted ? NOT_SENT : NOT_SENT_UNTRUSTED;
  for (const name of names) {
    if (name.charCodeAt(0) === 58 /* ':' */ || notSent.has(name)) continue;
    // A configured name Object.prototype has (`constructor`) reads its member on a request without that header.
    const v = f.headers[name];
    if (typeof v === 'string' || Array.isArray(v)) out[name] = v;
  }
  out.host = fa.url.host;
  out['x-forwarded-method'] = f.method;
  // From a trusted proxy (a load balancer that terminated TLS), its X-Forwarded-Proto and -Host say where the
  // client was going, as the upstream gets them (buildRequestHeaders); otherwise Portico's own view.
  const proto = f.trusted ? listValue(f.headers['x-forwarded-proto']) : undefined;
  out['x-forwarded-proto'] = proto === undefined || proto === '' ? f.proto : proto;
  const host = f.trusted ? listValue(f.headers['x-forwarded-host']) : undefined;
  out['x-forwarded-host'] = host === undefined || host === '' ? f.host : host;
  out['x-forwarded-uri'] = f.uri;
  out['x-forwarded-for'] = f.client;
  return out;
}

function listValue(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v.join(', ') : v;
}

/** Asks the service about one request; `done` gets the verdict (once). */
export function askForwardAuth(fa: ForwardAuthPlan, f: AuthRequestFacts, done: (v: AuthVerdict) => void): http.ClientRequest {
  let settled = false;
  const settle = (v: AuthVerdict): void => {
    if (settled) return;
    settled = true;
    done(v);
  };
  const options = { host: fa.url.hostname.replace(/^\[|\]$/g, ''), port: fa.url.port, path: fa.path, method: 'GET', headers: authHeaders(fa, f), agent: fa.agent };
  const req = (fa.secure ? https : http).request(options, (res: IncomingMessage) => {
    const status = res.statusCode ?? 502;
    if (status >= 200 && status < 300) {
      res.resume();
      const copied: [string, string][] = [];
      for (const name of fa.responseHeaders) {
        // As for the request: `constructor` on an answer without it reads Object.prototype's member.
        const v = res.headers[name];
        if (typeof v === 'string') copied.push([name, v]);
        else if (Array.isArray(v)) copied.push([name, v.join(', ')]);
      }
      settle({ kind: 'allow', headers: copied });
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    res.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_ANSWER_BYTES) {
        res.destroy();
        settle({ kind: 'failed', detail: `${fa.url.href} answered ${status} with a body over ${MAX_ANSWER_BYTES} bytes` });
        return;
      }
      chunks.push(c);
    });
    res.on('end', () => {
      const headers: OutgoingHttpHeaders = {};
      for (const [name, v] of Object.entries(res.headers)) if (v !== undefined && !NOT_RETURNED.has(name)) headers[name] = v;
      const body = Buffer.concat(chunks);
      // Framed by its length, as the service's own answer was read whole.
      headers['content-length'] = body.length;
      settle({ kind: 'deny', status, headers, body });
    });
    res.on('error', (err: NodeJS.ErrnoException) => settle({ kind: 'failed', detail: `${fa.url.href}: ${err.code ?? err.message}` }));
  });
  req.setTimeout(fa.timeoutMs, () => req.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
  req.on('error', (err: NodeJS.ErrnoException) => settle({ kind: 'failed', detail: `${fa.url.href}: ${err.code ?? err.message}` }));
  req.end();
  return req;
}

/** Headers that name the user, as the common services send them (Authelia, oauth2-proxy, Authentik): the access line's `user`. */
const USER_HEADERS: ReadonlySet<string> = new Set(['remote-user', 'x-forwarded-user', 'x-auth-request-user', 'x-authentik-username']);

/** The user a 2xx verdict names in one of its copied headers, if any. */
export function verdictUser(copied: readonly (readonly [string, string])[]): string | undefined {
  for (const [name, value] of copied) if (USER_HEADERS.has(name)) return value;
  return undefined;
}

/**
 * Puts a 2xx verdict's headers into the upstream request: the names it copies are the service's alone, never
 * the client's, in any spelling an upstream could take for them (`Remote_User` for `Remote-User`).
 */
export function applyAuthHeaders(headers: OutgoingHttpHeaders, fa: ForwardAuthPlan, copied: readonly (readonly [string, string])[]): void {
  for (const name of fa.dropFromClient) delete headers[name];
  for (const [name, value] of copied) headers[name] = value;
}
