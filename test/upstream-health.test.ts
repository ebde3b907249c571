import { test } from 'node:test';
import assert from 'node:assert/strict';
import type http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { validateConfig } from '../src/config/load.js';
import { ERRORS } from '../src/errors.js';
import { TargetRegistry } from '../src/upstream/target.js';
import { makePki, startProxyFor, waitForLog, type TestProxy } from './helpers/proxy.js';
import { freePort, h1Request, h2Connect, h2Request, startUpstream, type SeenRequest } from './helpers/net.js';

type Upstream = Awaited<ReturnType<typeof startUpstream>>;

/** An upstream whose /healthz answers `health.status` (or never answers while `health.hang`), echoing every other request. */
async function checkedUpstream(): Promise<Upstream & { health: { status: number; hang: boolean }; checks: () => number; proxied: () => SeenRequest[] }> {
  const health = { status: 200, hang: false };
  const up = await startUpstream((req: http.IncomingMessage, res: http.ServerResponse) => {
    if (req.url === '/healthz') {
      if (health.hang) return;
      res.writeHead(health.status, { 'content-length': '2' });
      res.end('ok');
      return;
    }
    req.resume();
    req.on('end', () => {
      const body = JSON.stringify({ url: req.url });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
  });
  return {
    ...up,
    health,
    checks: () => up.seen.filter((r) => r.url === '/healthz').length,
    proxied: () => up.seen.filter((r) => r.url !== '/healthz'),
  };
}

/** Waits until a log line with `msg` for `upstream` appears after index `from`; returns it. */
function logLine(proxy: TestProxy, msg: string, upstream: string, from = 0, timeoutMs = 4000): Promise<Record<string, unknown>> {
  return waitForLog(proxy, `"${msg}" for ${upstream}`, (l) => l.msg === msg && l.upstream === upstream, from, timeoutMs);
}

const FAST = { path: '/healthz', interval: '150ms', timeout: '150ms', unhealthyAfter: 1, healthyAfter: 1 };

test('active checks take a failing target out of rotation and put it back once it passes', async (t) => {
  const pki = await makePki();
  const a = await checkedUpstream();
  const b = await checkedUpstream();
  const cert = await pki.issue('hc', ['hc.test']);
  const proxy = await startProxyFor(t, pki, { hosts: { 'hc.test': { tls: cert, routes: [{ path: '/', upstream: { targets: [a.url, b.url], healthCheck: FAST } }] } } }, [a.close, b.close]);
  const get = (path: string) => h1Request({ port: proxy.httpsPort, sni: 'hc.test', path, ca: pki.caPem });

  // Both healthy: round-robin.
  for (let i = 0; i < 4; i++) assert.equal((await get(`/both/${i}`)).status, 200);
  assert.equal(a.proxied().length, 2);
  assert.equal(b.proxied().length, 2);

  // The check is a GET of the path, with its own Host and User-Agent.
  const check = b.seen.find((r) => r.url === '/healthz')!;
  assert.equal(check.method, 'GET');
  assert.equal(check.headers.host, `127.0.0.1:${b.port}`);
  assert.equal(check.headers['user-agent'], 'portico-health-check');

  const mark = proxy.logs.length;
  b.health.status = 503;
  const down = await logLine(proxy, 'upstream target down', b.url, mark);
  assert.equal(down.check, 'active');
  assert.equal(down.reason, 'status 503');
  const bBefore = b.proxied().length;
  for (let i = 0; i < 6; i++) assert.equal((await get(`/one/${i}`)).status, 200);
  assert.equal(b.proxied().length, bBefore, 'an unhealthy target gets no requests');
  assert.equal(a.proxied().filter((r) => r.url.startsWith('/one/')).length, 6);

  b.health.status = 204;
  await logLine(proxy, 'upstream target up', b.url, mark);
  for (let i = 0; i < 4; i++) assert.equal((await get(`/back/${i}`)).status, 200);
  assert.equal(b.proxied().filter((r) => r.url.startsWith('/back/')).length, 2);
});

test('a check that gets no answer within its timeout fails; with every target down requests get 503 and reach none', async (t) => {
  const pki = await makePki();
  const a = await checkedUpstream();
  const b = await checkedUpstream();
  a.health.hang = true;
  b.health.status = 500;
  const cert = await pki.issue('hc', ['down.test']);
  const proxy = await startProxyFor(t, pki, { hosts: { 'down.test': { tls: cert, routes: [{ path: '/', upstream: { targets: [a.url, b.url], healthCheck: FAST } }] } } }, [a.close, b.close]);
  const downA = await logLine(proxy, 'upstream target down', a.url);
  assert.equal(downA.reason, 'no answer within 150 ms');
  await logLine(proxy, 'upstream target down', b.url);

  const res = await h1Request({ port: proxy.httpsPort, sni: 'down.test', path: '/x', ca: pki.caPem });
  assert.equal(res.status, 503);
  assert.equal(res.headers['x-portico-error'], 'PORTICO_NO_HEALTHY_UPSTREAM');
  assert.equal(res.text, `${ERRORS.PORTICO_NO_HEALTHY_UPSTREAM.message}\n`);
  const s = await h2Connect(proxy.httpsPort, 'down.test', pki.caPem);
  const h2res = await h2Request(s, { path: '/y' });
  s.close();
  assert.equal(h2res.status, 503);
  assert.equal(a.proxied().length + b.proxied().length, 0);
  const access = proxy.logs.find((l) => l.msg === 'access' && l.path === '/x');
  assert.equal(access?.error, 'PORTICO_NO_HEALTHY_UPSTREAM');
});

test('health survives a reload that keeps the upstream, and checks stop when the upstream leaves the config', async (t) => {
  const pki = await makePki();
  const a = await checkedUpstream();
  const b = await checkedUpstream();
  b.health.status = 503;
  const cert = await pki.issue('hc', ['reload.test', 'other.test']);
  const route = { path: '/', upstream: { targets: [a.url, b.url], healthCheck: FAST } };
  const proxy = await startProxyFor(t, pki, { hosts: { 'reload.test': { tls: cert, routes: [route] } } }, [a.close, b.close]);
  await logLine(proxy, 'upstream target down', b.url);

  // Another host added: the upstream is the same, so b stays out with no new checks needed.
  await proxy.reconfigure({ hosts: { 'reload.test': { tls: cert, routes: [route] }, 'other.test': { tls: cert, routes: [{ path: '/', upstream: a.url }] } } });
  for (let i = 0; i < 4; i++) assert.equal((await h1Request({ port: proxy.httpsPort, sni: 'reload.test', path: `/r/${i}`, ca: pki.caPem })).status, 200);
  assert.equal(b.proxied().length, 0);

  // The checked upstream removed: its checks stop.
  await proxy.reconfigure({ hosts: { 'reload.test': { tls: cert, routes: [{ path: '/', upstream: a.url }] } } });
  const aChecks = a.checks();
  const bChecks = b.checks();
  await sleep(600);
  assert.ok(a.checks() <= aChecks + 1, 'a check in flight at the reload may still land, no more');
  assert.ok(b.checks() <= bChecks + 1);
});

test('a reload that changes a down target\'s health settings keeps it out until its new checks pass', async (t) => {
  const pki = await makePki();
  const a = await checkedUpstream();
  const b = await checkedUpstream();
  b.health.status = 503;
  const cert = await pki.issue('hc', ['edit.test']);
  const config = (healthCheck: typeof FAST) => ({ hosts: { 'edit.test': { tls: cert, routes: [{ path: '/', upstream: { targets: [a.url, b.url], healthCheck } }] } } });
  const proxy = await startProxyFor(t, pki, config(FAST), [a.close, b.close]);
  await logLine(proxy, 'upstream target down', b.url);

  // New settings make new targets; with three failures needed to take b out, a fresh start would send it requests for a while.
  const from = proxy.logs.length;
  await proxy.reconfigure(config({ ...FAST, interval: '300ms', unhealthyAfter: 3 }));
  for (let i = 0; i < 4; i++) assert.equal((await h1Request({ port: proxy.httpsPort, sni: 'edit.test', path: `/e/${i}`, ca: pki.caPem })).status, 200);
  assert.deepEqual(b.proxied(), [], 'the known-dead target got no request after the reload');
  assert.equal(a.proxied().length, 4);

  // Its new checks bring it back once they pass (healthyAfter 1).
  b.health.status = 200;
  await logLine(proxy, 'upstream target up', b.url, from);
  for (let i = 0; i < 4; i++) await h1Request({ port: proxy.httpsPort, sni: 'edit.test', path: `/back/${i}`, ca: pki.caPem });
  assert.equal(b.proxied().length, 2);
});

test('TargetRegistry: a target made for new settings takes over the old one\'s passive verdict for its own failTimeout', () => {
  const reg = new TargetRegistry();
  const url = new URL('http://127.0.0.1:1');
  const passive = (failTimeoutMs: number) => ({ active: undefined, passive: { maxFails: 1, failTimeoutMs } });
  const old = reg.get(url, 'auto', undefined, 5000, passive(60_000));
  old.reportFailure('ECONNREFUSED');
  assert.equal(old.available, false);
  const next = reg.get(url, 'auto', undefined, 5000, passive(30_000));
  assert.notEqual(next, old);
  assert.equal(next.available, false, 'still out after the reload');
  assert.equal(next.health!.state.passiveDown, true);
  const other = reg.get(new URL('http://127.0.0.1:2'), 'auto', undefined, 5000, passive(30_000));
  assert.equal(other.available, true, 'another URL starts healthy');
  reg.closeAll();
});

test('passive health: a target that refuses connections is out for failTimeout, then tried again', async (t) => {
  const pki = await makePki();
  const alive = await startUpstream();
  const deadPort = await freePort();
  const dead = `http://127.0.0.1:${deadPort}`;
  const cert = await pki.issue('ph', ['passive.test', 'lone.test']);
  const proxy = await startProxyFor(
    t,
    pki,
    {
      hosts: {
        'passive.test': { tls: cert, routes: [{ path: '/', upstream: { targets: [dead, alive.url], passiveHealth: { maxFails: 1, failTimeout: '2s' } } }] },
        'lone.test': { tls: cert, routes: [{ path: '/', upstream: { targets: [`http://127.0.0.1:${deadPort}`], passiveHealth: { maxFails: 1, failTimeout: '10s' } } }] },
      },
    },
    [alive.close],
  );
  // POSTs carry a body, so a refused one is not retried on the next target: it answers 502.
  const post = (host: string, i: number) => h1Request({ port: proxy.httpsPort, sni: host, path: `/p/${i}`, method: 'POST', body: 'x', ca: pki.caPem });
  const statuses: number[] = [];
  for (let i = 0; i < 8; i++) statuses.push((await post('passive.test', i)).status);
  assert.deepEqual(statuses, [502, 200, 200, 200, 200, 200, 200, 200], 'after one refused connection the dead target gets no more requests');
  const down = await logLine(proxy, 'upstream target down', dead);
  assert.equal(down.check, 'passive');
  await logLine(proxy, 'upstream target up', dead, 0, 6000);
  // Back in rotation: the next requests try it again (and take it out again).
  const again: number[] = [];
  for (let i = 0; i < 4; i++) again.push((await post('passive.test', 100 + i)).status);
  assert.ok(again.includes(502), `the dead target is tried again after failTimeout: ${again.join(',')}`);

  // A lone target is never taken out: its clients keep getting 502, not 503.
  for (let i = 0; i < 3; i++) assert.equal((await post('lone.test', i)).status, 502);
});

test('bad health settings are refused with the path of the field', () => {
  const base = (upstream: unknown) => ({ hosts: { 'a.test': { tls: { cert: 'c.pem', key: 'k.pem' }, routes: [{ path: '/', upstream }] } } });
  const issues = (upstream: unknown): string[] => {
    const r = validateConfig(base(upstream));
    assert.equal(r.ok, false);
    return r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`);
  };
  const at = 'hosts["a.test"].routes[0].upstream';
  const one = (upstream: unknown): string => {
    const all = issues(upstream);
    assert.equal(all.length, 1, all.join('\n'));
    return all[0]!;
  };
  assert.ok(one({ targets: ['http://127.0.0.1:1'], healthCheck: { path: 'healthz' } }).startsWith(`${at}.healthCheck.path: a health check path must start with "/", such as "/healthz"`));
  assert.ok(one({ targets: ['http://127.0.0.1:1'], healthCheck: { path: '/h', interval: '10ms', timeout: '10ms' } }).startsWith(`${at}.healthCheck.interval: expected a duration of at least 100ms`));
  assert.ok(one({ targets: ['http://127.0.0.1:1'], healthCheck: { path: '/h', interval: '1s', timeout: '5s' } }).startsWith(`${at}.healthCheck.timeout: the health check "timeout" must not exceed its "interval"`));
  assert.match(issues({ targets: ['http://127.0.0.1:1'], healthCheck: { path: '/h', interval: 'soon' } })[0]!, /healthCheck\.interval: expected a duration/);
  assert.match(issues({ targets: ['http://127.0.0.1:1'], healthCheck: { path: '/h', expectStatus: 700 } })[0]!, /healthCheck\.expectStatus/);
  assert.match(issues({ targets: ['http://127.0.0.1:1'], passiveHealth: { maxFails: 0 } })[0]!, /passiveHealth\.maxFails/);
  assert.match(issues({ targets: ['http://127.0.0.1:1'], healthCheck: { path: '/h', host: 'a\r\nx: y' } })[0]!, /healthCheck\.host: expected a host name/);
  assert.match(issues({ targets: ['http://127.0.0.1:1'], healthCheck: { path: '/h', intervall: '1s' } })[0]!, /healthCheck.*intervall/);
  assert.equal(validateConfig(base({ targets: ['http://127.0.0.1:1'], healthCheck: { path: '/h' }, passiveHealth: {} })).ok, true);
});

test('an h2c target is checked over HTTP/2', async (t) => {
  const pki = await makePki();
  const seen: { path: string; authority: string; ua: string }[] = [];
  let status = 200;
  const server = http2.createServer();
  server.on('stream', (stream, headers) => {
    seen.push({ path: String(headers[':path']), authority: String(headers[':authority']), ua: String(headers['user-agent']) });
    stream.respond({ ':status': headers[':path'] === '/healthz' ? status : 200 });
    stream.end('ok');
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  const url = `h2c://127.0.0.1:${port}`;
  const cert = await pki.issue('h2c', ['h2c.test']);
  const proxy = await startProxyFor(t, pki, { hosts: { 'h2c.test': { tls: cert, routes: [{ path: '/', upstream: { targets: [url], healthCheck: { ...FAST, host: 'health.internal' } } }] } } }, [
    () => new Promise<void>((r) => server.close(() => r())),
  ]);
  assert.equal((await h1Request({ port: proxy.httpsPort, sni: 'h2c.test', path: '/a', ca: pki.caPem })).status, 200);
  status = 503;
  const down = await logLine(proxy, 'upstream target down', url);
  assert.equal(down.reason, 'status 503');
  const check = seen.find((s) => s.path === '/healthz')!;
  assert.equal(check.authority, 'health.internal');
  assert.equal(check.ua, 'portico-health-check');
  assert.equal((await h1Request({ port: proxy.httpsPort, sni: 'h2c.test', path: '/b', ca: pki.caPem })).status, 503);
  assert.equal(seen.filter((s) => s.path === '/b').length, 0);
});

test('an https target is checked over TLS with the upstream\'s CA and server name; a certificate it cannot verify fails the check', async (t) => {
  const pki = await makePki();
  const leaf = await pki.ca.issue(['up.internal']);
  let status = 200;
  const server = https.createServer({ cert: leaf.chain, key: leaf.key }, (req, res) => {
    res.writeHead(req.url === '/healthz' ? status : 200, { 'content-length': '2' });
    res.end('ok');
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  await writeFile(join(pki.dir, 'upstream-ca.pem'), pki.caPem);
  const cert = await pki.issue('tls', ['tls.test']);
  const verified = { targets: [url], protocol: 'http1' as const, tls: { ca: 'upstream-ca.pem', servername: 'up.internal' }, healthCheck: FAST };
  const wrongName = { ...verified, tls: { ca: 'upstream-ca.pem', servername: 'other.internal' } };
  const proxy = await startProxyFor(
    t,
    pki,
    { hosts: { 'tls.test': { tls: cert, routes: [{ path: '/', upstream: verified }, { path: '/wrong', upstream: wrongName }] } } },
    [() => new Promise<void>((r) => server.close(() => r()))],
  );
  // The certificate does not cover other.internal: the check fails on verification, not on status.
  const down = await logLine(proxy, 'upstream target down', url);
  assert.equal(down.reason, 'ERR_TLS_CERT_ALTNAME_INVALID');
  assert.equal((await h1Request({ port: proxy.httpsPort, sni: 'tls.test', path: '/ok', ca: pki.caPem })).status, 200);
  status = 500;
  const mark = proxy.logs.length;
  const second = await logLine(proxy, 'upstream target down', url, mark);
  assert.equal(second.reason, 'status 500');
  assert.equal((await h1Request({ port: proxy.httpsPort, sni: 'tls.test', path: '/ok', ca: pki.caPem })).status, 503);
});
