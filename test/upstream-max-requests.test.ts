/**
 * An upstream's maxRequests and queueTimeout: no target ever has more requests in flight than the
 * limit, a request waits in the queue for a free slot and gets it in order, one that waits too long
 * (or finds no queue) gets 503 PORTICO_UPSTREAM_BUSY with Retry-After, a client that leaves the queue
 * is forgotten, and routes that share a target share its count.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type http from 'node:http';
import { setTimeout as delay } from 'node:timers/promises';
import { validateConfig } from '../src/config/load.js';
import { takeSnapshot } from '../src/admin/snapshot.js';
import { renderMetrics } from '../src/admin/metrics.js';
import type { ConfigInput } from '../src/config/schema.js';
import { makePki, startProxyFor, type TestPki, type TestProxy } from './helpers/proxy.js';
import { h1Request, h2Connect, startUpstream, type TestResponse } from './helpers/net.js';

/** An upstream that holds every request until the test releases it, and records how many it held at once. */
async function gated(name: string): Promise<{ url: string; held: { path: string; res: http.ServerResponse }[]; most: () => number; release: (path?: string) => void; close: () => Promise<void> }> {
  const held: { path: string; res: http.ServerResponse }[] = [];
  let most = 0;
  const up = await startUpstream((req, res) => {
    req.resume();
    held.push({ path: req.url ?? '', res });
    most = Math.max(most, held.length);
    res.on('close', () => {
      const i = held.findIndex((h) => h.res === res);
      if (i >= 0) held.splice(i, 1);
    });
  });
  return {
    url: up.url,
    held,
    most: () => most,
    release: (path) => {
      const h = path === undefined ? held[0] : held.find((x) => x.path === path);
      h?.res.end(`${name} ${h.path}`);
    },
    close: () => up.close(),
  };
}

async function waitUntil(what: string, cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await delay(10);
  }
}

type Gated = Awaited<ReturnType<typeof gated>>;

type RouteInput = ConfigInput['hosts'][string]['routes'][number];

async function setup(t: TestContext, upstream: (a: Gated, b: Gated) => NonNullable<RouteInput['upstream']>, extraRoutes: (a: Gated) => RouteInput[] = () => []): Promise<{ pki: TestPki; proxy: TestProxy; a: Gated; b: Gated }> {
  const pki = await makePki();
  const a = await gated('a');
  const b = await gated('b');
  const cert = await pki.issue('q', ['q.test']);
  const proxy = await startProxyFor(t, pki, { hosts: { 'q.test': { tls: cert, routes: [{ path: '/', upstream: upstream(a, b) }, ...extraRoutes(a)] } } }, [
    () => a.close(),
    () => b.close(),
  ]);
  return { pki, proxy, a, b };
}

test('no target gets more than maxRequests at once; the next request waits and goes out, in order, as slots free', async (t) => {
  const { pki, proxy, a, b } = await setup(t, (a, b) => ({ targets: [a.url, b.url], maxRequests: 2, queueTimeout: '5s' }));
  const get = (path: string): Promise<TestResponse> => h1Request({ port: proxy.httpsPort, sni: 'q.test', path, ca: pki.caPem });
  const first = ['/1', '/2', '/3', '/4'].map(get);
  await waitUntil('four requests held', () => a.held.length + b.held.length === 4);
  assert.equal(a.held.length, 2);
  assert.equal(b.held.length, 2);
  const waiting = [get('/5'), get('/6')];
  await delay(200);
  assert.equal(a.held.length + b.held.length, 4, 'the fifth and sixth wait in Portico, not at a target');
  // What the admin API shows: two in flight at each target, two queued for them.
  const snap = takeSnapshot(proxy.portico);
  for (const u of [a, b]) assert.deepEqual((({ limitedRequests, queued }) => ({ limitedRequests, queued }))(snap.upstreams.find((x) => x.url === u.url)!), { limitedRequests: 2, queued: 2 });
  assert.match(renderMetrics([snap]), new RegExp(`portico_upstream_queued_requests\\{upstream="${a.url}"\\} 2`));
  b.release();
  await waitUntil('the fifth sent to b', () => b.held.some((h) => h.path === '/5'));
  assert.ok(!b.held.some((h) => h.path === '/6') && !a.held.some((h) => h.path === '/6'), 'the sixth still waits: oldest first');
  a.release();
  await waitUntil('the sixth sent to a', () => a.held.some((h) => h.path === '/6'));
  while (a.held.length + b.held.length > 0) {
    a.release();
    b.release();
    await delay(5);
  }
  const all = await Promise.all([...first, ...waiting]);
  for (const r of all) assert.equal(r.status, 200);
  assert.equal(a.most(), 2);
  assert.equal(b.most(), 2);
});

test('a request that waits past queueTimeout gets 503 PORTICO_UPSTREAM_BUSY with Retry-After, and never reaches a target; a client that leaves the queue is forgotten', async (t) => {
  const { pki, proxy, a } = await setup(t, (a) => ({ targets: [a.url], maxRequests: 1, queueTimeout: '300ms' }));
  const get = (path: string): Promise<TestResponse> => h1Request({ port: proxy.httpsPort, sni: 'q.test', path, ca: pki.caPem });
  const held = get('/held');
  await waitUntil('one held', () => a.held.length === 1);
  const started = performance.now();
  const busy = await get('/late');
  const ms = performance.now() - started;
  assert.equal(busy.status, 503);
  assert.equal(busy.headers['x-portico-error'], 'PORTICO_UPSTREAM_BUSY');
  assert.equal(busy.headers['retry-after'], '1');
  assert.ok(ms >= 250 && ms < 2000, `waited for queueTimeout: ${Math.round(ms)} ms`);

  // An HTTP/2 client that resets its stream while queued: when the slot frees, the next waiting request gets it.
  const session = await h2Connect(proxy.httpsPort, 'q.test', pki.caPem);
  t.after(() => session.close());
  const gone = session.request({ ':path': '/gone' });
  gone.on('error', () => {});
  await delay(50);
  gone.close();
  const next = get('/next');
  await delay(50);
  a.release('/held');
  await waitUntil('the next request sent', () => a.held.some((h) => h.path === '/next'));
  assert.ok(!a.held.some((h) => h.path === '/gone'));
  a.release('/next');
  assert.equal((await next).status, 200);
  assert.equal((await held).status, 200);
  const line = proxy.logs.find((l) => l.msg === 'access' && l.path === '/late');
  assert.equal(line?.error, 'PORTICO_UPSTREAM_BUSY');
});

test('queueTimeout "0s": no queue, 503 at once; a route that shares the target shares its count, and a slot freed by one route wakes the other\'s queue', async (t) => {
  const { pki, proxy, a } = await setup(
    t,
    (a) => ({ targets: [a.url], maxRequests: 1, queueTimeout: '0s' }),
    (a) => [{ path: '/other', upstream: { targets: [a.url], maxRequests: 1, queueTimeout: '5s' } }],
  );
  const get = (path: string): Promise<TestResponse> => h1Request({ port: proxy.httpsPort, sni: 'q.test', path, ca: pki.caPem });
  const held = get('/held');
  await waitUntil('one held', () => a.held.length === 1);
  const started = performance.now();
  const busy = await get('/now');
  assert.equal(busy.status, 503);
  assert.ok(performance.now() - started < 1000, 'answered at once');
  // /other counts the same target's slot, held by "/" above: it waits, and gets it when "/" ends.
  const other = get('/other/x');
  await delay(150);
  assert.equal(a.held.length, 1);
  a.release('/held');
  await waitUntil('/other sent', () => a.held.some((h) => h.path === '/other/x'));
  a.release('/other/x');
  assert.equal((await other).status, 200);
  assert.equal((await held).status, 200);
  assert.equal(a.most(), 1);
});

test('maxRequests and queueTimeout are checked with their paths', () => {
  const tls = { cert: 'c.pem', key: 'k.pem' };
  const r = validateConfig({ hosts: { 'a.test': { tls, routes: [{ upstream: { targets: ['http://127.0.0.1:1'], maxRequests: 0, queueTimeout: 'soon' } }] } } });
  const lines = r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`);
  assert.ok(lines.some((l) => l.startsWith('hosts["a.test"].routes[0].upstream.maxRequests: ')), lines.join('\n'));
  assert.ok(lines.some((l) => l.startsWith('hosts["a.test"].routes[0].upstream.queueTimeout: ')), lines.join('\n'));
});
