/**
 * `"workers": N` (README, "Reloads and workers"): the CLI's primary forks N workers that share the
 * listening port, checks the config once itself (a bad one exits with its issues, not a crash loop),
 * and stops its workers on SIGTERM. Run through the real CLI as child processes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readFileSync } from 'node:fs';
import { nodeHasReusePort } from '../src/listen/listen-options.js';
import { giveUpAfterFailedStarts, restartDelayMs, RESTART_DELAY_MAX_MS } from '../src/cluster/primary.js';
import { makePki } from './helpers/proxy.js';
import { spawnProxy, spawnTwoWorkers } from './helpers/child-proxy.js';
import { h1Request } from './helpers/net.js';
import { setTimeout as sleep } from 'node:timers/promises';

const MAIN = fileURLToPath(new URL('../src/main.js', import.meta.url));

/** LISTEN sockets on 127.0.0.1:`port`, from /proc/net/tcp (the kernel's view, whoever owns them). */
function listeningSockets(port: number): number {
  const local = `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  return readFileSync('/proc/net/tcp', 'utf8').split('\n').filter((line) => {
    const cols = line.trim().split(/\s+/);
    return cols[1] === local && cols[3] === '0A';
  }).length;
}

test('SO_REUSEPORT is used from Node 22.12 and 23.1 on, and only on Linux', () => {
  const cases: [string, string, boolean][] = [
    ['20.20.2', 'linux', false],
    ['22.11.0', 'linux', false],
    ['22.12.0', 'linux', true],
    ['23.0.0', 'linux', false],
    ['23.1.0', 'linux', true],
    ['26.12.1', 'linux', true],
    ['26.12.1', 'darwin', false],
    ['26.12.1', 'win32', false],
  ];
  for (const [version, platform, expected] of cases) assert.equal(nodeHasReusePort(version, platform), expected, `${version} on ${platform}`);
});

test('two workers share the port and both serve; SIGTERM stops the primary and its workers', async (t) => {
  const { proxy, pki, up } = await spawnTwoWorkers(t);
  // Where Node can bind with SO_REUSEPORT (22.12+), each worker has its own socket and the primary none;
  // on older Node the primary holds the one socket and hands connections to the workers in turn.
  const reusePort = nodeHasReusePort();
  assert.equal(listeningSockets(proxy.httpsPort), reusePort ? 2 : 1, 'listening sockets on the port');
  const started = proxy.logs.find((l) => l['msg'] === 'primary started workers');
  assert.equal(started?.['balancing'], reusePort ? 'reuseport' : 'round-robin');
  // Each request on a new TLS connection, spread over the workers by the kernel or by the primary.
  const n = 20;
  for (let i = 0; i < n; i++) {
    const r = await h1Request({ port: proxy.httpsPort, sni: 'site.test', path: `/n${i}`, ca: pki.caPem });
    assert.equal(r.status, 200);
  }
  assert.equal(up.seen.length, n);
  // 20 s, past the primary's kill timer (shutdownTimeout + 5 s): a stop held up until that timer fails on the
  // primary's last line below, which says what happened, rather than on our SIGKILL.
  await proxy.kill(20_000);
  assert.equal(await proxy.exited, 0);
  // The primary's own last line says the stop completed (what `docker logs` shows last), with the exit code.
  const primaryLast = proxy.logs.filter((l) => l['pid'] === proxy.pid).at(-1);
  assert.deepEqual([primaryLast?.['msg'], primaryLast?.['exitCode']], ['stopped', 0], JSON.stringify(primaryLast));
  // Workers flush their logs as they stop: the access lines name the worker that served each request.
  const access = proxy.logs.filter((l) => l['msg'] === 'access');
  assert.equal(access.length, n, JSON.stringify(proxy.logs.slice(-5)));
  const servedBy = new Set(access.map((l) => l['pid']));
  assert.equal(servedBy.size, 2, `access lines came from pids ${[...servedBy].join(', ')}`);
  assert.ok(!servedBy.has(proxy.pid), 'the primary itself does not serve');
  const listening = proxy.logs.filter((l) => l['msg'] === 'listening');
  assert.deepEqual(listening.map((l) => l['reusePort'] === true), [reusePort, reusePort]);
});

test('a stop ends when the workers have exited, even where their IPC channels close later (a child holds them), with exit 0 and "stopped"', async (t) => {
  const pki = await makePki();
  const pidFile = join(pki.dir, 'holders.txt');
  await writeFile(pidFile, '');
  // Hooks run in the order added: the holders are ended before their PID file is removed with the rest.
  t.after(() => {
    for (const pid of readFileSync(pidFile, 'utf8').split('\n').filter((p) => p !== '')) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // already gone
      }
    }
  });
  t.after(() => pki.cleanup());
  const cert = await pki.issue('site', ['site.test']);
  const holder = fileURLToPath(new URL('./helpers/hold-ipc-channel.js', import.meta.url));
  const proxy = await spawnProxy(pki, { workers: 2, hosts: { 'site.test': { tls: cert, routes: [{ path: '/', upstream: 'http://127.0.0.1:1' }] } } }, { startTimeoutMs: 20_000, env: { NODE_OPTIONS: `--import=${holder}`, PORTICO_TEST_HOLDER_PIDS: pidFile } });
  t.after(() => proxy.kill());
  for (let i = 0; i < 200 && readFileSync(pidFile, 'utf8').split('\n').length < 3; i++) await sleep(50);
  assert.equal(readFileSync(pidFile, 'utf8').split('\n').filter((p) => p !== '').length, 2, 'each worker started a holder of its channel');
  for (let i = 0; i < 150 && proxy.logs.filter((l) => l['msg'] === 'listening').length < 2; i++) await sleep(100);
  const started = Date.now();
  await proxy.kill(20_000);
  const tookMs = Date.now() - started;
  assert.equal(await proxy.exited, 0);
  // Waiting for the channels instead would take until the primary's kill timer (shutdownTimeout + 5 s = 15 s).
  assert.ok(tookMs < 5000, `the stop took ${String(tookMs)} ms`);
  const primaryLast = proxy.logs.filter((l) => l['pid'] === proxy.pid).at(-1);
  assert.deepEqual([primaryLast?.['msg'], primaryLast?.['exitCode']], ['stopped', 0], JSON.stringify(primaryLast));
});

test('with workers, a port another process holds (here, a running Portico) ends the start at once with the reason', async (t) => {
  const { proxy, pki } = await spawnTwoWorkers(t);
  const file = join(pki.dir, 'second.json');
  const cert = { cert: 'site.pem', key: 'site-key.pem' };
  await writeFile(file, JSON.stringify({ listen: { https: { port: proxy.httpsPort, addresses: ['127.0.0.1'] }, http: null }, certsDir: pki.dir, workers: 2, hosts: { 'site.test': { tls: cert, routes: [{ path: '/', upstream: 'http://127.0.0.1:1' }] } } }));
  const second = spawn(process.execPath, [MAIN, '--config', file, '--no-watch'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  let stdout = '';
  second.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  second.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  const [code] = (await once(second, 'exit')) as [number | null];
  assert.equal(code, 1);
  assert.match(stderr, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${proxy.httpsPort} \\(EADDRINUSE\\); another process holds the port`));
  // What to do about it: how to find the holder, and where the port is set.
  assert.match(stderr, new RegExp(`ss -ltnp 'sport = :${proxy.httpsPort}'.*listen\\.https\\.port`));
  assert.doesNotMatch(stdout, /primary started workers/);
  // The first one still holds the port alone.
  assert.equal(listeningSockets(proxy.httpsPort), nodeHasReusePort() ? 2 : 1);
});

test('with workers, a config with problems exits 1 with every issue and starts no worker', async (t) => {
  const pki = await makePki();
  t.after(() => pki.cleanup());
  const file = join(pki.dir, 'bad.json');
  await writeFile(file, JSON.stringify({ workers: 2, hosts: { 'site.test': { tls: { cert: 'site.pem' }, routes: [{ path: 'x', upstream: 'http://127.0.0.1:1' }] } } }));
  const proc = spawn(process.execPath, [MAIN, '--config', file, '--no-watch'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  proc.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  proc.stdout.resume();
  const [code] = (await once(proc, 'exit')) as [number | null];
  assert.equal(code, 1);
  assert.match(stderr, /bad\.json: 2 problems/);
  assert.match(stderr, /hosts\["site\.test"\]\.tls\.key: required/);
  assert.match(stderr, /hosts\["site\.test"\]\.routes\[0\]\.path: a route path must start with "\/"/);
  assert.doesNotMatch(stderr, /primary started workers/);
});

test('a restarted worker that cannot start (the config file edited into one it refuses) is retried with a growing delay, while the other worker serves on', async (t) => {
  const { proxy, pki, up } = await spawnTwoWorkers(t);
  const workerPids = [...new Set(proxy.logs.filter((l) => l['msg'] === 'listening').map((l) => l['pid'] as number))];
  assert.equal(workerPids.length, 2);
  // An edit the running workers would refuse (no host), then one worker crashes: its replacements cannot start.
  await proxy.writeConfig({ workers: 2, hosts: {} });
  process.kill(workerPids[0]!, 'SIGKILL');
  const cert = { cert: 'site.pem', key: 'site-key.pem' };
  // Until a restart is put off by a second or more (two at once, as there are two workers, then 250 and 500 ms, then 1,000: the fifth), however long the
  // failed starts take on a loaded machine; a tight loop would never get there.
  const deathLines = (): Record<string, unknown>[] => proxy.logs.filter((l) => l['msg'] === 'worker died, restarting');
  const deadline = Date.now() + 30_000;
  for (let i = 0; !deathLines().some((l) => (l['restartInMs'] as number) >= 1000); i++) {
    assert.ok(Date.now() < deadline, `the delay grows to 1 s within 30 s (${JSON.stringify(deathLines().map((l) => l['restartInMs']))})`);
    await sleep(200);
    assert.equal(proxy.proc.exitCode, null, `the primary runs on (${JSON.stringify(proxy.logs.filter((l) => (l['level'] as number) >= 50).slice(-2))})`);
    assert.equal((await h1Request({ port: proxy.httpsPort, sni: 'site.test', path: `/still${i}`, ca: pki.caPem })).status, 200, 'the other worker serves');
  }
  const deaths = deathLines();
  assert.ok(deaths.length === 5, `${deaths.length} restarts before one is put off by 1 s: growing delays, not a tight loop`);
  assert.ok(deaths.every((l) => l['serving'] === 1));
  assert.ok(deaths.every((l) => l['pid'] === proxy.proc.pid && typeof l['worker'] === 'number' && l['worker'] !== proxy.proc.pid), 'pid is the primary\'s, worker the dead one\'s');
  // A good config again: the next restart serves.
  await proxy.writeConfig({ workers: 2, hosts: { 'site.test': { tls: cert, routes: [{ path: '/', upstream: up.url }] } } });
  const listening = (): number => new Set(proxy.logs.filter((l) => l['msg'] === 'listening').map((l) => l['pid'])).size;
  for (let i = 0; i < 150 && listening() < 3; i++) await sleep(100);
  assert.equal(listening(), 3, 'a new worker serves');
  await proxy.kill(20_000); // past shutdownTimeout + 5 s, as in the test above
  assert.equal(await proxy.exited, 0);
  // The primary's own last line says the stop completed (what `docker logs` shows last), with the exit code.
  const primaryLast = proxy.logs.filter((l) => l['pid'] === proxy.pid).at(-1);
  assert.deepEqual([primaryLast?.['msg'], primaryLast?.['exitCode']], ['stopped', 0], JSON.stringify(primaryLast));
});

test('restart delays: one restart per worker at once, then 250 ms doubling up to 30 s; giving up needs several failed starts', () => {
  assert.deepEqual([1, 2, 3, 4, 5, 6].map((n) => restartDelayMs(n, 2)), [0, 0, 250, 500, 1000, 2000]);
  assert.equal(restartDelayMs(40, 2), RESTART_DELAY_MAX_MS);
  assert.equal(giveUpAfterFailedStarts(1), 3);
  assert.equal(giveUpAfterFailedStarts(4), 8);
});

test('SIGTERM with a worker that hangs: the primary kills it limits.shutdownTimeout + 5 s later and exits 1, naming it', async (t) => {
  const pki = await makePki();
  t.after(() => pki.cleanup());
  const cert = await pki.issue('site', ['site.test']);
  const proxy = await spawnProxy(pki, { workers: 2, limits: { shutdownTimeout: '1s' }, hosts: { 'site.test': { tls: cert, routes: [{ path: '/', upstream: 'http://127.0.0.1:1' }] } } }, { startTimeoutMs: 20_000 });
  t.after(() => proxy.kill());
  const pids = (): number[] => [...new Set(proxy.logs.filter((l) => l['msg'] === 'listening').map((l) => l['pid'] as number))];
  for (let i = 0; i < 150 && pids().length < 2; i++) await sleep(100);
  const [hung, other] = pids();
  assert.ok(hung !== undefined && other !== undefined, 'both workers listen');
  process.kill(hung, 'SIGSTOP');
  t.after(() => {
    try {
      process.kill(hung, 'SIGKILL');
    } catch {
      // Gone already, as it should be.
    }
  });
  const started = Date.now();
  proxy.proc.kill('SIGTERM');
  const code = await Promise.race([proxy.exited, sleep(20_000).then(() => 'still running after 20 s')]);
  const tookMs = Date.now() - started;
  assert.equal(code, 1, 'a forced stop is not a clean one');
  assert.ok(tookMs >= 5_500 && tookMs < 12_000, `stopped after ${tookMs} ms: 1 s shutdownTimeout + 5 s grace`);
  const killed = proxy.logs.filter((l) => l['msg'] === 'worker did not stop within limits.shutdownTimeout; killing it');
  // The worker's pid under "worker": a second "pid" key would hide the primary's (pino writes its own), and log stores refuse duplicate keys.
  assert.deepEqual(killed.map((l) => l['worker']), [hung]);
  assert.deepEqual(killed.map((l) => l['pid']), [proxy.proc.pid]);
  assert.throws(() => process.kill(hung, 0), /ESRCH/, 'the hung worker is gone');
  assert.throws(() => process.kill(other, 0), /ESRCH/, 'the other worker stopped');
  const primaryLast = proxy.logs.filter((l) => l['pid'] === proxy.proc.pid).at(-1);
  assert.deepEqual([primaryLast?.['msg'], primaryLast?.['level'], primaryLast?.['exitCode']], ['stopped', 50, 1], JSON.stringify(primaryLast));
});
