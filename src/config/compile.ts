/**
 * Compiling a validated Config into a Plan: host and route lookups, upstream
 * targets from the registry, certificates loaded and checked. Fails with every
 * problem found (as ConfigIssues) and changes nothing.
 */
import { createHash, createPrivateKey, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { isAbsolute, resolve } from 'node:path';
import { loadCertPair, type CertPair } from '../tls/cert-pair.js';
import { acmeCertId, fileCertId } from '../tls/cert-store.js';
import { type Target, type TargetRegistry, type TargetTls } from '../upstream/target.js';
import type { ConfigIssue } from './load.js';
import { formatPath } from './json-path.js';
import { normalizeRoutePath, type ClientAuthPlan, type HostPlan, type Plan, type RoutePlan, type UpstreamPlan } from './plan.js';
import { compileClientAuth } from '../tls/client-auth.js';
import type { Config, HealthCheckConfig, PassiveHealthConfig, UpstreamConfig } from './schema.js';
import type { HealthSettings } from '../upstream/health.js';
import { RequestStatsRegistry } from '../proxy/request-stats.js';
import { readAdminTokenDigest } from '../admin/token.js';
import { compileStreams } from '../stream/stream-plan.js';
import type { StreamHealthRegistry, StreamTargetHealth } from '../stream/stream-health.js';
import { compileHeaderRules } from '../proxy/header-rules.js';
import { compileAnswer } from '../proxy/route-answer.js';
import { compileCompress } from '../proxy/compress.js';
import { compileCache, type CachePlan } from '../cache/cache-plan.js';
import { RateLimitRegistry, type RateLimiter, type RateLimitSetting } from '../proxy/rate-limit.js';
import { RouteMatch } from '../proxy/route-match.js';
import { compileForwardAuth } from '../proxy/forward-auth.js';
import { compileAddressList } from '../proxy/client-address.js';
import { checkLogFiles, resolveLogFilePaths } from '../log/log-files.js';
import { compileFiles, type FilesPlan } from '../files/files-plan.js';
import { loadErrorPages } from '../proxy/error-pages.js';
import { BasicAuth } from '../proxy/basic-auth.js';
import { parseDurationMs, parseSizeBytes } from './units.js';

/** What compiling needs from outside. */
export interface CompileDeps {
  readonly targets: TargetRegistry;
  /** Request counters by route, kept across reloads; a fresh registry when absent (portico check). */
  readonly stats?: RequestStatsRegistry;
  readonly generation: number;
  /** Pairs already loaded, by id (the serving store): one whose files hold the same bytes is reused, not parsed again. */
  readonly certs?: { get(id: string): CertPair | undefined };
  /** Stream targets' health checks, kept across reloads; a fresh registry when absent (portico check). */
  readonly streamHealth?: StreamHealthRegistry;
  /** Rate limiters with their buckets, kept across reloads; a fresh registry when absent (portico check). */
  readonly rateLimits?: RateLimitRegistry;
}

/** A compiled Plan with the certificates it needs, or every issue. */
export type CompileResult =
  | {
      readonly ok: true;
      readonly plan: Plan;
      readonly certs: ReadonlyMap<string, CertPair>;
      readonly usedTargets: ReadonlySet<Target>;
      readonly usedStreamHealth: ReadonlySet<StreamTargetHealth>;
      /** The rate limiters the Plan uses: the registry keeps these (and their buckets) once it is published. */
      readonly usedRateLimits: ReadonlySet<RateLimiter>;
    }
  | { readonly ok: false; readonly issues: readonly ConfigIssue[] };

/** Resolves a file name against the certs directory. */
export function certPath(certsDir: string, file: string): string {
  return isAbsolute(file) ? file : resolve(certsDir, file);
}

/** A "maxBodySize" in bytes; 0 (and false) for no limit. */
function bodyLimitBytes(size: string | false): number {
  return size === false ? 0 : parseSizeBytes(size);
}


/** Sticky-session cookie values: a hash of each target's URL, so the cookie does not show the address. */
function stickyFor(targets: readonly Target[], cookie: string): UpstreamPlan['sticky'] {
  const values = targets.map((t) => createHash('sha256').update(t.url).digest('base64url').slice(0, 16));
  return { cookie, values, byValue: new Map(values.map((v, i) => [v, i])) };
}

/**
 * An upstream's health settings in ms. Passive counting only applies to upstreams of two or more
 * targets: taking out a lone target would only turn its errors into 503s (nginx ignores max_fails there too).
 */
function compileHealth(a: HealthCheckConfig | undefined, passive: PassiveHealthConfig | undefined, targetCount: number): HealthSettings | undefined {
  const p = targetCount >= 2 ? passive : undefined;
  if (a === undefined && p === undefined) return undefined;
  return {
    active:
      a === undefined
        ? undefined
        : {
            path: a.path,
            intervalMs: parseDurationMs(a.interval),
            timeoutMs: parseDurationMs(a.timeout),
            expectStatus: a.expectStatus,
            host: a.host,
            unhealthyAfter: a.unhealthyAfter,
            healthyAfter: a.healthyAfter,
          },
    passive: p === undefined ? undefined : { maxFails: p.maxFails, failTimeoutMs: parseDurationMs(p.failTimeout) },
  };
}

/** Compiles a config. `baseDir` is the config file's directory. */
export async function compilePlan(config: Config, baseDir: string, deps: CompileDeps): Promise<CompileResult> {
  const issues: ConfigIssue[] = [];
  const certsDir = resolve(baseDir, config.certsDir);
  const usedTargets = new Set<Target>();
  const usedStreamHealth = new Set<StreamTargetHealth>();
  const stats = deps.stats ?? new RequestStatsRegistry();
  const rateLimits = deps.rateLimits ?? new RateLimitRegistry();
  const usedRateLimits = new Set<RateLimiter>();
  /** The limiter of a "rateLimit" in `scope` (`host <name>` or `route <id>`): the same one, buckets and all, while its settings stay. */
  const limitFor = (scope: string, setting: RateLimitSetting): RateLimiter => {
    const l = rateLimits.get(scope, setting);
    usedRateLimits.add(l);
    return l;
  };
  const caCache = new Map<string, Buffer>();

  // Certificates: one load per distinct pair, validated against every name it serves.
  const pairNames = new Map<string, { cert: string; key: string; names: string[]; where: string }>();
  for (const [name, host] of Object.entries(config.hosts)) {
    if (!('cert' in host.tls)) continue;
    const cert = certPath(certsDir, host.tls.cert);
    const key = certPath(certsDir, host.tls.key);
    const id = fileCertId(cert, key);
    const entry = pairNames.get(id) ?? { cert, key, names: [], where: formatPath(['hosts', name, 'tls']) };
    entry.names.push(name, ...host.aliases);
    pairNames.set(id, entry);
  }
  const certs = new Map<string, CertPair>();
  await Promise.all(
    [...pairNames].map(async ([id, p]) => {
      try {
        certs.set(id, await loadCertPair(p.cert, p.key, p.names, deps.certs?.get(id)));
      } catch (err) {
        issues.push({ path: p.where, message: (err as Error).message });
      }
    }),
  );

  const readCa = async (file: string, where: string): Promise<Buffer | undefined> => {
    const abs = certPath(certsDir, file);
    const cached = caCache.get(abs);
    if (cached !== undefined) return cached;
    try {
      const pem = await readFile(abs);
      caCache.set(abs, pem);
      return pem;
    } catch (err) {
      issues.push({ path: where, message: `cannot read CA file ${abs} (${(err as NodeJS.ErrnoException).code ?? 'error'})` });
      return undefined;
    }
  };

  /** An upstream's client certificate and key (mutual TLS), read and checked to belong together. */
  const readClientCert = async (certFile: string, keyFile: string, where: (string | number)[]): Promise<{ cert: Buffer; key: Buffer } | undefined> => {
    const files = { cert: certPath(certsDir, certFile), key: certPath(certsDir, keyFile) };
    let cert: Buffer;
    let key: Buffer;
    try {
      [cert, key] = await Promise.all([readFile(files.cert), readFile(files.key)]);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      issues.push({ path: formatPath([...where, e.path === files.key ? 'key' : 'cert']), message: `cannot read ${e.path ?? files.cert} (${e.code ?? 'error'})` });
      return undefined;
    }
    let leaf: X509Certificate;
    try {
      leaf = new X509Certificate(cert);
    } catch {
      issues.push({ path: formatPath([...where, 'cert']), message: `${files.cert} holds no PEM certificate` });
      return undefined;
    }
    try {
      if (!leaf.checkPrivateKey(createPrivateKey(key))) {
        issues.push({ path: formatPath([...where, 'key']), message: `${files.key} is not the key of ${files.cert}` });
        return undefined;
      }
    } catch {
      issues.push({ path: formatPath([...where, 'key']), message: `${files.key} holds no PEM private key` });
      return undefined;
    }
    if (Date.parse(leaf.validTo) < Date.now()) {
      issues.push({ path: formatPath([...where, 'cert']), message: `${files.cert} expired on ${new Date(leaf.validTo).toISOString()}; upstreams would refuse it` });
      return undefined;
    }
    return { cert, key };
  };

  const compileUpstream = async (u: UpstreamConfig, where: (string | number)[]): Promise<UpstreamPlan> => {
    const spec = typeof u === 'string' ? { targets: [u] } : Array.isArray(u) ? { targets: u } : u;
    const protocol = 'protocol' in spec && spec.protocol !== undefined ? spec.protocol : 'auto';
    const tlsConf = 'tls' in spec ? spec.tls : undefined;
    const ca = tlsConf?.ca === undefined ? undefined : await readCa(tlsConf.ca, formatPath([...where, 'tls', 'ca']));
    const client = tlsConf?.cert === undefined || tlsConf.key === undefined ? undefined : await readClientCert(tlsConf.cert, tlsConf.key, [...where, 'tls']);
    const health = compileHealth('healthCheck' in spec ? spec.healthCheck : undefined, 'passiveHealth' in spec ? spec.passiveHealth : undefined, spec.targets.length);
    const targets: Target[] = [];
    const weights: number[] = [];
    const backup: boolean[] = [];
    for (const entry of spec.targets) {
      const t = typeof entry === 'string' ? entry : entry.url;
      weights.push(typeof entry === 'string' ? 1 : entry.weight);
      backup.push(typeof entry === 'string' ? false : entry.backup);
      const url = new URL(t);
      let tls: TargetTls | undefined;
      if (url.protocol === 'https:') {
        tls = {
          ca,
          cert: client?.cert,
          key: client?.key,
          servername: tlsConf?.servername ?? (isIP(url.hostname.replace(/^\[|\]$/g, '')) === 0 ? url.hostname : ''),
          rejectUnauthorized: !(tlsConf?.insecureSkipVerify ?? false),
        };
      }
      const connectTimeoutMs = parseDurationMs('connectTimeout' in spec && spec.connectTimeout !== undefined ? spec.connectTimeout : '5s');
      const target = deps.targets.get(url, protocol, tls, connectTimeoutMs, health);
      usedTargets.add(target);
      targets.push(target);
    }
    const policy = 'loadBalancing' in spec && spec.loadBalancing !== undefined ? spec.loadBalancing : 'round-robin';
    return {
      targets,
      next: 0,
      policy,
      weighted: weights.some((w) => w !== 1) || backup.some((b) => b) ? { weights, backup, credit: weights.map(() => 0) } : undefined,
      sticky: policy === 'cookie' ? stickyFor(targets, 'stickyCookie' in spec && spec.stickyCookie !== undefined ? spec.stickyCookie : 'portico_upstream') : undefined,
      hostHeader: 'hostHeader' in spec && spec.hostHeader !== undefined ? spec.hostHeader : 'preserve',
      connectTimeoutMs: parseDurationMs('connectTimeout' in spec && spec.connectTimeout !== undefined ? spec.connectTimeout : '5s'),
      responseTimeoutMs: parseDurationMs('responseTimeout' in spec && spec.responseTimeout !== undefined ? spec.responseTimeout : '60s'),
      tunnelIdleTimeoutMs: parseDurationMs('tunnelIdleTimeout' in spec && spec.tunnelIdleTimeout !== undefined ? spec.tunnelIdleTimeout : '1h'),
      maxRequests: 'maxRequests' in spec && spec.maxRequests !== undefined ? spec.maxRequests : 0,
      queueTimeoutMs: parseDurationMs('queueTimeout' in spec && spec.queueTimeout !== undefined ? spec.queueTimeout : '5s'),
      requestBufferBytes: 'requestBuffer' in spec && spec.requestBuffer !== undefined ? parseSizeBytes(spec.requestBuffer) : 0,
      queue: [],
    };
  };

  const trustedProxies = compileAddressList(config.forwarding.trustedProxies);
  const cacheBytes = parseSizeBytes(config.limits.cacheSize);
  /** A "cache" setting compiled; one whose largest response would not fit in limits.cacheSize is a problem at its path. */
  const cacheAt = (value: Parameters<typeof compileCache>[0], at: readonly (string | number)[]): CachePlan | undefined => {
    const c = compileCache(value);
    if (c !== undefined && c.maxObjectBytes > cacheBytes) {
      const own = typeof value === 'object' && value !== null && 'maxObjectSize' in value;
      issues.push({
        path: formatPath(own ? [...at, 'maxObjectSize'] : [...at]),
        message: `responses up to ${c.maxObjectBytes} bytes would be stored, but limits.cacheSize holds ${cacheBytes} bytes in all; raise limits.cacheSize or lower "maxObjectSize"`,
      });
    }
    return c;
  };
  const maxBodyBytes = config.limits.maxBodySize === undefined ? 0 : bodyLimitBytes(config.limits.maxBodySize);
  const exact = new Map<string, HostPlan>();
  const wildcard = new Map<string, HostPlan>();
  const hosts: HostPlan[] = [];
  for (const [name, host] of Object.entries(config.hosts)) {
    const routes = new Map<string, RoutePlan>();
    const hostCompress = compileCompress(host.compress);
    const hostCache = cacheAt(host.cache, ['hosts', name, 'cache']);
    const hostLimit = host.rateLimit === undefined ? undefined : limitFor(`host ${name}`, host.rateLimit);
    const hostAllow = compileAddressList(host.allowFrom);
    const hostDeny = compileAddressList(host.denyFrom);
    const hostAuth = host.basicAuth === undefined ? undefined : new BasicAuth(host.basicAuth.realm, host.basicAuth.users);
    const hostMaxBody = host.maxBodySize === undefined ? maxBodyBytes : bodyLimitBytes(host.maxBodySize);
    const hostForwardAuth = host.forwardAuth === undefined ? undefined : compileForwardAuth(host.forwardAuth, parseDurationMs(host.forwardAuth.timeout));
    let errorPages: HostPlan['errorPages'];
    let upstreamErrorPages: RoutePlan['upstreamErrorPages'];
    if (host.errorPages !== undefined) {
      // Pages for statuses only upstreams answer are allowed once anything on the host intercepts upstream errors.
      const intercepts = host.interceptErrors || host.routes.some((r) => r.interceptErrors === true);
      const loaded = await loadErrorPages(baseDir, host.errorPages, intercepts);
      for (const p of loaded.problems) issues.push({ path: formatPath(['hosts', name, 'errorPages', p.key]), message: p.message });
      errorPages = loaded.pages.size > 0 ? loaded.pages : undefined;
      upstreamErrorPages = loaded.upstreamPages.size > 0 ? loaded.upstreamPages : undefined;
    }
    // Routes with one path: those with a match in the config's order, then the one without (linked by orElse).
    const byPath = new Map<string, RoutePlan[]>();
    for (let i = 0; i < host.routes.length; i++) {
      const r = host.routes[i]!;
      const path = normalizeRoutePath(r.path);
      const match = r.match === undefined ? undefined : new RouteMatch(r.match, trustedProxies);
      let files: FilesPlan | undefined;
      if (r.files !== undefined) {
        const compiled = await compileFiles(r.files, baseDir);
        for (const p of compiled.problems) issues.push({ path: formatPath(['hosts', name, 'routes', i, 'files', ...(typeof r.files === 'string' ? [] : [p.key])]), message: p.message });
        files = compiled.plan;
      }
      const label = match === undefined ? path : `${path} [${match.label}]`;
      const id = `${name} ${label}`;
      const route: RoutePlan = {
        id,
        path,
        stripLength: r.stripPrefix && path !== '/' ? path.length : 0,
        addPrefix: r.addPrefix === undefined ? '' : normalizeRoutePath(r.addPrefix) === '/' ? '' : normalizeRoutePath(r.addPrefix),
        rewrite: r.rewrite === undefined ? undefined : { pattern: new RegExp(r.rewrite.pattern), to: r.rewrite.to },
        upstream: r.upstream === undefined ? undefined : await compileUpstream(r.upstream, ['hosts', name, 'routes', i, 'upstream']),
        answer: compileAnswer(r.redirect, r.respond),
        files,
        stats: stats.get(name, label),
        allow: r.allowFrom === undefined ? hostAllow : compileAddressList(r.allowFrom),
        deny: r.denyFrom === undefined ? hostDeny : compileAddressList([...(host.denyFrom ?? []), ...r.denyFrom]),
        compress: r.compress === undefined ? hostCompress : compileCompress(r.compress),
        cache: r.upstream === undefined ? undefined : r.cache === undefined ? hostCache : cacheAt(r.cache, ['hosts', name, 'routes', i, 'cache']),
        limit: r.rateLimit === undefined ? hostLimit : r.rateLimit === false ? undefined : limitFor(`route ${id}`, r.rateLimit),
        auth: r.basicAuth === undefined ? hostAuth : r.basicAuth === false ? undefined : new BasicAuth(r.basicAuth.realm, r.basicAuth.users),
        headerRules: compileHeaderRules(host.headers, r.headers),
        maxBodyBytes: r.maxBodySize === undefined ? hostMaxBody : bodyLimitBytes(r.maxBodySize),
        forwardAuth: r.forwardAuth === undefined ? hostForwardAuth : r.forwardAuth === false ? undefined : compileForwardAuth(r.forwardAuth, parseDurationMs(r.forwardAuth.timeout)),
        upstreamErrorPages: r.upstream !== undefined && (r.interceptErrors ?? host.interceptErrors) ? upstreamErrorPages : undefined,
        earlyHints: r.upstream !== undefined && (r.earlyHints ?? host.earlyHints),
        match,
        orElse: undefined,
      };
      const same = byPath.get(path);
      if (same === undefined) byPath.set(path, [route]);
      else same.push(route);
    }
    for (const [path, list] of byPath) {
      const ordered = [...list.filter((r) => r.match !== undefined), ...list.filter((r) => r.match === undefined)];
      for (let k = 0; k + 1 < ordered.length; k++) (ordered[k] as { orElse: RoutePlan | undefined }).orElse = ordered[k + 1];
      routes.set(path, ordered[0]!);
    }
    const acme = 'acme' in host.tls;
    const certId = 'cert' in host.tls
      ? fileCertId(certPath(certsDir, host.tls.cert), certPath(certsDir, host.tls.key))
      : acmeCertId(name);
    let clientAuth: ClientAuthPlan | undefined;
    if (host.clientAuth !== undefined) {
      const where = formatPath(['hosts', name, 'clientAuth', 'ca']);
      const pem = await readCa(host.clientAuth.ca, where);
      try {
        if (pem !== undefined) clientAuth = compileClientAuth(name, certPath(certsDir, host.clientAuth.ca), pem, host.clientAuth.mode);
      } catch (err) {
        issues.push({ path: where, message: (err as Error).message });
      }
    }
    const plan: HostPlan = {
      name,
      names: [name, ...host.aliases],
      certId,
      acme,
      sharing: host.connectionSharing === 'same-certificate',
      servePlain: host.plainHttp === 'serve',
      errorPages,
      routes,
      sharedNames: [],
      clientAuth,
    };
    hosts.push(plan);
    for (const n of plan.names) {
      if (n.startsWith('*.')) wildcard.set(n.slice(2), plan);
      else exact.set(n, plan);
    }
  }
  // Names a connection may carry besides its own (ORIGIN frame, RFC 8336).
  for (const h of hosts) {
    if (!h.sharing) continue;
    const shared: string[] = [];
    for (const o of hosts) {
      if (o.sharing && o.certId === h.certId) for (const n of o.names) if (!n.startsWith('*.')) shared.push(n);
    }
    (h as { sharedNames: readonly string[] }).sharedNames = shared;
  }


  let adminTokenDigest: Buffer | undefined;
  if (config.admin !== undefined) {
    try {
      adminTokenDigest = await readAdminTokenDigest(baseDir, config.admin.tokenFile);
    } catch (err) {
      issues.push({ path: 'admin.tokenFile', message: (err as Error).message });
    }
  }

  // A log file that cannot be opened is refused here, so `portico check` and a reload say so with its path.
  const logFiles = resolveLogFilePaths(config.log, baseDir);
  issues.push(...checkLogFiles(logFiles));

  if (issues.length > 0) return { ok: false, issues };
  const port = config.listen.https.port;
  const limits = config.limits;
  const plan: Plan = {
    generation: deps.generation,
    exact,
    wildcard,
    hosts,
    defaultHost: config.defaultHost === undefined ? undefined : (exact.get(config.defaultHost) ?? wildcard.get(config.defaultHost.slice(2))),
    defaultName: config.defaultHost,
    httpsPort: port,
    httpsPortSuffix: port === 443 ? '' : `:${port}`,
    limits: {
      headersTimeoutMs: parseDurationMs(limits.headersTimeout),
      requestTimeoutMs: parseDurationMs(limits.requestTimeout),
      bodyTimeoutMs: parseDurationMs(limits.bodyTimeout),
      keepAliveTimeoutMs: parseDurationMs(limits.keepAliveTimeout),
      sendTimeoutMs: parseDurationMs(limits.sendTimeout),
      maxHeaderBytes: parseSizeBytes(limits.maxHeaderSize),
      maxConcurrentStreams: limits.maxConcurrentStreams,
      shutdownTimeoutMs: parseDurationMs(limits.shutdownTimeout),
      maxConnections: limits.maxConnections,
      cacheBytes,
    },
    trustedProxies,
    sendForwarded: config.forwarding.forwarded,
    sendVia: config.forwarding.via,
    websocketsOverHttp2: config.listen.https.websocketsOverHttp2,
    ocspStapling: config.listen.https.ocspStapling,
    requestId: config.forwarding.requestId,
    accessLog: config.log.access,
    accessHeaders: [...new Set(config.log.accessHeaders.map((h) => h.toLowerCase()))],
    logFiles,
    certsDir,
    baseDir,
    unroutedStats: stats.get('', ''),
    streams: compileStreams(config.streams, deps.streamHealth, usedStreamHealth),
    adminTokenDigest,
  };
  return { ok: true, plan, certs, usedTargets, usedStreamHealth, usedRateLimits };
}
