/**
 * HTTP/2 clients that abuse the protocol, from a raw peer (test/helpers/raw-h2.ts): rapid reset
 * (CVE-2023-44487), CONTINUATION floods (CVE-2024-27983 and kin), HPACK bombs, control-frame floods, and
 * clients that stop reading. Each must end with the session or stream closed and no upstream work
 * left behind, while other clients are served.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type http from 'node:http';
import { makePki, proxyOneHost } from './helpers/proxy.js';
import { h2Connect, h2Request, startUpstream } from './helpers/net.js';
import { FLAG, FRAME, H2_ERROR, RawH2, frame, headerBlock, requestFields } from './helpers/raw-h2.js';

const HOST = 'h2-abuse.test';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** An upstream that counts its open exchanges and answers after `delayMs` (so resets land mid-exchange), or streams 64 MiB for /big. */
async function setup(t: test.TestContext, limits: Record<string, unknown> = {}, delayMs = 100) {
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
    setTimeout(() => {
      if (!res.destroyed) res.end('ok');
    }, delayMs);
  });
  const pki = await makePki();
  const proxy = await proxyOneHost(t, pki, HOST, up.url, { also: [() => up.close()], config: { limits } });
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
