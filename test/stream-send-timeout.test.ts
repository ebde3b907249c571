/**
 * streams[].sendTimeout (src/proxy/tunnel-send.ts, watched from src/stream/stream-connection.ts): a stream
 * connection whose writes towards one side have not moved for sendTimeout while bytes wait (a client that
 * keeps sending but never reads what its target answers; a target that stops reading) is closed on both
 * sides, its stream line saying why, though bytes kept moving until the stall and idleTimeout never fired;
 * quiet connections and slowly but steadily read ones stay open past it. Real sockets on 127.0.0.1.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { makePki, startProxyFor, waitForLog, type TestProxy } from './helpers/proxy.js';
import { freePort, readSlowly } from './helpers/net.js';

const SEND_TIMEOUT_MS = 1000;
const CHUNK = Buffer.alloc(64 * 1024, 0x61);
/** What the slowly reading client takes every 100 ms (5 MB/s, far slower than a target sends on loopback). */
const READ_BUDGET_BYTES = 512 * 1024;

/** A TCP server on 127.0.0.1 that hands each connection to `serve`; `sockets` keeps them in order of arrival. */
async function tcpServer(serve: (s: net.Socket) => void): Promise<{ url: string; sockets: net.Socket[]; close: () => Promise<void> }> {
  const sockets: net.Socket[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.push(s);
    s.on('error', () => {});
    serve(s);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `tcp://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    sockets,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/** Writes CHUNK to `s` for as long as it takes it (again on each 'drain'), until it closes. */
function sendForever(s: net.Socket): void {
  const go = (): void => {
    while (!s.destroyed && s.write(CHUNK));
  };
  s.on('drain', go);
  go();
}

/** Upstreams: one echoing, one sending as fast as it may (and reading what comes), one reading nothing; stream ports to each with a 1s sendTimeout. */
async function setup(t: TestContext): Promise<{
  proxy: TestProxy;
  ports: { echo: number; flood: number; deaf: number };
  upstreams: { echo: net.Socket[]; flood: net.Socket[]; deaf: net.Socket[] };
}> {
  const pki = await makePki();
  const echo = await tcpServer((s) => s.pipe(s));
  const flood = await tcpServer((s) => {
    s.resume();
    sendForever(s);
  });
  // Reads nothing; once told to read (to see Portico's FIN behind what it left unread), closes at the end.
  const deaf = await tcpServer((s) => {
    s.pause();
    s.once('end', () => s.destroy());
  });
  const ports = { echo: await freePort(), flood: await freePort(), deaf: await freePort() };
  const cert = await pki.issue('s', ['s.test']);
  const stream = (port: number, upstream: string) => ({ port, addresses: ['127.0.0.1'], upstream, sendTimeout: `${SEND_TIMEOUT_MS}ms` });
  const proxy = await startProxyFor(
    t,
    pki,
    {
      log: { level: 'info', access: true },
      streams: [stream(ports.echo, echo.url), stream(ports.flood, flood.url), stream(ports.deaf, deaf.url)],
      hosts: { 's.test': { tls: cert, routes: [{ path: '/', upstream: 'http://127.0.0.1:1' }] } },
    },
    [echo.close, flood.close, deaf.close],
  );
  return { proxy, ports, upstreams: { echo: echo.sockets, flood: flood.sockets, deaf: deaf.sockets } };
}

/** A client connected to a stream port, reading nothing until told; destroyed after the test. */
async function connect(t: TestContext, port: number): Promise<net.Socket> {
  const c = net.connect({ host: '127.0.0.1', port });
  c.on('error', () => {});
  t.after(() => c.destroy());
  await once(c, 'connect');
  c.pause();
  return c;
}

/** The n-th socket an upstream accepted, once it has. */
async function accepted(sockets: readonly net.Socket[], n: number): Promise<net.Socket> {
  for (let i = 0; i < 200 && sockets.length <= n; i++) await delay(10);
  const s = sockets[n];
  assert.ok(s !== undefined, `upstream connection ${n} arrived`);
  return s;
}

/** Resolves with the ms `s` took to close, or rejects after `ms`. */
function closedWithin(s: net.Socket, ms: number, what: string): Promise<number> {
  const started = performance.now();
  if (s.destroyed) return Promise.resolve(0);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what}: not closed within ${ms} ms`)), ms);
    s.once('close', () => {
      clearTimeout(timer);
      resolve(performance.now() - started);
    });
  });
}

/** A peer that read nothing sees its end only once it reads what was left unread (or its reset): it reads, and must find its connection closed. */
async function readsToItsEnd(s: net.Socket, what: string): Promise<void> {
  const closed = closedWithin(s, 3000, what);
  s.on('data', () => {});
  s.resume();
  await closed;
}

/** Whether `s` is still open: not closed, and its peer has not ended. */
function isOpen(s: net.Socket): boolean {
  return !s.destroyed && !s.readableEnded && s.readyState === 'open';
}

test('a stream connection whose client sends continuously but never reads what its target echoes is closed on both sides after sendTimeout, its stream line saying why', async (t) => {
  const { proxy, ports, upstreams } = await setup(t);
  const c = await connect(t, ports.echo);
  const started = performance.now();
  sendForever(c);
  const up = await accepted(upstreams.echo, 0);
  await closedWithin(up, SEND_TIMEOUT_MS + 5000, 'the target side of the connection whose client reads nothing');
  const ms = performance.now() - started;
  assert.ok(ms >= SEND_TIMEOUT_MS, `closed after ${Math.round(ms)} ms, not before sendTimeout`);
  await readsToItsEnd(c, 'the client that read nothing');
  const line = await waitForLog(proxy, 'stream with reason send timeout', (l) => l.msg === 'stream' && l.stream === ports.echo);
  assert.equal(line.reason, 'send timeout', JSON.stringify(line));
  assert.equal(line.detail, 'the client stopped reading', JSON.stringify(line));
  assert.ok(Number(line.bytesIn) > 0 && Number(line.bytesOut) > 0, `bytes moved both ways before the stall: ${JSON.stringify(line)}`);
  assert.ok(!proxy.logs.some((l) => l.msg === 'stream failed'), 'not a failure');
});

test('a stream connection whose target stops reading what its client sends is closed after sendTimeout, its stream line naming the target', async (t) => {
  const { proxy, ports, upstreams } = await setup(t);
  const c = await connect(t, ports.deaf);
  sendForever(c);
  const up = await accepted(upstreams.deaf, 0);
  const started = performance.now();
  // The client's bytes that Portico had not read are dropped with its socket: the client sees a reset.
  await closedWithin(c, SEND_TIMEOUT_MS + 5000, 'the client whose target reads nothing');
  const ms = performance.now() - started;
  assert.ok(ms >= SEND_TIMEOUT_MS, `closed after ${Math.round(ms)} ms, not before sendTimeout`);
  await readsToItsEnd(up, 'the target that read nothing');
  const line = await waitForLog(proxy, 'stream with reason send timeout', (l) => l.msg === 'stream' && l.stream === ports.deaf);
  assert.equal(line.reason, 'send timeout', JSON.stringify(line));
  assert.equal(line.detail, 'the upstream stopped reading', JSON.stringify(line));
});

test('slowly but steadily read and quiet stream connections stay open past sendTimeout, while one whose client reads nothing is closed', async (t) => {
  const { proxy, ports, upstreams } = await setup(t);
  const slow = await connect(t, ports.flood);
  const slowUp = await accepted(upstreams.flood, 0);
  const stalled = await connect(t, ports.flood);
  const stalledUp = await accepted(upstreams.flood, 1);
  const quiet = await connect(t, ports.echo);
  const quietUp = await accepted(upstreams.echo, 0);
  // The slow reader takes at most READ_BUDGET_BYTES every 100 ms, so bytes always wait for it in Portico, but they
  // keep moving. (What Portico sees move is what the kernel takes from it, which frees room a third of its send
  // buffer at a time: behind loopback's buffers, several MiB, a much slower reader shows no progress for seconds,
  // as it would to nginx's send_timeout.)
  const reader = readSlowly(t, slow, READ_BUDGET_BYTES);

  // The control: the connection that reads nothing goes, so the watch is on for this port.
  await closedWithin(stalledUp, SEND_TIMEOUT_MS + 5000, 'the target side of the connection whose client reads nothing');
  await waitForLog(proxy, 'stream with reason send timeout', (l) => l.msg === 'stream' && l.reason === 'send timeout');
  await readsToItsEnd(stalled, 'the client that read nothing');
  // Two more checks (once a second) for the others, the slow reader still reading.
  await delay(2 * SEND_TIMEOUT_MS);
  const before = reader.bytes;
  await delay(500);
  assert.ok(reader.bytes > before, `the slow reader still gets bytes (${before} then ${reader.bytes})`);
  assert.ok(isOpen(slow) && isOpen(slowUp), `the slowly read connection is open: ${JSON.stringify(proxy.logs.filter((l) => l.msg === 'stream'))}`);
  assert.ok(isOpen(quiet) && isOpen(quietUp), 'the quiet connection is open');
  assert.equal(proxy.logs.filter((l) => l.msg === 'stream').length, 1, JSON.stringify(proxy.logs.filter((l) => l.msg === 'stream')));
  // Closed here, not on stop, which would give them shutdownTimeout.
  reader.stop();
  slow.destroy();
  quiet.destroy();
});
