/** Limits against slow or greedy clients: headers timeout (slowloris), keep-alive idle timeout, send timeout (a client that stops reading), maximum body size. */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http2 from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';
import { setTimeout as delay } from 'node:timers/promises';
import { makePki, startProxy, proxyOneHost, type TestPki, type TestProxy } from './helpers/proxy.js';
import { h1Request, h2Connect, h2Request, startUpstream } from './helpers/net.js';

async function setup(t: TestContext, limits: NonNullable<Parameters<typeof startProxy>[1]['limits']>): Promise<{ pki: TestPki; proxy: TestProxy; up: Awaited<ReturnType<typeof startUpstream>> }> {
  const pki = await makePki();
  const up = await startUpstream();
  const proxy = await proxyOneHost(t, pki, 'slow.test', up.url, { also: [() => up.close()], config: { limits } });
  return { pki, proxy, up };
}

/** A TLS connection speaking HTTP/1.1; resolves once it is established. */
async function rawConnect(proxy: TestProxy, pki: TestPki): Promise<tls.TLSSocket> {
  const socket = tls.connect({ host: '127.0.0.1', port: proxy.httpsPort, servername: 'slow.test', ca: pki.caPem, ALPNProtocols: ['http/1.1'] });
  socket.on('error', () => {});
  await once(socket, 'secureConnect');
  return socket;
}

test('a client that trickles its request headers (slowloris) is disconnected after headersTimeout', async (t) => {
  const { pki, proxy, up } = await setup(t, { headersTimeout: '1s' });
  const socket = await rawConnect(proxy, pki);
  t.after(() => socket.destroy());
  let received = '';
  socket.on('data', (c: Buffer) => {
    received += c.toString('latin1');
  });
  const started = performance.now();
  const closed = once(socket, 'close');
  socket.write('GET / HTTP/1.1\r\nHost: slow.test\r\n');
  // One header line every 200 ms, never the blank line that ends the head.
  const trickle = setInterval(() => {
    if (!socket.destroyed) socket.write(`X-Slow-${Math.round(performance.now())}: a\r\n`);
  }, 200);
  t.after(() => clearInterval(trickle));
  await Promise.race([closed, delay(6000)]);
  clearInterval(trickle);
  const ms = performance.now() - started;
  assert.equal(socket.destroyed, true, `the connection is still open after ${Math.round(ms)} ms`);
  assert.ok(ms >= 900 && ms < 3000, `closed after ${Math.round(ms)} ms, expected about 1 s`);
  if (received !== '') assert.match(received, /^HTTP\/1\.1 408 /, 'if anything is answered, it is 408');
  assert.equal(up.seen.length, 0, 'the incomplete request never reached the upstream');
});

test('an idle HTTP/1.1 keep-alive connection is closed after keepAliveTimeout', async (t) => {
  const { pki, proxy } = await setup(t, { keepAliveTimeout: '500ms' });
  const socket = await rawConnect(proxy, pki);
  t.after(() => socket.destroy());
  let received = '';
  socket.on('data', (c: Buffer) => {
    received += c.toString('latin1');
  });
  const closed = once(socket, 'close');
  socket.write('GET /ka HTTP/1.1\r\nHost: slow.test\r\n\r\n');
  const deadline = Date.now() + 3000;
  while (!received.includes('"url":"/ka"') && Date.now() < deadline) await delay(10);
  assert.match(received, /^HTTP\/1\.1 200 /);
  assert.doesNotMatch(received, /connection: close/i, 'the response keeps the connection alive');
  const idleFrom = performance.now();
  await Promise.race([closed, delay(4000)]);
  const ms = performance.now() - idleFrom;
  assert.equal(socket.destroyed, true, 'the idle connection was closed');
  assert.ok(ms >= 400 && ms < 2500, `closed after ${Math.round(ms)} ms idle, expected about 500 ms`);
});

test('an idle HTTP/2 connection is closed after keepAliveTimeout', async (t) => {
  const { pki, proxy } = await setup(t, { keepAliveTimeout: '500ms' });
  const session = await h2Connect(proxy.httpsPort, 'slow.test', pki.caPem);
  t.after(() => session.destroy());
  const r = await h2Request(session, { path: '/h2ka' });
  assert.equal(r.status, 200);
  const idleFrom = performance.now();
  await Promise.race([once(session, 'close'), delay(4000)]);
  const ms = performance.now() - idleFrom;
  assert.equal(session.closed || session.destroyed, true, 'the idle session was closed');
  assert.ok(ms < 2500, `closed after ${Math.round(ms)} ms idle, expected about 500 ms`);
});

test('an idle HTTP/2 connection whose client never closes its side after GOAWAY is closed sendTimeout later', async (t) => {
  const { pki, proxy } = await setup(t, { keepAliveTimeout: '500ms', sendTimeout: '1s' });
  // allowHalfOpen: this client keeps its side open after the server's FIN, as a careless client may.
  const tcp = net.connect({ host: '127.0.0.1', port: proxy.httpsPort, allowHalfOpen: true });
  const socket = tls.connect({ socket: tcp, servername: 'slow.test', ca: pki.caPem, ALPNProtocols: ['h2'] });
  t.after(() => socket.destroy());
  const errors: string[] = [];
  socket.on('error', (err: NodeJS.ErrnoException) => errors.push(String(err.code)));
  await once(socket, 'secureConnect');
  // The connection preface, an empty SETTINGS, and the ACK of the server's.
  socket.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]), Buffer.from([0, 0, 0, 4, 1, 0, 0, 0, 0])]));
  socket.resume();
  const started = performance.now();
  await Promise.race([once(socket, 'end'), delay(4000)]);
  assert.equal(socket.readableEnded, true, 'the server ended its side after keepAliveTimeout');
  // A PING every 200 ms: once the server has let go of the connection, one of them is answered with a reset.
  const ping = Buffer.from([0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
  const pinger = setInterval(() => {
    if (!socket.destroyed) socket.write(ping);
  }, 200);
  t.after(() => clearInterval(pinger));
  await Promise.race([new Promise((resolve) => socket.once('close', resolve)), delay(5000)]);
  clearInterval(pinger);
  const ms = performance.now() - started;
  assert.equal(socket.destroyed, true, `the server still held the connection ${Math.round(ms)} ms after it went idle`);
  assert.ok(ms > 1400, `closed after ${Math.round(ms)} ms: not before keepAliveTimeout and sendTimeout`);
  assert.ok(errors.some((c) => c === 'ECONNRESET' || c === 'EPIPE'), `reset by the server (${errors.join(', ')})`);
});

test('a body over maxBodySize gets 413, by Content-Length up front or while it streams, and never completes upstream', async (t) => {
  const { pki, proxy, up } = await setup(t, { maxBodySize: '1kb' });
  const ok = await h1Request({ port: proxy.httpsPort, sni: 'slow.test', path: '/small', method: 'POST', body: Buffer.alloc(1024, 'a'), ca: pki.caPem });
  assert.equal(ok.status, 200, 'a body of exactly the limit passes');

  const declared = await h1Request({ port: proxy.httpsPort, sni: 'slow.test', path: '/declared', method: 'POST', body: Buffer.alloc(1025, 'a'), ca: pki.caPem });
  assert.equal(declared.status, 413);
  assert.equal(declared.headers['x-portico-error'], 'PORTICO_BODY_TOO_LARGE');
  assert.ok(!up.seen.some((s) => s.url === '/declared'), 'refused before the upstream was asked');

  // HTTP/2 without content-length: only counting the streamed bytes can catch it.
  const session = await h2Connect(proxy.httpsPort, 'slow.test', pki.caPem);
  t.after(() => session.close());
  const stream = session.request({ ':method': 'POST', ':path': '/streamed' });
  stream.on('error', () => {});
  const response = once(stream, 'response') as Promise<[http2.IncomingHttpHeaders]>;
  for (let i = 0; i < 8 && !stream.destroyed; i++) {
    stream.write(Buffer.alloc(512, 'b'));
    await delay(20);
  }
  const [headers] = await Promise.race([response, delay(3000).then(() => [{}] as [http2.IncomingHttpHeaders])]);
  assert.equal(headers[':status'], 413);
  stream.destroy();
  const seen = up.seen.find((s) => s.url === '/streamed');
  if (seen !== undefined) {
    await delay(100);
    assert.equal(seen.aborted || seen.body.length === 0, true, 'the upstream never got the whole body as complete');
  }
  const after = await h2Request(session, { path: '/after' });
  assert.equal(after.status, 200, 'the session still works');
});

test('a client that stops reading a response is disconnected after sendTimeout, and its upstream exchange is cancelled', async (t) => {
  const pki = await makePki();
  const total = 64 * 1024 * 1024;
  let sent = 0;
  let upstreamClosedAt = 0;
  const up = await startUpstream((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': total });
    const chunk = Buffer.alloc(64 * 1024, 120);
    const pump = (): void => {
      while (!res.destroyed && sent < total) {
        sent += chunk.length;
        if (!res.write(chunk)) {
          res.once('drain', pump);
          return;
        }
      }
      if (sent >= total) res.end();
    };
    res.on('close', () => {
      upstreamClosedAt = performance.now();
    });
    pump();
  });
  const proxy = await proxyOneHost(t, pki, 'slow.test', up.url, { also: [() => up.close()], config: { limits: { sendTimeout: '1s' } } });
  const socket = await rawConnect(proxy, pki);
  t.after(() => socket.destroy());
  // The client asks, then never reads: the TLS socket is paused, so the kernel buffers fill and the response stalls.
  socket.pause();
  const started = performance.now();
  socket.write('GET /big HTTP/1.1\r\nHost: slow.test\r\n\r\n');
  while (upstreamClosedAt === 0 && performance.now() - started < 6000) await delay(50);
  const ms = upstreamClosedAt - started;
  assert.ok(upstreamClosedAt !== 0, 'the upstream exchange is still open after 6 s');
  assert.ok(ms >= 900 && ms < 4500, `the upstream exchange closed after ${Math.round(ms)} ms; sendTimeout is 1 s, checked once a second`);
  assert.ok(sent < total, 'the upstream never got to send the whole response');
  assert.equal(up.seen[0]?.aborted, true, 'the upstream saw its response cut off');
});
