/**
 * The Prometheus text exposition (format 0.0.4) of the processes' snapshots:
 * counters summed over the processes, gauges per target or certificate.
 * Rendered at scrape time from plain counters, so the request path never
 * touches a metrics library.
 */
import type { Snapshot } from './snapshot.js';
import { DURATION_BOUNDS_MS } from '../proxy/request-stats.js';

const CLASSES = ['none', '1xx', '2xx', '3xx', '4xx', '5xx'];

/** A label value escaped as the format requires (backslash, double quote, newline). */
function esc(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function labels(pairs: Record<string, string>): string {
  const parts = Object.entries(pairs).map(([k, v]) => `${k}="${esc(v)}"`);
  return parts.length === 0 ? '' : `{${parts.join(',')}}`;
}

class Family {
  readonly lines: string[];
  constructor(name: string, type: 'counter' | 'gauge' | 'histogram', help: string) {
    this.lines = [`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`];
  }
  add(name: string, l: Record<string, string>, value: number): void {
    this.lines.push(`${name}${labels(l)} ${Number.isFinite(value) ? value : 0}`);
  }
}

/**
 * The metrics page for these snapshots (one per process); `retired` holds the counters of workers
 * that exited (addRetiredCounters), added to the counters so they never go back.
 */
export function renderMetrics(snapshots: readonly Snapshot[], retired?: Snapshot): string {
  const counted = retired === undefined ? snapshots : [...snapshots, retired];
  const requests = new Family('portico_requests_total', 'counter', 'Requests answered, by host, route path and status class ("none": the client went away before a response; host "" for requests no route took).');
  const duration = new Family('portico_request_duration_seconds', 'histogram', 'Time from request head to the end of the response.');
  const upgrades = new Family('portico_open_upgraded_connections', 'gauge', 'Upgraded connections (WebSockets) open now, by host and route path, summed over the processes.');
  const cacheRequests = new Family('portico_cache_requests_total', 'counter', 'GET and HEAD requests on routes with a response cache, by host, route path and result ("hit": answered from the cache without asking the upstream; "miss": forwarded, as it had no fresh response, had a stale one to revalidate, or the request asked for a new one), summed over the processes.');
  const routes = new Map<string, { host: string; path: string; byClass: number[]; sumMs: number; buckets: number[]; openUpgrades: number; cacheHits: number; cacheMisses: number }>();
  for (const s of counted) {
    for (const r of s.routes) {
      const key = `${r.host} ${r.path}`;
      const acc = routes.get(key) ?? { host: r.host, path: r.path, byClass: [0, 0, 0, 0, 0, 0], sumMs: 0, buckets: new Array<number>(DURATION_BOUNDS_MS.length + 1).fill(0), openUpgrades: 0, cacheHits: 0, cacheMisses: 0 };
      acc.openUpgrades += r.openUpgrades;
      acc.cacheHits += r.cacheHits;
      acc.cacheMisses += r.cacheMisses;
      r.byClass.forEach((n, i) => (acc.byClass[i] = (acc.byClass[i] ?? 0) + n));
      r.durationBuckets.forEach((n, i) => (acc.buckets[i] = (acc.buckets[i] ?? 0) + n));
      acc.sumMs += r.durationSumMs;
      routes.set(key, acc);
    }
  }
  for (const r of routes.values()) {
    let count = 0;
    r.byClass.forEach((n, i) => {
      count += n;
      if (n > 0) requests.add('portico_requests_total', { host: r.host, route: r.path, class: CLASSES[i] as string }, n);
    });
    let cumulative = 0;
    DURATION_BOUNDS_MS.forEach((bound, i) => {
      cumulative += r.buckets[i] ?? 0;
      duration.add('portico_request_duration_seconds_bucket', { host: r.host, route: r.path, le: String(bound / 1000) }, cumulative);
    });
    duration.add('portico_request_duration_seconds_bucket', { host: r.host, route: r.path, le: '+Inf' }, count);
    duration.add('portico_request_duration_seconds_sum', { host: r.host, route: r.path }, r.sumMs / 1000);
    duration.add('portico_request_duration_seconds_count', { host: r.host, route: r.path }, count);
    // Only routes that ever took an upgrade (1xx answers), so plain routes add no lines.
    if ((r.byClass[1] ?? 0) > 0) upgrades.add('portico_open_upgraded_connections', { host: r.host, route: r.path }, r.openUpgrades);
    // Only routes the cache has seen requests on.
    if (r.cacheHits + r.cacheMisses > 0) {
      cacheRequests.add('portico_cache_requests_total', { host: r.host, route: r.path, result: 'hit' }, r.cacheHits);
      cacheRequests.add('portico_cache_requests_total', { host: r.host, route: r.path, result: 'miss' }, r.cacheMisses);
    }
  }

  const up = new Family('portico_upstream_up', 'gauge', 'Whether an upstream target is healthy (1) or out of rotation by its health checks or passive health (0) in some process. A drained target keeps its health here; see portico_upstream_drained.');
  const drained = new Family('portico_upstream_drained', 'gauge', 'Whether an upstream target is drained over the admin API (1: no process sends it new requests; requests and WebSockets already on it run on) or not (0).');
  const conns = new Family('portico_upstream_open_connections', 'gauge', 'Open HTTP/1.1 connections to an upstream target (idle and busy), summed over the processes.');
  const limited = new Family('portico_upstream_limited_requests', 'gauge', 'Requests in flight to an upstream target counted against an upstream\'s maxRequests, summed over the processes.');
  const queued = new Family('portico_upstream_queued_requests', 'gauge', 'Requests waiting for a slot below maxRequests in upstreams with this target, summed over the processes.');
  const targets = new Map<string, { up: boolean; drained: boolean; open: number; limited: number; queued: number }>();
  for (const s of snapshots) {
    for (const t of s.upstreams) {
      const acc = targets.get(t.url) ?? { up: true, drained: true, open: 0, limited: 0, queued: 0 };
      acc.up &&= t.healthy;
      acc.drained &&= t.drained;
      acc.open += t.openConnections;
      acc.limited += t.limitedRequests;
      acc.queued += t.queued;
      targets.set(t.url, acc);
    }
  }
  for (const [url, t] of targets) {
    up.add('portico_upstream_up', { upstream: url }, t.up ? 1 : 0);
    drained.add('portico_upstream_drained', { upstream: url }, t.drained ? 1 : 0);
    conns.add('portico_upstream_open_connections', { upstream: url }, t.open);
    limited.add('portico_upstream_limited_requests', { upstream: url }, t.limited);
    queued.add('portico_upstream_queued_requests', { upstream: url }, t.queued);
  }

  const certs = new Family('portico_certificate_expiry_timestamp_seconds', 'gauge', 'When a certificate in use expires (Unix time).');
  const refused = new Family('portico_certificate_replacement_refused', 'gauge', 'Whether the files of a certificate in use hold a replacement that was refused (1) in some process, the previous one serving on.');
  const seen = new Map<string, boolean>();
  for (const s of snapshots) {
    for (const c of s.certificates) {
      if (!seen.has(c.id)) certs.add('portico_certificate_expiry_timestamp_seconds', { certificate: c.id, names: c.subjectAltName }, Math.floor(Date.parse(c.notAfter) / 1000));
      seen.set(c.id, (seen.get(c.id) ?? false) || c.refused !== undefined);
    }
  }
  for (const [id, isRefused] of seen) refused.add('portico_certificate_replacement_refused', { certificate: id }, isRefused ? 1 : 0);
  const stapled = new Family('portico_certificate_ocsp_stapled', 'gauge', 'Whether a certificate in use that names an OCSP responder has a good OCSP response stapled (1) in every process, or not in some process (0: not fetched yet, failing, expired, revoked, or impossible; /status says why).');
  const nextUpdate = new Family('portico_certificate_ocsp_next_update_timestamp_seconds', 'gauge', 'When the stapled OCSP response of a certificate stops being valid (its nextUpdate, Unix time); the earliest over the processes. Absent for a certificate without one.');
  const ocsp = new Map<string, { names: string; stapled: boolean; nextUpdateMs: number | undefined }>();
  for (const s of snapshots) {
    // Snapshots of workers from before OCSP stapling have none.
    if (s.ocsp === undefined || s.ocsp.length === 0) continue;
    // Labelled as portico_certificate_expiry_timestamp_seconds is, so that the two join.
    const sans = new Map(s.certificates.map((c) => [c.id, c.subjectAltName]));
    for (const o of s.ocsp) {
      const acc = ocsp.get(o.certificate) ?? { names: sans.get(o.certificate) ?? '', stapled: true, nextUpdateMs: undefined };
      acc.stapled &&= o.status === 'good';
      if (o.status === 'good' && o.nextUpdate !== null) acc.nextUpdateMs = Math.min(acc.nextUpdateMs ?? Infinity, Date.parse(o.nextUpdate));
      ocsp.set(o.certificate, acc);
    }
  }
  for (const [id, o] of ocsp) {
    stapled.add('portico_certificate_ocsp_stapled', { certificate: id, names: o.names }, o.stapled ? 1 : 0);
    if (o.nextUpdateMs !== undefined) nextUpdate.add('portico_certificate_ocsp_next_update_timestamp_seconds', { certificate: id, names: o.names }, Math.floor(o.nextUpdateMs / 1000));
  }

  const streamUp = new Family('portico_stream_target_up', 'gauge', 'Whether a stream target with health checks is in rotation (1) or out (0) in some process.');
  const streamTargetsUp = new Map<string, boolean>();
  for (const s of snapshots) for (const t of s.streamTargets ?? []) streamTargetsUp.set(t.url, (streamTargetsUp.get(t.url) ?? true) && t.available);
  for (const [url, isUp] of streamTargetsUp) streamUp.add('portico_stream_target_up', { upstream: url }, isUp ? 1 : 0);
  const streamConns = new Family('portico_stream_connections_total', 'counter', 'Stream (TCP/TLS passthrough) connections that ended, by port and outcome ("failed": no target for the name, target unreachable).');
  const streamOpen = new Family('portico_stream_open_connections', 'gauge', 'Stream connections open now, by port.');
  const streamBytes = new Family('portico_stream_bytes_total', 'counter', 'Bytes through stream connections, by port and direction ("in": from clients).');
  const streams = new Map<number, { open: number; closed: number; failed: number; bytesIn: number; bytesOut: number }>();
  for (const s of counted) {
    for (const st of s.streams) {
      const acc = streams.get(st.port) ?? { open: 0, closed: 0, failed: 0, bytesIn: 0, bytesOut: 0 };
      acc.open += st.open;
      acc.closed += st.closed;
      acc.failed += st.failed;
      acc.bytesIn += st.bytesIn;
      acc.bytesOut += st.bytesOut;
      streams.set(st.port, acc);
    }
  }
  for (const [port, st] of streams) {
    streamConns.add('portico_stream_connections_total', { port: String(port), outcome: 'ok' }, st.closed - st.failed);
    streamConns.add('portico_stream_connections_total', { port: String(port), outcome: 'failed' }, st.failed);
    streamOpen.add('portico_stream_open_connections', { port: String(port) }, st.open);
    streamBytes.add('portico_stream_bytes_total', { port: String(port), direction: 'in' }, st.bytesIn);
    streamBytes.add('portico_stream_bytes_total', { port: String(port), direction: 'out' }, st.bytesOut);
  }

  const cacheStores = new Family('portico_cache_stores_total', 'counter', 'Responses stored in the response cache, summed over the processes.');
  const cacheEvictions = new Family('portico_cache_evictions_total', 'counter', 'Stored responses dropped to stay within limits.cacheSize, summed over the processes.');
  const cacheEntries = new Family('portico_cache_entries', 'gauge', 'Responses held in the response cache now, summed over the processes (each keeps its own).');
  const cacheBytes = new Family('portico_cache_bytes', 'gauge', 'Memory the response cache holds now (bodies and headers), summed over the processes.');
  const sum = (f: (c: Snapshot['cache']) => number): number => counted.reduce((a, s) => a + f(s.cache), 0);
  cacheStores.add('portico_cache_stores_total', {}, sum((c) => c.stores));
  cacheEvictions.add('portico_cache_evictions_total', {}, sum((c) => c.evictions));
  cacheEntries.add('portico_cache_entries', {}, sum((c) => c.entries));
  cacheBytes.add('portico_cache_bytes', {}, sum((c) => c.bytes));

  const generation = new Family('portico_config_generation', 'gauge', 'Config generation served (1 at start, +1 per successful reload); the lowest over the processes.');
  generation.add('portico_config_generation', {}, Math.min(...snapshots.map((s) => s.generation)));
  const reloadOk = new Family('portico_config_last_reload_successful', 'gauge', 'Whether the last reload of the config succeeded in every process (1) or was refused (0; the previous config keeps serving).');
  reloadOk.add('portico_config_last_reload_successful', {}, snapshots.every((s) => s.lastReload.ok) ? 1 : 0);
  const processes = new Family('portico_processes', 'gauge', 'Portico processes that answered this scrape (workers, or 1).');
  processes.add('portico_processes', {}, snapshots.length);
  const rss = new Family('process_resident_memory_bytes', 'gauge', 'Resident memory of the Portico processes, summed.');
  rss.add('process_resident_memory_bytes', {}, snapshots.reduce((a, s) => a + s.rssBytes, 0));
  const cpu = new Family('process_cpu_seconds_total', 'counter', 'CPU time (user and system) of the Portico processes, summed (workers that exited included).');
  cpu.add('process_cpu_seconds_total', {}, counted.reduce((a, s) => a + s.cpuSeconds, 0));

  return `${[requests, duration, upgrades, up, drained, conns, limited, queued, certs, refused, stapled, nextUpdate, streamUp, streamConns, streamOpen, streamBytes, cacheRequests, cacheStores, cacheEvictions, cacheEntries, cacheBytes, generation, reloadOk, processes, rss, cpu].map((f) => f.lines.join('\n')).join('\n')}\n`;
}
