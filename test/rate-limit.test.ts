import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { validateConfig } from '../src/config/load.js';
import { RateLimiter } from '../src/proxy/rate-limit.js';
import { makePki, startProxyFor } from './helpers/proxy.js';
import { h1Request, h2Connect, h2Request, startUpstream } from './helpers/net.js';
import { RawClient, rawUpgradeRequest } from './helpers/raw-http1.js';

test('rateLimit: a burst, then the rate; a host\'s budget shared by its routes; per client behind a trusted proxy; 429 with Retry-After everywhere', async (t) => {
  const pki = await makePki();
  const up = await startUpstream((req, res) => {
    req.resume();
    res.end('ok');
  });
  const cert = await pki.issue('rl', ['rl.test']);
  const proxy = await startProxyFor(
    t,
    pki,
    {
      forwarding: { trustedProxies: ['127.0.0.1'] },
      hosts: {
        'rl.test': {
          tls: cert,
          rateLimit: { requests: 2, per: '1s', burst: 3 },
          routes: [
            { path: '/', upstream: up.url },
            { path: '/b', upstream: up.url },
            { path: '/free', upstream: up.url, rateLimit: false },
            { path: '/own', upstream: up.url, rateLimit: { requests: 1, per: '1m' } },
          ],
        },
      },
    },
    [up.close],
  );
  const get = (path: string, client: string) => h1Request({ port: proxy.httpsPort, sni: 'rl.test', path, headers: { 'x-forwarded-for': client }, ca: pki.caPem });

  const statuses: number[] = [];
  for (const path of ['/', '/b', '/', '/b']) statuses.push((await get(path, '127.10.0.1')).status);
  assert.deepEqual(statuses, [200, 200, 200, 429], 'a burst of 3 across the host\'s routes, then 429');
  const limited = await get('/', '127.10.0.1');
  assert.equal(limited.status, 429);
  assert.equal(limited.headers['retry-after'], '1');
  assert.equal(limited.headers['x-portico-error'], 'PORTICO_RATE_LIMITED');
  assert.equal(up.seen.length, 3, 'limited requests reach no upstream');
  assert.equal((await get('/', '127.10.0.2')).status, 200, 'another client has its own budget');
  for (let i = 0; i < 5; i++) assert.equal((await get('/free', '127.10.0.1')).status, 200, 'rateLimit: false');
  assert.equal((await get('/own', '127.10.0.3')).status, 200);
  const own = await get('/own', '127.10.0.3');
  assert.equal(own.status, 429, "a route's own limit");
  assert.equal(own.headers['retry-after'], '60');

  const s = await h2Connect(proxy.httpsPort, 'rl.test', pki.caPem);
  const h = await h2Request(s, { path: '/', headers: { 'x-forwarded-for': '127.10.0.1' } });
  assert.equal(h.status, 429);
  assert.equal(h.headers['retry-after'], '1');
  s.close();
  const ws = await RawClient.open(t, { port: proxy.httpsPort, tls: { servername: 'rl.test', ca: pki.caPem } });
  await ws.write(rawUpgradeRequest('rl.test', '/chat', 'X-Forwarded-For: 127.10.0.1\r\n'));
  const w = await ws.response();
  assert.equal(w.status, 429);
  assert.equal(w.headers['retry-after'], '1');

  // The rate refills the bucket: 2 per second.
  await sleep(1100);
  assert.equal((await get('/', '127.10.0.1')).status, 200);
  assert.equal((await get('/', '127.10.0.1')).status, 200);
  assert.equal((await get('/', '127.10.0.1')).status, 429);
});

test('RateLimiter forgets clients whose bucket has refilled, so its memory stays bounded', () => {
  const fast = new RateLimiter(1_000_000, 1, 1); // refills at once
  for (let i = 0; i < 20_000; i++) assert.equal(fast.take(`127.11.${i >> 8}.${i & 255}`), 0);
  assert.ok(fast.size <= 4096 + 1, `tracks ${fast.size} addresses`);
  const slow = new RateLimiter(1, 60_000, 1);
  for (let i = 0; i < 5000; i++) slow.take(`127.12.${i >> 8}.${i & 255}`);
  assert.equal(slow.size, 5000, 'clients still limited are kept');
  assert.equal(slow.take('127.12.0.0'), 60);
});

test('rateLimit settings are checked with their paths', () => {
  const issues = (rateLimit: unknown): string[] => {
    const r = validateConfig({ hosts: { 'a.test': { tls: { cert: 'c', key: 'k' }, rateLimit, routes: [{ upstream: 'http://127.0.0.1:1' }] } } });
    return r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`);
  };
  assert.deepEqual(issues({ requests: 10 }), []);
  assert.match(issues({ requests: 0 })[0]!, /^hosts\["a\.test"\]\.rateLimit\.requests: Too small/);
  assert.match(issues({ requests: 10, per: 'minute' })[0]!, /rateLimit\.per: expected a duration/);
  assert.match(issues({ requests: 10, burst: 1.5 })[0]!, /rateLimit\.burst/);
  assert.match(issues({ rate: 10 })[0]!, /rateLimit\.requests: required|rateLimit\.rate: unknown key/);
});
