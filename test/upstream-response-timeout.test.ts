/**
 * responseTimeout on HTTP/1.1 upstreams is the longest wait for progress, not a bound on the whole
 * exchange: a body that keeps coming, an upload that keeps going and a client that is slow to read never
 * trip it; a body that stops part way does, and the client sees its response cut short. (The wait for a
 * head, trickled or not, is test/upstream-misbehaving.test.ts; an upstream that never answers,
 * test/forwarding-errors.test.ts.)
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type http from 'node:http';
import https from 'node:https';
import { setTimeout as delay } from 'node:timers/promises';
import { makePki, startProxyFor, type TestPki, type TestProxy } from './helpers/proxy.js';
import { startUpstream } from './helpers/net.js';

type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

/** Portico in front of one upstream answering with `handler`, with the given responseTimeout. */
async function proxyFor(t: TestContext, handler: Handler, responseTimeout: string): Promise<{ pki: TestPki; proxy: TestProxy }> {
  const up = await startUpstream(handler);
  const pki = await makePki();
  const cert = await pki.issue('t', ['timeout.test']);
  const proxy = await startProxyFor(t, pki, { hosts: { 'timeout.test': { tls: cert, routes: [{ path: '/', upstream: { targets: [up.url], responseTimeout } }] } } }, [up.close]);
  return { pki, proxy };
}

interface Outcome {
  status: number;
  body: Buffer;
  complete: boolean;
  ms: number;
}

/**
 * One request over HTTP/1.1; `body` pieces are sent `gapMs` apart; the client reads nothing of the response
 * for `stallMs` after its head. Resolves however the response ends (complete or cut short).
 */
function request(port: number, pki: TestPki, opts: { method?: string; body?: Buffer[]; gapMs?: number; stallMs?: number } = {}): Promise<Outcome> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const req = https.request(
      { host: '127.0.0.1', port, method: opts.method ?? 'GET', path: '/', servername: 'timeout.test', ca: pki.caPem, headers: { host: 'timeout.test' }, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        if (opts.stallMs !== undefined) {
          res.pause();
          setTimeout(() => res.resume(), opts.stallMs);
        }
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', () => {});
        res.on('close', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks), complete: res.complete, ms: performance.now() - started }));
      },
    );
    req.on('error', reject);
    void (async () => {
      for (const piece of opts.body ?? []) {
        req.write(piece);
        await delay(opts.gapMs ?? 0);
      }
      req.end();
    })();
  });
}

test('a body that keeps coming, a piece every 150 ms for about a second, is not cut by a 400 ms responseTimeout', async (t) => {
  const { pki, proxy } = await proxyFor(
    t,
    (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 8 * 10 });
      let n = 0;
      const timer = setInterval(() => {
        res.write('x'.repeat(10));
        if (++n === 8) {
          clearInterval(timer);
          res.end();
        }
      }, 150);
      res.on('close', () => clearInterval(timer));
    },
    '400ms',
  );
  const r = await request(proxy.httpsPort, pki);
  assert.equal(r.status, 200);
  assert.equal(r.complete, true);
  assert.equal(r.body.toString(), 'x'.repeat(80));
  assert.ok(r.ms > 1000, `the body took ${Math.round(r.ms)} ms, longer than the timeout several times over`);
});

test('a body that stops part way is cut short at the client once it has been silent for responseTimeout', async (t) => {
  const { pki, proxy } = await proxyFor(
    t,
    (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 1000 });
      res.write('y'.repeat(100));
      // Then nothing: the upstream keeps the connection open and never sends the rest.
    },
    '300ms',
  );
  const r = await request(proxy.httpsPort, pki);
  assert.equal(r.status, 200);
  assert.equal(r.complete, false, 'a truncated body must not look complete');
  assert.equal(r.body.toString(), 'y'.repeat(100));
  assert.ok(r.ms >= 280 && r.ms < 2000, `cut after ${Math.round(r.ms)} ms`);
  await delay(50);
  assert.ok(proxy.logs.some((l) => l.code === 'PORTICO_UPSTREAM_FAILED' && typeof l.detail === 'string' && l.detail.includes('PORTICO_RESPONSE_TIMEOUT')), 'the cut is logged as a response timeout');
});

// 32 MiB: more than the kernel's socket buffers and Portico's own hold, so the upstream must wait for the client.
test('a client that reads nothing for 1.5 s of a 32 MiB body gets all of it: waiting on the client is no upstream timeout (responseTimeout 300 ms)', async (t) => {
  const size = 32 * 1024 * 1024;
  const { pki, proxy } = await proxyFor(
    t,
    (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': size });
      res.end(Buffer.alloc(size, 0x7a));
    },
    '300ms',
  );
  const r = await request(proxy.httpsPort, pki, { stallMs: 1500 });
  assert.equal(r.status, 200);
  assert.equal(r.complete, true);
  assert.equal(r.body.length, size);
  assert.ok(r.ms >= 1500, `answered after ${Math.round(r.ms)} ms`);
});

test('a client that was slow to read, then an upstream that stops part way: still cut once the upstream has been silent for responseTimeout', { timeout: 15_000 }, async (t) => {
  const sent = 32 * 1024 * 1024;
  const { pki, proxy } = await proxyFor(
    t,
    (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': sent + 1024 * 1024 });
      // 32 MiB of the 33 declared, then nothing: the connection stays open.
      res.write(Buffer.alloc(sent, 0x7a));
    },
    '300ms',
  );
  const r = await request(proxy.httpsPort, pki, { stallMs: 1500 });
  assert.equal(r.status, 200);
  assert.equal(r.complete, false, 'a truncated body must not look complete');
  assert.equal(r.body.length, sent);
  assert.ok(r.ms >= 1500 && r.ms < 6000, `cut after ${Math.round(r.ms)} ms`);
});

test('an upload that keeps going, a piece every 150 ms for about a second, is not cut by a 400 ms responseTimeout', async (t) => {
  const { pki, proxy } = await proxyFor(
    t,
    (req, res) => {
      let n = 0;
      req.on('data', (c: Buffer) => (n += c.length));
      req.on('end', () => res.end(`got ${n}`));
    },
    '400ms',
  );
  const pieces = Array.from({ length: 7 }, () => Buffer.alloc(1000, 0x61));
  const r = await request(proxy.httpsPort, pki, { method: 'POST', body: pieces, gapMs: 150 });
  assert.equal(r.status, 200);
  assert.equal(r.body.toString(), 'got 7000');
  assert.ok(r.ms > 1000, `the upload took ${Math.round(r.ms)} ms`);
});

test('after many quick exchanges on one kept connection, a wait longer than responseTimeout still times out (the timer counts from the last exchange, not from the first)', async (t) => {
  let calls = 0;
  const { pki, proxy } = await proxyFor(
    t,
    (_req, res) => {
      // Quick answers, then one that never comes.
      if (++calls <= 20) res.end('ok');
    },
    '400ms',
  );
  for (let i = 0; i < 20; i++) {
    const r = await request(proxy.httpsPort, pki);
    assert.equal(r.body.toString(), 'ok');
    await delay(30);
  }
  const r = await request(proxy.httpsPort, pki);
  assert.equal(r.status, 504);
  assert.ok(r.ms >= 380 && r.ms < 2000, `504 after ${Math.round(r.ms)} ms`);
});
