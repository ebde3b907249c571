/**
 * Active health checks of stream (TCP) targets, as HAProxy's `check` in `mode tcp`: every `interval`
 * each target of a stream with `healthCheck` gets a TCP connection of its own, closed at once; one
 * that does not connect within `timeout` `unhealthyAfter` times in a row is taken out of rotation, and
 * put back after `healthyAfter` connections in a row. Transitions are log lines. The state is kept in
 * a registry by target and settings, so reloads keep it, and the connection path reads one boolean.
 */
import net from 'node:net';
import type { Logger } from 'pino';
import { HealthStreak } from '../upstream/health-streak.js';

export interface StreamHealthSettings {
  readonly intervalMs: number;
  readonly timeoutMs: number;
  readonly unhealthyAfter: number;
  readonly healthyAfter: number;
}

export class StreamTargetHealth {
  readonly url: string;
  readonly host: string;
  readonly port: number;
  readonly settings: StreamHealthSettings;
  /** Whether connections may go to it: the one field the connection path reads. */
  available = true;
  /** Why it is out, when it is. */
  reason: string | undefined = undefined;
  readonly #streak: HealthStreak;
  #timer: NodeJS.Timeout | undefined = undefined;
  #log: Logger | undefined = undefined;
  #probe: net.Socket | undefined = undefined;

  constructor(url: string, host: string, port: number, settings: StreamHealthSettings) {
    this.url = url;
    this.host = host;
    this.port = port;
    this.settings = settings;
    this.#streak = new HealthStreak(settings.healthyAfter, settings.unhealthyAfter);
  }

  /** Starts the checks (the first one at once); idempotent. */
  start(log: Logger): void {
    this.#log = log;
    if (this.#timer !== undefined) return;
    this.#timer = setInterval(() => this.#check(), this.settings.intervalMs).unref();
    this.#check();
  }

  stop(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    this.#probe?.destroy();
  }

  #check(): void {
    if (this.#probe !== undefined) return;
    const s = net.connect({ host: this.host, port: this.port });
    this.#probe = s;
    const done = (ok: boolean, why?: string): void => {
      if (this.#probe !== s) return;
      this.#probe = undefined;
      clearTimeout(timer);
      s.destroy();
      this.#result(ok, why);
    };
    const timer = setTimeout(() => done(false, `no connection within ${this.settings.timeoutMs} ms`), this.settings.timeoutMs);
    s.once('connect', () => done(true));
    s.once('error', (err: NodeJS.ErrnoException) => done(false, err.code ?? err.message));
  }

  #result(ok: boolean, why: string | undefined): void {
    if (!ok) this.reason = why;
    if (!this.#streak.record(ok)) return;
    this.available = ok;
    if (ok) {
      this.reason = undefined;
      this.#log?.info({ upstream: this.url, check: 'tcp' }, 'stream target up');
    } else {
      this.#log?.warn({ upstream: this.url, check: 'tcp', reason: why }, 'stream target down');
    }
  }
}

/** Stream target health by target and settings, shared by successive Plans. */
export class StreamHealthRegistry {
  readonly #byKey = new Map<string, StreamTargetHealth>();

  get(url: string, host: string, port: number, s: StreamHealthSettings): StreamTargetHealth {
    const key = `${host}|${port}|${s.intervalMs}|${s.timeoutMs}|${s.unhealthyAfter}|${s.healthyAfter}`;
    let h = this.#byKey.get(key);
    if (h === undefined) {
      h = new StreamTargetHealth(url, host, port, s);
      this.#byKey.set(key, h);
    }
    return h;
  }

  all(): IterableIterator<StreamTargetHealth> {
    return this.#byKey.values();
  }

  /** Stops and forgets the checks a new Plan no longer uses. */
  retain(keep: ReadonlySet<StreamTargetHealth>): void {
    for (const [key, h] of this.#byKey) {
      if (keep.has(h)) continue;
      h.stop();
      this.#byKey.delete(key);
    }
  }
}
