/**
 * Portico's HTTP/1.1 upstream client (kept sockets, one llhttp parser each)
 * against upstreams that answer in every framing HTTP/1.1 allows: bodiless
 * statuses and HEAD on a reused connection, informational responses, bodies
 * delimited by the close, chunked bodies with trailers, heads split into tiny
 * writes, more than 32 headers, request bodies of unknown length, and
 * upstreams that break the protocol.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createHash } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { makePki, startProxyFor, proxyOneHost, type TestPki, type TestProxy } from './helpers/proxy.js';
import { h1Request, h2Connect, h2Request, startRawUpstream } from './helpers/net.js';
import { H1Pool } from '../src/upstream/h1-pool.js';
import type { H1Handler, UpstreamError } from '../src/upstream/h1-connection.js';

const HOST = 'h1c.test';

async function proxyTo(t: TestContext, upstream: string): Promise<{ pki: TestPki; proxy: TestProxy }> {
  const pki = await makePki();
  const proxy = await proxyOneHost(t, pki, HOST, upstream);
  return { pki, proxy };
}

/** Requests over one kept-alive HTTP/1.1 client connection, in order. */
function keptAliveClient(port: number, ca: string): { request(method: string, path: string): Promise<{ status: number; body: string }>; close(): void } {
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
  return {
    request: (method, path) =>
      new Promise((resolve, reject) => {
        const req = https.request({ host: '127.0.0.1', port, path, method, servername: HOST, ca, agent, headers: { host: HOST } }, (res) => {
          let body = '';
          res.setEncoding('latin1');
          res.on('data', (c: string) => (body += c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        });
        req.on('error', reject);
        req.end();
      }),
    close: () => agent.destroy(),
  };
}

test('HEAD, 204 and 304 answers carry no body, and the same upstream connection serves every request after them', async (t) => {
  const up = await startRawUpstream((path, s) => {
    if (path === '/head') s.write('HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-type: text/plain\r\n\r\n');
    // As Node's own HTTP server answers HEAD: neither Content-Length nor Transfer-Encoding.
    else if (path === '/head-bare') s.write('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n');
    else if (path === '/head-close') s.write('HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n');
    else if (path === '/204') s.write('HTTP/1.1 204 No Content\r\nx-a: 1\r\n\r\n');
    else if (path === '/304') s.write('HTTP/1.1 304 Not Modified\r\netag: "x"\r\n\r\n');
    else s.write('HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello');
  });
  t.after(() => up.close());
  const { pki, proxy } = await proxyTo(t, up.url);
  const client = keptAliveClient(proxy.httpsPort, pki.caPem);
  t.after(() => client.close());
  assert.deepEqual(await client.request('HEAD', '/head'), { status: 200, body: '' });
  assert.deepEqual(await client.request('HEAD', '/head-bare'), { status: 200, body: '' });
  assert.deepEqual(await client.request('GET', '/204'), { status: 204, body: '' });
  assert.deepEqual(await client.request('GET', '/304'), { status: 304, body: '' });
  assert.deepEqual(await client.request('GET', '/ok'), { status: 200, body: 'hello' });
  assert.equal(up.connections(), 1, 'the bodiless answers left the upstream connection reusable');
  // A HEAD answer that says Connection: close still closes it.
  assert.deepEqual(await client.request('HEAD', '/head-close'), { status: 200, body: '' });
  assert.deepEqual(await client.request('GET', '/ok'), { status: 200, body: 'hello' });
  assert.equal(up.connections(), 2);
});

test('100 Continue and 103 Early Hints from the upstream are passed over and the final response is forwarded', async (t) => {
  const up = await startRawUpstream((_path, s) => {
    s.write('HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n');
    setTimeout(() => s.write('HTTP/1.1 201 Created\r\ncontent-length: 4\r\nx-final: yes\r\n\r\ndone'), 20);
  });
  t.after(() => up.close());
  const { pki, proxy } = await proxyTo(t, up.url);
  const r = await h1Request({ port: proxy.httpsPort, sni: HOST, ca: pki.caPem, path: '/' });
  assert.equal(r.status, 201);
  assert.equal(r.headers['x-final'], 'yes');
  assert.equal(r.text, 'done');
});

test('a body delimited by the upstream closing the connection arrives whole, over HTTP/1.1 and HTTP/2', async (t) => {
  const body = 'x'.repeat(70_000);
  const up = await startRawUpstream((_path, s) => {
    s.write('HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n');
    s.write(body.slice(0, 30_000));
    setTimeout(() => s.end(body.slice(30_000)), 20);
  });
  t.after(() => up.close());
  const { pki, proxy } = await proxyTo(t, up.url);
  const r1 = await h1Request({ port: proxy.httpsPort, sni: HOST, ca: pki.caPem, path: '/' });
  assert.equal(r1.status, 200);
  assert.equal(r1.text, body);
  const session = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => session.close());
  const r2 = await h2Request(session, { path: '/' });
  assert.equal(r2.status, 200);
  assert.equal(r2.text, body);
});

test('a chunked response with 40 headers, its head written a few bytes at a time, arrives whole with its trailers', async (t) => {
  const many = Array.from({ length: 40 }, (_, i) => `x-h${i}: v${i}\r\n`).join('');
  const wire = `HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n${many}\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: abc123\r\n\r\n`;
  const up = await startRawUpstream((_path, s) => {
    void (async () => {
      for (let i = 0; i < wire.length; i += 7) {
        s.write(wire.slice(i, i + 7));
        await delay(1);
      }
    })();
  });
  t.after(() => up.close());
  const { pki, proxy } = await proxyTo(t, up.url);
  const session = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => session.close());
  const r = await h2Request(session, { path: '/' });
  assert.equal(r.status, 200);
  assert.equal(r.text, 'hello world');
  for (let i = 0; i < 40; i++) assert.equal(r.headers[`x-h${i}`], `v${i}`, `header x-h${i}`);
  assert.equal(r.trailers['x-checksum'], 'abc123');
  const r1 = await h1Request({ port: proxy.httpsPort, sni: HOST, ca: pki.caPem, path: '/' });
  assert.equal(r1.text, 'hello world');
  assert.equal(r1.headers['x-h39'], 'v39');
});

test('request bodies without a length (chunked HTTP/1.1, HTTP/2 without content-length) reach the upstream chunked and whole; one with a length keeps it', async (t) => {
  const seen: { te: string | undefined; cl: string | undefined; sha: string }[] = [];
  const server = http.createServer((req, res) => {
    const h = createHash('sha256');
    req.on('data', (c: Buffer) => h.update(c));
    req.on('end', () => {
      seen.push({ te: req.headers['transfer-encoding'], cl: req.headers['content-length'], sha: h.digest('hex') });
      res.end('ok');
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => new Promise<void>((r) => server.close(() => r())));
  const { pki, proxy } = await proxyTo(t, `http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  const payload = Buffer.alloc(300_000, 'abcdefgh');
  const sha = createHash('sha256').update(payload).digest('hex');

  // HTTP/1.1, chunked.
  const chunked = await new Promise<number>((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port: proxy.httpsPort, method: 'POST', path: '/', servername: HOST, ca: pki.caPem, agent: false, headers: { host: HOST, 'transfer-encoding': 'chunked' } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.write(payload.subarray(0, 100_000));
    setTimeout(() => req.end(payload.subarray(100_000)), 20);
  });
  assert.equal(chunked, 200);
  // HTTP/2 without content-length.
  const session = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => session.close());
  const r2 = await h2Request(session, { path: '/', method: 'POST', body: payload });
  assert.equal(r2.status, 200);
  // HTTP/1.1 with content-length.
  const r3 = await h1Request({ port: proxy.httpsPort, sni: HOST, ca: pki.caPem, path: '/', method: 'POST', body: payload });
  assert.equal(r3.status, 200);

  assert.deepEqual(seen, [
    { te: 'chunked', cl: undefined, sha },
    { te: 'chunked', cl: undefined, sha },
    { te: undefined, cl: String(payload.length), sha },
  ]);
});

test('bytes after a complete response retire the connection: the next request goes over a new one and both are answered', async (t) => {
  let n = 0;
  const up = await startRawUpstream((_path, s) => {
    n++;
    s.write(n === 1 ? 'HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nonestray bytes' : 'HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\ntwo');
  });
  t.after(() => up.close());
  const { pki, proxy } = await proxyTo(t, up.url);
  const client = keptAliveClient(proxy.httpsPort, pki.caPem);
  t.after(() => client.close());
  assert.deepEqual(await client.request('GET', '/1'), { status: 200, body: 'one' });
  await delay(50);
  assert.deepEqual(await client.request('GET', '/2'), { status: 200, body: 'two' });
  assert.equal(up.connections(), 2);
});

test('a malformed upstream response gets 502 with a log line naming the parser error, and the proxy keeps serving', async (t) => {
  const up = await startRawUpstream((path, s) => {
    if (path === '/bad') s.write('HTTP/1.1 2x0 OK\r\n\r\n');
    else s.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
  });
  t.after(() => up.close());
  const { pki, proxy } = await proxyTo(t, up.url);
  const bad = await h1Request({ port: proxy.httpsPort, sni: HOST, ca: pki.caPem, path: '/bad' });
  assert.equal(bad.status, 502);
  assert.ok(
    proxy.logs.some((l) => typeof l.detail === 'string' && /HPE_/.test(l.detail)),
    'a log line names the llhttp error',
  );
  const good = await h1Request({ port: proxy.httpsPort, sni: HOST, ca: pki.caPem, path: '/good' });
  assert.equal(good.text, 'ok');
});

test('an upstream header with a control character in its value or a non-token name gets 502, never reaches the client', async (t) => {
  // Portico writes the pairs llhttp parsed into the client's head without checking them again
  // (src/http1/server-response.ts): this holds only while llhttp refuses what writeHead would.
  const bad: Record<string, string> = {
    '/nul': 'x-a: a\x00b',
    '/ctl': 'x-a: a\x01b',
    '/del': 'x-a: a\x7fb',
    '/cr': 'x-a: a\rb',
    '/name-space': 'x a: b',
    '/name-paren': 'x(a): b',
    '/name-colon-less': 'x-a',
  };
  const up = await startRawUpstream((path, s) => {
    const line = bad[path];
    s.write(line === undefined ? 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok' : `HTTP/1.1 200 OK\r\n${line}\r\ncontent-length: 2\r\n\r\nok`);
  });
  t.after(() => up.close());
  const { pki, proxy } = await proxyTo(t, up.url);
  for (const path of Object.keys(bad)) {
    const r = await h1Request({ port: proxy.httpsPort, sni: HOST, ca: pki.caPem, path });
    assert.equal(r.status, 502, path);
    assert.equal(r.headers['x-a'], undefined, path);
  }
  const h2 = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => h2.close());
  for (const path of Object.keys(bad)) assert.equal((await h2Request(h2, { path })).status, 502, path);
  assert.equal((await h1Request({ port: proxy.httpsPort, sni: HOST, ca: pki.caPem, path: '/good' })).text, 'ok');
});

test('a request head with CR, LF or NUL in a header value is refused before a byte is written, naming the header; a clean one goes out', async (t) => {
  // Every value reaching the upstream head was checked before (llhttp, nghttp2, the config schema): this is the
  // last guard, one test over all values at once, and must still name the header it refuses.
  const heads: string[] = [];
  const up = await startRawUpstream((path, s) => {
    heads.push(path);
    s.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
  });
  t.after(() => up.close());
  const { port } = new URL(up.url);
  const pool = new H1Pool({ host: '127.0.0.1', port: Number(port), connectTimeoutMs: 2000, tls: undefined });
  t.after(() => pool.close());
  const done = (): { handler: H1Handler; result: Promise<number> } => {
    let settle!: (status: number) => void;
    let status = 0;
    const result = new Promise<number>((resolve) => (settle = resolve));
    const handler: H1Handler = {
      onUpstreamHeaders: (st) => ((status = st), true),
      onUpstreamData: () => true,
      onUpstreamEnd: () => settle(status),
      onUpstreamError: () => settle(-1),
      clientBehind: () => false,
    } as H1Handler;
    return { handler, result };
  };
  for (const [name, value] of [['x-cr', 'a\rb'], ['x-lf', 'a\nInjected: yes'], ['x-nul', 'a\0b']] as const) {
    const conn = pool.acquire();
    assert.throws(
      () => conn.send(done().handler, 'GET', '/bad', { host: 'h', 'x-ok': 'fine', [name]: value, 'x-after': 'fine' }, null, -1, 5000),
      (err: UpstreamError) => err.code === 'PORTICO_INVALID_REQUEST_HEAD' && err.message.includes(name),
    );
    conn.close();
  }
  const conn = pool.acquire();
  const ok = done();
  conn.send(ok.handler, 'GET', '/good', { host: 'h', 'x-list': ['a', 'b'], 'x-n': 5 }, null, -1, 5000);
  assert.equal(await ok.result, 200);
  assert.deepEqual(heads, ['/good']);
});

test('small and large binary bodies reach HTTP/1.1 clients byte for byte (every byte value; either side of the one-write size)', async (t) => {
  // Small answers leave in one latin1 string write with their head (src/http1/server-response.ts, SMALL_BODY).
  const bodyOf = (n: number): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => (i * 7 + 3) & 0xff));
  const sizes = [1, 255, 256, 2047, 2048, 2049, 70_000];
  const up = await startRawUpstream((path, s) => {
    const body = bodyOf(Number(path.slice(1)));
    s.write(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: ${body.length}\r\n\r\n`), body]));
  });
  t.after(() => up.close());
  const { pki, proxy } = await proxyTo(t, up.url);
  for (const n of sizes) {
    const r = await h1Request({ port: proxy.httpsPort, sni: HOST, ca: pki.caPem, path: `/${n}` });
    assert.equal(r.status, 200, String(n));
    assert.equal(r.headers['content-length'], String(n));
    assert.ok(r.body.equals(bodyOf(n)), `${n}-byte body differs`);
  }
});

test('an idle upstream connection is closed by Portico after the 4 s keep-alive timeout', { timeout: 15_000 }, async (t) => {
  const up = await startRawUpstream((_path, s) => s.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok'));
  t.after(() => up.close());
  const { pki, proxy } = await proxyTo(t, up.url);
  assert.equal((await h1Request({ port: proxy.httpsPort, sni: HOST, ca: pki.caPem })).text, 'ok');
  await delay(2500);
  assert.equal(up.closed(), 0, 'still open after 2.5 s');
  const deadline = Date.now() + 4000;
  while (up.closed() === 0 && Date.now() < deadline) await delay(100);
  assert.equal(up.closed(), 1, 'closed by Portico within about 5 s of going idle');
});

test("an upstream's Keep-Alive: timeout hint shortens how long its idle connections are reused; without one they are reused", async (t) => {
  const short = await startRawUpstream((_path, s) => s.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\nKeep-Alive: timeout=2\r\n\r\nok'));
  const plain = await startRawUpstream((_path, s) => s.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok'));
  t.after(() => Promise.all([short.close(), plain.close()]));
  const pki = await makePki();
  const cert = await pki.issue('h1c', [HOST]);
  const proxy = await startProxyFor(t, pki, {
    hosts: {
      [HOST]: {
        tls: cert,
        routes: [
          { path: '/short', upstream: short.url },
          { path: '/plain', upstream: plain.url },
        ],
      },
    },
  });
  const get = (path: string) => h1Request({ port: proxy.httpsPort, sni: HOST, ca: pki.caPem, path });
  assert.equal((await get('/short')).text, 'ok');
  assert.equal((await get('/plain')).text, 'ok');
  await delay(1300);
  assert.equal((await get('/short')).text, 'ok');
  assert.equal((await get('/plain')).text, 'ok');
  // timeout=2 leaves 1 s of reuse: after 1.3 s idle the first connection is not used again.
  assert.equal(short.connections(), 2, 'a connection idle past the hint minus 1 s was reused');
  assert.equal(plain.connections(), 1, 'without a hint the connection is kept for 4 s');
});


test('a response paused for a slow client has its whole responseTimeout from the moment it is resumed: a timer due at once then does not cut it', async (t) => {
  // The upstream sends part of a body, then nothing: only responseTimeout ends the exchange.
  const up = await startRawUpstream((_path, s) => s.write(`HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n${'x'.repeat(1000)}`));
  t.after(() => up.close());
  const { port } = new URL(up.url);
  const pool = new H1Pool({ host: '127.0.0.1', port: Number(port), connectTimeoutMs: 2000, tls: undefined });
  t.after(() => pool.close());
  const seen: { failed?: { code: string; at: number } } = {};
  let paused!: () => void;
  const firstData = new Promise<void>((resolve) => (paused = resolve));
  const handler = {
    onUpstreamHeaders: () => true,
    // The client is behind: the response is paused at its first chunk.
    onUpstreamData: () => (paused(), false),
    onUpstreamEnd: () => {},
    onUpstreamError: (err: UpstreamError) => (seen.failed = { code: err.code, at: performance.now() }),
    clientBehind: () => true,
  } as H1Handler;
  const conn = pool.acquire();
  conn.send(handler, 'GET', '/', { host: 'h' }, null, -1, 300);
  await firstData;
  // Paused for three times the timeout (the client's time, not the upstream's): no timeout meanwhile.
  await delay(900);
  assert.equal(seen.failed, undefined, 'no timeout while paused');
  const resumed = performance.now();
  conn.resume();
  // The timer comes due in the same turn as the resume (a busy loop runs timers before it reads sockets).
  conn.responseTimerFired();
  assert.equal(seen.failed, undefined, 'not cut at the resume');
  // The upstream really is silent from here: cut once responseTimeout has passed since the resume.
  for (let i = 0; i < 100 && seen.failed === undefined; i++) await delay(20);
  const failed = seen.failed as { code: string; at: number } | undefined;
  assert.ok(failed !== undefined, 'cut in the end');
  assert.equal(failed.code, 'PORTICO_RESPONSE_TIMEOUT');
  assert.ok(failed.at - resumed >= 290, `cut ${Math.round(failed.at - resumed)} ms after the resume`);
});
