/**
 * limits.bodyTimeout (nginx's client_body_timeout): a request body that stops arriving while Portico
 * reads it gets 408 PORTICO_BODY_TIMEOUT (or, once its response has started, an HTTP/2 stream reset with
 * CANCEL), and its upstream exchange is cancelled; a body that is slow but keeps moving, or one held
 * back by a slow upstream, is never cut. HTTP/2 from node:http2, HTTP/1.1 from a raw TLS socket; a
 * real HTTP/1.1 upstream on 127.0.0.1. (curl -T - cannot play the stalled client: it blocks reading
 * its quiet stdin, and so never reads the 408.)
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type http from 'node:http';
import http2 from 'node:http2';
import type net from 'node:net';
import tls from 'node:tls';
import { makePki, proxyOneHost, type TestPki, type TestProxy } from './helpers/proxy.js';
import { h2Connect, h2Request, startUpstream } from './helpers/net.js';
import { parseRawResponse } from './helpers/real-peers.js';

const HOST = 'body-timeout.test';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** What the upstream saw of one request: body bytes, and whether the request ended whole or was cut off. */
interface Seen {
  url: string;
  bytes: number;
  complete: boolean;
  closed: boolean;
}

/**
 * An upstream that reads each body and answers 200 with its byte count; /early answers its head and a
 * first body chunk at once and never ends; /later reads nothing for 3 s (its client's body is held
 * back by Portico meanwhile), then reads and answers.
 */
async function setup(t: TestContext, limits: Record<string, unknown>): Promise<{ proxy: TestProxy; pki: TestPki; seen: Seen[]; upUrl: string }> {
  const seen: Seen[] = [];
  const up = await startUpstream((req: http.IncomingMessage, res: http.ServerResponse) => {
    const s: Seen = { url: req.url ?? '', bytes: 0, complete: false, closed: false };
    seen.push(s);
    req.on('close', () => {
      s.complete = req.complete;
      s.closed = true;
    });
    const read = (): void => {
      req.on('data', (c: Buffer) => {
        s.bytes += c.length;
      });
      req.on('end', () => {
        if (!res.headersSent) res.end(`got ${s.bytes}`);
      });
      req.resume();
    };
    if (req.url === '/early') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('started');
      read();
    } else if (req.url === '/later') {
      req.pause();
      setTimeout(read, 3000);
    } else {
      read();
    }
  });
  const pki = await makePki();
  const proxy = await proxyOneHost(t, pki, HOST, up.url, { also: [() => up.close()], config: { limits } });
  return { proxy, pki, seen, upUrl: up.url };
}

async function waitUntil(what: string, fn: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** An HTTP/2 POST whose body the test writes; resolves with the response head, body and how the stream closed. */
function h2Upload(session: http2.ClientHttp2Session, path: string) {
  const stream = session.request({ ':method': 'POST', ':path': path });
  stream.on('error', () => {});
  const chunks: Buffer[] = [];
  let status = 0;
  let headers: http2.IncomingHttpHeaders = {};
  stream.on('response', (h) => {
    status = Number(h[':status']);
    headers = h;
  });
  stream.on('data', (c: Buffer) => chunks.push(c));
  const done = new Promise<{ status: number; headers: http2.IncomingHttpHeaders; text: string; rstCode: number | undefined }>((resolve) => {
    stream.on('close', () => resolve({ status, headers, text: Buffer.concat(chunks).toString(), rstCode: stream.rstCode }));
  });
  return { stream, done };
}

function accessLine(proxy: TestProxy, path: string): Record<string, unknown> | undefined {
  return proxy.logs.find((l) => l.msg === 'access' && l.path === path);
}

/** An HTTP/1.1 connection over TLS to the test host, destroyed after the test; `received()` is what it has read so far. */
async function h1Connection(t: TestContext, proxy: TestProxy, pki: TestPki): Promise<{ socket: tls.TLSSocket; received: () => string }> {
  const socket = tls.connect({ host: '127.0.0.1', port: proxy.httpsPort, servername: HOST, ca: pki.caPem, ALPNProtocols: ['http/1.1'] });
  socket.on('error', () => {});
  t.after(() => socket.destroy());
  await once(socket, 'secureConnect');
  let text = '';
  socket.on('data', (c: Buffer) => (text += c.toString('latin1')));
  return { socket, received: () => text };
}

test('an HTTP/2 request body that stops arriving gets 408 PORTICO_BODY_TIMEOUT after bodyTimeout, its upstream exchange is cancelled and an access line written; the session serves on', async (t) => {
  const { proxy, pki, seen } = await setup(t, { bodyTimeout: '1s' });
  const session = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => session.close());
  const started = performance.now();
  const { stream, done } = h2Upload(session, '/stall');
  stream.write('first bytes');
  const r = await done;
  const ms = performance.now() - started;
  assert.equal(r.status, 408);
  assert.equal(r.headers['x-portico-error'], 'PORTICO_BODY_TIMEOUT');
  assert.match(r.text, /^Request Timeout: the request body stopped arriving/);
  assert.ok(ms >= 1000 && ms < 4500, `answered after ${Math.round(ms)} ms, expected 1 to 3 s`);
  await waitUntil('the upstream exchange to be cancelled', () => seen[0]?.closed === true);
  assert.equal(seen[0]?.complete, false, 'the upstream request was cut off, not ended as if whole');
  assert.equal(seen[0]?.bytes, 'first bytes'.length);
  await waitUntil('the access line', () => accessLine(proxy, '/stall') !== undefined);
  const line = accessLine(proxy, '/stall')!;
  assert.equal(line.status, 408);
  assert.equal(line.error, 'PORTICO_BODY_TIMEOUT');
  const next = await h2Request(session, { path: '/after', method: 'POST', body: 'whole' });
  assert.equal(next.status, 200, 'the connection serves on');
  assert.equal(next.text, 'got 5');
});

test('an HTTP/2 request sent without END_STREAM and then no DATA at all gets 408 after bodyTimeout', async (t) => {
  const { proxy, pki, seen } = await setup(t, { bodyTimeout: '1s' });
  const session = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => session.close());
  const { done } = h2Upload(session, '/nothing');
  const r = await Promise.race([done, sleep(6000).then(() => undefined)]);
  assert.ok(r !== undefined, 'the stream is still open after 6 s');
  assert.equal(r.status, 408);
  assert.equal(r.headers['x-portico-error'], 'PORTICO_BODY_TIMEOUT');
  await waitUntil('the upstream exchange to be cancelled', () => seen[0]?.closed === true);
  assert.equal(seen[0]?.complete, false);
});

test('an HTTP/2 body that is slow but keeps moving is not cut by bodyTimeout, however long it takes in all', async (t) => {
  const { proxy, pki, seen } = await setup(t, { bodyTimeout: '1s' });
  const session = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => session.close());
  const { stream, done } = h2Upload(session, '/slow');
  // One byte every 400 ms for 4 s: four times bodyTimeout in all, never more than 400 ms of silence.
  for (let i = 0; i < 10; i++) {
    stream.write('x');
    await sleep(400);
  }
  stream.end();
  const r = await done;
  assert.equal(r.status, 200);
  assert.equal(r.text, 'got 10');
  assert.equal(seen[0]?.complete, true);
});

test('an HTTP/2 body held back because the upstream is slow to read it is not the client\'s silence: no 408', async (t) => {
  const { proxy, pki } = await setup(t, { bodyTimeout: '1s' });
  const session = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => session.close());
  const { stream, done } = h2Upload(session, '/later');
  // More than the flow-control windows and socket buffers hold: the client is stalled by Portico for 3 s.
  stream.end(Buffer.alloc(8 << 20, 0x61));
  const r = await done;
  assert.equal(r.status, 200, `got ${r.status} ${r.text}`);
  assert.equal(r.text, `got ${8 << 20}`);
});

test('an HTTP/2 body that stops after its response started has its stream reset, never ended, and the upstream exchange is cancelled', async (t) => {
  const { proxy, pki, seen } = await setup(t, { bodyTimeout: '1s' });
  const session = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => session.close());
  const { stream, done } = h2Upload(session, '/early');
  stream.write('some');
  const r = await done;
  assert.equal(r.status, 200, 'the response had started');
  assert.equal(r.text, 'started');
  // INTERNAL_ERROR, as for any response Portico cuts short: RST_STREAM alone, no END_STREAM before it.
  assert.equal(r.rstCode, http2.constants.NGHTTP2_INTERNAL_ERROR);
  await waitUntil('the upstream exchange to be cancelled', () => seen[0]?.closed === true);
  assert.equal(seen[0]?.complete, false);
  await waitUntil('the access line', () => accessLine(proxy, '/early') !== undefined);
  assert.equal(accessLine(proxy, '/early')?.error, 'PORTICO_BODY_TIMEOUT');
});

test('a reload applies bodyTimeout to new HTTP/2 streams; "0s" turns it off', async (t) => {
  const { proxy, pki, upUrl } = await setup(t, { bodyTimeout: '0s' });
  const session = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => session.close());
  const off = h2Upload(session, '/off');
  off.stream.write('a');
  const early = await Promise.race([off.done, sleep(3000).then(() => undefined)]);
  assert.equal(early, undefined, 'with "0s" a stalled body is left alone');
  off.stream.end('b');
  assert.equal((await off.done).text, 'got 2');
  const certs = { cert: `${HOST}.pem`, key: `${HOST}-key.pem` };
  await proxy.reconfigure({ limits: { bodyTimeout: '1s' }, hosts: { [HOST]: { tls: certs, routes: [{ path: '/', upstream: upUrl }] } } });
  const on = h2Upload(session, '/on');
  on.stream.write('a');
  const r = await Promise.race([on.done, sleep(6000).then(() => undefined)]);
  assert.ok(r !== undefined, 'the stalled stream is still open 6 s after the reload set bodyTimeout to 1 s');
  assert.equal(r.status, 408, 'the new value applies to a stream opened after the reload, on a connection opened before it');
});

test('an HTTP/1.1 request body that stops arriving gets 408 PORTICO_BODY_TIMEOUT and the connection closes; the upstream exchange is cancelled', async (t) => {
  const { proxy, pki, seen } = await setup(t, { bodyTimeout: '1s' });
  const { socket, received } = await h1Connection(t, proxy, pki);
  const started = performance.now();
  socket.write(`POST /h1 HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: 100\r\n\r\nfirst`);
  await Promise.race([once(socket, 'end'), sleep(6000)]);
  const ms = performance.now() - started;
  const r = parseRawResponse(received());
  assert.equal(r.status, 408, received());
  assert.equal(r.headers['x-portico-error'], 'PORTICO_BODY_TIMEOUT');
  assert.equal(r.headers.connection, 'close');
  assert.ok(ms >= 1000 && ms < 4500, `answered after ${Math.round(ms)} ms`);
  await waitUntil('the upstream exchange to be cancelled', () => seen[0]?.closed === true);
  assert.equal(seen[0]?.complete, false);
  assert.equal(accessLine(proxy, '/h1')?.error, 'PORTICO_BODY_TIMEOUT');
});

test('an HTTP/1.1 body that is slow but keeps moving is not cut by bodyTimeout', async (t) => {
  const { proxy, pki } = await setup(t, { bodyTimeout: '1s' });
  const { socket, received } = await h1Connection(t, proxy, pki);
  socket.write(`POST /h1slow HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: 8\r\n\r\n`);
  for (let i = 0; i < 8; i++) {
    await sleep(400);
    socket.write('y');
  }
  await waitUntil('the response', () => received().includes('got 8'), 3000);
  assert.equal(parseRawResponse(received()).status, 200);
});

/** An h2c upstream on 127.0.0.1 that reads each request body and notes whether it ended or was reset; never answers. */
async function startH2cUpstream(): Promise<{ url: string; seen: { ended: boolean; closed: boolean }[]; close: () => Promise<void> }> {
  const seen: { ended: boolean; closed: boolean }[] = [];
  const sessions = new Set<http2.ServerHttp2Session>();
  const server = http2.createServer();
  server.on('session', (session) => {
    sessions.add(session);
    session.on('close', () => sessions.delete(session));
  });
  server.on('stream', (stream) => {
    const s = { ended: false, closed: false };
    seen.push(s);
    stream.on('error', () => {});
    stream.on('data', () => {});
    stream.on('end', () => (s.ended = true));
    stream.on('close', () => (s.closed = true));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  const close = (): Promise<void> =>
    new Promise((resolve) => {
      for (const session of sessions) session.destroy();
      server.close(() => resolve());
    });
  return { url: `h2c://127.0.0.1:${port}`, seen, close };
}

test('with an HTTP/2 (h2c) upstream, a stalled client body gets 408 and the upstream stream is reset, not ended', async (t) => {
  const up = await startH2cUpstream();
  const pki = await makePki();
  const proxy = await proxyOneHost(t, pki, HOST, up.url, { also: [up.close], config: { limits: { bodyTimeout: '1s' } } });
  const session = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => session.close());
  const { stream, done } = h2Upload(session, '/h2c-stall');
  stream.write('part');
  const r = await done;
  assert.equal(r.status, 408);
  assert.equal(r.headers['x-portico-error'], 'PORTICO_BODY_TIMEOUT');
  await waitUntil('the upstream stream to close', () => up.seen[0]?.closed === true);
  assert.equal(up.seen[0]?.ended, false, 'the upstream request was reset, not ended as if whole');
});

test('with an HTTP/2 (h2c) upstream, a client that resets its upload mid-body has the upstream request reset, never ended as if whole', async (t) => {
  const up = await startH2cUpstream();
  const pki = await makePki();
  const proxy = await proxyOneHost(t, pki, HOST, up.url, { also: [up.close] });
  const session = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => session.close());
  const { stream } = h2Upload(session, '/h2c-reset');
  stream.write('part of an upload');
  await waitUntil('the request to reach the upstream', () => up.seen.length === 1);
  await sleep(100);
  // destroy(), not close(): node's close() sends END_STREAM before its RST_STREAM, which would end the body whole.
  stream.destroy(new Error('client gives up'));
  await waitUntil('the upstream stream to close', () => up.seen[0]?.closed === true);
  assert.equal(up.seen[0]?.ended, false, 'the upstream request was reset, not ended as if whole');
});

test('HTTP/1.1: a body that starts a moment after its head on a new connection is not taken for a stalled one (the clock starts when the body is first found waited for)', async (t) => {
  const { proxy, pki } = await setup(t, {});
  // Several connections, so that the once-a-second sweep falls into the pause of some of them.
  const results = await Promise.all(
    [0, 1, 2, 3].map(async (i) => {
      await sleep(i * 250);
      const { socket, received } = await h1Connection(t, proxy, pki);
      socket.write(`POST /late HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: 5\r\n\r\n`);
      await sleep(1100);
      socket.write('hello');
      await sleep(300);
      return parseRawResponse(received()).status;
    }),
  );
  assert.deepEqual(results, [200, 200, 200, 200]);
});
