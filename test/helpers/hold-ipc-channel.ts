/**
 * Loaded with `--import` into Portico's processes by a test (cluster-workers.test.ts): in a cluster worker,
 * it starts a `sleep` that inherits the worker's IPC channel, so that the channel stays open after the
 * worker has exited. The primary then sees the worker's 'exit' long before its 'disconnect', the order
 * that a busy machine gives now and then. The sleep's PID is appended to PORTICO_TEST_HOLDER_PIDS, for the test to end it.
 */
import cluster from 'node:cluster';
import { spawn } from 'node:child_process';
import { appendFileSync } from 'node:fs';

const pidFile = process.env['PORTICO_TEST_HOLDER_PIDS'];
const channel = process.channel as unknown as { fd?: number } | undefined;
if (cluster.isWorker && pidFile !== undefined && typeof channel?.fd === 'number') {
  const holder = spawn('sleep', ['60'], { stdio: ['ignore', 'ignore', 'ignore', channel.fd], detached: true });
  holder.unref();
  appendFileSync(pidFile, `${String(holder.pid)}\n`);
}
