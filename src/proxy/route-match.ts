/**
 * A route's "match": conditions on the request's method, headers, query
 * parameters, cookies and client address (Traefik's Method/Header/Query rules, Caddy's
 * matchers, nginx's `if` on a variable), compiled once when the config loads.
 * Routes that share a path are tried in the config's order, those with a
 * match first (src/config/plan.ts, lookupRoute). Hot path, for routes that
 * have one: each condition is a Set lookup or a string comparison, the query
 * is parsed only when a condition names a parameter.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { BlockList } from 'node:net';
import { readCookie } from './sticky-cookie.js';
import { clientAddress, compileAddressList, isInList } from './client-address.js';

/** What a match reads of a request (HTTP/1.1, HTTP/2 and upgrades alike). */
export interface MatchInput {
  readonly method: string;
  readonly headers: IncomingHttpHeaders;
  /** The connection's peer (or the client a PROXY protocol header named). */
  readonly remoteAddress: string;
}

/** A condition's value as written in the config: one pattern or a list of them (any matches). */
export type MatchValue = string | readonly string[];

/** A route's "match" as validated by the config schema. */
export interface MatchConfig {
  readonly methods?: readonly string[] | undefined;
  readonly headers?: Readonly<Record<string, MatchValue>> | undefined;
  readonly query?: Readonly<Record<string, MatchValue>> | undefined;
  readonly cookies?: Readonly<Record<string, MatchValue>> | undefined;
  readonly clientAddresses?: readonly string[] | undefined;
}

/** One compiled pattern: "*" any value (present), "a*" a prefix, "*a" a suffix, "*a*" a substring, else the exact value. */
type Test = (value: string) => boolean;

function present(): boolean {
  return true;
}

function compilePattern(p: string): Test {
  if (p === '*') return present;
  const starts = p.startsWith('*');
  const ends = p.length > 1 && p.endsWith('*');
  if (starts && ends) {
    const inner = p.slice(1, -1);
    return (v) => v.includes(inner);
  }
  if (starts) {
    const tail = p.slice(1);
    return (v) => v.endsWith(tail);
  }
  if (ends) {
    const head = p.slice(0, -1);
    return (v) => v.startsWith(head);
  }
  return (v) => v === p;
}

/** A value's patterns as one test: any of them. */
function compileValue(value: MatchValue): Test {
  const tests = (typeof value === 'string' ? [value] : value).map(compilePattern);
  return tests.length === 1 ? tests[0]! : (v) => tests.some((t) => t(v));
}

function anyValue(values: readonly string[], test: Test): boolean {
  for (const v of values) if (test(v)) return true;
  return false;
}

interface Named {
  readonly name: string;
  readonly test: Test;
  /** `kind.name=value`, for the label. */
  readonly shown: string;
}

function compileNamed(kind: string, map: Readonly<Record<string, MatchValue>> | undefined, lower: boolean): Named[] {
  if (map === undefined) return [];
  return Object.entries(map).map(([raw, value]) => {
    const name = lower ? raw.toLowerCase() : raw;
    return { name, test: compileValue(value), shown: `${kind}.${name}=${typeof value === 'string' ? value : value.join('|')}` };
  });
}


export class RouteMatch {
  /** A short description for logs, metrics and the admin API, such as "method=POST header.x-canary=1". */
  readonly label: string;
  readonly #methods: ReadonlySet<string> | undefined;
  readonly #headers: readonly Named[];
  readonly #query: readonly Named[];
  readonly #cookies: readonly Named[];
  readonly #clients: BlockList | undefined;
  readonly #trusted: BlockList | undefined;

  /** `trusted`: forwarding.trustedProxies, behind which the client address comes from X-Forwarded-For. */
  constructor(m: MatchConfig, trusted: BlockList | undefined) {
    this.#clients = compileAddressList(m.clientAddresses);
    this.#trusted = trusted;
    this.#methods = m.methods === undefined ? undefined : new Set(m.methods);
    this.#headers = compileNamed('header', m.headers, true);
    this.#query = compileNamed('query', m.query, false);
    this.#cookies = compileNamed('cookie', m.cookies, false);
    this.label = [
      ...(m.methods === undefined ? [] : [`method=${m.methods.join('|')}`]),
      ...[...this.#headers, ...this.#query, ...this.#cookies].map((n) => n.shown),
      ...(m.clientAddresses === undefined ? [] : [`client=${m.clientAddresses.join('|')}`]),
    ].join(' ');
  }

  /** Whether the request meets every condition. `url` is the normalised path with its query. */
  test(req: MatchInput, url: string): boolean {
    if (this.#methods !== undefined && !this.#methods.has(req.method)) return false;
    const headers = req.headers;
    for (const h of this.#headers) {
      // Only a string or a list is the request's: a name Object.prototype has (`constructor`) reads its member
      // on an HTTP/1.1 request without that header.
      const v = headers[h.name];
      if (typeof v === 'string' ? !h.test(v) : !Array.isArray(v) || !h.test(v.join(', '))) return false;
    }
    if (this.#query.length > 0) {
      const at = url.indexOf('?');
      // Form-decoded, as applications read them ("a+b" and "a%20b" are both "a b").
      const params = new URLSearchParams(at === -1 ? '' : url.slice(at + 1));
      for (const q of this.#query) if (!anyValue(params.getAll(q.name), q.test)) return false;
    }
    for (const c of this.#cookies) {
      const v = readCookie(headers.cookie, c.name);
      if (v === undefined || !c.test(v)) return false;
    }
    if (this.#clients !== undefined && !isInList(this.#clients, clientAddress(req.remoteAddress, req, this.#trusted))) return false;
    return true;
  }
}
