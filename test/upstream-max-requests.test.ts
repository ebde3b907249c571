/**
 * An upstream's maxRequests and queueTimeout: no target ever has more requests in flight than the
 * limit, a request waits in the queue for a free slot and gets it in order, one that waits too long
 * (or finds no queue) gets 503 PORTICO_UPSTREAM_BUSY with Retry-After, a client that leaves the queue
 * is forgotten, and routes that share a target share its count. A WebSocket holds a slot for its whole
 * life, and gives it back once on every way an upgrade can end.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type http from 'node:http';
import { setTimeout as delay } from 'node:timers/promises';
import WebSocket from 'ws';
import { validateConfig } from '../src/config/load.js';
import { ERRORS } from '../src/errors.js';
import { takeSnapshot } from '../src/admin/snapshot.js';
import { renderMetrics } from '../src/admin/metrics.js';
import { setDrainedInProcess } from '../src/admin/drain.js';
import type { ConfigInput } from '../src/config/schema.js';
import { makePki, startProxyFor, type TestPki, type TestProxy } from './helpers/proxy.js';
import { freePort, h1Request, h2Connect, startUpstream, type TestResponse } from './helpers/net.js';
import { metricValue } from './helpers/admin.js';
import { RawClient, rawUpgradeRequest } from './helpers/raw-http1.js';
import { upgradeUpstream, type UpgradeUpstream } from './helpers/upgrade-upstream.js';

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

test('queued requests learn of targets leaving and entering rotation: none left, 503 PORTICO_NO_HEALTHY_UPSTREAM at once; one back, it takes them', async (t) => {
  const { pki, proxy, a, b } = await setup(t, (a, b) => ({ targets: [a.url, b.url], maxRequests: 1, queueTimeout: '10s' }));
  const get = (path: string): Promise<TestResponse> => h1Request({ port: proxy.httpsPort, sni: 'q.test', path, ca: pki.caPem });
  setDrainedInProcess(proxy.portico, b.url, true);
  const held = get('/held');
  await waitUntil('one held at a', () => a.held.length === 1);
  const queued = get('/queued');
  await delay(100);
  assert.equal(a.held.length + b.held.length, 1, 'the second request waits in the queue');
  // b back in rotation: the queued request goes to it now, not when a's slot frees.
  setDrainedInProcess(proxy.portico, b.url, false);
  await waitUntil('the queued request sent to b', () => b.held.some((h) => h.path === '/queued'));
  b.release('/queued');
  assert.equal((await queued).status, 200);

  // Every target out of rotation while a request waits: it is answered at once, not after queueTimeout.
  const second = get('/second');
  await waitUntil('one held at b', () => b.held.length === 1);
  const waiting = get('/waiting');
  await delay(100);
  const started = performance.now();
  setDrainedInProcess(proxy.portico, a.url, true);
  setDrainedInProcess(proxy.portico, b.url, true);
  const r = await waiting;
  assert.equal(r.status, 503);
  assert.equal(r.headers['x-portico-error'], 'PORTICO_NO_HEALTHY_UPSTREAM');
  assert.ok(performance.now() - started < 1000, 'well before the 10 s queueTimeout');
  a.release('/held');
  b.release('/second');
  assert.equal((await held).status, 200, 'requests already on a drained target run to their end');
  assert.equal((await second).status, 200);
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


async function setupUpgrades(
  t: TestContext,
  upstream: (up: UpgradeUpstream) => NonNullable<RouteInput['upstream']>,
): Promise<{ pki: TestPki; proxy: TestProxy; up: UpgradeUpstream; cert: { cert: string; key: string } }> {
  const pki = await makePki();
  const up = await upgradeUpstream();
  const cert = await pki.issue('u', ['u.test']);
  const proxy = await startProxyFor(t, pki, { hosts: { 'u.test': { tls: cert, routes: [{ path: '/', upstream: upstream(up) }] } } }, [() => up.close()]);
  return { pki, proxy, up, cert };
}

/** A WebSocket client through the proxy, open. */
async function openWs(proxy: TestProxy, pki: TestPki): Promise<WebSocket> {
  const ws = new WebSocket(`wss://127.0.0.1:${proxy.httpsPort}/ws`, { servername: 'u.test', headers: { host: 'u.test' }, ca: pki.caPem } as WebSocket.ClientOptions);
  await once(ws, 'open');
  return ws;
}

/** What /status shows for a target: requests (and tunnels) counted against maxRequests, and those queued. */
function counted(proxy: TestProxy, url: string): { limitedRequests: number; queued: number } {
  const u = takeSnapshot(proxy.portico).upstreams.find((x) => x.url === url)!;
  return { limitedRequests: u.limitedRequests, queued: u.queued };
}

test('a WebSocket holds a slot of its target while open: with maxRequests 1 a request queues until the tunnel closes, another upgrade gets 503 at once; /status and metrics count it', async (t) => {
  const { pki, proxy, up } = await setupUpgrades(t, (up) => ({ targets: [up.url], maxRequests: 1, queueTimeout: '5s' }));
  const get = (path: string): Promise<TestResponse> => h1Request({ port: proxy.httpsPort, sni: 'u.test', path, ca: pki.caPem });
  const ws = await openWs(proxy, pki);
  const echo = once(ws, 'message');
  ws.send('still open');
  assert.equal(String((await echo)[0]), 'still open');
  assert.deepEqual(counted(proxy, up.url), { limitedRequests: 1, queued: 0 });
  assert.equal(metricValue(renderMetrics([takeSnapshot(proxy.portico)]), `portico_upstream_limited_requests{upstream="${up.url}"}`), 1);

  const second = await RawClient.open(t, { port: proxy.httpsPort, tls: { servername: 'u.test', ca: pki.caPem } });
  const started = performance.now();
  await second.write(rawUpgradeRequest('u.test', '/ws'));
  const busy = await second.response();
  assert.equal(busy.status, 503);
  assert.equal(busy.text, `${ERRORS.PORTICO_UPSTREAM_BUSY.message}\n`);
  assert.equal(busy.headers['x-portico-error'], 'PORTICO_UPSTREAM_BUSY', 'a refused upgrade names its error as a refused request does');
  assert.equal(busy.headers['retry-after'], '1');
  assert.ok(performance.now() - started < 1000, 'an upgrade does not queue');
  assert.equal(up.wss.clients.size, 1, 'the refused upgrade reached no target');

  const queued = get('/after');
  await waitUntil('the request queued', () => counted(proxy, up.url).queued === 1);
  await delay(150);
  assert.deepEqual(up.plain, [], 'the request waits while the WebSocket is open');
  const closed = once(ws, 'close');
  ws.close(1000, 'done');
  await closed;
  const r = await queued;
  assert.equal(r.status, 200, 'the tunnel\'s slot went to the queued request');
  assert.deepEqual(up.plain, ['/after']);
  await waitUntil('no slot held', () => counted(proxy, up.url).limitedRequests === 0);
});

test('a tunnel the upstream closes frees its slot; with queueTimeout "0s" a request meanwhile gets 503 PORTICO_UPSTREAM_BUSY', async (t) => {
  const { pki, proxy, up } = await setupUpgrades(t, (up) => ({ targets: [up.url], maxRequests: 1, queueTimeout: '0s' }));
  const get = (path: string): Promise<TestResponse> => h1Request({ port: proxy.httpsPort, sni: 'u.test', path, ca: pki.caPem });
  const ws = await openWs(proxy, pki);
  const busy = await get('/busy');
  assert.equal(busy.status, 503);
  assert.equal(busy.headers['x-portico-error'], 'PORTICO_UPSTREAM_BUSY');
  const closed = once(ws, 'close');
  for (const c of up.wss.clients) c.terminate();
  await closed;
  await waitUntil('the slot freed', () => counted(proxy, up.url).limitedRequests === 0);
  assert.equal((await get('/free')).status, 200);
  assert.deepEqual(up.plain, ['/free']);
});

test('an upgrade gives its slot back once however it ends: declined, refused (and retried elsewhere), hung up on, or left by its client', async (t) => {
  const deadPort = await freePort();
  const dead = `http://127.0.0.1:${deadPort}`;
  const { pki, proxy, up, cert } = await setupUpgrades(t, (up) => ({ targets: [dead, up.url], maxRequests: 1, queueTimeout: '0s' }));
  const free = async (why: string): Promise<void> => {
    await waitUntil(`no slot held after ${why}`, () => counted(proxy, up.url).limitedRequests === 0 && counted(proxy, dead).limitedRequests === 0);
    // With queueTimeout "0s", a slot still held would make this a 503.
    const r = await h1Request({ port: proxy.httpsPort, sni: 'u.test', path: `/after-${why.replace(/\W+/g, '-')}`, ca: pki.caPem });
    assert.equal(r.status, 200, `a request after ${why}`);
  };
  const upgrade = async (path: string): Promise<RawClient> => {
    const c = await RawClient.open(t, { port: proxy.httpsPort, tls: { servername: 'u.test', ca: pki.caPem } });
    await c.write(rawUpgradeRequest('u.test', path));
    return c;
  };

  const declined = await (await upgrade('/decline')).response();
  assert.equal(declined.status, 403);
  assert.equal(declined.text, 'nope');
  await free('a declined upgrade');

  // The dead target refuses: the upgrade moves to the live one with its slot (round-robin tries the dead one first once).
  const hangup = await (await upgrade('/hangup')).response();
  assert.equal(hangup.status, 502);
  await free('an upstream that hung up');

  const ws = await openWs(proxy, pki);
  assert.equal(counted(proxy, up.url).limitedRequests, 1);
  assert.equal(counted(proxy, dead).limitedRequests, 0);
  const closed = once(ws, 'close');
  ws.close();
  await closed;
  await free('a WebSocket closed by its client');

  const leaving = await upgrade('/hold');
  await waitUntil('the upgrade held by the upstream', () => up.held.length === 1);
  assert.equal(counted(proxy, up.url).limitedRequests, 1, 'an upgrade waiting for its answer holds its slot');
  const upstreamSide = up.held[0]!;
  leaving.destroy();
  await waitUntil('the upstream request cancelled', () => upstreamSide.destroyed);
  await free('a client that left before the answer');

  const passedOver = proxy.logs.filter((l) => l.msg === 'upstream failed, trying the next target' && l.upstream === dead);
  assert.ok(passedOver.length >= 1, 'upgrades tried the dead target first and moved on with their slot');

  // The dead target alone: refused with nowhere else to go, 502 each time; a slot kept would make the second a 503.
  await proxy.reconfigure({ hosts: { 'u.test': { tls: cert, routes: [{ path: '/', upstream: { targets: [dead], maxRequests: 1, queueTimeout: '0s' } }] } } });
  for (const attempt of [1, 2]) {
    const refused = await (await upgrade('/ws')).response();
    assert.equal(refused.status, 502, `refused upgrade ${attempt}`);
    assert.equal(counted(proxy, dead).limitedRequests, 0);
  }
});
