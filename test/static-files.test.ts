import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, readlinkSync } from 'node:fs';
import { mkdir, readFile, stat, truncate, writeFile } from 'node:fs/promises';
import https from 'node:https';
import { join } from 'node:path';
import { brotliCompressSync, brotliDecompressSync, constants as zlibConstants, gzipSync } from 'node:zlib';
import { validateConfig } from '../src/config/load.js';
import { checkHosts, makePki, startProxyFor, type TestPki } from './helpers/proxy.js';
import { h1Request, h2Connect, h2Request } from './helpers/net.js';
import { RawClient, rawUpgradeRequest } from './helpers/raw-http1.js';
import { curl, requireTool } from './helpers/real-peers.js';
import { waitFor } from './helpers/pebble.js';

/** A site directory with the files the tests ask for. */
async function makeSite(pki: TestPki): Promise<{ site: string; data: Buffer; big: string; js: string }> {
  const site = join(pki.dir, 'site');
  await mkdir(join(site, 'docs'), { recursive: true });
  await mkdir(join(site, '.well-known'), { recursive: true });
  await mkdir(join(site, '.git'), { recursive: true });
  const js = `export const greeting = ${JSON.stringify('hello '.repeat(400))};\n`;
  const data = randomBytes(300 * 1024);
  await Promise.all([
    writeFile(join(site, 'index.html'), '<h1>home</h1>\n'),
    writeFile(join(site, 'app.js'), js),
    writeFile(join(site, 'data.bin'), data),
    writeFile(join(site, 'with space.txt'), 'spaced\n'),
    writeFile(join(site, 'empty.txt'), ''),
    writeFile(join(site, '.env'), 'SECRET=1\n'),
    writeFile(join(site, '.git', 'config'), '[core]\n'),
    writeFile(join(site, '.well-known', 'security.txt'), 'Contact: mailto:sec@files.test\n'),
    writeFile(join(site, 'docs', 'index.html'), '<h1>docs</h1>\n'),
    writeFile(join(site, 'docs', 'page.html'), '<p>page</p>\n'),
  ]);
  execFileSync('mkfifo', [join(site, 'fifo')]);
  // A sparse 64 GiB file: reading it to the end would take far longer than a test, so only a closed stream lets go of it.
  execFileSync('truncate', ['-s', '64G', join(site, 'big.bin')]);
  return { site, data, big: join(site, 'big.bin'), js };
}

/** The proxy process's open descriptors on `file` (the proxy runs in this process). */
function openDescriptorsOn(file: string): number {
  let n = 0;
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`) === file) n++;
    } catch {
      // closed between the listing and the read
    }
  }
  return n;
}

test('files routes serve a directory: types, validators, index files, hidden names, methods, over HTTP/1.1, HTTP/2 and curl', async (t) => {
  const pki = await makePki();
  const { site, data, js } = await makeSite(pki);
  const cert = await pki.issue('f', ['files.test', 'other.test']);
  const proxy = await startProxyFor(t, pki, {
    hosts: {
      'files.test': {
        tls: cert,
        headers: { response: { set: { 'Cache-Control': 'public, max-age=60' } } },
        routes: [
          { path: '/', files: site },
          { path: '/static', stripPrefix: true, files: { root: join(site, 'docs'), index: [] } },
        ],
      },
      'other.test': { tls: cert, routes: [{ path: '/', respond: { body: 'other' } }] },
    },
  });
  const ca = pki.caPem;
  const port = proxy.httpsPort;
  const get = (path: string, headers: Record<string, string> = {}, method = 'GET') => h1Request({ port, sni: 'files.test', path, ca, headers, method });

  let r = await get('/app.js');
  assert.equal(r.status, 200);
  assert.equal(r.text, js);
  assert.match(String(r.headers['content-type']), /^(text|application)\/javascript; charset=utf-8$/);
  assert.equal(r.headers['content-length'], String(Buffer.byteLength(js)));
  assert.equal(r.headers['accept-ranges'], 'bytes');
  assert.equal(r.headers['cache-control'], 'public, max-age=60', "the host's response rules apply");
  const st = await stat(join(site, 'app.js'));
  assert.equal(r.headers['last-modified'], st.mtime.toUTCString());
  const etag = String(r.headers.etag);
  assert.match(etag, /^"[0-9a-f]+-[0-9a-f]+"$/, 'a strong validator, so ranges can use it');
  // Index files, and a directory named without its slash.
  r = await get('/');
  assert.equal(r.text, '<h1>home</h1>\n');
  assert.equal(r.headers['content-type'], 'text/html; charset=utf-8');
  r = await get('/docs?v=1');
  assert.equal(r.status, 308);
  assert.equal(r.headers.location, '/docs/?v=1');
  r = await get('/docs/');
  assert.equal(r.text, '<h1>docs</h1>\n');
  // stripPrefix names the file under that route's root; "index": [] lists nothing.
  r = await get('/static/page.html');
  assert.equal(r.text, '<p>page</p>\n');
  r = await get('/static/');
  assert.equal(r.status, 404, 'a directory without an index file is not listed');
  assert.equal(r.headers['x-portico-error'], 'PORTICO_FILE_NOT_FOUND');
  // Escaped names; empty files.
  r = await get('/with%20space.txt');
  assert.equal(r.text, 'spaced\n');
  r = await get('/empty.txt');
  assert.equal(r.status, 200);
  assert.equal(r.headers['content-length'], '0');
  // Missing files, hidden names, a FIFO (must not hang the open).
  for (const p of ['/missing.html', '/.env', '/.git/config', '/docs/.%65nv', '/fifo', '/app.js/x']) {
    r = await get(p);
    assert.equal(r.status, 404, p);
    assert.equal(r.headers['x-portico-error'], 'PORTICO_FILE_NOT_FOUND', p);
  }
  r = await get('/.well-known/security.txt');
  assert.equal(r.text, 'Contact: mailto:sec@files.test\n');
  // Paths that would leave the root.
  for (const p of ['/../etc/passwd', '/docs/..%2F..%2Fetc%2Fpasswd', '/%2e%2e/etc/passwd', '/x%00.html', '/%E0%A4%A']) {
    r = await get(p);
    assert.equal(r.status, 400, p);
  }
  // Methods.
  r = await get('/app.js', {}, 'POST');
  assert.equal(r.status, 405);
  assert.equal(r.headers.allow, 'GET, HEAD');
  assert.equal(r.headers['x-portico-error'], 'PORTICO_METHOD_NOT_ALLOWED');
  r = await get('/data.bin', {}, 'HEAD');
  assert.equal(r.status, 200);
  assert.equal(r.headers['content-length'], String(data.length));
  assert.equal(r.body.length, 0);
  // The Host/SNI rule holds for files too.
  r = await h1Request({ port, sni: 'other.test', host: 'files.test', path: '/app.js', ca });
  assert.equal(r.status, 421);

  // HTTP/2: a 300 KiB file byte for byte, an index, a 404.
  const s = await h2Connect(port, 'files.test', ca);
  let h = await h2Request(s, { path: '/data.bin' });
  assert.equal(h.status, 200);
  assert.equal(h.headers['content-type'], 'application/octet-stream');
  assert.ok(h.body.equals(data), 'the file arrives byte for byte over HTTP/2');
  h = await h2Request(s, { path: '/docs/' });
  assert.equal(h.text, '<h1>docs</h1>\n');
  h = await h2Request(s, { path: '/nope' });
  assert.equal(h.status, 404);
  s.close();

  // An upgrade to a files route is refused.
  const w = await RawClient.open(t, { port, tls: { servername: 'files.test', ca } });
  await w.write(rawUpgradeRequest('files.test', '/app.js'));
  const up = await w.response();
  assert.equal(up.status, 405);

  if (requireTool(t, 'curl')) {
    const caFile = join(pki.dir, 'ca.pem');
    await writeFile(caFile, ca);
    for (const proto of ['--http1.1', '--http2']) {
      const out = join(pki.dir, `curl${proto}.bin`);
      const c = await curl({ host: 'files.test', port, caFile, path: '/data.bin', args: [proto, '-o', out, '-w', '%{http_code} %{http_version}'] });
      assert.match(c.stdout, /^200 (1\.1|2)$/, c.stderr);
      const got = await readFile(out);
      assert.ok(got.subarray(got.indexOf('\r\n\r\n') + 4).equals(data), `curl ${proto} gets the file byte for byte`);
    }
    // curl follows the directory redirect.
    const c = await curl({ host: 'files.test', port, caFile, path: '/docs', args: ['-L', '-o', '-', '-w', '\n%{http_code} %{num_redirects}'] });
    assert.match(c.stdout, /<h1>docs<\/h1>\n\n200 1$/, c.stderr);
  }
});

test('files routes answer conditional and range requests, compress, and fall back for single-page apps', async (t) => {
  const pki = await makePki();
  const { site, data, js } = await makeSite(pki);
  const spa = join(pki.dir, 'spa');
  await mkdir(join(spa, 'assets'), { recursive: true });
  await writeFile(join(spa, 'index.html'), '<div id="app"></div>\n');
  await writeFile(join(spa, 'assets', 'main.css'), 'body { margin: 0 }\n');
  const cert = await pki.issue('g', ['files.test']);
  const proxy = await startProxyFor(t, pki, {
    hosts: {
      'files.test': {
        tls: cert,
        routes: [
          { path: '/', files: site },
          { path: '/z', stripPrefix: true, files: site, compress: true },
          { path: '/app', stripPrefix: true, files: { root: spa, fallback: '/index.html' } },
          { path: '/pre', stripPrefix: true, files: { root: site, precompressed: true } },
        ],
      },
    },
  });
  const ca = pki.caPem;
  const port = proxy.httpsPort;
  const get = (path: string, headers: Record<string, string> = {}) => h1Request({ port, sni: 'files.test', path, ca, headers });

  let r = await get('/data.bin');
  const etag = String(r.headers.etag);
  const lastModified = String(r.headers['last-modified']);
  // Conditional requests: 304 without a body, with the validators.
  r = await get('/data.bin', { 'if-none-match': etag });
  assert.equal(r.status, 304);
  assert.equal(r.body.length, 0);
  assert.equal(r.headers.etag, etag);
  r = await get('/data.bin', { 'if-modified-since': lastModified });
  assert.equal(r.status, 304);
  r = await get('/data.bin', { 'if-none-match': '"other"' });
  assert.equal(r.status, 200);
  assert.equal(r.body.length, data.length);
  // Ranges.
  r = await get('/data.bin', { range: 'bytes=100-199' });
  assert.equal(r.status, 206);
  assert.equal(r.headers['content-range'], `bytes 100-199/${data.length}`);
  assert.ok(r.body.equals(data.subarray(100, 200)));
  r = await get('/data.bin', { range: 'bytes=-10' });
  assert.equal(r.status, 206);
  assert.ok(r.body.equals(data.subarray(data.length - 10)));
  r = await get('/data.bin', { range: `bytes=${data.length}-` });
  assert.equal(r.status, 416);
  assert.equal(r.headers['content-range'], `bytes */${data.length}`);
  assert.equal(r.headers['x-portico-error'], 'PORTICO_RANGE_NOT_SATISFIABLE');
  r = await get('/data.bin', { range: 'bytes=0-1,10-11' });
  assert.equal(r.status, 200, 'several ranges get the whole file');
  assert.equal(r.body.length, data.length);
  r = await get('/data.bin', { range: 'bytes=0-9', 'if-range': '"stale"' });
  assert.equal(r.status, 200, 'a Range whose If-Range no longer matches gets the whole file');
  r = await get('/data.bin', { range: 'bytes=0-9', 'if-range': etag });
  assert.equal(r.status, 206);
  assert.equal(r.body.length, 10);
  const s = await h2Connect(port, 'files.test', ca);
  const h = await h2Request(s, { path: '/data.bin', headers: { range: 'bytes=1000-' } });
  assert.equal(h.status, 206);
  assert.ok(h.body.equals(data.subarray(1000)), 'a range over HTTP/2');
  s.close();

  // Compression on a files route: encoded for a client that takes it, with a weak ETag; ranges stay identity.
  r = await get('/z/app.js', { 'accept-encoding': 'br' });
  assert.equal(r.headers['content-encoding'], 'br');
  assert.equal(brotliDecompressSync(r.body).toString(), js);
  assert.match(String(r.headers.etag), /^W\/"/);
  assert.equal(r.headers['accept-ranges'], undefined);
  assert.equal(r.headers.vary, 'Accept-Encoding');
  r = await get('/z/app.js', { 'accept-encoding': 'br', 'if-none-match': String(r.headers.etag) });
  assert.equal(r.status, 304, 'the weak ETag of the encoded file validates');
  r = await get('/z/app.js', { 'accept-encoding': 'br', range: 'bytes=0-5' });
  assert.equal(r.status, 206);
  assert.equal(r.headers['content-encoding'], undefined);
  assert.equal(r.text, js.slice(0, 6));
  r = await get('/z/data.bin', { 'accept-encoding': 'br' });
  assert.equal(r.headers['content-encoding'], undefined, 'binary types are not compressed');

  // Precompressed sidecars, made at build time: sent as they are to clients that take them.
  const br = brotliCompressSync(Buffer.from(js), { params: { [zlibConstants.BROTLI_PARAM_QUALITY]: 11 } });
  const gz = gzipSync(js, { level: 9 });
  await writeFile(join(site, 'app.js.br'), br);
  await writeFile(join(site, 'app.js.gz'), gz);
  await writeFile(join(site, 'only-gz.txt'), 'plain text\n');
  await writeFile(join(site, 'only-gz.txt.gz'), gzipSync('plain text\n'));
  r = await get('/pre/app.js', { 'accept-encoding': 'gzip, br' });
  assert.equal(r.headers['content-encoding'], 'br');
  assert.ok(r.body.equals(br), 'the .br file byte for byte');
  assert.match(String(r.headers['content-type']), /javascript/, "the original file's type");
  assert.equal(r.headers.vary, 'Accept-Encoding');
  assert.equal(r.headers['accept-ranges'], undefined);
  assert.equal(r.headers['content-length'], String(br.length));
  const brEtag = String(r.headers.etag);
  r = await get('/pre/app.js', { 'accept-encoding': 'br', 'if-none-match': brEtag });
  assert.equal(r.status, 304);
  r = await get('/pre/app.js', { 'accept-encoding': 'gzip' });
  assert.equal(r.headers['content-encoding'], 'gzip');
  assert.ok(r.body.equals(gz));
  assert.notEqual(r.headers.etag, brEtag, 'each representation has its own validator');
  r = await get('/pre/app.js', { 'accept-encoding': 'br;q=0, gzip;q=0' });
  assert.equal(r.headers['content-encoding'], undefined);
  assert.equal(r.text, js);
  assert.equal(r.headers.vary, 'Accept-Encoding', 'the plain file varies too');
  r = await get('/pre/only-gz.txt', { 'accept-encoding': 'br, gzip' });
  assert.equal(r.headers['content-encoding'], 'gzip', 'no .br: the .gz');
  r = await get('/pre/app.js', { 'accept-encoding': 'br', range: 'bytes=0-9' });
  assert.equal(r.status, 200, 'an encoded representation takes no ranges');
  assert.ok(r.body.equals(br));
  r = await get('/pre/app.js', { range: 'bytes=0-9' });
  assert.equal(r.status, 206, 'the plain file still does');

  // Single-page app: a path naming no file gets the fallback; real files are served.
  r = await get('/app/users/42');
  assert.equal(r.status, 200);
  assert.equal(r.text, '<div id="app"></div>\n');
  r = await get('/app/assets/main.css');
  assert.equal(r.text, 'body { margin: 0 }\n');
  assert.equal(r.headers['content-type'], 'text/css; charset=utf-8');
});

test('files routes answer If-Match and If-Unmodified-Since (412 when the file is not the one named), before If-None-Match and Range', async (t) => {
  const pki = await makePki();
  const { site, data } = await makeSite(pki);
  const cert = await pki.issue('p', ['files.test']);
  const proxy = await startProxyFor(t, pki, { hosts: { 'files.test': { tls: cert, routes: [{ path: '/', files: site }] } } });
  const get = (headers: Record<string, string>) => h1Request({ port: proxy.httpsPort, sni: 'files.test', path: '/data.bin', ca: pki.caPem, headers });
  const first = await get({});
  const etag = String(first.headers.etag);
  const lastModified = String(first.headers['last-modified']);
  assert.match(etag, /^"[0-9a-f]+-[0-9a-f]+"$/);

  // If-Match (RFC 9110 §13.1.1): strong comparison; "*" holds for any file.
  assert.equal((await get({ 'if-match': etag })).status, 200);
  assert.equal((await get({ 'if-match': `"old", ${etag}` })).status, 200, 'any tag of the list');
  assert.equal((await get({ 'if-match': '*' })).status, 200);
  let r = await get({ 'if-match': '"old"' });
  assert.equal(r.status, 412);
  assert.equal(r.headers['x-portico-error'], 'PORTICO_PRECONDITION_FAILED');
  assert.equal((await get({ 'if-match': `W/${etag}` })).status, 412, 'a weak tag never matches If-Match');
  // A download resumed with Range and the ETag it started with: 412 once the file changed, never the new file's bytes.
  r = await get({ range: 'bytes=1000-', 'if-match': '"old"' });
  assert.equal(r.status, 412);
  assert.equal(r.headers['content-range'], undefined);
  r = await get({ range: 'bytes=1000-', 'if-match': etag });
  assert.equal(r.status, 206);
  assert.ok(r.body.equals(data.subarray(1000)));
  // If-Match comes before If-None-Match (§13.2.2).
  assert.equal((await get({ 'if-match': '"old"', 'if-none-match': etag })).status, 412);
  assert.equal((await get({ 'if-match': etag, 'if-none-match': etag })).status, 304);

  // If-Unmodified-Since (§13.1.4), ignored with If-Match or when it is not a date.
  assert.equal((await get({ 'if-unmodified-since': 'Thu, 01 Jan 1970 00:00:00 GMT' })).status, 412);
  assert.equal((await get({ 'if-unmodified-since': lastModified })).status, 200, 'not modified after its own Last-Modified');
  assert.equal((await get({ 'if-unmodified-since': 'yesterday' })).status, 200);
  assert.equal((await get({ 'if-match': etag, 'if-unmodified-since': 'Thu, 01 Jan 1970 00:00:00 GMT' })).status, 200);
  r = await get({ range: 'bytes=0-9', 'if-unmodified-since': 'Thu, 01 Jan 1970 00:00:00 GMT' });
  assert.equal(r.status, 412);

  const session = await h2Connect(proxy.httpsPort, 'files.test', pki.caPem);
  t.after(() => session.close());
  const h2 = await h2Request(session, { path: '/data.bin', method: 'HEAD', headers: { 'if-match': '"old"' } });
  assert.equal(h2.status, 412, 'HEAD over HTTP/2 too');
});

test('a client that leaves during a download closes the file', async (t) => {
  const pki = await makePki();
  const { site, big } = await makeSite(pki);
  const cert = await pki.issue('h', ['files.test']);
  const proxy = await startProxyFor(t, pki, { log: { access: true }, hosts: { 'files.test': { tls: cert, routes: [{ path: '/', files: site }] } } });
  const received = await new Promise<number>((resolve, reject) => {
    const req = https.get({ host: '127.0.0.1', port: proxy.httpsPort, path: '/big.bin', headers: { host: 'files.test' }, servername: 'files.test', ca: pki.caPem, agent: false }, (res) => {
      if (res.statusCode !== 200) return reject(new Error(`status ${res.statusCode}`));
      let n = 0;
      res.on('data', (c: Buffer) => {
        n += c.length;
        // Stop reading after the first bytes, then leave while the proxy holds the file open.
        if (n >= 64 * 1024) {
          res.pause();
          setTimeout(() => {
            assert.equal(openDescriptorsOn(big), 1, 'the file is open while its body is sent');
            req.destroy();
            resolve(n);
          }, 200);
        }
      });
    });
    req.on('error', (err) => (req.destroyed ? undefined : reject(err)));
  });
  assert.ok(received < 64 * 1024 * 1024);
  await waitFor('the file to be closed', () => (openDescriptorsOn(big) === 0 ? true : undefined), 2000);
  const line = await waitFor('the access line', () => proxy.logs.find((l) => l.path === '/big.bin'));
  assert.equal(line.aborted, true);
  assert.equal(line.route, 'files.test /');
});

test('a file that shrinks while it is sent is cut short visibly, never ended as if whole, over HTTP/1.1 and HTTP/2', async (t) => {
  const pki = await makePki();
  const { site } = await makeSite(pki);
  const cert = await pki.issue('s', ['files.test']);
  const proxy = await startProxyFor(t, pki, { log: { access: true }, hosts: { 'files.test': { tls: cert, routes: [{ path: '/', files: site }] } } });
  const SIZE = 64 * 1024 * 1024;
  /** How a response ended: whole ('end'), cut short by the server ('cut'), or not at all within 5 s ('hung'). */
  type Outcome = 'end' | 'cut' | 'hung';
  /** Reads the first 64 KiB of `name` (a sparse 64 MiB file), truncates the file to 1000 bytes, then reads on. */
  const shrinkWhileSent = async (name: string, body: import('node:stream').Readable & { on(e: 'data', l: (c: Buffer) => void): unknown }, done: Promise<Outcome>) => {
    let received = 0;
    body.on('data', (c: Buffer) => {
      received += c.length;
      if (received >= 64 * 1024 && received - c.length < 64 * 1024) {
        body.pause();
        void truncate(join(site, name), 1000).then(() => body.resume());
      }
    });
    const outcome = await Promise.race([done, new Promise<Outcome>((r) => setTimeout(r, 5000, 'hung'))]);
    return { outcome, received };
  };

  await writeFile(join(site, 'shrink1.bin'), '');
  await truncate(join(site, 'shrink1.bin'), SIZE);
  const h1 = await new Promise<{ outcome: Outcome; received: number; declared: number }>((resolve, reject) => {
    const req = https.get({ host: '127.0.0.1', port: proxy.httpsPort, path: '/shrink1.bin', headers: { host: 'files.test' }, servername: 'files.test', ca: pki.caPem }, (res) => {
      const done = new Promise<Outcome>((r) => {
        res.on('end', () => r('end'));
        res.on('aborted', () => r('cut'));
        res.on('error', () => r('cut'));
      });
      shrinkWhileSent('shrink1.bin', res, done).then((o) => resolve({ ...o, declared: Number(res.headers['content-length']) }), reject);
    });
    req.on('error', () => undefined);
    t.after(() => req.destroy());
  });
  assert.equal(h1.declared, SIZE);
  assert.equal(h1.outcome, 'cut', 'HTTP/1.1: the connection is closed, not left open with the body short of its Content-Length');
  assert.ok(h1.received < SIZE);

  await writeFile(join(site, 'shrink2.bin'), '');
  await truncate(join(site, 'shrink2.bin'), SIZE);
  const session = await h2Connect(proxy.httpsPort, 'files.test', pki.caPem);
  t.after(() => session.close());
  const stream = session.request({ ':path': '/shrink2.bin' });
  stream.on('error', () => undefined);
  const done = new Promise<Outcome>((r) => stream.on('close', () => r(stream.rstCode === 0 ? 'end' : 'cut')));
  const h2 = await shrinkWhileSent('shrink2.bin', stream, done);
  assert.equal(h2.outcome, 'cut', 'HTTP/2: the stream is reset');
  assert.equal(stream.rstCode, 2, 'by Portico (INTERNAL_ERROR), not by the client finding the body short');
  assert.ok(h2.received < SIZE);

  const lines = await waitFor('the access lines', () => {
    const l = proxy.logs.filter((x) => x['msg'] === 'access' && String(x['path']).startsWith('/shrink'));
    return l.length === 2 ? l : undefined;
  });
  for (const line of lines) assert.equal(line['error'], 'PORTICO_FILE_FAILED', JSON.stringify(line));
  const warn = proxy.logs.find((l) => l['msg'] === 'file read failed');
  assert.equal(warn?.['detail'], 'the file shrank while it was sent');
});

test('files settings are checked, each problem with its path', async () => {
  const issues = (route: Record<string, unknown>): string[] => {
    const r = validateConfig({ hosts: { 'a.test': { tls: { cert: 'c', key: 'k' }, routes: [{ path: '/', ...route }] } } });
    return r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`);
  };
  const at = 'hosts["a.test"].routes[0]';
  assert.match(issues({ files: 'site', upstream: 'http://127.0.0.1:1' })[0]!, /routes\[0\]\.files: a route has one of "upstream", "redirect", "respond" and "files", and this one also has "upstream"/);
  assert.match(issues({ files: { root: 'site', fallback: '../etc/passwd' } })[0]!, new RegExp(`^${at.replace(/[[\]".]/g, '\\$&')}\\.files\\.fallback: expected a file under the root, starting with "/"`));
  assert.match(issues({ files: { root: 'site', fallback: '/a/../../b' } })[0]!, /files\.fallback: expected a file under the root/);
  assert.match(issues({ files: { root: 'site', index: ['a/b.html'] } })[0]!, /files\.index\[0\]: expected a file name such as "index\.html"/);
  assert.match(issues({ files: { root: 'site', index: ['..'] } })[0]!, /files\.index\[0\]/);
  assert.match(issues({ files: 'site', headers: { request: { set: { 'X-A': '1' } } } })[0]!, /routes\[0\]\.headers\.request: a "files" route sends nothing upstream/);
  assert.deepEqual(issues({ files: 'site', compress: true }), [], 'files routes may compress');

  // The directory and the fallback must exist when the config loads.
  const pki = await makePki();
  try {
    await mkdir(join(pki.dir, 'site'));
    await writeFile(join(pki.dir, 'plain-file'), 'x');
    const cert = await pki.issue('c', ['c.test']);
    const lines = await checkHosts(pki, {
      'c.test': {
        tls: cert,
        routes: [
          { path: '/a', files: 'missing-dir' },
          { path: '/b', files: { root: 'site', fallback: '/index.html' } },
          { path: '/c', files: { root: 'plain-file' } },
        ],
      },
    });
    assert.equal(lines.length, 3, lines.join('\n'));
    assert.match(lines[0]!, /^hosts\["c\.test"\]\.routes\[0\]\.files: cannot open the directory .*missing-dir \(ENOENT\); create it, or fix the path/);
    assert.match(lines[1]!, /^hosts\["c\.test"\]\.routes\[1\]\.files\.fallback: cannot find the fallback file .*site\/index\.html \(ENOENT\)/);
    assert.match(lines[2]!, /^hosts\["c\.test"\]\.routes\[2\]\.files\.root: .*plain-file is not a directory/);
  } finally {
    await pki.cleanup();
  }
});
