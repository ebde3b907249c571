/**
 * HTTP/2 clients on Portico's stream-level server (src/http2/): what node:http2's
 * compatibility layer used to do for the proxy and the stream handler now does
 * itself: trailers only where an upstream can send them, bodiless responses to
 * HEAD, 100-continue and other expectations, CONNECT refused.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { once } from 'node:events';
import { makePki, proxyOneHost } from './helpers/proxy.js';
import { h2Connect, h2Request, startUpstream } from './helpers/net.js';
import { FLAG, FRAME, H2_ERROR, RawH2, requestFields } from './helpers/raw-h2.js';

const HOST = 'h2c-side.test';

/** An upstream answering /trailers chunked with trailers, /plain with a Content-Length, and echoing the rest as JSON. */
async function upstreamAndProxy(t: test.TestContext) {
  const up = await startUpstream((req, res, seen) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      seen.body = Buffer.concat(chunks);
      if (req.url === '/trailers') {
        res.writeHead(200, { 'content-type': 'text/plain', trailer: 'x-checksum, x-status' });
        res.write('part one, ');
        res.addTrailers({ 'x-checksum': 'abc123', 'x-status': 'done' });
        res.end('part two');
        return;
      }
      if (req.url === '/plain') {
        res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '5' });
        res.end('plain');
        return;
      }
      const body = JSON.stringify({ method: req.method, body: seen.body.toString() });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(req.method === 'HEAD' ? undefined : body);
    });
  });
  const pki = await makePki();
  const proxy = await proxyOneHost(t, pki, HOST, up.url, { also: [() => up.close()] });
  const session = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => session.close());
  return { up, session };
}

test('trailers of a chunked HTTP/1.1 response reach an HTTP/2 client; a Content-Length response ends with its last DATA frame', async (t) => {
  const { session } = await upstreamAndProxy(t);
  const chunked = await h2Request(session, { path: '/trailers' });
  assert.equal(chunked.status, 200);
  assert.equal(chunked.text, 'part one, part two');
  assert.equal(chunked.trailers['x-checksum'], 'abc123');
  assert.equal(chunked.trailers['x-status'], 'done');
  assert.equal(chunked.headers.trailer, 'x-checksum, x-status', 'the Trailer header announcing them passes through');

  // Without trailers, END_STREAM rides on the last DATA frame: no HEADERS frame after the body.
  const stream = session.request({ ':path': '/plain' });
  let trailerFrames = 0;
  stream.on('trailers', () => trailerFrames++);
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c));
  stream.end();
  await once(stream, 'end');
  assert.equal(Buffer.concat(chunks).toString(), 'plain');
  assert.equal(trailerFrames, 0);
});

test('HEAD over HTTP/2 gets the head with its Content-Length and no body, and the stream ends', async (t) => {
  const { session, up } = await upstreamAndProxy(t);
  const r = await h2Request(session, { path: '/echo', method: 'HEAD' });
  assert.equal(r.status, 200);
  assert.equal(r.body.length, 0);
  assert.ok(Number(r.headers['content-length']) > 0, 'the length of the body a GET would get');
  assert.equal(up.seen.at(-1)?.method, 'HEAD');
  const after = await h2Request(session, { path: '/echo' });
  assert.equal(JSON.parse(after.text).method, 'GET', 'the session serves on');
});

test('Expect: 100-continue over HTTP/2 gets the interim 100, then the upstream answers the whole body', async (t) => {
  const { session, up } = await upstreamAndProxy(t);
  const stream = session.request({ ':path': '/upload', ':method': 'POST', expect: '100-continue' });
  const events: string[] = [];
  stream.on('continue', () => {
    events.push('continue');
    stream.end('the body');
  });
  let status = 0;
  stream.on('response', (h) => {
    events.push('response');
    status = Number(h[':status']);
  });
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c));
  await once(stream, 'end');
  assert.deepEqual(events, ['continue', 'response']);
  assert.equal(status, 200);
  assert.deepEqual(JSON.parse(Buffer.concat(chunks).toString()), { method: 'POST', body: 'the body' });
  assert.equal(up.seen.at(-1)?.headers.expect, undefined, 'the expectation was met here, not passed on');
});

test('Expect: 100-continue over HTTP/2 refused before the body is read (no route) gets its answer and no 100', async (t) => {
  const { session, up } = await upstreamAndProxy(t);
  const stream = session.request({ ':path': '/upload', ':method': 'POST', expect: '100-continue', ':authority': 'no-such-host.test' });
  const events: string[] = [];
  stream.on('continue', () => events.push('continue'));
  stream.on('error', () => {});
  const status = await new Promise<number>((resolve) => stream.once('response', (h) => resolve(Number(h[':status']))));
  events.push('response');
  stream.close();
  assert.ok(status === 421 || status === 404, `refused: ${status}`);
  assert.deepEqual(events, ['response'], 'no "100 Continue" for a body nobody will read');
  assert.equal(up.seen.length, 0);
});

test('an expectation other than 100-continue gets 417 and a CONNECT request 405, neither reaching the upstream', async (t) => {
  const { session, up } = await upstreamAndProxy(t);
  const expect = await h2Request(session, { path: '/x', method: 'POST', headers: { expect: 'something-else' }, body: 'b' });
  assert.equal(expect.status, 417);
  const connect = session.request({ ':method': 'CONNECT', ':authority': 'elsewhere.test:443' });
  const [head] = (await once(connect, 'response')) as [http2.IncomingHttpHeaders];
  assert.equal(head[':status'], 405);
  connect.close();
  assert.equal(up.seen.length, 0);
  const after = await h2Request(session, { path: '/echo' });
  assert.equal(after.status, 200, 'the session serves on');
});

test('the access log marks an HTTP/2 response the client reset as aborted, and no complete one, even an error answered at once', async (t) => {
  const up = await startUpstream((req, res) => {
    req.resume();
    if (req.url === '/slow') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('first part'); // and never the rest
      return;
    }
    res.end('ok');
  });
  const pki = await makePki();
  const proxy = await proxyOneHost(t, pki, HOST, up.url, { also: [() => up.close()], config: { log: { level: 'info', access: true } } });
  const session = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => session.close());

  assert.equal((await h2Request(session, { path: '/fine' })).status, 200);
  // Answered inside the stream's first turn: the stream can close before its writable side reports 'finish'.
  assert.equal((await h2Request(session, { path: '/', authority: 'elsewhere.test' })).status, 421);
  const slow = session.request({ ':path': '/slow' });
  slow.on('error', () => {});
  await once(slow, 'data');
  slow.close(http2.constants.NGHTTP2_CANCEL);

  const access = (): Record<string, unknown>[] => proxy.logs.filter((l) => l.msg === 'access');
  for (let i = 0; i < 100 && access().length < 3; i++) await new Promise((r) => setTimeout(r, 20));
  const byPath = new Map(access().map((l) => [l.path, l]));
  assert.equal(byPath.get('/fine')?.aborted, undefined, 'a complete response is not aborted');
  assert.equal(byPath.get('/')?.status, 421);
  assert.equal(byPath.get('/')?.aborted, undefined, 'a complete error response is not aborted');
  assert.equal(byPath.get('/slow')?.aborted, true, 'the reset response is');
});

test('an HTTP/2 response whose Content-Length upstream closes mid-body is reset with INTERNAL_ERROR and never ended with END_STREAM', async (t) => {
  const up = await startUpstream((req, res) => {
    req.resume();
    res.writeHead(200, { 'content-length': '100' });
    res.write('partial');
    setTimeout(() => res.socket?.destroy(), 20);
  });
  const pki = await makePki();
  const proxy = await proxyOneHost(t, pki, HOST, up.url, { also: [() => up.close()] });
  const c = await RawH2.connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => c.close());
  c.request(1, requestFields(HOST, '/cut'));
  const rst = await c.waitFor((f) => f.stream === 1 && f.type === FRAME.RST_STREAM);
  assert.equal(rst?.payload.readUInt32BE(0), H2_ERROR.INTERNAL_ERROR);
  const data = c.frames.filter((f) => f.stream === 1 && f.type === FRAME.DATA);
  assert.equal(Buffer.concat(data.map((f) => f.payload)).toString(), 'partial');
  assert.ok(
    c.frames.every((f) => f.stream !== 1 || (f.flags & FLAG.END_STREAM) === 0 || f.type === FRAME.RST_STREAM),
    'no frame of the stream carried END_STREAM: the client cannot take the 7 bytes for the whole body',
  );
});
