import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makePki, startProxyFor, proxyOneHost } from './helpers/proxy.js';
import { h1Request, startUpstream } from './helpers/net.js';

test('an upgrade the upstream declines is relayed with its status, headers and body, without hop-by-hop headers', async (t) => {
  const pki = await makePki();
  // Answering with a normal (chunked) response instead of 101 declines the upgrade.
  const up = await startUpstream((_req, res) => {
    res.writeHead(403, { 'x-reason': 'nope', 'keep-alive': 'timeout=5', 'content-type': 'text/plain' });
    res.write('den');
    res.end('ied');
  });
  const proxy = await proxyOneHost(t, pki, 'a.test', up.url, { also: [() => up.close()] });
  const r = await h1Request({ port: proxy.httpsPort, sni: 'a.test', path: '/ws', ca: pki.caPem, headers: { connection: 'upgrade', upgrade: 'websocket' } });
  assert.equal(r.status, 403);
  assert.equal(r.headers['x-reason'], 'nope');
  assert.equal(r.headers['keep-alive'], undefined);
  assert.equal(r.headers.connection, 'close');
  assert.equal(r.text, 'denied');
  assert.equal(up.seen.length, 1);
  assert.equal(up.seen[0]?.headers.upgrade, 'websocket');
});

test('an upgrade is sent upstream with the same path rewrite as a request (stripPrefix + addPrefix, query kept)', async (t) => {
  const pki = await makePki();
  const up = await startUpstream((_req, res) => {
    res.writeHead(400, { 'content-length': 0 });
    res.end();
  });
  const a = await pki.issue('a', ['a.test']);
  const proxy = await startProxyFor(t, pki, {
    hosts: { 'a.test': { tls: a, routes: [{ path: '/ws', upstream: up.url, stripPrefix: true, addPrefix: '/v1' }] } },
  }, [() => up.close()]);
  const upgrade = { connection: 'upgrade', upgrade: 'websocket' };
  await h1Request({ port: proxy.httpsPort, sni: 'a.test', path: '/ws?x=1', ca: pki.caPem, headers: upgrade });
  await h1Request({ port: proxy.httpsPort, sni: 'a.test', path: '/ws/chat', ca: pki.caPem, headers: upgrade });
  const plain = await h1Request({ port: proxy.httpsPort, sni: 'a.test', path: '/ws?x=1', ca: pki.caPem });
  assert.equal(plain.status, 400);
  assert.deepEqual(up.seen.map((s) => s.url), ['/v1?x=1', '/v1/chat', '/v1?x=1']);
});
