/**
 * One Portico instance: loads and compiles the config, opens the listeners,
 * publishes new Plans on reload (or keeps the old one when the new config is
 * invalid), and shuts down gracefully.
 */
import { responseCache } from '../cache/response-cache.js';
import cluster from 'node:cluster';
import { resolve } from 'node:path';
import type { Logger } from 'pino';
import { compilePlan } from '../config/compile.js';
import type { ConfigIssue, LoadResult } from '../config/load.js';
import { loadConfigFileInChild } from '../config/load-in-child.js';
import type { Plan } from '../config/plan.js';
import type { Config } from '../config/schema.js';
import { StreamHealthRegistry } from '../stream/stream-health.js';
import { PorticoError } from '../errors.js';
import { AccessLog } from '../log/access-line.js';
import { LogFilesError, type LogFiles, type OpenedLogFiles } from '../log/log-files.js';
import { HttpsListener } from '../listen/https-listener.js';
import { HttpListener } from '../listen/http-listener.js';
import { isIpv6Unavailable, listenFailed } from '../listen/listen-options.js';
import type { ProxyState } from '../proxy/handle-request.js';
import { closeUnservedTunnels } from '../proxy/open-tunnels.js';
import type { AcmeManager } from '../acme/manager.js';
import { Http01Responder } from '../acme/http01.js';
import { AlpnResponder } from '../acme/tls-alpn01.js';
import { challengeDirs } from '../acme/storage.js';
import { CertStore } from '../tls/cert-store.js';
import { CertWatcher, fileCertTargets } from '../tls/watch-certs.js';
import { SessionTicketKeys } from '../tls/session-tickets.js';
import { OcspStapler } from '../tls/ocsp-stapler.js';
import { TargetRegistry } from '../upstream/target.js';
import { RequestStatsRegistry } from '../proxy/request-stats.js';
import { RateLimitRegistry } from '../proxy/rate-limit.js';
import type { AdminServer } from '../admin/admin-server.js';
import { StreamListener } from '../stream/stream-listener.js';
import { checkOpenFileLimit } from './open-file-limit.js';
import { hostChangeFields, hostFields } from '../log/host-list.js';

/** Each host of a Plan as the log names it: its names, aliases after the first, comma-separated. */
function hostNames(plan: Plan): string[] {
  return plan.hosts.map((h) => h.names.join(','));
}

/** Formats config issues one per line: `path: reason`. */
export function formatIssues(file: string, issues: readonly ConfigIssue[]): string {
  return `${file}: ${issues.length} problem${issues.length === 1 ? '' : 's'}\n${issues.map((i) => `  ${i.path}: ${i.message}`).join('\n')}`;
}

/** Outcome of a reload. */
export type ReloadResult = { ok: true; generation: number } | { ok: false; issues: readonly ConfigIssue[] };

/** Settings that come from the process rather than the config. */
export interface PorticoOptions {
  /** Secret the TLS session ticket keys derive from: the primary's, in a worker; random otherwise. */
  readonly ticketSecret?: Buffer;
  /** Bind each listener with SO_REUSEPORT, beside the other workers' (src/listen/listen-options.ts); else through the cluster. */
  readonly reusePort?: boolean;
  /** Serve the admin API when the config has one (default); a worker leaves it to its primary. */
  readonly serveAdmin?: boolean;
  /** The process's log outputs (main.ts): a config's log.file and log.accessFile are opened and switched to through them. */
  readonly logFiles?: LogFiles;
}

/** A running proxy. */
export class Portico {
  readonly configFile: string;
  readonly log: Logger;
  readonly certs = new CertStore();
  readonly targets = new TargetRegistry();
  /** Stream targets' TCP health checks, kept across reloads. */
  readonly streamHealth = new StreamHealthRegistry();
  config: Config | undefined;
  state: ProxyState | undefined;
  https: HttpsListener | undefined;
  http: HttpListener | undefined;
  /** Last reload error, kept for the admin API. */
  lastReloadError: readonly ConfigIssue[] | undefined;
  /** When the last reload (successful or not) finished. */
  lastReloadAt: Date | undefined;
  readonly startedAt = new Date();
  /** Request counters by route, kept across reloads (admin API metrics). */
  readonly requestStats = new RequestStatsRegistry();
  /** Rate limiters by host or route and settings, their buckets kept across reloads. */
  readonly rateLimits = new RateLimitRegistry();
  /** TCP and TLS passthrough listeners (config "streams"), opened at start. */
  readonly streams: StreamListener[] = [];
  /** The admin API, when configured and this process serves it (not in workers: their primary does). */
  admin: AdminServer | undefined;
  #generation = 0;
  #reloading: Promise<ReloadResult> | undefined;
  /** Hooks run after each published Plan (certificate watcher, ACME manager). */
  readonly onPlan: ((plan: Plan, config: Config) => void)[] = [];
  /** Pending ACME challenges, answered by the listeners. */
  readonly http01 = new Http01Responder();
  readonly alpn = new AlpnResponder();
  /** Hot reload of mounted certificate files (and of ACME files written by another process). */
  readonly certWatcher: CertWatcher;
  /**
   * Orders and renews certificates of hosts with `tls: {acme: true}`. Loaded on first need:
   * acme-client and its X.509 stack cost about 30 MiB of RSS that configs without ACME never pay.
   */
  acme: AcmeManager | undefined;
  /** Fetched OCSP responses, stapled by the HTTPS listener (listen.https.ocspStapling). */
  readonly ocsp: OcspStapler;
  #acmeLoading: Promise<AcmeManager> | undefined;
  readonly #onCertificate: (id: string) => void;
  /** Stops the certificate services (watcher, ACME) on stop(). */
  readonly #services = new AbortController();
  #servicesStarted = false;
  /** Session ticket keys, the same in every worker, replaced every hour. */
  readonly #tickets: SessionTicketKeys;
  readonly #reusePort: boolean;
  readonly #serveAdmin: boolean;
  readonly #logFiles: LogFiles | undefined;

  constructor(configFile: string, log: Logger, options: PorticoOptions = {}) {
    this.configFile = configFile;
    this.log = log;
    this.#tickets = new SessionTicketKeys(options.ticketSecret);
    this.#reusePort = options.reusePort === true;
    this.#serveAdmin = options.serveAdmin !== false;
    this.#logFiles = options.logFiles;
    const onCertificate = (id: string): void => this.#certificateChanged(id);
    this.#onCertificate = onCertificate;
    this.certWatcher = new CertWatcher({ certs: this.certs, log, onChange: onCertificate });
    this.ocsp = new OcspStapler({ certs: this.certs, log, signal: this.#services.signal });
    this.targets.onDrainForgotten((urls) => log.info({ upstreams: urls }, 'drained upstream target left the config, its drain is dropped'));
    this.onPlan.push((plan, config) => this.#retargetCertificates(plan, config));
    this.onPlan.push((plan) => this.ocsp.update(plan));
  }

  /** Clients without SNI get the default host's certificate, and hosts with clientAuth have servers of their own: refresh them when a pair changes. */
  #certificateChanged(id: string): void {
    const plan = this.state?.plan;
    if (plan === undefined) return;
    // A new certificate needs its own OCSP response: the old one's is dropped.
    this.ocsp.update(plan);
    if (plan.defaultHost?.certId === id) this.https?.setDefaultContext(plan);
    if (plan.hosts.some((h) => h.certId === id && h.clientAuth !== undefined)) this.https?.setClientAuth(plan);
  }

  #retargetCertificates(plan: Plan, config: Config): void {
    const hasAcme = plan.hosts.some((h) => h.acme);
    if (hasAcme) {
      // Before the listeners open, not once the ACME module has loaded (hundreds of ms): with workers, the
      // CA's challenge request may reach this process while another one orders, and must find its files.
      const shared = challengeDirs(plan.certsDir);
      this.http01.setSharedDir(shared.http01);
      this.alpn.setSharedDir(shared.alpn);
    }
    // Before the listeners are open the CA could not reach the challenge responders: start() calls this again.
    if (!this.#servicesStarted) return;
    if (this.acme === undefined && !hasAcme) {
      this.certWatcher.setTargets(fileCertTargets(plan, config));
      return;
    }
    this.#loadAcme()
      .then(async (acme) => {
        // A newer Plan may have been published while the module loaded: act on the current one.
        const current = this.state?.plan ?? plan;
        const currentConfig = this.config ?? config;
        const { acmeCertTargets } = await import('../acme/manager.js');
        this.certWatcher.setTargets([...fileCertTargets(current, currentConfig), ...acmeCertTargets(current)]);
        await acme.update(current, currentConfig);
      })
      .catch((err: unknown) => this.log.error({ err: (err as Error).message }, 'acme update failed'));
  }

  /** Loads and starts the ACME manager once. */
  #loadAcme(): Promise<AcmeManager> {
    this.#acmeLoading ??= import('../acme/manager.js').then(({ AcmeManager }) => {
      const acme = new AcmeManager({ certs: this.certs, log: this.log, http01: this.http01, alpn: this.alpn, onCertificate: this.#onCertificate });
      acme.start(this.#services.signal);
      this.acme = acme;
      return acme;
    });
    return this.#acmeLoading;
  }

  async #build(preloaded?: LoadResult): Promise<{ ok: true; plan: Plan; config: Config; logFiles: OpenedLogFiles | undefined } | { ok: false; issues: readonly ConfigIssue[] }> {
    const loaded = preloaded?.file === this.configFile ? preloaded : await loadConfigFileInChild(this.configFile);
    if (!loaded.ok) return { ok: false, issues: loaded.issues };
    const compiled = await compilePlan(loaded.config, loaded.baseDir, {
      targets: this.targets,
      stats: this.requestStats,
      streamHealth: this.streamHealth,
      rateLimits: this.rateLimits,
      certs: this.certs,
      generation: this.#generation + 1,
    });
    if (!compiled.ok) return { ok: false, issues: compiled.issues };
    // Before the Plan goes live: HTTP/2 targets load their client here, so no request waits for it
    // (and a config without HTTP/2 upstreams never loads it).
    try {
      await Promise.all([...compiled.usedTargets].map((t) => t.prepare()));
    } catch (err) {
      return { ok: false, issues: [{ path: 'upstream', message: (err as Error).message }] };
    }
    // The new log files are opened before anything changes, so one that cannot be opened fails the build.
    let logFiles: OpenedLogFiles | undefined;
    try {
      logFiles = this.#logFiles?.open(compiled.plan.logFiles);
    } catch (err) {
      if (err instanceof LogFilesError) return { ok: false, issues: err.issues };
      throw err;
    }
    await this.#followDrainState(loaded.config, loaded.baseDir);
    this.#generation++;
    for (const [id, pair] of compiled.certs) this.certs.set(id, pair);
    this.targets.retain(compiled.usedTargets);
    for (const t of compiled.usedTargets) t.startHealth(this.log);
    this.streamHealth.retain(compiled.usedStreamHealth);
    for (const h of compiled.usedStreamHealth) h.start(this.log);
    this.rateLimits.retain(compiled.usedRateLimits);
    return { ok: true, plan: compiled.plan, config: loaded.config, logFiles };
  }

  /** Switches to the log files a build opened; says so when pino-pretty's output cannot move to log.file before a restart. */
  #applyLogFiles(opened: OpenedLogFiles | undefined): void {
    const files = this.#logFiles;
    if (files === undefined || opened === undefined) return;
    files.apply(opened);
    if (files.paths.file !== opened.paths.file) {
      this.log.warn({ file: opened.paths.file }, 'log.file takes effect after a restart: this process writes human-readable lines to its terminal');
    }
  }

  /**
   * admin.stateFile, in a process without workers (with them, the primary keeps the file: main.ts). Once the first
   * Plan is compiled, before it serves, the drains the file holds are taken up, so a restarted Portico never sends a
   * drained target a request; from then on every change of the drained set is written to it. The file the config
   * names at start is the one used until the process stops, as the admin API's port is.
   */
  async #followDrainState(config: Config, baseDir: string): Promise<void> {
    const name = config.admin?.stateFile;
    if (cluster.isWorker || this.#generation !== 0 || name === undefined) return;
    const file = resolve(baseDir, name);
    const { openDrainState } = await import('../admin/drain-state.js');
    const writer = await openDrainState(file, this.log, (urls) => this.targets.replaceDrained(urls));
    this.targets.onDrainsChanged((drained) => writer.save(drained));
  }

  /**
   * Loads the config and opens every listener. Throws PORTICO_CONFIG_INVALID with every issue, or
   * PORTICO_LISTEN_FAILED; a start that fails closes whatever it had opened (listeners, watchers, timers).
   * `preloaded`: this config file as the caller has just loaded it (main.ts reads its log settings first),
   * so that it is not read and validated twice.
   */
  async start(preloaded?: LoadResult): Promise<void> {
    try {
      await this.#start(preloaded);
    } catch (err) {
      await this.stop().catch((e: unknown) => this.log.error({ err: (e as Error).message }, 'cleanup after a failed start failed'));
      throw err;
    }
  }

  async #start(preloaded: LoadResult | undefined): Promise<void> {
    // A worker (a restarted one too) starts with the targets its primary has drained, before its first Plan serves.
    if (cluster.isWorker) await (await import('../cluster/drained-targets.js')).followPrimaryDrains(this.targets, this.log);
    const built = await this.#build(preloaded);
    if (!built.ok) throw new PorticoError('PORTICO_CONFIG_INVALID', formatIssues(this.configFile, built.issues));
    const { plan, config } = built;
    this.config = config;
    const access = new AccessLog(this.log);
    this.state = { plan, log: this.log, access, tunnels: new Set() };
    if (this.#logFiles !== undefined) {
      this.#logFiles.onAccessChange = (destination) => access.setStream(destination);
      access.setStream(this.#logFiles.access);
      this.#applyLogFiles(built.logFiles);
    }
    responseCache.setMaxBytes(plan.limits.cacheBytes);
    for (const hook of this.onPlan) hook(plan, config);
    const https = new HttpsListener({ state: this.state, certs: this.certs, log: this.log, alpnChallenges: this.alpn, ticketKey: this.#tickets.current(), proxyProtocol: config.listen.https.proxyProtocol, staples: this.ocsp });
    this.https = https;
    // Node puts the certificate the SNI callback picks into the connection itself, so the server's
    // context, and with it the server's ticket key, serves every host.
    this.#tickets.start((key) => https.setTicketKeys(key));
    const opened: string[] = [];
    for (const address of config.listen.https.addresses) {
      if (await this.#open(() => this.https!.listen(config.listen.https.port, address, this.#reusePort), address, config.listen.https.port)) {
        opened.push(`https://${address.includes(':') ? `[${address}]` : address}:${config.listen.https.port}`);
      }
    }
    if (config.listen.http !== null) {
      const port = config.listen.http.port;
      const listener = new HttpListener({ state: this.state, log: this.log, http01: this.http01, proxyProtocol: config.listen.http.proxyProtocol });
      this.http = listener;
      for (const address of config.listen.http.addresses) {
        const ok = await this.#open(() => listener.listen(port, address, this.#reusePort), address, port);
        if (ok) {
          opened.push(`http://${address.includes(':') ? `[${address}]` : address}:${port}`);
        }
      }
    }
    for (const st of config.streams) {
      const listener = new StreamListener(st.port, this.state, this.log);
      this.streams.push(listener);
      for (const address of st.addresses) {
        if (await this.#open(() => listener.listen(address, this.#reusePort), address, st.port)) {
          opened.push(`tcp://${address.includes(':') ? `[${address}]` : address}:${st.port}`);
        }
      }
    }
    if (opened.length === 0) throw new PorticoError('PORTICO_LISTEN_FAILED', 'no listener could be opened; see the errors above');
    if (config.admin !== undefined && this.#serveAdmin) {
      const { startAdminServer, localBackend } = await import('../admin/start-admin.js');
      this.admin = await startAdminServer(localBackend(this), config.admin, this.log);
    }
    this.log.info({ listeners: opened, ...hostFields(hostNames(plan)), generation: plan.generation, ...(this.#reusePort ? { reusePort: true } : {}) }, 'listening');
    // One process says it for all: the workers share the limit (a restarted worker has a new id and stays quiet).
    if (!cluster.isWorker || cluster.worker?.id === 1) checkOpenFileLimit(this.log, plan.limits.maxConnections);
    this.certWatcher.start(this.#services.signal);
    this.#servicesStarted = true;
    if (plan.hosts.some((h) => h.acme)) await this.#loadAcme();
    this.#retargetCertificates(plan, config);
  }

  async #open(fn: () => Promise<void>, address: string, port: number): Promise<boolean> {
    try {
      await fn();
      return true;
    } catch (err) {
      if (isIpv6Unavailable(address, err)) {
        this.log.warn({ address, port, code: (err as NodeJS.ErrnoException).code }, 'ipv6 unavailable, address skipped');
        return false;
      }
      throw listenFailed(address, port, err);
    }
  }

  /** Re-reads the config; publishes the new Plan, or keeps the old one and reports why. */
  reload(): Promise<ReloadResult> {
    // Serialise reloads: a burst of file events gives one reload at a time.
    const run = async (): Promise<ReloadResult> => {
      const built = await this.#build();
      this.lastReloadAt = new Date();
      const failedBefore = this.lastReloadError;
      if (!built.ok) {
        this.lastReloadError = built.issues;
        // Why is said once: a retry (SIGHUP, the admin API, the file saved again as it was) that finds the same
        // problems says so in a line of its own, not the whole list again.
        if (failedBefore !== undefined && JSON.stringify(failedBefore) === JSON.stringify(built.issues)) {
          this.log.error({ file: this.configFile, problems: built.issues.length }, 'config reload failed again with the same problems, keeping the previous config');
        } else {
          this.log.error({ file: this.configFile, issues: built.issues }, 'config reload failed, keeping the previous config');
        }
        return { ok: false, issues: built.issues };
      }
      const { plan, config } = built;
      const old = this.config;
      // ocspStapling is the listener setting a reload applies (the stapler follows each Plan).
      const ports = (c: Config): string => JSON.stringify([{ ...c.listen, https: { ...c.listen.https, ocspStapling: undefined } }, c.streams.map((st) => [st.port, st.addresses])]);
      if (old !== undefined && ports(old) !== ports(config)) {
        this.log.warn({}, 'listener changes take effect after a restart');
      }
      if (old !== undefined && (old.admin?.port !== config.admin?.port || old.admin?.address !== config.admin?.address)) {
        this.log.warn({}, 'admin API port and address changes take effect after a restart');
      }
      this.config = config;
      this.#applyLogFiles(built.logFiles);
      const before = this.state?.plan.limits.maxConnections;
      const namesBefore = this.state === undefined ? [] : hostNames(this.state.plan);
      if (this.state !== undefined) this.state.plan = plan;
      if (before !== plan.limits.maxConnections && (!cluster.isWorker || cluster.worker?.id === 1)) checkOpenFileLimit(this.log, plan.limits.maxConnections);
      responseCache.setMaxBytes(plan.limits.cacheBytes);
      this.https?.applyLimits(plan);
      this.http?.applyLimits(plan);
      for (const st of this.streams) st.applyLimits(plan);
      // What the new config no longer serves at all is closed (open-tunnels.ts): tunnels whose host or route is
      // gone, connections of a stream port it removed. Tunnels and connections whose target alone changed stay.
      const tunnelsClosed = this.state === undefined ? 0 : closeUnservedTunnels(this.state.tunnels, plan);
      let streamsClosed = 0;
      for (const st of this.streams) streamsClosed += st.closeIfRemoved(plan);
      if (tunnelsClosed + streamsClosed > 0) this.log.info({ tunnels: tunnelsClosed, streamConnections: streamsClosed }, 'config reload closed connections it no longer serves');
      this.https?.setDefaultContext(plan);
      this.https?.setClientAuth(plan);
      // Certificates of hosts that left the config are no longer "in use" (admin API, metrics).
      this.certs.retain(new Set(plan.hosts.map((h) => h.certId)));
      this.lastReloadError = undefined;
      for (const hook of this.onPlan) hook(plan, config);
      // After a failed reload, the line that follows it says that its problems are over, not only that a config loaded.
      const hosts = hostChangeFields(namesBefore, hostNames(plan));
      if (failedBefore === undefined) this.log.info({ generation: plan.generation, ...hosts }, 'config reloaded');
      else this.log.info({ generation: plan.generation, ...hosts, fixedProblems: failedBefore.length }, 'config reloaded, the problems of the last failed reload are fixed');
      return { ok: true, generation: plan.generation };
    };
    const prev = this.#reloading ?? Promise.resolve({ ok: true, generation: 0 } as ReloadResult);
    const next = prev.then(run, run);
    this.#reloading = next;
    return next;
  }

  /** Stops accepting and lets in-flight requests finish within the shutdown deadline. */
  async stop(): Promise<void> {
    const deadline = this.state?.plan.limits.shutdownTimeoutMs ?? 10_000;
    this.#services.abort();
    this.#tickets.stop();
    await this.admin?.close();
    await this.acme?.stop();
    await Promise.all([this.https?.close(deadline), this.http?.close(deadline), ...this.streams.map((s) => s.close(deadline))]);
    this.targets.closeAll();
    this.streamHealth.retain(new Set());
  }
}
