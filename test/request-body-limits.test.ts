/**
 * Request body limits per host and route ("maxBodySize" replacing limits.maxBodySize, false for none),
 * and `Expect: 100-continue` answered only when the body is read: a request refused before that gets
 * its final answer instead of "100 Continue", so the client never sends the body.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { validateConfig } from '../src/config/load.js';
import { makePki, startProxyFor, type TestPki, type TestProxy } from './helpers/proxy.js';
import { h1Request, h2Connect, h2Request, startUpstream } from './helpers/net.js';
import { RawClient } from './helpers/raw-http1.js';
import { curl, requireTool } from './helpers/real-peers.js';

type Upstream = Awaited<ReturnType<typeof startUpstream>>;

/** limits.maxBodySize 1kb; "big.test" sets 4kb for its routes, "/uploads" 64kb, "/open" no limit; "small.test" keeps the global 1kb. */
async function setup(t: TestContext): Promise<{ pki: TestPki; proxy: TestProxy; up: Upstream }> {
  const pki = await makePki();
  const up = await startUpstream();
  const big = await pki.issue('big', ['big.test']);
  const small = await pki.issue('small', ['small.test']);
  const proxy = await startProxyFor(
    t,
    pki,
    {
      limits: { maxBodySize: '1kb' },
      hosts: {
        'big.test': {
          tls: big,
          maxBodySize: '4kb',
          routes: [
            { path: '/', upstream: up.url },
            { path: '/uploads', upstream: up.url, maxBodySize: '64kb' },
            { path: '/open', upstream: up.url, maxBodySize: false },
          ],
        },
        'small.test': { tls: small, routes: [{ path: '/', upstream: up.url }] },
      },
    },
    [() => up.close()],
  );
  return { pki, proxy, up };
}

test('maxBodySize on a host replaces limits.maxBodySize and a route\'s replaces its host\'s (false: none), by Content-Length and while streaming', async (t) => {
  const { pki, proxy, up } = await setup(t);
  const post = (sni: string, path: string, size: number): Promise<number> =>
    h1Request({ port: proxy.httpsPort, sni, path, method: 'POST', body: Buffer.alloc(size, 'a'), ca: pki.caPem }).then((r) => r.status);
  assert.equal(await post('small.test', '/s', 2048), 413, 'the global 1kb');
  assert.equal(await post('big.test', '/b', 2048), 200, 'the host\'s 4kb');
  assert.equal(await post('big.test', '/c', 8192), 413);
  assert.equal(await post('big.test', '/uploads/d', 8192), 200, 'the route\'s 64kb');
  assert.equal(await post('big.test', '/uploads/e', 65 * 1024), 413);
  assert.equal(await post('big.test', '/open/f', 1024 * 1024), 200, 'no limit');
  for (const refused of ['/s', '/c', '/uploads/e']) assert.ok(!up.seen.some((s) => s.url === refused), `${refused} never reached the upstream`);
  assert.equal(up.seen.find((s) => s.url === '/open/f')?.body.length, 1024 * 1024);

  // HTTP/2 without content-length: the route's limit applies to the bytes as they stream.
  const session = await h2Connect(proxy.httpsPort, 'big.test', pki.caPem);
  t.after(() => session.close());
  const streamed = async (path: string, size: number): Promise<number> => {
    const stream = session.request({ ':method': 'POST', ':path': path });
    stream.on('error', () => {});
    const status = new Promise<number>((resolve) => stream.once('response', (h) => resolve(Number(h[':status']))));
    for (let sent = 0; sent < size && !stream.destroyed; sent += 1024) {
      stream.write(Buffer.alloc(1024, 'b'));
      await new Promise((r) => setImmediate(r));
    }
    stream.end();
    return status;
  };
  assert.equal(await streamed('/uploads/g', 32 * 1024), 200);
  assert.equal(await streamed('/h', 32 * 1024), 413, 'over the host\'s 4kb');
  assert.equal((await h2Request(session, { path: '/after' })).status, 200, 'the session still works');
});

test('Expect: 100-continue: "100 Continue" only once the body is wanted; a request refused first gets its answer and the connection closes, with no body sent', async (t) => {
  const { pki, proxy, up } = await setup(t);
  // Over the route's limit: 413 straight away, never a 100 first.
  const c = await RawClient.open(t, { port: proxy.httpsPort, tls: { servername: 'big.test', ca: pki.caPem } });
  await c.write('POST /uploads/x HTTP/1.1\r\nHost: big.test\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n');
  const refused = await c.response();
  assert.equal(refused.status, 413, refused.statusLine);
  assert.equal(refused.headers['x-portico-error'], 'PORTICO_BODY_TOO_LARGE');
  assert.equal(refused.headers.connection, 'close', 'the client was not told to send its body, so the connection cannot carry another request');
  assert.equal(await c.until(() => c.closed, 3000), true, 'Portico closes the connection');
  assert.ok(!up.seen.some((s) => s.url === '/uploads/x'));

  // No route for the host (another reason to refuse): the same.
  const d = await RawClient.open(t, { port: proxy.httpsPort, tls: { servername: 'big.test', ca: pki.caPem } });
  await d.write('PUT /uploads/y HTTP/1.1\r\nHost: other.test\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n');
  const misdirected = await d.response();
  assert.equal(misdirected.status, 421);
  assert.doesNotMatch(d.pending.toString('latin1'), /100 Continue/);

  // Within the limit: the 100 comes when the body is read for the upstream, then the upstream's answer,
  // and the connection stays open for the next request.
  const e = await RawClient.open(t, { port: proxy.httpsPort, tls: { servername: 'big.test', ca: pki.caPem } });
  await e.write('POST /uploads/z HTTP/1.1\r\nHost: big.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n');
  const interim = await e.response();
  assert.equal(interim.status, 100);
  await e.write('hello');
  const ok = await e.response();
  assert.equal(ok.status, 200);
  assert.equal(up.seen.find((s) => s.url === '/uploads/z')?.body.toString(), 'hello');
  await e.write('GET /uploads/next HTTP/1.1\r\nHost: big.test\r\n\r\n');
  assert.equal((await e.response()).status, 200, 'kept alive');

  // A request with Expect and an empty body is answered and kept alive without any 100.
  await e.write('POST /uploads/empty HTTP/1.1\r\nHost: big.test\r\nContent-Length: 0\r\nExpect: 100-continue\r\n\r\n');
  const empty = await e.response();
  assert.equal(empty.status, 200);
  assert.notEqual(empty.headers.connection, 'close');
});

test('HTTP/1.1: a 413 while the body still arrives closes the connection after the answer, lingering a few seconds so the client reads it, instead of reading the whole body', async (t) => {
  const { pki, proxy, up } = await setup(t);
  const c = await RawClient.open(t, { port: proxy.httpsPort, tls: { servername: 'big.test', ca: pki.caPem } });
  const total = 64 * 1024 * 1024;
  await c.write(`POST /uploads/flood HTTP/1.1\r\nHost: big.test\r\nContent-Length: ${total}\r\n\r\n`);
  // A client that keeps sending regardless: 64 KiB every 5 ms (about 12 MiB/s), for at most 15 s.
  let sent = 0;
  const chunk = Buffer.alloc(64 * 1024, 'f');
  const started = performance.now();
  const pump = (async () => {
    while (!c.closed && sent < total && performance.now() - started < 15_000) {
      if (c.socket.writableLength < 1024 * 1024) {
        c.socket.write(chunk);
        sent += chunk.length;
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  const res = await c.response({ timeoutMs: 5000 });
  assert.equal(res.status, 413);
  assert.equal(res.headers.connection, 'close');
  assert.equal(await c.until(() => c.closed, 9000), true, 'Portico closed the connection');
  const ms = performance.now() - started;
  await pump;
  assert.ok(ms < 8000, `closed after the lingering time, not after the whole body: ${Math.round(ms)} ms`);
  assert.ok(sent < total, `the client did not get to send all ${total} bytes (${sent})`);
  assert.ok(!up.seen.some((s) => s.url === '/uploads/flood'));
});

test('HTTP/2: a request answered before its body was read (413 by content-length) has its stream closed with NO_ERROR after the answer, so the client stops sending', async (t) => {
  const { pki, proxy, up } = await setup(t);
  const session = await h2Connect(proxy.httpsPort, 'big.test', pki.caPem);
  t.after(() => session.close());
  const stream = session.request({ ':method': 'POST', ':path': '/uploads/h2', 'content-length': String(10 * 1024 * 1024) });
  stream.on('error', () => {});
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c));
  const status = new Promise<number>((resolve) => stream.once('response', (h) => resolve(Number(h[':status']))));
  const closed = new Promise<number>((resolve) => stream.once('close', () => resolve(stream.rstCode ?? -1)));
  stream.write(Buffer.alloc(16 * 1024, 'c'));
  assert.equal(await status, 413);
  const code = await Promise.race([closed, new Promise<number>((r) => setTimeout(() => r(-2), 3000))]);
  assert.equal(code, http2.constants.NGHTTP2_NO_ERROR, 'closed by Portico with NO_ERROR while the client still had most of its body to send');
  assert.match(Buffer.concat(chunks).toString(), /413|too large/i, 'the answer arrived whole before the close');
  assert.ok(!up.seen.some((s) => s.url === '/uploads/h2'));
  assert.equal((await h2Request(session, { path: '/uploads/after' })).status, 200, 'the session goes on');
});

test('curl uploading past a route\'s limit with Expect: 100-continue gets 413 at once and sends none of its body', async (t) => {
  if (!requireTool(t, 'curl')) return;
  const { pki, proxy, up } = await setup(t);
  const caFile = join(pki.dir, 'ca.pem');
  await writeFile(caFile, pki.caPem);
  const file = join(pki.dir, 'upload.bin');
  await writeFile(file, Buffer.alloc(2 * 1024 * 1024, 'u'));
  // curl uploading `body` to `path`; it prints the status, the HTTP version and the bytes it sent.
  const upload = (path: string, body: string, args: readonly string[]) =>
    curl({ host: 'big.test', port: proxy.httpsPort, caFile, path, args: [...args, '-o', '/dev/null', '-w', '%{http_code} %{http_version} %{size_upload}', '--data-binary', `@${body}`] });
  // curl waits up to --expect100-timeout for the 100 before it sends the body anyway.
  const expect = ['--http1.1', '-H', 'Expect: 100-continue', '--expect100-timeout', '4'];
  const started = performance.now();
  const r = await upload('/uploads/big', file, expect);
  const ms = performance.now() - started;
  assert.equal(r.stdout.trim(), '413 1.1 0', `status, version and bytes uploaded: ${r.stdout} ${r.stderr}`);
  assert.ok(ms < 3000, `answered without waiting for curl's expect timeout: ${Math.round(ms)} ms`);
  assert.ok(!up.seen.some((s) => s.url === '/uploads/big'));

  // Within the limit the same upload goes through, body and all.
  const small = join(pki.dir, 'small.bin');
  await writeFile(small, Buffer.alloc(60 * 1024, 's'));
  const ok = await upload('/uploads/ok', small, expect);
  assert.equal(ok.stdout.trim(), `200 1.1 ${60 * 1024}`);
  assert.equal(up.seen.find((s) => s.url === '/uploads/ok')?.body.length, 60 * 1024);

  // Over HTTP/2 (no Expect): the 413 comes by Content-Length and the stream is closed with NO_ERROR,
  // which curl takes as an ordinary end (exit 0) and stops uploading.
  const h2 = await upload('/uploads/h2big', file, ['--http2']);
  const [code, version, uploaded] = h2.stdout.trim().split(' ');
  assert.equal(`${code} ${version}`, '413 2', `${h2.stdout} ${h2.stderr}`);
  assert.equal(h2.code, 0, `curl took the closed stream for an ordinary end: ${h2.stderr}`);
  assert.ok(Number(uploaded) < 2 * 1024 * 1024, `curl stopped uploading: ${uploaded} bytes sent`);
});

test('maxBodySize on a host or route is checked with its path', () => {
  const tls = { cert: 'c.pem', key: 'k.pem' };
  const r = validateConfig({
    hosts: {
      'a.test': { tls, maxBodySize: '10 parsecs', routes: [{ upstream: 'http://127.0.0.1:1', maxBodySize: true }] },
    },
  });
  assert.equal(r.ok, false);
  const lines = r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`);
  assert.ok(lines.some((l) => /^hosts\["a\.test"\]\.maxBodySize: .*size such as "16kb"/.test(l)), lines.join('\n'));
  assert.ok(lines.some((l) => /^hosts\["a\.test"\]\.routes\[0\]\.maxBodySize: /.test(l)), lines.join('\n'));
  assert.equal(validateConfig({ hosts: { 'a.test': { tls, maxBodySize: false, routes: [{ upstream: 'http://127.0.0.1:1', maxBodySize: '1gb' }] } } }).ok, true);
});
