import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BlockList } from 'node:net';
import { validateConfig } from '../src/config/load.js';
import { clientAddress } from '../src/proxy/client-address.js';
import { makePki, startProxyFor } from './helpers/proxy.js';
import { h1Request, h2Connect, h2Request, startUpstream } from './helpers/net.js';
import { RawClient } from './helpers/raw-http1.js';

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
        { path: '/open', upstream: up.url, allowFrom: ['127.0.0.0/8', '::1'] },
        { path: '/status', respond: { body: 'up' } },
      ],
    },
  });
  const proxy = await startProxyFor(t, pki, { hosts: hosts(['10.0.0.0/8']) }, [up.close]);
  const get = (path: string, headers: Record<string, string> = {}) => h1Request({ port: proxy.httpsPort, sni: 'acl.test', path, headers, ca: pki.caPem });

  let r = await get('/');
  assert.equal(r.status, 403);
  assert.equal(r.headers['x-portico-error'], 'PORTICO_FORBIDDEN');
  assert.equal(up.seen.length, 0, 'nothing reached the upstream');
  assert.equal((await get('/status')).status, 403, 'answers are guarded too');
  r = await get('/open/x');
  assert.equal(r.status, 200, "a route's list replaces its host's");
  assert.equal(r.text, 'served');
  // Without trusted proxies, a client's X-Forwarded-For changes nothing.
  assert.equal((await get('/', { 'x-forwarded-for': '10.1.2.3' })).status, 403);

  const s = await h2Connect(proxy.httpsPort, 'acl.test', pki.caPem);
  assert.equal((await h2Request(s, { path: '/' })).status, 403);
  assert.equal((await h2Request(s, { path: '/open' })).status, 200);
  s.close();

  const ws = await RawClient.open(t, { port: proxy.httpsPort, tls: { servername: 'acl.test', ca: pki.caPem } });
  await ws.write('GET /chat HTTP/1.1\r\nHost: acl.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
  assert.equal((await ws.response()).status, 403);

  // Behind a trusted proxy (here the test client itself), the client is the rightmost untrusted X-Forwarded-For entry.
  await proxy.reconfigure({ hosts: hosts(['10.0.0.0/8']), forwarding: { trustedProxies: ['127.0.0.1'] } });
  assert.equal((await get('/', { 'x-forwarded-for': '10.1.2.3' })).status, 200);
  assert.equal((await get('/', { 'x-forwarded-for': '10.1.2.3, 127.0.0.1' })).status, 200, 'trusted hops are skipped');
  assert.equal((await get('/', { 'x-forwarded-for': '10.1.2.3, 192.0.2.7' })).status, 403, 'a forged entry on the left is not believed');
  assert.equal((await get('/', { 'x-forwarded-for': 'unknown' })).status, 403);
  assert.equal((await get('/')).status, 403, 'no X-Forwarded-For: the peer itself');

  await proxy.reconfigure({ hosts: hosts(['127.0.0.1']) });
  assert.equal((await get('/')).status, 200, 'a reload changes the list');
  assert.equal(up.seen.length > 0, true);
});

test('clientAddress walks X-Forwarded-For from the right, past trusted proxies only', () => {
  const trusted = new BlockList();
  trusted.addSubnet('10.0.0.0', 8, 'ipv4');
  trusted.addAddress('::1', 'ipv6');
  assert.equal(clientAddress('192.0.2.1', { 'x-forwarded-for': '10.0.0.1' }, trusted), '192.0.2.1', 'an untrusted peer is the client');
  assert.equal(clientAddress('10.0.0.2', { 'x-forwarded-for': '198.51.100.9, 10.0.0.3' }, trusted), '198.51.100.9');
  assert.equal(clientAddress('::1', { 'x-forwarded-for': '2001:db8::5' }, trusted), '2001:db8::5');
  assert.equal(clientAddress('10.0.0.2', { 'x-forwarded-for': '10.0.0.7, 10.0.0.3' }, trusted), '10.0.0.7', 'all trusted: the leftmost');
  assert.equal(clientAddress('10.0.0.2', { 'x-forwarded-for': ['203.0.113.1', '10.0.0.9'] }, trusted), '203.0.113.1', 'repeated headers are one list');
  assert.equal(clientAddress('10.0.0.2', {}, undefined), '10.0.0.2');
});

test('allowFrom entries are checked with their paths', () => {
  const issues = (allowFrom: unknown, where: 'host' | 'route'): string[] => {
    const host: Record<string, unknown> = { tls: { cert: 'c', key: 'k' }, routes: [{ upstream: 'http://127.0.0.1:1', ...(where === 'route' ? { allowFrom } : {}) }] };
    if (where === 'host') host.allowFrom = allowFrom;
    const r = validateConfig({ hosts: { 'a.test': host } });
    return r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`);
  };
  assert.match(issues(['10.0.0.0/33'], 'host')[0]!, /^hosts\["a\.test"\]\.allowFrom\[0\]: expected an IP address or CIDR/);
  assert.match(issues(['office'], 'route')[0]!, /^hosts\["a\.test"\]\.routes\[0\]\.allowFrom\[0\]: expected an IP address or CIDR/);
  assert.match(issues([], 'host')[0]!, /allowFrom: list at least one address or CIDR/);
  assert.deepEqual(issues(['10.0.0.0/8', '2001:db8::/32', '192.0.2.1'], 'route'), []);
});
