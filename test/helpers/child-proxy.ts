/** Running the real CLI (`node dist/src/main.js --config FILE`) as a child process, for tests that measure it or signal it. */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { ConfigInput } from '../../src/config/schema.js';
import { freePort, startUpstream, waitForPort } from './net.js';
import { makePki, type TestPki } from './proxy.js';

/** dist/src/main.js, next to this file's compiled copy in dist/test/helpers. */
const MAIN = fileURLToPath(new URL('../../src/main.js', import.meta.url));

/** A Portico child process. */
export interface ChildProxy {
  proc: ChildProcess;
  pid: number;
  httpsPort: number;
  /** The config file it runs with. */
  configFile: string;
  /** Rewrites the config file as spawnProxy wrote it (same listener); the caller reloads (SIGHUP, or the admin API). */
  writeConfig(config: Omit<ConfigInput, 'listen'>): Promise<void>;
  /** JSON log lines written so far. */
  logs: Record<string, unknown>[];
  /** Resident set size in bytes, from /proc/PID/status (VmRSS). */
  rssBytes(): number;
  /** Resolves with the exit code (or signal name) once the process has exited. */
  exited: Promise<number | string>;
  /** SIGTERM, then SIGKILL if it has not exited within `graceMs`. */
  kill(graceMs?: number): Promise<void>;
}

/** Reads VmRSS of a process in bytes. */
export function readRssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^VmRSS:\s+(\d+)\s+kB$/m.exec(status);
  if (m === null) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) * 1024;
}

/**
 * Writes a config (HTTPS on a free port of 127.0.0.1, no HTTP listener) and starts the CLI; resolves once its port accepts connections.
 * `prefix`: a command that execs the CLI in its own process (say `prlimit --nofile=512:512 --`), so that `pid` is still Portico's.
 * `env`: added to the test's own environment for the CLI (and the workers it forks).
 */
export async function spawnProxy(pki: TestPki, config: Omit<ConfigInput, 'listen'>, opts: { startTimeoutMs?: number; prefix?: readonly string[]; env?: Record<string, string> } = {}): Promise<ChildProxy> {
  const httpsPort = await freePort();
  const configFile = join(pki.dir, `portico-child-${httpsPort}.json`);
  const full = (c: Omit<ConfigInput, 'listen'>): ConfigInput => ({ listen: { https: { port: httpsPort, addresses: ['127.0.0.1'] }, http: null }, certsDir: pki.dir, ...c });
  await writeFile(configFile, JSON.stringify(full(config)));
  const argv = [...(opts.prefix ?? []), process.execPath, MAIN, '--config', configFile, '--no-watch'];
  const proc = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env === undefined ? process.env : { ...process.env, ...opts.env } });
  const logs: Record<string, unknown>[] = [];
  let stderr = '';
  let pending = '';
  proc.stdout!.setEncoding('utf8');
  proc.stdout!.on('data', (text: string) => {
    pending += text;
    let nl = pending.indexOf('\n');
    while (nl !== -1) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      try {
        logs.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // Not JSON (should not happen with a non-TTY stdout): keep it visible.
        logs.push({ msg: line });
      }
      nl = pending.indexOf('\n');
    }
  });
  proc.stderr!.setEncoding('utf8');
  proc.stderr!.on('data', (text: string) => {
    stderr += text;
  });
  const exited = new Promise<number | string>((resolve) => {
    proc.once('exit', (code, signal) => resolve(code ?? signal ?? -1));
  });
  // The CLI's logger buffers stdout (4 KiB), so "listening" may not show yet: poll the port instead.
  await waitForPort(httpsPort, proc, 'portico', opts.startTimeoutMs ?? 10_000, () => stderr);
  const pid = proc.pid!;
  return {
    proc,
    pid,
    httpsPort,
    configFile,
    writeConfig: (c) => writeFile(configFile, JSON.stringify(full(c))),
    logs,
    rssBytes: () => readRssBytes(pid),
    exited,
    async kill(graceMs = 5000) {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}

/**
 * Portico with `"workers": 2` and its access log on, serving `site.test` (a certificate from a fresh test CA)
 * with every path routed to a fresh test upstream; all three are torn down after the test. Resolves once
 * both workers have logged "listening": the port opens with the first worker, and the primary hands
 * connections only to workers listening by then (log lines may lag 250 ms).
 */
export async function spawnTwoWorkers(t: TestContext): Promise<{ proxy: ChildProxy; pki: TestPki; up: Awaited<ReturnType<typeof startUpstream>> }> {
  const pki = await makePki();
  const up = await startUpstream();
  t.after(async () => {
    await up.close();
    await pki.cleanup();
  });
  const cert = await pki.issue('site', ['site.test']);
  const proxy = await spawnProxy(pki, { workers: 2, log: { level: 'info', access: true }, hosts: { 'site.test': { tls: cert, routes: [{ path: '/', upstream: up.url }] } } }, { startTimeoutMs: 20_000 });
  t.after(() => proxy.kill());
  const listeningPids = (): Set<unknown> => new Set(proxy.logs.filter((l) => l['msg'] === 'listening').map((l) => l['pid']));
  for (let i = 0; i < 150 && listeningPids().size < 2; i++) await new Promise((r) => setTimeout(r, 100));
  assert.equal(listeningPids().size, 2, 'both workers report listening');
  return { proxy, pki, up };
}
