import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makePki, startProxyFor, proxyOneHost } from './helpers/proxy.js';
import { h1Request, startUpstream } from './helpers/net.js';
import { RawClient, rawUpgradeRequest } from './helpers/raw-http1.js';
import { once } from 'node:events';
import net, { type AddressInfo } from 'node:net';

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

test('an upgrade waits responseTimeout for its answer once connected (connectTimeout only for the connection), then gets 504', async (t) => {
  const pki = await makePki();
  // /slow: the 101 comes 1.5 s after the request, longer than connectTimeout; /never: no answer at all.
  const up = net.createServer((s) => {
    s.on('error', () => {});
    s.once('data', (d: Buffer) => {
      if (d.toString('latin1').startsWith('GET /slow ')) setTimeout(() => s.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nafter 1.5 s'), 1500);
    });
  });
  up.listen(0, '127.0.0.1');
  await once(up, 'listening');
  const cert = await pki.issue('a', ['a.test']);
  const upstream = { targets: [`http://127.0.0.1:${(up.address() as AddressInfo).port}`], connectTimeout: '1s', responseTimeout: '2s' };
  const proxy = await startProxyFor(t, pki, { log: { level: 'info', access: true }, hosts: { 'a.test': { tls: cert, routes: [{ path: '/', upstream }] } } }, [() => up.close()]);
  const slow = await RawClient.open(t, { port: proxy.httpsPort, tls: { servername: 'a.test', ca: pki.caPem } });
  await slow.write(rawUpgradeRequest('a.test', '/slow'));
  const switched = await slow.response({ head: true, timeoutMs: 5000 });
  assert.equal(switched.status, 101, 'a 101 that took longer than connectTimeout but less than responseTimeout is relayed');
  assert.ok(await slow.until(() => slow.pending.toString('latin1').endsWith('after 1.5 s'), 2000), 'and the tunnel carries bytes');
  const never = await RawClient.open(t, { port: proxy.httpsPort, tls: { servername: 'a.test', ca: pki.caPem } });
  const started = performance.now();
  await never.write(rawUpgradeRequest('a.test', '/never'));
  const timedOut = await never.response({ timeoutMs: 5000 });
  const waited = performance.now() - started;
  assert.equal(timedOut.status, 504);
  assert.equal(timedOut.headers['x-portico-error'], 'PORTICO_UPSTREAM_TIMEOUT');
  assert.ok(waited >= 1900 && waited < 4000, `504 after ${Math.round(waited)} ms: responseTimeout (2 s)`);
  // The open tunnel closed here, or the proxy's stop would wait shutdownTimeout for it.
  slow.destroy();
});

test('an upgrade whose upstream resets gets 502 PORTICO_UPSTREAM_FAILED, one that times out 504, and the access line has the status the client got', async (t) => {
  const pki = await makePki();
  const up = net.createServer((s) => {
    s.on('error', () => {});
    s.once('data', (d: Buffer) => {
      if (d.toString('latin1').startsWith('GET /reset ')) s.resetAndDestroy();
    });
  });
  up.listen(0, '127.0.0.1');
  await once(up, 'listening');
  const cert = await pki.issue('a', ['a.test']);
  const upstream = { targets: [`http://127.0.0.1:${(up.address() as AddressInfo).port}`], responseTimeout: '1s' };
  const proxy = await startProxyFor(t, pki, { log: { level: 'info', access: true }, hosts: { 'a.test': { tls: cert, routes: [{ path: '/', upstream }] } } }, [() => up.close()]);
  for (const [path, status, code] of [['/reset', 502, 'PORTICO_UPSTREAM_FAILED'], ['/never', 504, 'PORTICO_UPSTREAM_TIMEOUT']] as const) {
    const c = await RawClient.open(t, { port: proxy.httpsPort, tls: { servername: 'a.test', ca: pki.caPem } });
    await c.write(rawUpgradeRequest('a.test', path));
    const r = await c.response({ timeoutMs: 4000 });
    assert.equal(r.status, status, path);
    assert.equal(r.headers['x-portico-error'], code, path);
    const line = (): Record<string, unknown> | undefined => proxy.logs.find((l) => l['msg'] === 'access' && l['path'] === path);
    for (let i = 0; i < 50 && line() === undefined; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(line()?.['status'], status, `${path}: the access line's status is the one the client got`);
  }
});

test('a 101 reaches the client without the upstream\'s hop-by-hop headers, with Connection: Upgrade, its Upgrade and its other headers', async (t) => {
  const pki = await makePki();
  const up = net.createServer((s) => {
    s.on('error', () => {});
    s.once('data', () =>
      s.write(
        'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade, X-Hop\r\nConnection: X-Other-Hop\r\nX-Hop: for the proxy\r\nX-Other-Hop: also\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n\r\n',
      ),
    );
  });
  up.listen(0, '127.0.0.1');
  await once(up, 'listening');
  const proxy = await proxyOneHost(t, pki, 'a.test', `http://127.0.0.1:${(up.address() as AddressInfo).port}`, { also: [() => up.close()] });
  const c = await RawClient.open(t, { port: proxy.httpsPort, tls: { servername: 'a.test', ca: pki.caPem } });
  await c.write(rawUpgradeRequest('a.test', '/chat'));
  const r = await c.response({ head: true });
  assert.equal(r.status, 101);
  assert.deepEqual(
    r.lines.map(([name]) => name.toLowerCase()).sort(),
    ['connection', 'sec-websocket-accept', 'sec-websocket-protocol', 'upgrade'],
    'Keep-Alive, Proxy-Connection and the headers Connection lists are not relayed',
  );
  assert.equal(r.headers['connection'], 'Upgrade');
  assert.equal(r.headers['upgrade'], 'websocket');
  assert.equal(r.headers['sec-websocket-accept'], 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=');
  assert.equal(r.headers['sec-websocket-protocol'], 'chat');
  // The open tunnel closed here, or the proxy's stop would wait shutdownTimeout for it.
  c.destroy();
});
