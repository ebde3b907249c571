/**
 * The ACME manager: for every host with `tls: {acme: true}` in the current
 * Plan, serve the stored certificate if there is a usable one, order one if
 * not, and renew it when due. Failures are retried with a capped exponential
 * backoff (at least the CA's Retry-After) while the old certificate keeps
 * serving. Only the process holding the orderer lock orders; the others load
 * what it writes (here on each check, and through the certificate watcher).
 *
 * Until a host's first certificate arrives, handshakes for it are refused
 * (the SNI callback finds no certificate): a temporary self-signed
 * certificate would only trade a clear failure for a browser warning, and
 * could be pinned by HSTS-preloaded clients.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { certPath } from '../config/compile.js';
import type { Plan } from '../config/plan.js';
import { ConfigSchema, type Config } from '../config/schema.js';
import { parseDurationMs } from '../config/units.js';
import { PorticoError } from '../errors.js';
import { buildCertPair, certCovers, type CertPair } from '../tls/cert-pair.js';
import type { CertStore } from '../tls/cert-store.js';
import type { CertTarget } from '../tls/watch-certs.js';
import { createAcmeClient, loadAccountKey } from './account.js';
import { Dns01Hook } from './dns01.js';
import type { Http01Responder } from './http01.js';
import { OrdererLock, type OrdererLockOptions } from './lock.js';
import { orderCertificate, type ChallengeType, type IssuedPair } from './order.js';
import { ariCertId, parseRenewalInfo, parseRenewBefore, pickInWindow, renewalAt, type RenewBefore } from './schedule.js';
import { backoffMs } from '../tls/backoff.js';
import { accountKeyPath, acmeDir, challengeDirs, loadStored, saveIssued, storedPaths, type StoredPaths } from './storage.js';
import { getJson, installAcmeTransport, isMaskedNetworkError, probeDirectory, retryAfterMs, trustCaFor } from './transport.js';
import type { AlpnResponder } from './tls-alpn01.js';

/** The `acme` section, compiled. */
interface AcmeSettings {
  readonly directory: string;
  readonly email: string | undefined;
  readonly termsOfServiceAgreed: boolean;
  readonly eab: { readonly kid: string; readonly hmacKey: string } | undefined;
  readonly challenge: ChallengeType;
  readonly renewBefore: RenewBefore;
  readonly retryDelayMs: number;
  readonly retryMaxDelayMs: number;
  readonly pollIntervalMs: number;
  readonly httpListener: boolean;
  /** The operator's DNS-01 program ("acme.dns01"), or undefined. */
  readonly dns01: Dns01Hook | undefined;
}

/** What the manager knows about one ACME host. */
interface HostState {
  readonly name: string;
  readonly id: string;
  readonly names: readonly string[];
  readonly key: string;
  readonly paths: StoredPaths;
  timer: NodeJS.Timeout | undefined;
  removed: boolean;
  failures: number;
  lastError: string | undefined;
  orders: number;
  /** Renewal moment for the certificate with fingerprint `renewFor`. */
  renewAt: number;
  renewFor: string;
  /** ARI: the chosen moment in the CA's window, and when to ask again. */
  ariAt: number | undefined;
  ariRecheckAt: number;
  /** Whether "acme certificate valid" was logged for the current pair. */
  announced: string;
  /** An issued pair served from memory because writing it to disk failed; saved again before anything else. */
  unsaved: IssuedPair | undefined;
  /** The last "stored acme certificate not usable" reason logged, so a follower says it once. */
  storedProblem: string | undefined;
}

/** A host's ACME status, for the admin API and tests. */
export interface AcmeHostStatus {
  readonly names: readonly string[];
  readonly orders: number;
  readonly failures: number;
  readonly lastError: string | undefined;
  readonly renewAt: number | undefined;
}

/** What the manager needs. */
export interface AcmeManagerOptions {
  readonly certs: CertStore;
  readonly log: Logger;
  readonly http01: Http01Responder;
  readonly alpn: AlpnResponder;
  /** Called after a certificate id got a new pair (to refresh the default-host context). */
  readonly onCertificate: (id: string) => void;
  /** How often a process without the orderer lock re-reads the stored files and tries the lock. @default 30_000 */
  readonly followerRetryMs?: number;
  readonly lock?: OrdererLockOptions;
}

const MAX_TIMER_MS = 12 * 3_600_000;
const DEFAULT_ACME = ConfigSchema.shape.acme.unwrap();

/** The certificate files of every ACME host of a Plan, for the certificate watcher (other workers load them from there). */
export function acmeCertTargets(plan: Plan): CertTarget[] {
  return plan.hosts
    .filter((h) => h.acme)
    .map((h) => {
      const p = storedPaths(plan.certsDir, h.name);
      return { id: h.certId, certFile: p.certFile, keyFile: p.keyFile, names: h.names, kind: 'acme' as const };
    });
}

/** Orders and renews the certificates of ACME hosts. */
export class AcmeManager {
  readonly #o: AcmeManagerOptions;
  readonly #hosts = new Map<string, HostState>();
  #settings: AcmeSettings | undefined;
  #certsDir = '';
  #lock: OrdererLock | undefined;
  #queue: Promise<void> = Promise.resolve();
  #stopped = false;
  /** The write of an issued certificate under way, which stop() waits for. */
  #saving: Promise<unknown> | undefined = undefined;
  #directory: Record<string, unknown> | undefined;

  constructor(options: AcmeManagerOptions) {
    this.#o = options;
  }

  /** Runs until `signal` aborts. */
  start(signal: AbortSignal): void {
    this.#stopped = false;
    signal.addEventListener('abort', () => void this.stop(), { once: true });
  }

  /** Re-targets to a new Plan: new hosts are ordered, removed ones stop being renewed. */
  async update(plan: Plan, config: Config): Promise<void> {
    if (this.#stopped) return;
    const wanted = plan.hosts.filter((h) => h.acme);
    if (wanted.length === 0) {
      for (const s of this.#hosts.values()) this.#drop(s);
      return;
    }
    const conf = config.acme ?? DEFAULT_ACME.parse({});
    let caPem: Buffer | undefined;
    if (conf.caFile !== undefined) {
      const file = certPath(plan.certsDir, conf.caFile);
      try {
        caPem = await readFile(file);
      } catch (err) {
        this.#o.log.error({ file, code: (err as NodeJS.ErrnoException).code }, 'acme caFile unreadable, using the system trust store');
      }
    }
    installAcmeTransport();
    trustCaFor(conf.directory, caPem);
    const settings: AcmeSettings = {
      directory: conf.directory,
      email: conf.email,
      termsOfServiceAgreed: conf.termsOfServiceAgreed,
      eab: conf.eab,
      challenge: conf.challenge,
      renewBefore: parseRenewBefore(conf.renewBefore, parseDurationMs),
      retryDelayMs: parseDurationMs(conf.retryDelay),
      retryMaxDelayMs: parseDurationMs(conf.retryMaxDelay),
      pollIntervalMs: parseDurationMs(conf.pollInterval),
      httpListener: config.listen.http !== null,
      dns01:
        conf.dns01 === undefined
          ? undefined
          : new Dns01Hook(
              { command: conf.dns01.command, propagationDelayMs: parseDurationMs(conf.dns01.propagationDelay), timeoutMs: parseDurationMs(conf.dns01.timeout), baseDir: plan.baseDir },
              this.#o.log,
            ),
    };
    this.#settings = settings;
    this.#directory = undefined;
    if (this.#certsDir !== plan.certsDir) {
      await this.#lock?.release();
      this.#certsDir = plan.certsDir;
      // Workers share the listening sockets: pending challenges go where every worker can read them.
      const shared = challengeDirs(plan.certsDir);
      this.#o.http01.setSharedDir(shared.http01);
      this.#o.alpn.setSharedDir(shared.alpn);
      this.#lock = new OrdererLock(join(acmeDir(plan.certsDir), 'orderer.lock'), {
        ...this.#o.lock,
        onLost: () => this.#o.log.warn({}, 'acme orderer lock taken over by another process'),
      });
    }
    const keep = new Set<string>();
    for (const h of wanted) {
      const key = JSON.stringify([h.names, settings.directory, settings.challenge, plan.certsDir, conf.dns01 ?? null, plan.baseDir]);
      keep.add(h.name);
      const old = this.#hosts.get(h.name);
      if (old !== undefined && old.key === key) continue;
      if (old !== undefined) this.#drop(old);
      const state: HostState = {
        name: h.name,
        id: h.certId,
        names: h.names,
        key,
        paths: storedPaths(plan.certsDir, h.name),
        timer: undefined,
        removed: false,
        failures: 0,
        lastError: undefined,
        orders: 0,
        renewAt: 0,
        renewFor: '',
        ariAt: undefined,
        ariRecheckAt: 0,
        announced: '',
        unsaved: undefined,
        storedProblem: undefined,
      };
      this.#hosts.set(h.name, state);
      this.#schedule(state, 0);
    }
    for (const s of this.#hosts.values()) if (!keep.has(s.name)) this.#drop(s);
  }

  /** The status of an ACME host by primary name. */
  status(name: string): AcmeHostStatus | undefined {
    const s = this.#hosts.get(name);
    return s === undefined ? undefined : { names: s.names, orders: s.orders, failures: s.failures, lastError: s.lastError, renewAt: s.renewFor === '' ? undefined : (s.ariAt ?? s.renewAt) };
  }

  /** Every ACME host's status, for the admin API's /status. */
  statuses(): { host: string; orderer: boolean; status: AcmeHostStatus }[] {
    const orderer = this.#lock?.held ?? false;
    return [...this.#hosts.keys()].map((host) => ({ host, orderer, status: this.status(host)! }));
  }

  /** Re-checks every host now (e.g. after the CA came back); resolves when done. */
  checkNow(): Promise<void> {
    for (const s of this.#hosts.values()) {
      clearTimeout(s.timer);
      this.#enqueue(s);
    }
    return this.#queue;
  }

  /**
   * Stops all timers and releases the orderer lock. Shutdown does not wait for
   * an order in flight (a slow CA could hold it for minutes): it runs on, and
   * its result is discarded.
   */
  async stop(): Promise<void> {
    this.#stopped = true;
    for (const s of this.#hosts.values()) clearTimeout(s.timer);
    // A certificate being written is waited for (a local write, quick): lost, it would be ordered again at the next start.
    await this.#saving?.catch(() => undefined);
    await this.#lock?.release();
  }

  #drop(state: HostState): void {
    clearTimeout(state.timer);
    state.removed = true;
    this.#hosts.delete(state.name);
    this.#o.log.info({ host: state.name }, 'acme host removed, no longer renewed');
  }

  #schedule(state: HostState, delayMs: number): void {
    clearTimeout(state.timer);
    if (this.#stopped || state.removed) return;
    state.timer = setTimeout(() => this.#enqueue(state), Math.max(0, Math.min(delayMs, MAX_TIMER_MS)));
    state.timer.unref();
  }

  #enqueue(state: HostState): void {
    // One evaluation at a time: orders are serialised, which also spares the CA's rate limits.
    this.#queue = this.#queue.then(() => this.#evaluate(state)).catch((err: unknown) => {
      // Not the CA: the certs directory (the lock file, a read) failed. Shown in /status and backed off like an order.
      if (this.#stopped || state.removed) return;
      const e = err as NodeJS.ErrnoException;
      state.failures++;
      state.lastError = `checking the certificate failed: ${e.message}; check that ${acmeDir(this.#certsDir)} is a writable folder`;
      const settings = this.#settings;
      const delay = settings === undefined ? 60_000 : backoffMs(state.failures, settings.retryDelayMs, settings.retryMaxDelayMs);
      this.#o.log.error({ host: state.name, code: e.code, err: e.message, attempt: state.failures, retryInMs: delay }, 'acme check failed');
      this.#schedule(state, delay);
    });
  }

  #covers(pair: CertPair, names: readonly string[]): boolean {
    return names.every((n) => certCovers(pair.leaf, n));
  }

  #install(state: HostState, pair: CertPair): void {
    this.#o.certs.set(state.id, pair);
    this.#o.onCertificate(state.id);
  }

  async #evaluate(state: HostState): Promise<void> {
    const settings = this.#settings;
    if (this.#stopped || state.removed || settings === undefined) return;
    if (settings.dns01 === undefined && state.names.some((n) => n.startsWith('*.'))) {
      this.#o.log.error({ host: state.name, names: state.names }, 'acme cannot issue wildcard names without dns-01; set acme.dns01, or use mounted certificates');
      return;
    }
    // What is served, or a newer pair on disk (a restart, or another process renewed it).
    let pair = this.#o.certs.get(state.id);
    if (pair !== undefined && !this.#covers(pair, state.names)) pair = undefined;
    const stored = await loadStored(state.paths, settings.directory, state.names);
    // The served pair is what the files held; after a switch of CA (staging → production) it no longer counts.
    if (stored.otherDirectory === true) pair = undefined;
    if (stored.pair !== undefined && stored.pair.digest !== pair?.digest && (pair === undefined || stored.pair.notAfter > pair.notAfter)) {
      pair = stored.pair;
      this.#install(state, pair);
      this.#o.log.info({ host: state.name, file: state.paths.certFile, notAfter: pair.notAfter.toISOString(), issuer: pair.issuer }, 'acme certificate loaded from disk');
    } else if (pair === undefined && stored.missing === true) {
      this.#o.log.debug({ host: state.name, reason: stored.reason }, 'no usable stored acme certificate');
    } else if (pair === undefined && stored.reason !== undefined && stored.reason !== state.storedProblem) {
      // Files that are there but not used (damaged, expired, for other names or another CA): say why a new order comes.
      state.storedProblem = stored.reason;
      this.#o.log.warn({ host: state.name, dir: state.paths.dir, reason: stored.reason }, 'stored acme certificate not usable, a new one will be ordered');
    }
    const lock = this.#lock;
    if (lock === undefined || !(await lock.tryAcquire())) {
      this.#schedule(state, this.#o.followerRetryMs ?? 30_000);
      return;
    }
    // The orderer's last certificate could not be written: save it before anything else, never order it again.
    if (state.unsaved !== undefined && !(await this.#save(state, settings, true))) return;
    const now = Date.now();
    if (pair !== undefined) {
      const { renewAt, wakeAt } = await this.#due(state, pair, settings, now);
      if (renewAt > now) {
        if (state.announced !== pair.fingerprint256) {
          state.announced = pair.fingerprint256;
          this.#o.log.info({ host: state.name, notAfter: pair.notAfter.toISOString(), renewAt: new Date(renewAt).toISOString() }, 'acme certificate valid, renewal scheduled');
        }
        this.#schedule(state, Math.min(renewAt, wakeAt) - now);
        return;
      }
    }
    let issued: IssuedPair;
    let fresh: CertPair;
    try {
      issued = await this.#order(state, settings);
      if (this.#stopped || state.removed) return;
      fresh = buildCertPair(state.paths.certFile, state.paths.keyFile, Buffer.from(issued.certPem), Buffer.from(issued.keyPem), state.names);
    } catch (err) {
      if (this.#stopped || state.removed) return;
      state.failures++;
      state.lastError = (err as Error).message;
      const delay = Math.max(backoffMs(state.failures, settings.retryDelayMs, settings.retryMaxDelayMs), retryAfterMs(settings.directory));
      this.#o.log.error(
        { host: state.name, code: (err as { code?: string }).code, err: state.lastError, attempt: state.failures, retryInMs: delay, servingUntil: pair?.notAfter.toISOString() ?? null },
        pair === undefined ? 'acme order failed' : 'acme renewal failed, keeping the current certificate',
      );
      this.#schedule(state, delay);
      return;
    }
    // Served at once, saved after: a certificate the disk refuses (full, read-only, a file in the way) is
    // kept and its save retried, not ordered again on every retry (which would use up the CA's
    // duplicate-certificate limit, 5 a week at Let's Encrypt, and keep the host without a certificate).
    this.#install(state, fresh);
    state.announced = fresh.fingerprint256;
    this.#o.log.info(
      { host: state.name, names: state.names, renewal: pair !== undefined, notAfter: fresh.notAfter.toISOString(), issuer: fresh.issuer, fingerprint256: fresh.fingerprint256 },
      'acme certificate issued',
    );
    state.unsaved = issued;
    if (!(await this.#save(state, settings, false))) return;
    const { renewAt, wakeAt } = await this.#due(state, fresh, settings, Date.now());
    this.#schedule(state, Math.min(renewAt, wakeAt) - Date.now());
  }

  /** Writes `state.unsaved` to disk (`retry`: after a failed write); on failure logs why, schedules a retry with backoff and returns false. */
  async #save(state: HostState, settings: AcmeSettings, retry: boolean): Promise<boolean> {
    const issued = state.unsaved;
    if (issued === undefined) return true;
    try {
      this.#saving = saveIssued(state.paths, settings.directory, state.names, issued.certPem, issued.keyPem);
      await this.#saving;
    } catch (err) {
      this.#saving = undefined;
      if (this.#stopped || state.removed) return false;
      const e = err as NodeJS.ErrnoException;
      state.failures++;
      state.lastError = `the certificate for ${state.names.join(', ')} was issued but cannot be written to ${state.paths.dir} (${e.code ?? e.message}); it is served from this process's memory meanwhile, and ordered again after a restart: make that folder writable, with free space`;
      const delay = backoffMs(state.failures, settings.retryDelayMs, settings.retryMaxDelayMs);
      this.#o.log.error({ host: state.name, code: e.code, err: e.message, dir: state.paths.dir, attempt: state.failures, retryInMs: delay }, 'acme certificate issued but not saved, serving it from memory; retrying the save');
      this.#schedule(state, delay);
      return false;
    }
    this.#saving = undefined;
    state.unsaved = undefined;
    state.failures = 0;
    state.lastError = undefined;
    if (retry) this.#o.log.info({ host: state.name, dir: state.paths.dir }, 'acme certificate saved');
    return true;
  }

  /** When `pair` is due for renewal, and when to look again (ARI re-polls). */
  async #due(state: HostState, pair: CertPair, settings: AcmeSettings, now: number): Promise<{ renewAt: number; wakeAt: number }> {
    if (state.renewFor !== pair.fingerprint256) {
      state.renewFor = pair.fingerprint256;
      state.renewAt = renewalAt(pair.notBefore.getTime(), pair.notAfter.getTime(), settings.renewBefore);
      state.ariAt = undefined;
      state.ariRecheckAt = 0;
    }
    const ariUrl = await this.#renewalInfoUrl(settings);
    if (ariUrl !== undefined && state.ariRecheckAt <= now) {
      const certId = ariCertId(pair.certPem);
      const answer = certId === undefined ? undefined : await getJson(`${ariUrl.replace(/\/$/, '')}/${certId}`);
      const window = answer?.ok === true && answer.status === 200 ? parseRenewalInfo(answer.body, answer.retryAfterMs) : undefined;
      if (window !== undefined) {
        state.ariAt = pickInWindow(window, now);
        state.ariRecheckAt = now + window.recheckMs;
        this.#o.log.debug({ host: state.name, start: new Date(window.startMs).toISOString(), end: new Date(window.endMs).toISOString() }, 'acme renewal window from ari');
      } else {
        state.ariRecheckAt = now + 3_600_000;
      }
    }
    const renewAt = state.ariAt ?? state.renewAt;
    return { renewAt, wakeAt: ariUrl === undefined ? renewAt : Math.min(renewAt, state.ariRecheckAt) };
  }

  async #renewalInfoUrl(settings: AcmeSettings): Promise<string | undefined> {
    if (this.#directory === undefined) {
      const probe = await probeDirectory(settings.directory);
      if (probe.ok) this.#directory = probe.directory;
    }
    const url = this.#directory?.renewalInfo;
    return typeof url === 'string' ? url : undefined;
  }

  async #order(state: HostState, settings: AcmeSettings): Promise<{ certPem: string; keyPem: string }> {
    const names = state.names.join(', ');
    // Wildcard names are validated over DNS only (RFC 8555 §7.1.3): such an order uses dns-01 whatever acme.challenge says.
    const challenge: ChallengeType = settings.dns01 !== undefined && (settings.challenge === 'dns-01' || state.names.some((n) => n.startsWith('*.'))) ? 'dns-01' : settings.challenge;
    if (challenge === 'http-01' && !settings.httpListener) {
      throw new PorticoError('PORTICO_ACME_FAILED', `http-01 needs the plain HTTP listener, but listen.http is null; enable it or set acme.challenge to "tls-alpn-01"`);
    }
    const probe = await probeDirectory(settings.directory);
    if (!probe.ok) throw new PorticoError('PORTICO_ACME_FAILED', `cannot reach the ACME directory ${settings.directory}: ${probe.cause}`);
    this.#directory = probe.directory;
    const accountKey = await loadAccountKey(accountKeyPath(this.#certsDir, settings.directory));
    const client = createAcmeClient({ directoryUrl: settings.directory, accountKey, eab: settings.eab, pollIntervalMs: settings.pollIntervalMs });
    state.orders++;
    this.#o.log.info({ host: state.name, names: state.names, directory: settings.directory, challenge }, 'acme order started');
    try {
      return await orderCertificate({
        client,
        names: state.names,
        challenge,
        email: settings.email,
        termsOfServiceAgreed: settings.termsOfServiceAgreed,
        http01: this.#o.http01,
        alpn: this.#o.alpn,
        dns01: settings.dns01,
      });
    } catch (err) {
      if (isMaskedNetworkError(err)) {
        const again = await probeDirectory(settings.directory);
        throw new PorticoError('PORTICO_ACME_FAILED', `lost the connection to the ACME CA ${settings.directory} while ordering ${names}: ${again.ok ? 'a request got no answer' : again.cause}`, { cause: err });
      }
      throw new PorticoError('PORTICO_ACME_FAILED', `ordering a certificate for ${names} from ${settings.directory} failed: ${(err as Error).message}`, { cause: err });
    }
  }
}
