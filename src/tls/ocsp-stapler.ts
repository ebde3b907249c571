/**
 * OCSP stapling (RFC 6066 §8, RFC 6961's single response): for each served certificate whose leaf names an OCSP
 * responder and whose issuer is in its chain, a verified "good" response is fetched in the background, held in
 * memory, and handed to every handshake that asks for it (status_request), as Caddy does by default and nginx with
 * `ssl_stapling on`. It is refreshed at half its validity (at least a minute apart, or half what is left of a shorter one; retried with jittered backoff when that fails), and the last good
 * one is stapled until its nextUpdate. A "revoked" answer is logged as an error and never stapled; a responder that
 * cannot be reached is logged as a warning and never stops serving. A changed certificate (reload, the watcher,
 * ACME) starts afresh.
 */
import type { Logger } from 'pino';
import type { Plan } from '../config/plan.js';
import { OCSP_CHAIN_WARNING, type CertPair } from './cert-pair.js';
import type { CertStore } from './cert-store.js';
import { fetchOcspResponse } from './ocsp-fetch.js';
import { backoffMs } from './backoff.js';
import type { OcspTarget, OcspVerdict } from './ocsp.js';

/** ocsp.ts, with @peculiar's ASN.1 and X.509 stack (about 20 MiB of RSS): loaded once a served certificate names a responder. */
type OcspModule = typeof import('./ocsp.js');

/** What the stapler needs. */
export interface OcspStaplerOptions {
  readonly certs: CertStore;
  readonly log: Logger;
  /** Stops every fetch and timer. */
  readonly signal: AbortSignal;
  /** Time one fetch may take. @default 10_000 */
  readonly fetchTimeoutMs?: number;
  /**
   * Delay before the first retry of a failed fetch; doubles on each failure in a row up to `maxRetryMs`, each delay
   * ±25 % at random (backoffMs, as ACME's retries), since every worker fetches for itself. @default 60_000
   */
  readonly retryMs?: number;
  /** @default 3_600_000 */
  readonly maxRetryMs?: number;
  /** Source of the retry jitter, in [0, 1); tests pass their own. @default Math.random */
  readonly random?: () => number;
}

/** One certificate with an OCSP responder, as the admin API shows it (plain JSON: a worker sends it over IPC). */
export interface OcspStatus {
  /** The certificate's id (as in the snapshot's certificates). */
  readonly certificate: string;
  /** The host names it serves. */
  readonly hosts: readonly string[];
  readonly url: string;
  /** "good": a response is stapled; "revoked": the responder says so, nothing stapled; "none": nothing stapled (not fetched yet, failing, expired, or not possible). */
  readonly status: 'good' | 'revoked' | 'none';
  /** The thisUpdate and nextUpdate of the response held (good or revoked), ISO 8601; null without one. */
  readonly thisUpdate: string | null;
  readonly nextUpdate: string | null;
  /** When the responder is asked next; null while a fetch is in flight or when it never is. */
  readonly nextFetchAt: string | null;
  /** Why the last fetch failed (failures in a row in `failures`), or why stapling is not possible; null after a success. */
  readonly lastError: string | null;
  readonly failures: number;
}

/** How long a response without nextUpdate (RFC 6960 §4.2.2.1: newer information is always available) is held. */
const NO_NEXT_UPDATE_MS = 3_600_000;
/** Shortest time between two fetches for one certificate after a success, for a response valid long enough. */
const MIN_REFRESH_MS = 60_000;
/** The floor under that for a response valid under two minutes: never a busy loop, whatever its nextUpdate. */
const SHORT_REFRESH_FLOOR_MS = 1_000;

/**
 * When to fetch again after a good response: at half its validity (from its thisUpdate, or now if that lies ahead),
 * and at least MIN_REFRESH_MS later; but a response with less validity left than twice that is fetched again at half
 * what it has left, so it is replaced before it expires, never sooner than SHORT_REFRESH_FLOOR_MS.
 */
export function refreshDelayMs(from: number, expiresAt: number, now: number): number {
  const floor = Math.max(SHORT_REFRESH_FLOOR_MS, Math.min(MIN_REFRESH_MS, (expiresAt - now) / 2));
  return Math.max(floor, from + (expiresAt - from) / 2 - now);
}
/** setTimeout's longest delay. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** One served certificate's stapling state. */
interface Entry {
  readonly id: string;
  readonly pair: CertPair;
  readonly target: OcspTarget;
  readonly key: string;
  /** Names of the hosts it serves, for the logs. */
  hosts: string[];
  /** The good response being stapled, and when it stops being valid. */
  response: Buffer | undefined;
  expiresAt: number;
  failures: number;
  /** For the admin API (statuses()): the last verdict and its times, when the responder is asked next, the last failure. */
  status: OcspStatus['status'];
  thisUpdate: Date | undefined;
  nextUpdate: Date | undefined;
  nextFetchAt: number | undefined;
  lastError: string | undefined;
  timer: NodeJS.Timeout | undefined;
  expiry: NodeJS.Timeout | undefined;
  /** Cancels its fetch in flight when the entry is dropped. */
  readonly abort: AbortController;
}

/** A certificate that gets no staple: the pair looked at (said once per pair), its hosts, and, when it names a responder, why not. */
interface Skipped {
  readonly pair: CertPair;
  hosts: string[];
  readonly url: string | undefined;
  readonly reason: string;
}

/** A response held for one leaf: the leaf's DER, to tell apart two leaves whose key (its tail) were the same. */
interface Staple {
  readonly leaf: Buffer;
  readonly response: Buffer;
}

/**
 * The map key of a leaf certificate: the base64 of its last 32 bytes, which lie in its signature. A handshake gets
 * the served certificate's DER from Node, and a map of 1–2 KiB string keys would hash the whole DER at each one.
 */
function leafKey(der: Buffer): string {
  return der.toString('base64', Math.max(0, der.length - 32));
}

/** Fetches, verifies, refreshes and holds the OCSP responses of the served certificates. */
export class OcspStapler {
  readonly #o: OcspStaplerOptions;
  #enabled = false;
  /** Stapling state by certificate id. */
  readonly #entries = new Map<string, Entry>();
  /** Certificates that get no staple, by id, with the pair that was looked at (said once per pair). */
  readonly #skipped = new Map<string, Skipped>();
  /** Good responses by leaf (leafKey): what handshakes get. */
  readonly #staples = new Map<string, Staple>();
  /** The last Plan given to update(), taken up again once ocsp.ts has loaded. */
  #plan: Plan | undefined;
  #ocsp: OcspModule | undefined;
  #loading: Promise<void> | undefined;

  constructor(options: OcspStaplerOptions) {
    this.#o = options;
    options.signal.addEventListener('abort', () => this.#dropAll(), { once: true });
  }

  /**
   * The handler of a TLS server's 'OCSPRequest' event: the held response for the certificate being served (its DER),
   * or none. Hot path (each handshake whose client asks for a staple): a map lookup, nothing else.
   */
  readonly onOcspRequest = (certificate: Buffer, _issuer: Buffer, callback: (err: Error | null, response: Buffer | null) => void): void => {
    callback(null, this.responseFor(certificate) ?? null);
  };

  /** The held response for a leaf (DER), or undefined. Hot path. */
  responseFor(certificate: Buffer): Buffer | undefined {
    const staple = this.#staples.get(leafKey(certificate));
    return staple !== undefined && staple.leaf.equals(certificate) ? staple.response : undefined;
  }

  /**
   * Follows the certificates a Plan serves: called for each published Plan and after a certificate changed. New or
   * changed certificates are fetched for at once; those no longer served are forgotten; with stapling turned off,
   * everything is.
   */
  update(plan: Plan): void {
    if (this.#o.signal.aborted) return;
    this.#plan = plan;
    this.#enabled = plan.ocspStapling;
    if (!this.#enabled) return this.#dropAll();
    const hostsById = new Map<string, string[]>();
    for (const h of plan.hosts) hostsById.set(h.certId, [...(hostsById.get(h.certId) ?? []), ...h.names]);
    for (const id of this.#entries.keys()) if (!hostsById.has(id)) this.#drop(id);
    for (const id of this.#skipped.keys()) if (!hostsById.has(id)) this.#skipped.delete(id);
    for (const [id, hosts] of hostsById) {
      const pair = this.#o.certs.get(id);
      const have = this.#entries.get(id);
      if (have !== undefined && have.pair === pair) {
        have.hosts = hosts;
        continue;
      }
      if (have !== undefined) this.#drop(id);
      if (pair === undefined) continue;
      const skipped = this.#skipped.get(id);
      if (skipped?.pair === pair) {
        skipped.hosts = hosts;
        continue;
      }
      // Node's own reading of the AIA extension (cert-pair.ts) says whether there is anything to do, without loading ocsp.ts.
      const responder = pair.ocspResponder;
      if (responder === undefined) {
        // The common case (Let's Encrypt has no responder URL since 2025): said at debug.
        this.#skipped.set(id, { pair, hosts, url: undefined, reason: 'no OCSP responder URL in the certificate' });
        this.#o.log.debug({ host: hosts[0], certFile: pair.certFile, reason: 'no OCSP responder URL in the certificate' }, 'ocsp stapling skipped for this certificate');
        continue;
      }
      if (!responder.issuerInFile) {
        // A mistake of the operator's, as `portico check` says too: stapling was asked for (the default) and cannot work.
        this.#skipped.set(id, { pair, hosts, url: responder.url, reason: 'the issuer certificate is not in the chain' });
        this.#o.log.warn({ host: hosts[0], certFile: pair.certFile, url: responder.url, issuer: pair.issuer.replace(/\n/g, ', ') }, OCSP_CHAIN_WARNING);
        continue;
      }
      const ocsp = this.#load();
      if (ocsp === null) continue;
      let target: OcspTarget | string;
      try {
        target = ocsp.ocspTargetOf(pair.certPem, pair.leaf);
      } catch (err) {
        // A certificate Node and OpenSSL accepted but whose ASN.1 the OCSP request cannot be made from: served unstapled.
        target = `its OCSP request cannot be made (${(err as Error).message})`;
      }
      if (typeof target === 'string') {
        this.#skipped.set(id, { pair, hosts, url: responder.url, reason: target });
        this.#o.log.info({ host: hosts[0], certFile: pair.certFile, reason: target }, 'ocsp stapling skipped for this certificate');
        continue;
      }
      this.#skipped.delete(id);
      const entry: Entry = {
        id,
        pair,
        target,
        key: leafKey(target.leaf.raw),
        hosts,
        response: undefined,
        expiresAt: 0,
        failures: 0,
        status: 'none',
        thisUpdate: undefined,
        nextUpdate: undefined,
        nextFetchAt: undefined,
        lastError: undefined,
        timer: undefined,
        expiry: undefined,
        abort: new AbortController(),
      };
      this.#entries.set(id, entry);
      this.#schedule(entry, 0);
    }
  }

  /** ocsp.ts once loaded; else null, after starting to load it (update() runs again with the last Plan when it has). */
  #load(): OcspModule | null {
    if (this.#ocsp !== undefined) return this.#ocsp;
    this.#loading ??= import('./ocsp.js').then(
      (m) => {
        this.#ocsp = m;
        if (this.#plan !== undefined) this.update(this.#plan);
      },
      (err: unknown) => this.#o.log.error({ err: (err as Error).message }, 'ocsp stapling unavailable: its module did not load'),
    );
    return null;
  }

  /** How many certificates have a response stapled now; for tests and the admin API. */
  get stapledCount(): number {
    return this.#staples.size;
  }

  /**
   * The stapling state of every served certificate that names an OCSP responder, for the admin API's /status and
   * /metrics. Cold path: built when the admin API asks.
   */
  statuses(): OcspStatus[] {
    const out: OcspStatus[] = [];
    const iso = (d: Date | number | undefined): string | null => (d === undefined ? null : new Date(d).toISOString());
    for (const e of this.#entries.values()) {
      out.push({ certificate: e.id, hosts: e.hosts, url: e.target.url, status: e.status, thisUpdate: iso(e.thisUpdate), nextUpdate: iso(e.nextUpdate), nextFetchAt: iso(e.nextFetchAt), lastError: e.lastError ?? null, failures: e.failures });
    }
    for (const [id, s] of this.#skipped) {
      if (s.url !== undefined) out.push({ certificate: id, hosts: s.hosts, url: s.url, status: 'none', thisUpdate: null, nextUpdate: null, nextFetchAt: null, lastError: s.reason, failures: 0 });
    }
    return out;
  }

  #schedule(e: Entry, delayMs: number): void {
    clearTimeout(e.timer);
    const ms = Math.min(Math.max(0, delayMs), MAX_TIMER_MS);
    e.nextFetchAt = Date.now() + ms;
    e.timer = setTimeout(() => void this.#refresh(e), ms);
    e.timer.unref();
  }

  async #refresh(e: Entry): Promise<void> {
    e.timer = undefined;
    e.nextFetchAt = undefined;
    const { url } = e.target;
    let der: Buffer;
    try {
      der = await fetchOcspResponse(url, e.target.request, this.#o.fetchTimeoutMs ?? 10_000, e.abort.signal);
    } catch (err) {
      if (e.abort.signal.aborted) return;
      return this.#failed(e, (err as Error).message);
    }
    if (e.abort.signal.aborted) return;
    const now = Date.now();
    let verdict: OcspVerdict;
    try {
      // Loaded: the entry was made with it.
      verdict = this.#ocsp!.checkOcspResponse(der, e.target, now);
    } catch (err) {
      return this.#failed(e, (err as Error).message);
    }
    const fields = { host: e.hosts[0], certFile: e.pair.certFile, url, serial: e.target.serial };
    if (verdict.status === 'revoked') {
      // Stapling it would make clients refuse the site at once; serving on lets the operator replace the certificate.
      this.#unstaple(e);
      e.failures = 0;
      e.status = 'revoked';
      e.thisUpdate = verdict.thisUpdate;
      e.nextUpdate = verdict.nextUpdate;
      e.lastError = undefined;
      this.#o.log.error({ ...fields, revokedAt: verdict.revokedAt.toISOString(), revocationReason: verdict.reason }, 'certificate revoked according to its ocsp responder: not stapled, replace the certificate');
      return this.#schedule(e, this.#o.maxRetryMs ?? 3_600_000);
    }
    if (verdict.status === 'unknown') return this.#failed(e, 'the responder does not know this certificate (status "unknown")');
    const expiresAt = verdict.nextUpdate?.getTime() ?? now + NO_NEXT_UPDATE_MS;
    const from = Math.min(verdict.thisUpdate.getTime(), now);
    e.failures = 0;
    e.response = der;
    e.expiresAt = expiresAt;
    e.status = 'good';
    e.thisUpdate = verdict.thisUpdate;
    e.nextUpdate = verdict.nextUpdate;
    e.lastError = undefined;
    this.#staples.set(e.key, { leaf: e.target.leaf.raw, response: der });
    clearTimeout(e.expiry);
    e.expiry = setTimeout(() => this.#expire(e), Math.min(expiresAt - now, MAX_TIMER_MS));
    e.expiry.unref();
    const refreshIn = refreshDelayMs(from, expiresAt, now);
    this.#o.log.info({ ...fields, thisUpdate: verdict.thisUpdate.toISOString(), nextUpdate: verdict.nextUpdate?.toISOString(), refreshInMs: Math.round(refreshIn) }, 'ocsp response stapled');
    this.#schedule(e, refreshIn);
  }

  /** A fetch that failed or gave nothing usable: said, the last good response kept until it expires, retried later. */
  #failed(e: Entry, reason: string): void {
    e.failures++;
    e.lastError = reason;
    // Jittered: the workers, each fetching for itself, fail together when the responder is down, and should not all ask again at once.
    const retryInMs = backoffMs(e.failures, this.#o.retryMs ?? 60_000, this.#o.maxRetryMs ?? 3_600_000, this.#o.random);
    this.#o.log.warn(
      { host: e.hosts[0], certFile: e.pair.certFile, url: e.target.url, reason, failures: e.failures, retryInMs, stapling: e.response === undefined ? 'nothing' : `the last good response, until ${new Date(e.expiresAt).toISOString()}` },
      'ocsp response not fetched, serving on',
    );
    this.#schedule(e, retryInMs);
  }

  #expire(e: Entry): void {
    if (this.#entries.get(e.id) !== e || e.response === undefined) return;
    this.#unstaple(e);
    e.status = 'none';
    e.thisUpdate = undefined;
    e.nextUpdate = undefined;
    this.#o.log.warn({ host: e.hosts[0], certFile: e.pair.certFile, url: e.target.url }, 'ocsp response expired before a new one could be fetched, no longer stapled');
  }

  #unstaple(e: Entry): void {
    clearTimeout(e.expiry);
    e.expiry = undefined;
    // Another id serving the very same certificate may hold the same staple: only this entry's own is removed.
    if (e.response !== undefined && this.#staples.get(e.key)?.response === e.response) this.#staples.delete(e.key);
    e.response = undefined;
  }

  #drop(id: string): void {
    const e = this.#entries.get(id);
    if (e === undefined) return;
    this.#entries.delete(id);
    e.abort.abort();
    clearTimeout(e.timer);
    this.#unstaple(e);
  }

  #dropAll(): void {
    for (const id of [...this.#entries.keys()]) this.#drop(id);
    this.#skipped.clear();
    this.#staples.clear();
  }
}
