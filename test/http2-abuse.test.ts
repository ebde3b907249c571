/**
 * HTTP/2 clients that abuse the protocol, from a raw peer (test/helpers/raw-h2.ts): rapid reset
 * (CVE-2023-44487), CONTINUATION floods (CVE-2024-27983 and kin), HPACK bombs, control-frame floods, and
 * clients that stop reading. Each must end with the session or stream closed and no upstream work
 * left behind, while other clients are served.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type http from 'node:http';
import { readFile } from 'node:fs/promises';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { ConfigInput } from '../src/config/schema.js';
import { makePki, proxyOneHost } from './helpers/proxy.js';
import { h2Connect, h2Request, startUpstream } from './helpers/net.js';
import { FLAG, FRAME, H2_ERROR, RawH2, frame, headerBlock, indexedLiteral, requestFields } from './helpers/raw-h2.js';

const HOST = 'h2-abuse.test';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** An upstream that counts its open exchanges and answers after `delayMs` (so resets land mid-exchange), /quick at once, cuts /fail off mid-body, and streams 64 MiB for /big. */
async function setup(t: test.TestContext, limits: Record<string, unknown> = {}, delayMs = 100, config: Omit<ConfigInput, 'listen' | 'hosts' | 'limits'> = {}) {
  const open = { n: 0 };
  const up = await startUpstream((req: http.IncomingMessage, res: http.ServerResponse) => {
    open.n++;
    res.on('close', () => open.n--);
    req.resume();
    if (req.url === '/big') {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      const chunk = Buffer.alloc(64 * 1024, 0x61);
      let sent = 0;
      const pump = (): void => {
        while (sent < 1024 && !res.destroyed) {
          sent++;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        if (!res.destroyed) res.end();
      };
      pump();
      return;
    }
    if (req.url === '/fail') {
      // A response cut off mid-body: Portico resets the client's stream itself (INTERNAL_ERROR).
      res.writeHead(200, { 'content-length': '100' });
      res.write('partial');
      setTimeout(() => res.socket?.destroy(), 5);
      return;
    }
    setTimeout(
      () => {
        if (!res.destroyed) res.end('ok');
      },
      req.url === '/quick' ? 0 : delayMs,
    );
  });
  const pki = await makePki();
  const proxy = await proxyOneHost(t, pki, HOST, up.url, { also: [() => up.close()], config: { ...config, limits } });
  const connect = (settings?: Buffer): Promise<RawH2> => RawH2.connect(proxy.httpsPort, HOST, pki.caPem, settings);
  return { up, open, pki, proxy, connect };
}

async function waitUntil(what: string, fn: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

test('a client that keeps its flow-control window at zero has its stream reset after sendTimeout, and the upstream exchange is cancelled', async (t) => {
  const { up, open, connect } = await setup(t, { sendTimeout: '1s' });
  // SETTINGS_INITIAL_WINDOW_SIZE 0: no stream may be sent a byte of DATA until the client says so.
  const c = await connect(Buffer.from([0, 4, 0, 0, 0, 0]));
  t.after(() => c.close());
  c.request(1, requestFields(HOST, '/big'));
  const head = await c.waitFor((f) => f.stream === 1 && f.type === FRAME.HEADERS);
  assert.ok(head, 'the response head is sent (HEADERS are not flow-controlled)');
  // Keep the session busy with PINGs, as a client holding streams open would: only the stream's stall may end it.
  const pinger = setInterval(() => c.send(frame(FRAME.PING, 0, 0, Buffer.alloc(8))), 200);
  t.after(() => clearInterval(pinger));
  const rst = await c.waitFor((f) => f.stream === 1 && f.type === FRAME.RST_STREAM, 6000);
  clearInterval(pinger);
  assert.ok(rst, 'the stalled stream is reset');
  assert.equal(rst.payload.readUInt32BE(0), H2_ERROR.CANCEL);
  await waitUntil('the upstream exchange to be cancelled', () => open.n === 0);
  assert.equal(up.seen[0]?.aborted, true, 'the upstream response was cut off, not read to its end');
  assert.equal(c.closed, false, 'the session itself serves on');
});

test('a client resetting streams it opened after they reached the upstream gets GOAWAY ENHANCE_YOUR_CALM and its connection closed; upstream work stays bounded and other clients are served', async (t) => {
  const { up, open, pki, proxy, connect } = await setup(t, {}, 2000);
  const c = await connect();
  t.after(() => c.close());
  let sid = 1;
  let opened = 0;
  // Batches of 100 requests, each reset once it has reached the upstream: every one costs an upstream request.
  while (!c.closed && opened < 3000) {
    const first = sid;
    const seenBefore = up.seen.length;
    const batch: Buffer[] = [];
    for (let i = 0; i < 100; i++, sid += 2) batch.push(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, sid, headerBlock(requestFields(HOST))));
    if (!c.send(Buffer.concat(batch))) break;
    opened += 100;
    const deadline = Date.now() + 2000;
    while (up.seen.length < seenBefore + 100 && Date.now() < deadline && !c.closed) await sleep(5);
    const resets: Buffer[] = [];
    for (let s = first; s < sid; s += 2) resets.push(frame(FRAME.RST_STREAM, 0, s, Buffer.from([0, 0, 0, H2_ERROR.CANCEL])));
    c.send(Buffer.concat(resets));
  }
  assert.equal(await c.goaway(5000), H2_ERROR.ENHANCE_YOUR_CALM);
  assert.equal(await c.waitClosed(5000), true, 'the connection is closed, not left open after its GOAWAY');
  assert.ok(up.seen.length <= 700, `at most about 512 reset requests reach the upstream (saw ${up.seen.length} of ${opened} opened)`);
  await waitUntil('every upstream exchange to be cancelled', () => open.n === 0);
  const other = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => other.close());
  const r = await h2Request(other, { path: '/' });
  assert.equal(r.status, 200, 'another client is served');
});

/** Sends `make()` frames in batches of `batch` until the connection closes or `max` were sent; returns how many went. */
async function flood(c: RawH2, make: () => Buffer, max: number, batch = 1000): Promise<number> {
  const one = make();
  const block = Buffer.concat(Array.from({ length: batch }, () => one));
  let sent = 0;
  while (sent < max && c.send(block)) {
    sent += batch;
    await sleep(1);
  }
  return sent;
}

test('a client sending each HEADERS with its RST_STREAM in one burst gets GOAWAY ENHANCE_YOUR_CALM and its connection closed, with nothing sent upstream', async (t) => {
  const { up, connect } = await setup(t);
  const c = await connect();
  t.after(() => c.close());
  let sid = 1;
  for (let b = 0; b < 30 && !c.closed; b++) {
    const parts: Buffer[] = [];
    for (let i = 0; i < 100; i++, sid += 2) {
      parts.push(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, sid, headerBlock(requestFields(HOST))));
      parts.push(frame(FRAME.RST_STREAM, 0, sid, Buffer.from([0, 0, 0, H2_ERROR.CANCEL])));
    }
    if (!c.send(Buffer.concat(parts))) break;
    await sleep(5);
  }
  // Portico's bound answers ENHANCE_YOUR_CALM. nghttp2's own (after about 1,000 resets, INTERNAL_ERROR) can come
  // first on Node 26 when a loaded machine delays the streams reaching Portico; Node 20's leaves the connection open,
  // so the close is Portico's either way.
  const code = await c.goaway(5000);
  assert.ok(code === H2_ERROR.ENHANCE_YOUR_CALM || code === H2_ERROR.INTERNAL_ERROR, `GOAWAY ${String(code)}`);
  assert.equal(await c.waitClosed(5000), true);
  assert.ok(sid < 2 * 1100, `closed after ${(sid - 1) / 2} streams`);
  assert.equal(up.seen.length, 0);
});

test('streams Portico resets itself (an upstream failing mid-response) do not count as the client\'s resets: the session serves on', async (t) => {
  const { proxy, pki } = await setup(t);
  const session = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => session.close());
  /** The RST_STREAM code a /fail request's stream closed with. */
  const rstCodeOfFail = (): Promise<number | undefined> =>
    new Promise((resolve) => {
      const stream = session.request({ ':path': '/fail' });
      stream.on('error', () => {});
      stream.resume();
      stream.on('close', () => resolve(stream.rstCode));
      stream.end();
    });
  const codes: (number | undefined)[] = [];
  for (let round = 0; round < 7; round++) codes.push(...(await Promise.all(Array.from({ length: 100 }, rstCodeOfFail))));
  assert.equal(codes.filter((c) => c === H2_ERROR.INTERNAL_ERROR).length, 700, 'every cut-off response was reset');
  assert.equal((await h2Request(session, { path: '/quick' })).status, 200, 'the session was not closed as abusive');
});

test('a CONTINUATION flood ends the connection: header blocks past maxHeaderSize, and endless empty CONTINUATION frames, are not buffered', async (t) => {
  const { up, connect } = await setup(t);
  // Non-empty: 1 KiB fragments of one header block; the limit is 16 KiB.
  const big = await connect();
  t.after(() => big.close());
  big.send(frame(FRAME.HEADERS, FLAG.END_STREAM, 1, headerBlock(requestFields(HOST))));
  const fragment = headerBlock([['x-pad', 'a'.repeat(1000)]]);
  const sentBig = await flood(big, () => frame(FRAME.CONTINUATION, 0, 1, fragment), 100_000, 100);
  assert.equal(await big.waitClosed(5000), true, 'the connection closes');
  assert.ok(sentBig < 100_000, `it closed while the flood went on (after ${sentBig} frames)`);
  // Empty: CVE-2024-28182's variant, which costs the server nothing per frame but its time.
  const empty = await connect();
  t.after(() => empty.close());
  empty.send(frame(FRAME.HEADERS, FLAG.END_STREAM, 1, headerBlock(requestFields(HOST))));
  const sentEmpty = await flood(empty, () => frame(FRAME.CONTINUATION, 0, 1), 1_000_000);
  assert.equal(await empty.waitClosed(5000), true, 'the connection closes');
  assert.ok(sentEmpty < 1_000_000, `it closed while the flood went on (after ${sentEmpty} frames)`);
  assert.equal(up.seen.length, 0, 'no request went upstream');
});

test('an HPACK bomb (one large dynamic-table entry referenced thousands of times) is refused without decoding it whole, and the upstream gets nothing', async (t) => {
  const { up, proxy, pki, connect } = await setup(t);
  const c = await connect();
  t.after(() => c.close());
  // A 4 KiB header added to the dynamic table (literal with incremental indexing, new name), then
  // 10,000 one-byte references to it (index 62): 10 KiB on the wire, 40 MiB decoded.
  const add = indexedLiteral('x-bomb', 'b'.repeat(4000));
  const block = Buffer.concat([headerBlock(requestFields(HOST)), add, Buffer.alloc(10_000, 0xbe)]);
  const before = process.memoryUsage().rss;
  for (let at = 0, first = true; at < block.length; at += 16_000, first = false) {
    const last = at + 16_000 >= block.length;
    c.send(frame(first ? FRAME.HEADERS : FRAME.CONTINUATION, (first ? FLAG.END_STREAM : 0) | (last ? FLAG.END_HEADERS : 0), 1, block.subarray(at, at + 16_000)));
  }
  const answer = await c.answer(1, 5000);
  const closed = await c.waitClosed(1000);
  assert.ok(closed || answer?.rst !== undefined || answer?.status === 431, `refused: ${JSON.stringify(answer)}, closed ${closed}`);
  assert.ok(process.memoryUsage().rss - before < 32 * 1024 * 1024, 'memory did not grow by the decoded size');
  assert.equal(up.seen.length, 0);
  const other = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => other.close());
  assert.equal((await h2Request(other, { path: '/' })).status, 200, 'other clients are served');
});

/**
 * Floods `c` with `one` (SETTINGS or PING) without reading the acknowledgements, never more than 1 MiB waiting in
 * this client once the server stops reading, until the connection closes or `forMs` passed.
 */
async function floodUnread(c: RawH2, one: Buffer, forMs = 10_000): Promise<void> {
  c.socket.pause();
  const block = Buffer.concat(Array.from({ length: 1000 }, () => one));
  const started = Date.now();
  while (!c.closed && Date.now() - started < forMs) {
    const backlog = c.socket.writableLength;
    if (backlog < 1 << 20) c.send(block);
    await sleep(backlog < 1 << 20 ? 1 : 50);
  }
}

const CONTROL_FLOODS: readonly (readonly [string, Buffer])[] = [
  ['SETTINGS', frame(FRAME.SETTINGS, 0, 0)],
  ['PING', frame(FRAME.PING, 0, 0, Buffer.alloc(8))],
];

// The ClientHello of every connection is read before TLS starts (with or without a defaultHost, which picks another
// TLS server), and Node then stops reading a client whose acknowledgements back up instead of failing it as
// flooded; the connection is ended by the timeouts.
for (const defaultHost of [false, true]) {
  test(`a client flooding SETTINGS or PING frames without reading the acknowledgements has its connection closed, at the latest after keepAliveTimeout and sendTimeout${defaultHost ? ' (with a defaultHost)' : ''}`, async (t) => {
    const { up, connect } = await setup(t, { keepAliveTimeout: '1s', sendTimeout: '1s' }, 100, defaultHost ? { defaultHost: HOST } : {});
    for (const [what, one] of CONTROL_FLOODS) {
      const c = await connect();
      t.after(() => c.close());
      await floodUnread(c, one);
      // The acknowledgements it never reads fill the sockets; the session goes idle, gets GOAWAY after
      // keepAliveTimeout (1 s), and as that cannot be delivered either, the connection goes sendTimeout (1 s) later.
      assert.equal(c.closed, true, `${what}: the connection is closed within 10 s`);
    }
    assert.equal(up.seen.length, 0);
  });
}

test('with keepAliveTimeout "0s" an idle HTTP/2 connection stays open, but one whose client floods SETTINGS or PING frames without reading is closed once its output has not moved for sendTimeout', async (t) => {
  const { up, connect } = await setup(t, { keepAliveTimeout: '0s', sendTimeout: '1s' });
  const idle = await connect();
  t.after(() => idle.close());
  for (const [what, one] of CONTROL_FLOODS) {
    const c = await connect();
    t.after(() => c.close());
    // Idle for longer than sendTimeout first: the session is looked at then, left open, and looked at again later.
    await sleep(1500);
    assert.equal(c.closed, false, `${what}: the connection is open after 1.5 s idle`);
    await floodUnread(c, one);
    // No idle GOAWAY: on Node 20 the output stuck in the sockets is what ends it, sendTimeout (1 s) to twice that
    // after it stopped moving (Node 26 may end such a flood itself, at once).
    assert.equal(c.closed, true, `${what}: the connection is closed within 10 s`);
  }
  assert.equal(idle.closed, false, 'the idle connection is still open');
  idle.send(frame(FRAME.PING, 0, 0, Buffer.alloc(8)));
  assert.ok(await idle.waitFor((f) => f.type === FRAME.PING && (f.flags & FLAG.ACK) !== 0), 'and it still answers a PING');
  assert.equal(up.seen.length, 0);
});

test('an empty DATA flood ends its connection while it goes on', async (t) => {
  const { up, connect } = await setup(t);
  const c = await connect();
  t.after(() => c.close());
  c.request(1, requestFields(HOST, '/upload', 'POST'), false);
  const sent = await flood(c, () => frame(FRAME.DATA, 0, 1), 1_000_000);
  assert.equal(await c.waitClosed(5000), true, 'the connection closes');
  assert.ok(sent < 1_000_000, `it closed while the flood went on (after ${sent} frames)`);
  assert.ok(up.seen.length <= 1);
});

test('a client opening more streams than SETTINGS_MAX_CONCURRENT_STREAMS gets the excess refused, and no more than the limit reach the upstream', async (t) => {
  const { up, open, connect } = await setup(t, {}, 60_000);
  const c = await connect();
  t.after(() => c.close());
  const batch: Buffer[] = [];
  for (let i = 0; i < 400; i++) batch.push(frame(FRAME.HEADERS, FLAG.END_HEADERS, 1 + 2 * i, headerBlock(requestFields(HOST, '/upload', 'POST'))));
  c.send(Buffer.concat(batch));
  await waitUntil('the streams to be refused', () => c.frames.filter((f) => f.type === FRAME.RST_STREAM).length >= 144);
  // The admitted streams reach the upstream each on a connection of its own, which takes a loaded machine a while;
  // then a pause in which any stream past the limit would have arrived too.
  await waitUntil('the admitted streams to reach the upstream', () => up.seen.length >= 256, 20_000);
  await sleep(300);
  assert.equal(up.seen.length, 256, 'SETTINGS_MAX_CONCURRENT_STREAMS (256) went upstream');
  const refused = c.frames.filter((f) => f.type === FRAME.RST_STREAM);
  assert.equal(refused.length, 144);
  assert.ok(refused.every((f) => f.payload.readUInt32BE(0) === H2_ERROR.REFUSED_STREAM || f.payload.readUInt32BE(0) === H2_ERROR.PROTOCOL_ERROR));
  c.close();
  await waitUntil('the upstream exchanges to be cancelled when the client goes', () => open.n === 0);
});

test('limits.maxConcurrentStreams and maxHeaderSize are announced and enforced on HTTP/2, and a reload applies them to new connections', async (t) => {
  const { up, proxy, connect } = await setup(t, { maxConcurrentStreams: 8, maxHeaderSize: '8kb' }, 60_000);
  /** Opens `n` streams at once: the SETTINGS_MAX_CONCURRENT_STREAMS announced, how many went upstream, how many were refused. */
  const openStreams = async (n: number): Promise<{ settings: number | undefined; upstream: number; refused: number }> => {
    const c = await connect();
    const before = up.seen.length;
    const batch: Buffer[] = [];
    for (let i = 0; i < n; i++) batch.push(frame(FRAME.HEADERS, FLAG.END_HEADERS, 1 + 2 * i, headerBlock(requestFields(HOST, '/upload', 'POST'))));
    c.send(Buffer.concat(batch));
    const settings = await c.waitFor((f) => f.type === FRAME.SETTINGS && (f.flags & FLAG.ACK) === 0);
    await waitUntil('the excess streams to be refused', () => c.frames.filter((f) => f.type === FRAME.RST_STREAM).length >= n / 2);
    await sleep(200);
    const result = { settings: settingOf(settings, 3), upstream: up.seen.length - before, refused: c.frames.filter((f) => f.type === FRAME.RST_STREAM).length };
    c.close();
    return result;
  };
  /** A 12 KiB header block (in fragments), sent once the client has acknowledged the server's SETTINGS (nghttp2 enforces them from then on). */
  const bigHeader = async (): Promise<{ announced: number | undefined; answer: { status?: number; rst?: number } | undefined }> => {
    const c = await connect();
    const settings = await c.waitFor((f) => f.type === FRAME.SETTINGS && (f.flags & FLAG.ACK) === 0);
    const block = headerBlock(requestFields(HOST, '/quick', 'GET', [['x-big', 'a'.repeat(12 * 1024)]]));
    for (let at = 0, first = true; at < block.length; at += 8000, first = false) {
      const last = at + 8000 >= block.length;
      c.send(frame(first ? FRAME.HEADERS : FRAME.CONTINUATION, (first ? FLAG.END_STREAM : 0) | (last ? FLAG.END_HEADERS : 0), 1, block.subarray(at, at + 8000)));
    }
    const answer = await c.answer(1);
    c.close();
    return { announced: settingOf(settings, 6), answer };
  };
  assert.deepEqual(await openStreams(20), { settings: 8, upstream: 8, refused: 12 });
  assert.deepEqual(await bigHeader(), { announced: 8 * 1024, answer: { rst: H2_ERROR.ENHANCE_YOUR_CALM } });
  await proxy.reconfigure({
    limits: { maxConcurrentStreams: 4, maxHeaderSize: '16kb' },
    hosts: (JSON.parse(await readFile(proxy.configFile, 'utf8')) as ConfigInput).hosts,
  });
  assert.deepEqual(await openStreams(10), { settings: 4, upstream: 4, refused: 6 });
  assert.deepEqual(await bigHeader(), { announced: 16 * 1024, answer: { status: 200 } });
});

/** A SETTINGS frame's value for parameter `id` (RFC 9113 §6.5.2). */
function settingOf(f: { payload: Buffer } | undefined, id: number): number | undefined {
  for (let at = 0; f !== undefined && at + 6 <= f.payload.length; at += 6) if (f.payload.readUInt16BE(at) === id) return f.payload.readUInt32BE(at + 2);
  return undefined;
}

test('a client holding 256 large responses unread on one connection pins about 16 KiB of buffer per stream, not 128 KiB', async (t) => {
  const { open, connect } = await setup(t);
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  gc();
  const before = process.memoryUsage().arrayBuffers;
  const c = await connect(Buffer.from([0, 4, 0, 0, 0, 0]));
  t.after(() => c.close());
  const batch: Buffer[] = [];
  for (let i = 0; i < 256; i++) batch.push(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 1 + 2 * i, headerBlock(requestFields(HOST, '/big'))));
  c.send(Buffer.concat(batch));
  // 40 s: 256 upstream exchanges took over 15 s to start with 16 test files at once on 2 cores.
  await waitUntil('every response to start', () => open.n === 256 && c.frames.filter((f) => f.type === FRAME.HEADERS).length === 256, 40_000);
  await sleep(500);
  gc();
  const held = process.memoryUsage().arrayBuffers - before;
  // Each stream: its 16 KiB mark, crossed by up to one 64 KiB upstream read. At 128 KiB each it was 66 MiB.
  assert.ok(held < 48 * 1024 * 1024, `response buffers held: ${Math.round(held / 1024 / 1024)} MiB`);
  c.close();
  await waitUntil('the upstream exchanges to be cancelled', () => open.n === 0);
});
