import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { validateConfig } from '../src/config/load.js';
import type { UpstreamPlan } from '../src/config/plan.js';
import { pickTarget } from '../src/proxy/handle-request.js';
import type { Target } from '../src/upstream/target.js';
import { makePki, startProxyFor } from './helpers/proxy.js';
import { h1Request, h2Connect, h2Request, startUpstream } from './helpers/net.js';
import { waitFor } from './helpers/pebble.js';

/** A server answering its own name, which can be stopped and started again on the same port. */
async function namedServer(name: string): Promise<{ url: string; stop: () => Promise<void>; start: () => Promise<void> }> {
  const server = http.createServer((req, res) => {
    req.resume();
    res.end(name);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    stop: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
    start: async () => {
      server.listen(port, '127.0.0.1');
      await once(server, 'listening');
    },
  };
}

test('weighted targets share requests by weight, spread evenly; a backup serves only while every regular target is out', async (t) => {
  const pki = await makePki();
  const heavy = await startUpstream((req, res) => res.end('heavy'));
  const light = await startUpstream((req, res) => res.end('light'));
  const primary = await namedServer('primary');
  const standby = await namedServer('standby');
  const cert = await pki.issue('w', ['w.test']);
  const proxy = await startProxyFor(
    t,
    pki,
    {
      hosts: {
        'w.test': {
          tls: cert,
          routes: [
            { path: '/', upstream: { targets: [{ url: heavy.url, weight: 3 }, light.url] } },
            {
              path: '/ha',
              upstream: {
                targets: [primary.url, { url: standby.url, backup: true }],
                // Two failed checks in a row take a target out, so that one check slowed by a busy machine does not.
                healthCheck: { path: '/', interval: '200ms', timeout: '200ms', unhealthyAfter: 2, healthyAfter: 1 },
              },
            },
          ],
        },
      },
    },
    [heavy.close, light.close, primary.stop, standby.stop],
  );
  const s = await h2Connect(proxy.httpsPort, 'w.test', pki.caPem);
  const get = async (path: string): Promise<string> => (await h2Request(s, { path })).text;

  const got: string[] = [];
  for (let i = 0; i < 40; i++) got.push(await get(`/${i}`));
  assert.equal(got.filter((g) => g === 'heavy').length, 30);
  assert.equal(got.filter((g) => g === 'light').length, 10);
  for (let i = 0; i < 40; i += 4) assert.equal(got.slice(i, i + 4).filter((g) => g === 'light').length, 1, `smooth: one light in every four, got ${got.join(' ')}`);

  for (let i = 0; i < 5; i++) assert.equal(await get('/ha'), 'primary', 'the backup gets nothing while the primary is up');
  // Only log lines from here on count: on a busy machine a 100 ms check can time out before this point, and
  // that target's down and up lines would otherwise satisfy the waits below at once.
  const logLine = (msg: string, from: number) => () => (proxy.logs.slice(from).some((l) => l.msg === msg && l.upstream === primary.url) ? true : undefined);
  const stoppedAt = proxy.logs.length;
  await primary.stop();
  // A refused connection goes on to the backup at once; the health check then takes the primary out.
  assert.equal(await get('/ha'), 'standby');
  await waitFor('the primary to be out', logLine('upstream target down', stoppedAt), 5000);
  for (let i = 0; i < 3; i++) assert.equal(await get('/ha'), 'standby');
  const startedAt = proxy.logs.length;
  await primary.start();
  await waitFor('the primary to be back', logLine('upstream target up', startedAt), 5000);
  for (let i = 0; i < 3; i++) assert.equal(await get('/ha'), 'primary', 'back on the primary once it passes its check');
  s.close();
  // HTTP/1.1 takes the same path.
  assert.equal((await h1Request({ port: proxy.httpsPort, sni: 'w.test', path: '/ha', ca: pki.caPem })).text, 'primary');
});

test('weights with least-connections and client-ip', () => {
  const target = (name: string): Target => ({ url: name, available: true, leastConnInFlight: 0 }) as unknown as Target;
  const [a, b] = [target('a'), target('b')];
  const plan = (policy: UpstreamPlan['policy']): UpstreamPlan => ({
    targets: [a, b],
    next: 0,
    policy,
    sticky: undefined,
    weighted: { weights: [3, 1], backup: [false, false], credit: [0, 0] },
    hostHeader: 'preserve',
    connectTimeoutMs: 1000,
    responseTimeoutMs: 1000,
    tunnelIdleTimeoutMs: 0,
    maxRequests: 0,
    queueTimeoutMs: 0,
    queue: [],
    requestBufferBytes: 0,
  });
  const lc = plan('least-connections');
  a.leastConnInFlight = 2;
  b.leastConnInFlight = 1;
  assert.equal(pickTarget(lc, '127.0.0.1'), a, '2 in flight over weight 3 is less load than 1 over weight 1');
  a.leastConnInFlight = 4;
  assert.equal(pickTarget(lc, '127.0.0.1'), b);
  const ip = plan('client-ip');
  const counts = new Map<Target, number>();
  for (let i = 0; i < 4000; i++) {
    // The hash takes the client address as a string: distinct strings stand for distinct clients.
    const addr = `client-${i}`;
    const t1 = pickTarget(ip, addr)!;
    assert.equal(pickTarget(ip, addr), t1, 'the same client gets the same target');
    counts.set(t1, (counts.get(t1) ?? 0) + 1);
  }
  const share = (counts.get(a) ?? 0) / 4000;
  assert.ok(share > 0.7 && share < 0.8, `about three quarters of the clients on the weight-3 target, got ${share}`);
  (b as { available: boolean }).available = false;
  assert.equal(pickTarget(ip, '::1'), a);
});

test('weights and backups are checked, each problem with its path', () => {
  const issues = (targets: unknown[]): string[] => {
    const r = validateConfig({ hosts: { 'a.test': { tls: { cert: 'c', key: 'k' }, routes: [{ upstream: { targets } }] } } });
    return r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`);
  };
  assert.deepEqual(issues(['http://127.0.0.1:1', { url: 'http://127.0.0.1:2', weight: 5, backup: false }]), []);
  assert.match(issues([{ url: 'http://127.0.0.1:1', weight: 0 }])[0]!, /upstream\.targets\[0\]\.weight: Too small/);
  assert.match(issues([{ url: 'http://127.0.0.1:1', backup: true }])[0]!, /upstream\.targets: every target is a backup, so none would ever be used first/);
  assert.match(issues([{ url: 'localhost:1' }])[0]!, /upstream\.targets\[0\]\.url: expected a URL with scheme/);
  assert.match(issues([{ url: 'http://127.0.0.1:1', wieght: 2 }])[0]!, /targets\[0\]\.wieght: unknown key/);
});
