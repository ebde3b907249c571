/**
 * HTTP/2 upstreams (h2c and h2 over TLS) and protocol conversion: response
 * trailers (gRPC style) reach an HTTP/2 client, `te: trailers` reaches an h2
 * upstream, HTTP/1.1 clients reach h2 upstreams, and HTTP/2 requests arrive at
 * HTTP/1.1 upstreams as valid HTTP/1.1 (one folded Cookie, no pseudo-headers).
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { listenH2 } from './helpers/h2-upstream.js';
import { makePki, startProxyFor, proxyOneHost, type TestPki, type TestProxy } from './helpers/proxy.js';
import { h1Request, h2Connect, h2Request, startUpstream } from './helpers/net.js';

/** What an h2 upstream saw of one request. */
interface SeenStream {
  headers: http2.IncomingHttpHeaders;
  body: string;
}

/** Answers like a gRPC server: 200, a body echoing the path, then trailers `grpc-status: 0`. */
function answerGrpcStyle(seen: SeenStream[]) {
  return (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void => {
    const entry: SeenStream = { headers, body: '' };
    seen.push(entry);
    stream.setEncoding('utf8');
    stream.on('data', (c: string) => {
      entry.body += c;
    });
    stream.on('end', () => {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc+proto', 'x-upstream': 'h2' }, { waitForTrailers: true });
      stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0', 'grpc-message': 'ok' }));
      stream.end(`path=${headers[':path']} body=${entry.body}`);
    });
  };
}

async function startH2cUpstream(): Promise<{ url: string; seen: SeenStream[]; close(): Promise<void> }> {
  const seen: SeenStream[] = [];
  const server = http2.createServer();
  server.on('stream', answerGrpcStyle(seen));
  return { ...(await listenH2(server, 'h2c')), seen };
}

async function startH2TlsUpstream(pki: TestPki): Promise<{ url: string; seen: SeenStream[]; close(): Promise<void> }> {
  const seen: SeenStream[] = [];
  const leaf = await pki.ca.issue(['up.test'], { ips: ['127.0.0.1'] });
  const server = http2.createSecureServer({ cert: leaf.chain, key: leaf.key, allowHTTP1: false });
  server.on('stream', answerGrpcStyle(seen));
  return { ...(await listenH2(server, 'https')), seen };
}

interface Setup {
  pki: TestPki;
  proxy: TestProxy;
  h2c: Awaited<ReturnType<typeof startH2cUpstream>>;
  h2tls: Awaited<ReturnType<typeof startH2TlsUpstream>>;
}

/** One host, three routes: /h2c → h2c upstream, /tls-auto and /tls-h2 → h2 over TLS (ALPN "auto" and forced "h2"). */
async function setup(t: TestContext): Promise<Setup> {
  const pki = await makePki();
  await writeFile(join(pki.dir, 'upstream-ca.pem'), pki.caPem);
  const h2c = await startH2cUpstream();
  const h2tls = await startH2TlsUpstream(pki);
  const cert = await pki.issue('g', ['grpc.test']);
  const proxy = await startProxyFor(t, pki, {
    hosts: {
      'grpc.test': {
        tls: cert,
        routes: [
          { path: '/h2c', upstream: h2c.url },
          { path: '/tls-auto', upstream: { targets: [h2tls.url], protocol: 'auto', tls: { ca: 'upstream-ca.pem' } } },
          { path: '/tls-h2', upstream: { targets: [h2tls.url.replace('127.0.0.1', 'localhost')], protocol: 'h2', tls: { ca: 'upstream-ca.pem', servername: 'up.test' } } },
        ],
      },
    },
  }, [() => h2c.close(), () => h2tls.close()]);
  return { pki, proxy, h2c, h2tls };
}

for (const [route, upstreamOf] of [
  ['/h2c', (s: Setup) => s.h2c],
  ['/tls-auto', (s: Setup) => s.h2tls],
  ['/tls-h2', (s: Setup) => s.h2tls],
] as const) {
  test(`response trailers from an HTTP/2 upstream (${route.slice(1)}) reach an HTTP/2 client and te: trailers reaches the upstream`, async (t) => {
    const s = await setup(t);
    const session = await h2Connect(s.proxy.httpsPort, 'grpc.test', s.pki.caPem);
    t.after(() => session.close());
    const r = await h2Request(session, {
      path: `${route}/pkg.Service/Method`,
      method: 'POST',
      headers: { 'content-type': 'application/grpc+proto', te: 'trailers' },
      body: 'request-bytes',
    });
    assert.equal(r.status, 200);
    assert.equal(r.text, `path=${route}/pkg.Service/Method body=request-bytes`);
    assert.equal(r.headers['content-type'], 'application/grpc+proto');
    assert.equal(r.trailers['grpc-status'], '0');
    assert.equal(r.trailers['grpc-message'], 'ok');
    const seen = upstreamOf(s).seen;
    assert.equal(seen.length, 1);
    const h = seen[0]!.headers;
    assert.equal(h.te, 'trailers');
    assert.equal(h[':method'], 'POST');
    assert.equal(h[':authority'], `grpc.test:${s.proxy.httpsPort}`, 'the client authority is preserved');
    assert.equal(h[':scheme'], route === '/h2c' ? 'http' : 'https');
    assert.equal(h['x-forwarded-proto'], 'https');
    assert.equal(h.host, undefined, 'no Host header next to :authority');
  });
}

test('an HTTP/1.1 client reaches an HTTP/2 upstream, with hop-by-hop headers removed and the response intact', async (t) => {
  const s = await setup(t);
  for (const route of ['/h2c', '/tls-auto']) {
    const r = await h1Request({
      port: s.proxy.httpsPort,
      sni: 'grpc.test',
      path: `${route}/x?q=1`,
      method: 'POST',
      headers: { connection: 'keep-alive, x-hop', 'keep-alive': 'timeout=5', 'x-hop': 'drop me', te: 'trailers', 'x-end': 'keep me' },
      body: 'abc',
      ca: s.pki.caPem,
    });
    assert.equal(r.status, 200, route);
    assert.equal(r.text, `path=${route}/x?q=1 body=abc`);
    assert.equal(r.headers['x-upstream'], 'h2');
  }
  for (const seen of [s.h2c.seen[0], s.h2tls.seen[0]]) {
    assert.ok(seen !== undefined);
    assert.equal(seen.headers[':authority'], 'grpc.test');
    assert.equal(seen.headers['x-end'], 'keep me');
    assert.equal(seen.headers['x-hop'], undefined, 'a header named in Connection is hop-by-hop');
    assert.equal(seen.headers['keep-alive'], undefined);
    assert.equal(seen.headers.connection, undefined);
    assert.equal(seen.headers.te, 'trailers', 'te: trailers is the one TE an h2 upstream may get (RFC 9113 §8.2.2)');
  }
});

test('an HTTP/2 request reaches an HTTP/1.1 upstream with its cookies folded into one header and no pseudo-headers', async (t) => {
  const pki = await makePki();
  const up = await startUpstream();
  const proxy = await proxyOneHost(t, pki, 'cookie.test', up.url, { also: [() => up.close()] });
  const session = await h2Connect(proxy.httpsPort, 'cookie.test', pki.caPem);
  t.after(() => session.close());
  // Separate cookie fields, as HTTP/2 clients send them for compression (RFC 9113 §8.2.3).
  // A repeated field other than Cookie is folded into one with commas (RFC 9110 §5.3); fields keep the client's order.
  const r = await h2Request(session, { path: '/c?x=1', method: 'PUT', headers: { 'x-first': '1', cookie: ['a=1', 'b=2', 'c=3'], 'x-multi': ['m1', 'm2'], 'x-custom': 'v' }, body: 'payload' });
  assert.equal(r.status, 200);
  assert.equal(up.seen.length, 1);
  const seen = up.seen[0]!;
  const names = seen.rawHeaders.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase());
  assert.deepEqual(names.filter((n) => n === 'cookie'), ['cookie'], 'exactly one Cookie header');
  assert.equal(seen.headers.cookie, 'a=1; b=2; c=3');
  assert.deepEqual(names.filter((n) => n.startsWith(':')), [], 'no pseudo-header reaches an HTTP/1.1 upstream');
  assert.equal(seen.headers.host, `cookie.test:${proxy.httpsPort}`, ':authority becomes Host');
  assert.equal(seen.method, 'PUT');
  assert.equal(seen.url, '/c?x=1');
  assert.equal(seen.headers['x-custom'], 'v');
  assert.deepEqual(names.filter((n) => n.startsWith('x-multi')), ['x-multi'], 'exactly one X-Multi header');
  assert.equal(seen.headers['x-multi'], 'm1, m2');
  const order = ['x-first', 'cookie', 'x-multi', 'x-custom'].map((n) => names.indexOf(n));
  assert.deepEqual(order, [...order].sort((a, b) => a - b), `the client's order: ${names.join(' ')}`);
  assert.equal(seen.body.toString(), 'payload');
  assert.equal(JSON.parse(r.text).body, 'payload');
});

test('an HTTP/2 upstream that never answers gets the client a 504 after responseTimeout, and the stream is cancelled', async (t) => {
  const pki = await makePki();
  const silent = http2.createServer();
  let opened = 0;
  let closed = 0;
  silent.on('stream', (stream) => {
    opened++;
    // Read (a node:http2 stream whose request side is never read does not close, reset or not).
    stream.resume();
    stream.on('error', () => {});
    stream.on('close', () => closed++);
  });
  const up = await listenH2(silent, 'h2c');
  const cert = await pki.issue('s', ['silent.test']);
  const proxy = await startProxyFor(t, pki, {
    hosts: { 'silent.test': { tls: cert, routes: [{ path: '/', upstream: { targets: [up.url], responseTimeout: '1s' } }] } },
  }, [() => up.close()]);
  const started = performance.now();
  const r = await h1Request({ port: proxy.httpsPort, sni: 'silent.test', path: '/wait', ca: pki.caPem });
  const took = performance.now() - started;
  assert.equal(r.status, 504);
  assert.match(r.text, /did not answer in time/);
  assert.ok(took >= 900 && took < 5000, `answered after ${Math.round(took)} ms`);
  assert.equal(opened, 1);
  // The upstream stream Portico gave up is reset, not left open on the session.
  for (let i = 0; i < 200 && closed < 1; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(closed, 1, `the upstream stream was closed (waited ${Math.round(performance.now() - started - took)} ms)`);
});
