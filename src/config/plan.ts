/**
 * The Plan: a config compiled into lookups for the request path. Immutable
 * once published (except round-robin counters); replaced whole on reload, and
 * an in-flight request keeps the Plan it started with.
 */
import type { LogFilePaths } from '../log/log-files.js';
import type { BlockList } from 'node:net';
import type { Target } from '../upstream/target.js';
import type { RequestStats } from '../proxy/request-stats.js';
import type { StreamPlan } from '../stream/stream-plan.js';
import type { CompiledHeaderRules } from '../proxy/header-rules.js';
import type { AnswerPlan } from '../proxy/route-answer.js';
import type { BasicAuth } from '../proxy/basic-auth.js';
import type { CompressPlan } from '../proxy/compress.js';
import type { RateLimiter } from '../proxy/rate-limit.js';
import type { ErrorPage } from '../proxy/error-pages.js';
import type { FilesPlan } from '../files/files-plan.js';
import type { MatchInput, RouteMatch } from '../proxy/route-match.js';
import type { Exchange } from '../proxy/exchange.js';
import type { ForwardAuthPlan } from '../proxy/forward-auth.js';
import type { CachePlan } from '../cache/cache-plan.js';

/** Per-target weights and backup flags (same index as the upstream's `targets`). */
export interface WeightedTargets {
  readonly weights: readonly number[];
  readonly backup: readonly boolean[];
  /** Smooth weighted round-robin state (nginx's): each target's running credit. Mutable, like `next`. */
  readonly credit: number[];
}

/** Where a route sends requests. */
export interface UpstreamPlan {
  readonly targets: readonly Target[];
  /** Round-robin cursor; with the weighted credits, the only mutable fields of a Plan (in-flight counts live on the Targets). */
  next: number;
  readonly policy: 'round-robin' | 'least-connections' | 'client-ip' | 'cookie';
  /** "cookie": the cookie's name, each target's value (same index as `targets`) and the index by value. */
  readonly sticky: { readonly cookie: string; readonly values: readonly string[]; readonly byValue: ReadonlyMap<string, number> } | undefined;
  /** Weights and backups, when any target has a weight other than 1 or is a backup; undefined keeps the plain policies. */
  readonly weighted: WeightedTargets | undefined;
  /** "preserve", "target", or a literal Host value. */
  readonly hostHeader: string;
  readonly connectTimeoutMs: number;
  readonly responseTimeoutMs: number;
  /** "tunnelIdleTimeout": an upgraded connection with no bytes either way for this long is closed; 0 for never. */
  readonly tunnelIdleTimeoutMs: number;
  /** "maxRequests": requests in flight per target (Target.limitedInFlight) at most; 0 for no limit. */
  readonly maxRequests: number;
  /** "queueTimeout" in ms: how long a request waits in `queue` for a target below its limit; 0 for no queue. */
  readonly queueTimeoutMs: number;
  /** "requestBuffer" in bytes: a request body is read up to this much before it is sent (src/proxy/request-buffer.ts); 0 for off. */
  readonly requestBufferBytes: number;
  /** Requests waiting for a target below its limit, oldest first (src/proxy/upstream-limit.ts). Mutable, like `next`. */
  readonly queue: Exchange[];
}

/** One route of a host. */
export interface RoutePlan {
  /** `host path` for logs, e.g. `localhost /users`. */
  readonly id: string;
  readonly path: string;
  /** Length of the path to strip, or 0. */
  readonly stripLength: number;
  /** Prefix to add, or "". */
  readonly addPrefix: string;
  /** "rewrite": the path's pattern and its replacement, or undefined. */
  readonly rewrite: { readonly pattern: RegExp; readonly to: string } | undefined;
  /** Where it forwards, or undefined for a route that answers itself ("redirect", "respond", "files"). */
  readonly upstream: UpstreamPlan | undefined;
  /** Its own answer ("redirect" or "respond"), or undefined for a route that forwards or serves files. */
  readonly answer: AnswerPlan | undefined;
  /** The directory it serves ("files"), or undefined. */
  readonly files: FilesPlan | undefined;
  /** Its request counters (admin API metrics), the same object across reloads. */
  readonly stats: RequestStats;
  /** Client addresses it serves (its own "allowFrom", else its host's), or undefined for everyone. */
  readonly allow: BlockList | undefined;
  /** Client addresses it refuses (its host's "denyFrom" and its own), or undefined for none. */
  readonly deny: BlockList | undefined;
  /** Its response compression ("compress", its own or its host's), or undefined for none. */
  readonly compress: CompressPlan | undefined;
  /** Its response cache ("cache", its own or its host's), or undefined for none. */
  readonly cache: CachePlan | undefined;
  /** Its request rate limit per client ("rateLimit", its own or its host's, shared by the routes that use it), or undefined. */
  readonly limit: RateLimiter | undefined;
  /** Its login ("basicAuth", its own or its host's), or undefined for none. */
  readonly auth: BasicAuth | undefined;
  /** Configured header changes (its host's and its own), or undefined for none. */
  readonly headerRules: CompiledHeaderRules | undefined;
  /** Largest request body in bytes (its own "maxBodySize", its host's, or limits.maxBodySize); 0 for no limit. */
  readonly maxBodyBytes: number;
  /** Its authentication service ("forwardAuth", its own or its host's), or undefined for none. */
  readonly forwardAuth: ForwardAuthPlan | undefined;
  /**
   * "interceptErrors": its host's pages by status (400–599), sent in place of an upstream's error response
   * with a page; undefined when upstream responses pass on as they are (the one field the request path reads).
   */
  readonly upstreamErrorPages: ReadonlyMap<number, ErrorPage> | undefined;
  /** "earlyHints" (its own or its host's): an upstream's 103 Early Hints are passed on to the client. */
  readonly earlyHints: boolean;
  /** Its "match" conditions, or undefined for a route that serves every request under its path. */
  readonly match: RouteMatch | undefined;
  /** The next route with the same path, tried when this one's match fails (matched routes in config order, then the plain one). */
  readonly orElse: RoutePlan | undefined;
}

/** One site. */
export interface HostPlan {
  readonly name: string;
  readonly names: readonly string[];
  /** Id of its certificate in the CertStore. */
  readonly certId: string;
  readonly acme: boolean;
  /** Whether connectionSharing is "same-certificate". */
  readonly sharing: boolean;
  /** Whether plainHttp is "serve": the plain HTTP listener proxies this host instead of redirecting. */
  readonly servePlain: boolean;
  /** Routes by exact path prefix (no trailing slash except "/"). */
  readonly routes: ReadonlyMap<string, RoutePlan>;
  /** Its own pages for the errors Portico answers, by status; undefined for none. */
  readonly errorPages: ReadonlyMap<number, ErrorPage> | undefined;
  /** Other names served on a connection made for this host (ORIGIN frame). */
  readonly sharedNames: readonly string[];
  /** Client certificates this host asks for (mutual TLS); undefined for none. */
  readonly clientAuth: ClientAuthPlan | undefined;
}

/** A host's client certificate check (hosts.*.clientAuth), compiled. */
export interface ClientAuthPlan {
  /** The CA certificates (PEM) that client certificates must chain to. */
  readonly caPem: Buffer;
  /** "require": no certificate, no connection; otherwise ("optional") one is asked for, and checked if sent. */
  readonly required: boolean;
  /**
   * TLS session id context (32 hex digits) of the host's connections: a hash of its name, its CAs and the mode,
   * so a session from another host, or from before the CAs changed, never resumes without a certificate check.
   */
  readonly sessionContext: string;
}

/** Compiled limits in ms and bytes. */
export interface LimitsPlan {
  readonly headersTimeoutMs: number;
  readonly requestTimeoutMs: number;
  /** limits.bodyTimeout: longest silence while a request body is read; 0 for none. */
  readonly bodyTimeoutMs: number;
  readonly keepAliveTimeoutMs: number;
  readonly sendTimeoutMs: number;
  readonly maxHeaderBytes: number;
  /** HTTP/2: SETTINGS_MAX_CONCURRENT_STREAMS. */
  readonly maxConcurrentStreams: number;
  readonly shutdownTimeoutMs: number;
  /** Client connections per listening socket per process. */
  readonly maxConnections: number;
  /** Bytes each process's response cache may hold (limits.cacheSize). */
  readonly cacheBytes: number;
}

/** The compiled configuration. */
export interface Plan {
  readonly generation: number;
  readonly exact: ReadonlyMap<string, HostPlan>;
  /** Wildcard hosts by the suffix after "*." */
  readonly wildcard: ReadonlyMap<string, HostPlan>;
  readonly hosts: readonly HostPlan[];
  readonly defaultHost: HostPlan | undefined;
  /**
   * The name "defaultHost" gives (an alias, say), as written: the name of the connections it serves (clients
   * without SNI or with an unknown one), which requests on them must name. Not `defaultHost.name`, the host's key.
   */
  readonly defaultName: string | undefined;
  readonly httpsPort: number;
  /** ":8443", or "" for 443: appended to redirect and origin URLs. */
  readonly httpsPortSuffix: string;
  readonly limits: LimitsPlan;
  /** Peers whose forwarding headers are trusted, or undefined for none. */
  readonly trustedProxies: BlockList | undefined;
  readonly sendForwarded: boolean;
  readonly sendVia: boolean;
  /** listen.https.websocketsOverHttp2: HTTP/2 clients may open WebSockets with extended CONNECT (read when the listener opens). */
  readonly websocketsOverHttp2: boolean;
  /** listen.https.ocspStapling: fetch and staple OCSP responses (src/tls/ocsp-stapler.ts); a reload applies it. */
  readonly ocspStapling: boolean;
  /** forwarding.requestId: every request gets an X-Request-ID. */
  readonly requestId: boolean;
  readonly accessLog: boolean;
  /** log.accessHeaders, in lower case: request headers written in the access line. */
  readonly accessHeaders: readonly string[];
  /** log.file and log.accessFile as absolute paths (undefined: standard output; access lines with the others). */
  readonly logFiles: LogFilePaths;
  readonly certsDir: string;
  readonly baseDir: string;
  /** Counters of requests no route took (bad host, unknown host, no route). */
  readonly unroutedStats: RequestStats;
  /** TCP and TLS passthrough ports, by port. */
  readonly streams: ReadonlyMap<number, StreamPlan>;
  /** SHA-256 of the admin API token, when `admin` is configured. */
  readonly adminTokenDigest: Buffer | undefined;
}

/**
 * Finds the host serving `name`: exact first, then the wildcard for its parent
 * domain. A wildcard stands for exactly one label (RFC 6125 §6.4.3), as in the
 * certificate it is served with: "*.example.com" serves "a.example.com", never
 * "a.b.example.com". Hot path.
 */
export function lookupHost(plan: Plan, name: string): HostPlan | undefined {
  const exact = plan.exact.get(name);
  if (exact !== undefined) return exact;
  if (plan.wildcard.size === 0) return undefined;
  const dot = name.indexOf('.');
  return dot <= 0 ? undefined : plan.wildcard.get(name.slice(dot + 1));
}

/** A route path as the Plan keys it: no trailing slash but for "/" itself. */
export function normalizeRoutePath(p: string): string {
  return p.length > 1 && p.endsWith('/') ? p.replace(/\/+$/, '') || '/' : p;
}

/**
 * Finds the route for a path by longest whole-segment prefix; of the routes with one path, the first whose
 * "match" the request meets (a prefix where none does is passed over for shorter ones). A segment's path
 * parameters (";jsessionid=…", RFC 3986 §3.3) take no part in the match: Tomcat and Spring drop them, so
 * "/admin;x" is their "/admin" and must meet the "/admin" route's allowFrom or basicAuth here too. Hot path:
 * one Map lookup per segment, and the match conditions of routes that have them.
 */
export function lookupRoute(host: HostPlan, path: string, req: MatchInput): RoutePlan | undefined {
  const routes = host.routes;
  let end = path.length;
  const q = path.indexOf('?');
  if (q !== -1) end = q;
  let candidate = end === path.length ? path : path.slice(0, end);
  if (candidate.includes(';')) candidate = candidate.replace(PATH_PARAMETERS, '');
  for (;;) {
    for (let r = routes.get(candidate); r !== undefined; r = r.orElse) {
      if (r.match === undefined || r.match.test(req, path)) return r;
    }
    if (candidate === '/') return undefined;
    const slash = candidate.lastIndexOf('/');
    candidate = slash <= 0 ? '/' : candidate.slice(0, slash);
  }
}

/**
 * The path sent upstream for `url` on `route`: stripPrefix, then addPrefix, then rewrite,
 * query kept. "/" and "/?q" keep no slash of their own after the prefix
 * ("/v1" and "/v1?q", not "/v1/?q"). Shared by requests and upgrades. Hot path.
 */
export function rewritePath(route: RoutePlan, url: string): string {
  let path = url;
  if (route.stripLength > 0) {
    // A stripped segment's path parameters (lookupRoute) go with it: "/api;v=1/x" less "/api" is "/x".
    const semi = url.indexOf(';');
    path = semi !== -1 && semi <= route.stripLength ? stripWithParameters(route.stripLength, url) : url.slice(route.stripLength);
    if (path.charCodeAt(0) !== 47 /* '/' */) path = `/${path}`;
  }
  if (route.addPrefix !== '') path = path === '/' || path.charCodeAt(1) === 63 /* '?' */ ? route.addPrefix + path.slice(1) : route.addPrefix + path;
  return route.rewrite === undefined ? path : rewriteRegex(route.rewrite, path);
}

/** Segment path parameters: ";" up to the next "/" (lookupRoute matches without them). */
const PATH_PARAMETERS = /;[^/?]*/g;

/** `url` less its first segments up to `length` characters of their parameter-free form (see lookupRoute). */
function stripWithParameters(length: number, url: string): string {
  let kept = 0;
  let i = 0;
  while (i < url.length && kept < length) {
    if (url.charCodeAt(i) === 59 /* ';' */) {
      while (i < url.length && url.charCodeAt(i) !== 47 && url.charCodeAt(i) !== 63) i++;
      continue;
    }
    kept++;
    i++;
  }
  // The stripped segment's own parameters, right after it.
  if (url.charCodeAt(i) === 59) while (i < url.length && url.charCodeAt(i) !== 47 && url.charCodeAt(i) !== 63) i++;
  return url.slice(i);
}

/** "rewrite" on a path with its query: the pattern replaces in the path alone; the result always starts with "/". */
function rewriteRegex(rw: { readonly pattern: RegExp; readonly to: string }, path: string): string {
  const q = path.indexOf('?');
  const bare = q === -1 ? path : path.slice(0, q);
  let out = bare.replace(rw.pattern, rw.to);
  if (out === bare) return path;
  if (out.charCodeAt(0) !== 47 /* '/' */) out = `/${out}`;
  return q === -1 ? out : out + path.slice(q);
}
