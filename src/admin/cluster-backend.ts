/**
 * The admin API of a primary: it asks every worker over the cluster's IPC
 * channel for its snapshot (or to reload, drain or enable a target) and answers
 * with all of them. A worker that does not answer in time is left out of the
 * answer and logged. Drained targets are also held here, in the primary, for
 * workers that start later (src/cluster/drained-targets.ts).
 */
import cluster from 'node:cluster';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import type { Portico } from '../server/portico.js';
import type { AdminBackend, ProcessReload } from './admin-server.js';
import { addRetiredCounters, takeSnapshot, type Snapshot } from './snapshot.js';
import { setDrainedInProcess, type ProcessDrain } from './drain.js';
import { primaryDrainedTargets, primaryDrainsChanged, sendDrainedTargets } from '../cluster/drained-targets.js';
import { readAdminTokenDigest } from './token.js';
import { redactConfig } from './effective-config.js';
import { purgeInProcess, type ProcessPurge, type PurgeRequest } from './cache-purge.js';
import { WORKER_READY, WORKER_SHUTDOWN_TIMEOUT, type WorkerMessage } from '../cluster/worker-messages.js';

const ASK = 'portico:admin?';
const ANSWER = 'portico:admin';
type Op = 'snapshot' | 'reload' | 'drain' | 'enable' | 'config' | 'purge';

interface Ask {
  readonly type: typeof ASK;
  readonly id: number;
  readonly op: Op;
  /** The target URL of a drain or an enable (normalised by the primary). */
  readonly url?: string;
  /** What a purge drops. */
  readonly purge?: PurgeRequest;
}
interface Answer {
  readonly type: typeof ANSWER;
  readonly id: number;
  readonly result: unknown;
}

function isAsk(m: unknown): m is Ask {
  return typeof m === 'object' && m !== null && (m as { type?: unknown }).type === ASK && typeof (m as { id?: unknown }).id === 'number';
}
function isAnswer(m: unknown): m is Answer {
  return typeof m === 'object' && m !== null && (m as { type?: unknown }).type === ANSWER && typeof (m as { id?: unknown }).id === 'number';
}

/** Worker: answers the primary's admin questions about this Portico (call once it serves). */
export function answerAdminRequests(p: Portico): void {
  // The primary asks no worker that has not said this, counts it as started, and gives its stop this long (src/cluster/primary.ts).
  // The primary follows log.file too, so its own lines go where the workers' go after a reload changed it.
  process.send?.({ type: WORKER_READY, shutdownTimeoutMs: p.state?.plan.limits.shutdownTimeoutMs, logFile: p.state?.plan.logFiles.file ?? null } satisfies WorkerMessage, undefined, {}, () => {});
  p.onPlan.push((plan) => process.send?.({ type: WORKER_SHUTDOWN_TIMEOUT, shutdownTimeoutMs: plan.limits.shutdownTimeoutMs, logFile: plan.logFiles.file ?? null } satisfies WorkerMessage, undefined, {}, () => {}));
  process.on('message', (msg: unknown) => {
    if (!isAsk(msg)) return;
    const reply = (result: unknown): void => {
      process.send?.({ type: ANSWER, id: msg.id, result } satisfies Answer, undefined, {}, () => {});
    };
    if (msg.op === 'snapshot') reply(takeSnapshot(p));
    else if (msg.op === 'config') reply(p.config === undefined ? null : redactConfig(p.config));
    else if (msg.op === 'purge') reply(purgeInProcess(msg.purge ?? { host: undefined, path: undefined }));
    else if (msg.op === 'drain' || msg.op === 'enable') reply(setDrainedInProcess(p, msg.url ?? '', msg.op === 'drain'));
    else
      void p.reload().then((r) => reply(r.ok ? { pid: process.pid, ok: true, generation: r.generation } : { pid: process.pid, ok: false, issues: r.issues }));
  });
}

/** Primary: the admin backend that asks the workers. `tokenFile` is re-read after every reload. */
export async function clusterBackend(configFile: string, tokenFile: string, log: Logger, timeoutMs = 10_000): Promise<AdminBackend & { refreshToken(): Promise<void> }> {
  let nextId = 1;
  const pending = new Map<number, (result: unknown) => void>();
  // Workers that serve and said they answer: one still starting is not asked (its message would be lost).
  const ready = new Set<number>();
  const drained = primaryDrainedTargets();
  cluster.on('message', (worker, msg: unknown) => {
    if (isAnswer(msg)) pending.get(msg.id)?.(msg.result);
    else if (typeof msg === 'object' && msg !== null && (msg as { type?: unknown }).type === WORKER_READY) {
      ready.add(worker.id);
      // Drains made while it was starting reached the primary only: the whole set again, before any other question.
      sendDrainedTargets(worker);
    }
  });
  // Each worker's last snapshot, by worker id: when it exits, its counters go to `retired`, so /metrics never goes back.
  const lastSnapshots = new Map<number, Snapshot>();
  let retired: Snapshot | undefined;
  cluster.on('exit', (worker) => {
    ready.delete(worker.id);
    const last = lastSnapshots.get(worker.id);
    if (last === undefined) return;
    lastSnapshots.delete(worker.id);
    retired = addRetiredCounters(retired, last);
  });
  const readyWorkers = () => Object.values(cluster.workers ?? {}).filter((w) => w !== undefined && w.isConnected() && ready.has(w.id));
  const ask = async (op: Op, url?: string, purge?: PurgeRequest): Promise<unknown[]> => {
    const workers = readyWorkers();
    const answers = await Promise.all(
      workers.map(
        (w) =>
          new Promise<unknown>((resolve) => {
            const id = nextId++;
            const timer = setTimeout(() => {
              pending.delete(id);
              log.warn({ worker: w!.process.pid, op }, 'a worker did not answer the admin API in time');
              resolve(undefined);
            }, timeoutMs);
            pending.set(id, (result) => {
              clearTimeout(timer);
              pending.delete(id);
              // Kept as the answer arrives, before the worker's 'exit' can come.
              if (op === 'snapshot' && result !== undefined && result !== null) lastSnapshots.set(w!.id, result as Snapshot);
              resolve(result);
            });
            w!.send({ type: ASK, id, op, ...(url === undefined ? {} : { url }), ...(purge === undefined ? {} : { purge }) } satisfies Ask, undefined, () => {});
          }),
      ),
    );
    return answers.filter((a) => a !== undefined);
  };
  const baseDir = dirname(configFile);
  let digest = await readAdminTokenDigest(baseDir, tokenFile);
  const refreshToken = async (): Promise<void> => {
    try {
      digest = await readAdminTokenDigest(baseDir, tokenFile);
    } catch (err) {
      log.error({ err: (err as Error).message }, 'admin token not re-read; the previous one stays');
    }
  };
  return {
    snapshots: async () => (await ask('snapshot')) as Snapshot[],
    retiredCounters: () => retired,
    reload: async () => {
      const results = (await ask('reload')) as ProcessReload[];
      if (results.every((r) => r.ok)) await refreshToken();
      return results;
    },
    setTargetDrained: async (url, drain) => {
      // The primary's set changes first, so a worker that becomes ready while the workers are asked gets it.
      const had = drained.has(url);
      if (drain) drained.add(url);
      else drained.delete(url);
      const results = (await ask(drain ? 'drain' : 'enable', url)) as ProcessDrain[];
      // No worker to ask (the answer is 503), or a drain of a URL no worker has (422): the set stays as it was.
      if (results.length === 0 || (drain && !results.some((r) => r.found))) {
        if (had) drained.add(url);
        else drained.delete(url);
      }
      if (drained.has(url) !== had) primaryDrainsChanged();
      return results;
    },
    purgeCache: async (r) => (await ask('purge', undefined, r)) as ProcessPurge[],
    // Every worker serves the same file; the first one's answer stands for all.
    effectiveConfig: async () => (await ask('config')).find((c) => c !== null && c !== undefined) ?? undefined,
    tokenDigest: () => digest,
    serving: () => readyWorkers().length,
    refreshToken,
  };
}
