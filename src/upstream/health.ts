/**
 * The health of one target: active checks on a timer (health-probe.ts) and
 * passive failure counting from real requests. Both end in one verdict,
 * `Target.setHealthy`, which folds it with the target's drain state into the
 * one boolean `Target.available`, all the request path reads when it picks a
 * target. The state lives on the Target, which the registry keeps across
 * reloads while its identity (URL, TLS, health settings) is unchanged.
 */
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import { HealthStreak } from './health-streak.js';
import { probeTarget } from './health-probe.js';
import type { Target } from './target.js';

/** Active health check settings, compiled. */
export interface HealthSpec {
  readonly path: string;
  readonly intervalMs: number;
  readonly timeoutMs: number;
  /** The status a healthy target answers; undefined: any 2xx or 3xx. */
  readonly expectStatus: number | undefined;
  /** Host header (or :authority) of the check; undefined: the target's host:port. */
  readonly host: string | undefined;
  readonly unhealthyAfter: number;
  readonly healthyAfter: number;
}

/** Passive health settings, compiled. */
export interface PassiveSpec {
  readonly maxFails: number;
  readonly failTimeoutMs: number;
}

/** A target's health settings: either part may be absent. */
export interface HealthSettings {
  readonly active: HealthSpec | undefined;
  readonly passive: PassiveSpec | undefined;
}

/** The part of the registry key that health settings add (targets with other settings are other targets). */
export function healthKey(s: HealthSettings | undefined): string {
  if (s === undefined || (s.active === undefined && s.passive === undefined)) return '';
  return JSON.stringify([s.active ?? null, s.passive ?? null]);
}

/** What the health of a target looks like from outside (logs, tests). */
export interface HealthState {
  /** Health lets it take requests (whether it is drained aside). */
  readonly available: boolean;
  /** The last active check said unhealthy (counting unhealthyAfter). */
  readonly activeDown: boolean;
  /** Taken out by passive failure counting, until failTimeout passes. */
  readonly passiveDown: boolean;
  /** Why the target is out, when it is. */
  readonly reason: string | undefined;
}

export class TargetHealth {
  readonly #target: Target;
  readonly #active: HealthSpec | undefined;
  readonly #passive: PassiveSpec | undefined;
  #log: Logger | undefined;
  #started = false;
  #stopped = false;
  #timer: NodeJS.Timeout | undefined;
  /** The active checks' rise/fall count; undefined without active checks. */
  readonly #streak: HealthStreak | undefined;
  #reason: string | undefined;
  #passiveDown = false;
  #passiveTimer: NodeJS.Timeout | undefined;
  #windowStart = 0;
  #windowFails = 0;

  constructor(target: Target, settings: HealthSettings) {
    this.#target = target;
    this.#active = settings.active;
    this.#passive = settings.passive;
    this.#streak = settings.active === undefined ? undefined : new HealthStreak(settings.active.healthyAfter, settings.active.unhealthyAfter);
  }

  /** The last active checks have it out (counting unhealthyAfter). */
  get #activeDown(): boolean {
    return this.#streak !== undefined && !this.#streak.healthy;
  }

  get state(): HealthState {
    return { available: this.#target.healthy, activeDown: this.#activeDown, passiveDown: this.#passiveDown, reason: this.#reason };
  }

  /** Starts the active checks (the first one at once); idempotent. */
  start(log: Logger): void {
    this.#log = log;
    if (this.#started || this.#stopped) return;
    this.#started = true;
    if (this.#active !== undefined) this.#schedule(0);
  }

  /** Stops every timer; the target is leaving the registry. */
  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
    clearTimeout(this.#passiveTimer);
  }

  /**
   * A request to the target failed in a way that says the target is in trouble (refused,
   * unreachable, timed out). Past maxFails within failTimeout, the target is out for failTimeout.
   */
  reportFailure(code: string): void {
    const p = this.#passive;
    if (p === undefined || this.#passiveDown || this.#stopped) return;
    const now = performance.now();
    if (this.#windowFails === 0 || now - this.#windowStart > p.failTimeoutMs) {
      this.#windowStart = now;
      this.#windowFails = 0;
    }
    if (++this.#windowFails < p.maxFails) return;
    this.#windowFails = 0;
    this.#passiveDown = true;
    this.#reason = `${p.maxFails} failed request(s) within ${p.failTimeoutMs} ms, the last ${code}`;
    this.#apply();
    this.#log?.warn({ upstream: this.#target.url, check: 'passive', reason: this.#reason, retryInMs: p.failTimeoutMs }, 'upstream target down');
    this.#passiveTimer = setTimeout(this.#passiveUp.bind(this), p.failTimeoutMs).unref();
  }

  /** failTimeout passed since passive counting took the target out: it is tried again. */
  #passiveUp(): void {
    this.#passiveDown = false;
    this.#apply();
    if (this.#target.healthy) this.#log?.info({ upstream: this.#target.url, check: 'passive' }, 'upstream target up');
  }

  /**
   * Takes over the verdict of `prev`, the health of the target this one replaces (same URL, other
   * settings: a reload changed its health, TLS or connect settings), so that a reload never puts a
   * target known to be down back into rotation. Out by active checks: out until this one's checks
   * pass healthyAfter times in a row. Out by passive counting: out for this one's failTimeout. A
   * part this one does not configure is not taken over.
   */
  inherit(prev: TargetHealth): void {
    if (this.#streak !== undefined && prev.#activeDown) {
      this.#streak.healthy = false;
      this.#reason = prev.#reason;
    }
    const p = this.#passive;
    if (p !== undefined && prev.#passiveDown && !this.#passiveDown) {
      this.#passiveDown = true;
      this.#reason ??= prev.#reason;
      this.#passiveTimer = setTimeout(this.#passiveUp.bind(this), p.failTimeoutMs).unref();
    }
    if (this.#activeDown || this.#passiveDown) this.#apply();
  }

  #schedule(delayMs: number): void {
    this.#timer = setTimeout(() => void this.#check(), delayMs).unref();
  }

  async #check(): Promise<void> {
    const spec = this.#active!;
    let reason: string | undefined;
    try {
      reason = await probeTarget(this.#target, spec);
    } catch (err) {
      // A check that cannot even be sent (say, a Host value Node refuses) fails; it never ends the process.
      reason = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    }
    if (this.#stopped) return;
    const healthy = reason === undefined;
    if (this.#streak!.record(healthy)) {
      if (!healthy) this.#reason = `health check ${spec.path}: ${reason}`;
      this.#apply();
      if (healthy) this.#log?.info({ upstream: this.#target.url, check: 'active', path: spec.path }, 'upstream target up');
      else this.#log?.warn({ upstream: this.#target.url, check: 'active', path: spec.path, reason }, 'upstream target down');
    }
    this.#schedule(spec.intervalMs);
  }

  #apply(): void {
    const healthy = !this.#activeDown && !this.#passiveDown;
    this.#target.setHealthy(healthy);
    if (healthy) this.#reason = undefined;
  }
}
