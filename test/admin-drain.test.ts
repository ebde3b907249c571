/** Draining upstream targets over the admin API (POST /targets/drain, /targets/enable), in one process and with workers. */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { readFile, writeFile } from 'node:fs/promises';
import type http from 'node:http';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import WebSocket, { WebSocketServer } from 'ws';
import type { ConfigInput } from '../src/config/schema.js';
import { DRAIN_BODY_EXAMPLE, parseDrainRequest } from '../src/admin/drain.js';
import { TargetRegistry } from '../src/upstream/target.js';
import { adminRequest, metricValue, type AdminResponse } from './helpers/admin.js';
import { spawnProxy } from './helpers/child-proxy.js';
import { freePort, h1Request, startUpstream, type TestResponse } from './helpers/net.js';
import { makePki, startProxy, startProxyFor, waitForLog, type TestPki, type TestProxy } from './helpers/proxy.js';

const TOKEN = 'd'.repeat(24) + '0123456789abcdef';

interface UpstreamStatus {
  url: string;
  available: boolean;
  healthy: boolean;
  drained: boolean;
  reason: string | undefined;
  openConnections: number;
}
interface ProcessStatus {
  pid: number;
  generation: number;
  upstreams: UpstreamStatus[];
  routes: { host: string; path: string; byClass: number[] }[];
}
interface DrainAnswer {
  target: string;
  drained: boolean;
  changed: boolean;
  upstreams: number;
  routes: string[];
  processes: { pid: number; found: boolean; changed: number; upstreams: number; routes: string[] }[];
}

/** An upstream that answers its name (`${name}-slow` for /slow, held until `release()`), and `health.status` for /health. */
async function namedUpstream(name: string) {
  let release: () => void = () => {};
  const released = new Promise<void>((r) => (release = r));
  const health = { status: 200 };
  const up = await startUpstream((req, res) => {
    req.resume();
    if (req.url === '/health') {
      res.writeHead(health.status);
      res.end();
    } else if (req.url === '/slow') {
      void released.then(() => res.end(`${name}-slow`));
    } else {
      res.end(name);
    }
  });
  /** Requests other than health checks. */
  const proxied = (): number => up.seen.filter((r) => r.url !== '/health').length;
  const checks = (): number => up.seen.filter((r) => r.url === '/health').length;
  return { ...up, name, health, release, proxied, checks };
}

/** A PKI, an admin token file and an admin port: what every test here needs before its proxy starts. */
async function adminSetup(): Promise<{ pki: TestPki; adminPort: number; cert: { cert: string; key: string }; admin: { port: number; tokenFile: string } }> {
  const pki = await makePki();
  await writeFile(join(pki.dir, 'admin.token'), `${TOKEN}\n`);
  const adminPort = await freePort();
  const cert = await pki.issue('drain', ['drain.test']);
  return { pki, adminPort, cert, admin: { port: adminPort, tokenFile: 'admin.token' } };
}

function drain(port: number, body: unknown, path = '/targets/drain'): Promise<AdminResponse> {
  return adminRequest(port, 'POST', path, { token: TOKEN, body });
}
const enable = (port: number, body: unknown): Promise<AdminResponse> => drain(port, body, '/targets/enable');

async function status(port: number): Promise<ProcessStatus[]> {
  const r = await adminRequest(port, 'GET', '/status', { token: TOKEN });
  assert.equal(r.status, 200, r.text);
  return (JSON.parse(r.text) as { processes: ProcessStatus[] }).processes;
}

/** adminSetup() with upstreams a and b, closed (and the PKI removed) after the test: for tests that start and stop their proxies themselves. */
async function ownSetup(t: TestContext) {
  const s = await adminSetup();
  const a = await namedUpstream('a');
  const b = await namedUpstream('b');
  t.after(async () => {
    await a.close();
    await b.close();
    await s.pki.cleanup();
  });
  return { ...s, a, b };
}

/** The processes' status once `ok` holds for it (two workers answering, say), asking every 100 ms for up to 20 s. */
async function untilStatus(adminPort: number, what: string, ok: (ps: ProcessStatus[]) => boolean): Promise<ProcessStatus[]> {
  let last: ProcessStatus[] = [];
  for (let i = 0; i < 200; i++) {
    const r = await adminRequest(adminPort, 'GET', '/status', { token: TOKEN }).catch(() => undefined);
    if (r?.status === 200) last = (JSON.parse(r.text) as { processes: ProcessStatus[] }).processes;
    if (ok(last)) return last;
    await sleep(100);
  }
  throw new Error(`${what}: ${JSON.stringify(last.map((p) => ({ pid: p.pid, upstreams: p.upstreams })))}`);
}

function get(proxy: { httpsPort: number }, pki: TestPki, path: string, headers: http.OutgoingHttpHeaders = {}): Promise<TestResponse> {
  return h1Request({ port: proxy.httpsPort, sni: 'drain.test', path, headers, ca: pki.caPem });
}

/** `n` requests to `path`, each on a new connection; their bodies. */
async function bodies(proxy: { httpsPort: number }, pki: TestPki, path: string, n: number): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const r = await get(proxy, pki, `${path}`);
    assert.equal(r.status, 200, r.text);
    out.push(r.text);
  }
  return out;
}

/** The first log line after `from` with this message (and upstream), waiting for it. */
function logLine(proxy: TestProxy, msg: string, from = 0): Promise<Record<string, unknown>> {
  return waitForLog(proxy, `"${msg}"`, (l) => l['msg'] === msg, from);
}

test('the drain endpoints need the token, POST, and a JSON body naming a target of the config', async (t) => {
  const { pki, adminPort, cert, admin } = await adminSetup();
  const a = await namedUpstream('a');
  const b = await namedUpstream('b');
  const proxy = await startProxyFor(t, pki, { admin, hosts: { 'drain.test': { tls: cert, routes: [{ path: '/', upstream: [a.url, b.url] }] } } }, [a.close, b.close]);

  for (const token of [undefined, 'x'.repeat(40)]) {
    const r = await adminRequest(adminPort, 'POST', '/targets/drain', { token, body: { target: a.url } });
    assert.equal(r.status, 401);
    assert.equal(r.headers['www-authenticate'], 'Bearer realm="portico-admin"');
  }
  assert.ok((await status(adminPort))[0]!.upstreams.every((u) => !u.drained && u.available), 'a refused request drains nothing');

  for (const path of ['/targets/drain', '/targets/enable']) {
    const r = await adminRequest(adminPort, 'GET', path, { token: TOKEN });
    assert.equal(r.status, 405, path);
    assert.equal(r.headers.allow, 'POST');
  }
  const listed = JSON.parse((await adminRequest(adminPort, 'GET', '/nope', { token: TOKEN })).text) as { endpoints: string[] };
  assert.ok(listed.endpoints.includes('POST /targets/drain') && listed.endpoints.includes('POST /targets/enable'), 'the 404 lists the new endpoints');

  // The example the messages give is the admin module's own (an operator's target, not one a test dials).
  const example = DRAIN_BODY_EXAMPLE.replace(/[.*+?^$(){}|[\]\\/]/g, '\\$&');
  const bad: [unknown, RegExp][] = [
    ['', new RegExp(`^the request has no body; send JSON such as ${example}$`)],
    ['{"target": ', /^the request body is not valid JSON \(.+\); send JSON such as \{"target"/],
    [[a.url], /^the request body is an array, not a JSON object; send JSON such as/],
    [{ url: a.url }, /^unknown key "url" in the request body; it takes one key, "target"/],
    [{}, /^the request body has no "target"; send the target's URL as the config writes it: \{"target"/],
    [{ target: 8080 }, /^"target" must be a string, the target's URL as the config writes it, not a number/],
    [{ target: '127.0.0.1:8080' }, /^"target" "127\.0\.0\.1:8080" has no scheme; write the target URL as the config does, with http:\/\/, https:\/\/ or h2c:\/\//],
    [{ target: 'tcp://127.0.0.1:8080' }, /^"target" "tcp:\/\/127\.0\.0\.1:8080" is not an upstream target URL: expected scheme http:\/\/, https:\/\/ or h2c:\/\//],
    [{ target: 'unix:run/app.sock' }, /^"target" "unix:run\/app\.sock" is not a Unix socket target; write it as the config does, such as "unix:\/run\/app\.sock"/],
    [{ target: `${a.url}/api` }, /^"target" ".+\/api" has more than a server: a target URL is scheme, host and port only/],
    [{ target: 'http://' }, /^"target" "http:\/\/" is not a URL; write the target as the config does/],
  ];
  for (const [body, message] of bad) {
    const r = await drain(adminPort, body);
    assert.equal(r.status, 400, `${JSON.stringify(body)}: ${r.text}`);
    assert.match((JSON.parse(r.text) as { error: string }).error, message);
  }
  const huge = await drain(adminPort, JSON.stringify({ target: a.url, pad: 'x'.repeat(20_000) }));
  assert.equal(huge.status, 413);
  assert.match(huge.text, /the request body is over 16384 bytes/);

  // A URL the config does not have: 422 naming it and listing the targets there are; nothing changes.
  for (const endpoint of ['/targets/drain', '/targets/enable']) {
    const unknown = await drain(adminPort, { target: 'http://127.0.0.1:1' }, endpoint);
    assert.equal(unknown.status, 422, unknown.text);
    const body = JSON.parse(unknown.text) as { error: string; target: string; targets: string[] };
    assert.match(body.error, /^no upstream target http:\/\/127\.0\.0\.1:1 in the current config, so nothing was (drained|enabled); send one of "targets"/);
    assert.equal(body.target, 'http://127.0.0.1:1');
    assert.deepEqual(body.targets, [a.url, b.url].sort());
  }
  assert.ok((await status(adminPort))[0]!.upstreams.every((u) => !u.drained), 'nothing drained');
  assert.deepEqual(new Set(await bodies(proxy, pki, '/', 4)), new Set(['a', 'b']), 'both still in rotation');
});

test('a drain request names a target as the config does: the same URL however it is spelled', () => {
  const registry = new TargetRegistry();
  // [as the config writes it, as an operator might send it]
  const pairs: [string, string][] = [
    ['http://127.0.0.1:8080', 'http://127.0.0.1:8080/'],
    ['http://App.Example:80', 'HTTP://app.example'],
    ['https://[::1]:8443', 'https://[0:0:0:0:0:0:0:1]:8443'],
    // h2c: is no WHATWG special scheme: its host keeps its case, in the config as here.
    ['h2c://grpc.internal:50051', 'h2c://grpc.internal:50051/'],
    ['unix:/run/app.sock', 'unix:/run/app.sock'],
  ];
  for (const [configured, sent] of pairs) {
    const parsed = parseDrainRequest(JSON.stringify({ target: sent }));
    assert.ok(parsed.ok, `${sent}: ${parsed.ok ? '' : parsed.error}`);
    assert.equal(parsed.url, registry.get(new URL(configured), 'auto', undefined).url, `${sent} names ${configured}`);
  }
  registry.closeAll();
});

test('a drained target gets no new requests while one already on it finishes; with every target drained, 503; enable puts it back', async (t) => {
  const { pki, adminPort, cert, admin } = await adminSetup();
  const a = await namedUpstream('a');
  const b = await namedUpstream('b');
  const proxy = await startProxyFor(
    t,
    pki,
    { admin, hosts: { 'drain.test': { tls: cert, routes: [{ path: '/', upstream: [a.url, b.url] }, { path: '/slow', upstream: a.url }] } } },
    [a.close, b.close],
  );
  assert.deepEqual(new Set(await bodies(proxy, pki, '/', 4)), new Set(['a', 'b']), 'both in rotation before the drain');

  // A request in flight on a when it is drained.
  const slow = get(proxy, pki, '/slow');
  for (let i = 0; i < 200 && !a.seen.some((r) => r.url === '/slow'); i++) await sleep(10);
  assert.ok(a.seen.some((r) => r.url === '/slow'), 'the slow request reached a');

  const mark = proxy.logs.length;
  // Written with a trailing slash and upper case: the same target once normalised as the config's URLs are.
  const r = await drain(adminPort, { target: `${a.url.replace('http://', 'HTTP://')}/` });
  assert.equal(r.status, 200, r.text);
  const answer = JSON.parse(r.text) as DrainAnswer;
  assert.equal(answer.target, a.url);
  assert.equal(answer.drained, true);
  assert.equal(answer.changed, true);
  assert.equal(answer.upstreams, 2);
  assert.deepEqual(answer.routes, ['drain.test /', 'drain.test /slow']);
  assert.deepEqual(answer.processes.map((p) => [p.pid, p.found, p.changed]), [[process.pid, true, 1]]);
  const line = await logLine(proxy, 'upstream target drained over the admin API', mark);
  assert.equal(line['level'], 30, 'info');
  assert.equal(line['upstream'], a.url);
  assert.equal(line['remote'], '127.0.0.1', 'who asked');

  const before = a.proxied();
  assert.deepEqual(await bodies(proxy, pki, '/', 8), new Array(8).fill('b'), 'every new request goes to b');
  assert.equal(a.proxied(), before, 'a got none of them');
  const none = await get(proxy, pki, '/slow');
  assert.equal(none.status, 503, 'the route whose only target is drained');
  assert.equal(none.headers['x-portico-error'], 'PORTICO_NO_HEALTHY_UPSTREAM');
  assert.equal(a.proxied(), before, 'and nothing went upstream');

  a.release();
  const finished = await slow;
  assert.equal(finished.status, 200, 'the request already on the drained target runs to its end');
  assert.equal(finished.text, 'a-slow');

  // What an operator waits for before the deploy: no connection left to a (idle ones close within about 5 s).
  let open = -1;
  for (let i = 0; i < 80 && open !== 0; i++) {
    open = (await status(adminPort))[0]!.upstreams.find((u) => u.url === a.url)!.openConnections;
    if (open !== 0) await sleep(100);
  }
  assert.equal(open, 0, 'its connections close once its last response is done');

  const [p] = await status(adminPort);
  const byUrl = new Map(p!.upstreams.map((u) => [u.url, u]));
  assert.deepEqual(byUrl.get(a.url), { ...byUrl.get(a.url)!, available: false, healthy: true, drained: true });
  assert.deepEqual(byUrl.get(b.url), { ...byUrl.get(b.url)!, available: true, healthy: true, drained: false });
  const page = (await adminRequest(adminPort, 'GET', '/metrics', { token: TOKEN })).text;
  assert.match(page, /^# TYPE portico_upstream_drained gauge$/m);
  assert.equal(metricValue(page, `portico_upstream_drained{upstream="${a.url}"}`), 1);
  assert.equal(metricValue(page, `portico_upstream_drained{upstream="${b.url}"}`), 0);
  assert.equal(metricValue(page, `portico_upstream_up{upstream="${a.url}"}`), 1, 'up tells health, drained or not');

  const again = JSON.parse((await drain(adminPort, { target: a.url })).text) as DrainAnswer;
  assert.equal(again.changed, false, 'draining a drained target changes nothing');

  const back = await enable(adminPort, { target: a.url });
  assert.equal(back.status, 200, back.text);
  assert.deepEqual([(JSON.parse(back.text) as DrainAnswer).drained, (JSON.parse(back.text) as DrainAnswer).changed], [false, true]);
  assert.equal((await logLine(proxy, 'upstream target enabled over the admin API', mark))['upstream'], a.url);
  assert.deepEqual(new Set(await bodies(proxy, pki, '/', 4)), new Set(['a', 'b']), 'both in rotation again');
  assert.equal((await get(proxy, pki, '/other')).status, 200);
  const slowAgain = await get(proxy, pki, '/slow');
  assert.equal(slowAgain.text, 'a-slow');
  assert.equal((JSON.parse((await enable(adminPort, { target: a.url })).text) as DrainAnswer).changed, false);
});

test('a drain holds across reloads and health checks; a reload that removes the URL forgets its drain', async (t) => {
  const { pki, adminPort, cert, admin } = await adminSetup();
  const a = await namedUpstream('a');
  const b = await namedUpstream('b');
  const config = (targets: string[], healthCheck?: { path: string; interval: string; timeout: string; unhealthyAfter: number; healthyAfter: number }): Omit<ConfigInput, 'listen'> => ({
    admin,
    hosts: { 'drain.test': { tls: cert, routes: [{ path: '/', upstream: healthCheck === undefined ? targets : { targets, healthCheck } }] } },
  });
  const proxy = await startProxyFor(t, pki, config([a.url, b.url]), [a.close, b.close]);
  assert.equal((await drain(adminPort, { target: a.url })).status, 200);

  // New health settings make new targets in the registry: they are drained too, and checked all the same.
  const fast = { path: '/health', interval: '100ms', timeout: '100ms', unhealthyAfter: 1, healthyAfter: 1 };
  await proxy.reconfigure(config([a.url, b.url], fast));
  const before = a.proxied();
  assert.deepEqual(await bodies(proxy, pki, '/', 6), new Array(6).fill('b'), 'still drained after the reload');
  assert.equal(a.proxied(), before);
  const checks = a.checks();
  for (let i = 0; i < 100 && a.checks() < checks + 2; i++) await sleep(20);
  assert.ok(a.checks() >= checks + 2, 'health checks keep running on a drained target');

  // Health and drain are apart: down and up again by health, it stays drained.
  const mark = proxy.logs.length;
  a.health.status = 503;
  await logLine(proxy, 'upstream target down', mark);
  let up = (await status(adminPort))[0]!.upstreams.find((u) => u.url === a.url)!;
  assert.deepEqual([up.healthy, up.drained, up.available], [false, true, false]);
  assert.match(up.reason ?? '', /health check \/health: status 503/);
  assert.equal(metricValue((await adminRequest(adminPort, 'GET', '/metrics', { token: TOKEN })).text, `portico_upstream_up{upstream="${a.url}"}`), 0);
  a.health.status = 200;
  await logLine(proxy, 'upstream target up', mark);
  up = (await status(adminPort))[0]!.upstreams.find((u) => u.url === a.url)!;
  assert.deepEqual([up.healthy, up.drained, up.available], [true, true, false], 'healthy again, still drained');
  assert.deepEqual(await bodies(proxy, pki, '/', 4), new Array(4).fill('b'));
  assert.equal(a.proxied(), before);

  // A reload without the URL forgets its drain (logged); when it comes back it is in rotation.
  const gone = proxy.logs.length;
  await proxy.reconfigure(config([b.url]));
  const forgot = await logLine(proxy, 'drained upstream target left the config, its drain is dropped', gone);
  assert.deepEqual(forgot['upstreams'], [a.url]);
  const missing = await enable(adminPort, { target: a.url });
  assert.equal(missing.status, 422);
  assert.deepEqual((JSON.parse(missing.text) as { targets: string[] }).targets, [b.url]);
  await proxy.reconfigure(config([a.url, b.url]));
  assert.deepEqual(new Set(await bodies(proxy, pki, '/', 4)), new Set(['a', 'b']), 'the URL came back in rotation');
});

/** A WebSocket echo server on an upstream's own HTTP server; it says its name first. */
function echoWebSockets(up: { server: http.Server; name: string }): WebSocketServer {
  const wss = new WebSocketServer({ server: up.server });
  wss.on('connection', (ws) => {
    ws.send(up.name);
    ws.on('message', (data) => ws.send(`${up.name}:${String(data)}`));
  });
  return wss;
}

function openWs(proxy: TestProxy, pki: TestPki, cookie: string): { ws: WebSocket; first: Promise<string> } {
  const options = { servername: 'drain.test', headers: { host: 'drain.test', cookie }, ca: pki.caPem } as WebSocket.ClientOptions;
  const ws = new WebSocket(`wss://127.0.0.1:${proxy.httpsPort}/chat`, options);
  const first = once(ws, 'message').then(([data]) => String(data));
  return { ws, first };
}

test('sticky clients, retries to the next target and WebSocket upgrades skip a drained target; an open WebSocket on it stays', async (t: TestContext) => {
  const { pki, adminPort, cert, admin } = await adminSetup();
  const a = await namedUpstream('a');
  const b = await namedUpstream('b');
  const wsA = echoWebSockets(a);
  const wsB = echoWebSockets(b);
  const dead = `http://127.0.0.1:${await freePort()}`;
  const sticky = { targets: [a.url, b.url], loadBalancing: 'cookie' as const, stickyCookie: 'srv' };
  const proxy = await startProxyFor(
    t,
    pki,
    { admin, hosts: { 'drain.test': { tls: cert, routes: [{ path: '/', upstream: sticky }, { path: '/retry', upstream: [dead, a.url] }] } } },
    [() => wsA.close(), () => wsB.close(), a.close, b.close],
  );
  const valueOf = (url: string): string => createHash('sha256').update(url).digest('base64url').slice(0, 16);
  const onA = `srv=${valueOf(a.url)}`;
  const cookieSet = (r: TestResponse): string | undefined => ((r.headers['set-cookie'] as string[] | undefined) ?? []).find((c) => c.startsWith('srv='))?.split(';')[0];

  assert.equal((await get(proxy, pki, '/', { cookie: onA })).text, 'a', 'the cookie keeps the client on a');
  const retried = await get(proxy, pki, '/retry');
  assert.deepEqual([retried.status, retried.text], [200, 'a'], 'before the drain, a refused connection is retried on a');
  const open = openWs(proxy, pki, onA);
  assert.equal(await open.first, 'a');

  assert.equal((await drain(adminPort, { target: a.url })).status, 200);
  const before = a.proxied();
  const moved = await get(proxy, pki, '/', { cookie: onA });
  assert.equal(moved.text, 'b', 'a sticky client of a drained target moves');
  assert.equal(cookieSet(moved), `srv=${valueOf(b.url)}`, 'and its cookie now names b');
  const noRetry = await get(proxy, pki, '/retry');
  assert.equal(noRetry.status, 502, 'the retry skips the drained target, so the refused connection is the answer');
  assert.equal(noRetry.headers['x-portico-error'], 'PORTICO_UPSTREAM_UNREACHABLE');
  const fresh = openWs(proxy, pki, onA);
  assert.equal(await fresh.first, 'b', 'a new upgrade goes to b, cookie or not');
  assert.equal(a.proxied(), before, 'a got no new request or upgrade');

  open.ws.send('still here');
  assert.equal(String((await once(open.ws, 'message'))[0]), 'a:still here', 'the WebSocket already on a runs on');
  open.ws.close();
  fresh.ws.close();
  await Promise.all([once(open.ws, 'close'), once(fresh.ws, 'close')]);

  assert.equal((await enable(adminPort, { target: a.url })).status, 200);
  assert.equal((await get(proxy, pki, '/', { cookie: onA })).text, 'a', 'enabled: the cookie keeps the client on a again');
  assert.equal((await get(proxy, pki, '/retry')).text, 'a');
});

test('with workers, the primary drains in every worker, a restarted worker starts drained, and a reload keeps it', async (t) => {
  const { pki, adminPort, cert, admin, a, b } = await ownSetup(t);
  const config = (targets: string[]): Omit<ConfigInput, 'listen'> => ({ workers: 2, admin, hosts: { 'drain.test': { tls: cert, routes: [{ path: '/', upstream: targets }] } } });
  const proxy = await spawnProxy(pki, config([a.url, b.url]), { startTimeoutMs: 20_000 });
  t.after(() => proxy.kill());

  const until = (what: string, ok: (ps: ProcessStatus[]) => boolean): Promise<ProcessStatus[]> => untilStatus(adminPort, what, ok);
  const served = (p: ProcessStatus): number => p.routes.find((r) => r.host === 'drain.test' && r.path === '/')?.byClass[2] ?? 0;
  const drainedIn = (p: ProcessStatus, url: string): boolean | undefined => p.upstreams.find((u) => u.url === url)?.drained;

  const first = await until('both workers answer', (ps) => ps.length === 2);
  const r = await drain(adminPort, { target: a.url });
  assert.equal(r.status, 200, r.text);
  const answer = JSON.parse(r.text) as DrainAnswer;
  assert.deepEqual(answer.processes.map((p) => p.pid).sort(), first.map((p) => p.pid).sort(), 'each worker answered');
  assert.ok(answer.processes.every((p) => p.found && p.changed === 1 && p.routes[0] === 'drain.test /'));

  // Each request on a new connection, spread over the workers: all go to b, and both workers served some.
  const n = 16;
  assert.deepEqual(await bodies(proxy, pki, '/', n), new Array(n).fill('b'));
  assert.equal(a.proxied(), 0);
  let ps = await status(adminPort);
  assert.ok(ps.every((p) => served(p) > 0), `both workers served: ${ps.map(served).join(', ')}`);
  assert.ok(ps.every((p) => drainedIn(p, a.url) === true && drainedIn(p, b.url) === false));
  const page = (await adminRequest(adminPort, 'GET', '/metrics', { token: TOKEN })).text;
  assert.equal(metricValue(page, `portico_upstream_drained{upstream="${a.url}"}`), 1, 'drained in every worker');

  // A worker that dies is restarted drained: it asked its primary before its first Plan.
  const victim = ps[0]!.pid;
  process.kill(victim, 'SIGKILL');
  ps = await until('a new worker answers', (s) => s.length === 2 && !s.some((p) => p.pid === victim));
  const newcomer = ps.find((p) => !first.some((f) => f.pid === p.pid))!;
  assert.equal(drainedIn(newcomer, a.url), true, 'the restarted worker has the drain');
  assert.deepEqual(await bodies(proxy, pki, '/', n), new Array(n).fill('b'));
  assert.equal(a.proxied(), 0, 'no worker sent a anything');
  assert.ok(served((await status(adminPort)).find((p) => p.pid === newcomer.pid)!) > 0, 'the new worker served some of them');

  // A reload keeps it in every worker.
  const reload = await adminRequest(adminPort, 'POST', '/reload', { token: TOKEN });
  assert.equal(reload.status, 200, reload.text);
  ps = await status(adminPort);
  assert.ok(ps.every((p) => p.generation === 2 && drainedIn(p, a.url) === true));
  assert.deepEqual(await bodies(proxy, pki, '/', 6), new Array(6).fill('b'));

  // Enable: both again, in every worker.
  assert.equal((await enable(adminPort, { target: a.url })).status, 200);
  assert.deepEqual(new Set(await bodies(proxy, pki, '/', n)), new Set(['a', 'b']));
  assert.ok((await status(adminPort)).every((p) => drainedIn(p, a.url) === false));

  // A reload that removes a drained URL makes the primary forget it too: a worker restarted after the URL
  // is back starts with it in rotation.
  assert.equal((await drain(adminPort, { target: a.url })).status, 200);
  await proxy.writeConfig(config([b.url]));
  assert.equal((await adminRequest(adminPort, 'POST', '/reload', { token: TOKEN })).status, 200);
  await proxy.writeConfig(config([a.url, b.url]));
  assert.equal((await adminRequest(adminPort, 'POST', '/reload', { token: TOKEN })).status, 200);
  ps = await status(adminPort);
  assert.ok(ps.every((p) => drainedIn(p, a.url) === false), 'back in rotation in the running workers');
  const second = ps[0]!.pid;
  process.kill(second, 'SIGKILL');
  ps = await until('another new worker answers', (s) => s.length === 2 && !s.some((p) => p.pid === second));
  assert.ok(ps.every((p) => drainedIn(p, a.url) === false), 'and in the restarted one');
});

/** The drained URLs admin.stateFile holds, once it holds `want` (it is written just after the change). */
async function stateFileHolds(file: string, want: readonly string[]): Promise<void> {
  let last = '';
  for (let i = 0; i < 100; i++) {
    last = await readFile(file, 'utf8').catch(() => '');
    let drained: unknown;
    try {
      drained = (JSON.parse(last) as { drained?: unknown }).drained;
    } catch {
      drained = undefined;
    }
    if (JSON.stringify(drained) === JSON.stringify(want)) return;
    await sleep(20);
  }
  throw new Error(`${file} holds ${last}, not ${JSON.stringify(want)}`);
}

test('admin.stateFile keeps drains across a restart: written on drain, enable and a reload that drops the target; read before the first request; an unusable file is logged and replaced', async (t) => {
  const { pki, adminPort, cert, admin, a, b } = await ownSetup(t);
  const stateFile = join(pki.dir, 'drains.json');
  const config = (targets: string[]): Omit<ConfigInput, 'listen'> => ({ admin: { ...admin, stateFile: 'drains.json' }, hosts: { 'drain.test': { tls: cert, routes: [{ path: '/', upstream: targets }] } } });
  let proxy = await startProxy(pki, config([a.url, b.url]));
  t.after(() => proxy.stop());
  assert.equal((await drain(adminPort, { target: a.url })).status, 200);
  await stateFileHolds(stateFile, [a.url]);
  await proxy.stop();

  // Restarted: a is drained before the first request.
  proxy = await startProxy(pki, config([a.url, b.url]));
  const line = proxy.logs.find((l) => l['msg'] === 'upstream targets drained before the restart stay drained');
  assert.deepEqual(line?.['drained'], [a.url]);
  assert.deepEqual(await bodies(proxy, pki, '/', 6), new Array(6).fill('b'), 'every request goes to b');
  assert.equal(a.proxied(), 0);
  assert.equal((await status(adminPort))[0]!.upstreams.find((u) => u.url === a.url)?.drained, true);

  // Enabled, and restarted again: in rotation.
  assert.equal((await enable(adminPort, { target: a.url })).status, 200);
  await stateFileHolds(stateFile, []);
  await proxy.stop();
  proxy = await startProxy(pki, config([a.url, b.url]));
  assert.deepEqual(new Set(await bodies(proxy, pki, '/', 6)), new Set(['a', 'b']), 'both in rotation');

  // A reload that drops a drained target forgets its drain, on disk too: it comes back in rotation later.
  assert.equal((await drain(adminPort, { target: a.url })).status, 200);
  await stateFileHolds(stateFile, [a.url]);
  await proxy.reconfigure(config([b.url]));
  await stateFileHolds(stateFile, []);
  await proxy.stop();

  // A file that is not what Portico writes: logged with its path and reason, no target drained, replaced at the next change.
  await writeFile(stateFile, '{"drained": "http://x"');
  proxy = await startProxy(pki, config([a.url, b.url]));
  const bad = proxy.logs.find((l) => l['msg'] === 'admin.stateFile not read, starting with no target drained');
  assert.equal(bad?.['stateFile'], stateFile);
  assert.equal(bad?.['reason'], 'it is not JSON');
  assert.equal(bad?.['level'], 50);
  assert.deepEqual(new Set(await bodies(proxy, pki, '/', 6)), new Set(['a', 'b']));
  assert.equal((await drain(adminPort, { target: b.url })).status, 200);
  await stateFileHolds(stateFile, [b.url]);
});

test('with workers, admin.stateFile is kept by the primary: a drain survives a restart of the whole Portico, in every worker', async (t) => {
  const { pki, adminPort, cert, admin, a, b } = await ownSetup(t);
  const stateFile = join(pki.dir, 'drains.json');
  const config: Omit<ConfigInput, 'listen'> = { workers: 2, admin: { ...admin, stateFile: 'drains.json' }, hosts: { 'drain.test': { tls: cert, routes: [{ path: '/', upstream: [a.url, b.url] }] } } };
  const workersAnswer = (): Promise<ProcessStatus[]> => untilStatus(adminPort, 'both workers answer', (ps) => ps.length === 2);
  let proxy = await spawnProxy(pki, config, { startTimeoutMs: 20_000 });
  t.after(() => proxy.kill());
  await workersAnswer();
  assert.equal((await drain(adminPort, { target: a.url })).status, 200);
  await stateFileHolds(stateFile, [a.url]);
  await proxy.kill();

  proxy = await spawnProxy(pki, config, { startTimeoutMs: 20_000 });
  const ps = await workersAnswer();
  assert.ok(ps.every((p) => p.upstreams.find((u) => u.url === a.url)?.drained === true), 'drained in both workers');
  assert.deepEqual(await bodies(proxy, pki, '/', 8), new Array(8).fill('b'));
  assert.equal(a.proxied(), 0);
  assert.equal((await enable(adminPort, { target: a.url })).status, 200);
  await stateFileHolds(stateFile, []);
});
