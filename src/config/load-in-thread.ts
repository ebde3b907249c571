/**
 * Loads and validates a config file in a short-lived worker thread. The schema
 * and zod (about 9 MiB once loaded, in every process that loads them) then live
 * only as long as the thread, not in the primary or in any worker process that
 * serves traffic; and a large config is validated without holding up requests.
 * The result is the same LoadResult that load.ts gives in-process.
 */
import { Worker } from 'node:worker_threads';
import { resolve } from 'node:path';
import type { LoadResult } from './load.js';

const WORKER_URL = new URL('./load-worker.js', import.meta.url);

/** Reads, parses and validates a config file off the main thread. Never rejects. */
export function loadConfigFileInThread(file: string): Promise<LoadResult> {
  const abs = resolve(file);
  return new Promise((done) => {
    let settled = false;
    const finish = (result: LoadResult): void => {
      if (settled) return;
      settled = true;
      done(result);
    };
    const failed = (why: string): void =>
      finish({ ok: false, file: abs, issues: [{ path: '(file)', message: `the config could not be validated: its validation thread ${why}` }] });
    let worker: Worker;
    try {
      worker = new Worker(WORKER_URL, { workerData: { file: abs } });
    } catch (err) {
      failed(`did not start (${(err as Error).message})`);
      return;
    }
    worker.once('message', (result: LoadResult) => finish(result));
    worker.once('error', (err) => failed(`failed (${err.message})`));
    worker.once('exit', (code) => failed(`exited with code ${code} before answering`));
  });
}
