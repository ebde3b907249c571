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
import { makePki } from './helpers/proxy.js';
import { spawnTwoWorkers } from './helpers/child-proxy.js';
import { h1Request } from './helpers/net.js';

const MAIN = fileURLToPath(new URL('../src/main.js', import.meta.url));

test('two workers share the port and both serve; SIGTERM stops the primary and its workers', async (t) => {
  const { proxy, pki, up } = await spawnTwoWorkers(t);
  // Each request on a new TLS connection: the primary hands connections to the workers in turn.
  for (let i = 0; i < 12; i++) {
    const r = await h1Request({ port: proxy.httpsPort, sni: 'site.test', path: `/n${i}`, ca: pki.caPem });
    assert.equal(r.status, 200);
  }
  assert.equal(up.seen.length, 12);
  await proxy.kill(10_000);
  assert.equal(await proxy.exited, 0);
  // Workers flush their logs as they stop: the access lines name the worker that served each request.
  const access = proxy.logs.filter((l) => l['msg'] === 'access');
  assert.equal(access.length, 12, JSON.stringify(proxy.logs.slice(-5)));
  const servedBy = new Set(access.map((l) => l['pid']));
  assert.equal(servedBy.size, 2, `access lines came from pids ${[...servedBy].join(', ')}`);
  assert.ok(!servedBy.has(proxy.pid), 'the primary itself does not serve');
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
