/**
 * Messages a worker sends its primary about itself, over the cluster's IPC channel.
 */

/** A worker serves (its listeners are open) and answers admin questions from then on; with its limits.shutdownTimeout. */
export const WORKER_READY = 'portico:admin-ready';
/** A worker handles SIGHUP, SIGUSR1, SIGTERM and SIGINT from now on (src/cli/startup-signals.ts): the primary may forward them. */
export const WORKER_SIGNALS_READY = 'portico:signals-ready';
/** A reload changed the worker's config: its limits.shutdownTimeout and log.file now. */
export const WORKER_SHUTDOWN_TIMEOUT = 'portico:shutdown-timeout';

/** A worker's message about itself. */
export interface WorkerMessage {
  readonly type: typeof WORKER_READY | typeof WORKER_SHUTDOWN_TIMEOUT | typeof WORKER_SIGNALS_READY;
  /** limits.shutdownTimeout of the config the worker serves, in ms: how long its stop may take. */
  readonly shutdownTimeoutMs?: number;
  /** log.file of the config the worker serves, as an absolute path; null for standard output. The primary writes its own lines there too. */
  readonly logFile?: string | null;
}

/** Whether an IPC message is a WorkerMessage. */
export function isWorkerMessage(m: unknown): m is WorkerMessage {
  if (typeof m !== 'object' || m === null) return false;
  const type = (m as { type?: unknown }).type;
  return type === WORKER_READY || type === WORKER_SHUTDOWN_TIMEOUT || type === WORKER_SIGNALS_READY;
}
