import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makePki, startProxyFor, proxyOneHost } from './helpers/proxy.js';
import { h1Request, h2Connect, h2Request, startUpstream } from './helpers/net.js';

test('a request is forwarded over HTTP/1.1 and HTTP/2 and a Host that differs from the SNI gets 421', async (t) => {
  const pki = await makePki();
  const up = await startUpstream();
  const other = await startUpstream();
  const a = await pki.issue('a', ['a.test']);
  const b = await pki.issue('b', ['b.test']);
  const proxy = await startProxyFor(t, pki, {
    hosts: {
      'a.test': { tls: a, routes: [{ path: '/', upstream: up.url }] },
      'b.test': { tls: b, routes: [{ path: '/', upstream: other.url }] },
    },
  }, [() => up.close(), () => other.close()]);
  const r1 = await h1Request({ port: proxy.httpsPort, sni: 'a.test', path: '/x', ca: pki.caPem });
  assert.equal(r1.status, 200);
  assert.equal(JSON.parse(r1.text).url, '/x');
  const s = await h2Connect(proxy.httpsPort, 'a.test', pki.caPem);
  const r2 = await h2Request(s, { path: '/y' });
  assert.equal(r2.status, 200);
  assert.equal(JSON.parse(r2.text).url, '/y');
  const r3 = await h2Request(s, { path: '/z', authority: 'b.test' });
  assert.equal(r3.status, 421);
  s.close();
  const r4 = await h1Request({ port: proxy.httpsPort, sni: 'a.test', host: 'b.test', ca: pki.caPem });
  assert.equal(r4.status, 421);
  assert.equal(r4.headers.connection, 'close');
  assert.equal(other.seen.length, 0);
});

test('a GET that meets a kept-alive upstream connection closed under it is retried once on a fresh connection', async (t) => {
  const pki = await makePki();
  // The upstream drops every connection when its second request arrives, as a server whose idle timeout just fired.
  const perSocket = new WeakMap<object, number>();
  const up = await startUpstream((req, res) => {
    const n = (perSocket.get(req.socket) ?? 0) + 1;
    perSocket.set(req.socket, n);
    if (n >= 2) {
      req.socket.destroy();
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 2 });
    res.end('ok');
  });
  const proxy = await proxyOneHost(t, pki, 'a.test', up.url, { also: [() => up.close()] });
  for (let i = 0; i < 3; i++) {
    const r = await h1Request({ port: proxy.httpsPort, sni: 'a.test', path: `/${i}`, ca: pki.caPem });
    assert.equal(r.status, 200, `request ${i}`);
    assert.equal(r.text, 'ok');
  }
  // At least one request reached the upstream twice: once on the dropped connection, once on a new one.
  assert.ok(up.seen.length > 3, `upstream saw ${up.seen.length} requests`);
});
