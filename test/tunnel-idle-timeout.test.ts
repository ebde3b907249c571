/**
 * Idle timeouts of tunnels: a WebSocket through Portico (upstream "tunnelIdleTimeout") and a raw TCP stream
 * port (streams[].idleTimeout) with no bytes either way for the timeout are closed on both sides, with the
 * reason on their log line; bytes in either direction keep them open; a reload keeps open tunnels.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net, { type AddressInfo } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import WebSocket from 'ws';
import { validateConfig } from '../src/config/load.js';
import type { ConfigInput } from '../src/config/schema.js';
import { makePki, startProxyFor, type TestPki, type TestProxy } from './helpers/proxy.js';
import { freePort } from './helpers/net.js';
import { wsEchoUpstream, type WsEchoUpstream } from './helpers/ws-echo-upstream.js';

const HOST = 'idle.test';
const TICK_MS = 250;

/** A ws server: "/echo" echoes, "/ticks" sends "tick" every TICK_MS and reads nothing, "/sink" reads and never sends. */
function startWsUpstream(): Promise<WsEchoUpstream> {
  return wsEchoUpstream({
    serve(ws, req) {
      if (req.url === '/echo') ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
      if (req.url === '/ticks') {
        const timer = setInterval(() => ws.send('tick'), TICK_MS);
        ws.once('close', () => clearInterval(timer));
      }
    },
  });
}

function hostsFor(cert: { cert: string; key: string }, upstream: string, tunnelIdleTimeout: string): ConfigInput['hosts'] {
  return { [HOST]: { tls: cert, routes: [{ path: '/', upstream: { targets: [upstream], tunnelIdleTimeout } }] } };
}

/** The arguments of `emitter`'s next `event`, or a failure after `ms` (so a tunnel that never closes fails its test, not the file). */
async function within(emitter: NodeJS.EventEmitter, event: string, ms: number, what: string): Promise<unknown[]> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), ms);
  try {
    return await once(emitter, event, { signal: ac.signal });
  } catch {
    throw new Error(`${what}: no '${event}' within ${ms} ms`);
  } finally {
    clearTimeout(timer);
  }
}

async function setup(t: TestContext, tunnelIdleTimeout = '1s'): Promise<{ pki: TestPki; proxy: TestProxy; up: Awaited<ReturnType<typeof startWsUpstream>>; cert: { cert: string; key: string } }> {
  const pki = await makePki();
  const up = await startWsUpstream();
  const cert = await pki.issue('idle', [HOST]);
  const proxy = await startProxyFor(t, pki, { log: { level: 'info', access: true }, hosts: hostsFor(cert, up.url, tunnelIdleTimeout) }, [() => up.close()]);
  return { pki, proxy, up, cert };
}

/** Waits for the message `text` on `ws` (echoes of other messages are skipped); fails if it closes first or after `ms`. */
function nextMessage(ws: WebSocket, text: string, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (err?: Error): void => {
      clearTimeout(timer);
      ws.off('message', onMessage);
      ws.off('close', onClose);
      if (err) reject(err);
      else resolve();
    };
    const onMessage = (data: Buffer): void => {
      if (data.toString() === text) done();
    };
    const onClose = (): void => done(new Error(`the tunnel closed before the echo of "${text}"`));
    const timer = setTimeout(() => done(new Error(`no echo of "${text}" within ${ms} ms`)), ms);
    ws.on('message', onMessage);
    ws.on('close', onClose);
  });
}

async function openWs(proxy: TestProxy, pki: TestPki, path: string): Promise<WebSocket> {
  const ws = new WebSocket(`wss://127.0.0.1:${proxy.httpsPort}${path}`, { servername: HOST, headers: { host: HOST }, ca: pki.caPem } as WebSocket.ClientOptions);
  ws.on('error', () => {});
  await once(ws, 'open');
  return ws;
}

/** The access lines of closed tunnels (status 101) for `path`, waited for up to 2 s until there are `n`. */
async function tunnelLines(proxy: TestProxy, path: string, n: number): Promise<Record<string, unknown>[]> {
  const lines = (): Record<string, unknown>[] => proxy.logs.filter((l) => l['msg'] === 'access' && l['status'] === 101 && l['path'] === path);
  for (let i = 0; i < 100 && lines().length < n; i++) await delay(20);
  return lines();
}

test('a WebSocket with no bytes either way for tunnelIdleTimeout is closed on both sides, its access line saying why', async (t) => {
  const { pki, proxy, up } = await setup(t);
  const ws = await openWs(proxy, pki, '/sink');
  const serverSide = [...up.wss.clients].at(-1);
  assert.ok(serverSide !== undefined);
  const upstreamClosed = once(serverSide, 'close');
  const started = performance.now();
  const [code] = (await within(ws, 'close', 5000, 'the quiet WebSocket')) as [number];
  const idleMs = performance.now() - started;
  assert.equal(code, 1006, 'the client saw its connection closed (no close frame: Portico is no WebSocket endpoint)');
  assert.ok(idleMs >= 900 && idleMs < 3000, `closed after ${Math.round(idleMs)} ms without traffic (tunnelIdleTimeout 1 s)`);
  await upstreamClosed;
  const [line] = await tunnelLines(proxy, '/sink', 1);
  assert.equal(line?.['reason'], 'idle timeout');
});

test('bytes in either direction, one message every quarter of tunnelIdleTimeout, keep a WebSocket open past it', async (t) => {
  const { pki, proxy } = await setup(t);
  // Both ways (echo), upstream to client only (ticks), client to upstream only (sink).
  const echo = await openWs(proxy, pki, '/echo');
  const ticks = await openWs(proxy, pki, '/ticks');
  const sink = await openWs(proxy, pki, '/sink');
  let echoed = 0;
  let ticked = 0;
  echo.on('message', () => echoed++);
  ticks.on('message', () => ticked++);
  const closedEarly: string[] = [];
  for (const [name, ws] of [['echo', echo], ['ticks', ticks], ['sink', sink]] as const) ws.once('close', () => closedEarly.push(name));
  const timer = setInterval(() => {
    echo.send('ping');
    sink.send('data');
  }, TICK_MS);
  await delay(2500);
  clearInterval(timer);
  assert.deepEqual(closedEarly, [], 'no tunnel was closed while bytes moved through it');
  assert.ok(echoed >= 5 && ticked >= 5, `messages kept flowing (${echoed} echoes, ${ticked} ticks)`);
  for (const ws of [echo, ticks, sink]) {
    ws.close();
    await once(ws, 'close');
  }
  for (const path of ['/echo', '/ticks', '/sink']) {
    const [line] = await tunnelLines(proxy, path, 1);
    assert.ok(line !== undefined && line['reason'] === undefined, `${path}: closed by its client, no reason given`);
  }
});

test('a reload keeps open WebSockets, which keep the idle timeout they were opened with', async (t) => {
  const { pki, proxy, up, cert } = await setup(t);
  const ws = await openWs(proxy, pki, '/echo');
  ws.send('before');
  await nextMessage(ws, 'before', 5000);
  // A reload that turns the idle timeout off: tunnels opened after it have none, the open one keeps its 1 s.
  // Bytes every 250 ms keep it from idling out while the reload runs, however long that takes on a busy machine.
  const keep = setInterval(() => ws.send('keep'), 250);
  try {
    await proxy.reconfigure({ log: { level: 'info', access: true }, hosts: hostsFor(cert, up.url, '0s') });
  } finally {
    clearInterval(keep);
  }
  ws.send('after the reload');
  await nextMessage(ws, 'after the reload', 5000);
  const started = performance.now();
  await within(ws, 'close', 5000, 'the tunnel opened before the reload');
  const idleMs = performance.now() - started;
  assert.ok(idleMs >= 900 && idleMs < 3000, `and was closed after ${Math.round(idleMs)} ms idle`);
  const fresh = await openWs(proxy, pki, '/echo');
  await delay(1600);
  assert.equal(fresh.readyState, WebSocket.OPEN, 'one opened after the reload has no idle timeout');
  fresh.close();
  await once(fresh, 'close');
});

test('tunnelIdleTimeout outside "0s" or 1s–24d is refused with its path', () => {
  const issues = (tunnelIdleTimeout: string): string[] => {
    const r = validateConfig({ hosts: { 'b.test': { tls: { cert: 'c', key: 'k' }, routes: [{ upstream: { targets: ['http://127.0.0.1:1'], tunnelIdleTimeout } }] } } });
    return r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`);
  };
  for (const bad of ['500ms', '25d', '1 hour']) {
    const got = issues(bad);
    assert.equal(got.length, 1, `${bad}: ${got.join(' | ')}`);
    assert.match(got[0]!, /^hosts\["?b\.test"?\]\.routes\[0\]\.upstream\.tunnelIdleTimeout: /, bad);
  }
  assert.match(issues('25d')[0]!, /"0s" \(no idle timeout\) or a duration from "1s" to "24d"/);
  for (const good of ['0s', '1s', '1h', '24d']) assert.deepEqual(issues(good), [], good);
});

/** A TCP server that ticks "t" every TICK_MS on "ticks" connections and reads everything, answering nothing. */
async function startTcpUpstream(): Promise<{ url: string; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('error', () => {});
    s.resume();
    s.once('data', (d: Buffer) => {
      if (d.toString().startsWith('ticks')) {
        const timer = setInterval(() => s.write('t'), TICK_MS);
        s.once('close', () => clearInterval(timer));
      }
    });
    s.once('close', () => sockets.delete(s));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `tcp://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/** Portico with a stream port (idleTimeout 1 s, access lines on) to a TCP upstream; `proxyProtocol`: it takes a PROXY header. */
async function startStreamPort(t: TestContext, proxyProtocol: boolean): Promise<{ proxy: TestProxy; port: number }> {
  const pki = await makePki();
  const up = await startTcpUpstream();
  const port = await freePort();
  const cert = await pki.issue('s', ['s.test']);
  const proxy = await startProxyFor(
    t,
    pki,
    { log: { level: 'info', access: true }, streams: [{ port, addresses: ['127.0.0.1'], upstream: up.url, idleTimeout: '1s', proxyProtocol }], hosts: { 's.test': { tls: cert, routes: [{ path: '/', upstream: 'http://127.0.0.1:1' }] } } },
    [() => up.close()],
  );
  return { proxy, port };
}

/** A client of the stream port on 127.0.0.1:`port` that sends `first`, then reads (and drops) what comes. */
async function connectStream(port: number, first: string): Promise<net.Socket> {
  const c = net.connect({ host: '127.0.0.1', port });
  c.on('error', () => {});
  await once(c, 'connect');
  c.write(first);
  c.resume();
  return c;
}

test('a stream port closes a connection with no bytes either way for idleTimeout, and keeps one with bytes in either direction', async (t) => {
  const { proxy, port } = await startStreamPort(t, false);
  const quiet = await connectStream(port, 'quiet');
  const ticks = await connectStream(port, 'ticks');
  const sending = await connectStream(port, 'sending');
  const closedEarly: string[] = [];
  ticks.once('close', () => closedEarly.push('ticks'));
  sending.once('close', () => closedEarly.push('sending'));
  const timer = setInterval(() => sending.write('s'), TICK_MS);
  const started = performance.now();
  await within(quiet, 'close', 5000, 'the quiet stream connection');
  const idleMs = performance.now() - started;
  assert.ok(idleMs >= 900 && idleMs < 3000, `the quiet connection closed after ${Math.round(idleMs)} ms (idleTimeout 1 s)`);
  await delay(2500 - idleMs);
  clearInterval(timer);
  assert.deepEqual(closedEarly, [], 'connections with bytes one way only stayed open past idleTimeout');
  ticks.destroy();
  sending.destroy();
  for (let i = 0; i < 100 && proxy.logs.filter((l) => l['msg'] === 'stream').length < 3; i++) await delay(20);
  const lines = proxy.logs.filter((l) => l['msg'] === 'stream');
  assert.deepEqual(lines.map((l) => l['reason']).sort(), ['idle timeout', undefined, undefined].sort());
});

test('on a stream port with proxyProtocol, a connection closed by idleTimeout is not taken for one without a PROXY header', async (t) => {
  const { proxy, port } = await startStreamPort(t, true);
  const c = await connectStream(port, 'PROXY TCP4 127.0.0.1 127.0.0.1 5000 6000\r\nquiet');
  await within(c, 'close', 5000, 'the quiet stream connection');
  for (let i = 0; i < 100 && !proxy.logs.some((l) => l['msg'] === 'stream'); i++) await delay(20);
  assert.equal(proxy.logs.find((l) => l['msg'] === 'stream')?.['reason'], 'idle timeout');
  assert.deepEqual(proxy.logs.filter((l) => String(l['msg']).includes('PROXY protocol header')), [], 'no refused PROXY header is logged');
});
