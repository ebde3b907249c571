import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type http from 'node:http';
import { setTimeout as delay } from 'node:timers/promises';
import WebSocket from 'ws';
import { makePki, startProxyFor } from './helpers/proxy.js';
import { h1Request, startUpstream } from './helpers/net.js';
import { upgradeUpstream } from './helpers/upgrade-upstream.js';

test('least-connections sends requests past a target that is still busy; client-ip keeps a client on one target', async (t) => {
  const pki = await makePki();
  const held: http.ServerResponse[] = [];
  // "slow" holds /hold requests until released; everything else is answered at once.
  const slow = await startUpstream((req, res) => {
    req.resume();
    if (req.url === '/hold') held.push(res);
    else res.end('slow');
  });
  const fast = await startUpstream((req, res) => {
    req.resume();
    res.end('fast');
  });
  const rr1 = await startUpstream();
  const rr2 = await startUpstream();
  const cert = await pki.issue('lb', ['lb.test']);
  const proxy = await startProxyFor(
    t,
    pki,
    {
      hosts: {
        'lb.test': {
          tls: cert,
          routes: [
            { path: '/', upstream: { targets: [slow.url, fast.url], loadBalancing: 'least-connections' } },
            { path: '/sticky', upstream: { targets: [rr1.url, rr2.url], loadBalancing: 'client-ip' } },
          ],
        },
      },
    },
    [slow.close, fast.close, rr1.close, rr2.close],
  );
  const get = (path: string) => h1Request({ port: proxy.httpsPort, sni: 'lb.test', path, ca: pki.caPem });

  const hold = get('/hold'); // ties go in turn: the first request lands on "slow" and stays in flight
  for (let i = 0; i < 50 && held.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(held.length, 1);
  const answers: string[] = [];
  for (let i = 0; i < 4; i++) answers.push((await get(`/n${i}`)).text);
  assert.deepEqual(answers, ['fast', 'fast', 'fast', 'fast'], 'round-robin would have sent two of them to the busy target');
  held[0]!.end('released');
  assert.equal((await hold).text, 'released');
  // Once nothing is in flight, both get requests again.
  const after: string[] = [];
  for (let i = 0; i < 2; i++) after.push((await get(`/m${i}`)).text);
  assert.deepEqual([...after].sort(), ['fast', 'slow']);

  for (let i = 0; i < 6; i++) assert.equal((await get(`/sticky/${i}`)).status, 200);
  assert.deepEqual([rr1.seen.length, rr2.seen.length].sort(), [0, 6], 'one client address, one target');
});

test('least-connections counts an open WebSocket against its target: requests go to the other target until the tunnel closes', async (t) => {
  const pki = await makePki();
  const a = await upgradeUpstream();
  const b = await upgradeUpstream();
  const cert = await pki.issue('ws', ['ws.test']);
  const proxy = await startProxyFor(t, pki, { hosts: { 'ws.test': { tls: cert, routes: [{ path: '/', upstream: { targets: [a.url, b.url], loadBalancing: 'least-connections' } }] } } }, [a.close, b.close]);
  const get = (path: string) => h1Request({ port: proxy.httpsPort, sni: 'ws.test', path, ca: pki.caPem });

  const ws = new WebSocket(`wss://127.0.0.1:${proxy.httpsPort}/ws`, { servername: 'ws.test', headers: { host: 'ws.test' }, ca: pki.caPem } as WebSocket.ClientOptions);
  await once(ws, 'open');
  const [busy, idle] = a.wss.clients.size === 1 ? [a, b] : [b, a];
  assert.equal(busy.wss.clients.size, 1, 'the tunnel went to one target');
  for (let i = 0; i < 4; i++) assert.equal((await get(`/open${i}`)).status, 200);
  assert.deepEqual(busy.plain, [], 'no request went to the target holding the tunnel (in turn, two of four would have)');
  assert.deepEqual(idle.plain, ['/open0', '/open1', '/open2', '/open3']);

  const closed = once(ws, 'close');
  ws.close(1000, 'done');
  await closed;
  // The upstream side of the tunnel closes just after the client's: wait until the target is free again.
  for (let i = 0; i < 100 && busy.wss.clients.size > 0; i++) await delay(10);
  await delay(200);
  for (let i = 0; i < 2; i++) assert.equal((await get(`/closed${i}`)).status, 200);
  assert.deepEqual([busy.plain.length, idle.plain.length], [1, 5], 'with the tunnel closed, both targets take requests in turn');
});

test('client-ip hashes the client a trusted proxy names in X-Forwarded-For, not the proxy\'s own address, for requests and WebSocket upgrades', async (t) => {
  const pki = await makePki();
  const ups = await Promise.all([upgradeUpstream(), upgradeUpstream(), upgradeUpstream()]);
  const cert = await pki.issue('lbx', ['xff.test']);
  const proxy = await startProxyFor(
    t,
    pki,
    {
      forwarding: { trustedProxies: ['127.0.0.1'] },
      hosts: { 'xff.test': { tls: cert, routes: [{ path: '/', upstream: { targets: ups.map((u) => u.url), loadBalancing: 'client-ip' } }] } },
    },
    ups.map((u) => u.close),
  );
  const get = (path: string, xff?: string) =>
    h1Request({ port: proxy.httpsPort, sni: 'xff.test', path, headers: xff === undefined ? {} : { 'x-forwarded-for': xff }, ca: pki.caPem });
  const seen = (): number[] => ups.map((u) => u.plain.length);
  // With three targets, "127.0.0.1" and "::1" hash to different ones (FNV-1a: 2 and 1).
  for (let i = 0; i < 4; i++) assert.equal((await get(`/direct/${i}`)).status, 200);
  assert.deepEqual(seen(), [0, 0, 4], 'the trusted peer itself, with no X-Forwarded-For, is the client');
  for (let i = 0; i < 4; i++) assert.equal((await get(`/behind/${i}`, '::1')).status, 200);
  assert.deepEqual(seen(), [0, 4, 4], 'the client behind the trusted proxy keeps its own target');
  const ws = new WebSocket(`wss://127.0.0.1:${proxy.httpsPort}/ws`, { servername: 'xff.test', headers: { host: 'xff.test', 'x-forwarded-for': '::1' }, ca: pki.caPem } as WebSocket.ClientOptions);
  await once(ws, 'open');
  assert.deepEqual(ups.map((u) => u.wss.clients.size), [0, 1, 0], 'the upgrade goes where that client\'s requests go');
  const closed = once(ws, 'close');
  ws.close(1000, 'done');
  await closed;
});

test('least-connections keeps counting an open WebSocket after a reload: new requests still go to the other target', async (t) => {
  const pki = await makePki();
  const a = await upgradeUpstream();
  const b = await upgradeUpstream();
  const cert = await pki.issue('wsr', ['wsr.test', 'more.test']);
  const route = { path: '/', upstream: { targets: [a.url, b.url], loadBalancing: 'least-connections' as const } };
  const proxy = await startProxyFor(t, pki, { hosts: { 'wsr.test': { tls: cert, routes: [route] } } }, [a.close, b.close]);
  const ws = new WebSocket(`wss://127.0.0.1:${proxy.httpsPort}/ws`, { servername: 'wsr.test', headers: { host: 'wsr.test' }, ca: pki.caPem } as WebSocket.ClientOptions);
  await once(ws, 'open');
  const [busy, idle] = a.wss.clients.size === 1 ? [a, b] : [b, a];

  // A reload that keeps the upstream (a certificate renewal or an edit elsewhere does the same): a new Plan.
  await proxy.reconfigure({ hosts: { 'wsr.test': { tls: cert, routes: [route] }, 'more.test': { tls: cert, routes: [{ path: '/', respond: { body: 'x' } }] } } });
  for (let i = 0; i < 4; i++) assert.equal((await h1Request({ port: proxy.httpsPort, sni: 'wsr.test', path: `/after${i}`, ca: pki.caPem })).status, 200);
  assert.deepEqual(busy.plain, [], 'the target holding the tunnel still counts one in flight');
  assert.deepEqual(idle.plain, ['/after0', '/after1', '/after2', '/after3']);

  // Once the tunnel closes, its count is given back: both targets take requests again.
  const closed = once(ws, 'close');
  ws.close(1000, 'done');
  await closed;
  for (let i = 0; i < 50 && busy.wss.clients.size > 0; i++) await delay(20);
  await delay(50);
  for (let i = 0; i < 2; i++) assert.equal((await h1Request({ port: proxy.httpsPort, sni: 'wsr.test', path: `/later${i}`, ca: pki.caPem })).status, 200);
  assert.equal(busy.plain.length, 1);
  assert.equal(idle.plain.length, 5);
});
