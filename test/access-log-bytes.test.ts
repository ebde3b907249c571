/**
 * The access line's `bytes` (README, "Logs"): the response body Portico sent the client, as nginx's
 * $body_bytes_sent: after compression, for every path that answers (proxied, compressed, cache hits, files,
 * Portico's own answers, HEAD, a response cut short). Each count is checked against what a real client
 * received: curl's size_download (the body bytes before it decodes them), or a Node client that does not decode.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import { once } from 'node:events';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { brotliDecompressSync, gunzipSync } from 'node:zlib';
import type { AddressInfo } from 'node:net';
import { makePki, startProxyFor, type TestPki, type TestProxy } from './helpers/proxy.js';
import { h1Request, h2Connect, h2Request, startUpstream } from './helpers/net.js';
import { curl, requireTool } from './helpers/real-peers.js';

const JSON_BODY = JSON.stringify({ items: Array.from({ length: 400 }, (_, i) => ({ id: i, name: `item ${i}`, tags: ['a', 'b', 'c'] })) });
const TEXT = 'All work and no play makes Jack a dull boy.\n'.repeat(2000);

/** The access line of the request for `path`, waiting for it to be written. */
async function accessLine(proxy: TestProxy, path: string): Promise<Record<string, unknown>> {
  for (let i = 0; i < 200; i++) {
    const line = proxy.logs.find((l) => l['msg'] === 'access' && l['path'] === path);
    if (line !== undefined) return line;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`no access line for ${path}`);
}

/** curl's count of the body bytes it received (size_download: before --compressed decodes them), and the decoded body. */
async function curlBytes(pki: TestPki, proxy: TestProxy, host: string, path: string, args: readonly string[]): Promise<{ received: number; body: string; head: string }> {
  const caFile = join(pki.dir, 'ca.pem');
  await writeFile(caFile, pki.caPem);
  const c = await curl({ host, port: proxy.httpsPort, caFile, path, args: [...args, '-o', '-', '-w', '\n%{size_download}'] });
  assert.equal(c.code, 0, c.stderr);
  const headEnd = c.stdout.indexOf('\r\n\r\n');
  return { head: c.stdout.slice(0, headEnd), body: c.stdout.slice(headEnd + 4, c.stdout.lastIndexOf('\n')), received: Number(c.stdout.slice(c.stdout.lastIndexOf('\n') + 1)) };
}

function decode(body: Buffer, encoding: unknown): string {
  if (encoding === 'gzip') return gunzipSync(body).toString();
  if (encoding === 'br') return brotliDecompressSync(body).toString();
  return body.toString();
}

test('a compressed response\'s access line counts the encoded bytes sent, from HTTP/1.1 and HTTP/2 upstreams, to curl --compressed over HTTP/1.1 and HTTP/2 and to Node clients', async (t) => {
  if (!requireTool(t, 'curl')) return;
  const pki = await makePki();
  const up = await startUpstream((req, res) => {
    req.resume();
    if ((req.url ?? '').startsWith('/stream')) {
      // No Content-Length: the encoder flushes after each chunk.
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write(TEXT);
      setTimeout(() => res.end(TEXT), 20);
      return;
    }
    if (req.method === 'HEAD') {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(JSON_BODY) });
      return res.end();
    }
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(JSON_BODY) });
    res.end(JSON_BODY);
  });
  const h2up = http2.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON_BODY);
  });
  h2up.listen(0, '127.0.0.1');
  await once(h2up, 'listening');
  const cert = await pki.issue('cz', ['cz.test']);
  const proxy = await startProxyFor(t, pki, {
    log: { level: 'info', access: true },
    hosts: { 'cz.test': { tls: cert, compress: true, routes: [
      { path: '/h2', upstream: `h2c://127.0.0.1:${(h2up.address() as AddressInfo).port}` },
      { path: '/', upstream: up.url },
    ] } },
  }, [up.close, () => new Promise<void>((r) => h2up.close(() => r()))]);

  for (const [proto, tag] of [['--http1.1', 'h1'], ['--http2', 'h2']] as const) {
    for (const path of [`/json?curl=${tag}`, `/stream?curl=${tag}`, `/h2/json?curl=${tag}`]) {
      const c = await curlBytes(pki, proxy, 'cz.test', path, [proto, '--compressed']);
      assert.match(c.head, /content-encoding: (br|gzip)/i, `${path}: encoded`);
      assert.equal(c.body, path.startsWith('/stream') ? TEXT + TEXT : JSON_BODY, `${path}: curl decodes what it got`);
      const line = await accessLine(proxy, path);
      assert.equal(line['bytes'], c.received, `${path} over ${proto}: bytes is what curl received, not the ${c.body.length} bytes the upstream sent`);
      assert.ok(c.received < c.body.length / 4, `${path}: the encoded body is the smaller one`);
    }
  }

  const viaH1 = await h1Request({ port: proxy.httpsPort, sni: 'cz.test', path: '/json?node=h1', headers: { 'accept-encoding': 'gzip' }, ca: pki.caPem });
  assert.equal(viaH1.headers['content-encoding'], 'gzip');
  assert.equal(decode(viaH1.body, 'gzip'), JSON_BODY);
  assert.equal((await accessLine(proxy, '/json?node=h1'))['bytes'], viaH1.body.length);
  const session = await h2Connect(proxy.httpsPort, 'cz.test', pki.caPem);
  t.after(() => session.close());
  const viaH2 = await h2Request(session, { path: '/h2/json?node=h2', headers: { 'accept-encoding': 'br' } });
  assert.equal(viaH2.headers['content-encoding'], 'br');
  assert.equal(decode(viaH2.body, 'br'), JSON_BODY);
  assert.equal((await accessLine(proxy, '/h2/json?node=h2'))['bytes'], viaH2.body.length);
  // Not encoded (no Accept-Encoding): the body as the upstream sent it, from either upstream; HEAD: none.
  const plain = await h2Request(session, { path: '/h2/json?node=plain' });
  assert.equal(plain.headers['content-encoding'], undefined);
  assert.equal((await accessLine(proxy, '/h2/json?node=plain'))['bytes'], Buffer.byteLength(JSON_BODY));
  const plainH1 = await h2Request(session, { path: '/json?node=plain' });
  assert.equal((await accessLine(proxy, '/json?node=plain'))['bytes'], plainH1.body.length);
  const head = await h1Request({ port: proxy.httpsPort, sni: 'cz.test', path: '/json?node=head', method: 'HEAD', headers: { 'accept-encoding': 'gzip' }, ca: pki.caPem });
  assert.equal(head.status, 200);
  assert.equal((await accessLine(proxy, '/json?node=head'))['bytes'], 0);
});

test('a cache hit\'s access line counts the body sent: encoded when compressed, whole when not, none for a 304 or HEAD', async (t) => {
  if (!requireTool(t, 'curl')) return;
  const pki = await makePki();
  const up = await startUpstream((req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(JSON_BODY), 'cache-control': 'max-age=60', etag: '"v1"' });
    res.end(req.method === 'HEAD' ? undefined : JSON_BODY);
  });
  const cert = await pki.issue('cc', ['cc.test']);
  const proxy = await startProxyFor(t, pki, {
    log: { level: 'info', access: true },
    hosts: { 'cc.test': { tls: cert, cache: true, compress: true, routes: [{ path: '/', upstream: up.url }] } },
  }, [up.close]);
  // Stored by the first request (a miss, compressed for curl): each later one is a hit.
  const miss = await curlBytes(pki, proxy, 'cc.test', '/doc?n=1', ['--http1.1', '--compressed']);
  assert.equal((await accessLine(proxy, '/doc?n=1'))['cache'], 'miss');
  assert.equal((await accessLine(proxy, '/doc?n=1'))['bytes'], miss.received);
  // The cache keys on the Host (with its port, as curl sends it), the path and the query: the hits below ask for the same.
  for (const proto of ['--http1.1', '--http2']) {
    const before = proxy.logs.length;
    const hit = await curlBytes(pki, proxy, 'cc.test', '/doc?n=1', [proto, '--compressed']);
    assert.match(hit.head, /content-encoding: (br|gzip)/i);
    assert.equal(hit.body, JSON_BODY);
    const line = await waitForAccess(proxy, before);
    assert.equal(line['cache'], 'hit');
    assert.equal(line['bytes'], hit.received, `a compressed hit over ${proto} counts the encoded bytes`);
    assert.ok(hit.received < JSON_BODY.length / 4);
  }
  let before = proxy.logs.length;
  const whole = await h1Request({ port: proxy.httpsPort, sni: 'cc.test', host: `cc.test:${proxy.httpsPort}`, path: '/doc?n=1', ca: pki.caPem });
  assert.equal(whole.text, JSON_BODY);
  let line = await waitForAccess(proxy, before);
  assert.equal(line['cache'], 'hit');
  assert.equal(line['bytes'], Buffer.byteLength(JSON_BODY));
  before = proxy.logs.length;
  const notModified = await h1Request({ port: proxy.httpsPort, sni: 'cc.test', host: `cc.test:${proxy.httpsPort}`, path: '/doc?n=1', headers: { 'if-none-match': 'W/"v1"', 'accept-encoding': 'gzip' }, ca: pki.caPem });
  assert.equal(notModified.status, 304);
  line = await waitForAccess(proxy, before);
  assert.equal(line['cache'], 'hit');
  assert.equal(line['bytes'], 0);
  before = proxy.logs.length;
  const head = await h1Request({ port: proxy.httpsPort, sni: 'cc.test', host: `cc.test:${proxy.httpsPort}`, path: '/doc?n=1', method: 'HEAD', headers: { 'accept-encoding': 'gzip' }, ca: pki.caPem });
  assert.equal(head.status, 200);
  assert.equal(head.headers['content-encoding'], 'gzip', 'a HEAD the cache answers is marked as its GET would be');
  assert.equal(head.headers['content-length'], undefined);
  line = await waitForAccess(proxy, before);
  assert.equal(line['cache'], 'hit');
  assert.equal(line['bytes'], 0);
});

/** The first access line logged after index `from`. */
async function waitForAccess(proxy: TestProxy, from: number): Promise<Record<string, unknown>> {
  for (let i = 0; i < 200; i++) {
    const line = proxy.logs.slice(from).find((l) => l['msg'] === 'access');
    if (line !== undefined) return line;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error('no access line');
}

test('a static file\'s access line counts the bytes sent: encoded when compressed, the range of a 206, none for HEAD or a 304', async (t) => {
  if (!requireTool(t, 'curl')) return;
  const pki = await makePki();
  const site = join(pki.dir, 'site');
  await mkdir(site);
  await writeFile(join(site, 'doc.txt'), TEXT);
  const cert = await pki.issue('fs', ['fs.test']);
  const proxy = await startProxyFor(t, pki, {
    log: { level: 'info', access: true },
    hosts: { 'fs.test': { tls: cert, compress: true, routes: [{ path: '/', files: site }] } },
  });
  for (const [proto, tag] of [['--http1.1', 'h1'], ['--http2', 'h2']] as const) {
    const path = `/doc.txt?curl=${tag}`;
    const c = await curlBytes(pki, proxy, 'fs.test', path, [proto, '--compressed']);
    assert.match(c.head, /content-encoding: (br|gzip)/i);
    assert.equal(c.body, TEXT);
    assert.equal((await accessLine(proxy, path))['bytes'], c.received, `a compressed file over ${proto} counts the encoded bytes`);
    assert.ok(c.received < TEXT.length / 4);
    const rangePath = `/doc.txt?range=${tag}`;
    const r = await curlBytes(pki, proxy, 'fs.test', rangePath, [proto, '--compressed', '-r', '100-1099']);
    assert.match(r.head, / 206/);
    assert.equal(r.received, 1000);
    assert.equal((await accessLine(proxy, rangePath))['bytes'], 1000);
  }
  const whole = await h1Request({ port: proxy.httpsPort, sni: 'fs.test', path: '/doc.txt?plain', ca: pki.caPem });
  assert.equal(whole.text, TEXT);
  assert.equal((await accessLine(proxy, '/doc.txt?plain'))['bytes'], TEXT.length);
  const session = await h2Connect(proxy.httpsPort, 'fs.test', pki.caPem);
  t.after(() => session.close());
  const viaH2 = await h2Request(session, { path: '/doc.txt?node=h2', headers: { 'accept-encoding': 'gzip' } });
  assert.equal(decode(viaH2.body, viaH2.headers['content-encoding']), TEXT);
  assert.equal((await accessLine(proxy, '/doc.txt?node=h2'))['bytes'], viaH2.body.length);
  const head = await h2Request(session, { path: '/doc.txt?head', method: 'HEAD', headers: { 'accept-encoding': 'gzip' } });
  assert.equal(head.status, 200);
  assert.equal((await accessLine(proxy, '/doc.txt?head'))['bytes'], 0);
  const etag = String(whole.headers.etag);
  const notModified = await h2Request(session, { path: '/doc.txt?304', headers: { 'if-none-match': etag } });
  assert.equal(notModified.status, 304);
  assert.equal((await accessLine(proxy, '/doc.txt?304'))['bytes'], 0);
  const dir = await h1Request({ port: proxy.httpsPort, sni: 'fs.test', path: '/', ca: pki.caPem });
  assert.equal(dir.status, 404);
  assert.equal((await accessLine(proxy, '/'))['bytes'], dir.body.length);
});

test('Portico\'s own answers count their body in bytes: a redirect none, a forwardAuth answer its body and none for HEAD, an error none for HEAD', async (t) => {
  const pki = await makePki();
  const auth = http.createServer((req, res) => {
    req.resume();
    res.writeHead(401, { 'content-type': 'text/plain', 'www-authenticate': 'Bearer' });
    res.end('log in first, please');
  });
  auth.listen(0, '127.0.0.1');
  await once(auth, 'listening');
  const up = await startUpstream();
  const cert = await pki.issue('oa', ['oa.test']);
  const proxy = await startProxyFor(t, pki, {
    log: { level: 'info', access: true },
    hosts: { 'oa.test': { tls: cert, routes: [
      { path: '/old', redirect: '/new{path}' },
      { path: '/guarded', upstream: up.url, forwardAuth: { url: `http://127.0.0.1:${(auth.address() as AddressInfo).port}/verify` } },
      { path: '/app', upstream: up.url },
    ] } },
  }, [up.close, () => new Promise<void>((r) => auth.close(() => r()))]);
  const get = (path: string, method = 'GET') => h1Request({ port: proxy.httpsPort, sni: 'oa.test', path, method, ca: pki.caPem });
  const moved = await get('/old/x');
  assert.equal(moved.status, 302);
  assert.equal((await accessLine(proxy, '/old/x'))['bytes'], 0);
  const denied = await get('/guarded/a');
  assert.equal(denied.status, 401);
  assert.equal(denied.text, 'log in first, please');
  assert.equal((await accessLine(proxy, '/guarded/a'))['bytes'], Buffer.byteLength('log in first, please'));
  const deniedHead = await get('/guarded/b', 'HEAD');
  assert.equal(deniedHead.status, 401);
  assert.equal(deniedHead.body.length, 0);
  assert.equal((await accessLine(proxy, '/guarded/b'))['bytes'], 0, 'a HEAD gets no body, and none is counted');
  const proxiedHead = await get('/app/x', 'HEAD');
  assert.equal(proxiedHead.status, 200);
  assert.equal((await accessLine(proxy, '/app/x'))['bytes'], 0);
  const missingHead = await get('/nowhere', 'HEAD');
  assert.equal(missingHead.status, 404);
  assert.equal((await accessLine(proxy, '/nowhere'))['bytes'], 0);
});

/** An HTTP/1.1 GET that does not decode, kept until the response ends or is cut: the body bytes received. */
function receivedBytes(port: number, path: string, ca: string): Promise<{ received: number; complete: boolean }> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port, path, servername: 'cut.test', headers: { host: 'cut.test', 'accept-encoding': 'gzip' }, ca, agent: false }, (res) => {
      let received = 0;
      res.on('data', (c: Buffer) => (received += c.length));
      res.on('error', () => {});
      res.on('close', () => resolve({ received, complete: res.complete }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('a response cut short by its upstream counts the body bytes that went out before the cut, compressed or not', async (t) => {
  const pki = await makePki();
  const up = await startUpstream((req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.write(TEXT);
    // The rest never comes: the upstream's connection drops mid-body.
    setTimeout(() => res.socket?.destroy(), 300);
  });
  const cert = await pki.issue('cut', ['cut.test']);
  const proxy = await startProxyFor(t, pki, {
    log: { level: 'info', access: true },
    hosts: { 'cut.test': { tls: cert, routes: [
      { path: '/z', upstream: up.url, compress: true },
      { path: '/', upstream: up.url },
    ] } },
  }, [up.close]);
  for (const path of ['/z/cut', '/plain/cut']) {
    const r = await receivedBytes(proxy.httpsPort, path, pki.caPem);
    assert.equal(r.complete, false, `${path}: the client sees the response cut`);
    assert.ok(r.received > 0);
    const line = await accessLine(proxy, path);
    assert.equal(line['error'], 'PORTICO_UPSTREAM_FAILED');
    assert.equal(line['bytes'], r.received, `${path}: bytes is what the client received before the cut`);
  }
  const cutBytes = (await accessLine(proxy, '/z/cut'))['bytes'] as number;
  assert.ok(cutBytes < TEXT.length / 4, 'the compressed one counts encoded bytes');
});
