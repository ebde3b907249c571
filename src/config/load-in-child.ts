/**
 * Loads and validates a config file in a short-lived child process (node running load-worker.js). The
 * schema and zod (about 9 MiB once loaded, in every process that loads them) then never enter a process
 * that serves traffic, and a large config is validated without holding up requests. A process rather than a
 * worker thread: a thread's heap outlives it in the process that started it (about 3 MiB on Node 20, about
 * 22 MiB on Node 26, whose serving process then held 102 MiB at rest against 83 MiB; bench/optimisations.md
 * §35), while a process gives all of its memory back. The result is the same LoadResult that load.ts gives
 * in-process, passed over the IPC channel by structured clone.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { LoadResult } from './load.js';

const WORKER = fileURLToPath(new URL('./load-worker.js', import.meta.url));

/** How long a validation may take before the child is killed and the load fails. */
const ANSWER_WITHIN_MS = 60_000;

/** The child's environment: this one's, without the variable that would make it a cluster worker of this process. */
function childEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env['NODE_UNIQUE_ID'];
  return env;
}

/** Reads, parses and validates a config file in a child process. Never rejects. */
export function loadConfigFileInChild(file: string): Promise<LoadResult> {
  const abs = resolve(file);
  return new Promise((done) => {
    let settled = false;
    let stderr = '';
    let timer: NodeJS.Timeout | undefined;
    const finish = (result: LoadResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      done(result);
    };
    const failed = (why: string): void =>
      finish({ ok: false, file: abs, issues: [{ path: '(file)', message: `the config could not be validated: its validation process ${why}` }] });
    let child: ChildProcess;
    try {
      // No execArgv: an --inspect or a profiling flag of this process is not the validator's.
      child = fork(WORKER, [abs], { serialization: 'advanced', execArgv: [], env: childEnv(), stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
    } catch (err) {
      failed(`did not start (${(err as Error).message})`);
      return;
    }
    timer = setTimeout(() => {
      child.kill('SIGKILL');
      failed(`did not answer within ${ANSWER_WITHIN_MS / 1000} s`);
    }, ANSWER_WITHIN_MS);
    timer.unref();
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (d: string) => {
      if (stderr.length < 4096) stderr += d;
    });
    child.once('message', (result: LoadResult) => finish(result));
    child.once('error', (err) => failed(`failed (${err.message})`));
    // 'close', not 'exit': it comes once the IPC channel is closed too, so after any answer the child sent.
    child.once('close', (code, signal) => {
      const said = stderr.trim().split('\n')[0];
      failed(`exited (${signal ?? `code ${code}`}) before answering${said === undefined || said === '' ? '' : `: ${said}`}`);
    });
  });
}
