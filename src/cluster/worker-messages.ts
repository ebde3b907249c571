/**
 * Messages a worker sends its primary about itself, over the cluster's IPC channel.
 */

/** A worker serves (its listeners are open) and answers admin questions from then on. */
export const WORKER_READY = 'portico:admin-ready';

/** A worker's message about itself. */
export interface WorkerMessage {
  readonly type: typeof WORKER_READY;
}

/** Whether an IPC message is a WorkerMessage. */
export function isWorkerMessage(m: unknown): m is WorkerMessage {
  return typeof m === 'object' && m !== null && (m as { type?: unknown }).type === WORKER_READY;
}
