/**
 * The primary process when `workers` > 1: forks the workers (which bind their
 * own sockets with SO_REUSEPORT where Node can, else share the primary's through
 * node:cluster's round-robin), restarts a worker that dies (with a growing delay in a crash loop;
 * it gives up only when no worker serves), and
 * forwards SIGTERM/SIGINT (graceful stop; a worker still running limits.shutdownTimeout + 5 s
 * later is killed and the primary exits 1), SIGHUP (reload) and SIGUSR1 (reopen the log files) to them. It
 * holds the secret that every worker's TLS session ticket keys derive from, and
 * the upstream targets drained over the admin API (drained-targets.ts).
 */
import cluster, { type Worker } from 'node:cluster';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { TICKET_SECRET_BYTES } from '../tls/session-tickets.js';
import { answerTicketSecretRequests } from './ticket-secret.js';
import { primaryDrainedTargets } from './drained-targets.js';
import { isWorkerMessage, WORKER_READY, WORKER_SIGNALS_READY } from './worker-messages.js';
import type { LogFiles } from '../log/log-files.js';
import type { HandledSignal, SignalRouter } from '../cli/startup-signals.js';

/** How the workers share the listeners. */
export interface PrimaryOptions {
  /** Each worker binds its own sockets with SO_REUSEPORT (src/listen/listen-options.ts); else the primary accepts and hands connections over. */
  readonly reusePort: boolean;
  /** Called when the primary gets SIGHUP (after forwarding it): the admin API re-reads its token. */
  readonly onReload?: () => void;
  /** limits.shutdownTimeout of the config at start, in ms; the workers' own value replaces it once they report it. */
  readonly shutdownTimeoutMs: number;
  /** The primary's log outputs: it reopens its own log.file on SIGUSR1 (main.ts), and moves to the one the workers report after a reload. */
  readonly logFiles?: LogFiles;
  /** The CLI's signal handlers, installed before the primary bound anything (main.ts); signals held until now are acted on. */
  readonly signals: SignalRouter;
}

/** After limits.shutdownTimeout, how long a stopping worker has left (closing sockets, flushing its log) before it is killed. */
export const STOP_GRACE_MS = 5_000;

/** Restarts in the first minute of a crash loop that go at once: one per worker. */
const RESTART_DELAY_BASE_MS = 250;
/** Longest wait before a dead worker is restarted. */
export const RESTART_DELAY_MAX_MS = 30_000;

/**
 * How long to wait before restarting a worker, when `deathsInMinute` workers (this one included) died in
 * the last minute: the first `count` at once, then 250 ms doubling up to 30 s, so a worker that cannot
 * start (a config edited into one it refuses, a port taken) is not forked in a tight loop.
 */
export function restartDelayMs(deathsInMinute: number, count: number): number {
  if (deathsInMinute <= count) return 0;
  return Math.min(RESTART_DELAY_BASE_MS * 2 ** (deathsInMinute - count - 1), RESTART_DELAY_MAX_MS);
}

/** Starts that failed in a row (workers that died before serving), with no worker serving, after which the primary gives up. */
export function giveUpAfterFailedStarts(count: number): number {
  return Math.max(3, count * 2);
}

/** Runs the primary until every worker has stopped; resolves with the exit code. */
export function runPrimary(count: number, log: Logger, options: PrimaryOptions): Promise<number> {
  return new Promise((resolve) => {
    let stopping = false;
    let shutdownTimeoutMs = options.shutdownTimeoutMs;
    let stopCode = 0;
    let killTimer: NodeJS.Timeout | undefined;
    const recentDeaths: number[] = [];
    // Workers that said they serve (WORKER_READY) and are alive; a start failed when a worker died before saying so.
    const serving = new Set<number>();
    let failedStarts = 0;
    const restarts = new Set<NodeJS.Timeout>();
    // Workers whose process has not exited. Not cluster.workers: a worker stays there until its IPC channel has
    // closed too, which may come after its 'exit' (the stop would then wait for the kill timer).
    const alive = new Map<number, Worker>();
    // A worker forked a moment ago has no handler for SIGHUP or SIGUSR1 yet (either would end it): what the
    // primary forwards waits until the worker says it takes signals (WORKER_SIGNALS_READY), repeats coalesced.
    const takesSignals = new Set<number>();
    const heldSignals = new Map<number, Set<HandledSignal>>();
    const forward = (signal: HandledSignal): void => {
      for (const w of alive.values()) {
        if (takesSignals.has(w.id)) w.process.kill(signal);
        else heldSignals.set(w.id, (heldSignals.get(w.id) ?? new Set<HandledSignal>()).add(signal));
      }
    };
    // Workers restarted later get the same secret: their tickets resume on the others, and theirs on them.
    answerTicketSecretRequests(randomBytes(TICKET_SECRET_BYTES));
    // Workers ask for the drained targets before their first Plan, with or without an admin API.
    primaryDrainedTargets();
    // A worker whose reload changed log.file says so: the primary's lines (workers started, died, stopping) move there too.
    const followLogFile = (file: string | undefined): void => {
      const files = options.logFiles;
      if (files === undefined || files.main === undefined || files.paths.file === file) return;
      try {
        files.apply(files.open({ file, accessFile: files.paths.accessFile }));
      } catch (err) {
        log.error({ file, err: (err as Error).message }, 'the primary could not open the workers\' log.file; its lines go on to the file open before');
      }
    };
    const env: Record<string, string> = { PORTICO_WORKER: '1' };
    if (options.reusePort) env['PORTICO_REUSE_PORT'] = '1';
    const fork = (): Worker => {
      const worker = cluster.fork(env);
      alive.set(worker.id, worker);
      return worker;
    };
    for (let i = 0; i < count; i++) fork();
    log.info({ workers: count, balancing: options.reusePort ? 'reuseport' : 'round-robin' }, 'primary started workers');
    cluster.on('message', (worker, msg: unknown) => {
      if (!isWorkerMessage(msg) || !worker.isConnected()) return;
      if (typeof msg.shutdownTimeoutMs === 'number') shutdownTimeoutMs = msg.shutdownTimeoutMs;
      if (msg.logFile !== undefined) followLogFile(msg.logFile ?? undefined);
      if (msg.type === WORKER_SIGNALS_READY) {
        takesSignals.add(worker.id);
        const held = heldSignals.get(worker.id);
        heldSignals.delete(worker.id);
        for (const signal of held ?? []) worker.process.kill(signal);
        return;
      }
      if (msg.type !== WORKER_READY) return;
      serving.add(worker.id);
      failedStarts = 0;
    });
    cluster.on('exit', (worker, code, signal) => {
      alive.delete(worker.id);
      const wasServing = serving.delete(worker.id);
      takesSignals.delete(worker.id);
      heldSignals.delete(worker.id);
      if (stopping) {
        if (alive.size === 0) {
          clearTimeout(killTimer);
          resolve(stopCode);
        }
        return;
      }
      if (!wasServing) failedStarts++;
      const now = Date.now();
      recentDeaths.push(now);
      while (recentDeaths.length > 0 && (recentDeaths[0] as number) < now - 60_000) recentDeaths.shift();
      // Only when none serves: while one does, the others are restarted (more slowly) rather than all stopped.
      if (serving.size === 0 && failedStarts >= giveUpAfterFailedStarts(count)) {
        log.fatal({ worker: worker.process.pid, code, signal, failedStarts }, 'workers fail to start and none serves; giving up (see the workers\' errors above)');
        stopping = true;
        for (const w of alive.values()) w.kill('SIGTERM');
        resolve(1);
        return;
      }
      const delayMs = restartDelayMs(recentDeaths.length, count);
      log.error({ worker: worker.process.pid, code, signal, restartInMs: delayMs, serving: serving.size }, 'worker died, restarting');
      const timer = setTimeout(() => {
        restarts.delete(timer);
        fork();
      }, delayMs);
      restarts.add(timer);
    });
    const stop = (signal: HandledSignal): void => {
      if (stopping) return;
      stopping = true;
      log.info({ signal }, 'stopping workers');
      for (const timer of restarts) clearTimeout(timer);
      restarts.clear();
      for (const w of alive.values()) w.process.kill(signal);
      if (alive.size === 0) return resolve(0);
      // A worker that hangs (a busy loop, a stuck close) must not keep the primary, and the port, forever.
      killTimer = setTimeout(() => {
        stopCode = 1;
        for (const w of alive.values()) {
          log.error({ worker: w.process.pid, shutdownTimeoutMs, graceMs: STOP_GRACE_MS }, 'worker did not stop within limits.shutdownTimeout; killing it');
          w.process.kill('SIGKILL');
        }
      }, shutdownTimeoutMs + STOP_GRACE_MS);
    };
    // A worker still starting that gets SIGTERM from here ends at once (nothing to finish) or, if it takes
    // signals already, stops as soon as it has started.
    options.signals.handle('SIGTERM', stop);
    options.signals.handle('SIGINT', stop);
    // Each worker opens its own log files again; the primary's own handler (main.ts) reopens the primary's.
    options.signals.handle('SIGUSR1', forward);
    // A SIGHUP held while the primary started (before the workers were forked) reloads them once they serve.
    options.signals.handle('SIGHUP', (signal) => {
      forward(signal);
      options.onReload?.();
    });
  });
}
