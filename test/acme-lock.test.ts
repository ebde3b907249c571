/** One ACME orderer across processes: the lock file under <certsDir>/acme. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, utimes, writeFile, mkdir } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import http from 'node:http';
import { AlpnResponder, Http01Responder, OrdererLock } from '../src/acme/index.js';
import { challengeDirs } from '../src/acme/storage.js';
import { startUpstream } from './helpers/net.js';
import { startProxyFor, makePki } from './helpers/proxy.js';

test('only one of two lock holders orders; the other takes over once it is released', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'portico-lock-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'acme', 'orderer.lock');
  const a = new OrdererLock(file);
  const b = new OrdererLock(file);
  const results = await Promise.all([a.tryAcquire(), b.tryAcquire()]);
  assert.deepEqual(results.sort(), [false, true]);
  const [holder, other] = a.held ? [a, b] : [b, a];
  const content = JSON.parse(await readFile(file, 'utf8')) as { pid: number; host: string };
  assert.equal(content.pid, process.pid);
  assert.equal(await other.tryAcquire(), false);
  await holder.release();
  assert.equal(await other.tryAcquire(), true);
  await other.release();
});

test('a release while the lock is being taken waits for it and leaves no lock file; a released lock is never taken again', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'portico-lock-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'acme', 'orderer.lock');
  const lock = new OrdererLock(file);
  // Shutdown while a renewal check is taking the lock: the check's acquisition is still in flight.
  const acquiring = lock.tryAcquire();
  await lock.release();
  await acquiring;
  assert.equal(lock.held, false);
  await assert.rejects(readFile(file, 'utf8'), { code: 'ENOENT' }, 'no lock file is left for a stopped process');
  assert.equal(await lock.tryAcquire(), false);
  await assert.rejects(readFile(file, 'utf8'), { code: 'ENOENT' });
  // The lock is free for everyone else.
  const next = new OrdererLock(file);
  assert.equal(await next.tryAcquire(), true);
  await next.release();
});

test('a lock left by a dead process is taken over, a live one is not', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'portico-lock-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await mkdir(join(dir, 'acme'));
  const file = join(dir, 'acme', 'orderer.lock');
  const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']);
  const deadPid = Number(dead.stdout.toString());
  await writeFile(file, JSON.stringify({ pid: deadPid, host: hostname(), token: 'old', since: new Date().toISOString() }));
  const lock = new OrdererLock(file);
  assert.equal(await lock.tryAcquire(), true);
  await lock.release();
  // The parent of this test process is alive: its lock stands.
  await writeFile(file, JSON.stringify({ pid: process.ppid, host: hostname(), token: 'live', since: new Date().toISOString() }));
  assert.equal(await new OrdererLock(file).tryAcquire(), false);
  // …unless its heartbeat is old: the holder refreshes it, so that pid is another process now (a restarted
  // container gives the same small pids again), and the lock would otherwise stand forever.
  const longAgo = new Date(Date.now() - 10 * 60_000);
  await utimes(file, longAgo, longAgo);
  const heir = new OrdererLock(file);
  assert.equal(await heir.tryAcquire(), true, 'a lock whose pid is alive but whose heartbeat is 10 minutes old is taken over');
  assert.equal(JSON.parse(await readFile(file, 'utf8')).pid, process.pid);
  await heir.release();
  // A lock from another host is stale only once its heartbeat is old.
  await writeFile(file, JSON.stringify({ pid: 1, host: 'elsewhere', token: 'x', since: new Date().toISOString() }));
  assert.equal(await new OrdererLock(file, { staleMs: 60_000 }).tryAcquire(), false);
  const late = new OrdererLock(file, { staleMs: 0 });
  await new Promise((r) => setTimeout(r, 5));
  assert.equal(await late.tryAcquire(), true);
  await late.release();
});

test('a holder whose lock was taken over steps down at its next heartbeat', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'portico-lock-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'orderer.lock');
  let lost = false;
  const lock = new OrdererLock(file, { heartbeatMs: 20, onLost: () => (lost = true) });
  assert.equal(await lock.tryAcquire(), true);
  await writeFile(file, JSON.stringify({ pid: process.pid, host: hostname(), token: 'someone-else', since: new Date().toISOString() }));
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(lost, true);
  assert.equal(lock.held, false);
  await lock.release();
  assert.equal(JSON.parse(await readFile(file, 'utf8')).token, 'someone-else');
});

test('pending challenges written by the orderer are answered by another process sharing the certs directory', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'portico-challenges-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const orderer = new Http01Responder();
  const worker = new Http01Responder();
  orderer.setSharedDir(join(dir, 'http-01'));
  worker.setSharedDir(join(dir, 'http-01'));
  await orderer.add('tok_en-1', 'tok_en-1.thumb');
  assert.equal(worker.keyAuthorization('tok_en-1'), 'tok_en-1.thumb');
  assert.equal(worker.keyAuthorization('../http-01/tok_en-1'), undefined);
  await orderer.remove('tok_en-1');
  assert.equal(worker.keyAuthorization('tok_en-1'), undefined);

  const alpnOrderer = new AlpnResponder();
  const alpnWorker = new AlpnResponder();
  alpnOrderer.setSharedDir(join(dir, 'tls-alpn-01'));
  alpnWorker.setSharedDir(join(dir, 'tls-alpn-01'));
  const authz = { identifier: { type: 'dns', value: 'shared.test' }, status: 'pending', challenges: [], url: '', expires: '' } as unknown as Parameters<AlpnResponder['add']>[0];
  await alpnOrderer.add(authz, 'x.y');
  assert.ok(alpnWorker.contextFor('shared.test') !== undefined);
  assert.equal(alpnWorker.contextFor('other.test'), undefined);
  await alpnOrderer.remove('shared.test');
  assert.equal(alpnWorker.contextFor('shared.test'), undefined);
});

test('a process serves the challenges another process writes from its first request, before its own ACME module is ready', async (t) => {
  const pki = await makePki();
  const up = await startUpstream();
  // What the orderer (another worker) has written for a pending HTTP-01 challenge.
  const shared = challengeDirs(pki.dir);
  await mkdir(shared.http01, { recursive: true });
  await writeFile(join(shared.http01, 'tok_en-2'), 'tok_en-2.thumb');
  // acme.caFile as a FIFO: this process's ACME update blocks on reading it until the test writes it, as a
  // slow start (loading acme-client takes hundreds of ms) would leave it unfinished.
  const fifo = join(pki.dir, 'slow-ca.pem');
  assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
  const proxy = await startProxyFor(t, pki, {
    acme: { directory: 'https://127.0.0.1:9/dir', caFile: 'slow-ca.pem', termsOfServiceAgreed: true },
    hosts: { 'a.portico.test': { tls: { acme: true }, routes: [{ upstream: up.url }] } },
  }, [() => up.close()]);
  try {
    const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      http
        .get({ host: '127.0.0.1', port: proxy.httpPort, path: '/.well-known/acme-challenge/tok_en-2', headers: { host: 'a.portico.test' }, agent: false }, (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (body += c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        })
        .on('error', reject);
    });
    assert.deepEqual(answer, { status: 200, body: 'tok_en-2.thumb' });
  } finally {
    await writeFile(fifo, pki.caPem);
  }
});
