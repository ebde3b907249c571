/**
 * Routes with "match": several routes on one path, chosen by method, header, query parameter or
 * cookie (in the config's order, then the route without a match), a prefix passed over when none
 * of its routes serves a request, WebSocket upgrades matched the same way, and the config's checks.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { validateConfig } from '../src/config/load.js';
import type { ConfigInput } from '../src/config/schema.js';
import { makePki, startProxyFor, type TestPki, type TestProxy } from './helpers/proxy.js';
import { h1Request, h2Connect, h2Request, startUpstream } from './helpers/net.js';
import { RawClient, rawUpgradeRequest } from './helpers/raw-http1.js';
import { curl, requireTool } from './helpers/real-peers.js';

const HOST = 'm.test';

/** An upstream that answers every request with its own name; `upgrades` also take WebSocket upgrades (101). */
async function named(name: string, upgrades = false): Promise<Awaited<ReturnType<typeof startUpstream>>> {
  const up = await startUpstream((req, res) => {
    req.resume();
    req.on('end', () => res.end(name));
  });
  if (upgrades) {
    up.server.on('upgrade', (_req, socket) => {
      socket.end(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Upstream: ${name}\r\n\r\n`);
    });
  }
  return up;
}

async function setup(t: TestContext): Promise<{ pki: TestPki; proxy: TestProxy }> {
  const pki = await makePki();
  const ups = {
    writer: await named('writer'),
    canary: await named('canary'),
    reader: await named('reader'),
    beta: await named('beta'),
    site: await named('site', true),
    v2: await named('v2'),
    json: await named('json'),
    ws: await named('ws', true),
  };
  const cert = await pki.issue('m', [HOST]);
  const proxy = await startProxyFor(
    t,
    pki,
    {
      hosts: {
        [HOST]: {
          tls: cert,
          routes: [
            { path: '/', upstream: ups.site.url },
            { path: '/api', upstream: ups.reader.url },
            { path: '/api', match: { methods: ['POST', 'PUT'] }, upstream: ups.writer.url },
            { path: '/api', match: { headers: { 'X-Canary': '1' } }, upstream: ups.canary.url },
            { path: '/api/', match: { headers: { accept: 'application/vnd.portico*' } }, upstream: ups.json.url },
            { path: '/', match: { cookies: { beta: ['yes', 'true'] } }, upstream: ups.beta.url },
            { path: '/search', match: { query: { v: ['2', '3'] } }, upstream: ups.v2.url },
            { path: '/chat', match: { headers: { Upgrade: '*websocket*' } }, upstream: ups.ws.url },
          ],
        },
      },
    },
    Object.values(ups).map((u) => () => u.close()),
  );
  return { pki, proxy };
}

test('routes on one path are chosen by method, header (exact and prefix), cookie and query, in order, then the route without a match; a prefix none serves passes to shorter ones', async (t) => {
  const { pki, proxy } = await setup(t);
  const get = async (path: string, headers: Record<string, string> = {}, method = 'GET'): Promise<string> => {
    const r = await h1Request({ port: proxy.httpsPort, sni: HOST, path, method, headers, ca: pki.caPem, body: method === 'GET' ? undefined : 'x' });
    assert.equal(r.status, 200, `${method} ${path}`);
    return r.text;
  };
  assert.equal(await get('/api/items'), 'reader');
  assert.equal(await get('/api/items', {}, 'POST'), 'writer');
  assert.equal(await get('/api/items', {}, 'PUT'), 'writer');
  assert.equal(await get('/api/items', {}, 'DELETE'), 'reader', 'a method not listed');
  assert.equal(await get('/api/items', { 'x-canary': '1' }), 'canary');
  assert.equal(await get('/api/items', { 'x-canary': '1' }, 'POST'), 'writer', 'the first route whose match holds, in the config\'s order');
  assert.equal(await get('/api/items', { 'x-canary': '2' }), 'reader', 'values are exact');
  assert.equal(await get('/api', { accept: 'application/vnd.portico.v2+json' }), 'json', '"/api/" is the path "/api"; a prefix pattern');
  assert.equal(await get('/api', { accept: 'text/html, application/vnd.portico+json' }), 'reader', 'a prefix of the whole value');
  assert.equal(await get('/', { cookie: 'a=1; beta=yes' }), 'beta');
  assert.equal(await get('/anything', { cookie: 'beta=true' }), 'beta', 'any value of the list');
  assert.equal(await get('/anything', { cookie: 'beta=no' }), 'site');
  assert.equal(await get('/search?q=x&v=3'), 'v2');
  assert.equal(await get('/search/deeper?v=2'), 'v2');
  // No route on /search serves this one: the shorter prefix "/" does.
  assert.equal(await get('/search?v=4'), 'site');
  assert.equal(await get('/search?v=4', { cookie: 'beta=yes' }), 'beta');

  // HTTP/2 carries the same headers (cookies in crumbs are put back together).
  const session = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => session.close());
  const h2 = async (path: string, headers: Record<string, string | string[]> = {}, method = 'GET'): Promise<string> => {
    const r = await h2Request(session, { path, method, headers, body: method === 'GET' ? undefined : 'x' });
    assert.equal(r.status, 200);
    return r.text;
  };
  assert.equal(await h2('/api/x', {}, 'POST'), 'writer');
  assert.equal(await h2('/api/x', { 'x-canary': '1' }), 'canary');
  assert.equal(await h2('/x', { cookie: ['a=1', 'beta=yes'] }), 'beta');
  assert.equal(await h2('/api/x'), 'reader');

  // The access line names the route that served, match and all.
  const line = proxy.logs.find((l) => l.msg === 'access' && l.path === '/api/items' && l.method === 'PUT');
  assert.equal(line?.route, `${HOST} /api [method=POST|PUT]`);
});

test('a WebSocket upgrade is matched like a request: "Upgrade: websocket" on /chat goes to its own upstream', async (t) => {
  const { pki, proxy } = await setup(t);
  const c = await RawClient.open(t, { port: proxy.httpsPort, tls: { servername: HOST, ca: pki.caPem } });
  await c.write(rawUpgradeRequest(HOST, '/chat'));
  const up = await c.response();
  assert.equal(up.status, 101);
  assert.equal(up.headers['x-upstream'], 'ws');
  // A plain request on /chat is not an upgrade: the "/" route takes it.
  const r = await h1Request({ port: proxy.httpsPort, sni: HOST, path: '/chat', ca: pki.caPem });
  assert.equal(r.text, 'site');
});

test('curl: POST and GET on one path reach different upstreams', async (t) => {
  if (!requireTool(t, 'curl')) return;
  const { pki, proxy } = await setup(t);
  const caFile = join(pki.dir, 'ca.pem');
  await writeFile(caFile, pki.caPem);
  for (const [args, expected] of [
    [['--http2'], 'reader'],
    [['--http2', '-d', 'x=1'], 'writer'],
    [['--http1.1', '-H', 'X-Canary: 1'], 'canary'],
  ] as const) {
    const r = await curl({ host: HOST, port: proxy.httpsPort, caFile, path: '/api/v', args: ['-o', '-', '-w', '', ...args] });
    assert.match(r.stdout, new RegExp(`\\r\\n\\r\\n${expected}$`), `${args.join(' ')}: ${r.stdout} ${r.stderr}`);
  }
});

test('"match" is checked with its path: empty, lower-case methods, Host, bad values, and routes that could never be used', () => {
  const tls = { cert: 'c.pem', key: 'k.pem' };
  const up = 'http://127.0.0.1:1';
  const problems = (routes: unknown[]): string[] => {
    const r = validateConfig({ hosts: { 'a.test': { tls, routes } } });
    return r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`);
  };
  assert.match(problems([{ match: {}, upstream: up }]).join('\n'), /^hosts\["a\.test"\]\.routes\[0\]\.match: a match needs at least one of "methods", "headers", "query", "cookies" and "clientAddresses"/);
  assert.match(problems([{ match: { methods: ['post'] }, upstream: up }]).join('\n'), /routes\[0\]\.match\.methods\[0\]: expected an upper-case method such as "GET"/);
  assert.match(problems([{ match: { headers: { Host: 'b.test' } }, upstream: up }]).join('\n'), /routes\[0\]\.match\.headers\.Host: .*put the route under that host/);
  assert.match(problems([{ match: { query: { v: [] } }, upstream: up }]).join('\n'), /routes\[0\]\.match\.query\.v: /);
  assert.match(problems([{ match: { cookies: { 'a b': 'x' } }, upstream: up }]).join('\n'), /routes\[0\]\.match\.cookies/);
  assert.match(problems([{ match: { clientAddresses: ['127.0.0.1/33'] }, upstream: up }]).join('\n'), /routes\[0\]\.match\.clientAddresses\[0\]: /);
  // Two routes without a match on one path (trailing slash or not): the second would never be used.
  assert.match(problems([{ path: '/api', upstream: up }, { path: '/api/', upstream: up }]).join('\n'), /^hosts\["a\.test"\]\.routes\[1\]\.path: hosts\["a\.test"\]\.routes\[0\] already serves the path "\/api\/"/);
  // The same match written another way.
  assert.match(
    problems([
      { path: '/api', match: { methods: ['PUT', 'POST'], headers: { 'X-A': '1' } }, upstream: up },
      { path: '/api', match: { headers: { 'x-a': '1' }, methods: ['POST', 'PUT'] }, upstream: up },
    ]).join('\n'),
    /^hosts\["a\.test"\]\.routes\[1\]\.match: hosts\["a\.test"\]\.routes\[0\] has the same path and the same "match"/,
  );
  assert.deepEqual(problems([{ path: '/api', upstream: up }, { path: '/api', match: { methods: ['POST'] }, upstream: up }]), []);
});

test('match.clientAddresses: the client address allowFrom judges (behind a trusted proxy, its X-Forwarded-For) picks the route', async (t) => {
  const pki = await makePki();
  const insideUp = await named('inside');
  const outside = await named('outside');
  const cert = await pki.issue('m', [HOST]);
  /** Requests from the clients in `inside` go to "inside", the rest to "outside"; 127.0.0.1 is the trusted proxy. */
  const config = (inside: string[]): ConfigInput => ({
    forwarding: { trustedProxies: ['127.0.0.1'] },
    hosts: { [HOST]: { tls: cert, routes: [{ path: '/', upstream: outside.url }, { path: '/', match: { clientAddresses: inside }, upstream: insideUp.url }] } },
  });
  const proxy = await startProxyFor(t, pki, config(['::1/128']), [() => insideUp.close(), () => outside.close()]);
  // The peer is always the trusted proxy 127.0.0.1; the clients it names are ::1 and 127.0.0.1 (IPv4-mapped or not).
  const from = async (xff: string | undefined): Promise<string> =>
    (await h1Request({ port: proxy.httpsPort, sni: HOST, path: '/', ca: pki.caPem, headers: xff === undefined ? {} : { 'x-forwarded-for': xff } })).text;
  assert.equal(await from('::1'), 'inside');
  assert.equal(await from('::1, 127.0.0.1'), 'inside', 'a trusted hop on the right is passed over');
  assert.equal(await from('::1, unknown'), 'outside', 'the rightmost untrusted entry counts (here "unknown", which no list holds), not the ::1 the client wrote first');
  assert.equal(await from(undefined), 'outside', 'the trusted peer itself, 127.0.0.1');

  // An IPv4-mapped entry: the IPv4 client matches it; ::1 is now the one outside.
  await proxy.reconfigure(config(['::ffff:127.0.0.1/128']));
  assert.equal(await from(undefined), 'inside', 'the peer 127.0.0.1 matches ::ffff:127.0.0.1/128');
  assert.equal(await from('127.0.0.1, ::1'), 'outside', 'the rightmost untrusted entry counts, not the leftmost');
});
