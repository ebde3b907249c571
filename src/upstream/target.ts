/**
 * An upstream target: one server address with its transport, connection
 * pool, health and drain state. Targets live in a registry keyed by identity
 * (URL, TLS and health settings), so their keep-alive pools and health survive
 * config reloads; the registry also keeps the URLs drained over the admin API.
 */
import { createHash } from 'node:crypto';
import type http2 from 'node:http2';
import { connect as tlsConnect, type SecureContextOptions } from 'node:tls';
import { H1Pool } from './h1-pool.js';
import type { Logger } from 'pino';
import { loadHttp2Client, type Http2Client } from './http2-client.js';
import { closeH2Agent, createH2Agent, H2_IDLE_TIMEOUT_MS, openH2cSession } from './h2-sessions.js';
import { healthKey, TargetHealth, type HealthSettings } from './health.js';
import type { UpstreamPlan } from '../config/plan.js';

/** How Portico talks to one target. */
export type TargetKind = 'h1' | 'h1-tls' | 'h2-tls' | 'h2c' | 'auto-tls';

/** TLS settings for https targets, already resolved to PEM bytes. */
export interface TargetTls {
  readonly ca: Buffer | undefined;
  /** Client certificate chain and key (mutual TLS), or undefined. */
  readonly cert: Buffer | undefined;
  readonly key: Buffer | undefined;
  readonly servername: string;
  readonly rejectUnauthorized: boolean;
}

/**
 * A target URL as Portico names it in logs, the admin API and metrics: `scheme://host[:port]` as the
 * WHATWG URL parser writes it (scheme lower-cased; for http and https the host too, and a default port
 * dropped; an h2c host keeps its case), or `unix:/path` for a Unix socket. Config targets and the admin API's drain requests are both compared in this form.
 */
export function targetUrlOf(url: URL): string {
  return url.protocol === 'unix:' ? `unix:${decodeURIComponent(url.pathname)}` : `${url.protocol}//${url.host}`;
}

/** One upstream server and its pool. */
/** Called when a target with queued requests (maxRequests) comes into or goes out of rotation; set by src/proxy/upstream-limit.ts. */
let availabilityListener: ((t: Target) => void) | undefined;

/** Sets the one listener for targets with queued requests changing availability. */
export function onAvailabilityChange(listener: (t: Target) => void): void {
  availabilityListener = listener;
}

export class Target {
  /** Registry key: URL + protocol + connect timeout + TLS identity + health settings. */
  readonly key: string;
  /** `scheme://host:port` as written, for logs. */
  readonly url: string;
  /** Host name or IP to connect to (IPv6 without brackets). */
  readonly hostname: string;
  readonly port: number;
  /** `host:port` form for a Host header when hostHeader is "target" ("localhost" for a Unix socket). */
  readonly authority: string;
  /** A `unix:/path` target's socket path; undefined for TCP targets. */
  readonly socketPath: string | undefined;
  kind: TargetKind;
  readonly tls: TargetTls | undefined;
  /**
   * HTTP/1.1 keep-alive pool (h1, h1-tls, and auto-tls once it resolved to HTTP/1.1): sockets with
   * a kept llhttp parser each, which cost 0.65× the CPU per request of undici's dispatch API and
   * a third of node:http's ClientRequest + Agent (bench/optimisations.md, sections 1 and 6).
   */
  readonly h1Pool: H1Pool | undefined;
  /** HTTP/2 session pool over TLS (h2-tls, and auto-tls once it resolved to h2), made when the HTTP/2 client is loaded. */
  h2Agent: InstanceType<Http2Client['Agent']> | undefined;
  /** Cleartext HTTP/2 session (h2c), reopened on demand. */
  #h2cSession: http2.ClientHttp2Session | undefined;
  /** Requests can go out now: the protocol is known and its client is loaded. */
  #ready: boolean;
  /** Pending preparation: loading the HTTP/2 client, and for "auto" targets the ALPN resolution. */
  #preparing: Promise<void> | undefined;
  #closed = false;
  /**
   * Whether new requests and upgrades may go to this target: false while its health checks (or
   * passive failure counting) have it out of rotation, or while it is drained over the admin API.
   * The one field the request path reads (pickTarget, nextTarget); recomputed only when health or
   * drain state changes (setHealthy, setDrained), so the request path pays nothing for either.
   */
  available = true;
  /** Requests in flight to it from upstreams with "maxRequests" (src/proxy/upstream-limit.ts). */
  limitedInFlight = 0;
  /**
   * Requests and tunnels in flight to it from upstreams with "least-connections" (src/proxy/handle-request.ts):
   * on the Target, so that a reload, which keeps the Target, keeps the count of what is still open on it.
   */
  leastConnInFlight = 0;
  /** Upstreams with requests queued for a target below its limit, this one among their targets; undefined when none. */
  waiting: Set<UpstreamPlan> | undefined = undefined;
  /** Health's verdict (active checks and passive counting), drain aside. */
  #healthy = true;
  /** Drained over the admin API: no new requests, in-flight ones run to their end. */
  #drained = false;
  /** Active checks and passive failure counting, when the upstream configures them. */
  readonly health: TargetHealth | undefined;

  /** How long a connection (and the ALPN probe of an "auto" target) may take; for HTTP/2, up to the upstream's SETTINGS. */
  readonly connectTimeoutMs: number;
  /** How long an HTTP/2 session may stay idle before it is closed (src/upstream/h2-sessions.ts). */
  readonly h2IdleTimeoutMs: number;

  constructor(
    key: string,
    url: URL,
    protocol: 'auto' | 'http1' | 'h2',
    tls: TargetTls | undefined,
    connectTimeoutMs = 5000,
    health: HealthSettings | undefined = undefined,
    h2IdleTimeoutMs = H2_IDLE_TIMEOUT_MS,
  ) {
    this.key = key;
    this.h2IdleTimeoutMs = h2IdleTimeoutMs;
    this.health = health === undefined || (health.active === undefined && health.passive === undefined) ? undefined : new TargetHealth(this, health);
    this.connectTimeoutMs = connectTimeoutMs;
    const unix = url.protocol === 'unix:';
    this.socketPath = unix ? decodeURIComponent(url.pathname) : undefined;
    this.url = targetUrlOf(url);
    this.hostname = unix ? 'localhost' : url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
    const secure = url.protocol === 'https:';
    this.port = unix ? 0 : url.port === '' ? (secure ? 443 : 80) : Number(url.port);
    this.authority = unix ? 'localhost' : url.host;
    this.tls = tls;
    if (url.protocol === 'http:' || unix) this.kind = 'h1';
    else if (url.protocol === 'h2c:') this.kind = 'h2c';
    else if (protocol === 'http1') this.kind = 'h1-tls';
    else if (protocol === 'h2') this.kind = 'h2-tls';
    else this.kind = 'auto-tls';
    if (this.kind === 'h1' || this.kind === 'h1-tls' || this.kind === 'auto-tls') {
      this.h1Pool = new H1Pool({
        host: this.hostname,
        port: this.port,
        socketPath: this.socketPath,
        connectTimeoutMs,
        tls: secure && tls !== undefined ? { servername: tls.servername, rejectUnauthorized: tls.rejectUnauthorized, ca: tls.ca, cert: tls.cert, key: tls.key } : undefined,
      });
    }
    // HTTP/2 targets load http2-wrapper first (prepare), "auto" ones on their first request.
    this.#ready = this.kind === 'h1' || this.kind === 'h1-tls';
  }

  /** TLS options for connections to this target: always SNI, verification unless disabled. */
  tlsOptions(): SecureContextOptions & { servername?: string; rejectUnauthorized?: boolean } {
    if (this.tls === undefined) return {};
    const out: SecureContextOptions & { servername?: string; rejectUnauthorized?: boolean } = {
      servername: this.tls.servername,
      rejectUnauthorized: this.tls.rejectUnauthorized,
    };
    if (this.tls.ca !== undefined) out.ca = this.tls.ca;
    if (this.tls.cert !== undefined) {
      out.cert = this.tls.cert;
      out.key = this.tls.key;
    }
    return out;
  }

  /**
   * Loads what an h2-tls or h2c target needs (the HTTP/2 client) before it takes requests; awaited
   * for every target of a Plan before the Plan is published. "auto" targets learn their protocol
   * on their first request instead (resolveProtocol), and load the HTTP/2 client only if it is h2.
   */
  prepare(): Promise<void> {
    if (this.kind === 'auto-tls') return Promise.resolve();
    return this.resolveProtocol() ?? Promise.resolve();
  }

  /**
   * Called before every request. Hot path: undefined when the target can take it now, else a
   * promise that settles once it can (or rejects when it cannot be reached). Only "auto" targets
   * wait here, on their first request: they learn by ALPN whether the target speaks h2, once.
   * A target whose prepare() was not awaited would wait here for the HTTP/2 client as well.
   */
  resolveProtocol(): Promise<void> | undefined {
    if (this.#ready) return undefined;
    this.#preparing ??= this.#prepare().finally(() => {
      this.#preparing = undefined;
    });
    return this.#preparing;
  }

  async #prepare(): Promise<void> {
    if (this.kind === 'auto-tls' && (await this.#alpnProtocol()) !== 'h2') {
      this.kind = 'h1-tls';
    } else {
      const client = await loadHttp2Client();
      if (this.kind !== 'h2c') {
        this.h2Agent ??= createH2Agent(client, this.connectTimeoutMs, this.h2IdleTimeoutMs);
        // Closed while loading: fail like any closed target's agent instead of keeping sessions open.
        if (this.#closed) this.h2Agent.destroy();
      }
      // Set last: a request seeing 'h2-tls' finds the agent in place.
      if (this.kind === 'auto-tls') this.kind = 'h2-tls';
    }
    this.#ready = true;
  }

  /** The protocol this target picks by ALPN between h2 and http/1.1: one TLS handshake, then closed. */
  #alpnProtocol(): Promise<string | false | null> {
    return new Promise((resolve, reject) => {
      const socket = tlsConnect({ host: this.hostname, port: this.port, ALPNProtocols: ['h2', 'http/1.1'], ...this.tlsOptions() }, () => {
        resolve(socket.alpnProtocol);
        socket.destroy();
      });
      socket.on('error', reject);
      // A target that never answers fails its first requests after connectTimeout, like any connection.
      if (this.connectTimeoutMs > 0) {
        socket.setTimeout(this.connectTimeoutMs, () =>
          socket.destroy(Object.assign(new Error(`no TLS handshake within ${this.connectTimeoutMs} ms`), { code: 'PORTICO_CONNECT_TIMEOUT' })),
        );
      }
    });
  }

  /** The cleartext HTTP/2 session, opened on first use and after it closes (or received a GOAWAY, which closes it). */
  h2cSession(): http2.ClientHttp2Session {
    const s = this.#h2cSession;
    if (s !== undefined && !s.closed && !s.destroyed) return s;
    return (this.#h2cSession = openH2cSession(this.authority, this.connectTimeoutMs, this.h2IdleTimeoutMs));
  }

  /** Whether its health checks and passive health let it take requests (true without either); a drained target keeps its own. */
  get healthy(): boolean {
    return this.#healthy;
  }

  /** Whether it is drained over the admin API. */
  get drained(): boolean {
    return this.#drained;
  }

  /** Health's verdict changed (src/upstream/health.ts). */
  setHealthy(healthy: boolean): void {
    this.#healthy = healthy;
    this.#setAvailable(healthy && !this.#drained);
  }

  /** Drains it (no new requests or upgrades; those in flight go on) or puts it back; health checks run on either way. */
  setDrained(drained: boolean): void {
    this.#drained = drained;
    this.#setAvailable(this.#healthy && !drained);
  }

  #setAvailable(available: boolean): void {
    if (available === this.available) return;
    this.available = available;
    // Requests queued for a slot (maxRequests) learn of it: one back in rotation may take them, and with none left they need not wait.
    if (this.waiting !== undefined) availabilityListener?.(this);
  }

  /** Starts its health checks, if it has any (once the Plan it is in is about to serve); idempotent. */
  startHealth(log: Logger): void {
    this.health?.start(log);
  }

  /** A request failed in a way that counts against the target's health (refused, unreachable, timed out). */
  reportFailure(code: string): void {
    this.health?.reportFailure(code);
  }

  /**
   * Closes idle connections and stops health checks; used when a target leaves every Plan. HTTP/2 sessions
   * take no new streams and close once their streams in flight (requests of the old Plan) have ended.
   */
  close(): void {
    this.#closed = true;
    this.health?.stop();
    this.h1Pool?.close();
    if (this.h2Agent !== undefined) closeH2Agent(this.h2Agent);
    this.#h2cSession?.close();
  }
}


/**
 * Targets by identity, shared by successive Plans. It also holds the URLs drained over the admin API:
 * every target with such a URL is drained, including one made by a later reload (new health or TLS
 * settings make a new Target). A drained URL that no target in use has any more (a reload removed it
 * from the config) is forgotten, and the listeners of onDrainForgotten are told. Every change of the drained
 * set is told to the listeners of onDrainsChanged (admin.stateFile keeps it on disk).
 */
export class TargetRegistry {
  readonly #targets = new Map<string, Target>();
  readonly #drained = new Set<string>();
  readonly #forgotten: ((urls: readonly string[]) => void)[] = [];
  readonly #changed: ((drained: ReadonlySet<string>) => void)[] = [];

  /** Returns the target for this identity, creating it once (drained if its URL is). */
  get(url: URL, protocol: 'auto' | 'http1' | 'h2', tls: TargetTls | undefined, connectTimeoutMs = 5000, health?: HealthSettings): Target {
    const key = `${url.protocol}//${url.host}${url.protocol === 'unix:' ? url.pathname : ''}|${protocol}|${connectTimeoutMs}|${tls === undefined ? '' : `${tls.servername}|${tls.rejectUnauthorized}|${tls.ca?.toString('base64') ?? ''}|${tls.cert === undefined ? '' : createHash('sha256').update(tls.cert).update(tls.key ?? '').digest('base64')}`}|${healthKey(health)}`;
    let t = this.#targets.get(key);
    if (t === undefined) {
      t = new Target(key, url, protocol, tls, connectTimeoutMs, health);
      if (this.#drained.has(t.url)) t.setDrained(true);
      // A reload that changed its settings: the new target starts from the old one's health, never healthy by default.
      if (t.health !== undefined) {
        for (const prev of this.#targets.values()) if (prev.url === t.url && prev.health !== undefined && !prev.healthy) t.health.inherit(prev.health);
      }
      this.#targets.set(key, t);
    }
    return t;
  }

  /** Every target in use. */
  all(): IterableIterator<Target> {
    return this.#targets.values();
  }

  /**
   * Drains every target with this URL, now and after reloads, or puts them back. Returns the targets in
   * use whose state changed. The URL is recorded even when no target has it yet (a worker seeding its
   * primary's drained URLs before its first Plan); retain() then forgets it if the Plan lacks it.
   */
  setDrained(url: string, drained: boolean): Target[] {
    const had = this.#drained.has(url);
    if (drained) this.#drained.add(url);
    else this.#drained.delete(url);
    if (had !== drained) this.#tellChanged();
    const changed: Target[] = [];
    for (const t of this.#targets.values()) {
      if (t.url !== url || t.drained === drained) continue;
      t.setDrained(drained);
      changed.push(t);
    }
    return changed;
  }

  /** Makes `urls` the drained set (a worker following its primary's): others are put back. */
  replaceDrained(urls: Iterable<string>): void {
    const next = new Set(urls);
    for (const url of [...this.#drained]) if (!next.has(url)) this.setDrained(url, false);
    for (const url of next) this.setDrained(url, true);
  }

  /** Calls `fn` with the whole drained set after each change of it (a drain, an enable, a reload forgetting some). */
  onDrainsChanged(fn: (drained: ReadonlySet<string>) => void): void {
    this.#changed.push(fn);
  }

  #tellChanged(): void {
    for (const fn of this.#changed) fn(this.#drained);
  }

  /** Calls `fn` with the drained URLs a reload removed from the config, each time some are. */
  onDrainForgotten(fn: (urls: readonly string[]) => void): void {
    this.#forgotten.push(fn);
  }

  /** Forgets drained URLs that no target in use has (see the class comment). */
  #forgetUnusedDrains(): void {
    if (this.#drained.size === 0) return;
    const inUse = new Set<string>();
    for (const t of this.#targets.values()) inUse.add(t.url);
    const gone = [...this.#drained].filter((url) => !inUse.has(url));
    if (gone.length === 0) return;
    for (const url of gone) this.#drained.delete(url);
    for (const fn of this.#forgotten) fn(gone);
    this.#tellChanged();
  }

  /** Closes and forgets targets not in `keep`, and the drained URLs none of those kept has. */
  retain(keep: ReadonlySet<Target>): void {
    for (const [key, t] of this.#targets) {
      if (!keep.has(t)) {
        t.close();
        this.#targets.delete(key);
      }
    }
    this.#forgetUnusedDrains();
  }

  /** Closes every target. */
  closeAll(): void {
    // Not retain(): stopping is no reload, and its drains are not "forgotten" (a worker would tell its primary so).
    for (const t of this.#targets.values()) t.close();
    this.#targets.clear();
  }
}
