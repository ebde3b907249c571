/**
 * `GET /config`: the config a process serves, as it runs it: after `${ENV}` substitution and with every
 * default filled in (as Caddy's `GET /config/` shows its own), so an operator can see what a setting
 * came to. Secrets are replaced by "(redacted)": basicAuth password hashes, the ACME EAB HMAC key,
 * the values of credential headers in header rules and route matches (an upstream's
 * `"Authorization": "Bearer ${API_TOKEN}"` would otherwise show the token from the environment), every
 * value a route matches cookies against (a cookie a route is gated on, a preview token say, is a
 * credential whatever its name: RFC 6265 §4.2 cookies carry session state), and the arguments of the
 * ACME DNS-01 program (DNS providers' hooks take their API token there); the program itself is shown.
 */
import type { Config } from '../config/schema.js';

export const REDACTED = '(redacted)';

/**
 * Header names whose values are credentials: Authorization and Proxy-Authorization, Cookie and
 * Set-Cookie, and names that say so (X-Api-Key, X-Auth-Token, X-Client-Secret, X-Session-Id, …).
 */
const SECRET_HEADER_RE = /auth|token|secret|key|passw|credential|session|cookie|signature/i;

/** Whether a header's value is redacted in `GET /config`. */
export function isSecretHeaderName(name: string): boolean {
  return SECRET_HEADER_RE.test(name);
}

type BasicAuthLike = { readonly users: Readonly<Record<string, string>> } | false | undefined;
type Host = Config['hosts'][string];
type Route = Host['routes'][number];
type HeaderRules = Host['headers'];
type RuleSet = NonNullable<NonNullable<HeaderRules>['request']>;

function redactUsers<T extends BasicAuthLike>(auth: T): T {
  if (auth === undefined || auth === false) return auth;
  return { ...auth, users: Object.fromEntries(Object.keys(auth.users).map((u) => [u, REDACTED])) };
}

/** A record of header names to values, with the values of credential headers replaced. */
function redactHeaderValues<V>(values: Readonly<Record<string, V>>): Record<string, V | typeof REDACTED> {
  return Object.fromEntries(Object.entries(values).map(([name, v]) => [name, isSecretHeaderName(name) ? REDACTED : v]));
}

function redactRuleSet(r: RuleSet | undefined): RuleSet | undefined {
  return r === undefined ? undefined : { ...r, set: redactHeaderValues(r.set) };
}

function redactHeaderRules(h: HeaderRules): HeaderRules {
  return h === undefined ? undefined : { ...h, request: redactRuleSet(h.request), response: redactRuleSet(h.response) };
}

type RouteMatch = NonNullable<Route['match']>;
type CookieValues = NonNullable<RouteMatch['cookies']>;

/** Cookie names to the values a route matches, each value (or each of a list) replaced: the names and the shape stay. */
function redactCookieValues(cookies: CookieValues): CookieValues {
  return Object.fromEntries(Object.entries(cookies).map(([name, v]) => [name, typeof v === 'string' ? REDACTED : v.map(() => REDACTED)]));
}

function redactMatch(m: Route['match']): Route['match'] {
  if (m === undefined) return m;
  return {
    ...m,
    headers: m.headers === undefined ? undefined : redactHeaderValues(m.headers),
    cookies: m.cookies === undefined ? undefined : redactCookieValues(m.cookies),
  };
}

function redactRoute(r: Route): Route {
  const match = redactMatch(r.match);
  return { ...r, basicAuth: redactUsers(r.basicAuth), headers: redactHeaderRules(r.headers), match };
}

type Dns01 = NonNullable<Config['acme']>['dns01'];

/** The DNS-01 program with its arguments replaced (`["/usr/local/bin/lexicon-hook", "--token", "…"]` shows the program only). */
function redactDns01(d: Dns01): Dns01 {
  if (d === undefined) return d;
  const [program, ...args] = d.command;
  return { ...d, command: program === undefined ? d.command : [program, ...args.map(() => REDACTED)] };
}

/** A copy of `config` with its secrets replaced. */
export function redactConfig(config: Config): Config {
  const hosts: Config['hosts'] = {};
  for (const [name, host] of Object.entries(config.hosts)) {
    hosts[name] = { ...host, basicAuth: redactUsers(host.basicAuth), headers: redactHeaderRules(host.headers), routes: host.routes.map(redactRoute) };
  }
  const acme = config.acme === undefined ? undefined : { ...config.acme, eab: config.acme.eab === undefined ? undefined : { ...config.acme.eab, hmacKey: REDACTED }, dns01: redactDns01(config.acme.dns01) };
  return { ...config, hosts, acme };
}
