/**
 * An upstream target: one server address with its transport and connection
 * pool. Targets live in a registry keyed by identity (URL + TLS settings), so
 * their keep-alive pools survive config reloads.
 */
import { createRequire } from 'node:module';
import http2 from 'node:http2';
import type { SecureContextOptions } from 'node:tls';
import http2wrapper from 'http2-wrapper';
import type { Pool } from 'undici';

/**
 * undici's Pool, required from its own file rather than `import { Pool } from 'undici'`: the
 * package index also evaluates fetch, WebSocket, EventSource, the cache and mock layers, about
 * 8 MiB of RSS Portico never uses (bench/optimisations.md, section 5). undici has no "exports"
 * map, so the deep path resolves; it is checked here, when this module loads at startup, so an
 * undici release that moves or reshapes the file stops Portico at once instead of failing later.
 */
const UndiciPool = loadUndiciPool();

function loadUndiciPool(): typeof Pool {
  const path = 'undici/lib/dispatcher/pool.js';
  let loaded: unknown;
  try {
    loaded = createRequire(import.meta.url)(path);
  } catch (err) {
    throw new Error(`cannot load undici's Pool from ${path} (moved by an undici upgrade?): ${(err as Error).message}`, { cause: err });
  }
  if (typeof loaded !== 'function' || typeof (loaded as { prototype?: { dispatch?: unknown } }).prototype?.dispatch !== 'function') {
    throw new Error(`${path} no longer exports undici's Pool class (changed by an undici upgrade?)`);
  }
  return loaded as typeof Pool;
}

/** How Portico talks to one target. */
export type TargetKind = 'h1' | 'h1-tls' | 'h2-tls' | 'h2c' | 'auto-tls';

/** TLS settings for https targets, already resolved to PEM bytes. */
export interface TargetTls {
  readonly ca: Buffer | undefined;
  readonly servername: string;
  readonly rejectUnauthorized: boolean;
}

/** One upstream server and its pool. */
export class Target {
  /** Registry key: URL + protocol + TLS identity. */
  readonly key: string;
  /** `scheme://host:port` as written, for logs. */
  readonly url: string;
  /** Host name or IP to connect to (IPv6 without brackets). */
  readonly hostname: string;
  readonly port: number;
  /** `host:port` form for a Host header when hostHeader is "target". */
  readonly authority: string;
  kind: TargetKind;
  readonly tls: TargetTls | undefined;
  /**
   * HTTP/1.1 keep-alive pool (h1, h1-tls, and auto-tls once it resolved to HTTP/1.1): undici, driven
   * through its dispatch handler API, which costs about half the CPU per request of node:http's
   * ClientRequest + Agent (measured: bench/RESULTS.md, "Optimisations").
   */
  readonly h1Pool: Pool | undefined;
  /** HTTP/2 session pool over TLS (h2-tls, auto-tls). */
  readonly h2Agent: InstanceType<typeof http2wrapper.Agent> | undefined;
  /** Cleartext HTTP/2 session (h2c), reopened on demand. */
  #h2cSession: http2.ClientHttp2Session | undefined;
  /** Pending ALPN resolution for "auto" targets. */
  #resolving: Promise<void> | undefined;

  constructor(key: string, url: URL, protocol: 'auto' | 'http1' | 'h2', tls: TargetTls | undefined, connectTimeoutMs = 5000) {
    this.key = key;
    this.url = `${url.protocol}//${url.host}`;
    this.hostname = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
    const secure = url.protocol === 'https:';
    this.port = url.port === '' ? (secure ? 443 : 80) : Number(url.port);
    this.authority = url.host;
    this.tls = tls;
    if (url.protocol === 'http:') this.kind = 'h1';
    else if (url.protocol === 'h2c:') this.kind = 'h2c';
    else if (protocol === 'http1') this.kind = 'h1-tls';
    else if (protocol === 'h2') this.kind = 'h2-tls';
    else this.kind = 'auto-tls';
    if (this.kind === 'h1' || this.kind === 'h1-tls' || this.kind === 'auto-tls') {
      const origin = `${secure ? 'https' : 'http'}://${url.host}`;
      const connect: Record<string, unknown> = { timeout: connectTimeoutMs, noDelay: true };
      if (tls !== undefined) {
        if (tls.servername !== '') connect.servername = tls.servername;
        connect.rejectUnauthorized = tls.rejectUnauthorized;
        if (tls.ca !== undefined) connect.ca = tls.ca;
      }
      this.h1Pool = new UndiciPool(origin, { connect, pipelining: 1, keepAliveTimeout: 4000, keepAliveMaxTimeout: 60_000 });
      this.h1Pool.on('connectionError', noop);
    }
    if (this.kind === 'h2-tls' || this.kind === 'auto-tls') this.h2Agent = new http2wrapper.Agent({ maxEmptySessions: 4 });
  }

  /** TLS options for connections to this target: always SNI, verification unless disabled. */
  tlsOptions(): SecureContextOptions & { servername?: string; rejectUnauthorized?: boolean } {
    if (this.tls === undefined) return {};
    const out: SecureContextOptions & { servername?: string; rejectUnauthorized?: boolean } = {
      servername: this.tls.servername,
      rejectUnauthorized: this.tls.rejectUnauthorized,
    };
    if (this.tls.ca !== undefined) out.ca = this.tls.ca;
    return out;
  }

  /** For "auto" targets: learns by ALPN whether the target speaks h2, once. */
  resolveProtocol(): Promise<void> | undefined {
    if (this.kind !== 'auto-tls') return undefined;
    this.#resolving ??= http2wrapper.auto
      .resolveProtocol({ host: this.hostname, port: this.port, ALPNProtocols: ['h2', 'http/1.1'], ...this.tlsOptions() } as never)
      .then(({ alpnProtocol }: { alpnProtocol: string }) => {
        this.kind = alpnProtocol === 'h2' ? 'h2-tls' : 'h1-tls';
      })
      .finally(() => {
        this.#resolving = undefined;
      });
    return this.#resolving;
  }

  /** The cleartext HTTP/2 session, opened on first use and after it closes. */
  h2cSession(): http2.ClientHttp2Session {
    const s = this.#h2cSession;
    if (s !== undefined && !s.closed && !s.destroyed) return s;
    const session = http2.connect(`http://${this.authority}`);
    session.on('error', noop);
    session.setTimeout(60_000, () => session.close());
    session.unref();
    this.#h2cSession = session;
    return session;
  }

  /** Closes idle connections; used when a target leaves every Plan. */
  close(): void {
    void this.h1Pool?.destroy().catch(noop);
    this.h2Agent?.destroy();
    this.#h2cSession?.close();
  }
}

function noop(): void {}

/** Targets by identity, shared by successive Plans. */
export class TargetRegistry {
  readonly #targets = new Map<string, Target>();

  /** Returns the target for this identity, creating it once. */
  get(url: URL, protocol: 'auto' | 'http1' | 'h2', tls: TargetTls | undefined, connectTimeoutMs = 5000): Target {
    const key = `${url.protocol}//${url.host}|${protocol}|${connectTimeoutMs}|${tls === undefined ? '' : `${tls.servername}|${tls.rejectUnauthorized}|${tls.ca?.toString('base64') ?? ''}`}`;
    let t = this.#targets.get(key);
    if (t === undefined) {
      t = new Target(key, url, protocol, tls, connectTimeoutMs);
      this.#targets.set(key, t);
    }
    return t;
  }

  /** Closes and forgets targets not in `keep`. */
  retain(keep: ReadonlySet<Target>): void {
    for (const [key, t] of this.#targets) {
      if (!keep.has(t)) {
        t.close();
        this.#targets.delete(key);
      }
    }
  }

  /** Closes every target. */
  closeAll(): void {
    this.retain(new Set());
  }
}
