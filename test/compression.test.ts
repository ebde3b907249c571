import { test } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import https from 'node:https';
import { once } from 'node:events';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { brotliDecompressSync, createGunzip, gunzipSync, gzipSync } from 'node:zlib';
import { createHook } from 'node:async_hooks';
import type { AddressInfo } from 'node:net';
import { validateConfig } from '../src/config/load.js';
import { negotiateEncoding } from '../src/proxy/compress.js';
import { largeReadBuffers } from '../src/upstream/read-buffers.js';
import { makePki, startProxyFor, type TestProxy } from './helpers/proxy.js';
import { h1Request, h2Connect, h2Request, startUpstream } from './helpers/net.js';
import { curl, requireTool } from './helpers/real-peers.js';
import { RawClient } from './helpers/raw-http1.js';

const JSON_BODY = JSON.stringify({ items: Array.from({ length: 400 }, (_, i) => ({ id: i, name: `item ${i}`, tags: ['a', 'b', 'c'] })) });
const BIG = Buffer.from('All work and no play makes Jack a dull boy.\n'.repeat(100_000)); // 4.4 MB

function decode(body: Buffer, encoding: string | undefined): string {
  if (encoding === 'gzip') return gunzipSync(body).toString();
  if (encoding === 'br') return brotliDecompressSync(body).toString();
  return body.toString();
}

test('compress: negotiation, what is and is not encoded, the headers, over HTTP/1.1 and HTTP/2 from HTTP/1.1 and HTTP/2 upstreams', async (t) => {
  const pki = await makePki();
  const up = await startUpstream((req, res) => {
    req.resume();
    const path = req.url ?? '/';
    if (path === '/json') res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(JSON_BODY), etag: '"v1"', 'accept-ranges': 'bytes', vary: 'Origin' });
    else if (path === '/small') res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 11 });
    else if (path === '/png') res.writeHead(200, { 'content-type': 'image/png', 'content-length': Buffer.byteLength(JSON_BODY) });
    else if (path === '/no-transform') res.writeHead(200, { 'content-type': 'text/html', 'cache-control': 'public, no-transform' });
    else if (path === '/big') res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', 'content-length': BIG.length });
    else if (path === '/pre-encoded') {
      const z = gzipSync(JSON_BODY);
      res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip', 'content-length': z.length });
      return res.end(z);
    }
    if (path === '/small') return res.end('hello world');
    res.end(path === '/big' ? BIG : JSON_BODY);
  });
  // An h2c upstream: its bodies come through node:http2's client.
  const h2up = http2.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/css' });
    res.end(JSON_BODY);
  });
  h2up.listen(0, '127.0.0.1');
  await once(h2up, 'listening');
  const h2url = `h2c://127.0.0.1:${(h2up.address() as AddressInfo).port}`;
  const cert = await pki.issue('cz', ['cz.test']);
  const proxy = await startProxyFor(
    t,
    pki,
    {
      hosts: {
        'cz.test': {
          tls: cert,
          compress: true,
          routes: [
            { path: '/', upstream: up.url },
            { path: '/h2', upstream: h2url, stripPrefix: true },
            { path: '/gzip-only', upstream: up.url, stripPrefix: true, compress: { encodings: ['gzip'], minLength: '1kb' } },
            { path: '/off', upstream: up.url, stripPrefix: true, compress: false },
          ],
        },
      },
    },
    [up.close, () => h2up.close()],
  );
  const get = (path: string, ae?: string, method = 'GET') =>
    h1Request({ port: proxy.httpsPort, sni: 'cz.test', path, method, headers: ae === undefined ? {} : { 'accept-encoding': ae }, ca: pki.caPem });

  let r = await get('/json', 'gzip, deflate, br');
  assert.equal(r.headers['content-encoding'], 'br', 'br preferred when both are accepted alike');
  assert.equal(r.headers['content-length'], undefined);
  assert.equal(r.headers['accept-ranges'], undefined);
  assert.equal(r.headers.vary, 'Origin, Accept-Encoding');
  assert.equal(r.headers.etag, 'W/"v1"', 'a strong ETag becomes weak');
  assert.equal(decode(r.body, 'br'), JSON_BODY);
  assert.ok(r.body.length < JSON_BODY.length / 4, `compressed to ${r.body.length} of ${JSON_BODY.length}`);
  r = await get('/json', 'gzip;q=1, br;q=0.5');
  assert.equal(r.headers['content-encoding'], 'gzip', 'the client\'s q-values come first');
  assert.equal(decode(r.body, 'gzip'), JSON_BODY);
  r = await get('/json');
  assert.equal(r.headers['content-encoding'], undefined, 'no Accept-Encoding: as is');
  assert.equal(r.headers['content-length'], String(Buffer.byteLength(JSON_BODY)));
  assert.equal(r.headers.vary, 'Origin, Accept-Encoding', 'but caches learn that it varies');
  assert.equal((await get('/json', 'br;q=0, deflate')).headers['content-encoding'], undefined);
  assert.equal((await get('/json', '*')).headers['content-encoding'], 'br');
  // HEAD: the GET's headers (test 'compress: a HEAD gets the headers its GET would …' below).
  r = await get('/json', 'gzip', 'HEAD');
  assert.equal(r.headers['content-encoding'], 'gzip', 'HEAD marked as its GET');
  assert.equal(r.body.length, 0);
  for (const path of ['/small', '/png', '/no-transform']) {
    r = await get(path, 'gzip, br');
    assert.equal(r.headers['content-encoding'], undefined, `${path} as is`);
  }
  r = await get('/pre-encoded', 'gzip, br');
  assert.equal(r.headers['content-encoding'], 'gzip', 'not encoded twice');
  assert.equal(gunzipSync(r.body).toString(), JSON_BODY);
  r = await get('/gzip-only/json', 'br, gzip');
  assert.equal(r.headers['content-encoding'], 'gzip');
  assert.equal((await get('/off/json', 'br, gzip')).headers['content-encoding'], undefined);
  assert.equal((await get('/off/json', 'br, gzip')).headers.vary, 'Origin', 'no Vary added where compression is off');

  // A large body read into recycled buffers goes through the encoder byte-exact, and the buffers come back.
  r = await get('/big', 'gzip');
  assert.equal(r.headers['content-encoding'], 'gzip');
  assert.ok(gunzipSync(r.body).equals(BIG));
  assert.equal(largeReadBuffers().out, 0, 'every large read buffer came back');

  // An HTTP/2 upstream, to HTTP/1.1 and HTTP/2 clients.
  r = await get('/h2/x', 'gzip');
  assert.equal(r.headers['content-encoding'], 'gzip');
  assert.equal(decode(r.body, 'gzip'), JSON_BODY);
  const s = await h2Connect(proxy.httpsPort, 'cz.test', pki.caPem);
  for (const path of ['/h2/x', '/json', '/big']) {
    const h = await h2Request(s, { path, headers: { 'accept-encoding': 'br' } });
    assert.equal(h.headers['content-encoding'], 'br', path);
    assert.equal(h.headers['content-length'], undefined);
    assert.ok(decode(h.body, 'br') === (path === '/big' ? BIG.toString() : JSON_BODY), `${path} decodes`);
  }
  s.close();

  if (requireTool(t, 'curl')) {
    const caFile = join(pki.dir, 'ca.pem');
    await writeFile(caFile, pki.caPem);
    for (const proto of ['--http1.1', '--http2']) {
      const c = await curl({ host: 'cz.test', port: proxy.httpsPort, caFile, path: '/json', args: [proto, '--compressed', '-o', '-', '-w', '\n%{size_download}'] });
      assert.match(c.stdout, /content-encoding: (br|gzip)/i, c.stderr);
      const body = c.stdout.slice(c.stdout.indexOf('\r\n\r\n') + 4, c.stdout.lastIndexOf('\n'));
      assert.equal(body, JSON_BODY, `curl ${proto} decodes what it got`);
      assert.ok(Number(c.stdout.slice(c.stdout.lastIndexOf('\n') + 1)) < JSON_BODY.length / 4);
    }
  }
});

test('compress: a streamed body is flushed chunk by chunk, and a client that leaves mid-body frees the encoder', async (t) => {
  const pki = await makePki();
  let release: () => void = () => {};
  const released = new Promise<void>((r) => (release = r));
  const up = await startUpstream((req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.write('first part, ');
    void released.then(() => res.end('second part'));
  });
  const cert = await pki.issue('cs', ['cs.test']);
  const proxy = await startProxyFor(t, pki, { hosts: { 'cs.test': { tls: cert, compress: true, routes: [{ path: '/', upstream: up.url }] } } }, [up.close]);
  const res = await new Promise<import('node:http').IncomingMessage>((resolve, reject) => {
    https.get({ host: '127.0.0.1', port: proxy.httpsPort, servername: 'cs.test', headers: { host: 'cs.test', 'accept-encoding': 'gzip' }, ca: pki.caPem, agent: false }, resolve).on('error', reject);
  });
  assert.equal(res.headers['content-encoding'], 'gzip');
  const gunzip = res.pipe(createGunzip());
  let text = '';
  gunzip.on('data', (c: Buffer) => (text += c.toString()));
  const deadline = Date.now() + 3000;
  while (text !== 'first part, ' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  assert.equal(text, 'first part, ', 'the first part arrives before the upstream sends the rest');
  release();
  await once(gunzip, 'end');
  assert.equal(text, 'first part, second part');

  // A client that leaves mid-response: its encoder is dropped and the proxy goes on serving.
  const big = await new Promise<import('node:http').IncomingMessage>((resolve, reject) => {
    https.get({ host: '127.0.0.1', port: proxy.httpsPort, servername: 'cs.test', path: '/', headers: { host: 'cs.test', 'accept-encoding': 'br' }, ca: pki.caPem, agent: false }, resolve).on('error', reject);
  });
  big.destroy();
  const again = await h1Request({ port: proxy.httpsPort, sni: 'cs.test', headers: { 'accept-encoding': 'identity' }, ca: pki.caPem });
  assert.equal(again.status, 200);
});

test('compress: a no-transform in a second Cache-Control line, or a second Content-Encoding line, is honoured for HTTP/1.1 clients as for HTTP/2 ones', async (t) => {
  const pki = await makePki();
  const up = await startUpstream((req, res) => {
    req.resume();
    // Two header lines each: what a framework that appends headers sends (RFC 9110 §5.3: one list).
    if (req.url === '/split-cc') res.writeHead(200, ['content-type', 'text/plain', 'cache-control', 'public, max-age=60', 'cache-control', 'no-transform']);
    else res.writeHead(200, ['content-type', 'text/plain', 'content-encoding', 'identity', 'content-encoding', 'gzip']);
    res.end(req.url === '/split-cc' ? JSON_BODY : gzipSync(JSON_BODY));
  });
  const cert = await pki.issue('cz', ['split.test']);
  const proxy = await startProxyFor(t, pki, { hosts: { 'split.test': { tls: cert, compress: true, routes: [{ path: '/', upstream: up.url }] } } }, [up.close]);
  const session = await h2Connect(proxy.httpsPort, 'split.test', pki.caPem);
  t.after(() => session.close());
  for (const path of ['/split-cc', '/split-ce']) {
    const h1 = await h1Request({ port: proxy.httpsPort, sni: 'split.test', path, headers: { 'accept-encoding': 'br, gzip' }, ca: pki.caPem });
    const h2 = await h2Request(session, { path, headers: { 'accept-encoding': 'br, gzip' } });
    for (const [proto, r] of [['http/1.1', h1], ['h2', h2]] as const) {
      assert.equal(r.status, 200);
      if (path === '/split-cc') {
        assert.equal(r.headers['content-encoding'], undefined, `${proto}: no-transform forbids encoding`);
        assert.equal(r.text, JSON_BODY, proto);
      } else {
        assert.equal(r.headers['content-encoding'], 'identity, gzip', `${proto}: encoded by the upstream already, passed on as it is`);
        assert.equal(gunzipSync(r.body).toString(), JSON_BODY, proto);
      }
    }
  }
});

test('negotiateEncoding follows q-values, then the configured order; compress settings are checked with their paths', () => {
  const both = { encodings: ['br', 'gzip'] as const, minBytes: 512 };
  assert.equal(negotiateEncoding(both, 'gzip, br'), 'br');
  assert.equal(negotiateEncoding(both, 'gzip;q=0.9, br;q=0.8'), 'gzip');
  assert.equal(negotiateEncoding(both, 'BR;Q=0.5'), 'br');
  assert.equal(negotiateEncoding(both, 'identity'), undefined);
  assert.equal(negotiateEncoding(both, '*;q=0'), undefined);
  assert.equal(negotiateEncoding(both, '*, br;q=0'), 'gzip');
  assert.equal(negotiateEncoding(both, ''), undefined);
  const issues = (compress: unknown): string[] => {
    const r = validateConfig({ hosts: { 'a.test': { tls: { cert: 'c', key: 'k' }, compress, routes: [{ upstream: 'http://127.0.0.1:1' }] } } });
    return r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`);
  };
  assert.deepEqual(issues(true), []);
  assert.deepEqual(issues({ encodings: ['gzip'], minLength: '1kb' }), []);
  assert.match(issues({ encodings: ['deflate'] })[0]!, /^hosts\["a\.test"\]\.compress\.encodings\[0\]/);
  assert.match(issues({ encodings: ['gzip', 'gzip'] })[0]!, /compress\.encodings: each encoding once/);
  assert.match(issues({ minLength: 'big' })[0]!, /compress\.minLength: expected a size/);
  assert.match(issues('yes')[0]!, /compress: expected boolean or object/);
});

test('compress: a 304 to a client holding the encoded variant carries its weak ETag and Vary (RFC 9110 §15.4.5), from HTTP/1.1 and HTTP/2 upstreams and files, to HTTP/1.1 and HTTP/2 clients', async (t) => {
  const pki = await makePki();
  // Upstreams that answer If-None-Match by weak comparison (RFC 9110 §13.1.2), as Express, Go and nginx do.
  const notModified = (inm: string | undefined): boolean => inm !== undefined && inm.split(',').some((v) => v.trim().replace(/^W\//, '') === '"v1"');
  const up = await startUpstream((req, res) => {
    req.resume();
    if (notModified(req.headers['if-none-match'])) return res.writeHead(304, { etag: '"v1"', vary: 'Origin' }).end();
    res.writeHead(200, { 'content-type': 'application/json', etag: '"v1"', vary: 'Origin' }).end(JSON_BODY);
  });
  const h2up = http2.createServer((req, res) => {
    if (notModified(req.headers['if-none-match'])) return res.writeHead(304, { etag: '"v1"', vary: 'Origin' }).end();
    res.writeHead(200, { 'content-type': 'application/json', etag: '"v1"', vary: 'Origin' }).end(JSON_BODY);
  });
  h2up.listen(0, '127.0.0.1');
  await once(h2up, 'listening');
  const site = join(pki.dir, 'site');
  await mkdir(site);
  await writeFile(join(site, 'data.json'), JSON_BODY);
  const cert = await pki.issue('cz', ['etag.test']);
  const proxy = await startProxyFor(
    t,
    pki,
    {
      hosts: {
        'etag.test': {
          tls: cert,
          compress: true,
          routes: [
            { path: '/', upstream: up.url },
            { path: '/h2', upstream: `h2c://127.0.0.1:${(h2up.address() as AddressInfo).port}`, stripPrefix: true },
            { path: '/files', stripPrefix: true, files: site },
          ],
        },
      },
    },
    [up.close, () => h2up.close()],
  );
  const session = await h2Connect(proxy.httpsPort, 'etag.test', pki.caPem);
  t.after(() => session.close());
  for (const path of ['/json', '/h2/json', '/files/data.json']) {
    const first = await h1Request({ port: proxy.httpsPort, sni: 'etag.test', path, headers: { 'accept-encoding': 'gzip' }, ca: pki.caPem });
    assert.equal(first.status, 200);
    assert.equal(first.headers['content-encoding'], 'gzip', path);
    const weak = first.headers.etag as string;
    assert.ok(weak.startsWith('W/"'), `${path}: the encoded 200's ETag is weak`);
    const strong = weak.slice(2);
    const again = { 'accept-encoding': 'gzip', 'if-none-match': weak };
    const h1 = await h1Request({ port: proxy.httpsPort, sni: 'etag.test', path, headers: again, ca: pki.caPem });
    const h2 = await h2Request(session, { path, headers: again });
    for (const [proto, r] of [['http/1.1', h1], ['h2', h2]] as const) {
      assert.equal(r.status, 304, `${proto} ${path}`);
      assert.equal(r.headers.etag, weak, `${proto} ${path}: the ETag of the variant the client holds`);
      assert.match(String(r.headers.vary), /Accept-Encoding/, `${proto} ${path}: and its Vary`);
    }
    // A client holding the unencoded variant (strong ETag) gets the strong ETag back.
    const plain = await h1Request({ port: proxy.httpsPort, sni: 'etag.test', path, headers: { 'if-none-match': strong }, ca: pki.caPem });
    assert.equal(plain.status, 304, path);
    assert.equal(plain.headers.etag, strong, `${path}: unencoded variant keeps its strong ETag`);
  }
});

/** The access line of the request for `path` (with its query), waiting for it to be written. */
async function accessLine(proxy: TestProxy, path: string): Promise<Record<string, unknown>> {
  for (let i = 0; i < 200; i++) {
    const line = proxy.logs.find((l) => l['msg'] === 'access' && l['path'] === path);
    if (line !== undefined) return line;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`no access line for ${path}`);
}

/**
 * Counts the zlib streams made in this process (Portico runs in it), each of which makes a ZLIB handle: an
 * async hook sees them, as zlib's factories cannot be wrapped. Off when the test ends.
 */
function countEncoders(t: import('node:test').TestContext): { created: number } {
  const counter = { created: 0 };
  const hook = createHook({
    init(_id, type) {
      if (type === 'ZLIB') counter.created++;
    },
  }).enable();
  t.after(() => hook.disable());
  return counter;
}

/** A curl head (`-i` or `-I`) as lower-case names → values, with its status. */
function curlHead(stdout: string): { status: number; headers: Record<string, string> } {
  const lines = stdout.slice(0, stdout.indexOf('\r\n\r\n')).split('\r\n');
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return { status: Number(lines[0]?.split(' ')[1]), headers };
}

test('compress: a HEAD gets the headers its GET would (RFC 9110 §9.3.2): Content-Encoding, Vary, weak ETag, no Content-Length, no body and bytes 0, from HTTP/1.1 and HTTP/2 upstreams and files, to curl -I over HTTP/1.1 and HTTP/2 and Node clients', async (t) => {
  if (!requireTool(t, 'curl')) return;
  const pki = await makePki();
  const up = await startUpstream((req, res) => {
    req.resume();
    // Node's server sends the head alone to a HEAD: the GET's Content-Length, no body.
    if (req.url?.startsWith('/small') === true) res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 11 }).end('hello world');
    else if (req.url?.startsWith('/stream') === true) res.writeHead(200, { 'content-type': 'text/plain' }).end(JSON_BODY);
    else res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(JSON_BODY), etag: '"v1"', 'accept-ranges': 'bytes', vary: 'Origin' }).end(JSON_BODY);
  });
  const h2up = http2.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(JSON_BODY), etag: '"v1"' });
    res.end(JSON_BODY);
  });
  h2up.listen(0, '127.0.0.1');
  await once(h2up, 'listening');
  const site = join(pki.dir, 'head-site');
  await mkdir(site);
  await writeFile(join(site, 'data.json'), JSON_BODY);
  const cert = await pki.issue('ch', ['head.test']);
  const proxy = await startProxyFor(
    t,
    pki,
    {
      log: { level: 'info', access: true },
      hosts: {
        'head.test': {
          tls: cert,
          compress: true,
          routes: [
            { path: '/', upstream: up.url },
            { path: '/h2', upstream: `h2c://127.0.0.1:${(h2up.address() as AddressInfo).port}`, stripPrefix: true },
            { path: '/files', stripPrefix: true, files: site },
          ],
        },
      },
    },
    [up.close, () => new Promise<void>((r) => h2up.close(() => r()))],
  );
  const caFile = join(pki.dir, 'ca.pem');
  await writeFile(caFile, pki.caPem);
  const session = await h2Connect(proxy.httpsPort, 'head.test', pki.caPem);
  t.after(() => session.close());
  const encoders = countEncoders(t);

  for (const path of ['/json', '/stream', '/h2/json', '/files/data.json']) {
    for (const [proto, tag] of [['--http1.1', 'h1'], ['--http2', 'h2']] as const) {
      let before = encoders.created;
      const got = await curl({ host: 'head.test', port: proxy.httpsPort, caFile, path: `${path}?get=${tag}`, args: [proto, '--compressed', '-o', '-'] });
      assert.equal(got.code, 0, got.stderr);
      assert.equal(encoders.created, before + 1, `GET ${path} over ${proto}: one encoder (the count sees them)`);
      const getHead = curlHead(got.stdout);
      before = encoders.created;
      const head = await curl({ host: 'head.test', port: proxy.httpsPort, caFile, path: `${path}?head=${tag}`, args: [proto, '--compressed', '-I'] });
      assert.equal(head.code, 0, head.stderr);
      // Nothing to encode: an encoder would cost a zlib context for nothing (over HTTP/2 its output would go nowhere).
      assert.equal(encoders.created, before, `HEAD ${path} over ${proto}: no encoder`);
      const { status, headers } = curlHead(head.stdout);
      const what = `HEAD ${path} over ${proto}`;
      assert.equal(status, 200, what);
      assert.equal(getHead.headers['content-encoding'], 'br', `GET ${path} over ${proto}: curl accepts br, which comes first`);
      assert.equal(headers['content-encoding'], getHead.headers['content-encoding'], `${what}: the Content-Encoding its GET has`);
      assert.equal(headers['vary'], getHead.headers['vary'], `${what}: the Vary its GET has`);
      assert.match(headers['vary'] ?? '', /Accept-Encoding/, what);
      assert.equal(headers['etag'], getHead.headers['etag'], `${what}: the ETag its GET has`);
      assert.equal(headers['content-length'], undefined, `${what}: no Content-Length of the unencoded body`);
      assert.equal(headers['accept-ranges'], undefined, what);
      assert.equal((await accessLine(proxy, `${path}?head=${tag}`))['bytes'], 0, `${what}: no body, none counted`);
    }
    // Node clients, which would see a body if one were sent; gzip chosen the same way as for GET.
    const before = encoders.created;
    const h1 = await h1Request({ port: proxy.httpsPort, sni: 'head.test', path: `${path}?node=h1`, method: 'HEAD', headers: { 'accept-encoding': 'gzip;q=1, br;q=0.5' }, ca: pki.caPem });
    const h2 = await h2Request(session, { path: `${path}?node=h2`, method: 'HEAD', headers: { 'accept-encoding': 'gzip;q=1, br;q=0.5' } });
    for (const [tag, r] of [['h1', h1], ['h2', h2]] as const) {
      assert.equal(r.status, 200, `${path} ${tag}`);
      assert.equal(r.headers['content-encoding'], 'gzip', `${path} ${tag}: the client's q-values, as for GET`);
      assert.equal(r.headers['content-length'], undefined, `${path} ${tag}`);
      assert.equal(r.body.length, 0, `${path} ${tag}: no body`);
      assert.equal((await accessLine(proxy, `${path}?node=${tag}`))['bytes'], 0, `${path} ${tag}`);
    }
    assert.equal(encoders.created, before, `${path}: no encoder for HEAD`);
    // No Accept-Encoding: as its GET, not encoded, with its length, but Vary tells caches that it varies.
    const plain = await h2Request(session, { path, method: 'HEAD' });
    assert.equal(plain.headers['content-encoding'], undefined, `${path} plain`);
    assert.match(String(plain.headers.vary), /Accept-Encoding/, `${path} plain`);
    if (path !== '/stream') assert.equal(plain.headers['content-length'], String(Buffer.byteLength(JSON_BODY)), `${path} plain`);
  }
  // Too short to encode: as its GET, as is and with its length.
  const small = await h1Request({ port: proxy.httpsPort, sni: 'head.test', path: '/small', method: 'HEAD', headers: { 'accept-encoding': 'gzip' }, ca: pki.caPem });
  assert.equal(small.headers['content-encoding'], undefined);
  assert.equal(small.headers['content-length'], '11');
  // On the wire: the HEAD's head and nothing after it (no gzip header and trailer of an empty body), so the
  // HTTP/1.1 connection carries the next request intact.
  const raw = await RawClient.open(t, { port: proxy.httpsPort, tls: { servername: 'head.test', ca: pki.caPem } });
  await raw.write('HEAD /json?raw HTTP/1.1\r\nHost: head.test\r\nAccept-Encoding: gzip\r\n\r\n');
  const rawHead = await raw.response({ head: true });
  assert.equal(rawHead.headers['content-encoding'], 'gzip');
  assert.equal(rawHead.headers['content-length'], undefined);
  assert.equal(rawHead.headers['transfer-encoding'], undefined, 'no framing for a body that is not sent');
  assert.equal(await raw.until(() => raw.pending.length > 0, 200), false, 'nothing follows the head');
  await raw.write('GET /json?raw HTTP/1.1\r\nHost: head.test\r\nAccept-Encoding: gzip\r\n\r\n');
  const rawGet = await raw.response();
  assert.equal(rawGet.headers['content-encoding'], 'gzip');
  assert.equal(gunzipSync(rawGet.body).toString(), JSON_BODY, 'the GET after the HEAD decodes whole');
});

test('compress: an upstream\'s "Content-Encoding: identity" gives way to the encoding, one Content-Encoding line; curl over HTTP/1.1 and HTTP/2', async (t) => {
  if (!requireTool(t, 'curl')) return;
  const pki = await makePki();
  const up = await startUpstream((req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'identity', 'content-length': Buffer.byteLength(JSON_BODY) });
    res.end(JSON_BODY);
  });
  const cert = await pki.issue('cz', ['identity.test']);
  const proxy = await startProxyFor(t, pki, { hosts: { 'identity.test': { tls: cert, compress: { encodings: ['gzip'], minLength: '512b' }, routes: [{ path: '/', upstream: up.url }] } } }, [up.close]);
  const caFile = join(pki.dir, 'ca.pem');
  await writeFile(caFile, pki.caPem);
  for (const version of ['--http1.1', '--http2']) {
    const out = await curl({ host: 'identity.test', port: proxy.httpsPort, caFile, path: '/data', args: [version, '--compressed'] });
    const head = out.stdout.slice(0, out.stdout.indexOf('\r\n\r\n'));
    assert.deepEqual(head.split('\r\n').filter((l) => /^content-encoding:/i.test(l)).map((l) => l.toLowerCase()), ['content-encoding: gzip'], `${version}: ${head}`);
    assert.equal(out.stdout.slice(head.length + 4), JSON_BODY, version);
  }
});
