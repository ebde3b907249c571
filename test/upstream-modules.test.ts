/**
 * What the upstream transports load, for idle memory (bench/optimisations.md, section 5): HTTP/1.1
 * upstreams need no client library (Portico's own pool over Node's parser), and http2-wrapper is
 * loaded only for HTTP/2 upstreams: h2-tls and h2c targets before their Plan is published, "auto"
 * targets once ALPN picked h2. The tests in this file run in order in one process and look at the
 * CommonJS module cache, so their order matters.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { makePki, startProxy, type TestPki } from './helpers/proxy.js';
import { h1Request, startUpstream } from './helpers/net.js';

const require = createRequire(import.meta.url);

/** Whether a file of `pkg` whose path ends with `file` has been loaded in this process. */
function loaded(pkg: string, file = ''): boolean {
  return Object.keys(require.cache).some((p) => p.includes(`/node_modules/${pkg}/`) && p.endsWith(file));
}

/** A TLS upstream on 127.0.0.1 (certificate from `pki`) answering `upstream=<protocol>`: HTTP/1.1 only, or h2 only. */
async function startTlsUpstream(pki: TestPki, protocol: 'http/1.1' | 'h2'): Promise<{ url: string; close(): Promise<void> }> {
  const leaf = await pki.ca.issue(['up.test'], { ips: ['127.0.0.1'] });
  const answer = (_req: unknown, res: http.ServerResponse | http2.Http2ServerResponse): void => {
    res.setHeader('content-type', 'text/plain');
    res.end(`upstream=${protocol}`);
  };
  const server: https.Server | http2.Http2SecureServer =
    protocol === 'h2' ? http2.createSecureServer({ cert: leaf.chain, key: leaf.key, allowHTTP1: false }, answer) : https.createServer({ cert: leaf.chain, key: leaf.key }, answer);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`, close: () => new Promise<void>((r) => server.close(() => r())) };
}

test('starting the server code loads no HTTP client library: neither undici nor http2-wrapper', async () => {
  await import('../src/server/portico.js');
  assert.equal(loaded('undici'), false);
  assert.equal(loaded('http2-wrapper'), false);
});

test('HTTP/1.1 upstreams, plain and "auto" over TLS, and HTTP/2 upstreams added by a reload', async (t) => {
  const pki = await makePki();
  await writeFile(join(pki.dir, 'upstream-ca.pem'), pki.caPem);
  const plain = await startUpstream();
  const tlsH1 = await startTlsUpstream(pki, 'http/1.1');
  const tlsH2 = await startTlsUpstream(pki, 'h2');
  const h2c = http2.createServer((_req, res) => res.end('upstream=h2c'));
  h2c.listen(0, '127.0.0.1');
  await once(h2c, 'listening');
  const h2cUrl = `h2c://127.0.0.1:${(h2c.address() as AddressInfo).port}`;
  const cert = await pki.issue('site', ['site.test']);
  const h1Routes = [
    { path: '/plain', upstream: plain.url },
    // An address target: no SNI, and its certificate is verified against the address.
    { path: '/auto-h1', upstream: { targets: [tlsH1.url], tls: { ca: 'upstream-ca.pem' } } },
  ];
  const proxy = await startProxy(pki, { hosts: { 'site.test': { tls: cert, routes: h1Routes } } });
  t.after(async () => {
    // The proxy first: its keep-alive connections and HTTP/2 sessions would hold the upstreams open.
    await proxy.stop();
    await Promise.all([plain.close(), tlsH1.close(), tlsH2.close(), new Promise<void>((r) => h2c.close(() => r()))]);
    await pki.cleanup();
  });
  const get = (path: string) => h1Request({ port: proxy.httpsPort, sni: 'site.test', path, ca: pki.caPem });

  await t.test('HTTP/1.1 only: http2-wrapper stays unloaded', async () => {
    assert.equal((await get('/plain')).status, 200);
    const r = await get('/auto-h1');
    assert.equal(r.status, 200);
    assert.equal(r.text, 'upstream=http/1.1');
    assert.equal(loaded('http2-wrapper'), false);
  });

  await t.test('an "auto" target that picks h2 loads http2-wrapper on its first request, which succeeds', async () => {
    await proxy.reconfigure({ hosts: { 'site.test': { tls: cert, routes: [...h1Routes, { path: '/auto-h2', upstream: { targets: [tlsH2.url], tls: { ca: 'upstream-ca.pem' } } }] } } });
    assert.equal(loaded('http2-wrapper'), false, 'loaded before ALPN said h2');
    const r = await get('/auto-h2');
    assert.equal(r.status, 200);
    assert.equal(r.text, 'upstream=h2');
    assert.equal(loaded('http2-wrapper'), true);
  });

  await t.test('h2c and h2 targets are ready when their Plan is published', async () => {
    await proxy.reconfigure({
      hosts: {
        'site.test': {
          tls: cert,
          routes: [
            ...h1Routes,
            { path: '/h2c', upstream: h2cUrl },
            { path: '/h2', upstream: { targets: [tlsH2.url], protocol: 'h2', tls: { ca: 'upstream-ca.pem' } } },
          ],
        },
      },
    });
    const targets = [...proxy.portico.state!.plan.exact.get('site.test')!.routes.values()].flatMap((r) => r.upstream?.targets ?? []);
    const h2Targets = targets.filter((x) => x.kind === 'h2c' || x.kind === 'h2-tls');
    assert.equal(h2Targets.length, 2);
    for (const target of h2Targets) {
      assert.equal(target.resolveProtocol(), undefined, `${target.url} (${target.kind}) is not ready`);
      if (target.kind === 'h2-tls') assert.notEqual(target.h2Agent, undefined);
    }
    assert.equal((await get('/h2c')).text, 'upstream=h2c');
    assert.equal((await get('/h2')).text, 'upstream=h2');
  });
});
