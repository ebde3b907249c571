/**
 * A route's "rewrite": the forwarded path rewritten by a regular expression after stripPrefix and
 * addPrefix (groups by number and name), the query kept, a path the pattern does not match sent as
 * it is, redirects and WebSocket upgrades rewritten alike, and the settings checked with their paths.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { validateConfig } from '../src/config/load.js';
import { makePki, startProxyFor } from './helpers/proxy.js';
import { h1Request, h2Connect, h2Request, startUpstream } from './helpers/net.js';
import { RawClient, rawUpgradeRequest } from './helpers/raw-http1.js';

test('rewrite: groups by number and name, after stripPrefix, the query kept; other paths untouched; redirects and upgrades too; over HTTP/1.1 and HTTP/2', async (t) => {
  const pki = await makePki();
  const up = await startUpstream();
  up.server.on('upgrade', (req: { url?: string }, socket: import('node:net').Socket) => {
    socket.end(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Url: ${req.url ?? ''}\r\n\r\n`);
  });
  const cert = await pki.issue('rw', ['rw.test']);
  const proxy = await startProxyFor(
    t,
    pki,
    {
      hosts: {
        'rw.test': {
          tls: cert,
          routes: [
            { path: '/api', upstream: up.url, rewrite: { pattern: '^/api/v1/(.*)$', to: '/v2/$1' } },
            { path: '/shop', stripPrefix: true, upstream: up.url, rewrite: { pattern: '^/item/(?<id>\\d+)$', to: '/products/$<id>' } },
            { path: '/old', redirect: 'https://rw.test{uri}', rewrite: { pattern: '^/old/(.*)\\.php$', to: '/new/$1' } },
          ],
        },
      },
    },
    [() => up.close()],
  );
  const get = async (path: string): Promise<string> => {
    const r = await h1Request({ port: proxy.httpsPort, sni: 'rw.test', path, ca: pki.caPem });
    assert.equal(r.status, 200, path);
    return (JSON.parse(r.text) as { url: string }).url;
  };
  assert.equal(await get('/api/v1/users?page=2'), '/v2/users?page=2');
  assert.equal(await get('/api/v3/users'), '/api/v3/users', 'a path the pattern does not match goes as it is');
  assert.equal(await get('/shop/item/42?ref=a'), '/products/42?ref=a', 'after stripPrefix, a named group');
  assert.equal(await get('/shop/item/x'), '/item/x');
  const redirect = await h1Request({ port: proxy.httpsPort, sni: 'rw.test', path: '/old/page.php?a=1', ca: pki.caPem });
  assert.equal(redirect.status, 302);
  assert.equal(redirect.headers.location, 'https://rw.test/new/page?a=1');
  const c = await RawClient.open(t, { port: proxy.httpsPort, tls: { servername: 'rw.test', ca: pki.caPem } });
  await c.write(rawUpgradeRequest('rw.test', '/api/v1/socket?x=1'));
  const upgraded = await c.response();
  assert.equal(upgraded.status, 101);
  assert.equal(upgraded.headers['x-url'], '/v2/socket?x=1', 'an upgrade is rewritten too');
  const session = await h2Connect(proxy.httpsPort, 'rw.test', pki.caPem);
  t.after(() => session.close());
  const h2 = await h2Request(session, { path: '/api/v1/x' });
  assert.equal((JSON.parse(h2.text) as { url: string }).url, '/v2/x');
});

test('rewrite settings are checked with their paths', () => {
  const tls = { cert: 'c.pem', key: 'k.pem' };
  const r = validateConfig({
    hosts: {
      'a.test': {
        tls,
        routes: [
          { path: '/a', upstream: 'http://127.0.0.1:1', rewrite: { pattern: '^/(unclosed', to: '/x' } },
          { path: '/b', upstream: 'http://127.0.0.1:1', rewrite: { pattern: '^/b', to: 'relative' } },
          { path: '/c', upstream: 'http://127.0.0.1:1', rewrite: { pattern: '^/c', to: '/c?x=1' } },
          { path: '/d', respond: { body: 'x' }, rewrite: { pattern: '^/d', to: '/e' } },
          { path: '/e', upstream: 'http://127.0.0.1:1', rewrite: { pattern: '^/e/(\\d+)/(?<slug>.*)$', to: '/f/$2/$3/$<slug>/$<id>' } },
        ],
      },
    },
  });
  const lines = r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`);
  assert.ok(lines.some((l) => /^hosts\["a\.test"\]\.routes\[0\]\.rewrite\.pattern: not a regular expression: /.test(l)), lines.join('\n'));
  assert.ok(lines.some((l) => l.startsWith('hosts["a.test"].routes[1].rewrite.to: the new path must start with "/"')), lines.join('\n'));
  assert.ok(lines.some((l) => l.startsWith('hosts["a.test"].routes[2].rewrite.to: the new path cannot hold "?"')), lines.join('\n'));
  assert.ok(lines.some((l) => l.startsWith('hosts["a.test"].routes[3].rewrite: a "respond" route forwards no path')), lines.join('\n'));
  assert.ok(lines.some((l) => l.startsWith('hosts["a.test"].routes[4].rewrite.to: "$3" names no group: the pattern has 2 groups')), lines.join('\n'));
  assert.ok(lines.some((l) => l.startsWith('hosts["a.test"].routes[4].rewrite.to: "$<id>" names no group: the pattern\'s named groups are "slug"')), lines.join('\n'));
  assert.ok(!lines.some((l) => l.includes('"$2" names') || l.includes('"$<slug>" names')), 'groups that exist are fine');
});
