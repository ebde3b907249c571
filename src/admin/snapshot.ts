/**
 * What one Portico process reports to the admin API: its config generation and
 * last reload, its routes' request counters, its upstream targets' health, drain
 * state and connections, its certificates, and its own memory and CPU. Plain JSON, so a
 * worker can send it to the primary over IPC.
 */
import { responseCache } from '../cache/response-cache.js';
import type { ConfigIssue } from '../config/load.js';
import type { Portico } from '../server/portico.js';
import type { Target } from '../upstream/target.js';
import type { OcspStatus } from '../tls/ocsp-stapler.js';

export interface RouteSnapshot {
  /** "" for requests no route took. */
  readonly host: string;
  readonly path: string;
  /** [no response, 1xx, 2xx, 3xx, 4xx, 5xx] */
  readonly byClass: readonly number[];
  readonly durationSumMs: number;
  /** Requests per duration bucket (see DURATION_BOUNDS_MS), not cumulative. */
  readonly durationBuckets: readonly number[];
  /** Upgraded connections (WebSockets) open now. */
  readonly openUpgrades: number;
  /** Response cache: requests answered from it, and those it could not answer. */
  readonly cacheHits: number;
  readonly cacheMisses: number;
}

export interface UpstreamSnapshot {
  readonly url: string;
  /** It takes new requests: healthy and not drained. */
  readonly available: boolean;
  /** Its health checks and passive health let it take requests (true without either), drained or not. */
  readonly healthy: boolean;
  /** Drained over the admin API: no new requests; those in flight run to their end. */
  readonly drained: boolean;
  /** Why health has it out, when it does. */
  readonly reason: string | undefined;
  readonly healthChecked: boolean;
  readonly openConnections: number;
  /** Requests in flight to it counted against an upstream's maxRequests (0 when no upstream of it sets one). */
  readonly limitedRequests: number;
  /** Requests waiting in the queues of upstreams with this target for a slot below maxRequests. */
  readonly queued: number;
}

export interface CertificateSnapshot {
  readonly id: string;
  /** The leaf's subjectAltName, as Node prints it ("DNS:a.example, DNS:b.example"). */
  readonly subjectAltName: string;
  readonly issuer: string;
  readonly notAfter: string;
  /** Set while a replacement of its files is refused (this certificate serving on): why, and since when. */
  readonly refused?: { readonly code: string; readonly reason: string; readonly at: string };
}

export interface StreamSnapshot {
  readonly port: number;
  readonly open: number;
  readonly closed: number;
  readonly failed: number;
  readonly bytesIn: number;
  readonly bytesOut: number;
}

export interface StreamTargetSnapshot {
  readonly url: string;
  /** Its TCP health checks leave it in rotation. */
  readonly available: boolean;
  /** Why it is out, when it is (the last failed check's reason otherwise). */
  readonly reason: string | undefined;
}

export interface Snapshot {
  readonly pid: number;
  readonly startedAt: string;
  readonly generation: number;
  readonly lastReload: { readonly ok: boolean; readonly at: string | undefined; readonly issues: readonly ConfigIssue[] | undefined };
  readonly routes: readonly RouteSnapshot[];
  readonly upstreams: readonly UpstreamSnapshot[];
  readonly certificates: readonly CertificateSnapshot[];
  /** OCSP stapling of each certificate in use that names an OCSP responder, in this process (each fetches for itself). */
  readonly ocsp: readonly OcspStatus[];
  /** Hosts with tls.acme: their orders and the last failure, as this process sees them. */
  readonly acme: readonly AcmeSnapshot[];
  readonly streams: readonly StreamSnapshot[];
  /** Stream targets with health checks. */
  readonly streamTargets: readonly StreamTargetSnapshot[];
  /** The response cache of this process. */
  readonly cache: CacheSnapshot;
  readonly rssBytes: number;
  readonly cpuSeconds: number;
}

/** One ACME host in one process. */
export interface AcmeSnapshot {
  readonly host: string;
  readonly names: readonly string[];
  /** This process holds the orderer lock (the others only load what it writes). */
  readonly orderer: boolean;
  /** Orders started by this process, and failures in a row (orders, renewals or saves). */
  readonly orders: number;
  readonly failures: number;
  /** Why the last attempt failed, while failures > 0. */
  readonly lastError: string | null;
  /** When the served certificate is due for renewal (known to the orderer only). */
  readonly renewAt: string | null;
}

/** One process's response cache. */
export interface CacheSnapshot {
  readonly entries: number;
  readonly bytes: number;
  readonly maxBytes: number;
  /** Requests answered from it, and GET/HEAD requests on cached routes it could not answer, since start. */
  readonly hits: number;
  readonly misses: number;
  /** Responses stored, and dropped to make room, since start. */
  readonly stores: number;
  readonly evictions: number;
}

/** Requests waiting for a slot in the upstreams that have `t`. */
function queuedFor(t: Target): number {
  let n = 0;
  if (t.waiting !== undefined) for (const u of t.waiting) n += u.queue.length;
  return n;
}

/** The snapshot of this process. */
export function takeSnapshot(p: Portico): Snapshot {
  const routes: RouteSnapshot[] = [];
  for (const s of p.requestStats.all()) routes.push({ host: s.host, path: s.path, byClass: [...s.byClass], durationSumMs: s.durationSumMs, durationBuckets: [...s.durationBuckets], openUpgrades: s.openUpgrades, cacheHits: s.cacheHits, cacheMisses: s.cacheMisses });
  const upstreams: UpstreamSnapshot[] = [];
  for (const t of p.targets.all()) {
    upstreams.push({ url: t.url, available: t.available, healthy: t.healthy, drained: t.drained, reason: t.health?.state.reason, healthChecked: t.health !== undefined, openConnections: t.h1Pool?.open ?? 0, limitedRequests: t.limitedInFlight, queued: queuedFor(t) });
  }
  const certificates: CertificateSnapshot[] = [];
  for (const [id, pair] of p.certs.entries()) {
    const problem = p.certs.problem(id);
    certificates.push({
      id,
      subjectAltName: pair.leaf.subjectAltName ?? '',
      issuer: pair.issuer,
      notAfter: pair.notAfter.toISOString(),
      ...(problem === undefined ? {} : { refused: { code: problem.code, reason: problem.reason, at: problem.at.toISOString() } }),
    });
  }
  const cpu = process.cpuUsage();
  return {
    pid: process.pid,
    startedAt: p.startedAt.toISOString(),
    generation: p.state?.plan.generation ?? 0,
    lastReload: { ok: p.lastReloadError === undefined, at: p.lastReloadAt?.toISOString(), issues: p.lastReloadError },
    routes,
    upstreams,
    certificates,
    ocsp: p.ocsp.statuses(),
    acme: (p.acme?.statuses() ?? []).map(({ host, orderer, status }) => ({
      host,
      names: status.names,
      orderer,
      orders: status.orders,
      failures: status.failures,
      lastError: status.lastError ?? null,
      renewAt: status.renewAt === undefined ? null : new Date(status.renewAt).toISOString(),
    })),
    streams: p.streams.map((l) => ({ port: l.port, open: l.open, closed: l.stats.closed, failed: l.stats.failed, bytesIn: l.stats.bytesIn, bytesOut: l.stats.bytesOut })),
    streamTargets: [...p.streamHealth.all()].map((h) => ({ url: h.url, available: h.available, reason: h.reason })),
    cache: { entries: responseCache.entries, bytes: responseCache.bytes, maxBytes: responseCache.maxBytes, ...responseCache.counters },
    rssBytes: process.memoryUsage.rss(),
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
  };
}

/**
 * `total` (undefined for none yet) plus the counters of `s`, a process that has exited: the
 * counters of what it served, so the primary's metrics do not go back when a worker is replaced
 * (Prometheus reads a drop as a counter reset and counts the whole remaining total as new).
 * Gauges (open connections, health, certificates) are left out: they end with the process.
 */
export function addRetiredCounters(total: Snapshot | undefined, s: Snapshot): Snapshot {
  const routes = new Map<string, RouteSnapshot>();
  for (const r of [...(total?.routes ?? []), ...s.routes]) {
    const key = `${r.host} ${r.path}`;
    const acc = routes.get(key);
    routes.set(key, {
      host: r.host,
      path: r.path,
      byClass: r.byClass.map((n, i) => n + (acc?.byClass[i] ?? 0)),
      durationSumMs: r.durationSumMs + (acc?.durationSumMs ?? 0),
      durationBuckets: r.durationBuckets.map((n, i) => n + (acc?.durationBuckets[i] ?? 0)),
      openUpgrades: 0,
      cacheHits: r.cacheHits + (acc?.cacheHits ?? 0),
      cacheMisses: r.cacheMisses + (acc?.cacheMisses ?? 0),
    });
  }
  const streams = new Map<number, StreamSnapshot>();
  for (const st of [...(total?.streams ?? []), ...s.streams]) {
    const acc = streams.get(st.port);
    streams.set(st.port, { port: st.port, open: 0, closed: st.closed + (acc?.closed ?? 0), failed: st.failed + (acc?.failed ?? 0), bytesIn: st.bytesIn + (acc?.bytesIn ?? 0), bytesOut: st.bytesOut + (acc?.bytesOut ?? 0) });
  }
  const c = total?.cache;
  return {
    pid: 0,
    startedAt: total?.startedAt ?? s.startedAt,
    generation: 0,
    lastReload: { ok: true, at: undefined, issues: undefined },
    routes: [...routes.values()],
    upstreams: [],
    certificates: [],
    ocsp: [],
    acme: [],
    streams: [...streams.values()],
    streamTargets: [],
    cache: { entries: 0, bytes: 0, maxBytes: 0, hits: s.cache.hits + (c?.hits ?? 0), misses: s.cache.misses + (c?.misses ?? 0), stores: s.cache.stores + (c?.stores ?? 0), evictions: s.cache.evictions + (c?.evictions ?? 0) },
    rssBytes: 0,
    cpuSeconds: s.cpuSeconds + (total?.cpuSeconds ?? 0),
  };
}
