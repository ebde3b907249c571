import { test } from 'node:test';
import assert from 'node:assert/strict';
import { validateConfig } from '../src/config/load.js';
import { clientAddress, compileAddressList } from '../src/proxy/client-address.js';
import { makePki, startProxyFor } from './helpers/proxy.js';
import { h1Request, h2Connect, h2Request, startUpstream } from './helpers/net.js';
import { RawClient, rawUpgradeRequest } from './helpers/raw-http1.js';

test('allowFrom: a host\'s and a route\'s client lists, over HTTP/1.1, HTTP/2 and WebSocket upgrades, changed on reload', async (t) => {
  const pki = await makePki();
  const up = await startUpstream((req, res) => {
    req.resume();
    res.end('served');
  });
  const cert = await pki.issue('acl', ['acl.test']);
  const hosts = (hostAllow: string[]) => ({
    'acl.test': {
      tls: cert,
      allowFrom: hostAllow,
      routes: [
        { path: '/', upstream: up.url },
        { path: '/open', upstream: up.url, allowFrom: ['127.0.0.1', '::1'] },
        { path: '/status', respond: { body: 'up' } },
      ],
    },
  });
  const proxy = await startProxyFor(t, pki, { hosts: hosts(['::1/128']) }, [up.close]);
  const get = (path: string, headers: Record<string, string> = {}) => h1Request({ port: proxy.httpsPort, sni: 'acl.test', path, headers, ca: pki.caPem });

  let r = await get('/');
  assert.equal(r.status, 403);
  assert.equal(r.headers['x-portico-error'], 'PORTICO_FORBIDDEN');
  assert.equal(up.seen.length, 0, 'nothing reached the upstream');
  assert.equal((await get('/status')).status, 403, 'answers are guarded too');
  r = await get('/open/x');
  assert.equal(r.status, 200, "a route's list replaces its host's");
  assert.equal(r.text, 'served');
  // Without trusted proxies, a client's X-Forwarded-For changes nothing, even naming an allowed address.
  assert.equal((await get('/', { 'x-forwarded-for': '::1' })).status, 403);

  const s = await h2Connect(proxy.httpsPort, 'acl.test', pki.caPem);
  assert.equal((await h2Request(s, { path: '/' })).status, 403);
  assert.equal((await h2Request(s, { path: '/open' })).status, 200);
  s.close();

  const ws = await RawClient.open(t, { port: proxy.httpsPort, tls: { servername: 'acl.test', ca: pki.caPem } });
  await ws.write(rawUpgradeRequest('acl.test', '/chat'));
  assert.equal((await ws.response()).status, 403);

  // Behind a trusted proxy (here the test client itself), the client is the rightmost untrusted X-Forwarded-For entry.
  await proxy.reconfigure({ hosts: hosts(['::1/128']), forwarding: { trustedProxies: ['127.0.0.1'] } });
  assert.equal((await get('/', { 'x-forwarded-for': '::1' })).status, 200);
  assert.equal((await get('/', { 'x-forwarded-for': '::1, 127.0.0.1' })).status, 200, 'trusted hops are skipped');
  assert.equal((await get('/', { 'x-forwarded-for': '::1, unknown' })).status, 403, 'a forged entry on the left is not believed');
  assert.equal((await get('/', { 'x-forwarded-for': 'unknown' })).status, 403);
  assert.equal((await get('/')).status, 403, 'no X-Forwarded-For: the peer itself');

  await proxy.reconfigure({ hosts: hosts(['127.0.0.1']) });
  assert.equal((await get('/')).status, 200, 'a reload changes the list');
  assert.equal(up.seen.length > 0, true);
});

test('denyFrom: a host\'s list refuses on every route, a route\'s adds to it, and it wins over allowFrom; WebSocket upgrades too', async (t) => {
  const pki = await makePki();
  const up = await startUpstream((req, res) => {
    req.resume();
    res.end('served');
  });
  const cert = await pki.issue('deny', ['deny.test']);
  const proxy = await startProxyFor(
    t,
    pki,
    {
      forwarding: { trustedProxies: ['127.0.0.1'] },
      hosts: {
        'deny.test': {
          tls: cert,
          denyFrom: ['::1/128'],
          routes: [
            { path: '/', upstream: up.url },
            { path: '/api', upstream: up.url, denyFrom: ['127.0.0.1'] },
            { path: '/open', upstream: up.url, allowFrom: ['0.0.0.0/0', '::/0'] },
          ],
        },
      },
    },
    [up.close],
  );
  // The client is ::1 when the trusted proxy (the test itself, 127.0.0.1) names it, else 127.0.0.1 itself.
  const from = async (path: string, client?: string): Promise<number> =>
    (await h1Request({ port: proxy.httpsPort, sni: 'deny.test', path, headers: client === undefined ? {} : { 'x-forwarded-for': client }, ca: pki.caPem })).status;
  assert.equal(await from('/', '::1'), 403);
  assert.equal(await from('/api/x', '::1'), 403, 'a route with its own list keeps its host\'s');
  assert.equal(await from('/open', '::1'), 403, 'denyFrom wins over allowFrom');
  assert.equal(await from('/api/x'), 403);
  assert.equal(await from('/'), 200, 'a route\'s list is its own; a client no list names is served');
  assert.ok(!up.seen.some((s) => s.headers['x-forwarded-for']?.toString().startsWith('::1')), 'nothing from a denied client reached the upstream');
  const ws = await RawClient.open(t, { port: proxy.httpsPort, tls: { servername: 'deny.test', ca: pki.caPem } });
  await ws.write(rawUpgradeRequest('deny.test', '/chat', 'X-Forwarded-For: ::1\r\n'));
  assert.equal((await ws.response()).status, 403);
});

test('clientAddress walks X-Forwarded-For from the right, past trusted proxies only', () => {
  // Only 127.0.0.1 and ::1 (and ::1's IPv4-mapped cousin of 127.0.0.1) as addresses: which one is trusted differs per list.
  const trusted = compileAddressList(['127.0.0.1'])!;
  const trustedV6 = compileAddressList(['::1'])!;
  const trustedBoth = compileAddressList(['127.0.0.1', '::1'])!;
  assert.equal(clientAddress('::1', { headers: { 'x-forwarded-for': '127.0.0.1' } }, trusted), '::1', 'an untrusted peer is the client');
  assert.equal(clientAddress('127.0.0.1', { headers: { 'x-forwarded-for': '::1, 127.0.0.1' } }, trusted), '::1');
  assert.equal(clientAddress('::1', { headers: { 'x-forwarded-for': '::ffff:127.0.0.1' } }, trustedV6), '::ffff:127.0.0.1');
  assert.equal(clientAddress('127.0.0.1', { headers: { 'x-forwarded-for': '::1, 127.0.0.1' } }, trustedBoth), '::1', 'all trusted: the leftmost');
  assert.equal(clientAddress('127.0.0.1', { headers: { 'x-forwarded-for': ['::1', '127.0.0.1'] } }, trusted), '::1', 'repeated headers are one list');
  assert.equal(clientAddress('127.0.0.1', { headers: {} }, undefined), '127.0.0.1');
  assert.equal(clientAddress('::ffff:127.0.0.1', { headers: { 'x-forwarded-for': '::1' } }, trusted), '::1', 'an IPv4 CIDR also covers IPv4-mapped peers');
});

test('allowFrom entries are checked with their paths', () => {
  const issues = (allowFrom: unknown, where: 'host' | 'route'): string[] => {
    const host: Record<string, unknown> = { tls: { cert: 'c', key: 'k' }, routes: [{ upstream: 'http://127.0.0.1:1', ...(where === 'route' ? { allowFrom } : {}) }] };
    if (where === 'host') host.allowFrom = allowFrom;
    const r = validateConfig({ hosts: { 'a.test': host } });
    return r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`);
  };
  assert.match(issues(['127.0.0.1/33'], 'host')[0]!, /^hosts\["a\.test"\]\.allowFrom\[0\]: expected an IP address or CIDR/);
  assert.match(issues(['office'], 'route')[0]!, /^hosts\["a\.test"\]\.routes\[0\]\.allowFrom\[0\]: expected an IP address or CIDR/);
  assert.match(issues([], 'host')[0]!, /allowFrom: list at least one address or CIDR/);
  assert.deepEqual(issues(['127.0.0.0/8', '::ffff:127.0.0.0/104', '127.0.0.1', '::1'], 'route'), []);
});
