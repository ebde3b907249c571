/**
 * The primary process when `workers` > 1: forks the workers (which bind their
 * own sockets with SO_REUSEPORT where Node can, else share the primary's through
 * node:cluster's round-robin), restarts a worker that dies, and
 * forwards SIGTERM/SIGINT (graceful stop) and SIGHUP (reload) to them. It
 * holds the secret that every worker's TLS session ticket keys derive from, and
 * the upstream targets drained over the admin API (drained-targets.ts).
 */
import cluster, { type Worker } from 'node:cluster';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { TICKET_SECRET_BYTES } from '../tls/session-tickets.js';
import { answerTicketSecretRequests } from './ticket-secret.js';
import { primaryDrainedTargets } from './drained-targets.js';

/** How the workers share the listeners. */
export interface PrimaryOptions {
  /** Each worker binds its own sockets with SO_REUSEPORT (src/listen/listen-options.ts); else the primary accepts and hands connections over. */
  readonly reusePort: boolean;
  /** Called when the primary gets SIGHUP (after forwarding it): the admin API re-reads its token. */
  readonly onReload?: () => void;
}

/** Runs the primary until every worker has stopped; resolves with the exit code. */
export function runPrimary(count: number, log: Logger, options: PrimaryOptions): Promise<number> {
  return new Promise((resolve) => {
    let stopping = false;
    const recentDeaths: number[] = [];
    // Workers restarted later get the same secret: their tickets resume on the others, and theirs on them.
    answerTicketSecretRequests(randomBytes(TICKET_SECRET_BYTES));
    // Workers ask for the drained targets before their first Plan, with or without an admin API.
    primaryDrainedTargets();
    const env: Record<string, string> = { PORTICO_WORKER: '1' };
    if (options.reusePort) env['PORTICO_REUSE_PORT'] = '1';
    const fork = (): Worker => cluster.fork(env);
    for (let i = 0; i < count; i++) fork();
    log.info({ workers: count, balancing: options.reusePort ? 'reuseport' : 'round-robin' }, 'primary started workers');
    cluster.on('exit', (worker, code, signal) => {
      if (stopping) {
        if (Object.keys(cluster.workers ?? {}).length === 0) resolve(0);
        return;
      }
      const now = Date.now();
      recentDeaths.push(now);
      while (recentDeaths.length > 0 && (recentDeaths[0] as number) < now - 60_000) recentDeaths.shift();
      if (recentDeaths.length > count * 5) {
        log.fatal({ pid: worker.process.pid, code, signal }, 'workers keep dying; giving up');
        stopping = true;
        for (const w of Object.values(cluster.workers ?? {})) w?.kill('SIGTERM');
        resolve(1);
        return;
      }
      log.error({ pid: worker.process.pid, code, signal }, 'worker died, restarting');
      fork();
    });
    const stop = (signal: NodeJS.Signals): void => {
      if (stopping) return;
      stopping = true;
      log.info({ signal }, 'stopping workers');
      for (const w of Object.values(cluster.workers ?? {})) w?.process.kill(signal);
      if (Object.keys(cluster.workers ?? {}).length === 0) resolve(0);
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGHUP', () => {
      for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGHUP');
      options.onReload?.();
    });
  });
}
