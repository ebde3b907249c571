/**
 * An HTTP/2 upstream that resets a stream with RST_STREAM NO_ERROR (RFC 9113 §8.1 allows it only after a
 * complete response, to stop the request's upload). Before its END_STREAM, the response is cut off: the
 * client must see it fail (curl over HTTP/1.1 and HTTP/2, Node clients), never a clean end. After its
 * END_STREAM, with the client still uploading, the response is whole and must arrive whole.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import http2 from 'node:http2';
import https from 'node:https';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { gunzipSync } from 'node:zlib';
import { setTimeout as delay } from 'node:timers/promises';
import { listenH2 } from './helpers/h2-upstream.js';
import { makePki, startProxyFor, type TestPki, type TestProxy } from './helpers/proxy.js';
import { h2Connect } from './helpers/net.js';
import { curl, requireTool } from './helpers/real-peers.js';

const HOST = 'reset.test';
const { NGHTTP2_NO_ERROR } = http2.constants;
/** 256 KiB of random bytes sent as text/plain: compressed on the way (a route with "compress"), to about as much. */
const TEXT_ANSWER = randomBytes(256 * 1024);

/** What the h2c upstream does, by path. */
function answer(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
  stream.on('error', () => {});
  const path = headers[':path'] ?? '';
  if (path.startsWith('/cut')) {
    // Part of a body, then RST_STREAM NO_ERROR before END_STREAM: node:http2's destroy() without an error
    // sends that (node/issues/35302), and so does close(NO_ERROR) while body bytes are still queued (the reset
    // overtakes them). close(NO_ERROR) once all was sent ends the stream first: a whole response, not this case.
    stream.respond({ ':status': 200, 'content-type': 'text/plain', ...(path === '/cut-length' ? { 'content-length': '1000' } : {}) });
    if (path === '/cut-queued') {
      stream.write('part of the body');
      stream.write(Buffer.alloc(1024 * 1024, 'q'));
      stream.close(NGHTTP2_NO_ERROR);
      return;
    }
    stream.write('part of the body');
    setTimeout(() => stream.destroy(), 50);
    return;
  }
  if (path === '/cut-upload') {
    // As /cut, while the request body is still arriving (never read).
    stream.pause();
    stream.once('readable', () => {
      stream.respond({ ':status': 200, 'content-type': 'text/plain' });
      stream.write('part of the body');
      setTimeout(() => stream.destroy(), 50);
    });
    return;
  }
  if (path === '/big-then-reset' || path === '/text-then-reset') {
    // A 1 MiB answer (256 KiB of text that does not compress), whole, once the upload has begun (never read); then
    // the upload is stopped with NO_ERROR.
    stream.pause();
    stream.once('readable', () => {
      const text = path === '/text-then-reset';
      stream.respond({ ':status': 200, 'content-type': text ? 'text/plain' : 'application/octet-stream' });
      stream.end(text ? TEXT_ANSWER : Buffer.alloc(1024 * 1024, 'b'));
      // Only once END_STREAM has gone out (flow control holds the body until the proxy takes it): a whole answer.
      const poll = setInterval(() => {
        if (stream.destroyed) return clearInterval(poll);
        if (stream.state.localClose !== 1) return;
        clearInterval(poll);
        stream.close(NGHTTP2_NO_ERROR);
      }, 5);
    });
    return;
  }
  if (path === '/whole-then-reset') {
    // Answered whole once the upload has begun, never reading it; then told to stop the upload with NO_ERROR,
    // once the answer's frames are out (as RFC 9113 §8.1 says a server may).
    stream.pause();
    stream.once('readable', () => {
      stream.respond({ ':status': 200, 'content-type': 'text/plain' });
      stream.end('the whole answer', () => setTimeout(() => stream.close(NGHTTP2_NO_ERROR), 50));
    });
    return;
  }
  stream.respond({ ':status': 200 });
  stream.end('ok');
}

async function setup(t: TestContext, limits: Record<string, string> = {}): Promise<{ pki: TestPki; proxy: TestProxy; caFile: string }> {
  const up = await listenH2(http2.createServer().on('stream', answer), 'h2c');
  const pki = await makePki();
  const caFile = join(pki.dir, 'test-ca.pem');
  await writeFile(caFile, pki.caPem);
  const tls = await pki.issue(HOST, [HOST]);
  const proxy = await startProxyFor(
    t,
    pki,
    { log: { level: 'info', access: true }, limits, hosts: { [HOST]: { tls, routes: [{ path: '/', upstream: up.url }, { path: '/big-then-reset', upstream: up.url, maxBodySize: '256kb' }, { path: '/text-then-reset', upstream: up.url, compress: true }] } } },
    [() => up.close()],
  );
  return { pki, proxy, caFile };
}

/** The warn lines Portico logged for upstream failures on `path`'s exchanges, and the access lines of `path`. */
function linesFor(proxy: TestProxy, path: string): { warns: Record<string, unknown>[]; access: Record<string, unknown>[] } {
  return {
    warns: proxy.logs.filter((l) => l['msg'] === 'upstream error' && String(l['detail'] ?? '').includes('before the response was complete')),
    access: proxy.logs.filter((l) => l['msg'] === 'access' && l['path'] === path),
  };
}

async function waitForAccess(proxy: TestProxy, path: string, n: number): Promise<void> {
  for (let i = 0; i < 100 && linesFor(proxy, path).access.length < n; i++) await delay(20);
}

for (const path of ['/cut', '/cut-length', '/cut-queued']) {
  test(`a response an HTTP/2 upstream resets with NO_ERROR before its END_STREAM (${path.slice(1)}) fails at curl over HTTP/1.1 and HTTP/2, and at a Node HTTP/2 client`, async (t) => {
    if (!requireTool(t, 'curl')) return;
    const { pki, proxy, caFile } = await setup(t);
    for (const proto of ['--http1.1', '--http2']) {
      const r = await curl({ host: HOST, port: proxy.httpsPort, caFile, path, args: [proto] });
      assert.match(r.stdout, /^HTTP\/(1\.1|2) 200/, `${proto}: the response had started`);
      assert.ok(r.stdout.includes('\r\n\r\npart of the body'), `${proto}: the part sent reached the client: ${JSON.stringify(r.stdout.slice(-40))}`);
      // 18: transfer closed with outstanding read data remaining (HTTP/1.1); 92: stream not closed cleanly (HTTP/2).
      assert.equal(r.code, proto === '--http1.1' ? 18 : 92, `${proto}: curl sees a cut-off transfer: ${r.stderr}`);
    }
    const session = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
    t.after(() => session.close());
    const stream = session.request({ ':path': path });
    stream.end();
    let body = '';
    stream.setEncoding('utf8');
    stream.on('data', (c: string) => (body += c));
    const [err] = (await once(stream, 'error').catch((e: unknown) => [e])) as [Error];
    assert.match(err.message, /NGHTTP2_INTERNAL_ERROR/, 'the HTTP/2 client\'s stream is reset with INTERNAL_ERROR');
    assert.ok(body.startsWith('part of the body') && body.length < 16 + 1024 * 1024, `a part of the body reached the client (${body.length} bytes)`);
    await waitForAccess(proxy, path, 3);
    const { warns, access } = linesFor(proxy, path);
    assert.equal(warns.length, 3, 'each failure is logged as an upstream error');
    assert.equal(warns[0]?.['code'], 'PORTICO_UPSTREAM_FAILED');
    assert.deepEqual(access.map((l) => l['error']), ['PORTICO_UPSTREAM_FAILED', 'PORTICO_UPSTREAM_FAILED', 'PORTICO_UPSTREAM_FAILED']);
  });
}

/** An HTTP/1.1 POST whose body keeps coming (64 KiB every 20 ms) until its response has closed; the response as it arrived (a request error once it was answered is the cut connection). */
function h1SlowUpload(proxy: TestProxy, pki: TestPki, path: string): Promise<{ status: number; text: string; complete: boolean }> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port: proxy.httpsPort, path, method: 'POST', servername: HOST, ca: pki.caPem, agent: false, headers: { host: HOST } });
    let done = false;
    let answered = false;
    const chunk = Buffer.alloc(64 * 1024, 'u');
    const timer = setInterval(() => {
      if (!done && !req.destroyed) req.write(chunk);
    }, 20);
    req.on('error', (err) => {
      clearInterval(timer);
      if (!answered) reject(err);
    });
    req.on('response', (res) => {
      answered = true;
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('error', () => {});
      res.on('close', () => {
        done = true;
        clearInterval(timer);
        resolve({ status: res.statusCode ?? 0, text, complete: res.complete });
        req.destroy();
      });
    });
    req.write(chunk);
  });
}

/** Resolves once an HTTP/2 stream has ended (END_STREAM: true) or closed without (false). */
function endOrClose(stream: http2.ClientHttp2Stream): Promise<boolean> {
  return new Promise((resolve) => {
    stream.once('end', () => resolve(true));
    stream.once('close', () => resolve(false));
  });
}

/** The same over HTTP/2: the response once it has ended (END_STREAM) or its stream closed, and whether it ended. */
async function h2SlowUpload(session: http2.ClientHttp2Session, path: string): Promise<{ status: number; text: string; ended: boolean }> {
  const stream = session.request({ ':path': path, ':method': 'POST' });
  stream.on('error', () => {});
  const chunk = Buffer.alloc(64 * 1024, 'u');
  const timer = setInterval(() => {
    if (!stream.destroyed && !stream.writableEnded) stream.write(chunk);
  }, 20);
  stream.write(chunk);
  let status = 0;
  let text = '';
  let ended: boolean;
  stream.on('response', (h) => (status = Number(h[':status'])));
  stream.setEncoding('utf8');
  stream.on('data', (c: string) => (text += c));
  ended = await endOrClose(stream);
  clearInterval(timer);
  stream.close();
  return { status, text, ended };
}

test('a response an HTTP/2 upstream completes and then resets with NO_ERROR while the client still uploads reaches HTTP/1.1 and HTTP/2 clients whole', async (t) => {
  const { pki, proxy } = await setup(t);
  const h1 = await h1SlowUpload(proxy, pki, '/whole-then-reset');
  assert.deepEqual(h1, { status: 200, text: 'the whole answer', complete: true }, 'HTTP/1.1');
  const session = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => session.close());
  const h2 = await h2SlowUpload(session, '/whole-then-reset');
  assert.deepEqual(h2, { status: 200, text: 'the whole answer', ended: true }, 'HTTP/2');
  await waitForAccess(proxy, '/whole-then-reset', 2);
  const { warns, access } = linesFor(proxy, '/whole-then-reset');
  assert.equal(warns.length, 0, 'no upstream error is logged');
  assert.deepEqual(access.map((l) => [l['status'], l['error']]), [[200, undefined], [200, undefined]], JSON.stringify(access));
});

test('a response an HTTP/2 upstream resets with NO_ERROR before its END_STREAM while the client still uploads fails at HTTP/1.1 and HTTP/2 clients, rather than staying open', async (t) => {
  const { pki, proxy } = await setup(t);
  const h1 = await Promise.race([h1SlowUpload(proxy, pki, '/cut-upload'), delay(5000).then(() => 'still open after 5 s')]);
  assert.deepEqual(h1, { status: 200, text: 'part of the body', complete: false }, 'HTTP/1.1: cut off');
  const session = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => session.close());
  const h2 = await Promise.race([h2SlowUpload(session, '/cut-upload'), delay(5000).then(() => 'still open after 5 s')]);
  assert.deepEqual(h2, { status: 200, text: 'part of the body', ended: false }, 'HTTP/2: reset, never ended');
  await waitForAccess(proxy, '/cut-upload', 2);
  assert.equal(linesFor(proxy, '/cut-upload').warns.length, 2, 'each is logged as an upstream error');
});

// Regression: an upstream that answered whole (END_STREAM) and then reset NO_ERROR to stop the upload, as Go's HTTP/2
// server does, while the answer was still on its way to a slower client: http2-wrapper dropped what it held and
// the client's response was cut off. And the rest of the client's body, read only to be dropped, still counted
// against maxBodySize, whose 413 would cut the answer too.
test('an HTTP/2 client that goes on uploading past maxBodySize after the upstream answered whole and stopped the upload gets the whole answer', async (t) => {
  const { pki, proxy } = await setup(t);
  const session = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => session.close());
  const stream = session.request({ ':path': '/big-then-reset', ':method': 'POST' });
  stream.on('error', () => {});
  const chunk = Buffer.alloc(64 * 1024, 'u');
  let sent = 0;
  // 64 KiB every 10 ms, while the answer is read slowly: it is still on its way when the upstream stops the upload.
  const timer = setInterval(() => {
    if (!stream.destroyed && !stream.writableEnded && sent < 4 * 1024 * 1024) {
      stream.write(chunk);
      sent += chunk.length;
    }
  }, 10);
  t.after(() => clearInterval(timer));
  stream.write(chunk);
  let status = 0;
  let received = 0;
  let ended: boolean;
  stream.on('response', (h) => (status = Number(h[':status'])));
  stream.pause();
  const slowRead = setInterval(() => {
    let c: Buffer | null;
    for (let i = 0; i < 2 && (c = stream.read() as Buffer | null) !== null; i++) received += c.length;
  }, 25);
  t.after(() => clearInterval(slowRead));
  ended = await endOrClose(stream);
  clearInterval(timer);
  clearInterval(slowRead);
  assert.ok(sent > 256 * 1024, `the client sent ${sent} bytes, past maxBodySize`);
  assert.deepEqual({ status, received, ended }, { status: 200, received: 1024 * 1024, ended: true });
  await waitForAccess(proxy, '/big-then-reset', 1);
  const { access } = linesFor(proxy, '/big-then-reset');
  assert.deepEqual(access.map((l) => [l['status'], l['error'], l['bytes']]), [[200, undefined, 1024 * 1024]], JSON.stringify(access));
});


/**
 * POSTs to /text-then-reset with one 16 KiB chunk of upload, then nothing (the upload is left open), and reads the
 * compressed answer 4 KiB every 100 ms: about 6 s for the whole of it, seconds of which come after the upstream
 * answered whole and stopped the upload. `closed` settles with the stream's RST code when it closes.
 */
async function pausedUploadSlowRead(t: TestContext, session: http2.ClientHttp2Session): Promise<{ status: number; encoding: unknown; ended: boolean; body: Buffer; closed: Promise<number> }> {
  const stream = session.request({ ':path': '/text-then-reset', ':method': 'POST', 'accept-encoding': 'gzip' });
  stream.on('error', () => {});
  stream.write(Buffer.alloc(16 * 1024, 'u'));
  let status = 0;
  let encoding: unknown;
  const chunks: Buffer[] = [];
  stream.on('response', (h) => {
    status = Number(h[':status']);
    encoding = h['content-encoding'];
  });
  stream.pause();
  const slowRead = setInterval(() => {
    const c = (stream.read(4 * 1024) ?? stream.read()) as Buffer | null;
    if (c !== null) chunks.push(c);
  }, 100);
  t.after(() => clearInterval(slowRead));
  const closed = new Promise<number>((resolve) => stream.once('close', () => resolve(stream.rstCode ?? -1)));
  const ended = await endOrClose(stream);
  clearInterval(slowRead);
  return { status, encoding, ended, body: Buffer.concat(chunks), closed };
}

// RFC 9113 §8.1: a server that answers without reading the whole body closes the stream with NO_ERROR once the answer
// is out, so its client stops uploading. When the upstream stopped the upload before the client's response had ended
// (a compressed answer ends after the upstream's, once the encoder has given out its last bytes), the rest of the
// body was read and dropped but the client's stream was never closed: it went on uploading for nothing.
// bodyTimeout is off here: the upload pauses from the start, which bodyTimeout would rightly cut (see the README).
test('an HTTP/2 client whose upload the upstream stopped before its compressed answer ended gets the whole answer, then its stream closed with NO_ERROR', async (t) => {
  const { pki, proxy } = await setup(t, { bodyTimeout: '0s' });
  const session = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => session.close());
  const { status, encoding, ended, body, closed } = await pausedUploadSlowRead(t, session);
  assert.deepEqual({ status, encoding, ended }, { status: 200, encoding: 'gzip', ended: true }, 'an answer, ended');
  assert.equal(gunzipSync(body).equals(TEXT_ANSWER), true, 'the whole answer');
  const rst = await Promise.race([closed, delay(2000).then(() => 'still open 2 s after the answer ended')]);
  assert.equal(rst, NGHTTP2_NO_ERROR, 'the stream is closed with NO_ERROR, the upload left unfinished');
  await waitForAccess(proxy, '/text-then-reset', 1);
  const { access } = linesFor(proxy, '/text-then-reset');
  assert.deepEqual(access.map((l) => [l['status'], l['error']]), [[200, undefined]], JSON.stringify(access));
});

// With bodyTimeout on, the same exchange ends one of two ways, by which comes first: the upstream stopping the upload
// (its END_STREAM waits on the slow client's flow control), after which the dropped rest of the body is no one's
// business (the answer ends whole, the stream closes NO_ERROR), or bodyTimeout, which cuts the answer begun with
// RST_STREAM (CANCEL). Cancelling used to close() the stream with the compressed answer still queued, and on Node 20
// the session then sent empty DATA frames on it without end, allocating until std::bad_alloc ended the process
// (in about one run in four); so three exchanges, each followed by a request that must be served.
test('a bodyTimeout that cuts a compressed HTTP/2 answer still being written resets its stream with CANCEL, and the proxy serves on', { timeout: 90_000 }, async (t) => {
  const { pki, proxy } = await setup(t, { bodyTimeout: '1s' });
  for (let i = 1; i <= 3; i++) {
    const session = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
    const { status, ended, body, closed } = await pausedUploadSlowRead(t, session);
    const rst = await Promise.race([closed, delay(3000).then(() => -2)]);
    session.close();
    await waitForAccess(proxy, '/text-then-reset', i);
    const line = linesFor(proxy, '/text-then-reset').access[i - 1]!;
    assert.equal(status, 200);
    if (ended) {
      assert.equal(gunzipSync(body).equals(TEXT_ANSWER), true, `exchange ${i}: the whole answer`);
      assert.deepEqual([rst, line['status'], line['error']], [NGHTTP2_NO_ERROR, 200, undefined], `exchange ${i}: ${JSON.stringify(line)}`);
    } else {
      // CANCEL while the answer waits to be sent (the slow reader's usual case), INTERNAL_ERROR if nothing did.
      assert.ok([http2.constants.NGHTTP2_CANCEL, http2.constants.NGHTTP2_INTERNAL_ERROR].includes(rst), `exchange ${i}: reset with ${rst}`);
      assert.equal(line['error'], 'PORTICO_BODY_TIMEOUT', `exchange ${i}: ${JSON.stringify(line)}`);
    }
    const next = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
    const req = next.request({ ':path': '/' });
    req.end();
    const [headers] = (await once(req, 'response')) as [http2.IncomingHttpHeaders];
    req.resume();
    await endOrClose(req);
    next.close();
    assert.equal(headers[':status'], 200, `exchange ${i}: the next request is served`);
  }
  const rssMiB = process.memoryUsage.rss() / 1024 / 1024;
  assert.ok(rssMiB < 1024, `the process holds ${rssMiB.toFixed(0)} MiB`);
});
