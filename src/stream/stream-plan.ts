/**
 * Streams compiled for the connection path: per port, its targets and, for TLS
 * passthrough, its server names in two Maps (exact, and wildcards by the
 * suffix after "*."), as hosts are looked up.
 */
import type { StreamConfig } from '../config/schema.js';
import { parseDurationMs } from '../config/units.js';
import { StreamHealthRegistry, type StreamTargetHealth } from './stream-health.js';

export interface StreamTarget {
  /** `tcp://host:port` as written, for logs. */
  readonly url: string;
  /** Host name or IP (IPv6 without brackets). */
  readonly host: string;
  readonly port: number;
  /** Its active health checks ("healthCheck"), or undefined: always in rotation. */
  readonly health: StreamTargetHealth | undefined;
}

/** Targets used round-robin. */
export interface StreamGroup {
  readonly targets: readonly StreamTarget[];
  /** Round-robin cursor. */
  next: number;
}

export interface StreamPlan {
  readonly port: number;
  /** Where connections go (with `sni`: those whose name it does not list). */
  readonly upstream: StreamGroup | undefined;
  /** TLS passthrough by server name; undefined: plain TCP forwarding, no ClientHello is read. */
  readonly sniExact: ReadonlyMap<string, StreamGroup> | undefined;
  readonly sniWildcard: ReadonlyMap<string, StreamGroup>;
  readonly connectTimeoutMs: number;
  /** 0: no idle timeout. */
  readonly idleTimeoutMs: number;
  /** streams[].sendTimeout: writes towards one side stalled this long while bytes wait close the connection; 0: never. */
  readonly sendTimeoutMs: number;
  readonly helloTimeoutMs: number;
  /** Connections start with a PROXY protocol header (streams[].proxyProtocol). */
  readonly acceptProxy: boolean;
  /** The PROXY protocol header sent to targets, if any. */
  readonly sendProxy: 'v1' | 'v2' | undefined;
}

/** The streams of a validated config, by port. `health` keeps checks across reloads; `used` collects the checks this Plan uses. */
export function compileStreams(streams: readonly StreamConfig[], health: StreamHealthRegistry = new StreamHealthRegistry(), used: Set<StreamTargetHealth> = new Set()): ReadonlyMap<number, StreamPlan> {
  const out = new Map<number, StreamPlan>();
  for (const st of streams) {
    const hc = st.healthCheck;
    const settings =
      hc === undefined
        ? undefined
        : { intervalMs: parseDurationMs(hc.interval), timeoutMs: parseDurationMs(hc.timeout), unhealthyAfter: hc.unhealthyAfter, healthyAfter: hc.healthyAfter };
    const group = (u: string | readonly string[]): StreamGroup => ({
      targets: (typeof u === 'string' ? [u] : u).map((s) => {
        const url = new URL(s);
        const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
        const port = Number(url.port);
        const h = settings === undefined ? undefined : health.get(s, host, port, settings);
        if (h !== undefined) used.add(h);
        return { url: s, host, port, health: h };
      }),
      next: 0,
    });
    const exact = new Map<string, StreamGroup>();
    const wildcard = new Map<string, StreamGroup>();
    for (const [name, u] of Object.entries(st.sni ?? {})) {
      if (name.startsWith('*.')) wildcard.set(name.slice(2), group(u));
      else exact.set(name, group(u));
    }
    out.set(st.port, {
      port: st.port,
      upstream: st.upstream === undefined ? undefined : group(st.upstream),
      sniExact: st.sni === undefined ? undefined : exact,
      sniWildcard: wildcard,
      connectTimeoutMs: parseDurationMs(st.connectTimeout),
      idleTimeoutMs: parseDurationMs(st.idleTimeout),
      sendTimeoutMs: parseDurationMs(st.sendTimeout),
      helloTimeoutMs: parseDurationMs(st.helloTimeout),
      acceptProxy: st.proxyProtocol,
      sendProxy: st.sendProxyProtocol,
    });
  }
  return out;
}

/** The group for a TLS server name: exact, then the wildcard one label up, then the stream's upstream. */
export function streamGroupFor(sp: StreamPlan, name: string): StreamGroup | undefined {
  if (name !== '' && sp.sniExact !== undefined) {
    const exact = sp.sniExact.get(name);
    if (exact !== undefined) return exact;
    const dot = name.indexOf('.');
    const wild = dot > 0 ? sp.sniWildcard.get(name.slice(dot + 1)) : undefined;
    if (wild !== undefined) return wild;
  }
  return sp.upstream;
}
