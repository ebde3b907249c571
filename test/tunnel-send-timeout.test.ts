/**
 * limits.sendTimeout on tunnels (src/proxy/tunnel-send.ts): a WebSocket whose writes towards one side have not
 * moved for sendTimeout while bytes wait (a client, over HTTP/1.1 or HTTP/2, that stopped reading a flooding
 * upstream; an upstream that stopped reading a flooding client) is closed on both sides, its access line saying
 * why; quiet tunnels and slowly read ones stay open past it. Real peers: `ws` upstreams, raw TLS clients, node:http2.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import tls from 'node:tls';
import { setTimeout as delay } from 'node:timers/promises';
import type { WebSocket } from 'ws';
import { webSocketAccept } from '../src/proxy/websocket-key.js';
import { makePki, startProxyFor, waitForLog, type TestPki, type TestProxy } from './helpers/proxy.js';
import { h2Connect, h2Request, readSlowly } from './helpers/net.js';
import { wsEchoUpstream, type WsEchoUpstream } from './helpers/ws-echo-upstream.js';

const HOST = 'send.test';
const SEND_TIMEOUT_MS = 2000;
/** 16 KiB binary messages, kept at most 1 MiB ahead of what the upstream's socket has written. */
const MESSAGE = Buffer.alloc(16 * 1024, 0x61);
const AHEAD_BYTES = 1024 * 1024;
/** What the slowly reading client takes every 100 ms. */
const READ_BUDGET_BYTES = 256 * 1024;

/** A ws server: "/flood" sends MESSAGE as fast as its socket takes it, "/quiet" does nothing; `server` keeps each WebSocket by path. */
async function startWsUpstream(): Promise<{ up: WsEchoUpstream; server: Map<string, WebSocket[]> }> {
  const server = new Map<string, WebSocket[]>();
  const up = await wsEchoUpstream({
    serve(ws, req) {
      const path = req.url ?? '';
      server.set(path, [...(server.get(path) ?? []), ws]);
      ws.on('error', () => {});
      if (path !== '/flood') return;
      const timer = setInterval(() => {
        while (ws.readyState === ws.OPEN && ws.bufferedAmount < AHEAD_BYTES) ws.send(MESSAGE);
      }, 5);
      ws.once('close', () => clearInterval(timer));
    },
  });
  return { up, server };
}

/** An upstream that answers an upgrade with a 101 and then reads nothing: its socket kept in `held`. */
async function startDeafUpstream(): Promise<{ url: string; held: net.Socket[]; close(): Promise<void> }> {
  const held: net.Socket[] = [];
  const srv = net.createServer((s) => {
    s.on('error', () => {});
    let got = '';
    const onData = (d: Buffer): void => {
      got += d.toString('latin1');
      const end = got.indexOf('\r\n\r\n');
      if (end < 0) return;
      s.off('data', onData);
      s.pause();
      held.push(s);
      const key = /sec-websocket-key: *(\S+)/i.exec(got.slice(0, end))?.[1] ?? '';
      s.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${webSocketAccept(key)}\r\n\r\n`);
    };
    s.on('data', onData);
  });
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  return {
    url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}`,
    held,
    close: () =>
      new Promise<void>((r) => {
        for (const s of held) s.destroy();
        srv.close(() => r());
      }),
  };
}

async function setup(t: TestContext): Promise<{ pki: TestPki; proxy: TestProxy; server: Map<string, WebSocket[]>; deaf: Awaited<ReturnType<typeof startDeafUpstream>> }> {
  const pki = await makePki();
  const { up, server } = await startWsUpstream();
  const deaf = await startDeafUpstream();
  const cert = await pki.issue('send', [HOST]);
  const proxy = await startProxyFor(
    t,
    pki,
    {
      log: { level: 'info', access: true },
      limits: { sendTimeout: `${SEND_TIMEOUT_MS / 1000}s` },
      hosts: { [HOST]: { tls: cert, routes: [{ path: '/', upstream: up.url }, { path: '/deaf', upstream: deaf.url }] } },
    },
    [() => up.close(), () => deaf.close()],
  );
  return { pki, proxy, server, deaf };
}

/** A raw WebSocket client over TLS (HTTP/1.1) whose 101 head has been read; paused: it reads nothing until told. */
async function openRaw(t: TestContext, proxy: TestProxy, pki: TestPki, path: string): Promise<tls.TLSSocket> {
  const s = tls.connect({ host: '127.0.0.1', port: proxy.httpsPort, servername: HOST, ca: pki.caPem, ALPNProtocols: ['http/1.1'] });
  s.on('error', () => {});
  t.after(() => s.destroy());
  await once(s, 'secureConnect');
  s.write(`GET ${path} HTTP/1.1\r\nHost: ${HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`);
  let got = Buffer.alloc(0);
  while (got.indexOf('\r\n\r\n') < 0) {
    const [chunk] = (await once(s, 'data')) as [Buffer];
    got = Buffer.concat([got, chunk]);
  }
  s.pause();
  const end = got.indexOf('\r\n\r\n') + 4;
  assert.match(got.subarray(0, end).toString('latin1'), /^HTTP\/1\.1 101 /, `${path}: switched`);
  // What came after the head goes back, so that the reader sees the tunnel's bytes whole.
  if (got.length > end) s.unshift(got.subarray(end));
  return s;
}

/** Resolves with the time it took `emitter` to emit 'close' (whatever errors come first), or rejects after `ms`. */
function closedWithin(emitter: NodeJS.EventEmitter, ms: number, what: string): Promise<number> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what}: not closed within ${ms} ms`)), ms);
    emitter.once('close', () => {
      clearTimeout(timer);
      resolve(performance.now() - started);
    });
  });
}

/**
 * A client that reads nothing cannot see its connection end (the FIN waits behind the bytes it left unread):
 * once Portico has closed the tunnel's upstream side, it reads again, and must find its connection closed.
 */
async function readsToItsEnd(s: net.Socket, what: string): Promise<void> {
  s.on('data', () => {});
  s.resume();
  await closedWithin(s, 3000, what);
}

/** Whether `s` is still open: not closed, and its peer has not ended. */
function isOpen(s: net.Socket): boolean {
  return !s.destroyed && !s.readableEnded && s.readyState === 'open';
}

test('an HTTP/1.1 WebSocket whose client stops reading a flooding upstream is closed on both sides after sendTimeout, its access line saying why, while a quiet one stays open', async (t) => {
  const { pki, proxy, server } = await setup(t);
  const quiet = await openRaw(t, proxy, pki, '/quiet');
  const stuck = await openRaw(t, proxy, pki, '/flood');
  const upstreamSide = server.get('/flood')?.[0];
  assert.ok(upstreamSide !== undefined);
  // The client reads nothing from here: Portico's socket towards it fills, then back-pressure pauses the upstream.
  const ms = await closedWithin(upstreamSide, SEND_TIMEOUT_MS + 6000, 'the upstream side of the WebSocket whose client stopped reading');
  assert.ok(ms >= SEND_TIMEOUT_MS, `closed after ${Math.round(ms)} ms, not before sendTimeout (${SEND_TIMEOUT_MS} ms)`);
  await readsToItsEnd(stuck, 'the client side');
  const line = await waitForLog(proxy, 'for the stalled tunnel', (l) => l['msg'] === 'access' && l['path'] === '/flood');
  assert.equal(line['status'], 101);
  assert.equal(line['reason'], 'send timeout');
  assert.equal(line['detail'], 'the client stopped reading');
  assert.ok(typeof line['bytes'] === 'number' && line['bytes'] > 0, 'the bytes that did reach the client are counted');
  assert.ok(ms > SEND_TIMEOUT_MS && isOpen(quiet), 'the quiet WebSocket, nothing waiting on it, is still open past sendTimeout');
  assert.equal(server.get('/quiet')?.[0]?.readyState, 1, 'and so is its upstream side');
  assert.equal(proxy.logs.filter((l) => l['msg'] === 'access' && l['path'] === '/quiet').length, 0);
  quiet.destroy();
});

test('an HTTP/1.1 WebSocket read slowly, but read, stays open past sendTimeout while one beside it whose client stopped reading is closed', async (t) => {
  const { pki, proxy, server } = await setup(t);
  const slow = await openRaw(t, proxy, pki, '/flood');
  const stuck = await openRaw(t, proxy, pki, '/flood');
  // The slow reader takes at most READ_BUDGET_BYTES every 100 ms (2.5 MB/s), far slower than the upstream floods, so
  // bytes always wait for it in Portico, but they keep moving. (What Portico sees move is what the kernel takes
  // from it: behind loopback's socket buffers, several MiB, a reader much slower than this shows no progress
  // for seconds, as it would to nginx's send_timeout.)
  const reader = readSlowly(t, slow, READ_BUDGET_BYTES);
  const stuckUpstreamSide = server.get('/flood')?.[1];
  assert.ok(stuckUpstreamSide !== undefined);
  await closedWithin(stuckUpstreamSide, SEND_TIMEOUT_MS + 6000, 'the upstream side of the WebSocket whose client stopped reading');
  await readsToItsEnd(stuck, 'its client side');
  const readAtStuck = reader.bytes;
  await delay(SEND_TIMEOUT_MS + 1500);
  reader.stop();
  assert.ok(isOpen(slow), 'the slowly read WebSocket is open, more than sendTimeout after the stuck one closed');
  assert.ok(reader.bytes > readAtStuck, `and still moving (${readAtStuck} bytes read, then ${reader.bytes})`);
  const lines = proxy.logs.filter((l) => l['msg'] === 'access' && l['path'] === '/flood');
  assert.deepEqual(
    lines.map((l) => l['reason']),
    ['send timeout'],
    'one tunnel closed, for sendTimeout',
  );
  slow.destroy();
});

test('an HTTP/1.1 WebSocket whose upstream stops reading a flooding client is closed on both sides after sendTimeout, its access line saying the upstream stopped reading', async (t) => {
  const { pki, proxy, deaf } = await setup(t);
  const client = await openRaw(t, proxy, pki, '/deaf');
  client.resume();
  const chunk = Buffer.alloc(64 * 1024, 0x62);
  // Write as fast as the connection takes it; back-pressure soon stops it.
  const pump = (): void => {
    while (!client.destroyed && client.write(chunk));
    if (!client.destroyed) client.once('drain', pump);
  };
  pump();
  const upstreamSocket = deaf.held[0];
  assert.ok(upstreamSocket !== undefined);
  const ms = await closedWithin(client, SEND_TIMEOUT_MS + 6000, 'the WebSocket whose upstream stopped reading');
  assert.ok(ms >= SEND_TIMEOUT_MS, `closed after ${Math.round(ms)} ms`);
  await readsToItsEnd(upstreamSocket, 'the upstream side');
  const line = await waitForLog(proxy, 'for the stalled tunnel', (l) => l['msg'] === 'access' && l['path'] === '/deaf');
  assert.equal(line['reason'], 'send timeout');
  assert.equal(line['detail'], 'the upstream stopped reading');
});

test('a WebSocket over HTTP/2 whose client stops reading a flooding upstream has its stream cancelled after sendTimeout and its upstream connection closed, the session serving on and a quiet WebSocket on it staying open', async (t) => {
  const { pki, proxy, server } = await setup(t);
  const s = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => s.destroy());
  await new Promise((resolve) => s.ping(resolve));
  const open = (path: string): http2.ClientHttp2Stream => {
    const stream = s.request({ ':method': 'CONNECT', ':protocol': 'websocket', ':path': path, ':authority': HOST, 'sec-websocket-version': '13' });
    stream.on('error', () => {});
    return stream;
  };
  const quiet = open('/quiet');
  const [quietHead] = (await once(quiet, 'response')) as [http2.IncomingHttpHeaders];
  assert.equal(quietHead[':status'], 200);
  // Never read: node:http2 sends no WINDOW_UPDATE for a stream its reader has not consumed, so its window shuts.
  const stuck = open('/flood');
  const [head] = (await once(stuck, 'response')) as [http2.IncomingHttpHeaders];
  assert.equal(head[':status'], 200);
  const upstreamSide = server.get('/flood')?.[0];
  assert.ok(upstreamSide !== undefined);
  const upstreamClosed = once(upstreamSide, 'close');
  const ms = await closedWithin(stuck, SEND_TIMEOUT_MS + 6000, 'the stream whose client stopped reading');
  assert.ok(ms >= SEND_TIMEOUT_MS, `cancelled after ${Math.round(ms)} ms`);
  assert.equal(stuck.rstCode, http2.constants.NGHTTP2_CANCEL, 'reset with CANCEL');
  await upstreamClosed;
  const line = await waitForLog(proxy, 'for the stalled tunnel', (l) => l['msg'] === 'access' && l['path'] === '/flood');
  assert.equal(line['method'], 'CONNECT');
  assert.equal(line['proto'], 'h2');
  assert.equal(line['reason'], 'send timeout');
  assert.equal(line['detail'], 'the client stopped reading');
  assert.equal(quiet.closed, false, 'the quiet WebSocket on the same session is open');
  assert.equal(server.get('/quiet')?.[0]?.readyState, 1, 'and so is its upstream side');
  const plain = await h2Request(s, { path: '/page', authority: HOST });
  assert.equal(plain.status, 200, 'the session serves on');
  s.destroy();
});
