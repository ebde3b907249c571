/**
 * The configuration schema: the single source of truth for what `portico.json`
 * may contain. Each field's description is the documentation (README's config
 * reference and `config/portico.schema.json` are generated from it).
 *
 * Unknown keys are errors everywhere: a typo must never be silently ignored.
 */
import { z } from 'zod';
import { isIP } from 'node:net';
import { parseDurationMs, parseSizeBytes } from './units.js';
import { checkTargetUrl } from './target-url.js';
import { hashProblem } from '../proxy/basic-auth.js';
import { DEFAULT_IPV6_PREFIX } from '../proxy/rate-limit.js';

const DURATION_RE = /^\d+(\.\d+)?(ms|s|m|h|d)$/;
const SIZE_RE = /^\d+(\.\d+)?(b|kb|mb|gb)$/i;

/** A duration such as `"500ms"`, `"30s"`, `"5m"`, `"1h"`, `"90d"`. */
export const Duration = z
  .string()
  .regex(DURATION_RE, { message: 'expected a duration such as "500ms", "30s", "5m", "1h" or "90d"' });

/** A size such as `"16kb"`, `"10mb"`, `"1gb"` (powers of 1024). */
export const Size = z.string().regex(SIZE_RE, { message: 'expected a size such as "16kb", "10mb" or "1gb"' });

const HOST_NAME_RE = /^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;

/** A DNS host name, lower case, optionally a `*.` wildcard for exactly one label. */
export const HostName = z
  .string()
  .refine((s) => HOST_NAME_RE.test(s) && s.length <= 253, {
    message: 'expected a lower-case DNS name such as "app.example.com" or "*.example.com"',
  });

/** An upstream target URL: `http://` (HTTP/1.1), `https://` (TLS; h2 or HTTP/1.1 by ALPN), `h2c://` (cleartext HTTP/2), `unix:/path` (HTTP/1.1 on a Unix socket). */
export const TargetUrl = z.string().superRefine((s, ctx) => {
  const c = checkTargetUrl(s);
  if (c.ok) return;
  const got = JSON.stringify(s);
  const message = {
    unix: `expected a Unix socket target such as "unix:/run/app.sock" (an absolute path), got ${got}`,
    'not-a-url': `expected a URL such as "http://127.0.0.1:3000", got ${got}`,
    scheme: `expected a URL with scheme http://, https:// or h2c://, or a Unix socket "unix:/path.sock", got ${got}`,
    'more-than-a-server': `an upstream URL names a server only (scheme, host, port), got ${got}; use the route's "stripPrefix"/"addPrefix" to change paths`,
  }[c.problem];
  ctx.addIssue({ code: 'custom', message });
});

const Cidr = z.string().superRefine((s, ctx) => {
  const [addr, bits, extra] = s.split('/');
  const family = addr === undefined ? 0 : isIP(addr);
  const max = family === 6 ? 128 : 32;
  const n = bits === undefined ? max : Number(bits);
  if (family === 0 || extra !== undefined || !Number.isInteger(n) || n < 0 || n > max) {
    ctx.addIssue({ code: 'custom', message: `expected an IP address or CIDR such as "10.0.0.0/8" or "::1", got ${JSON.stringify(s)}` });
  }
});

const IpAddress = z.string().refine((s) => isIP(s) !== 0, { message: 'expected an IP address such as "0.0.0.0", "::" or "127.0.0.1"' });

const Port = z.number().int().min(1).max(65535);

const Listener = z
  .strictObject({
    port: Port.describe('TCP port to listen on.'),
    addresses: z
      .array(IpAddress)
      .min(1)
      .default(['0.0.0.0', '::'])
      .describe('Addresses to bind. IPv6 addresses are bound IPv6-only, so "0.0.0.0" and "::" can be listed together. An unavailable IPv6 stack is logged and skipped.'),
    proxyProtocol: z
      .boolean()
      .default(false)
      .describe(
        'Every connection starts with a PROXY protocol header (HAProxy\'s, v1 or v2: AWS NLB, HAProxy "send-proxy", and other TCP load balancers send it), whose client address then stands for the connection\'s peer (X-Forwarded-For, allowFrom, rateLimit, client-ip, the access log). Connections without a valid header within 10 s are closed. Hazard: anyone who can reach the port can claim any address; turn it on only for a port that only the load balancer reaches.',
      ),
  })
  .describe('One listening port and the addresses it binds.');

const HttpsListener = Listener.extend({
  websocketsOverHttp2: z
    .boolean()
    .default(true)
    .describe(
      'Announce SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441), so that HTTP/2 clients (Firefox, Chrome) open WebSockets on the HTTP/2 connection they have, as Caddy and HAProxy let them. false: they open an HTTP/1.1 connection for each WebSocket instead, and an extended CONNECT gets 405 (HAProxy\'s h2-workaround-bogus-websocket-clients, for clients whose WebSockets over HTTP/2 misbehave). Takes effect after a restart, as other listener settings.',
    ),
  ocspStapling: z
    .boolean()
    .default(true)
    .describe(
      'Staple OCSP responses (RFC 6066 §8), as Caddy does by default and nginx with ssl_stapling on: for every certificate whose leaf names an OCSP responder (Authority Information Access) and whose file holds its issuer, Portico POSTs an OCSP request to the responder in the background (10 s timeout), checks the answer (this certificate, signed by the issuer or a responder it delegated to, within thisUpdate/nextUpdate), and sends it in the handshakes of clients that ask (status_request), so they need not ask the CA themselves. Refreshed at half its validity, retried with backoff (1 min doubling to 1 h, each delay ±25 % at random, as every worker fetches for itself) when that fails; the last good response is stapled until its nextUpdate. A certificate reported "revoked" is logged as an error and gets no staple; a responder that cannot be reached is logged as a warning; either way the site is served. Certificates without a responder URL (Let\'s Encrypt\'s since 2025) get none; one that names a responder but whose file lacks its issuer cannot be stapled, which is warned of at load and by portico check. The admin API shows each certificate\'s stapling state (/status "ocsp", /metrics portico_certificate_ocsp_stapled). With "workers", each worker fetches for itself. false: nothing is fetched or stapled. Unlike the other listener settings, a reload applies it.',
    ),
}).describe('The HTTPS listener: a port, the addresses it binds, and its HTTP/2 options.');

const UpstreamTls = z
  .strictObject({
    ca: z.string().optional().describe('PEM file (relative to the certs directory) with the CA that signs the upstream certificate. Default: the system trust store.'),
    servername: HostName.optional().describe('TLS server name (SNI) sent to the upstream and verified against its certificate. Default: the target URL host.'),
    insecureSkipVerify: z
      .boolean()
      .default(false)
      .describe('Do not verify the upstream certificate. Hazard: anyone on the path can impersonate the upstream. For testing only.'),
    cert: z.string().min(1).optional().describe('Client certificate chain PEM file (relative to the certs directory) that Portico presents to upstreams asking for one (mutual TLS; nginx\'s proxy_ssl_certificate). Needs "key".'),
    key: z.string().min(1).optional().describe('Private key PEM file of "cert" (relative to the certs directory).'),
  })
  .refine((t) => (t.cert === undefined) === (t.key === undefined), { message: 'a client certificate needs both "cert" and "key"; set both, or neither', path: ['cert'] })
  .describe('TLS settings for https:// upstream targets.');

/** The largest "requestBuffer": every request with a body may hold this much memory while it is read. */
const MAX_REQUEST_BUFFER_BYTES = 64 * 1024 * 1024;

/** Bytes of a size, NaN when it is not one (refinements run even after the format check failed). */
function sizeBytes(s: string): number {
  try {
    return parseSizeBytes(s);
  } catch {
    return Number.NaN;
  }
}

/**
 * The longest wait a Node timer takes: setTimeout past 2^31-1 ms (24.8 days) fires after 1 ms instead (a healthCheck
 * interval of "30d" would check every millisecond, a queueTimeout of "30d" give up at once), and a socket's timeout
 * is cut to 24.8 days with a warning per socket. nginx refuses such times too.
 */
const MAX_TIMER_MS = 24 * 86_400_000;

/** A duration that sets a timer: at most "24d" (MAX_TIMER_MS). */
const TimerDuration = Duration.refine((s) => !(durationMs(s) > MAX_TIMER_MS), {
  message: 'expected a duration of at most "24d" (Node cannot wait longer on a timer)',
});

/** "0s" (none), or a duration from 1s to 24d: an idle timeout under a second would cut a tunnel between any two messages. */
const TunnelIdleTimeout = Duration.refine((s) => {
  const ms = durationMs(s);
  return Number.isNaN(ms) || ms === 0 || (ms >= 1000 && ms <= MAX_TIMER_MS);
}, { message: 'expected "0s" (no idle timeout) or a duration from "1s" to "24d", such as "1h"' });

/** A duration of at least `minMs`, as the message says. */
function durationAtLeast(minMs: number, min: string) {
  return TimerDuration.refine((s) => !(durationMs(s) < minMs), { message: `expected a duration of at least ${min}` });
}

/** Milliseconds of a duration, NaN when it is not one (refinements run even after the format check failed). */
function durationMs(s: string): number {
  try {
    return parseDurationMs(s);
  } catch {
    return Number.NaN;
  }
}

const HealthCheck = z
  .strictObject({
    path: z
      .string()
      .startsWith('/', { message: 'a health check path must start with "/", such as "/healthz"' })
      .describe('Path each target is asked for (GET) to check its health, such as "/healthz". The query string may be included.'),
    interval: durationAtLeast(100, '100ms').default('10s').describe('Time between two checks of one target. The first check runs when the config is loaded.'),
    timeout: durationAtLeast(10, '10ms').default('2s').describe('Time a check may take (connection, TLS and response head); longer counts as a failed check. Must not exceed "interval".'),
    expectStatus: z
      .number()
      .int()
      .min(100)
      .max(599)
      .optional()
      .describe('The status a healthy target answers. Default: any 2xx or 3xx.'),
    host: z
      .string()
      .regex(/^[A-Za-z0-9.:[\]_-]+$/, { message: 'expected a host name, optionally with ":port", such as "app.internal" or "app.internal:8080"' })
      .optional()
      .describe('Host header of the check. Default: the target URL\'s host:port.'),
    unhealthyAfter: z.number().int().min(1).max(100).default(2).describe('Consecutive failed checks after which a healthy target is taken out of rotation (HAProxy\'s "fall").'),
    healthyAfter: z.number().int().min(1).max(100).default(2).describe('Consecutive passed checks after which an unhealthy target is put back (HAProxy\'s "rise").'),
  })
  .refine((h) => !(durationMs(h.timeout) > durationMs(h.interval)), {
    message: 'the health check "timeout" must not exceed its "interval"',
    path: ['timeout'],
  })
  .describe(
    'Active health checks: every target of this upstream is asked for "path" every "interval", over a connection of its own, with its protocol and TLS settings. A target that fails "unhealthyAfter" checks in a row gets no requests until it passes "healthyAfter" in a row. When no target of a route is healthy, requests get 503 (PORTICO_NO_HEALTHY_UPSTREAM). Each worker process checks on its own.',
  );

const PassiveHealth = z
  .strictObject({
    maxFails: z.number().int().min(1).max(1000).default(1).describe('Failures within "failTimeout" that take a target out of rotation.'),
    failTimeout: durationAtLeast(100, '100ms').default('10s').describe('The window in which failures are counted, and how long a target then stays out (nginx\'s fail_timeout).'),
  })
  .describe(
    'Passive health: a target whose connection is refused or unreachable, or that times out (connect or response), "maxFails" times within "failTimeout" gets no requests for "failTimeout"; then it is tried again. Only used when the upstream has two or more targets: a lone target is never taken out this way, as in nginx.',
  );

const TargetObject = z
  .strictObject({
    url: TargetUrl.describe('The target, as in a plain list.'),
    weight: z.number().int().min(1).max(1000).default(1).describe('Its share of requests relative to the others (nginx\'s weight=): 3 gets three requests for every one of a target with 1. Every policy honours it.'),
    backup: z.boolean().default(false).describe('Used only while no other (non-backup) target is available, as nginx\'s backup and HAProxy\'s backup servers: a standby, or a maintenance page.'),
  })
  .describe('A target with a weight, or as a backup.');

const UpstreamObject = z.strictObject({
  targets: z
    .array(z.union([TargetUrl, TargetObject]))
    .min(1)
    .refine((ts) => ts.some((t) => typeof t === 'string' || !t.backup), { message: 'every target is a backup, so none would ever be used first; make at least one a regular target' })
    .describe(
      'One or more targets: URLs, or {"url", "weight", "backup"}. Requests are spread over the healthy ones by "loadBalancing" (round-robin by default, weighted when weights differ). A request without a body whose target refuses the connection, or an idempotent one whose target fails or times out before answering, is sent to the next target (once per target; regular targets before backups).',
    ),
  hostHeader: z
    .string()
    .default('preserve')
    .describe('"preserve" sends the client\'s Host (default), "target" sends the target URL\'s host:port ("localhost" for a Unix socket), any other value is sent as is.'),
  protocol: z
    .enum(['auto', 'http1', 'h2'])
    .default('auto')
    .describe('For https:// targets: "auto" negotiates h2 or HTTP/1.1 by ALPN, "http1" and "h2" force one. http:// and unix:/path are always HTTP/1.1, h2c:// always HTTP/2.'),
  connectTimeout: TimerDuration.default('5s').describe('Time allowed to open a connection to a target; past it the client gets 504.'),
  responseTimeout: TimerDuration.default('60s').describe('Time allowed between sending the request and receiving response headers, and the longest silence while the response streams; past it the client gets 504 (or a reset, once the response has started).'),
  tunnelIdleTimeout: TunnelIdleTimeout.default('1h').describe(
    'A WebSocket (any upgraded connection) with no bytes in either direction for this long is closed on both sides, its access line saying "reason": "idle timeout" (HAProxy\'s timeout tunnel, nginx\'s proxy_read_timeout). Bytes either way count, WebSocket pings and pongs too, so an app that pings more often than this is never cut; the default, an hour, leaves room for apps that ping rarely or never (nginx\'s 60 s is known to cut those), and is what HAProxy setups commonly use. "0s": none (TCP keep-alive still finds vanished peers). From "1s" to "24d". A reload applies it to tunnels opened after it.',
  ),
  tls: UpstreamTls.optional(),
  loadBalancing: z
    .enum(['round-robin', 'least-connections', 'client-ip', 'cookie'])
    .default('round-robin')
    .describe(
      'How a request picks among the available targets: "round-robin" in turn; "least-connections" the one with the fewest requests in flight (counted per target over every route with this policy, and kept across reloads), an open WebSocket counting as one until it closes (ties in turn); "client-ip" by a hash of the client address, so one client keeps its target while the set of available targets is unchanged (nginx\'s ip_hash); "cookie" sticky sessions: the first response sets a cookie ("stickyCookie") naming its target, and later requests (WebSocket upgrades too) with that cookie go to the same target while it is available, round-robin otherwise.',
    ),
  stickyCookie: z
    .string()
    .regex(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/, { message: 'expected a cookie name (letters, digits and !#$%&\'*+-.^_`|~)' })
    .optional()
    .describe('With "loadBalancing": "cookie": the cookie\'s name (default "portico_upstream"). Its value names the target by a hash, never by its address; it is a session cookie (Path=/, HttpOnly, SameSite=Lax, and Secure over HTTPS).'),
  healthCheck: HealthCheck.optional(),
  passiveHealth: PassiveHealth.optional(),
  maxRequests: z
    .number()
    .int()
    .min(1)
    .max(1_000_000)
    .optional()
    .describe(
      'Requests in flight to each target at most (HAProxy\'s maxconn, nginx\'s max_conns, Caddy\'s max_requests): a target at its limit is passed over, and while every available target is, a request waits in this upstream\'s queue for a free one, at most "queueTimeout", then gets 503 (PORTICO_UPSTREAM_BUSY). Counted per target in each process, over every route whose upstream sets a limit. A WebSocket (any upgraded connection) holds a slot from its upgrade until its tunnel closes; an upgrade finding every target full gets 503 at once, without queueing. Default: no limit.',
    ),
  queueTimeout: TimerDuration.default('5s').describe('With "maxRequests": how long a request may wait for a free target before it gets 503 (HAProxy\'s timeout queue). "0s": no queue, 503 at once.'),
  requestBuffer: Size.refine((v) => {
    const n = sizeBytes(v);
    return Number.isNaN(n) || (n >= 1 && n <= MAX_REQUEST_BUFFER_BYTES);
  }, { message: 'expected a size from 1b to 64mb: each request with a body holds this much memory while it is read (leave it out to stream bodies)' }).optional().describe(
    'Read a request\'s body, up to this size, before a target is picked and the request is sent (nginx\'s proxy_request_buffering, HAProxy\'s http-buffer-request), so a slow upload holds no connection and no worker of the app until it has arrived: for app servers with few workers (gunicorn\'s sync workers, unicorn, PHP-FPM). A body that fits goes upstream in one piece with its Content-Length (a chunked one too), and a request with it may be sent to the next target like one without a body (if it is idempotent). A larger body is sent as the first part arrives past the limit, and streams on. Each request holds up to this much memory while it is read; limits.bodyTimeout bounds the client\'s pauses, and over HTTP/1.1 limits.requestTimeout the whole request. Default: off (bodies stream as they arrive).',
  ),
}).refine((u) => u.stickyCookie === undefined || u.loadBalancing === 'cookie', {
  message: '"stickyCookie" only names the cookie of "loadBalancing": "cookie"; set that, or remove "stickyCookie"',
  path: ['stickyCookie'],
});

/** An upstream: one target URL, a list of target URLs, or an object with options. */
export const Upstream = z.union([TargetUrl, z.array(TargetUrl).min(1), UpstreamObject]);

/** Headers no rule may touch: framing and connection headers (Portico writes those itself), Host (see "hostHeader"), pseudo-headers. */
const RESERVED_HEADERS = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'content-length', 'host']);
const TOKEN_RE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

const RuleHeaderName = z.string().superRefine((s, ctx) => {
  if (!TOKEN_RE.test(s)) ctx.addIssue({ code: 'custom', message: `expected a header name (letters, digits and !#$%&'*+-.^_\`|~), got ${JSON.stringify(s)}` });
  else if (RESERVED_HEADERS.has(s.toLowerCase())) {
    ctx.addIssue({ code: 'custom', message: `${JSON.stringify(s)} cannot be set or removed by a rule: Portico writes the framing and connection headers itself${s.toLowerCase() === 'host' ? '; use the upstream\'s "hostHeader"' : ''}` });
  }
});

const RuleHeaderValue = z.string().regex(/^[\t\x20-\x7e\x80-\xff]*$/, { message: 'a header value cannot hold control characters such as CR or LF' });

const HeaderRuleSet = z
  .strictObject({
    set: z
      .record(RuleHeaderName, RuleHeaderValue)
      .default({})
      .describe('Headers to set, replacing any the message already has: {"Name": "value"}.'),
    remove: z.array(RuleHeaderName).default([]).describe('Headers to remove (any case).'),
  })
  .superRefine((r, ctx) => {
    // Header names are case-insensitive: two "set" keys for one header would leave one of them unused.
    const seen = new Map<string, string>();
    for (const name of Object.keys(r.set)) {
      const prev = seen.get(name.toLowerCase());
      if (prev !== undefined) ctx.addIssue({ code: 'custom', path: ['set', name], message: `${JSON.stringify(name)} names the same header as ${JSON.stringify(prev)} (header names ignore case); keep one` });
      else seen.set(name.toLowerCase(), name);
    }
  })
  .describe('Header changes to one direction: removals first, then "set".');

const HeaderRules = z
  .strictObject({
    request: HeaderRuleSet.optional().describe('Changes to requests on their way to the upstream (after Portico\'s own X-Forwarded-* and hop-by-hop rules).'),
    response: HeaderRuleSet.optional().describe('Changes to responses on their way to the client: proxied ones and a route\'s "redirect" and "respond" answers (not the errors Portico answers itself, such as 404 or 502).'),
  })
  .describe('Header rules (nginx\'s proxy_set_header and add_header, Caddy\'s header_up and header_down). A host\'s rules apply to all its routes; a route\'s rules add to them, a route\'s "set" winning for the same name.');

const BasicAuthObject = z
  .strictObject({
    realm: z
      .string()
      .regex(/^[\x20\x21\x23-\x5b\x5d-\x7e]+$/, { message: 'expected printable characters without quotes or backslashes' })
      .default('restricted')
      .describe('The realm the browser shows in its login prompt.'),
    users: z
      .record(
        z.string().regex(/^[^:\x00-\x1f\x7f]+$/, { message: 'a user name cannot be empty or hold ":" or control characters' }),
        z.string().superRefine((s, ctx) => {
          const problem = hashProblem(s);
          if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem });
        }),
      )
      .refine((u) => Object.keys(u).length > 0, { message: 'list at least one user: {"name": "<hash from portico hash-password>"}' })
      .describe('Users and their password hashes, made by "portico hash-password" (scrypt): {"alice": "$scrypt$ln=15,r=8,p=1$…"}.'),
  })
  .describe(
    'HTTP Basic authentication (nginx\'s auth_basic, Caddy\'s basic_auth): requests without valid credentials get 401 with a login prompt. Use it over HTTPS only (the password travels with every request). The Authorization header is forwarded to the upstream as sent; remove it with a request header rule if the upstream should not see it.',
  );

const CompressObject = z
  .strictObject({
    encodings: z
      .array(z.enum(['br', 'gzip']))
      .min(1)
      .refine((a) => new Set(a).size === a.length, { message: 'each encoding once' })
      .default(['br', 'gzip'])
      .describe('Encodings offered, in order of preference when a client accepts several equally: "br" (brotli, quality 4) and "gzip" (level 5).'),
    minLength: Size.default('512b').describe('Responses whose Content-Length is below this are sent as they are (compressing them gains little).'),
  })
  .describe('Compression settings.');

const Compress = z
  .union([z.boolean(), CompressObject])
  .describe(
    'Compress responses (nginx\'s gzip, Caddy\'s encode): true for the defaults, or {"encodings", "minLength"}. A response is encoded when the client accepts the encoding, the upstream sent it unencoded, its type is text, JSON, XML, JavaScript, SVG, WebAssembly or an uncompressed font (not text/event-stream), it has a body (not 204, 206, 304), and it has no "Cache-Control: no-transform". Encoded responses lose Content-Length and Accept-Ranges, get "Vary: Accept-Encoding" and a weak ETag; a HEAD gets the headers its GET would (RFC 9110 §9.3.2), Content-Encoding included, with no body; streamed bodies are flushed chunk by chunk. Default: off. A route\'s setting replaces its host\'s; false turns it off.',
  );

const CacheObject = z
  .strictObject({
    defaultTtl: Duration.optional().describe(
      'How long a response that says nothing of its freshness (no Cache-Control max-age or s-maxage, no Expires) is kept (nginx\'s proxy_cache_valid). Default: such responses are not stored.',
    ),
    maxObjectSize: Size.default('1mb').describe('Largest response body stored; larger responses are forwarded and not kept.'),
    lockTimeout: TimerDuration.default('5s').describe(
      'While one request fetches a response the cache does not hold, other requests for it wait for that one (nginx\'s proxy_cache_lock, Varnish\'s request coalescing) at most this long, then go upstream on their own; so a popular page that expires reaches the upstream once, not once per client. "0s": they do not wait.',
    ),
    staleWhileRevalidate: Duration.optional().describe(
      'How long past its freshness a stored response is still served at once while a new copy is fetched in the background (RFC 5861\'s stale-while-revalidate, nginx\'s proxy_cache_background_update with proxy_cache_use_stale updating), so no client waits for an expired page; a response\'s own Cache-Control stale-while-revalidate wins, and must-revalidate, proxy-revalidate or s-maxage forbid it. Background fetches go to HTTP/1.1 and HTTP/2 targets alike; when no target can take one (none in rotation, all at maxRequests), the stale response is revalidated while the client waits. Default: never.',
    ),
    staleIfError: Duration.optional().describe(
      'How long past its freshness a stored response is still served when the upstream fails (unreachable, timing out, out of rotation, at its maxRequests, or answering 500, 502, 503 or 504), as nginx\'s proxy_cache_use_stale and RFC 5861\'s stale-if-error; a response\'s own Cache-Control stale-if-error wins, and must-revalidate, proxy-revalidate or s-maxage forbid it. Default: never.',
    ),
  })
  .describe('Response cache settings.');

const Cache = z
  .union([z.boolean(), CacheObject])
  .describe(
    'Cache upstream responses in memory (nginx\'s proxy_cache, HAProxy\'s cache), following RFC 9111 as a shared cache: true for the defaults, or {"defaultTtl", "maxObjectSize", "staleWhileRevalidate", "staleIfError", "lockTimeout"}. A GET\'s response is stored when its status is 200, 203, 204, 300, 301, 308, 404 or 410 and it says how long it stays fresh (s-maxage, max-age, or Expires; else "defaultTtl"), without Cache-Control no-store, private or no-cache, without Set-Cookie and without "Vary: *"; variants are kept per the request headers its Vary names. GET and HEAD requests are answered from it while the response is fresh, with Age and a Cache-Status header (RFC 9211), and with 304 when the client\'s If-None-Match or If-Modified-Since matches. Requests with Authorization or Range are not cached; Cache-Control no-cache or max-age=0 on a request fetches a new copy; POST, PUT, PATCH and DELETE drop what is stored for their URL. A stale response with an ETag or Last-Modified is revalidated (If-None-Match or If-Modified-Since upstream; a 304 makes it fresh again); with "staleIfError" it is served while the upstream fails. Each process holds its own cache, up to limits.cacheSize. Default: off. A route\'s setting replaces its host\'s; false turns it off.',
  );

const RateLimitObject = z
  .strictObject({
    requests: z.number().int().min(1).max(1_000_000).describe('Requests a client may make per "per", on average.'),
    per: durationAtLeast(1, '1ms').default('1s').describe('The period "requests" are counted over.'),
    burst: z.number().int().min(1).max(1_000_000).optional().describe('Requests a client may make at once before the rate applies (the bucket\'s size). Default: "requests".'),
    ipv6Prefix: z
      .number()
      .int()
      .min(1, { message: 'expected a prefix length from 1 to 128 bits, such as 64 (one subscriber\'s network) or 128 (each address on its own)' })
      .max(128, { message: 'an IPv6 prefix is at most 128 bits (128: each address on its own)' })
      .default(DEFAULT_IPV6_PREFIX)
      .describe(
        `IPv6 clients are counted by the first this many bits of their address, so that every address in one such network shares one budget. Default: ${DEFAULT_IPV6_PREFIX}: a /64 is one subscriber's network (ISPs hand each home a /64 to /48, RFC 6177), whose hosts pick and rotate the last 64 bits themselves (RFC 8981), so counting each address on its own lets one client take a fresh bucket per request. 128: each address on its own (nginx's and Traefik's default). Below 64 (56 or 48: a subscriber's whole allocation) catches clients that rotate through their /64s too, at the risk of counting several subscribers as one where an ISP hands out smaller networks. IPv4 clients, IPv4-mapped IPv6 ones (::ffff:a.b.c.d) included, are always counted by their address. A changed value starts the limit with full buckets.`,
      ),
  })
  .describe(
    'A request rate limit per client address (nginx\'s limit_req, Traefik\'s rateLimit): each client may make "burst" requests at once, then "requests" per "per"; past it, requests and WebSocket upgrades get 429 (PORTICO_RATE_LIMITED) with Retry-After and reach no upstream. The client address is the one "allowFrom" uses; IPv6 clients are counted by their network ("ipv6Prefix", /64 by default). A host\'s limit is one budget for all its routes; a route\'s own replaces it (false: no limit). Each worker process counts on its own, so with "workers": N a client may get up to N times the rate. Reloads keep the counts while the limit\'s settings are unchanged (a host\'s by its name, a route\'s own by its path and "match"); a changed limit starts with full buckets.',
  );

const AllowFrom = z.array(Cidr).min(1, { message: 'list at least one address or CIDR; to refuse everyone, remove the route' });
const DenyFrom = z.array(Cidr).min(1, { message: 'list at least one address or CIDR, or leave "denyFrom" out' });

/** Placeholders a redirect's "to" may use, filled in per request. */
export const REDIRECT_PLACEHOLDERS = ['{host}', '{uri}', '{path}', '{query}'] as const;
const PLACEHOLDER_RE = /\{[^{}]*\}/g;

const RedirectTo = z.string().superRefine((s, ctx) => {
  for (const m of s.matchAll(PLACEHOLDER_RE)) {
    if (!(REDIRECT_PLACEHOLDERS as readonly string[]).includes(m[0])) {
      ctx.addIssue({ code: 'custom', message: `unknown placeholder ${m[0]} in ${JSON.stringify(s)}; use ${REDIRECT_PLACEHOLDERS.join(', ')}` });
      return;
    }
  }
  if (/[\x00-\x20\x7f]/.test(s)) {
    ctx.addIssue({ code: 'custom', message: `a redirect target cannot hold spaces or control characters, got ${JSON.stringify(s)}; percent-encode them (%20)` });
    return;
  }
  if (s.startsWith('/')) {
    // "//x" and "/{uri}" ("//evil.example/…" for a request path "//evil.example/…") would send clients to another site.
    if (s.startsWith('//') || s.startsWith('/{')) {
      ctx.addIssue({ code: 'custom', message: `a redirect to a path must start with "/" and a literal segment, such as "/new{uri}", got ${JSON.stringify(s)}; for another site give the whole URL ("https://example.com{uri}")` });
    }
    return;
  }
  const sample = s.replaceAll('{host}', 'example.com').replaceAll('{uri}', '/p?q').replaceAll('{path}', '/p').replaceAll('{query}', 'q');
  let url: URL | undefined;
  try {
    url = new URL(sample);
  } catch {
    url = undefined;
  }
  if (url === undefined || (url.protocol !== 'https:' && url.protocol !== 'http:') || !/^https?:\/\/([^/{]|\{host\})/.test(s)) {
    ctx.addIssue({ code: 'custom', message: `expected an http:// or https:// URL with a host (such as "https://example.com{uri}") or a path (such as "/new{uri}"), got ${JSON.stringify(s)}` });
  }
});

const RedirectObject = z
  .strictObject({
    to: RedirectTo.describe('Where to send the client: a URL ("https://example.com{uri}") or a path on the same host ("/new{uri}"). Placeholders: {host} the request\'s host name, {uri} its path and query (after "stripPrefix"/"addPrefix"), {path} the path alone, {query} the query alone (without "?").'),
    status: z
      .union([z.literal(301), z.literal(302), z.literal(303), z.literal(307), z.literal(308)])
      .default(302)
      .describe('301 or 308 for a permanent move (browsers remember it), 302, 303 or 307 for a temporary one. 307 and 308 keep the method and body; 301 and 302 may turn a POST into a GET.'),
  })
  .describe('A redirect.');

const Redirect = z.union([RedirectTo, RedirectObject]);

const Respond = z
  .strictObject({
    status: z.number().int().min(200).max(599).default(200).describe('Status of the answer.'),
    body: z.string().default('').describe('Body of the answer, sent as UTF-8.'),
    contentType: z
      .string()
      .regex(/^[\t\x20-\x7e]+$/, { message: 'expected a media type such as "text/html; charset=utf-8"' })
      .default('text/plain; charset=utf-8')
      .describe('Content-Type of the body.'),
  })
  .refine((r) => !((r.status === 204 || r.status === 304) && r.body !== ''), {
    message: 'a 204 or 304 answer has no body; remove "body" or pick another status',
    path: ['body'],
  })
  .describe('A fixed answer Portico gives itself (nginx\'s "return 200 …", Caddy\'s "respond"): a maintenance page, robots.txt, a health endpoint.');

/** A file name inside a served directory: one segment, no dot segments. */
const IndexName = z.string().regex(/^(?!\.\.?$)[^/\\\x00]+$/, { message: 'expected a file name such as "index.html" (one path segment, no "/")' });

const FilesObject = z
  .strictObject({
    root: z.string().min(1).describe('The directory to serve, relative to the config file (or absolute). It must exist when the config loads.'),
    index: z
      .array(IndexName)
      .default(['index.html'])
      .describe('Files tried, in order, for a request for a directory ("/docs/" serves "docs/index.html"). A directory with none of them gets 404: directories are never listed. [] turns index files off.'),
    fallback: z
      .string()
      .superRefine((f, ctx) => {
        if (!f.startsWith('/') || f.endsWith('/') || f.includes('\x00') || f.split('/').some((seg) => seg === '.' || seg === '..')) {
          ctx.addIssue({ code: 'custom', message: `expected a file under the root, starting with "/", such as "/index.html", got ${JSON.stringify(f)}` });
        }
      })
      .optional()
      .describe('A file under the root served (status 200) for a path that names no file, as Caddy\'s "try_files {path} /index.html" does for single-page apps. It must exist when the config loads. Default: 404.'),
    precompressed: z
      .boolean()
      .default(false)
      .describe('Serve "<file>.br" or "<file>.gz" beside a file, when there is one and the client accepts that encoding, instead of compressing on the fly (nginx\'s gzip_static, Caddy\'s precompressed): made once at build time, at the highest quality. Such responses take no ranges.'),
  })
  .describe('Static files.');

const Files = z.union([z.string().min(1).describe('The directory to serve (index.html, no fallback, nothing precompressed).'), FilesObject]);

const MatchPattern = z
  .string()
  .min(1, { message: 'expected a value to match ("*" for any value)' })
  .regex(/^[\t\x20-\x7e\x80-\xff]*$/, { message: 'a value to match cannot hold control characters' });
const MatchValue = z
  .union([MatchPattern, z.array(MatchPattern).min(1, { message: 'expected at least one value' })])
  .describe('The value: exact ("1"), "*" for any value (present), "a*" a prefix, "*a" a suffix, "*a*" a substring; or a list, any of which matches. Case-sensitive.');

const MatchHeaderName = z.string().superRefine((s, ctx) => {
  if (!TOKEN_RE.test(s)) ctx.addIssue({ code: 'custom', message: `expected a header name (letters, digits and !#$%&'*+-.^_\`|~), got ${JSON.stringify(s)}` });
  else if (s.toLowerCase() === 'host') ctx.addIssue({ code: 'custom', message: 'requests are matched to hosts by their Host already: put the route under that host (or its "aliases") instead' });
});

const RouteMatchObject = z
  .strictObject({
    methods: z
      .array(z.string().regex(/^[A-Z]+$/, { message: 'expected an upper-case method such as "GET" or "POST"' }))
      .min(1)
      .optional()
      .describe('Request methods, any of which matches ("GET" does not include "HEAD"; list both).'),
    headers: z.record(MatchHeaderName, MatchValue).optional().describe('Request headers (names in any case) and the value each must have; all must match. Repeated headers are compared joined with ", ".'),
    query: z.record(z.string().min(1), MatchValue).optional().describe('Query parameters (decoded) and the value each must have; all must match, a repeated parameter when any of its values does.'),
    clientAddresses: z
      .array(Cidr)
      .min(1, { message: 'list at least one address or CIDR' })
      .optional()
      .describe('Client addresses (IPs or CIDRs), any of which matches: the address "allowFrom" judges (the peer, or behind "forwarding.trustedProxies" the client its X-Forwarded-For names), as Caddy\'s client_ip and Traefik\'s ClientIP.'),
    cookies: z.record(z.string().regex(TOKEN_RE, { message: 'expected a cookie name (letters, digits and !#$%&\'*+-.^_`|~)' }), MatchValue).optional().describe('Cookies and the value each must have; all must match.'),
  })
  .refine((m) => m.methods !== undefined || m.headers !== undefined || m.query !== undefined || m.cookies !== undefined || m.clientAddresses !== undefined, {
    message: 'a match needs at least one of "methods", "headers", "query", "cookies" and "clientAddresses"; without conditions, leave "match" out',
  })
  .describe(
    'Conditions besides the path (Traefik\'s Method/Header/Query rules, Caddy\'s matchers): the route serves only requests that meet all of them. Routes may share a path when they differ by "match": those with one are tried in the config\'s order, then the one without; when none serves a request, shorter path prefixes are tried. WebSocket upgrades are matched too (say "headers": {"Upgrade": "websocket"}).',
  );

const PlainHeaderName = z.string().regex(TOKEN_RE, { message: 'expected a header name (letters, digits and !#$%&\'*+-.^_`|~)' });

const ForwardAuthUrl = z.string().superRefine((s, ctx) => {
  let url: URL | undefined;
  try {
    url = new URL(s);
  } catch {
    /* reported below */
  }
  if (url === undefined || (url.protocol !== 'http:' && url.protocol !== 'https:') || url.hostname === '') {
    ctx.addIssue({ code: 'custom', message: `expected the authentication service's URL with http:// or https://, such as "http://127.0.0.1:9091/api/verify", got ${JSON.stringify(s)}` });
  } else if (url.username !== '' || url.password !== '' || url.hash !== '') {
    ctx.addIssue({ code: 'custom', message: 'the URL of the authentication service cannot hold a user, a password or a #fragment' });
  }
});

const ForwardAuthObject = z
  .strictObject({
    url: ForwardAuthUrl.describe('The authentication service\'s endpoint, asked with a GET for every request (Authelia "/api/authz/forward-auth", oauth2-proxy "/oauth2/auth", …).'),
    requestHeaders: z
      .array(PlainHeaderName)
      .optional()
      .describe('The request headers sent to the service. Default: all of them (but hop-by-hop and framing headers).'),
    responseHeaders: z
      .array(
        PlainHeaderName.refine((s) => !RESERVED_HEADERS.has(s.toLowerCase()), {
          message: 'Portico writes the framing, connection and Host headers of the upstream request itself; copying the service\'s would break its framing (its Content-Length is its own answer\'s); remove this name',
        }),
      )
      .default([])
      .describe('Headers of the service\'s 2xx answer copied into the request that goes upstream, such as ["Remote-User", "Remote-Groups"]. Copies the client sent of these are always removed, so a client cannot claim them.'),
    timeout: TimerDuration.refine((s) => !(durationMs(s) < 1), {
      message: 'expected a duration of at least 1ms: with "0s" a service that never answers would hold every request it is asked about, without end',
    })
      .default('5s')
      .describe('Longest wait for the service\'s answer; past it the request gets 502 (PORTICO_FORWARD_AUTH_FAILED). At least 1ms.'),
  })
  .describe(
    'Ask an authentication service about every request before serving it (Traefik\'s ForwardAuth, nginx\'s auth_request, Caddy\'s forward_auth): a GET to "url" with the request\'s headers and X-Forwarded-Method, -Proto, -Host, -Uri and -For. A 2xx answer lets the request through (with "responseHeaders" copied into it); any other answer (a redirect to a login page, 401, 403) is sent to the client as it is. An unreachable or slow service gets 502 (PORTICO_FORWARD_AUTH_FAILED): it fails closed. WebSocket upgrades are asked about too.',
  );

/** A body size limit that a host or route sets for itself: a size, or false for none. */
const MaxBodySize = z.union([Size, z.literal(false)]);

const Route = z
  .strictObject({
    path: z
      .string()
      .startsWith('/', { message: 'a route path must start with "/"' })
      .refine((p) => !p.includes(';') && !p.includes('?') && !p.includes('#'), { message: 'a route path is a path alone: no ";" (path parameters take no part in matching), "?" or "#"' })
      .default('/')
      .describe('Path prefix this route serves, matched on whole segments ("/api" matches "/api" and "/api/x", not "/apix"). The longest matching prefix wins. A segment\'s path parameters take no part ("/admin;jsessionid=1" is "/admin", as Tomcat and Spring read it).'),
    match: RouteMatchObject.optional(),
    upstream: Upstream.optional().describe('Where requests go. A route has exactly one of "upstream", "redirect", "respond" and "files".'),
    redirect: Redirect.optional().describe('Answer every request with a redirect instead of forwarding it (nginx\'s "return 301 …", Caddy\'s "redir"): a "to" string, or {"to", "status"}. Default status 302.'),
    respond: Respond.optional(),
    files: Files.optional().describe(
      'Serve static files from a directory (nginx\'s "root", Caddy\'s "file_server"): a directory name, or {"root", "index", "fallback"}. The request path (after "stripPrefix"/"addPrefix") names the file under the root. GET and HEAD only; Content-Type by extension, ETag and Last-Modified, conditional requests (304) and single byte ranges (206); files and directories whose name starts with "." are not served (404), except under "/.well-known/".',
    ),
    stripPrefix: z.boolean().default(false).describe('Remove the route path from the forwarded path ("/api/x" → "/x"); with "redirect", from {uri} and {path}.'),
    addPrefix: z.string().startsWith('/').optional().describe('Prepend this path to the forwarded path (after stripPrefix); with "redirect", to {uri} and {path}.'),
    rewrite: z
      .strictObject({
        pattern: z.string().superRefine((p, ctx) => {
          try {
            new RegExp(p);
          } catch (err) {
            ctx.addIssue({ code: 'custom', message: `not a regular expression: ${(err as Error).message}` });
          }
        }).describe('A JavaScript regular expression matched against the path (without the query), such as "^/api/v1/(.*)$".'),
        to: z
          .string()
          .regex(/^[/$]/, { message: 'the new path must start with "/" (or with a group such as "$1" that holds one)' })
          .regex(/^[^?#\s]*$/, { message: 'the new path cannot hold "?", "#" or spaces: the query is kept as it was' })
          .describe('The new path: "$1"…"$9" and "$<name>" stand for the pattern\'s groups, as in JavaScript\'s String.replace.'),
      })
      .superRefine((rw, ctx) => {
        // A group "to" names that the pattern lacks would reach upstreams as a literal "$3".
        let re: RegExp;
        try {
          re = new RegExp(`${rw.pattern}|`);
        } catch {
          return; // reported on "pattern"
        }
        const empty = re.exec('')!;
        const groups = empty.length - 1;
        const names = Object.keys(empty.groups ?? {});
        for (const m of rw.to.matchAll(/\$(\d+)|\$<([^>]*)>/g)) {
          if (m[1] !== undefined && (Number(m[1]) < 1 || Number(m[1]) > groups)) {
            ctx.addIssue({ code: 'custom', path: ['to'], message: `"$${m[1]}" names no group: the pattern has ${groups} group${groups === 1 ? '' : 's'}` });
          } else if (m[2] !== undefined && !names.includes(m[2])) {
            ctx.addIssue({ code: 'custom', path: ['to'], message: `"$<${m[2]}>" names no group: the pattern's named groups are ${names.length === 0 ? 'none' : names.map((n) => `"${n}"`).join(', ')}` });
          }
        }
      })
      .optional()
      .describe('Rewrite the forwarded path with a regular expression (nginx\'s "rewrite … break", Traefik\'s ReplacePathRegex), after stripPrefix and addPrefix; a path the pattern does not match is sent as it is, and the query is always kept. With "redirect", applies to {uri} and {path}.'),
    headers: HeaderRules.optional(),
    allowFrom: AllowFrom.optional().describe('Client addresses (IPs or CIDRs) this route serves; others get 403. Replaces its host\'s "allowFrom". Default: the host\'s, or everyone.'),
    denyFrom: DenyFrom.optional().describe('Client addresses (IPs or CIDRs) refused on this route with 403, besides those its host refuses.'),
    compress: Compress.optional(),
    cache: Cache.optional(),
    rateLimit: z.union([RateLimitObject, z.literal(false)]).optional().describe('This route\'s own rate limit, replacing its host\'s; false: none. Default: the host\'s.'),
    forwardAuth: z
      .union([ForwardAuthObject, z.literal(false)])
      .optional()
      .describe('This route\'s authentication service, replacing its host\'s "forwardAuth"; false makes the route public (a health endpoint, say). Default: the host\'s.'),
    maxBodySize: MaxBodySize.optional().describe(
      'Largest request body this route accepts (nginx\'s client_max_body_size in a location): a size, or false for no limit. Replaces its host\'s and limits.maxBodySize. Default: the host\'s.',
    ),
    basicAuth: z
      .union([BasicAuthObject, z.literal(false)])
      .optional()
      .describe('This route\'s login, replacing its host\'s "basicAuth"; false makes the route public on a host that has one (a health endpoint, say). Default: the host\'s.'),
    interceptErrors: z
      .boolean()
      .optional()
      .describe('This route\'s own "interceptErrors", replacing its host\'s: true sends the host\'s "errorPages" in place of its upstream\'s error bodies, false passes them on as they are (an API whose clients read its JSON errors, say). Routes with an "upstream" only. Default: the host\'s.'),
    earlyHints: z
      .boolean()
      .optional()
      .describe('This route\'s own "earlyHints", replacing its host\'s: false keeps its upstream\'s 103 Early Hints from clients. Routes with an "upstream" only. Default: the host\'s.'),
  })
  .superRefine((r, ctx) => {
    const kinds = (['upstream', 'redirect', 'respond', 'files'] as const).filter((k) => r[k] !== undefined);
    if (kinds.length === 0) {
      ctx.addIssue({ code: 'custom', message: 'a route needs one of "upstream" (forward), "redirect", "respond" or "files"' });
      return;
    }
    if (kinds.length > 1) {
      ctx.addIssue({ code: 'custom', path: [kinds[1]!], message: `a route has one of "upstream", "redirect", "respond" and "files", and this one also has ${JSON.stringify(kinds[0])}; split them into two routes` });
      return;
    }
    if (kinds[0] === 'upstream') return;
    if (r.headers?.request !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['headers', 'request'], message: `a "${kinds[0]}" route sends nothing upstream, so request header rules have no effect here; remove them` });
    }
    if (r.earlyHints !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['earlyHints'], message: `a "${kinds[0]}" route sends nothing upstream, so there are no upstream 103 Early Hints to pass on; remove "earlyHints"` });
    }
    if (r.interceptErrors === true) {
      ctx.addIssue({ code: 'custom', path: ['interceptErrors'], message: `a "${kinds[0]}" route sends nothing upstream, so there is no upstream error to replace (its own errors get the host's "errorPages" anyway); remove "interceptErrors"` });
    }
    if (kinds[0] !== 'files' && r.compress !== undefined && r.compress !== false) {
      ctx.addIssue({ code: 'custom', path: ['compress'], message: `a "${kinds[0]}" route answers itself, and only proxied responses and files are compressed; remove "compress"` });
    }
    if (r.cache !== undefined && r.cache !== false) {
      ctx.addIssue({ code: 'custom', path: ['cache'], message: `a "${kinds[0]}" route answers itself, and only upstream responses are cached; remove "cache"` });
    }
    if (kinds[0] === 'respond') {
      if (r.stripPrefix) ctx.addIssue({ code: 'custom', path: ['stripPrefix'], message: 'a "respond" route forwards no path; remove "stripPrefix"' });
      if (r.addPrefix !== undefined) ctx.addIssue({ code: 'custom', path: ['addPrefix'], message: 'a "respond" route forwards no path; remove "addPrefix"' });
      if (r.rewrite !== undefined) ctx.addIssue({ code: 'custom', path: ['rewrite'], message: 'a "respond" route forwards no path; remove "rewrite"' });
    }
  })
  .describe('A path prefix and what answers it: an upstream, a redirect, a fixed response, or static files.');

const HostTls = z.union([
  z
    .strictObject({
      cert: z.string().min(1).describe('Certificate chain PEM file, relative to the certs directory (leaf first).'),
      key: z.string().min(1).describe('Private key PEM file, relative to the certs directory (RSA or ECDSA).'),
    })
    .describe('Certificate files mounted into the certs directory.'),
  z.strictObject({ acme: z.literal(true).describe('Obtain and renew the certificate over ACME (see "acme").') }),
]);

/** Client certificates (mutual TLS) a host asks for. */
const ClientAuth = z
  .strictObject({
    ca: z
      .string()
      .min(1)
      .describe('PEM file (relative to the certs directory) with the CA certificates that sign the client certificates this host accepts; only these are trusted, never the system store.'),
    mode: z
      .enum(['require', 'optional'])
      .default('require')
      .describe('"require": a handshake without a client certificate signed by "ca" fails (nginx\'s ssl_verify_client on). "optional": clients without a certificate are served too, without Client-Cert; a certificate that does not verify still fails the connection (nginx\'s optional).'),
  })
  .describe(
    'Ask clients of this host for a TLS client certificate (mutual TLS; nginx\'s ssl_verify_client, Caddy\'s client_auth). A verified certificate reaches the upstream as the Client-Cert header (RFC 9440: the DER certificate in base64 between colons); a client\'s own Client-Cert and Client-Cert-Chain headers are always dropped. Connections for this host get TLS sessions of their own: a session from another host never resumes here. Other hosts on the same listener are not asked for certificates. Not with plainHttp "serve" or connectionSharing "same-certificate".',
  );

const HostEntry = z
  .strictObject({
    aliases: z.array(HostName).default([]).describe('More names served by this host (same certificate, same routes).'),
    tls: HostTls.describe('Where the certificate for this host comes from: {"cert","key"} files or {"acme": true}.'),
    routes: z.array(Route).min(1, { message: 'a host needs at least one route' }).describe('Routes, matched by longest path prefix.'),
    connectionSharing: z
      .enum(['strict', 'same-certificate'])
      .default('strict')
      .describe('"strict": every request\'s Host must equal the TLS server name of its connection, else 421. "same-certificate": a request may also use a connection opened for another name served by the same certificate file whose host also allows sharing (HTTP/2 connection coalescing, RFC 9113 §9.1.1).'),
    plainHttp: z
      .enum(['redirect', 'serve'])
      .default('redirect')
      .describe('What the plain HTTP listener does for this host: "redirect" answers 308 to https (the default); "serve" proxies its routes over plain HTTP too (for a host behind a TLS-terminating load balancer, or an internal one), with X-Forwarded-Proto "http" and no Host/SNI check, since there is no TLS; its WebSocket upgrades too.'),
    clientAuth: ClientAuth.optional(),
    headers: HeaderRules.optional(),
    basicAuth: BasicAuthObject.optional(),
    compress: Compress.optional(),
    cache: Cache.optional(),
    rateLimit: RateLimitObject.optional(),
    forwardAuth: ForwardAuthObject.optional(),
    maxBodySize: MaxBodySize.optional().describe(
      'Largest request body this host\'s routes accept (nginx\'s client_max_body_size in a server): a size, or false for no limit. Replaces limits.maxBodySize; a route\'s own replaces it. Default: limits.maxBodySize.',
    ),
    errorPages: z
      .record(
        z.string().regex(/^(4\d\d|5\d\d|4xx|5xx)$/, { message: 'expected a status such as "502", or a class "4xx" or "5xx"' }),
        z.string().min(1),
      )
      .optional()
      .describe(
        'Pages for the errors Portico answers on this host itself (404 no route, 401, 403, 413, 429, 502, 503, 504…), by status ("502") or class ("5xx"; an exact status wins): files relative to the config file, .html, .json, .txt or .xml (at most 1 MiB), read when the config loads and re-read on reload. The x-portico-error header still names the error. Responses from upstreams are passed on as they are, unless "interceptErrors" is set; a page for a status only upstreams answer ("418") needs it.',
      ),
    interceptErrors: z
      .boolean()
      .default(false)
      .describe(
        'Send this host\'s "errorPages" in place of upstream error responses too (nginx\'s proxy_intercept_errors with error_page, Traefik\'s errors middleware): an upstream\'s 4xx or 5xx answer whose status has a page ("500", or "5xx") reaches the client with that status and the page (its Content-Type, Cache-Control: no-store; HEAD gets the head alone). The upstream\'s body is discarded; of its headers only those a client needs to act on the status are kept (WWW-Authenticate, Proxy-Authenticate, Retry-After, Allow, Accept-Patch, Accept-Post, and a 416\'s Content-Range); response header rules still apply, compression does not. Statuses without a page pass on as they are, and so do declined WebSocket upgrades. The access line keeps the upstream\'s status, with "detail": "replaced by the error page". Needs "errorPages". A route\'s own "interceptErrors" replaces this. Hazard: clients that read an API\'s error bodies (JSON problem details, say) get the page instead; set "interceptErrors": false on such routes. Default: false.',
      ),
    earlyHints: z
      .boolean()
      .default(true)
      .describe(
        'Pass an upstream\'s 103 Early Hints (RFC 8297) on to clients before its final response (Caddy does by default; nginx 1.29\'s early_hints): each 103 from an HTTP/1.1 or HTTP/2 upstream, hop-by-hop headers removed, reaches an HTTP/2 client as a 103 HEADERS frame and an HTTP/1.1 client as an "HTTP/1.1 103 Early Hints" head, so a browser starts fetching the Link headers\' preloads and preconnects while the upstream still builds the page. Never to HTTP/1.0 clients (RFC 9110 §15.2), nor once the final head has been sent; response header rules do not apply to them (rules are written for the final response, which gets them; a 103 carries only what the upstream hints), the cache stores only the final response, and the access line\'s status is the final one. Other 1xx (100 Continue, 102) are never passed on: Portico answers a client\'s Expect: 100-continue itself. On by default: a 103 is something the upstream chose to send, and browsers act on it only over HTTP/2 and later. Hazard: an old HTTP/1.1 client that mishandles 1xx responses (RFC 9110 §15.2 requires clients to read them) may take the 103 for the answer; set false for such a host or route. Default: true.',
      ),
    denyFrom: DenyFrom.optional().describe(
      'Client addresses (IPs or CIDRs) refused with 403 (PORTICO_FORBIDDEN) on every route of this host, WebSocket upgrades included (nginx\'s deny): abusive clients, say. The client address is the one "allowFrom" judges. A route\'s own "denyFrom" adds to this list; "denyFrom" wins over "allowFrom".',
    ),
    allowFrom: AllowFrom.optional().describe('Client addresses (IPs or CIDRs, such as "10.0.0.0/8" or "2001:db8::/32") this host serves; requests and WebSocket upgrades from others get 403 (PORTICO_FORBIDDEN). The client address is the connection\'s peer, or, from a peer in "forwarding.trustedProxies", the rightmost X-Forwarded-For address that is not a trusted proxy. A route\'s own "allowFrom" replaces this one. Default: everyone.'),
  })
  .superRefine((h, ctx) => {
    // interceptErrors sends the host's pages: without any, it would do nothing.
    if (h.errorPages !== undefined) return;
    const message = 'replaces upstream error bodies with this host\'s "errorPages", and the host has none: add "errorPages" (such as {"5xx": "pages/5xx.html"}), or remove "interceptErrors"';
    if (h.interceptErrors) ctx.addIssue({ code: 'custom', path: ['interceptErrors'], message: `"interceptErrors" ${message}` });
    h.routes.forEach((r, i) => {
      if (r.interceptErrors === true) ctx.addIssue({ code: 'custom', path: ['routes', i, 'interceptErrors'], message: `"interceptErrors" ${message}` });
    });
  })
  .superRefine((h, ctx) => {
    // Either would let a request reach the host without the certificate its connections must show.
    if (h.clientAuth === undefined) return;
    if (h.plainHttp === 'serve') ctx.addIssue({ code: 'custom', path: ['plainHttp'], message: 'a host with "clientAuth" cannot be served over plain HTTP, which has no client certificate: remove "plainHttp": "serve", or "clientAuth"' });
    if (h.connectionSharing === 'same-certificate') ctx.addIssue({ code: 'custom', path: ['connectionSharing'], message: 'a host with "clientAuth" cannot take requests on connections made for other names, which were not asked for a client certificate: use "connectionSharing": "strict"' });
  })
  .describe('A site: its names, certificate and routes.');

const Acme = z
  .strictObject({
    directory: z
      .string()
      .url()
      .default('https://acme-v02.api.letsencrypt.org/directory')
      .describe('ACME directory URL. Let\'s Encrypt production by default; "https://acme-staging-v02.api.letsencrypt.org/directory" for staging; any RFC 8555 directory.'),
    email: z.string().email({ message: 'expected an email address such as "ops@example.com" (the CA sends expiry notices there)' }).optional().describe('Contact email for the ACME account (expiry notices from the CA). Recommended.'),
    termsOfServiceAgreed: z.boolean().default(false).describe('Agree to the CA\'s terms of service (required by most CAs).'),
    eab: z
      .strictObject({
        kid: z.string().min(1).describe('EAB key identifier from the CA.'),
        hmacKey: z.string().min(1).describe('EAB HMAC key from the CA, base64url as given. A secret: keep the config file private.'),
      })
      .optional()
      .describe('External Account Binding credentials (RFC 8555 §7.3.4), for CAs that require them (ZeroSSL, Google Trust Services, many private CAs): "kid" is the key identifier and "hmacKey" the base64url HMAC key the CA gave you. Used only when the account is first registered.'),
    challenge: z
      .enum(['http-01', 'tls-alpn-01', 'dns-01'])
      .default('http-01')
      .describe(
        'Challenge type used to prove control of the names: "http-01" is answered by the plain HTTP listener (the CA dials port 80, so listen.http must not be null), "tls-alpn-01" by the HTTPS listener (the CA dials port 443 with ALPN "acme-tls/1", RFC 8737), "dns-01" by a TXT record that "dns01.command" sets. Hosts with a wildcard name always use dns-01.',
      ),
    dns01: z
      .strictObject({
        command: z
          .array(z.string().min(1))
          .min(1, { message: 'name the program, such as ["/etc/portico/dns-hook.sh"]' })
          .describe(
            'The program (and its first arguments) that sets and removes a TXT record: run as <command…> present <record name> <value>, then <command…> cleanup <record name> <value>, where the record name is "_acme-challenge.<domain>" (no trailing dot). The record may have to hold two values at once (for "example.com" and "*.example.com"), so add the value rather than replace the record, and remove only that value. It must exit 0 once the record is set; its standard error is logged when it fails. A path with a "/" that is relative is taken from the config file\'s directory; a bare name is looked up in PATH.',
          ),
        propagationDelay: TimerDuration.default('0s').describe('Time to wait after "present" succeeded before the CA is asked to look, for DNS providers whose servers take a while to agree.'),
        timeout: TimerDuration.default('2m').describe('Longest run of one "present" or "cleanup"; past it the program is killed and the order fails (and is retried later).'),
      })
      .optional()
      .describe('DNS-01 (RFC 8555 §8.4), needed for wildcard names ("*.example.com"): a program of yours sets the TXT record with your DNS provider\'s API or nsupdate (RFC 2136). Examples: docs/certificates.md.'),
    caFile: z.string().optional().describe('Extra CA (PEM, relative to certs directory) trusted for the ACME directory\'s HTTPS, e.g. a private CA.'),
    renewBefore: z
      .string()
      .regex(/^(\d+(\.\d+)?(ms|s|m|h|d)|\d+(\.\d+)?%)$/, { message: 'expected a duration such as "30d" or a share of the lifetime such as "33%"' })
      .default('33%')
      .describe('Renew when this much of the certificate lifetime remains ("33%" = a third) or this long before expiry ("30d"). A random jitter of up to 2% of the lifetime (at most 1h) moves each renewal earlier, so many hosts do not renew at the same second. When the CA offers ACME Renewal Information (RFC 9773), its suggested window wins.'),
    retryDelay: TimerDuration.default('1m').describe('Delay before retrying a failed order or renewal; doubles on each consecutive failure up to "retryMaxDelay". A CA\'s Retry-After (rate limits) is honoured when longer. The old certificate keeps serving meanwhile.'),
    retryMaxDelay: TimerDuration.default('6h').describe('Longest delay between retries of a failed order or renewal.'),
    pollInterval: TimerDuration.default('1s').describe('First delay between polls of a pending challenge or order; doubles up to 30s. Lower only for a local test CA.'),
  })
  .describe('Automatic certificates over ACME, for hosts whose tls is {"acme": true}.');

const Limits = z
  .strictObject({
    headersTimeout: TimerDuration.default('30s').describe('Time a client has to send complete request headers (HTTP/1.1).'),
    requestTimeout: TimerDuration.default('5m').describe('Time a client has to send a complete request, body included (HTTP/1.1). "0s" disables.'),
    bodyTimeout: TimerDuration.default('60s').describe(
      'Longest silence while a request body is read (nginx client_body_timeout): the time between two successive reads of the body, not for the whole body, so a slow upload that keeps moving, or a long gRPC or streaming request, is never cut. It runs only while Portico waits for the client: not while the upstream is slow to take the body (that back-pressure stops the reading), nor before the body is wanted (forwardAuth, a maxRequests queue). On HTTP/1.1 and HTTP/2 alike; HTTP/1.1 bodies stay bound by requestTimeout as a whole too. A body that stalls gets 408 (PORTICO_BODY_TIMEOUT) if no response has started (HTTP/1.1 then closes the connection, HTTP/2 ends the stream), else the HTTP/1.1 connection is closed or the HTTP/2 stream reset; either way its upstream exchange is cancelled. Checked once a second. A reload applies it at once. "0s" disables.',
    ),
    keepAliveTimeout: TimerDuration.default('60s').describe('Idle time before a client connection is closed.'),
    sendTimeout: TimerDuration.default('60s').describe(
      'Time a client may leave a response unread: an HTTP/1.1 connection whose unsent response data does not move for this long is closed, and an HTTP/2 stream\'s is reset (its connection serves on); either way its upstream exchange is cancelled (nginx send_timeout). A WebSocket or other upgraded tunnel whose writes towards its client or its upstream do not move for this long while bytes wait (one side stopped reading) is closed on both sides, its access line saying "reason": "send timeout". Checked once a second; a reload applies it at once, open tunnels included. "0s" disables.',
    ),
    maxHeaderSize: Size.default('16kb').describe('Largest request header block accepted; larger gets 431 (on HTTP/2 too, where it is also announced as SETTINGS_MAX_HEADER_LIST_SIZE).'),
    maxConcurrentStreams: z
      .number()
      .int()
      .min(1)
      .max(1000)
      .default(256)
      .describe(
        'HTTP/2 streams (requests) a client may have open at once on one connection, announced as SETTINGS_MAX_CONCURRENT_STREAMS; streams past it are refused (nginx http2_max_concurrent_streams, HAProxy tune.h2.fe.max-concurrent-streams). Each open stream may hold up to about 128 KiB of response its client has not read yet (16 KiB each when more than 16 are open), so this bounds a connection\'s memory. A reload applies it to new connections.',
      ),
    maxBodySize: Size.optional().describe(
      'Largest request body accepted; larger gets 413, by Content-Length before anything is sent upstream, or while the body streams. A host or route may set its own. Default: unlimited (streamed).',
    ),
    cacheSize: Size.default('64mb').describe('Memory each process may give the response cache (hosts\' and routes\' "cache"), bodies and headers counted; with "workers", each worker has its own. Past it, responses not used lately are dropped first (second chance, an approximation of least recently used).'),
    shutdownTimeout: TimerDuration.default('10s').describe('On SIGTERM/SIGINT, time in-flight requests have to finish before connections are closed. With "workers", the primary kills a worker still running 5 s after that (a hung one) and exits 1. Whatever stops Portico must wait longer: docker stop sends SIGKILL after its own 10 s unless given --stop-timeout (Compose: stop_grace_period), so give it at least this + 5 s.'),
    maxConnections: z
      .number()
      .int()
      .min(1)
      .max(10_000_000)
      .default(20_000)
      .describe(
        'Open client connections one process accepts on each listening socket (HTTPS, HTTP, each stream address); past it new connections are closed at once and a warn line (at most one a minute) says how many. An idle TLS connection holds about 35 KiB, so the default bounds that memory near 700 MiB per socket.',
      ),
  })
  .describe('Limits and timeouts against slow or abusive clients.');

const Forwarding = z
  .strictObject({
    trustedProxies: z
      .array(Cidr)
      .default([])
      .describe('Peers (IPs or CIDRs) whose X-Forwarded-*/Forwarded headers are kept and extended, and whose X-Real-IP, True-Client-IP, X-Forwarded-Port, X-Forwarded-Ssl, X-Forwarded-Scheme, X-Forwarded-Server and Front-End-Https pass. From any other peer the first are dropped and rebuilt from the connection, the others dropped.'),
    forwarded: z.boolean().default(false).describe('Also send the RFC 7239 Forwarded header.'),
    via: z.boolean().default(false).describe('Add a Via header ("1.1 portico" / "2 portico") to requests and responses.'),
    requestId: z
      .boolean()
      .default(false)
      .describe('Give every request an X-Request-ID (a random UUID) sent upstream and written in its access line as "requestId"; one that a peer in "trustedProxies" sent (up to 200 visible characters) is kept, so an ID stays the same across the proxies in front.'),
  })
  .describe('Headers that tell upstreams about the client.');

/** A log file's path: absolute, or relative to the config file's directory. */
const LogFilePath = z
  .string()
  .min(1, { message: 'expected a file path, absolute or relative to the config file\'s directory' })
  .refine((s) => !s.includes('\0'), { message: 'a file path cannot contain a NUL character' })
  .refine((s) => !/[/\\]$/.test(s), { message: 'expected a file, not a directory: name the file, such as "logs/access.log"' });

const Log = z
  .strictObject({
    level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info').describe('Least severe level written. The --log-level flag and PORTICO_LOG_LEVEL override it.'),
    access: z.boolean().default(true).describe('Write one access log line per request.'),
    accessHeaders: z
      .array(z.string().regex(TOKEN_RE, { message: 'expected a header name (letters, digits and !#$%&\'*+-.^_`|~)' }))
      .default(['referer', 'user-agent'])
      .describe('Request headers written in each access line, under "headers" (as nginx\'s combined log writes Referer and User-Agent): those a request has, names in lower case. [] for none.'),
    format: z.enum(['auto', 'json', 'pretty']).default('auto').describe('"auto": human-readable on a TTY (unless "file" is set), JSON otherwise.'),
    file: LogFilePath.optional().describe(
      'File every log line is appended to instead of standard output (nginx\'s error_log; with "accessFile", the lines other than access lines). Absolute, or relative to the config file\'s directory; created with mode 0640 if missing. SIGUSR1 opens the path again (after logrotate renamed the file: postrotate kill -USR1 <pid>), and a reload that changes it switches files. A file that cannot be opened stops the start, or fails the reload (the old files stay in use). With "workers", every process appends whole lines to it.',
    ),
    accessFile: LogFilePath.optional().describe(
      'File the access lines are appended to (nginx\'s access_log, Traefik\'s accessLog.filePath), for fail2ban or GoAccess; the other lines stay on standard output or in "file". Paths, mode, SIGUSR1 and reloads as for "file". Hazard: with "access": false there are no access lines to write.',
    ),
  })
  .refine((l) => !(l.format === 'pretty' && l.file !== undefined), {
    message: '"pretty" writes human-readable lines to a terminal, but "file" sends the log to a file, whose lines are JSON; use "auto" or "json"',
    path: ['format'],
  })
  .describe('Logging.');

/** A TCP target of a stream: `tcp://host:port`. */
const StreamTarget = z.string().superRefine((s, ctx) => {
  let url: URL | undefined;
  try {
    url = new URL(s);
  } catch {
    url = undefined;
  }
  if (url === undefined || url.protocol !== 'tcp:' || url.hostname === '' || url.port === '' || (url.pathname !== '' && url.pathname !== '/') || url.search !== '' || url.hash !== '' || url.username !== '') {
    ctx.addIssue({ code: 'custom', message: `expected a TCP target such as "tcp://127.0.0.1:5432" (host and port), got ${JSON.stringify(s)}` });
  }
});

/** One target, or several used round-robin. */
const StreamUpstream = z.union([StreamTarget, z.array(StreamTarget).min(1)]);

const StreamHealthCheck = z
  .strictObject({
    interval: durationAtLeast(100, '100ms').default('10s').describe('Time between two checks of one target.'),
    timeout: durationAtLeast(10, '10ms').default('2s').describe('Time a check\'s connection may take; longer counts as a failed check. Must not exceed "interval".'),
    unhealthyAfter: z.number().int().min(1).max(100).default(2).describe('Failed checks in a row after which a target is taken out of rotation (HAProxy\'s "fall").'),
    healthyAfter: z.number().int().min(1).max(100).default(2).describe('Passed checks in a row after which it is put back (HAProxy\'s "rise").'),
  })
  .refine((h) => !(durationMs(h.timeout) > durationMs(h.interval)), { message: 'the health check "timeout" must not exceed its "interval"', path: ['timeout'] })
  .describe(
    'Active TCP health checks (HAProxy\'s "check" in mode tcp): every target of this stream gets a connection of its own every "interval", closed at once. A target that does not connect within "timeout" "unhealthyAfter" times in a row gets no connections until it connects "healthyAfter" times in a row; while every target is out, new connections are closed (a "stream failed" line). Each worker process checks on its own.',
  );

const Stream = z
  .strictObject({
    port: Port.describe('TCP port to listen on. It must differ from the HTTPS, HTTP and admin ports and from the other streams\' ports.'),
    addresses: z.array(IpAddress).min(1).default(['0.0.0.0', '::']).describe('Addresses to bind, as for "listen".'),
    upstream: StreamUpstream.optional().describe(
      'Where connections go, byte for byte: a "tcp://host:port" target or a list used round-robin (a target that refuses the connection is skipped for the next). With "sni", only connections whose server name "sni" does not list.',
    ),
    sni: z
      .record(HostName, StreamUpstream)
      .optional()
      .describe(
        'TLS passthrough: connections are routed by the server name of their TLS ClientHello (exact names first, then "*." wildcards for one label) to targets that terminate TLS themselves; Portico never decrypts them. A name not listed goes to "upstream" if set, else the connection is closed.',
      ),
    connectTimeout: TimerDuration.default('5s').describe('Time allowed to connect to a target; past it the next target is tried, or the connection closed.'),
    idleTimeout: TimerDuration.default('10m').describe('A connection with no bytes either way for this long is closed. "0s": never.'),
    sendTimeout: TimerDuration.default('60s').describe(
      'A connection whose writes towards its client or its target have not moved for this long while bytes wait (that side stopped reading, while the other may still be sending) is closed on both sides, its "stream" line saying "reason": "send timeout" and which side in "detail" (nginx send_timeout, HAProxy timeout client/server in mode tcp). Quiet connections and slowly read ones are not affected. Checked once a second, so it fires up to a second late; a reload applies it to connections opened after it. "0s": never.',
    ),
    helloTimeout: TimerDuration.default('10s').describe('With "sni": time a client has to send its TLS ClientHello.'),
    proxyProtocol: z
      .boolean()
      .default(false)
      .describe('Every connection starts with a PROXY protocol header (v1 or v2) from a TCP load balancer in front; its client address is the client\'s (logs, and what "sendProxyProtocol" passes on). Connections without one within 10 s are closed. Hazard as for listen.https.proxyProtocol: only the balancer may reach the port.'),
    healthCheck: StreamHealthCheck.optional(),
    sendProxyProtocol: z
      .enum(['v1', 'v2'])
      .optional()
      .describe('Send each target a PROXY protocol header ("v1" text, "v2" binary) before the client\'s bytes, naming the client\'s address and port and the address it connected to, as HAProxy\'s send-proxy does; the target must expect it (nginx "listen … proxy_protocol", HAProxy "accept-proxy", Postfix, Dovecot). Default: none.'),
  })
  .superRefine((st, ctx) => {
    if (st.upstream === undefined && st.sni === undefined) {
      ctx.addIssue({ code: 'custom', message: 'a stream needs "upstream" (plain TCP forwarding) or "sni" (TLS passthrough by server name), or both' });
    }
  })
  .describe('A TCP port forwarded as is (databases, SSH, TLS services that keep their own certificates).');

/** Whether an address is on this machine only (127.0.0.0/8, ::1). */
export function isLoopbackAddress(address: string): boolean {
  return address === '::1' || (isIP(address) === 4 && address.startsWith('127.'));
}

const Admin = z
  .strictObject({
    port: Port.describe('TCP port of the admin API.'),
    address: IpAddress.default('127.0.0.1').describe('Address the admin API binds. Loopback only ("127.0.0.1" or "::1") unless "allowRemote" is true.'),
    tokenFile: z
      .string()
      .min(1)
      .describe(
        'File (relative to the config file) holding the token every admin request must send as "Authorization: Bearer <token>"; at least 32 characters, surrounding whitespace ignored. Re-read on reload, so a token is rotated by changing the file. Make one with: openssl rand -hex 32',
      ),
    stateFile: z
      .string()
      .min(1)
      .optional()
      .describe(
        'File (relative to the config file) where the targets drained with POST /targets/drain are kept, so they stay drained after a restart (HAProxy\'s server-state-file): read at start, rewritten after every drain, enable, or reload that drops a drained target from the config. Without it, drains last until the process stops.',
      ),
    allowRemote: z
      .boolean()
      .default(false)
      .describe('Allow an "address" that is not loopback. Hazard: the admin API can reload the config and shows the upstreams; expose it to a trusted network only.'),
  })
  .superRefine((a, ctx) => {
    if (!a.allowRemote && !isLoopbackAddress(a.address)) {
      ctx.addIssue({
        code: 'custom',
        path: ['address'],
        message: `the admin API listens on loopback ("127.0.0.1" or "::1"); ${JSON.stringify(a.address)} would expose it to the network: set "allowRemote": true if that is meant`,
      });
    }
  })
  .describe('The admin API (status, reload, Prometheus metrics): off unless configured. Port and address changes take effect after a restart.');

/** The whole configuration file. */
export const ConfigSchema = z
  .strictObject({
    $schema: z.string().optional().describe('Path to portico.schema.json, for editors.'),
    listen: z
      .strictObject({
        https: HttpsListener.default({ port: 443, addresses: ['0.0.0.0', '::'], proxyProtocol: false, websocketsOverHttp2: true, ocspStapling: true }).describe('The HTTPS listener (HTTP/2 and HTTP/1.1 by ALPN).'),
        http: Listener.nullable()
          .default({ port: 80, addresses: ['0.0.0.0', '::'], proxyProtocol: false })
          .describe('The plain HTTP listener: redirects configured hosts to https (308) and answers ACME HTTP-01 challenges. null disables it.'),
      })
      .prefault({})
      .describe('Where Portico listens. Listener changes take effect after a restart.'),
    workers: z
      .union([z.number().int().min(1).max(256), z.literal('auto')])
      .default(1)
      .describe('Worker processes sharing the listeners; "auto" = one per CPU core. A crashed worker is restarted. Changes take effect after a restart.'),
    certsDir: z.string().default('certs').describe('Directory with certificate files and ACME state, relative to the config file.'),
    defaultHost: HostName.optional().describe('A host name (an alias too) whose certificate is served to clients that send no TLS server name or one no host serves. Their requests must name it, as if they had sent it as their SNI (the Host/SNI rule), else 421; a "*." name gives its certificate but no request can name it. Default: such handshakes are refused.'),
    hosts: z
      .record(HostName, HostEntry)
      .refine((h) => Object.keys(h).length > 0, { message: 'at least one host is required' })
      .describe('Sites by primary name.'),
    acme: Acme.optional(),
    admin: Admin.optional(),
    streams: z
      .array(Stream)
      .default([])
      .describe('TCP and TLS passthrough ports: connections forwarded byte for byte to TCP targets, by port or by TLS server name. Changes to ports and addresses take effect after a restart; targets change on reload.'),
    limits: Limits.prefault({}),
    forwarding: Forwarding.prefault({}),
    log: Log.prefault({}),
  })
  .describe('Portico configuration.');

/** A configuration file as written (before defaults). */
export type ConfigInput = z.input<typeof ConfigSchema>;
/** A validated configuration with defaults applied. */
export type Config = z.output<typeof ConfigSchema>;
/** An upstream as validated. */
export type UpstreamConfig = z.output<typeof Upstream>;
export type HealthCheckConfig = z.output<typeof HealthCheck>;
export type PassiveHealthConfig = z.output<typeof PassiveHealth>;
export type StreamConfig = z.output<typeof Stream>;
export type HeaderRulesConfig = z.output<typeof HeaderRules>;
export type RedirectConfig = z.output<typeof Redirect>;
export type RespondConfig = z.output<typeof Respond>;
export type FilesConfig = z.output<typeof Files>;
