/**
 * Large Content-Length bodies from cleartext HTTP/1.1 upstreams are read raw
 * (not through the parser) into recycled buffers: every byte must still arrive
 * in order at the right client, the parser must take the connection back for
 * the next response, and a body cut short, followed by stray bytes, read
 * slowly or abandoned by its client must end as it did through the parser.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import http2 from 'node:http2';
import https from 'node:https';
import tls from 'node:tls';
import { once } from 'node:events';
import type { Socket } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { makePki, proxyOneHost, type TestPki, type TestProxy } from './helpers/proxy.js';
import { h1Request, h2Connect, h2Request, startRawUpstream } from './helpers/net.js';
import { freeReadBuffers, largeReadBuffers } from '../src/upstream/read-buffers.js';

const HOST = 'raw.test';

/** A body no other id or size gives: byte i is a function of i and id. */
function bodyOf(id: number, size: number): Buffer {
  const b = Buffer.allocUnsafe(size);
  for (let i = 0; i < size; i++) b[i] = (i * 31 + id * 97 + (i >> 12)) & 0xff;
  return b;
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** Answers /big/<id>/<size> with that body (head and body in one write, or the body 30 ms later with /late/…), anything else with "ok". */
function answerBig(path: string, s: Socket): void {
  const m = /^\/(big|late)\/(\d+)\/(\d+)$/.exec(path);
  if (m === null) {
    s.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
    return;
  }
  const body = bodyOf(Number(m[2]), Number(m[3]));
  const head = `HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: ${body.length}\r\n\r\n`;
  if (m[1] === 'late') {
    s.write(head);
    setTimeout(() => s.write(body), 30);
  } else {
    s.write(Buffer.concat([Buffer.from(head, 'latin1'), body]));
  }
}

async function proxyTo(t: TestContext, upstream: string): Promise<{ pki: TestPki; proxy: TestProxy }> {
  const pki = await makePki();
  const proxy = await proxyOneHost(t, pki, HOST, upstream);
  return { pki, proxy };
}

test('large bodies read raw arrive byte-exact over HTTP/1.1 and HTTP/2, and small responses between them reuse the same upstream connection', async (t) => {
  const up = await startRawUpstream(answerBig);
  t.after(() => up.close());
  const { pki, proxy } = await proxyTo(t, up.url);
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
  t.after(() => agent.destroy());
  const get = (path: string): Promise<Buffer> =>
    new Promise((resolve, reject) => {
      https
        .get({ host: '127.0.0.1', port: proxy.httpsPort, path, servername: HOST, ca: pki.caPem, agent, headers: { host: HOST } }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => (res.statusCode === 200 ? resolve(Buffer.concat(chunks)) : reject(new Error(`status ${res.statusCode}`))));
          res.on('error', reject);
        })
        .on('error', reject);
    });
  for (const [path, id, size] of [
    ['/big/1/1048576', 1, 1048576],
    ['/small', 0, 0],
    ['/late/2/300000', 2, 300000],
    ['/small', 0, 0],
    ['/big/3/5000000', 3, 5000000],
    ['/big/4/40000', 4, 40000],
  ] as const) {
    const got = await get(path);
    if (size === 0) assert.equal(got.toString(), 'ok', path);
    else assert.equal(sha(got), sha(bodyOf(id, size)), `${path}: ${got.length} bytes, want ${size}`);
  }
  const session = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => session.close());
  const h2 = await h2Request(session, { path: '/big/5/2000000' });
  assert.equal(h2.status, 200);
  assert.equal(sha(h2.body), sha(bodyOf(5, 2000000)));
  assert.equal((await h2Request(session, { path: '/small' })).text, 'ok');
  assert.equal(up.connections(), 1, 'every response, raw or parsed, came over one kept-alive upstream connection');
});

test('concurrent large bodies each reach their own client whole, and their read buffers are given back for reuse', async (t) => {
  const up = await startRawUpstream(answerBig);
  t.after(() => up.close());
  const { pki, proxy } = await proxyTo(t, up.url);
  const session = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => session.close());
  for (let round = 0; round < 3; round++) {
    const ids = [1, 2, 3, 4, 5, 6, 7, 8].map((i) => round * 10 + i);
    const results = await Promise.all(
      ids.map((id, i) =>
        i % 2 === 0
          ? h1Request({ port: proxy.httpsPort, sni: HOST, ca: pki.caPem, path: `/big/${id}/${700000 + id}` })
          : h2Request(session, { path: `/big/${id}/${700000 + id}` }),
      ),
    );
    results.forEach((r, i) => {
      const id = ids[i]!;
      assert.equal(r.status, 200);
      assert.equal(sha(r.body), sha(bodyOf(id, 700000 + id)), `body ${id} (${r.body.length} bytes) is exactly its own`);
    });
  }
  assert.ok(freeReadBuffers() > 0, 'read buffers came back once written');
  // The upstream sends each body at once, faster than it is read: later reads of each body are large ones.
  assert.ok(largeReadBuffers().free > 0, 'large reads were made, and their buffers came back');
  assert.equal(largeReadBuffers().out, 0, 'no large buffer is still out once every body is written');
});

test('a raw body the upstream cuts short ends the client response visibly short, and the next request is answered', async (t) => {
  const up = await startRawUpstream((path, s) => {
    if (path !== '/cut') return answerBig(path, s);
    s.write(`HTTP/1.1 200 OK\r\ncontent-length: 1048576\r\n\r\n`);
    s.write(bodyOf(9, 300000), () => setTimeout(() => s.destroy(), 30));
  });
  t.after(() => up.close());
  const { pki, proxy } = await proxyTo(t, up.url);
  const cut = await h1Request({ port: proxy.httpsPort, sni: HOST, ca: pki.caPem, path: '/cut' }).then(
    (r) => r.body.length,
    () => -1,
  );
  assert.ok(cut < 1048576, `the client must not get a whole-looking body (got ${cut})`);
  assert.ok(proxy.logs.some((l) => l.code === 'PORTICO_UPSTREAM_FAILED'), 'the cut is logged');
  const next = await h1Request({ port: proxy.httpsPort, sni: HOST, ca: pki.caPem, path: '/big/10/100000' });
  assert.equal(sha(next.body), sha(bodyOf(10, 100000)));
});

test('bytes after a raw body retire the upstream connection; the next response comes over a new one, whole', async (t) => {
  let n = 0;
  const up = await startRawUpstream((path, s) => {
    n++;
    if (n > 1) return answerBig(path, s);
    const body = bodyOf(11, 200000);
    s.write(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\n\r\n`), body, Buffer.from('HTTP/1.1 200 OK\r\n\r\nstray')]));
  });
  t.after(() => up.close());
  const { pki, proxy } = await proxyTo(t, up.url);
  const first = await h1Request({ port: proxy.httpsPort, sni: HOST, ca: pki.caPem, path: '/big/11/200000' });
  assert.equal(sha(first.body), sha(bodyOf(11, 200000)));
  await delay(50);
  const second = await h1Request({ port: proxy.httpsPort, sni: HOST, ca: pki.caPem, path: '/big/12/200000' });
  assert.equal(sha(second.body), sha(bodyOf(12, 200000)));
  assert.equal(up.connections(), 2);
});

test('a client that reads slowly gets the whole raw body (the upstream is paused and resumed), and one that leaves closes the upstream connection', async (t) => {
  const up = await startRawUpstream(answerBig);
  t.after(() => up.close());
  const { pki, proxy } = await proxyTo(t, up.url);
  const slow = await new Promise<Buffer>((resolve, reject) => {
    https
      .get({ host: '127.0.0.1', port: proxy.httpsPort, path: '/big/13/6000000', servername: HOST, ca: pki.caPem, agent: false, headers: { host: HOST } }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => {
          chunks.push(c);
          if (chunks.length % 16 === 1) {
            res.pause();
            setTimeout(() => res.resume(), 40);
          }
        });
        res.on('end', () => resolve(Buffer.concat(chunks)));
        res.on('error', reject);
      })
      .on('error', reject);
  });
  assert.equal(sha(slow), sha(bodyOf(13, 6000000)));

  const closedBefore = up.closed();
  await new Promise<void>((resolve, reject) => {
    const req = https.get({ host: '127.0.0.1', port: proxy.httpsPort, path: '/big/14/20000000', servername: HOST, ca: pki.caPem, agent: false, headers: { host: HOST } }, (res) => {
      res.once('data', () => {
        req.destroy();
        resolve();
      });
    });
    req.on('error', (err) => (req.destroyed ? undefined : reject(err)));
  });
  const deadline = Date.now() + 3000;
  while (up.closed() === closedBefore && Date.now() < deadline) await delay(20);
  assert.ok(up.closed() > closedBefore, 'the upstream connection of the abandoned body was closed');
  const after = await h1Request({ port: proxy.httpsPort, sni: HOST, ca: pki.caPem, path: '/big/15/100000' });
  assert.equal(sha(after.body), sha(bodyOf(15, 100000)));
  // Large buffers are capped per process: the abandoned body's (given to its socket for a read, or in a
  // write that failed) must not stay counted, or large reads would stop for good.
  const until = Date.now() + 3000;
  while (largeReadBuffers().out !== 0 && Date.now() < until) await delay(20);
  assert.equal(largeReadBuffers().out, 0, 'the abandoned body holds no large buffer');
});

test('a body that stalls after large reads holds one large read buffer, given back when its upstream connection closes', async (t) => {
  // 1 MB at once (the proxy's reads fill usual buffers, so the body counts as fast), then, once the
  // client has all of it, 1 KB more: read while the client keeps up, after which the proxy waits for
  // the rest of the 4 MB declared with a large buffer for its next read. Then the upstream closes.
  let stalled: Socket | undefined;
  const up = await startRawUpstream((path, s) => {
    if (path !== '/stall') return answerBig(path, s);
    stalled = s;
    s.write(Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\ncontent-length: 4000000\r\n\r\n', 'latin1'), bodyOf(16, 1000000)]));
  });
  t.after(() => up.close());
  const { pki, proxy } = await proxyTo(t, up.url);
  const before = largeReadBuffers().out;
  let got = 0;
  let waiting: number | undefined;
  const ended = new Promise<void>((resolve, reject) => {
    const req = https.get({ host: '127.0.0.1', port: proxy.httpsPort, path: '/stall', servername: HOST, ca: pki.caPem, agent: false, headers: { host: HOST } }, (res) => {
      res.on('data', (c: Buffer) => {
        got += c.length;
        if (got === 1000000) setTimeout(() => stalled?.write(Buffer.alloc(1000, 7)), 50);
        if (got !== 1001000) return;
        setTimeout(() => {
          waiting = largeReadBuffers().out;
          stalled?.destroy();
        }, 50);
      });
      res.on('error', () => resolve());
      res.on('close', () => resolve());
    });
    req.on('error', (err) => (waiting === undefined ? reject(err) : resolve()));
  });
  await ended;
  assert.equal(waiting, before + 1, 'the stalled body waited with one large buffer for its next read');
  const until = Date.now() + 3000;
  while (largeReadBuffers().out !== before && Date.now() < until) await delay(20);
  assert.equal(largeReadBuffers().out, before, 'closing the upstream connection gave the large buffer back');
  assert.equal(got, 1001000, 'the client got what the upstream sent, and the response ended short');
});

test('an HTTP/2 client alone on its connection gets a large body read in large buffers, byte-exact', async (t) => {
  const up = await startRawUpstream(answerBig);
  t.after(() => up.close());
  const { pki, proxy } = await proxyTo(t, up.url);
  // Windows as browsers open them (several MiB), so flow control does not hold the stream back.
  const session = http2.connect(`https://${HOST}:${proxy.httpsPort}`, {
    createConnection: () => tls.connect({ host: '127.0.0.1', port: proxy.httpsPort, servername: HOST, ca: pki.caPem, ALPNProtocols: ['h2'] }),
    settings: { initialWindowSize: 8 * 1024 * 1024 },
  });
  session.on('error', () => {});
  t.after(() => session.close());
  await once(session, 'connect');
  session.setLocalWindowSize(16 * 1024 * 1024);
  const before = largeReadBuffers().taken;
  const got = await h2Request(session, { path: '/big/17/3000000' });
  assert.equal(got.status, 200);
  assert.equal(sha(got.body), sha(bodyOf(17, 3000000)), `the body (${got.body.length} bytes) arrives whole`);
  // The stream holds up to 128 KiB before the upstream is paused; at its own 16 KiB every 64 KiB read would pause it.
  assert.ok(largeReadBuffers().taken > before, 'large reads were made for an HTTP/2 client');
});
