/**
 * "interceptErrors": an upstream's error response with a page of its host's
 * reaches the client as the page (nginx's proxy_intercept_errors), over
 * HTTP/1.1 and HTTP/2 clients, from HTTP/1.1 and h2c upstreams; statuses
 * without a page and routes without the setting pass on untouched; client and
 * upstream connections stay usable, large error bodies included.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { validateConfig } from '../src/config/load.js';
import { checkHosts, makePki, startProxy, type TestPki, type TestProxy } from './helpers/proxy.js';
import { h2Connect, h2Request, startUpstream } from './helpers/net.js';
import { RawClient } from './helpers/raw-http1.js';
import { freeReadBuffers } from '../src/upstream/read-buffers.js';
import { curl, requireTool } from './helpers/real-peers.js';

const PAGE_5XX = '<h1>We are fixing it</h1>\n';
const PAGE_401 = 'please log in\n';
const PAGE_418 = 'short and stout\n';
const PAGE_416 = 'nothing there\n';
const BIG = 4 * 1024 * 1024;
const MEDIUM = 48 * 1024;

type Upstream = Awaited<ReturnType<typeof startUpstream>>;
let pki: TestPki;
let proxy: TestProxy;
let h1: Upstream;
let h1Connections = 0;
let h2c: { url: string; sessions: () => number; close(): Promise<void> };
/** The h2c upstream's /upload requests: body bytes it got, whether the body ended (as whole), the stream's RST_STREAM code. */
const uploads: { bytes: number; ended: boolean; rstCode: number }[] = [];

/** An app's error answers by path: bodies and headers a page must hide, and the few it must keep. */
function answerH1(req: IncomingMessage, res: ServerResponse): void {
  req.resume();
  const path = req.url ?? '/';
  const secret = (status: number, body: string | Buffer, headers: Record<string, string> = {}): void => {
    res.statusCode = status;
    res.setHeader('content-type', 'text/plain');
    res.setHeader('etag', '"app-etag"');
    res.setHeader('set-cookie', 'app=1');
    res.setHeader('x-app', 'yes');
    for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
    res.end(body);
  };
  switch (path) {
    case '/fail':
      return secret(500, 'stack trace secret');
    case '/busy':
      return secret(503, 'busy secret', { 'retry-after': '7' });
    case '/auth':
      return secret(401, 'auth secret', { 'www-authenticate': 'Bearer realm="app"' });
    case '/teapot':
      return secret(418, 'teapot secret');
    case '/conflict':
      return secret(409, 'conflict body');
    case '/range':
      return secret(416, 'range secret', { 'content-range': 'bytes */1234' });
    case '/medium':
      // The head first, the body a moment later: it is read apart from the head (raw, into recycled buffers).
      res.writeHead(500, { 'content-type': 'text/plain', 'content-length': MEDIUM });
      res.flushHeaders();
      setTimeout(() => res.end(Buffer.alloc(MEDIUM, 0x6d)), 20);
      return;
    case '/big':
      return secret(500, Buffer.alloc(BIG, 0x62));
    case '/bigchunked':
      res.writeHead(500, { 'content-type': 'text/plain' });
      res.on('error', () => {});
      res.end(Buffer.alloc(BIG, 0x63));
      return;
    default:
      res.setHeader('content-type', 'text/plain');
      res.end('fine');
  }
}

async function startH2c(): Promise<typeof h2c> {
  const server = http2.createServer();
  let sessions = 0;
  const open = new Set<http2.ServerHttp2Session>();
  server.on('session', (s: http2.ServerHttp2Session) => {
    sessions++;
    open.add(s);
    s.once('close', () => open.delete(s));
  });
  server.on('stream', (stream, headers) => {
    stream.on('error', () => {});
    const path = headers[':path'];
    if (path === '/upload') {
      // Refuses the upload at once, as an app out of room does, and notes how the request body ended.
      const seen = { bytes: 0, ended: false, rstCode: -1 };
      uploads.push(seen);
      stream.on('data', (c: Buffer) => (seen.bytes += c.length));
      stream.on('end', () => (seen.ended = true));
      stream.on('close', () => (seen.rstCode = stream.rstCode));
      stream.respond({ ':status': 503, 'content-type': 'text/plain' });
      stream.write('no room');
      return;
    }
    const answer = (status: number, body: string | Buffer, extra: http2.OutgoingHttpHeaders = {}): void => {
      stream.respond({ ':status': status, 'content-type': 'text/plain', etag: '"h2-etag"', 'x-app': 'h2', ...extra });
      stream.end(body);
    };
    if (path === '/fail') return answer(500, 'h2 app failed');
    if (path === '/busy') return answer(503, 'h2 busy', { 'retry-after': '9' });
    if (path === '/conflict') return answer(409, 'h2 conflict');
    if (path === '/big') return answer(500, Buffer.alloc(BIG, 0x68));
    answer(200, 'h2 fine');
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `h2c://127.0.0.1:${(server.address() as AddressInfo).port}`,
    sessions: () => sessions,
    close: () =>
      new Promise<void>((r) => {
        for (const s of open) s.destroy();
        server.close(() => r());
      }),
  };
}

before(async () => {
  pki = await makePki();
  await mkdir(join(pki.dir, 'pages'));
  await writeFile(join(pki.dir, 'pages', '5xx.html'), PAGE_5XX);
  await writeFile(join(pki.dir, 'pages', '401.txt'), PAGE_401);
  await writeFile(join(pki.dir, 'pages', '418.txt'), PAGE_418);
  await writeFile(join(pki.dir, 'pages', '416.txt'), PAGE_416);
  h1 = await startUpstream(answerH1);
  h1.server.on('connection', () => h1Connections++);
  h2c = await startH2c();
  const cert = await pki.issue('ie', ['ie.test', 'rt.test']);
  const errorPages = { '5xx': 'pages/5xx.html', '401': 'pages/401.txt', '418': 'pages/418.txt', '416': 'pages/416.txt' };
  proxy = await startProxy(pki, {
    hosts: {
      'ie.test': {
        tls: cert,
        errorPages,
        interceptErrors: true,
        routes: [
          { path: '/', upstream: h1.url },
          { path: '/api', upstream: h1.url, stripPrefix: true, interceptErrors: false },
          { path: '/h2c', upstream: h2c.url, stripPrefix: true },
        ],
      },
      // Off on the host, on for one route.
      'rt.test': {
        tls: cert,
        errorPages,
        routes: [
          { path: '/', upstream: h1.url, interceptErrors: true },
          { path: '/plain', upstream: h1.url, stripPrefix: true },
        ],
      },
    },
  });
});

after(async () => {
  await proxy.stop();
  await h1.close();
  await h2c.close();
  await pki.cleanup();
});

/** The page's head: its own type and length, no-store, and nothing of the upstream's body headers. */
function assertPageHead(headers: Record<string, unknown>, page: string, type = 'text/html; charset=utf-8'): void {
  assert.equal(headers['content-type'], type);
  assert.equal(String(headers['content-length']), String(Buffer.byteLength(page)));
  assert.equal(headers['cache-control'], 'no-store');
  for (const gone of ['etag', 'set-cookie', 'x-app', 'x-portico-error', 'transfer-encoding']) assert.equal(headers[gone], undefined, `${gone} is not carried over`);
}

test('HTTP/1.1 client, HTTP/1.1 upstream: error bodies with a page are replaced on one kept-alive connection, the upstream connection reused', async (t) => {
  const c = await RawClient.open(t, { port: proxy.httpsPort, tls: { servername: 'ie.test', ca: pki.caPem } });
  const get = async (path: string, method = 'GET') => {
    await c.write(`${method} ${path} HTTP/1.1\r\nHost: ie.test\r\n\r\n`);
    return c.response({ head: method === 'HEAD' });
  };
  const before = h1Connections;

  let r = await get('/fail');
  assert.equal(r.status, 500);
  assert.equal(r.text, PAGE_5XX);
  assert.equal(r.chunked, false);
  assertPageHead(r.headers, PAGE_5XX);
  r = await get('/ok');
  assert.equal(r.status, 200);
  assert.equal(r.text, 'fine', 'the connection carries the next request');

  r = await get('/busy');
  assert.equal(r.status, 503);
  assert.equal(r.text, PAGE_5XX);
  assert.equal(r.headers['retry-after'], '7', 'Retry-After is kept');
  r = await get('/auth');
  assert.equal(r.status, 401);
  assert.equal(r.text, PAGE_401, 'an exact status wins over its class');
  assert.equal(r.headers['www-authenticate'], 'Bearer realm="app"', 'WWW-Authenticate is kept');
  assertPageHead(r.headers, PAGE_401, 'text/plain; charset=utf-8');
  r = await get('/teapot');
  assert.equal(r.status, 418, 'a page for a status only upstreams answer');
  assert.equal(r.text, PAGE_418);

  r = await get('/conflict');
  assert.equal(r.status, 409);
  assert.equal(r.text, 'conflict body', 'a status without a page passes on as it is');
  assert.equal(r.headers['etag'], '"app-etag"');
  assert.equal(r.headers['x-app'], 'yes');

  assert.equal(h1Connections - before, 1, 'short error bodies are read to their end and the upstream connection reused');

  r = await get('/fail', 'HEAD');
  assert.equal(r.status, 500);
  assert.equal(r.body.length, 0, 'HEAD gets the head alone');
  assertPageHead(r.headers, PAGE_5XX);
  await c.write('POST /fail HTTP/1.1\r\nHost: ie.test\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nform=data');
  r = await c.response();
  assert.equal(r.status, 500);
  assert.equal(r.text, PAGE_5XX, 'a request with a body too');
  r = await get('/ok');
  assert.equal(r.text, 'fine');

  // A body read apart from its head (raw, recycled buffers) is dropped too, and the connection then reused.
  const beforeMedium = h1Connections;
  const freeBefore = freeReadBuffers();
  r = await get('/medium');
  assert.equal(r.status, 500);
  assert.equal(r.text, PAGE_5XX);
  await delay(150);
  assert.ok(freeReadBuffers() > freeBefore, 'the read buffers of the dropped body went back at once');
  r = await get('/ok');
  assert.equal(r.text, 'fine');
  assert.equal(h1Connections, beforeMedium, 'the upstream connection outlived the discarded 48 KiB body');
});

test('HTTP/1.1 client: a 4 MiB upstream error body (Content-Length or chunked) is not read, the page comes at once and the connection goes on', async (t) => {
  const c = await RawClient.open(t, { port: proxy.httpsPort, tls: { servername: 'ie.test', ca: pki.caPem } });
  for (const path of ['/big', '/bigchunked', '/big']) {
    await c.write(`GET ${path} HTTP/1.1\r\nHost: ie.test\r\n\r\n`);
    const r = await c.response();
    assert.equal(r.status, 500, path);
    assert.equal(r.text, PAGE_5XX, path);
    await c.write('GET /ok HTTP/1.1\r\nHost: ie.test\r\n\r\n');
    const ok = await c.response();
    assert.equal(ok.status, 200, `after ${path}`);
    assert.equal(ok.text, 'fine');
  }
  assert.equal(c.pending.length, 0, 'nothing of the error bodies reached the client');
});

test('HTTP/2 client, HTTP/1.1 upstream: the page, Retry-After kept, HEAD, a 4 MiB body dropped, the session goes on', async () => {
  const s = await h2Connect(proxy.httpsPort, 'ie.test', pki.caPem);
  try {
    let r = await h2Request(s, { path: '/fail' });
    assert.equal(r.status, 500);
    assert.equal(r.text, PAGE_5XX);
    assertPageHead(r.headers, PAGE_5XX);
    r = await h2Request(s, { path: '/busy' });
    assert.equal(r.status, 503);
    assert.equal(r.headers['retry-after'], '7');
    r = await h2Request(s, { path: '/fail', method: 'HEAD' });
    assert.equal(r.status, 500);
    assert.equal(r.body.length, 0);
    assert.equal(r.headers['content-length'], String(PAGE_5XX.length));
    r = await h2Request(s, { path: '/big' });
    assert.equal(r.text, PAGE_5XX);
    r = await h2Request(s, { path: '/conflict' });
    assert.equal(r.text, 'conflict body');
    r = await h2Request(s, { path: '/ok' });
    assert.equal(r.text, 'fine');
  } finally {
    s.close();
  }
});

test('h2c upstream: the page over HTTP/2 and HTTP/1.1 clients, the upstream stream cancelled and its session kept', async (t) => {
  const sessionsBefore = h2c.sessions();
  const s = await h2Connect(proxy.httpsPort, 'ie.test', pki.caPem);
  try {
    let r = await h2Request(s, { path: '/h2c/fail' });
    assert.equal(r.status, 500);
    assert.equal(r.text, PAGE_5XX);
    assertPageHead(r.headers, PAGE_5XX);
    r = await h2Request(s, { path: '/h2c/busy' });
    assert.equal(r.status, 503);
    assert.equal(r.text, PAGE_5XX);
    assert.equal(r.headers['retry-after'], '9');
    r = await h2Request(s, { path: '/h2c/conflict' });
    assert.equal(r.status, 409);
    assert.equal(r.text, 'h2 conflict');
    assert.equal(r.headers['etag'], '"h2-etag"');
    r = await h2Request(s, { path: '/h2c/big' });
    assert.equal(r.text, PAGE_5XX);
    r = await h2Request(s, { path: '/h2c/fail', method: 'HEAD' });
    assert.equal(r.status, 500);
    assert.equal(r.body.length, 0);
    r = await h2Request(s, { path: '/h2c/ok' });
    assert.equal(r.text, 'h2 fine');
  } finally {
    s.close();
  }

  const c = await RawClient.open(t, { port: proxy.httpsPort, tls: { servername: 'ie.test', ca: pki.caPem } });
  await c.write('GET /h2c/fail HTTP/1.1\r\nHost: ie.test\r\n\r\n');
  let w = await c.response();
  assert.equal(w.status, 500);
  assert.equal(w.text, PAGE_5XX);
  assertPageHead(w.headers, PAGE_5XX);
  await c.write('HEAD /h2c/big HTTP/1.1\r\nHost: ie.test\r\n\r\n');
  w = await c.response({ head: true });
  assert.equal(w.status, 500);
  assert.equal(w.headers['content-length'], String(PAGE_5XX.length));
  await c.write('GET /h2c/big HTTP/1.1\r\nHost: ie.test\r\n\r\n');
  w = await c.response();
  assert.equal(w.text, PAGE_5XX);
  await c.write('GET /h2c/ok HTTP/1.1\r\nHost: ie.test\r\n\r\n');
  w = await c.response();
  assert.equal(w.text, 'h2 fine');
  assert.equal(c.pending.length, 0);
  assert.equal(h2c.sessions() - sessionsBefore, 1, 'one upstream session served every request');
});

test('a route with interceptErrors false, or on a host without it, passes upstream errors on; a route may turn it on alone', async (t) => {
  const c = await RawClient.open(t, { port: proxy.httpsPort, tls: { servername: 'ie.test', ca: pki.caPem } });
  await c.write('GET /api/fail HTTP/1.1\r\nHost: ie.test\r\n\r\n');
  let r = await c.response();
  assert.equal(r.status, 500);
  assert.equal(r.text, 'stack trace secret');
  assert.equal(r.headers['etag'], '"app-etag"');
  const rt = await RawClient.open(t, { port: proxy.httpsPort, tls: { servername: 'rt.test', ca: pki.caPem } });
  await rt.write('GET /fail HTTP/1.1\r\nHost: rt.test\r\n\r\n');
  r = await rt.response();
  assert.equal(r.text, PAGE_5XX, "the route's own true");
  await rt.write('GET /plain/fail HTTP/1.1\r\nHost: rt.test\r\n\r\n');
  r = await rt.response();
  assert.equal(r.text, 'stack trace secret', "the host's default: off");
});

test("the access line keeps the upstream's status and says the page replaced its body", async () => {
  const lines = proxy.logs.filter((l) => l['msg'] === 'access' && l['path'] === '/busy' && l['proto'] === 'http/1.1');
  assert.ok(lines.length > 0);
  const line = lines[0]!;
  assert.equal(line['status'], 503);
  assert.equal(line['upstream'], h1.url);
  assert.equal(line['detail'], 'replaced by the error page');
  assert.equal(line['bytes'], PAGE_5XX.length);
  assert.equal(line['error'], undefined, 'no Portico error');
  const passed = proxy.logs.find((l) => l['msg'] === 'access' && l['path'] === '/conflict');
  assert.equal(passed?.['detail'], undefined);
});

test('curl over HTTP/2 and HTTP/1.1 gets the page', async (t) => {
  if (!requireTool(t, 'curl')) return;
  const caFile = join(pki.dir, 'ca.pem');
  await writeFile(caFile, pki.caPem);
  for (const proto of ['--http2', '--http1.1']) {
    const out = await curl({ host: 'ie.test', port: proxy.httpsPort, caFile, path: '/fail', args: [proto] });
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, proto === '--http2' ? /^HTTP\/2 500/ : /^HTTP\/1\.1 500/);
    assert.ok(out.stdout.endsWith(`\r\n\r\n${PAGE_5XX}`), out.stdout);
    assert.doesNotMatch(out.stdout, /stack trace secret|etag/i);
  }
});

test('interceptErrors without errorPages, or on a route that sends nothing upstream, is a config error with its path', async () => {
  const tls = { cert: 'c.pem', key: 'k.pem' };
  const r = validateConfig({
    hosts: {
      'a.test': { tls, interceptErrors: true, routes: [{ upstream: 'http://127.0.0.1:1' }] },
      'b.test': { tls, routes: [{ upstream: 'http://127.0.0.1:1', interceptErrors: true }, { path: '/off', upstream: 'http://127.0.0.1:1', interceptErrors: false }] },
      'c.test': { tls, errorPages: { '5xx': 'x.html' }, routes: [{ respond: { status: 503 }, interceptErrors: true }] },
    },
  });
  assert.equal(r.ok, false);
  const lines = r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`);
  assert.equal(lines.length, 3, lines.join('\n'));
  assert.match(lines[0]!, /^hosts\["a\.test"\]\.interceptErrors: "interceptErrors" replaces upstream error bodies with this host's "errorPages", and the host has none: add "errorPages" \(such as \{"5xx": "pages\/5xx\.html"\}\), or remove "interceptErrors"/);
  assert.match(lines[1]!, /^hosts\["b\.test"\]\.routes\[0\]\.interceptErrors: "interceptErrors" replaces upstream error bodies/);
  assert.match(lines[2]!, /^hosts\["c\.test"\]\.routes\[0\]\.interceptErrors: a "respond" route sends nothing upstream, so there is no upstream error to replace/);

  // A page for a status Portico never answers itself is refused without interceptErrors, taken with it.
  const p = await makePki();
  try {
    const cert = await p.issue('e', ['e.test']);
    await writeFile(join(p.dir, '418.txt'), 'teapot');
    const route = { upstream: 'http://127.0.0.1:1' };
    let problems = await checkHosts(p, { 'e.test': { tls: cert, errorPages: { '418': '418.txt' }, routes: [route] } });
    assert.equal(problems.length, 1);
    assert.match(problems[0]!, /Portico never answers 418 itself.*or to upstream responses with "interceptErrors": true/);
    problems = await checkHosts(p, { 'e.test': { tls: cert, errorPages: { '418': '418.txt' }, routes: [{ ...route, interceptErrors: true }] } });
    assert.deepEqual(problems, []);
  } finally {
    await p.cleanup();
  }
});

test('h2c upstream: an upload refused with an error that has a page is cancelled with INTERNAL_ERROR, never ended, so the upstream cannot take the part it got for the whole body; HTTP/1.1 and HTTP/2 clients', async (t) => {
  const c = await RawClient.open(t, { port: proxy.httpsPort, tls: { servername: 'ie.test', ca: pki.caPem } });
  await c.write(`POST /h2c/upload HTTP/1.1\r\nHost: ie.test\r\nContent-Length: 100000\r\n\r\n${'u'.repeat(1000)}`);
  const w = await c.response();
  assert.equal(w.status, 503);
  assert.equal(w.text, PAGE_5XX);
  const s = await h2Connect(proxy.httpsPort, 'ie.test', pki.caPem);
  t.after(() => s.close());
  const stream = s.request({ ':method': 'POST', ':path': '/h2c/upload', 'content-length': '100000' });
  stream.on('error', () => {});
  stream.write(Buffer.alloc(1000));
  const [head] = (await once(stream, 'response')) as [http2.IncomingHttpHeaders];
  assert.equal(head[':status'], 503);
  for (let i = 0; i < 100 && (uploads.length < 2 || uploads.some((u) => u.rstCode === -1)); i++) await delay(20);
  assert.equal(uploads.length, 2);
  for (const [i, u] of uploads.entries()) {
    assert.ok(u.bytes < 100000, `upload ${i}: cut off`);
    assert.equal(u.ended, false, `upload ${i}: its body must not end as if whole`);
    assert.equal(u.rstCode, http2.constants.NGHTTP2_INTERNAL_ERROR, `upload ${i}`);
  }
});

test('a 416 replaced by its page keeps its Content-Range (RFC 9110 §15.5.17), so a client resuming a download learns the length; curl over HTTP/1.1 and HTTP/2', async (t) => {
  if (!requireTool(t, 'curl')) return;
  const caFile = join(pki.dir, 'ca.pem');
  await writeFile(caFile, pki.caPem);
  for (const version of ['--http1.1', '--http2']) {
    const out = await curl({ host: 'ie.test', port: proxy.httpsPort, caFile, path: '/range', args: [version, '-H', 'Range: bytes=5000-'] });
    assert.match(out.stdout, /^HTTP\/[\d.]+ 416/, version);
    assert.match(out.stdout, /^content-range: bytes \*\/1234\r$/im, version);
    assert.ok(out.stdout.endsWith(`\r\n\r\n${PAGE_416}`), `${version}: the page, not the upstream's body`);
    assert.doesNotMatch(out.stdout, /etag|x-app/i, version);
  }
});
