/**
 * How the HTTPS listener speaks HTTP/1.1 and HTTP/1.0 to clients: pipelining, Connection: close,
 * HTTP/1.0 framing, chunked responses, 100-continue, HEAD, bad requests, requestTimeout, Date and
 * Server, long request targets, byte-at-a-time heads, keep-alive. Exact bytes go out over raw TLS
 * sockets and exact bytes are parsed back, so a change of the HTTP/1.1 server engine (node:http
 * today) cannot slip a framing difference past these tests.
 */
import { after, before, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type http from 'node:http';
import { setTimeout as delay } from 'node:timers/promises';
import { makePki, startProxy, type TestPki, type TestProxy } from './helpers/proxy.js';
import { startUpstream, type SeenRequest } from './helpers/net.js';
import { RawClient } from './helpers/raw-http1.js';

const HOST = 'h1.test';
/** A body the /fixed path always answers with, by Content-Length. */
const FIXED_BODY = 'fixed-body-0123456789';
/** The two writes of the /chunked path, sent without Content-Length (so chunked to Portico). */
const CHUNK_PARTS = ['first-part;', 'second-part'] as const;
const UPSTREAM_SERVER = 'portico-test-upstream/1.0';
const FIXED_DATE = 'Sun, 06 Nov 1994 08:49:37 GMT';

type Upstream = Awaited<ReturnType<typeof startUpstream>>;
let pki: TestPki;
/** maxHeaderSize 12kb, otherwise defaults. */
let proxy: TestProxy;
/** headersTimeout 500ms, requestTimeout 1s. */
let slowProxy: TestProxy;
/** requestTimeout 1s only (headersTimeout left at its 30s default). */
let rtOnlyProxy: TestProxy;
let up: Upstream;
/** A fresh upstream used only by the keep-alive test, so its connection count is that test's alone. */
let kaUp: Upstream;
let kaUpConnections = 0;

/**
 * The test upstream. Every path reads the whole body first (recorded in `seen.body`), then:
 * /chunked writes two parts without Content-Length (chunked on the wire), /fixed answers
 * FIXED_BODY by Content-Length, /nodate sends no Date, /fixeddate a fixed Date; anything
 * else echoes `<method> <url> <body length>` by Content-Length. All send a Server header.
 */
function answer(req: http.IncomingMessage, res: http.ServerResponse, seen: SeenRequest): void {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    seen.body = Buffer.concat(chunks);
    const path = (req.url ?? '').split('?')[0] ?? '';
    res.setHeader('server', UPSTREAM_SERVER);
    if (path === '/chunked') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write(CHUNK_PARTS[0]);
      setTimeout(() => {
        res.write(CHUNK_PARTS[1]);
        res.end();
      }, 20);
      return;
    }
    if (path === '/nodate') res.sendDate = false;
    if (path === '/fixeddate') res.setHeader('date', FIXED_DATE);
    const body = path === '/fixed' ? FIXED_BODY : `${req.method ?? ''} ${req.url ?? ''} ${seen.body.length}`;
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
}

before(async () => {
  pki = await makePki();
  up = await startUpstream(answer);
  kaUp = await startUpstream(answer);
  kaUp.server.on('connection', () => {
    kaUpConnections++;
  });
  const cert = await pki.issue('h1', [HOST]);
  const routes = [
    { path: '/', upstream: up.url },
    { path: '/ka', upstream: kaUp.url },
  ];
  proxy = await startProxy(pki, { hosts: { [HOST]: { tls: cert, routes } }, limits: { maxHeaderSize: '12kb', shutdownTimeout: '1s' } });
  slowProxy = await startProxy(pki, { hosts: { [HOST]: { tls: cert, routes } }, limits: { headersTimeout: '500ms', requestTimeout: '1s', shutdownTimeout: '1s' } });
  rtOnlyProxy = await startProxy(pki, { hosts: { [HOST]: { tls: cert, routes } }, limits: { requestTimeout: '1s', shutdownTimeout: '1s' } });
});

after(async () => {
  await proxy?.stop();
  await slowProxy?.stop();
  await rtOnlyProxy?.stop();
  await up?.close();
  await kaUp?.close();
  await pki?.cleanup();
});

/** A raw HTTP/1.1 client on `target`'s HTTPS listener for HOST. */
function open(t: TestContext, target: TestProxy = proxy): Promise<RawClient> {
  return RawClient.open(t, { port: target.httpsPort, tls: { servername: HOST, ca: pki.caPem } });
}

function get(path: string, extra = ''): string {
  return `GET ${path} HTTP/1.1\r\nHost: ${HOST}\r\n${extra}\r\n`;
}

test('three pipelined GETs in one write get three responses in order, and the connection stays open', async (t) => {
  const c = await open(t);
  await c.write(get('/pipe/one') + get('/pipe/two') + get('/pipe/three'));
  for (const name of ['one', 'two', 'three']) {
    const r = await c.response();
    assert.equal(r.status, 200);
    assert.equal(r.text, `GET /pipe/${name} 0`, 'responses come back in request order');
    assert.notEqual(r.headers.connection?.toLowerCase(), 'close');
  }
  assert.equal(await c.closesWithin(200), false, 'the connection stays open after the pipelined requests');
  assert.equal(c.pending.length, 0, 'nothing but the three responses arrived');
  await c.write(get('/pipe/four'));
  assert.equal((await c.response()).text, 'GET /pipe/four 0', 'and it still serves');
});

test('a request with Connection: close gets connection: close and the server closes the socket after the response', async (t) => {
  const c = await open(t);
  await c.write(get('/close', 'Connection: close\r\n'));
  const r = await c.response();
  assert.equal(r.status, 200);
  assert.equal(r.text, 'GET /close 0');
  assert.equal(r.headers.connection?.toLowerCase(), 'close');
  assert.equal(await c.closesWithin(1000), true, 'the server closed the connection');
  assert.equal(c.pending.length, 0, 'nothing after the response');
});

test('an HTTP/1.0 request without keep-alive is answered and closed, never with chunked framing, and a length-less body arrives whole', async (t) => {
  // Content-Length from the upstream: passed on, then the server closes.
  const a = await open(t);
  await a.write(`GET /fixed HTTP/1.0\r\nHost: ${HOST}\r\n\r\n`);
  const ra = await a.response();
  assert.equal(ra.status, 200);
  // Current behaviour: the status line says HTTP/1.1 (the server's own version, RFC 9110 §6.2) and
  // the response carries "Connection: close".
  assert.match(ra.statusLine, /^HTTP\/1\.1 200 /);
  assert.equal(ra.headers.connection?.toLowerCase(), 'close');
  assert.equal(ra.headers['content-length'], String(FIXED_BODY.length));
  assert.equal(ra.text, FIXED_BODY);
  assert.equal(await a.closesWithin(1000), true, 'the server closed the HTTP/1.0 connection');

  // The upstream answers chunked (no Content-Length): an HTTP/1.0 client cannot parse chunked, so the
  // body is delimited by the close instead.
  const b = await open(t);
  await b.write(`GET /chunked HTTP/1.0\r\nHost: ${HOST}\r\n\r\n`);
  assert.equal(await b.closesWithin(3000), true, 'the server closed the connection to end the body');
  const rb = await b.response();
  assert.equal(rb.status, 200);
  assert.equal(rb.headers['transfer-encoding'], undefined, 'no Transfer-Encoding towards an HTTP/1.0 client');
  assert.equal(rb.chunked, false);
  assert.equal(rb.text, CHUNK_PARTS.join(''), 'the body arrived whole, close-delimited');

  // Even with Connection: keep-alive, a length-less body is not chunked to HTTP/1.0: the connection closes.
  const c = await open(t);
  await c.write(`GET /chunked HTTP/1.0\r\nHost: ${HOST}\r\nConnection: keep-alive\r\n\r\n`);
  assert.equal(await c.closesWithin(3000), true, 'closed to delimit the body');
  const rc = await c.response();
  assert.equal(rc.headers['transfer-encoding'], undefined);
  assert.notEqual(rc.headers.connection?.toLowerCase(), 'keep-alive');
  assert.equal(rc.text, CHUNK_PARTS.join(''));
});

test('an HTTP/1.0 request with Connection: keep-alive and a Content-Length response is kept alive for a second request', async (t) => {
  const c = await open(t);
  await c.write(`GET /fixed HTTP/1.0\r\nHost: ${HOST}\r\nConnection: keep-alive\r\n\r\n`);
  const r1 = await c.response();
  assert.equal(r1.status, 200);
  assert.equal(r1.headers.connection?.toLowerCase(), 'keep-alive');
  assert.equal(r1.headers['content-length'], String(FIXED_BODY.length));
  assert.equal(r1.text, FIXED_BODY);
  assert.equal(await c.closesWithin(200), false, 'the connection stays open');
  await c.write(`GET /ka10/second HTTP/1.0\r\nHost: ${HOST}\r\nConnection: keep-alive\r\n\r\n`);
  const r2 = await c.response();
  assert.equal(r2.status, 200);
  assert.equal(r2.text, 'GET /ka10/second 0');
});

test('an HTTP/1.1 client gets a chunked response when the upstream sends no Content-Length, and the de-chunked body is whole', async (t) => {
  const c = await open(t);
  await c.write(get('/chunked'));
  const r = await c.response();
  assert.equal(r.status, 200);
  assert.equal(r.headers['transfer-encoding']?.toLowerCase(), 'chunked');
  assert.equal(r.headers['content-length'], undefined);
  assert.equal(r.chunked, true);
  assert.equal(r.text, CHUNK_PARTS.join(''));
  // The terminating chunk was there: the connection is reusable.
  await c.write(get('/after-chunked'));
  assert.equal((await c.response()).text, 'GET /after-chunked 0');
});

test('Expect: 100-continue gets "100 Continue" before the body is sent, then the final response, and the upstream gets the whole body', async (t) => {
  const c = await open(t);
  const body = 'x'.repeat(3000);
  await c.write(`POST /continue HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: ${body.length}\r\nExpect: 100-continue\r\n\r\n`);
  const interim = await c.response({ timeoutMs: 2000 });
  assert.equal(interim.status, 100);
  assert.match(interim.statusLine, /^HTTP\/1\.1 100 Continue$/);
  assert.equal(c.pending.length, 0, 'nothing but the 100 before the body is sent');
  await c.write(body.slice(0, 1000));
  await c.write(body.slice(1000));
  const r = await c.response();
  assert.equal(r.status, 200);
  assert.equal(r.text, `POST /continue ${body.length}`);
  const seen = up.seen.find((s) => s.url === '/continue');
  assert.equal(seen?.body.toString(), body);
});

test('HEAD gets the upstream content-length and no body bytes, and a following GET on the connection is answered cleanly', async (t) => {
  const c = await open(t);
  await c.write(`HEAD /fixed HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`);
  const h = await c.response({ head: true });
  assert.equal(h.status, 200);
  assert.equal(h.headers['content-length'], String(FIXED_BODY.length));
  assert.equal(h.headers['transfer-encoding'], undefined);
  await delay(100);
  assert.equal(c.pending.length, 0, `body bytes after a HEAD response: ${JSON.stringify(c.pending.toString('latin1'))}`);
  await c.write(get('/fixed'));
  const g = await c.response();
  assert.match(g.statusLine, /^HTTP\/1\.1 200 /);
  assert.equal(g.text, FIXED_BODY);
  await delay(50);
  assert.equal(c.pending.length, 0);
  assert.ok(up.seen.some((s) => s.url === '/fixed' && s.method === 'HEAD'), 'the HEAD went upstream as HEAD');
});

test('a chunked request body sent in several writes reaches the upstream whole, and the connection serves a second request', async (t) => {
  const c = await open(t);
  const parts = ['alpha-', 'beta-', 'gamma-delta-epsilon'];
  await c.write(`POST /chunked-up HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: chunked\r\n\r\n`);
  for (const p of parts) {
    await c.write(`${p.length.toString(16)}\r\n`);
    await delay(5);
    await c.write(`${p}\r\n`);
    await delay(5);
  }
  await c.write('0\r\n\r\n');
  const whole = parts.join('');
  const r = await c.response();
  assert.equal(r.status, 200);
  assert.equal(r.text, `POST /chunked-up ${whole.length}`);
  assert.equal(up.seen.find((s) => s.url === '/chunked-up')?.body.toString(), whole);
  await c.write(get('/after-chunked-up'));
  assert.equal((await c.response()).text, 'GET /after-chunked-up 0');
});

test('a malformed request line or garbage gets 400 and a close, and Transfer-Encoding with Content-Length gets 400 without reaching the upstream', async (t) => {
  // A request line without a version ("GET /x\r\n" then headers), which llhttp takes as HTTP/0.9, gets 505:
  // see http1-request-framing.test.ts.
  const cases: [string, string][] = [
    ['extra token after the version', `GET /bad1 HTTP/1.1 extra\r\nHost: ${HOST}\r\n\r\n`],
    ['garbage', '\x16\x03\x01garbage \x00\xff bytes\r\n\r\n'],
    ['Transfer-Encoding and Content-Length', `POST /bad3 HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n`],
  ];
  for (const [what, text] of cases) {
    const c = await open(t);
    await c.write(text);
    const r = await c.response();
    assert.equal(r.status, 400, what);
    assert.equal(r.headers.connection?.toLowerCase(), 'close', what);
    assert.equal(await c.closesWithin(1000), true, `${what}: the connection is closed`);
  }
  assert.equal(up.seen.some((s) => /^\/bad/.test(s.url)), false, 'no bad request reached the upstream');
});

/** Sends a POST head declaring 100 body bytes, then one byte every 100 ms; returns when the server closes or after `waitMs`. */
async function trickleBody(t: TestContext, target: TestProxy, path: string, waitMs: number): Promise<{ c: RawClient; closed: boolean; ms: number }> {
  const c = await open(t, target);
  const started = performance.now();
  await c.write(`POST ${path} HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: 100\r\n\r\n`);
  // The whole body would take 10 s.
  const trickle = setInterval(() => {
    if (!c.socket.destroyed) c.socket.write('b');
  }, 100);
  t.after(() => clearInterval(trickle));
  const closed = await c.closesWithin(waitMs);
  clearInterval(trickle);
  return { c, closed, ms: (closed ? c.closedAt : performance.now()) - started };
}

test('a request whose body trickles past requestTimeout is answered 408 and closed within requestTimeout + 1.5 s', async (t) => {
  // slowProxy: headersTimeout 500ms, requestTimeout 1s.
  const { c, closed, ms } = await trickleBody(t, slowProxy, '/slow-body', 4000);
  assert.equal(closed, true, `the connection is still open after ${Math.round(ms)} ms`);
  // Timeouts are checked once a second, so 1 to 2 s after the first byte.
  assert.ok(ms >= 900 && ms < 2500, `closed after ${Math.round(ms)} ms, requestTimeout is 1 s`);
  // A bare 408 with Connection: close, then the connection ends.
  const r = await c.response();
  assert.equal(r.status, 408);
  assert.equal(r.headers.connection?.toLowerCase(), 'close');
  assert.equal(c.pending.length, 0, 'nothing after the 408');
  // The body was being streamed upstream; the upstream request is cut off, never completed.
  const seen = up.seen.find((s) => s.url === '/slow-body');
  if (seen !== undefined) {
    const gone = performance.now() + 1000;
    while (!seen.aborted && performance.now() < gone) await delay(10);
    assert.equal(seen.aborted, true, 'the upstream request was aborted');
    assert.ok(seen.body.length < 100, 'the upstream never got a complete body');
  }
});

// Under node:http's server this failed: node:http swaps the two timeouts when headersTimeout > requestTimeout,
// so the body could trickle for 30 s (408 after ~31 s). Portico's own server checks each on its own.
test('requestTimeout below the default headersTimeout is still enforced on a trickled body', async (t) => {
  const { closed, ms } = await trickleBody(t, rtOnlyProxy, '/slow-body-rt-only', 2500);
  assert.equal(closed, true, `the connection is still open after ${Math.round(ms)} ms with requestTimeout 1s`);
  assert.ok(ms >= 900, `closed after ${Math.round(ms)} ms, before requestTimeout`);
});

test('a proxied response carries a Date (added when the upstream sends none, the upstream one otherwise) and the upstream Server header', async (t) => {
  const c = await open(t);
  await c.write(get('/nodate'));
  const r1 = await c.response();
  assert.equal(r1.status, 200);
  assert.equal(r1.headers.server, UPSTREAM_SERVER, 'the upstream Server header is passed on');
  const date = r1.headers.date;
  assert.ok(date !== undefined, 'a Date is added');
  assert.match(date, /^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$/, 'IMF-fixdate');
  assert.ok(Math.abs(Date.parse(date) - Date.now()) < 5000, `Date ${date} is now`);
  // Current behaviour: an upstream Date passes through unchanged (one Date, not two).
  await c.write(get('/fixeddate'));
  const r2 = await c.response();
  assert.equal(r2.headers.date, FIXED_DATE);
  assert.equal(r2.headers.server, UPSTREAM_SERVER);
});

test('an 8 KiB request target split over several TLS writes is proxied, one past maxHeaderSize gets 414 PORTICO_URI_TOO_LONG, and a header field past it after a short request line 431', async (t) => {
  /** Writes `text` in ~1000-byte TLS writes. */
  const writeSplit = async (c: RawClient, text: string): Promise<void> => {
    for (let i = 0; i < text.length; i += 1000) {
      await c.write(text.slice(i, i + 1000));
      await delay(2);
    }
  };
  const longPath = `/long/${'a'.repeat(8192)}`;
  const ok = await open(t);
  await writeSplit(ok, get(longPath));
  const r = await ok.response();
  assert.equal(r.status, 200);
  assert.equal(r.text, `GET ${longPath} 0`);
  assert.equal(up.seen.at(-1)?.url, longPath);

  // maxHeaderSize is 12kb here: a 13 KiB target alone is over it.
  const tooLong = `/toolong/${'b'.repeat(13 * 1024)}`;
  const bad = await open(t);
  await writeSplit(bad, get(tooLong)).catch(() => {}); // the server may close before the last write
  const rb = await bad.response();
  assert.equal(rb.status, 414, 'the request line alone is over the limit (RFC 9112 §3)');
  assert.equal(rb.headers['x-portico-error'], 'PORTICO_URI_TOO_LONG');
  assert.match(rb.text, /^URI Too Long: /);
  assert.equal(await bad.closesWithin(1000), true, 'closed after the 414');
  assert.equal(up.seen.some((s) => s.url.startsWith('/toolong/')), false);

  // The request line ends in the first write; the overflow comes writes later, inside a header field.
  const bigHeader = await open(t);
  await writeSplit(bigHeader, get('/bigheader', `X-Big: ${'c'.repeat(13 * 1024)}\r\n`)).catch(() => {});
  const rh = await bigHeader.response();
  assert.equal(rh.status, 431, 'header fields over the limit stay 431 (RFC 6585 §5)');
  assert.equal(rh.headers['x-portico-error'], 'PORTICO_HEADERS_TOO_LARGE');
  assert.equal(up.seen.some((s) => s.url === '/bigheader'), false);
});

test('a request head written one byte at a time is parsed and proxied', async (t) => {
  const c = await open(t);
  const text = `GET /bytewise?x=1 HTTP/1.1\r\nHost: ${HOST}\r\nX-One: 1\r\nX-Two: two two\r\nAccept: */*\r\n\r\n`;
  for (let i = 0; i < text.length; i++) {
    await c.write(text[i] ?? '');
    if (i % 8 === 0) await delay(1);
  }
  const r = await c.response();
  assert.equal(r.status, 200);
  assert.equal(r.text, 'GET /bytewise?x=1 0');
  const seen = up.seen.find((s) => s.url === '/bytewise?x=1');
  assert.equal(seen?.headers['x-one'], '1');
  assert.equal(seen?.headers['x-two'], 'two two');
});

test('50 sequential requests on one keep-alive connection all succeed over fewer than 50 upstream connections', async (t) => {
  const c = await open(t);
  const before = kaUp.seen.length;
  const connsBefore = kaUpConnections;
  for (let i = 0; i < 50; i++) {
    await c.write(get(`/ka/${i}`));
    const r = await c.response();
    assert.equal(r.status, 200, `request ${i}`);
    assert.equal(r.text, `GET /ka/${i} 0`);
    assert.notEqual(r.headers.connection?.toLowerCase(), 'close');
    assert.equal(c.closed, false, `closed after request ${i}`);
  }
  assert.equal(kaUp.seen.length - before, 50);
  const used = kaUpConnections - connsBefore;
  assert.ok(used >= 1 && used < 50, `${used} upstream connections for 50 requests`);
});
