/**
 * The memory test: RSS of a server's process tree while it holds N idle TLS
 * keep-alive connections (each has served one request).
 */
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { LOAD_CPU, countTree, readTreeAnonRssBytes, readTreeRssBytes } from './procs.js';
import { BENCH_HOST } from './workspace.js';
import type { MemoryResult } from './report.js';
import type { IdleResult } from './idle-client.js';

/** Options for {@link measureIdleMemory}. */
export interface MemoryRun {
  readonly cpuRoot: number;
  readonly port: number;
  readonly count: number;
  /** dist/bench/idle-client.js */
  readonly script: string;
  /** How long to let the server settle once all connections are idle. */
  readonly settleMs: number;
}

/** Open `count` connections from a pinned idle client, read RSS, then close them. */
export async function measureIdleMemory(run: MemoryRun): Promise<MemoryResult> {
  const baselineRssBytes = readTreeRssBytes(run.cpuRoot);
  const opts = JSON.stringify({ port: run.port, host: BENCH_HOST, count: run.count, concurrency: 50, holdLimitMs: 60_000 });
  const child = spawn('taskset', ['-c', LOAD_CPU, process.execPath, run.script, opts], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  const killChild = (): void => {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  };
  try {
    const line = await new Promise<string>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => reject(new Error('idle client did not report within 30 s')), 30_000);
      child.stdout.setEncoding('utf8').on('data', (d: string) => {
        out += d;
        const nl = out.indexOf('\n');
        if (nl >= 0) {
          clearTimeout(timer);
          resolve(out.slice(0, nl));
        }
      });
      child.once('close', () => {
        clearTimeout(timer);
        reject(new Error(`idle client exited early: ${stderr.slice(0, 300)}`));
      });
    });
    const held = JSON.parse(line) as IdleResult;
    await sleep(run.settleMs);
    const heldRssBytes = readTreeRssBytes(run.cpuRoot);
    const heldAnonRssBytes = readTreeAnonRssBytes(run.cpuRoot);
    const processes = countTree(run.cpuRoot);
    return { baselineRssBytes, heldRssBytes, heldAnonRssBytes, idle: held.idle, errors: held.errors, non2xx: held.non2xx, processes };
  } finally {
    child.stdin.end();
    await Promise.race([exited, sleep(5000)]);
    killChild();
  }
}
