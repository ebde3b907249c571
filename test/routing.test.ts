import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { ERRORS } from '../src/errors.js';
import { makePki, startProxy, type TestPki, type TestProxy } from './helpers/proxy.js';
import { freePort, h1Request, h2Connect, h2Request, startUpstream } from './helpers/net.js';

type Upstream = Awaited<ReturnType<typeof startUpstream>>;
let pki: TestPki;
let proxy: TestProxy;
let deadPort: number;
const up: Record<'root' | 'api' | 'apiV2' | 'strip' | 'add' | 'target' | 'literal' | 'rr1' | 'rr2' | 'only' | 'plain' | 'retried', Upstream> = {} as never;

before(async () => {
  pki = await makePki();
  for (const k of ['root', 'api', 'apiV2', 'strip', 'add', 'target', 'literal', 'rr1', 'rr2', 'only', 'plain', 'retried'] as const) up[k] = await startUpstream();
  deadPort = await freePort(); // nothing listens here: connections are refused
  const cert = await pki.issue('r', ['r.test', 'api-only.test', 'plain.test']);
  proxy = await startProxy(pki, {
    hosts: {
      'r.test': {
        tls: cert,
        routes: [
          { path: '/', upstream: up.root.url },
          { path: '/api', upstream: up.api.url },
          { path: '/api/v2/', upstream: up.apiV2.url },
          { path: '/strip', stripPrefix: true, upstream: up.strip.url },
          { path: '/add', stripPrefix: true, addPrefix: '/v1', upstream: up.add.url },
          { path: '/keep', addPrefix: '/base/', upstream: up.add.url },
          { path: '/host-target', upstream: { targets: [up.target.url], hostHeader: 'target' } },
          { path: '/host-literal', upstream: { targets: [up.literal.url], hostHeader: 'internal.svc' } },
          { path: '/host-retry', upstream: { targets: [`http://127.0.0.1:${deadPort}`, up.retried.url], hostHeader: 'target' } },
          { path: '/rr', upstream: [up.rr1.url, up.rr2.url] },
          { path: '/skip', upstream: [`http://127.0.0.1:${deadPort}`, up.only.url] },
          { path: '/dead', upstream: `http://127.0.0.1:${deadPort}` },
        ],
      },
      'api-only.test': { tls: cert, routes: [{ path: '/api', upstream: up.api.url }] },
      'plain.test': { tls: cert, plainHttp: 'serve', routes: [{ path: '/', upstream: up.plain.url }] },
    },
  });
});

after(async () => {
  await proxy?.stop();
  for (const u of Object.values(up)) await u.close();
  await pki?.cleanup();
});

/** GETs `path` on r.test over HTTP/1.1 and returns status and what the upstream echoed. */
async function get(path: string, host = 'r.test'): Promise<{ status: number; url?: string; host?: string; text: string; headers: http.IncomingHttpHeaders }> {
  const res = await h1Request({ port: proxy.httpsPort, sni: host, path, ca: pki.caPem });
  let echo: { url?: string; headers?: { host?: string } } = {};
  if (res.headers['content-type'] === 'application/json') echo = JSON.parse(res.text) as typeof echo;
  return { status: res.status, url: echo.url, host: echo.headers?.host, text: res.text, headers: res.headers };
}

test('the longest matching path prefix picks the route', async () => {
  assert.equal((await get('/api/v2/users')).url, '/api/v2/users');
  assert.equal(up.apiV2.seen.at(-1)?.url, '/api/v2/users');
  assert.equal(up.apiV2.seen.length, 1);
  await get('/api/v1/users');
  assert.equal(up.api.seen.at(-1)?.url, '/api/v1/users');
  await get('/api/v2');
  assert.equal(up.apiV2.seen.at(-1)?.url, '/api/v2');
  await get('/other');
  assert.equal(up.root.seen.at(-1)?.url, '/other');
});

test('a route prefix matches whole path segments only', async () => {
  const rootBefore = up.root.seen.length;
  await get('/apix');
  await get('/api-docs/x');
  assert.equal(up.root.seen.length, rootBefore + 2);
  assert.deepEqual(up.root.seen.slice(-2).map((r) => r.url), ['/apix', '/api-docs/x']);
  const apiBefore = up.api.seen.length;
  await get('/api');
  await get('/api/');
  await get('/api?q=1');
  assert.deepEqual(up.api.seen.slice(apiBefore).map((r) => r.url), ['/api', '/api/', '/api?q=1']);
});

test('stripPrefix removes the route path and keeps the query string', async () => {
  assert.equal((await get('/strip/a/b?x=1&y=%20')).url, '/a/b?x=1&y=%20');
  assert.equal((await get('/strip')).url, '/');
  assert.equal((await get('/strip/')).url, '/');
  assert.equal((await get('/strip?q=1')).url, '/?q=1');
});

test('addPrefix is prepended after stripPrefix, keeping the query string', async () => {
  assert.equal((await get('/add/x?q=1')).url, '/v1/x?q=1');
  assert.equal((await get('/add')).url, '/v1');
  assert.equal((await get('/add?q=1')).url, '/v1?q=1');
  assert.equal((await get('/keep/y')).url, '/base/keep/y');
});

test('the query string reaches the upstream unchanged, over HTTP/1.1 and HTTP/2', async () => {
  const q = '/api/search?q=a%2Fb&q=c&empty=&flag';
  assert.equal((await get(q)).url, q);
  const s = await h2Connect(proxy.httpsPort, 'r.test', pki.caPem);
  const res = await h2Request(s, { path: q });
  s.close();
  assert.equal(JSON.parse(res.text).url, q);
});

test('hostHeader "target" sends the target host:port, a literal is sent as is, and the default preserves the client Host', async () => {
  assert.equal((await get('/host-target')).host, `127.0.0.1:${up.target.port}`);
  assert.equal((await get('/host-literal')).host, 'internal.svc');
  assert.equal((await get('/api')).host, 'r.test');
  // X-Forwarded-Host still carries what the client asked for.
  assert.equal(up.literal.seen.at(-1)?.headers['x-forwarded-host'], 'r.test');
});

test('hostHeader "target" names the target a retry goes to, not the one that refused the request', async () => {
  // Round-robin starts on the refusing target: the first request is retried on the live one.
  for (let i = 0; i < 2; i++) assert.equal((await get(`/host-retry/${i}`)).host, `127.0.0.1:${up.retried.port}`);
  assert.equal(up.retried.seen.length, 2);
});

test('requests are spread round-robin across the targets of a route', async () => {
  const order: string[] = [];
  for (let i = 0; i < 6; i++) {
    const b1 = up.rr1.seen.length;
    await get(`/rr/${i}`);
    order.push(up.rr1.seen.length > b1 ? 'rr1' : 'rr2');
  }
  assert.equal(up.rr1.seen.length, 3);
  assert.equal(up.rr2.seen.length, 3);
  for (let i = 1; i < order.length; i++) assert.notEqual(order[i], order[i - 1]);
});

test('a target that refuses the connection is skipped for the next one', async () => {
  for (let i = 0; i < 4; i++) {
    const res = await get(`/skip/${i}`);
    assert.equal(res.status, 200);
  }
  assert.deepEqual(up.only.seen.map((r) => r.url), ['/skip/0', '/skip/1', '/skip/2', '/skip/3']);
});

test('a route whose only target refuses the connection answers 502', async () => {
  const res = await get('/dead');
  assert.equal(res.status, 502);
  assert.equal(res.text, `${ERRORS.PORTICO_UPSTREAM_UNREACHABLE.message}\n`);
});

test('a path no route covers answers 404 and reaches no upstream', async () => {
  const before = up.api.seen.length;
  const res = await get('/elsewhere', 'api-only.test');
  assert.equal(res.status, 404);
  assert.equal(res.text, `${ERRORS.PORTICO_NO_ROUTE.message}\n`);
  const root = await get('/', 'api-only.test');
  assert.equal(root.status, 404);
  const apix = await get('/apix', 'api-only.test');
  assert.equal(apix.status, 404);
  assert.equal(up.api.seen.length, before);
  assert.equal((await get('/api/x', 'api-only.test')).status, 200);
});

/** One plain-HTTP request to the redirect listener. */
function plainGet(path: string, host: string): Promise<{ status: number; location?: string; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: proxy.httpPort, path, headers: { host }, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, location: res.headers.location, text }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('the plain HTTP listener redirects a served host with 308 to https on the same host, path and query', async () => {
  const res = await plainGet('/a/b?x=1&y=2', 'r.test');
  assert.equal(res.status, 308);
  assert.equal(res.location, `https://r.test:${proxy.httpsPort}/a/b?x=1&y=2`);
  const upper = await plainGet('/', `R.TEST:${proxy.httpPort}`);
  assert.equal(upper.status, 308);
  assert.equal(upper.location, `https://r.test:${proxy.httpsPort}/`);
});

test('on one plain HTTP keep-alive connection, each request is judged by its own Host: proxied, redirected, 404', async () => {
  // The listener keeps its last Host's verdict on the connection; a request naming another host must not reuse it.
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const one = (host: string): Promise<{ status: number; location?: string; reused: boolean }> =>
    new Promise((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: proxy.httpPort, path: '/k', headers: { host }, agent }, (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0, location: res.headers.location, reused: req.reusedSocket }));
      });
      req.on('error', reject);
      req.end();
    });
  try {
    const before = up.plain.seen.length;
    const answers = [];
    for (const host of ['plain.test', 'r.test', 'unknown.test', `PLAIN.TEST:${proxy.httpPort}`, 'r.test', 'plain.test']) answers.push(await one(host));
    assert.deepEqual(answers.map((a) => a.status), [200, 308, 404, 200, 308, 200]);
    assert.equal(answers[1]!.location, `https://r.test:${proxy.httpsPort}/k`);
    assert.deepEqual(answers.map((a) => a.reused), [false, true, true, true, true, true], 'all on one connection');
    assert.equal(up.plain.seen.length, before + 3);
    assert.deepEqual(up.plain.seen.slice(-3).map((r) => r.headers.host), ['plain.test', `PLAIN.TEST:${proxy.httpPort}`, 'plain.test']);
  } finally {
    agent.destroy();
  }
});

test('the plain HTTP listener answers 404 for a host it does not serve', async () => {
  const res = await plainGet('/x', 'unknown.test');
  assert.equal(res.status, 404);
  assert.equal(res.location, undefined);
  assert.equal((await plainGet('/x', '[::1]')).status, 404);
});

test('a host with plainHttp "serve" is proxied by the plain HTTP listener with X-Forwarded-Proto http, and over https as before', async () => {
  const res = await plainGet('/p?q=1', 'plain.test');
  assert.equal(res.status, 200);
  assert.equal(res.location, undefined);
  const seen = up.plain.seen.at(-1)!;
  assert.equal(seen.url, '/p?q=1');
  assert.equal(seen.headers.host, 'plain.test');
  assert.equal(seen.headers['x-forwarded-proto'], 'http');
  assert.equal(seen.headers['x-forwarded-host'], 'plain.test');
  const tls = await get('/p', 'plain.test');
  assert.equal(tls.status, 200);
  assert.equal(up.plain.seen.at(-1)!.headers['x-forwarded-proto'], 'https');
  // Hosts left at the default still only redirect, and nothing reaches their upstream.
  const before = up.root.seen.length;
  assert.equal((await plainGet('/p', 'r.test')).status, 308);
  assert.equal(up.root.seen.length, before);
});

