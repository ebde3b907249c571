import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import WebSocket from 'ws';
import { adminRequest } from './helpers/admin.js';
import { makePki, startProxyFor } from './helpers/proxy.js';
import { freePort, h1Request, h2Connect, h2Request, startUpstream } from './helpers/net.js';

/** A TCP server that reads each request and then resets the connection (`hang`: never answers at all). */
async function brokenUpstream(mode: 'reset' | 'hang'): Promise<{ url: string; requests: () => number; close: () => Promise<void> }> {
  let requests = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    s.once('data', () => {
      requests++;
      if (mode === 'reset') s.resetAndDestroy();
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    requests: () => requests,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

test('an idempotent request without a body that fails before its response goes to the next target; others get 502', async (t) => {
  const pki = await makePki();
  const broken = await brokenUpstream('reset');
  const good = await startUpstream();
  const cert = await pki.issue('r', ['retry.test', 'lone.test']);
  const proxy = await startProxyFor(
    t,
    pki,
    {
      hosts: {
        'retry.test': { tls: cert, routes: [{ path: '/', upstream: [broken.url, good.url] }] },
        'lone.test': { tls: cert, routes: [{ path: '/', upstream: broken.url }] },
      },
    },
    [broken.close, good.close],
  );
  const req = (method: string, path: string, body?: string, host = 'retry.test') => h1Request({ port: proxy.httpsPort, sni: host, path, method, body, ca: pki.caPem });
  for (let i = 0; i < 4; i++) assert.equal((await req('GET', `/g${i}`)).status, 200);
  assert.deepEqual(good.seen.map((r) => r.url), ['/g0', '/g1', '/g2', '/g3']);
  // Round-robin comes back to the broken target after each retry: every GET met it first.
  assert.equal(broken.requests(), 4);
  const warn = proxy.logs.find((l) => l.msg === 'upstream failed, trying the next target');
  assert.equal(warn?.upstream, broken.url);
  assert.equal(warn?.next, good.url);

  // DELETE without a body is idempotent too; PATCH is not, and a POST has a body: neither is sent twice.
  const statuses: Record<string, number[]> = { DELETE: [], PATCH: [], POST: [] };
  for (const method of ['DELETE', 'PATCH', 'POST'] as const) {
    for (let i = 0; i < 2; i++) statuses[method]!.push((await req(method, `/${method.toLowerCase()}${i}`, method === 'POST' ? 'body' : undefined)).status);
  }
  assert.deepEqual(statuses.DELETE, [200, 200]);
  assert.deepEqual([...statuses.PATCH!].sort(), [200, 502]);
  assert.deepEqual([...statuses.POST!].sort(), [200, 502]);

  // One target only: nothing to retry on, 502 at once; over HTTP/2 the same.
  assert.equal((await req('GET', '/x', undefined, 'lone.test')).status, 502);
  const s = await h2Connect(proxy.httpsPort, 'retry.test', pki.caPem);
  const h2 = [];
  for (let i = 0; i < 2; i++) h2.push((await h2Request(s, { path: `/h2-${i}` })).status);
  s.close();
  assert.deepEqual(h2, [200, 200]);
});

test('a GET whose target does not answer within responseTimeout is answered by the next target', async (t) => {
  const pki = await makePki();
  const hang = await brokenUpstream('hang');
  const good = await startUpstream();
  const cert = await pki.issue('r', ['slow.test']);
  const proxy = await startProxyFor(t, pki, { hosts: { 'slow.test': { tls: cert, routes: [{ path: '/', upstream: { targets: [hang.url, good.url], responseTimeout: '300ms' } }] } } }, [hang.close, good.close]);
  const started = Date.now();
  const res = await h1Request({ port: proxy.httpsPort, sni: 'slow.test', path: '/slow', ca: pki.caPem });
  assert.equal(res.status, 200);
  assert.ok(Date.now() - started >= 250, 'it waited for the first target first');
  assert.equal(hang.requests(), 1);
  assert.deepEqual(good.seen.map((r) => r.url), ['/slow']);
  // A POST with a body meeting the silent target waits its timeout and gets 504: it may have been processed.
  const post = await h1Request({ port: proxy.httpsPort, sni: 'slow.test', path: '/p', method: 'POST', body: 'x', ca: pki.caPem });
  assert.equal(post.status, 504);
});

test('a retried request goes to each target at most once, even when one target is out of rotation', async (t) => {
  const pki = await makePki();
  const a = await brokenUpstream('reset');
  const b = await brokenUpstream('reset');
  const closed = `http://127.0.0.1:${await freePort()}`; // refuses: passive health takes it out
  const cert = await pki.issue('r', ['once.test']);
  const proxy = await startProxyFor(
    t,
    pki,
    { hosts: { 'once.test': { tls: cert, routes: [{ path: '/', upstream: { targets: [a.url, b.url, closed], passiveHealth: { maxFails: 1, failTimeout: '60s' } } }] } } },
    [a.close, b.close],
  );
  const get = (path: string) => h1Request({ port: proxy.httpsPort, sni: 'once.test', path, ca: pki.caPem });
  assert.equal((await get('/first')).status, 502);
  assert.ok(proxy.logs.some((l) => l.msg === 'upstream target down' && l.upstream === closed), 'the refusing target is out');
  const before = a.requests() + b.requests();
  for (let i = 0; i < 3; i++) assert.equal((await get(`/again${i}`)).status, 502);
  // Two targets left in rotation, both failing: two attempts per request, never a second one to the same target.
  assert.equal(a.requests() + b.requests() - before, 6);
  assert.equal(proxy.logs.filter((l) => l.msg === 'upstream failed, trying the next target').length, 2 + 3);
});

test('a WebSocket upgrade refused by its targets tries each at most once, a drained one aside', async (t) => {
  const pki = await makePki();
  const token = 'r'.repeat(40);
  await writeFile(join(pki.dir, 'admin.token'), `${token}\n`);
  const adminPort = await freePort();
  const [refusedA, refusedB] = [`http://127.0.0.1:${await freePort()}`, `http://127.0.0.1:${await freePort()}`];
  const live = await startUpstream();
  const cert = await pki.issue('r', ['ws-once.test']);
  const proxy = await startProxyFor(
    t,
    pki,
    { admin: { port: adminPort, tokenFile: 'admin.token' }, hosts: { 'ws-once.test': { tls: cert, routes: [{ path: '/', upstream: [refusedA, refusedB, live.url] }] } } },
    [live.close],
  );
  assert.equal((await adminRequest(adminPort, 'POST', '/targets/drain', { token, body: { target: live.url } })).status, 200);
  const ws = new WebSocket(`wss://127.0.0.1:${proxy.httpsPort}/ws`, { servername: 'ws-once.test', headers: { host: 'ws-once.test' }, ca: pki.caPem } as WebSocket.ClientOptions);
  const [, res] = (await once(ws, 'unexpected-response')) as [unknown, { statusCode: number; resume(): void }];
  res.resume();
  assert.equal(res.statusCode, 502);
  const retries = proxy.logs.filter((l) => l.msg === 'upstream failed, trying the next target');
  assert.equal(retries.length, 1, 'one refused target, then the other, then none: the first is not tried again');
  assert.deepEqual([retries[0]!.upstream, retries[0]!.next].sort(), [refusedA, refusedB].sort());
});
