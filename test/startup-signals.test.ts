/**
 * Signals that arrive while Portico starts (README, "Command line"): the CLI handles SIGHUP, SIGUSR1,
 * SIGTERM and SIGINT from before it binds any socket, so a reload, a log reopen or a stop sent by a
 * supervisor or logrotate in that window is acted on once the proxy serves, instead of Node's default
 * action (SIGHUP and SIGTERM end the process). With workers, the primary holds what it forwards until
 * each worker handles signals. Run through the real CLI, signalled from the moment its handlers exist.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { makePki, type TestPki } from './helpers/proxy.js';
import { freePort, h1Request, startUpstream } from './helpers/net.js';
import type { ConfigInput } from '../src/config/schema.js';

const MAIN = fileURLToPath(new URL('../src/main.js', import.meta.url));

type Line = Record<string, unknown>;

/** Whether the process catches `signum`, from the SigCgt mask in /proc/PID/status (the kernel's view). */
function catches(pid: number, signum: number): boolean {
  const m = /^SigCgt:\s+([0-9a-f]+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m !== null && (BigInt(`0x${m[1]}`) & (1n << BigInt(signum - 1))) !== 0n;
}

/** Whether some socket listens on 127.0.0.1:`port`, from /proc/net/tcp. */
function isListening(port: number): boolean {
  const local = `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  return readFileSync('/proc/net/tcp', 'utf8').split('\n').some((line) => {
    const cols = line.trim().split(/\s+/);
    return cols[1] === local && cols[3] === '0A';
  });
}

interface Child {
  proc: ChildProcess;
  pid: number;
  port: number;
  logs: Line[];
  stderr: () => string;
  exited: Promise<number | string>;
}

/** Writes a config serving site.test (on a free port of 127.0.0.1) to a fresh upstream and starts the CLI, without waiting. */
async function startChild(t: TestContext, extra: Omit<ConfigInput, 'listen' | 'hosts'>): Promise<{ child: Child; pki: TestPki }> {
  const pki = await makePki();
  const up = await startUpstream();
  const cert = await pki.issue('site', ['site.test']);
  const port = await freePort();
  const file = join(pki.dir, 'portico.json');
  const config: ConfigInput = { listen: { https: { port, addresses: ['127.0.0.1'] }, http: null }, certsDir: pki.dir, ...extra, hosts: { 'site.test': { tls: cert, routes: [{ path: '/', upstream: up.url }] } } };
  await writeFile(file, JSON.stringify(config));
  const proc = spawn(process.execPath, [MAIN, '--config', file, '--no-watch'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const logs: Line[] = [];
  let pending = '';
  let stderr = '';
  proc.stdout!.setEncoding('utf8').on('data', (text: string) => {
    pending += text;
    const lines = pending.split('\n');
    pending = lines.pop()!;
    for (const l of lines) logs.push(JSON.parse(l) as Line);
  });
  proc.stderr!.setEncoding('utf8').on('data', (text: string) => (stderr += text));
  const exited = new Promise<number | string>((resolve) => proc.once('exit', (code, signal) => resolve(code ?? signal ?? -1)));
  t.after(async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    }
    await up.close();
    await pki.cleanup();
  });
  return { child: { proc, pid: proc.pid!, port, logs, stderr: () => stderr, exited }, pki };
}

/**
 * Waits (polling the kernel, without yielding) until the CLI catches SIGHUP and SIGTERM, and asserts that no
 * socket listened on its port yet: the handlers are in place before anything is bound.
 */
function waitForHandlersBeforeListening(child: Child): void {
  const end = Date.now() + 20_000;
  while (!(catches(child.pid, 1) && catches(child.pid, 15))) {
    if (Date.now() > end) assert.fail('the CLI never caught SIGHUP and SIGTERM');
    if (child.proc.exitCode !== null) assert.fail(`the CLI exited: ${child.stderr()}`);
  }
  assert.equal(isListening(child.port), false, 'SIGHUP and SIGTERM are handled before the port is bound');
}

/** Sends `signals` to `pid` every 5 ms until `until()` (or the process has exited), after a last round. */
async function signalUntil(child: Child, signals: readonly NodeJS.Signals[], until: () => boolean, timeoutMs = 20_000): Promise<number> {
  const end = Date.now() + timeoutMs;
  let sent = 0;
  while (child.proc.exitCode === null && child.proc.signalCode === null && Date.now() < end) {
    for (const s of signals) {
      process.kill(child.pid, s);
      sent++;
    }
    if (until()) break;
    await sleep(5);
  }
  return sent;
}

async function waitFor(what: string, check: () => boolean, child: Child, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}; stderr: ${child.stderr()}; logs: ${JSON.stringify(child.logs.slice(-5))}`);
    await sleep(25);
  }
}

const listeningPids = (child: Child): Set<unknown> => new Set(child.logs.filter((l) => l['msg'] === 'listening').map((l) => l['pid']));

test('SIGHUP and SIGUSR1 sent over and over while a single process starts neither end it nor are lost: it serves, then reloads', async (t) => {
  const { child, pki } = await startChild(t, { log: { level: 'info' } });
  waitForHandlersBeforeListening(child);
  const sent = await signalUntil(child, ['SIGHUP', 'SIGUSR1'], () => isListening(child.port));
  assert.ok(sent >= 2, `${sent} signals sent during the start`);
  assert.equal(child.proc.exitCode, null, `the process runs on: ${child.stderr()}`);
  assert.equal(child.proc.signalCode, null);
  const r = await h1Request({ port: child.port, sni: 'site.test', path: '/after', ca: pki.caPem });
  assert.equal(r.status, 200);
  await waitFor('the held SIGHUP\'s reload', () => child.logs.some((l) => l['msg'] === 'config reloaded'), child);
  const order = child.logs.map((l) => l['msg']);
  assert.ok(order.indexOf('listening') < order.indexOf('config reloaded'), 'the reload comes once the start is done');
  assert.ok(order.includes('log files reopened') === false, 'with no log file, SIGUSR1 has nothing to reopen and says nothing');
});

test('a SIGTERM sent while a single process starts stops it gracefully once it has started: exit code 0, not the signal', async (t) => {
  const { child } = await startChild(t, { log: { level: 'info' } });
  waitForHandlersBeforeListening(child);
  process.kill(child.pid, 'SIGTERM');
  assert.equal(await child.exited, 0, child.stderr());
  const order = child.logs.map((l) => l['msg']);
  assert.ok(order.includes('listening') && order.indexOf('listening') < order.indexOf('shutting down: no new connections, finishing in-flight requests'), JSON.stringify(order));
  assert.ok(order.includes('stopped'));
});

test('with workers, SIGHUP and SIGUSR1 sent over and over to the primary while it and its workers start kill no worker, and every worker reloads once it serves', async (t) => {
  const { child, pki } = await startChild(t, { workers: 2, log: { level: 'info' } });
  waitForHandlersBeforeListening(child);
  await signalUntil(child, ['SIGHUP', 'SIGUSR1'], () => listeningPids(child).size === 2, 30_000);
  assert.equal(child.proc.exitCode, null, `the primary runs on: ${child.stderr()}`);
  await waitFor('both workers listening', () => listeningPids(child).size === 2, child, 20_000);
  const workers = listeningPids(child);
  assert.ok(!workers.has(child.pid));
  for (let i = 0; i < 6; i++) assert.equal((await h1Request({ port: child.port, sni: 'site.test', path: `/n${i}`, ca: pki.caPem })).status, 200);
  await waitFor('a reload in each worker', () => new Set(child.logs.filter((l) => l['msg'] === 'config reloaded').map((l) => l['pid'])).size === 2, child);
  assert.deepEqual(child.logs.filter((l) => l['msg'] === 'worker died, restarting'), [], 'no worker was ended by a forwarded signal');
  for (const pid of workers) {
    const lines = child.logs.filter((l) => l['pid'] === pid).map((l) => l['msg']);
    assert.ok(lines.indexOf('listening') < lines.indexOf('config reloaded'), `worker ${String(pid)} reloads after it serves`);
  }
});
