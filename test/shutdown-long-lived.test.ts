/**
 * Graceful shutdown and reloads with long-lived work open: WebSockets over HTTP/1.1 and HTTP/2 (RFC 8441),
 * stream ports, responses still streaming, HTTP/2 sessions with streams in flight, idle keep-alive connections.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http2 from 'node:http2';
import { writeFile } from 'node:fs/promises';
import net from 'node:net';
import { dirname } from 'node:path';
import tls from 'node:tls';
import { setTimeout as delay } from 'node:timers/promises';
import WebSocket from 'ws';
import { makePki, startProxy, waitForLog, type TestProxy } from './helpers/proxy.js';
import { canConnect, freePort, h2Connect, startUpstream } from './helpers/net.js';
import { wsEchoUpstream } from './helpers/ws-echo-upstream.js';
import { spawnProxy } from './helpers/child-proxy.js';
import type { ConfigInput } from '../src/config/schema.js';

/** A TCP echo server; its sockets are destroyed on close. */
async function echoServer(): Promise<{ url: string; close: () => Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    s.pipe(s);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `tcp://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/** Bytes of `/upload` bodies the events upstream has received. */
let uploaded = 0;

/** Server-sent events: a short event every 100 ms for as long as the client stays (`/events`); `/upload` reads its body; other paths get "ok". */
function eventsUpstream(): ReturnType<typeof startUpstream> {
  return startUpstream((req, res) => {
    if (req.url === '/upload') {
      req.on('data', (c: Buffer) => (uploaded += c.length));
      req.on('end', () => res.end('got it'));
      return;
    }
    if (req.url !== '/events') return res.end('ok');
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    const timer = setInterval(() => res.write('data: tick\n\n'), 100);
    res.on('close', () => clearInterval(timer));
  });
}

/** The first `n` access and stream lines after index `from`, waiting up to 2 s for them. */
async function waitForLines(proxy: TestProxy, from: number, n: number): Promise<Record<string, unknown>[]> {
  const end = Date.now() + 2000;
  for (;;) {
    const lines = accessLines({ logs: proxy.logs.slice(from) } as TestProxy);
    if (lines.length >= n || Date.now() > end) return lines;
    await delay(20);
  }
}

const accessLines = (proxy: TestProxy): Record<string, unknown>[] => proxy.logs.filter((l) => l.msg === 'access' || l.msg === 'stream');

async function setup(limits: Record<string, string>, extra: Record<string, unknown> = {}): Promise<{ proxy: TestProxy; caPem: string; streamPort: number; wsUrl: string; sseUrl: string; config: (routes: unknown[], streams?: unknown[]) => Record<string, unknown>; cleanup: () => Promise<void> }> {
  const pki = await makePki();
  const ws = await wsEchoUpstream();
  const sse = await eventsUpstream();
  const echo = await echoServer();
  const streamPort = await freePort();
  const tlsFiles = await pki.issue('a', ['a.test']);
  const config = (routes: unknown[], streams: unknown[] = [{ port: streamPort, addresses: ['127.0.0.1'], upstream: echo.url }]): Record<string, unknown> => ({
    log: { level: 'info', access: true },
    limits,
    ...extra,
    streams,
    hosts: { 'a.test': { tls: tlsFiles, routes } },
  });
  const routes = [
    { path: '/', upstream: sse.url },
    { path: '/ws', upstream: ws.url },
  ];
  const proxy = await startProxy(pki, config(routes) as never);
  return {
    proxy,
    caPem: pki.caPem,
    streamPort,
    wsUrl: ws.url,
    sseUrl: sse.url,
    config: (r, s) => config(r ?? routes, s),
    cleanup: async () => {
      await proxy.stop();
      await ws.close();
      await sse.close();
      await echo.close();
      await pki.cleanup();
    },
  };
}

function openWs(proxy: TestProxy, caPem: string): Promise<WebSocket> {
  const ws = new WebSocket(`wss://127.0.0.1:${proxy.httpsPort}/ws`, { headers: { host: 'a.test' }, servername: 'a.test', ca: caPem } as WebSocket.ClientOptions);
  ws.on('error', () => {});
  return once(ws, 'open').then(() => ws);
}

/** Sends `text` and reads the echo; fails if the WebSocket closes first. */
function echoWs(ws: WebSocket, text: string): Promise<string> {
  const got = Promise.race([once(ws, 'message').then(([m]) => String(m)), once(ws, 'close').then(() => assert.fail('the WebSocket closed'))]);
  ws.send(text);
  return got;
}

/** An RFC 8441 WebSocket on `s`, its 200 received. */
async function openH2Ws(s: http2.ClientHttp2Session): Promise<http2.ClientHttp2Stream> {
  const stream = s.request({ ':method': 'CONNECT', ':protocol': 'websocket', ':path': '/ws', ':authority': 'a.test', 'sec-websocket-version': '13' });
  stream.on('error', () => {});
  const [head] = (await once(stream, 'response')) as [http2.IncomingHttpHeaders];
  assert.equal(head[':status'], 200);
  return stream;
}

/** A TLS connection that got one whole HTTP/1.1 response and stays open (keep-alive). */
async function idleKeepAlive(port: number, caPem: string): Promise<tls.TLSSocket> {
  const s = tls.connect({ host: '127.0.0.1', port, servername: 'a.test', ca: caPem, ALPNProtocols: ['http/1.1'] });
  s.on('error', () => {});
  await once(s, 'secureConnect');
  s.write('GET /ok HTTP/1.1\r\nHost: a.test\r\n\r\n');
  await new Promise<void>((resolve) => {
    let got = '';
    const onData = (chunk: Buffer): void => {
      got += String(chunk);
      if (!got.endsWith('\r\n\r\nok')) return;
      s.off('data', onData);
      resolve();
    };
    s.on('data', onData);
  });
  return s;
}

test('stop(): idle keep-alive connections close at once; WebSockets (HTTP/1.1 and HTTP/2), a stream port connection and an event stream work on until limits.shutdownTimeout, then are cut, each access line saying "shutdown", and stop() returns', { timeout: 15_000 }, async () => {
  const { proxy, caPem, streamPort, cleanup } = await setup({ shutdownTimeout: '1s' });
  try {
    const idle = await idleKeepAlive(proxy.httpsPort, caPem);
    const idleClosed = once(idle, 'close');
    const ws1 = await openWs(proxy, caPem);
    const ws1Closed = once(ws1, 'close');
    const session = await h2Connect(proxy.httpsPort, 'a.test', caPem);
    session.on('error', () => {});
    const goaway = once(session, 'goaway');
    const ws2 = await openH2Ws(session);
    const ws2Closed = once(ws2, 'close');
    const events = session.request({ ':path': '/events', ':authority': 'a.test' });
    events.on('error', () => {});
    let ticks = 0;
    events.on('data', () => ticks++);
    await once(events, 'response');
    // An upload in progress: a chunk every 100 ms that never ends.
    const upload = tls.connect({ host: '127.0.0.1', port: proxy.httpsPort, servername: 'a.test', ca: caPem, ALPNProtocols: ['http/1.1'] });
    upload.on('error', () => {});
    await once(upload, 'secureConnect');
    upload.write('POST /upload HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n');
    const uploading = setInterval(() => upload.write('5\r\nhello\r\n'), 100);
    const tcp = net.connect({ host: '127.0.0.1', port: streamPort });
    tcp.on('error', () => {});
    const tcpClosed = once(tcp, 'close');
    tcp.write('x');
    await once(tcp, 'data');
    const from = proxy.logs.length;
    const started = performance.now();
    const stopped = proxy.stop();
    await Promise.race([idleClosed, delay(500).then(() => assert.fail('the idle keep-alive connection is still open 500 ms into the stop'))]);
    await Promise.race([goaway, delay(500).then(() => assert.fail('no GOAWAY'))]);
    assert.equal(await canConnect(proxy.httpsPort), false, 'new connections are refused while stopping');
    assert.equal(await canConnect(streamPort), false, 'new stream connections are refused while stopping');
    await delay(300);
    assert.equal(await echoWs(ws1, 'still'), 'still', 'the HTTP/1.1 WebSocket works before the deadline');
    const ticksBefore = ticks;
    const uploadedBefore = uploaded;
    await delay(250);
    assert.ok(ticks > ticksBefore, 'the event stream goes on before the deadline');
    assert.ok(uploaded > uploadedBefore, 'the upload goes on before the deadline');
    tcp.write('y');
    await once(tcp, 'data');
    await stopped;
    clearInterval(uploading);
    const ms = performance.now() - started;
    assert.ok(ms >= 900 && ms < 3000, `stop() returned after ${Math.round(ms)} ms`);
    await Promise.race([Promise.all([ws1Closed, ws2Closed, tcpClosed]), delay(1000).then(() => assert.fail('a tunnel is still open after stop()'))]);
    await waitForLog(proxy, 'for the stream connection', (l) => l.msg === 'stream', from);
    const lines = accessLines(proxy).slice(0);
    const cut = (pred: (l: Record<string, unknown>) => boolean, what: string): Record<string, unknown> => {
      const line = lines.find(pred);
      assert.ok(line !== undefined, `no access line for ${what}: ${JSON.stringify(lines)}`);
      return line;
    };
    assert.equal(cut((l) => l.upgrade === 'websocket' && l.proto === 'http/1.1', 'the HTTP/1.1 WebSocket').reason, 'shutdown');
    assert.equal(cut((l) => l.upgrade === 'websocket' && l.proto === 'h2', 'the HTTP/2 WebSocket').reason, 'shutdown');
    assert.equal(cut((l) => l.msg === 'stream', 'the stream connection').reason, 'shutdown');
    assert.equal(cut((l) => l.path === '/events', 'the event stream').reason, 'shutdown');
    assert.equal(cut((l) => l.path === '/upload', 'the upload').reason, 'shutdown');
    session.destroy();
  } finally {
    await cleanup();
  }
});

test('a reload closes the WebSockets (HTTP/1.1 and HTTP/2) of a route it removed and the connections of a stream port it removed, saying "config reload"; a reload that keeps the route, or changes only its target, keeps them', { timeout: 15_000 }, async () => {
  const { proxy, caPem, streamPort, wsUrl, sseUrl: sse, config, cleanup } = await setup({});
  const reload = async (c: Record<string, unknown>): Promise<void> => {
    await writeFile(proxy.configFile, JSON.stringify({ ...c, listen: { https: { port: proxy.httpsPort, addresses: ['127.0.0.1'] }, http: { port: proxy.httpPort, addresses: ['127.0.0.1'] } }, certsDir: dirname(proxy.configFile) }));
    const r = await proxy.portico.reload();
    assert.ok(r.ok, JSON.stringify(r));
  };
  try {
    const ws1 = await openWs(proxy, caPem);
    const session = await h2Connect(proxy.httpsPort, 'a.test', caPem);
    session.on('error', () => {});
    const ws2 = await openH2Ws(session);
    const tcp = net.connect({ host: '127.0.0.1', port: streamPort });
    tcp.on('error', () => {});
    tcp.write('x');
    await once(tcp, 'data');
    // Another route added, then the WebSocket route's target changed: nothing open is closed.
    await reload(config([{ path: '/', upstream: sse }, { path: '/ws', upstream: wsUrl }, { path: '/other', respond: { status: 204 } }]));
    await reload(config([{ path: '/', upstream: sse }, { path: '/ws', upstream: sse }]));
    assert.equal(await echoWs(ws1, 'kept'), 'kept', 'the HTTP/1.1 WebSocket survives reloads that keep its route');
    assert.equal(ws2.destroyed, false, 'the HTTP/2 WebSocket survives them');
    tcp.write('y');
    assert.equal(String((await once(tcp, 'data'))[0]), 'y', 'the stream connection survives them');
    const from = proxy.logs.length;
    const closed = Promise.all([once(ws1, 'close'), once(ws2, 'close'), once(tcp, 'close')]);
    // The /ws route removed ("/" now routes its path) and the stream port removed.
    await reload(config([{ path: '/', upstream: sse }], []));
    await Promise.race([closed, delay(1000).then(() => assert.fail('a tunnel of the removed route or port is still open 1 s after the reload'))]);
    const lines = await waitForLines(proxy, from, 3);
    assert.deepEqual(lines.map((l) => `${String(l.msg)} ${String(l.proto ?? '')} ${String(l.reason)}`).sort(), ['access h2 config reload', 'access http/1.1 config reload', 'stream  config reload']);
    assert.ok(proxy.logs.slice(from).some((l) => l.msg === 'config reload closed connections it no longer serves' && l.tunnels === 2 && l.streamConnections === 1));
    session.destroy();
  } finally {
    await cleanup();
  }
});

test('with two workers, SIGHUP closes the WebSockets of a route the new config removed, and SIGTERM keeps the others working until limits.shutdownTimeout, then cuts them and exits 0, their access lines saying why', { timeout: 30_000 }, async (t) => {
  const pki = await makePki();
  const ws = await wsEchoUpstream();
  const tlsFiles = await pki.issue('a', ['a.test']);
  const config = (routes: unknown[]): Omit<ConfigInput, 'listen'> => ({ workers: 2, log: { level: 'info', access: true }, limits: { shutdownTimeout: '1s' }, hosts: { 'a.test': { tls: tlsFiles, routes } } }) as Omit<ConfigInput, 'listen'>;
  const both = [{ path: '/ws', upstream: ws.url }, { path: '/chat', upstream: ws.url }];
  const child = await spawnProxy(pki, config(both));
  t.after(async () => {
    await child.kill();
    await ws.close();
    await pki.cleanup();
  });
  const open = (path: string): Promise<WebSocket> => {
    const w = new WebSocket(`wss://127.0.0.1:${child.httpsPort}${path}`, { headers: { host: 'a.test' }, servername: 'a.test', ca: pki.caPem } as WebSocket.ClientOptions);
    w.on('error', () => {});
    return once(w, 'open').then(() => w);
  };
  // Two of each, so that both workers hold some (round-robin, or SO_REUSEPORT spreading them).
  const kept = [await open('/ws'), await open('/ws')];
  const removed = [await open('/chat'), await open('/chat')];
  await writeFile(child.configFile, JSON.stringify({ ...config([both[0]]), listen: { https: { port: child.httpsPort, addresses: ['127.0.0.1'] }, http: null }, certsDir: pki.dir }));
  const removedClosed = Promise.all(removed.map((w) => once(w, 'close')));
  child.proc.kill('SIGHUP');
  await Promise.race([removedClosed, delay(5000).then(() => assert.fail('the WebSockets of the removed route are still open 5 s after SIGHUP'))]);
  for (const w of kept) assert.equal(await echoWs(w, 'kept'), 'kept');
  const keptClosed = Promise.all(kept.map((w) => once(w, 'close')));
  const started = performance.now();
  child.proc.kill('SIGTERM');
  await delay(400);
  assert.equal(await canConnect(child.httpsPort), false, 'new connections are refused after SIGTERM');
  for (const w of kept) assert.equal(await echoWs(w, 'stopping'), 'stopping', 'a WebSocket works on before the deadline');
  await keptClosed;
  const ms = performance.now() - started;
  assert.ok(ms >= 900, `the WebSockets were cut ${Math.round(ms)} ms after SIGTERM, before the 1 s deadline`);
  assert.equal(await Promise.race([child.exited, delay(5000).then(() => 'still running')]), 0);
  const reasons = child.logs.filter((l) => l.msg === 'access' && l.upgrade === 'websocket').map((l) => `${String(l.path)} ${String(l.reason)}`);
  assert.deepEqual(reasons.sort(), ['/chat config reload', '/chat config reload', '/ws shutdown', '/ws shutdown']);
});
