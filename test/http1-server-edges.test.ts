/**
 * Edge cases of Portico's own HTTP/1.1 server (src/http1/), as an adversarial review: back-pressure
 * both ways with 32 MiB bodies and the in-process memory watched, pipelined requests with bodies
 * (and one answered before its body was read), the bytes that follow an upgrade head in the same
 * write, half-closing clients, graceful shutdown with a busy and an idle keep-alive connection, the
 * Keep-Alive hint, 200 concurrent connections, broken chunk framing (alone, and pipelined behind a
 * valid request), bodiless responses pipelined before a GET, and an HTTP/1.0 POST answered with a
 * length-less body. Real sockets on 127.0.0.1 only; exact bytes out, exact bytes parsed back.
 */
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import tls from 'node:tls';
import zlib from 'node:zlib';
import { randomBytes } from 'node:crypto';
import v8 from 'node:v8';
import vm from 'node:vm';
import type { EventEmitter } from 'node:events';
import { setTimeout as delay } from 'node:timers/promises';
import { makePki, startProxy, type TestPki, type TestProxy } from './helpers/proxy.js';
import { startRawUpstream, startUpstream, type SeenRequest } from './helpers/net.js';
import { RawClient, rawUpgradeRequest } from './helpers/raw-http1.js';
import type { ConfigInput } from '../src/config/schema.js';

const HOST = 'edge.test';
const REDIRECTED = 'tls-only.edge.test';
const MiB = 1024 * 1024;
/** The size of the bodies that must stream through with flat memory. */
const BIG = 32 * MiB;
const CHUNK = 256 * 1024;
/** Distinct random chunks (a prime count); chunk i of a stream is POOL[i % 13]. Allocated before any baseline. */
const POOL = Array.from({ length: 13 }, () => randomBytes(CHUNK));
/** POOL's chunks framed as request body chunks (size line, data, CRLF), made up front: a client that allocated a buffer per write would show up in the memory figures itself. */
const FRAMES = POOL.map((c) => Buffer.concat([Buffer.from(`${c.length.toString(16)}\r\n`), c, Buffer.from('\r\n')]));
/** Growth of Portico's (this process's) memory allowed while 32 MiB wait behind a stalled peer. */
const MAX_GROWTH = 16 * MiB;
const FIXED_BODY = 'fixed-body-0123456789';
const SLOW_BODY = 'slow-but-complete:'.padEnd(64 * 1024, '.');
const HALF_BODY = 'half-close-response:'.padEnd(100 * 1024, '#');

type Upstream = Awaited<ReturnType<typeof startUpstream>>;
type RawUpstream = Awaited<ReturnType<typeof startRawUpstream>>;

interface Tally {
  bytes: number;
  crc: number;
}

let pki: TestPki;
/** plainHttp "serve", keepAliveTimeout 60s (default), shutdownTimeout 2s. */
let proxy: TestProxy;
/** keepAliveTimeout 7s. */
let ka7: TestProxy;
/** keepAliveTimeout 0s (off). */
let ka0: TestProxy;
let echo: Upstream;
let raw: RawUpstream;
let upg: Awaited<ReturnType<typeof startUpgradeUpstream>>;
let h2up: Awaited<ReturnType<typeof startH2Upstream>>;
const clients = new Set<RawClient>();
const stopped = new Set<TestProxy>();

/** What the /big download has written so far (upstream side). */
const big = { written: 0, crc: 0, done: false };
/** What the /slow-up upload looked like (upstream side). */
const slowUp = { resumedAt: 0, got: { bytes: 0, crc: 0 } as Tally, done: false };

/** Writes `total` bytes from POOL to `w` with back-pressure, counting into `into`. Stops if `w` closes. */
async function writeStream(w: http.ServerResponse, total: number, into: { written: number; crc: number }): Promise<void> {
  for (let i = 0; into.written < total; i++) {
    if (w.destroyed) return;
    const size = Math.min(CHUNK, total - into.written);
    const c = size === CHUNK ? (POOL[i % POOL.length] as Buffer) : (POOL[i % POOL.length] as Buffer).subarray(0, size);
    into.crc = zlib.crc32(c, into.crc);
    into.written += c.length;
    if (!w.write(c)) await drainOrClose(w);
  }
  w.end();
}

/** Resolves on 'drain' or 'close', whichever comes first, and leaves no listener behind. */
function drainOrClose(e: EventEmitter): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      e.off('drain', done);
      e.off('close', done);
      resolve();
    };
    e.on('drain', done);
    e.on('close', done);
  });
}

/**
 * The echo upstream. /big: BIG bytes by Content-Length, with back-pressure. /slow-up: waits 1 s
 * before reading the body, then answers its byte count and CRC. /slow: the body read, SLOW_BODY
 * after 500 ms. /half: HALF_BODY after 150 ms. /fixed: FIXED_BODY. /chunked-echo: the body read,
 * then "got:<body>" in three writes without Content-Length (chunked). Anything else:
 * `<method> <url> <body length>` by Content-Length. Every body read is kept in `seen.body`.
 */
function answer(req: http.IncomingMessage, res: http.ServerResponse, seen: SeenRequest): void {
  const path = (req.url ?? '').split('?')[0] ?? '';
  if (path === '/big') {
    req.resume();
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': BIG });
    void writeStream(res, BIG, big).then(() => {
      big.done = true;
    });
    return;
  }
  if (path === '/slow-up') {
    req.pause();
    setTimeout(() => {
      slowUp.resumedAt = performance.now();
      req.on('data', (c: Buffer) => {
        slowUp.got.bytes += c.length;
        slowUp.got.crc = zlib.crc32(c, slowUp.got.crc);
      });
      req.on('end', () => {
        slowUp.done = true;
        const body = JSON.stringify(slowUp.got);
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      });
      req.resume();
    }, 1000);
    return;
  }
  if (path === '/early') {
    // Answers before reading the body (an upstream that rejects an upload early), then drains it.
    req.on('data', (c: Buffer) => {
      seen.body = Buffer.concat([seen.body, c]);
    });
    const body = 'early answer';
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
    res.end(body);
    return;
  }
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    seen.body = Buffer.concat(chunks);
    const send = (body: string, status = 200): void => {
      if (res.destroyed) return;
      res.writeHead(status, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    };
    if (path === '/slow') return void setTimeout(() => send(SLOW_BODY), 500);
    if (path === '/half') return void setTimeout(() => send(HALF_BODY), 150);
    if (path === '/fixed') return send(FIXED_BODY);
    if (path === '/chunked-echo') {
      const text = `got:${seen.body.toString('latin1')}`;
      const third = Math.ceil(text.length / 3);
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write(text.slice(0, third));
      setTimeout(() => {
        res.write(text.slice(third, 2 * third));
        setTimeout(() => res.end(text.slice(2 * third)), 10);
      }, 10);
      return;
    }
    send(`${req.method ?? ''} ${req.url ?? ''} ${seen.body.length}`);
  });
}

/** A raw upstream that answers any head with 101 and then echoes every byte after the head; records what it got after each head. */
async function startUpgradeUpstream(): Promise<{ url: string; heads: string[]; after: Buffer[][]; connections: () => number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const heads: string[] = [];
  const afterHead: Buffer[][] = [];
  let connections = 0;
  const server = net.createServer((socket) => {
    connections++;
    sockets.add(socket);
    socket.on('error', () => {});
    socket.once('close', () => sockets.delete(socket));
    let buf: Buffer = Buffer.alloc(0);
    let got: Buffer[] | undefined;
    socket.on('data', (c: Buffer) => {
      if (got !== undefined) {
        got.push(c);
        socket.write(c);
        return;
      }
      buf = Buffer.concat([buf, c]);
      const end = buf.indexOf('\r\n\r\n');
      if (end === -1) return;
      heads.push(buf.toString('latin1', 0, end));
      got = [];
      afterHead.push(got);
      socket.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n');
      const rest = buf.subarray(end + 4);
      if (rest.length > 0) {
        got.push(Buffer.from(rest));
        socket.write(rest);
      }
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    heads,
    after: afterHead,
    connections: () => connections,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/** Header a value an h2 upstream sends that is perfectly valid in HTTP/1.1 too. */
const H2_VALUE = 'a value; with=params, "quoted", commas, and  spaces\ttab';
const H2_COOKIES = ['a=1; Path=/', 'b=2; HttpOnly'];

/** An h2c upstream: 200 with H2_VALUE, two Set-Cookie fields and a body echoing the path. */
async function startH2Upstream(): Promise<{ url: string; close(): Promise<void> }> {
  const server = http2.createServer();
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on('session', (s: http2.ServerHttp2Session) => {
    sessions.add(s);
    s.once('close', () => sessions.delete(s));
  });
  server.on('stream', (stream, headers) => {
    stream.resume();
    stream.on('end', () => {
      const body = `h2 path=${headers[':path'] ?? ''}`;
      stream.respond({ ':status': 200, 'content-type': 'text/plain', 'x-h2-value': H2_VALUE, 'set-cookie': H2_COOKIES, 'content-length': Buffer.byteLength(body) });
      stream.end(body);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `h2c://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sessions) s.destroy();
        server.close(() => r());
      }),
  };
}

/** The raw upstream's answers for /raw/…: exact bytes for bodiless responses. */
function rawAnswer(path: string, socket: net.Socket): void {
  if (path === '/raw/204') socket.write('HTTP/1.1 204 No Content\r\nX-Which: 204\r\n\r\n');
  else if (path === '/raw/304') socket.write('HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 21\r\nX-Which: 304\r\n\r\n');
  else if (path === '/raw/head-chunked') socket.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Which: head\r\n\r\n');
  else socket.write('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n');
}

function hostsConfig(cert: { cert: string; key: string }): ConfigInput['hosts'] {
  return {
    // Not served over plain HTTP: its plain requests and upgrades get a 308 to https.
    [REDIRECTED]: { tls: cert, routes: [{ path: '/', upstream: upg.url }] },
    [HOST]: {
      tls: cert,
      plainHttp: 'serve',
      routes: [
        { path: '/', upstream: echo.url },
        { path: '/raw', upstream: raw.url },
        { path: '/ws', upstream: upg.url },
        { path: '/h2', upstream: h2up.url },
      ],
    },
  };
}

before(async () => {
  pki = await makePki();
  echo = await startUpstream(answer);
  raw = await startRawUpstream(rawAnswer);
  upg = await startUpgradeUpstream();
  h2up = await startH2Upstream();
  const cert = await pki.issue('edge', [HOST, REDIRECTED]);
  proxy = await startProxy(pki, { hosts: hostsConfig(cert), limits: { shutdownTimeout: '2s' }, log: { access: false, level: 'warn' } });
  ka7 = await startProxy(pki, { hosts: hostsConfig(cert), limits: { keepAliveTimeout: '7s', shutdownTimeout: '1s' } });
  ka0 = await startProxy(pki, { hosts: hostsConfig(cert), limits: { keepAliveTimeout: '0s', shutdownTimeout: '1s' } });
});

after(async () => {
  for (const c of clients) c.destroy();
  for (const p of [proxy, ka7, ka0]) if (p !== undefined && !stopped.has(p)) await p.stop();
  await echo?.close();
  await raw?.close();
  await upg?.close();
  await h2up?.close();
  await pki?.cleanup();
});

/** A raw client on `port` (TLS for HOST unless `secure` is false), destroyed at the end of the test and in `after`. */
async function openRaw(t: TestContext | undefined, port: number, secure = true): Promise<RawClient> {
  const c = await RawClient.open(t, secure ? { port, tls: { servername: HOST, ca: pki.caPem } } : { port });
  clients.add(c);
  return c;
}

function get(path: string, extra = ''): string {
  return `GET ${path} HTTP/1.1\r\nHost: ${HOST}\r\n${extra}\r\n`;
}

async function waitFor(pred: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (!pred()) {
    if (performance.now() > deadline) return false;
    await delay(10);
  }
  return true;
}

function seenFor(url: string): SeenRequest | undefined {
  return echo.seen.find((s) => s.url === url);
}

/**
 * A full garbage collection, so that what the memory figures show is what is held, not garbage
 * waiting to be collected (bodies stream through as short-lived buffers). `--expose-gc` is not on
 * the test command line, so it is turned on here for this process.
 */
const gc: () => void =
  typeof (globalThis as { gc?: unknown }).gc === 'function'
    ? ((globalThis as { gc?: unknown }).gc as () => void)
    : (() => {
        v8.setFlagsFromString('--expose-gc');
        return vm.runInNewContext('gc') as () => void;
      })();

interface Growth {
  /** Peak RSS over the baseline while sampling. */
  rssPeak: number;
  /** Held after a full GC at the end, over the baseline (also after a full GC). */
  arrayBuffers: number;
  external: number;
  heapUsed: number;
}

/** Takes a baseline after a full GC, samples RSS every 25 ms; `stop()` collects again and gives the growth. */
function sampleMemory(): { stop(): Growth } {
  gc();
  const base = process.memoryUsage();
  let rssPeak = base.rss;
  const timer = setInterval(() => {
    rssPeak = Math.max(rssPeak, process.memoryUsage.rss());
  }, 25);
  return {
    stop() {
      clearInterval(timer);
      rssPeak = Math.max(rssPeak, process.memoryUsage.rss());
      gc();
      const m = process.memoryUsage();
      return { rssPeak: rssPeak - base.rss, arrayBuffers: m.arrayBuffers - base.arrayBuffers, external: m.external - base.external, heapUsed: m.heapUsed - base.heapUsed };
    },
  };
}

function assertFlat(g: Growth, what: string): void {
  assert.ok(g.rssPeak < MAX_GROWTH, `rss grew ${mib(g.rssPeak)} ${what}`);
  assert.ok(g.arrayBuffers < MAX_GROWTH, `${mib(g.arrayBuffers)} more held in ArrayBuffers ${what}`);
  assert.ok(g.external < MAX_GROWTH, `${mib(g.external)} more held in external memory ${what}`);
  assert.ok(g.heapUsed < MAX_GROWTH, `${mib(g.heapUsed)} more held on the JS heap ${what}`);
}

function describeGrowth(g: Growth): string {
  return `rss peak +${mib(g.rssPeak)}, held after GC: arrayBuffers +${mib(g.arrayBuffers)}, external +${mib(g.external)}, heap +${mib(g.heapUsed)}`;
}

const mib = (n: number): string => `${(n / MiB).toFixed(1)} MiB`;

test('a 32 MiB response to a TLS client that reads nothing for 1.5 s arrives whole, and memory stays flat while it waits', async (t) => {
  // Warm up: TLS, the upstream pool and the parsers are allocated before the baseline.
  const warm = await openRaw(t, proxy.httpsPort);
  await warm.write(get('/warm'));
  assert.equal((await warm.response()).status, 200);
  warm.destroy();

  const socket = tls.connect({ host: '127.0.0.1', port: proxy.httpsPort, servername: HOST, ca: pki.caPem, ALPNProtocols: ['http/1.1'] });
  socket.on('error', () => {});
  t.after(() => socket.destroy());
  await once(socket, 'secureConnect');
  socket.pause();
  const mem = sampleMemory();
  socket.write(get('/big'));
  await delay(1500);
  const growth = mem.stop();
  const writtenWhileStalled = big.written;
  assert.equal(big.done, false, `the upstream wrote all ${mib(BIG)} while the client read nothing: nothing held it back`);
  assert.ok(writtenWhileStalled < BIG, `upstream wrote ${mib(writtenWhileStalled)} while the client read nothing`);
  t.diagnostic(`stalled 1.5 s: upstream wrote ${mib(writtenWhileStalled)}; ${describeGrowth(growth)}`);
  assertFlat(growth, 'while the client read nothing');

  // Now read everything: head, then BIG body bytes, tallied as they come.
  const got = await new Promise<{ head: string; tally: Tally }>((resolve, reject) => {
    let head: string | undefined;
    let headBuf: Buffer = Buffer.alloc(0);
    const tally: Tally = { bytes: 0, crc: 0 };
    const timer = setTimeout(() => reject(new Error(`timed out with ${mib(tally.bytes)} of the body`)), 8000);
    const body = (c: Buffer): void => {
      tally.bytes += c.length;
      tally.crc = zlib.crc32(c, tally.crc);
      if (tally.bytes >= BIG) {
        clearTimeout(timer);
        resolve({ head: head ?? '', tally });
      }
    };
    socket.on('data', (c: Buffer) => {
      if (head !== undefined) return body(c);
      headBuf = Buffer.concat([headBuf, c]);
      const end = headBuf.indexOf('\r\n\r\n');
      if (end === -1) return;
      head = headBuf.toString('latin1', 0, end);
      const rest = headBuf.subarray(end + 4);
      if (rest.length > 0) body(rest);
    });
    socket.once('close', () => reject(new Error(`closed with ${mib(tally.bytes)} of the body`)));
    socket.resume();
  });
  assert.match(got.head, /^HTTP\/1\.1 200 /);
  assert.match(got.head, new RegExp(`\\r\\ncontent-length: ${BIG}\\r\\n`, 'i'));
  assert.equal(got.tally.bytes, BIG, 'the body arrived whole (no more, no less)');
  assert.ok(big.done, 'the upstream finished writing');
  assert.equal(got.tally.crc, big.crc, 'the body arrived intact (CRC-32 of what the upstream wrote)');
});

test('a 32 MiB chunked request body to an upstream that reads nothing for 1 s arrives whole, and memory stays flat meanwhile', async (t) => {
  const c = await openRaw(t, proxy.httpsPort);
  const socket = c.socket;
  const sent: Tally = { bytes: 0, crc: 0 };
  const mem = sampleMemory();
  // The upstream waits 1 s from the head before it reads: the figures are taken well before that (the body stalls within ~100 ms).
  let stall: { growth: Growth; sent: number; upstreamResumed: boolean } | undefined;
  const timer = setTimeout(() => {
    stall = { growth: mem.stop(), sent: sent.bytes, upstreamResumed: slowUp.resumedAt !== 0 };
  }, 700);
  t.after(() => clearTimeout(timer));
  socket.write(`POST /slow-up HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: chunked\r\nContent-Type: application/octet-stream\r\n\r\n`);
  for (let i = 0; sent.bytes < BIG; i++) {
    const chunk = POOL[i % POOL.length] as Buffer;
    sent.crc = zlib.crc32(chunk, sent.crc);
    sent.bytes += chunk.length;
    // One chunk per write, many writes in all.
    const ok = socket.write(FRAMES[i % FRAMES.length] as Buffer);
    if (!ok) await drainOrClose(socket);
    assert.equal(c.closed, false, 'the connection stays open while the body is sent');
  }
  socket.write('0\r\n\r\n');
  const r = await c.response({ timeoutMs: 8000 });
  assert.equal(r.status, 200);
  const upTally = JSON.parse(r.text) as Tally;
  assert.ok(stall !== undefined, 'the whole body went through before the upstream started reading');
  t.diagnostic(`client sent ${mib(stall.sent)} before the upstream read; ${describeGrowth(stall.growth)}`);
  assert.equal(stall.upstreamResumed, false);
  assert.ok(stall.sent < BIG, `the client could send all ${mib(BIG)} before the upstream read a byte: nothing held it back`);
  assertFlat(stall.growth, 'while the upstream read nothing');
  assert.equal(upTally.bytes, BIG, 'the upstream got every byte');
  assert.equal(upTally.crc, sent.crc, 'the upstream got the bytes intact (CRC-32)');
});

test('two POSTs with Content-Length bodies and a GET in one write: three responses in order, each upstream request with its exact body', async (t) => {
  const c = await openRaw(t, proxy.httpsPort);
  // The second body is larger than a stream's buffer, so it is parsed while the first is answered and must wait its turn.
  const body1 = `first:${randomBytes(15_000).toString('base64')}`;
  const body2 = `second:${randomBytes(30_000).toString('hex')}`;
  const post = (path: string, body: string): string => `POST ${path} HTTP/1.1\r\nHost: ${HOST}\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
  await c.write(post('/pp/one', body1) + post('/pp/two', body2) + get('/pp/three'));
  const expected = [`POST /pp/one ${body1.length}`, `POST /pp/two ${body2.length}`, 'GET /pp/three 0'];
  for (const want of expected) {
    const r = await c.response();
    assert.equal(r.status, 200, want);
    assert.equal(r.text, want, 'responses come back in request order');
  }
  assert.equal(seenFor('/pp/one')?.body.toString('latin1'), body1, 'the first POST got exactly its body');
  assert.equal(seenFor('/pp/two')?.body.toString('latin1'), body2, 'the second POST got exactly its body');
  assert.equal(seenFor('/pp/three')?.body.length, 0, 'the GET got no body');
  await delay(50);
  assert.equal(c.pending.length, 0, 'nothing but the three responses');
  assert.equal(c.closed, false);
});

test('a POST answered before its body is read, with a GET pipelined behind the rest of that body: the GET gets its own answer', async (t) => {
  const c = await openRaw(t, proxy.httpsPort);
  const body = 'e'.repeat(50_000);
  await c.write(`POST /early HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, 1000)}`);
  const r1 = await c.response();
  assert.equal(r1.status, 200);
  assert.equal(r1.text, 'early answer');
  await c.write(body.slice(1000) + get('/after-early'));
  const r2 = await c.response();
  assert.equal(r2.status, 200);
  assert.equal(r2.text, 'GET /after-early 0', 'the rest of the first body was skipped, not read as a request');
  await c.write(get('/after-early-2'));
  assert.equal((await c.response()).text, 'GET /after-early-2 0');
});

const UPGRADE_HEAD = (path: string): string => rawUpgradeRequest(HOST, path);

test('an upgrade whose first bytes after the head come in the same TLS write: the upstream gets them raw and they are echoed back', async (t) => {
  const c = await openRaw(t, proxy.httpsPort);
  const early = 'EARLY-BYTES-after-the-head\x00\x01\x02';
  const before = upg.after.length;
  await c.write(UPGRADE_HEAD('/ws/echo') + early);
  const ok = await c.until(() => {
    const p = c.pending;
    const end = p.indexOf('\r\n\r\n');
    return end !== -1 && p.length >= end + 4 + early.length;
  }, 3000);
  const p = c.pending.toString('latin1');
  assert.ok(ok, `no 101 and echo; got ${JSON.stringify(p.slice(0, 300))}`);
  assert.match(p, /^HTTP\/1\.1 101 /);
  const end = p.indexOf('\r\n\r\n');
  assert.equal(p.slice(end + 4), early, 'the early bytes came back, exactly once and unframed');
  c.consume(Buffer.byteLength(p, 'latin1'));
  await c.write('second-message');
  assert.ok(await c.until(() => c.pending.length >= 'second-message'.length, 2000));
  assert.equal(c.pending.toString('latin1'), 'second-message');
  assert.equal(upg.after.length, before + 1);
  assert.equal(Buffer.concat(upg.after[before] ?? []).toString('latin1'), early + 'second-message', 'the upstream got the early bytes raw (no chunk framing), then the next ones');
});

test('an upgrade followed in the same TLS write by 200 KiB: every byte reaches the upstream once, in order, and comes back', async (t) => {
  const c = await openRaw(t, proxy.httpsPort);
  const early = randomBytes(200 * 1024);
  const before = upg.after.length;
  await c.write(Buffer.concat([Buffer.from(UPGRADE_HEAD('/ws/big-early'), 'latin1'), early]));
  let headLen = -1;
  const ok = await c.until(() => {
    const p = c.pending;
    const end = p.indexOf('\r\n\r\n');
    if (end !== -1) headLen = end + 4;
    return end !== -1 && p.length >= end + 4 + early.length;
  }, 3000);
  assert.ok(ok, `echo incomplete: ${c.pending.length - headLen} of ${early.length} bytes back`);
  assert.match(c.pending.toString('latin1', 0, 20), /^HTTP\/1\.1 101 /);
  const back = c.pending.subarray(headLen);
  assert.equal(back.length, early.length, 'no byte lost or repeated on the way back');
  assert.ok(back.equals(early), 'the bytes came back in order');
  const upGot = Buffer.concat(upg.after[before] ?? []);
  assert.equal(upGot.length, early.length);
  assert.ok(upGot.equals(early), 'the upstream got exactly the bytes after the head');
});

test('an upgrade over the plain HTTP listener for a plainHttp "serve" host is proxied (X-Forwarded-Proto: http, early bytes raw); another host\'s gets a 308 to https and reaches no upstream', async (t) => {
  const c = await openRaw(t, proxy.httpPort, false);
  const before = upg.after.length;
  await c.write(`${UPGRADE_HEAD('/ws/plain')}EARLY-PLAIN`);
  const ok = await c.until(() => {
    const p = c.pending;
    const end = p.indexOf('\r\n\r\n');
    return end !== -1 && p.length >= end + 4 + 'EARLY-PLAIN'.length;
  }, 3000);
  const p = c.pending.toString('latin1');
  assert.ok(ok, `no 101 and echo; got ${JSON.stringify(p.slice(0, 300))}`);
  assert.match(p, /^HTTP\/1\.1 101 /);
  assert.equal(p.slice(p.indexOf('\r\n\r\n') + 4), 'EARLY-PLAIN', 'the early bytes came back through the tunnel');
  assert.equal(Buffer.concat(upg.after[before] ?? []).toString('latin1'), 'EARLY-PLAIN');
  const head = (upg.heads[before] ?? '').toLowerCase();
  assert.match(head, /^get \/ws\/plain http\/1\.1\r\n/);
  assert.match(head, /\r\nx-forwarded-proto: http\r\n/, 'the upstream learns the client spoke plain HTTP');
  assert.match(head, /\r\nupgrade: websocket(\r\n|$)/);

  const r = await openRaw(t, proxy.httpPort, false);
  const connections = upg.connections();
  await r.write(rawUpgradeRequest(REDIRECTED, '/ws/x?y=1'));
  const res = await r.response();
  assert.equal(res.status, 308);
  assert.equal(res.headers.location, `https://${REDIRECTED}:${proxy.httpsPort}/ws/x?y=1`);
  assert.equal(await r.closesWithin(1000), true, 'the connection closes after the 308');
  assert.equal(upg.connections(), connections, 'the upgrade upstream was never contacted');
});

test('a client that half-closes after a whole request (TLS, and plain TCP) still gets the whole response, then the connection closes', async (t) => {
  for (const secure of [true, false]) {
    const what = secure ? 'TLS' : 'plain';
    const c = await openRaw(t, secure ? proxy.httpsPort : proxy.httpPort, secure);
    await c.write(get('/half'));
    c.socket.end();
    const r = await c.response({ timeoutMs: 3000 });
    assert.equal(r.status, 200, what);
    assert.equal(r.text, HALF_BODY, `${what}: the whole response arrived after the client FIN`);
    assert.equal(await c.closesWithin(1000), true, `${what}: the server closed the connection after the response`);
    assert.equal(c.pending.length, 0, what);
  }
});

test('a TLS client that half-closes after two pipelined requests gets both responses, then the connection closes', async (t) => {
  const c = await openRaw(t, proxy.httpsPort);
  await c.write(get('/half') + get('/half-second'));
  c.socket.end();
  const r1 = await c.response({ timeoutMs: 3000 });
  assert.equal(r1.status, 200);
  assert.equal(r1.text, HALF_BODY);
  t.diagnostic(`first response: connection: ${r1.headers.connection ?? '(none)'}; then ${JSON.stringify(c.pending.toString('latin1').slice(0, 80))}, closed ${String(c.closed)}`);
  const r2 = await c.response({ timeoutMs: 3000 });
  assert.equal(r2.status, 200);
  assert.equal(r2.text, 'GET /half-second 0');
  assert.equal(await c.closesWithin(1000), true);
});

test('a TLS client that half-closes in the middle of a request body: the upstream request is aborted, never completed', async (t) => {
  const c = await openRaw(t, proxy.httpsPort);
  await c.write(`POST /half-body HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: 100000\r\n\r\n${'p'.repeat(1000)}`);
  assert.ok(await waitFor(() => seenFor('/half-body') !== undefined, 2000), 'the upstream saw the request start');
  c.socket.end();
  const seen = seenFor('/half-body') as SeenRequest;
  assert.ok(await waitFor(() => seen.aborted, 2000), 'the upstream request was aborted');
  assert.equal(seen.body.length, 0, 'the upstream never saw the body end');
  assert.equal(await c.closesWithin(1000), true, 'the client connection is closed');
  assert.doesNotMatch(c.pending.toString('latin1'), /^HTTP\/1\.1 200/, 'no success answer for a cut-short request');
});

test('stop() with one request in flight and one idle keep-alive connection: the idle one closes at once, the busy one gets its whole response with connection: close', async (t) => {
  const cert = { cert: 'edge.pem', key: 'edge-key.pem' };
  const p = await startProxy(pki, { hosts: hostsConfig(cert), limits: { shutdownTimeout: '5s' } });
  t.after(async () => {
    if (!stopped.has(p)) await p.stop();
  });
  const idle = await openRaw(t, p.httpsPort);
  await idle.write(get('/sd/idle'));
  const ri = await idle.response();
  assert.equal(ri.headers.connection?.toLowerCase(), 'keep-alive');
  const busy = await openRaw(t, p.httpsPort);
  await busy.write(get('/slow?sd'));
  assert.ok(await waitFor(() => seenFor('/slow?sd') !== undefined, 2000));
  const started = performance.now();
  const stopping = p.stop();
  stopped.add(p);
  assert.equal(await idle.closesWithin(500), true, 'the idle keep-alive connection was closed promptly');
  assert.equal(busy.closed, false, 'the busy connection stays open for its response');
  const r = await busy.response({ timeoutMs: 3000 });
  assert.equal(r.status, 200);
  assert.equal(r.text, SLOW_BODY, 'the in-flight response arrived whole');
  assert.equal(r.headers.connection?.toLowerCase(), 'close', 'and says the connection closes');
  assert.equal(await busy.closesWithin(1000), true, 'then the connection closes');
  await stopping;
  const ms = performance.now() - started;
  assert.ok(ms < 3000, `stop() took ${Math.round(ms)} ms`);
});

test('an HTTP/2 upstream response header with an unusual but valid value, and two Set-Cookie fields, reach an HTTP/1.1 client intact', async (t) => {
  const c = await openRaw(t, proxy.httpsPort);
  await c.write(get('/h2/x?y=1'));
  const r = await c.response();
  assert.equal(r.status, 200);
  assert.equal(r.text, 'h2 path=/h2/x?y=1');
  const value = r.lines.find(([n]) => n === 'x-h2-value')?.[1];
  assert.equal(value, H2_VALUE.trim());
  assert.deepEqual(
    r.lines.filter(([n]) => n === 'set-cookie').map(([, v]) => v),
    H2_COOKIES,
    'each Set-Cookie on its own line',
  );
  await c.write(get('/after-h2'));
  assert.equal((await c.response()).text, 'GET /after-h2 0');
});

test('100 request headers of 100 bytes each, in one write and split over many writes, all reach the upstream in order', async (t) => {
  const names = Array.from({ length: 100 }, (_, i) => `X-Edge-${String(i).padStart(3, '0')}`);
  const values = names.map((n, i) => `${String(i).padStart(3, '0')}:`.padEnd(100 - n.length - 4, String.fromCharCode(97 + (i % 26))));
  const lines = names.map((n, i) => `${n}: ${values[i] ?? ''}\r\n`);
  assert.ok(lines.every((l) => l.length === 100));
  for (const [label, split] of [
    ['one write', 0],
    ['997-byte writes', 997],
  ] as const) {
    const url = `/many-headers?how=${split}`;
    const text = `GET ${url} HTTP/1.1\r\nHost: ${HOST}\r\n${lines.join('')}\r\n`;
    const c = await openRaw(t, proxy.httpsPort);
    if (split === 0) await c.write(text);
    else
      for (let i = 0; i < text.length; i += split) {
        await c.write(text.slice(i, i + split));
        await delay(2);
      }
    const r = await c.response();
    assert.equal(r.status, 200, label);
    assert.equal(r.text, `GET ${url} 0`, `${label}: the URL arrived whole`);
    const seen = seenFor(url);
    assert.ok(seen !== undefined, label);
    const got: [string, string][] = [];
    for (let i = 0; i < seen.rawHeaders.length; i += 2) {
      const n = seen.rawHeaders[i] ?? '';
      if (/^x-edge-/i.test(n)) got.push([n.toLowerCase(), seen.rawHeaders[i + 1] ?? '']);
    }
    assert.deepEqual(
      got,
      names.map((n, i) => [n.toLowerCase(), values[i] ?? '']),
      `${label}: all 100 headers, exact and in order`,
    );
  }
});

// The keep-alive test mostly waits on an idle connection, the other keeps the CPU busy: they run side by side.
describe('separate proxies, side by side', { concurrency: true }, () => {
  test('keepAliveTimeout "7s" sends keep-alive: timeout=7; "0s" sends no Keep-Alive and leaves an idle connection open past 2 s', async (t) => {
    const a = await openRaw(t, ka7.httpsPort);
    await a.write(get('/ka/seven'));
    const ra = await a.response();
    assert.equal(ra.status, 200);
    assert.equal(ra.headers.connection?.toLowerCase(), 'keep-alive');
    assert.equal(ra.headers['keep-alive'], 'timeout=7');

    const b = await openRaw(t, ka0.httpsPort);
    await b.write(get('/ka/zero'));
    const rb = await b.response();
    assert.equal(rb.status, 200);
    assert.equal(rb.headers['keep-alive'], undefined, 'no Keep-Alive hint when the timeout is off');
    assert.notEqual(rb.headers.connection?.toLowerCase(), 'close');
    assert.equal(await b.closesWithin(2200), false, 'the idle connection stays open with keepAliveTimeout off');
    await b.write(get('/ka/zero-again'));
    assert.equal((await b.response()).text, 'GET /ka/zero-again 0');
  });

  test('200 concurrent TLS connections doing 5 keep-alive requests each: all 1000 answers right, and the proxy still serves afterwards', async (t) => {
    const N = 200;
    const PER = 5;
    const conns: RawClient[] = [];
    t.after(() => {
      for (const c of conns) c.destroy();
    });
    const t0 = performance.now();
    // All 200 are open at once before the first request goes out.
    const opened = await Promise.allSettled(Array.from({ length: N }, () => openRaw(undefined, proxy.httpsPort)));
    for (const o of opened) if (o.status === 'fulfilled') conns.push(o.value);
    assert.equal(conns.length, N, `${N - conns.length} connections failed to open`);
    const t1 = performance.now();
    const failures: string[] = [];
    let ok = 0;
    await Promise.all(
      conns.map(async (c, i) => {
        try {
          for (let j = 0; j < PER; j++) {
            const path = `/many/${i}/${j}`;
            await c.write(get(path));
            // 20 s: with 16 test files at once on 2 cores, some of the 1,000 answers took over 8 s.
            const r = await c.response({ timeoutMs: 20_000 });
            if (r.status === 200 && r.text === `GET ${path} 0` && r.headers.connection?.toLowerCase() === 'keep-alive') ok++;
            else failures.push(`${path}: ${r.status} ${r.headers.connection ?? ''} ${r.text.slice(0, 80)}`);
          }
          if (c.closed) failures.push(`connection ${i} closed after its requests`);
        } catch (err) {
          failures.push(`connection ${i}: ${(err as Error).message.slice(0, 200)}`);
        }
      }),
    );
    t.diagnostic(`open ${Math.round(t1 - t0)} ms, ${N * PER} requests ${Math.round(performance.now() - t1)} ms`);
    assert.deepEqual(failures.slice(0, 5), [], `${failures.length} failures`);
    assert.equal(ok, N * PER);
    for (const c of conns) c.destroy();
    await delay(100);
    const after = await openRaw(t, proxy.httpsPort);
    await after.write(get('/after-many'));
    assert.equal((await after.response()).text, 'GET /after-many 0');
  });
});

test('a chunked body whose framing breaks mid-body: 400 or a close, the upstream request is aborted, and other connections are still served', async (t) => {
  const c = await openRaw(t, proxy.httpsPort);
  await c.write(`POST /badchunk HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n`);
  assert.ok(await waitFor(() => seenFor('/badchunk') !== undefined, 2000), 'the upstream saw the request start');
  await c.write('zz\r\nworld\r\n0\r\n\r\n');
  assert.equal(await c.closesWithin(1500), true, 'the connection is closed');
  const text = c.pending.toString('latin1');
  t.diagnostic(`after the bad chunk: ${JSON.stringify(text.slice(0, 120))}`);
  if (text !== '') assert.match(text, /^HTTP\/1\.1 400 /, `what came back: ${JSON.stringify(text.slice(0, 200))}`);
  const seen = seenFor('/badchunk') as SeenRequest;
  assert.ok(await waitFor(() => seen.aborted, 2000), 'the upstream request was aborted');
  assert.equal(seen.body.length, 0, 'the upstream request never completed');
  const d = await openRaw(t, proxy.httpsPort);
  await d.write(get('/after-badchunk'));
  assert.equal((await d.response()).text, 'GET /after-badchunk 0');
});

test('a bad request pipelined behind a valid one: the valid one gets its own response first, not the 400', async (t) => {
  const c = await openRaw(t, proxy.httpsPort);
  await c.write(get('/slow?then-bad') + `POST /badchunk-pipelined HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n`);
  const r1 = await c.response({ timeoutMs: 3000 });
  await delay(300);
  const upGet = seenFor('/slow?then-bad');
  t.diagnostic(`first response: ${r1.statusLine}; the GET reached the upstream: ${upGet !== undefined}`);
  assert.equal(r1.status, 200, 'the 400 belongs to the second request; in first place it reads as the answer to the valid GET');
  assert.equal(r1.text, SLOW_BODY);
  assert.equal(await c.closesWithin(1500), true, 'then the connection closes');
  const rest = c.pending.toString('latin1');
  if (rest !== '') assert.match(rest, /^HTTP\/1\.1 400 /);
  assert.equal(seenFor('/slow?then-bad')?.aborted, false, 'the valid request was not cut off upstream');
  assert.equal(echo.seen.some((s) => s.url === '/badchunk-pipelined' && !s.aborted), false, 'the bad request never completed upstream');
});

test('204, 304 (with a Content-Length) and HEAD responses pipelined before a GET carry no body bytes, and the GET is answered right', async (t) => {
  const c = await openRaw(t, proxy.httpsPort);
  await c.write(get('/raw/204') + get('/raw/304') + `HEAD /raw/head-chunked HTTP/1.1\r\nHost: ${HOST}\r\n\r\n` + `HEAD /fixed HTTP/1.1\r\nHost: ${HOST}\r\n\r\n` + get('/fixed'));
  const r204 = await c.response();
  assert.equal(r204.status, 204);
  assert.equal(r204.headers['x-which'], '204');
  assert.equal(r204.headers['transfer-encoding'], undefined, 'no transfer-encoding on a 204');
  const r304 = await c.response();
  assert.equal(r304.status, 304);
  assert.equal(r304.headers['x-which'], '304');
  assert.equal(r304.headers.etag, '"v1"');
  assert.equal(r304.headers['transfer-encoding'], undefined, 'no transfer-encoding on a 304');
  const rh1 = await c.response({ head: true });
  assert.equal(rh1.status, 200);
  assert.equal(rh1.headers['x-which'], 'head');
  const rh2 = await c.response({ head: true });
  assert.equal(rh2.status, 200);
  assert.equal(rh2.headers['content-length'], String(FIXED_BODY.length));
  // If any of the four had carried body bytes, this would not parse as the GET's response.
  const g = await c.response();
  assert.match(g.statusLine, /^HTTP\/1\.1 200 /);
  assert.equal(g.text, FIXED_BODY);
  await delay(50);
  assert.equal(c.pending.length, 0, `stray bytes: ${JSON.stringify(c.pending.toString('latin1'))}`);
  assert.equal(c.closed, false);
});

test('an HTTP/1.0 POST with a Content-Length body, answered without a length upstream: a close-delimited body, whole, without chunk framing', async (t) => {
  const c = await openRaw(t, proxy.httpsPort);
  const body = 'ten-body-bytes:'.padEnd(5000, '0123456789');
  await c.write(`POST /chunked-echo HTTP/1.0\r\nHost: ${HOST}\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
  assert.equal(await c.closesWithin(3000), true, 'the connection closes to end the body');
  const r = await c.response();
  assert.equal(r.status, 200);
  assert.equal(r.headers['transfer-encoding'], undefined, 'no Transfer-Encoding towards HTTP/1.0');
  assert.equal(r.headers['content-length'], undefined);
  assert.equal(r.chunked, false);
  assert.equal(r.text, `got:${body}`, 'the body arrived whole, with no chunk framing in it');
  assert.equal(seenFor('/chunked-echo')?.body.toString('latin1'), body, 'the upstream got the request body');
});
