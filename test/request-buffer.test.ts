/**
 * "requestBuffer" on an upstream (nginx's proxy_request_buffering): a request body is read, up to the limit,
 * before the request goes upstream, so a slow upload holds no upstream connection while it arrives.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { freePort, startUpstream } from './helpers/net.js';
import { makePki, startProxyFor, type TestPki, type TestProxy } from './helpers/proxy.js';
import { RawClient } from './helpers/raw-http1.js';
import { curl, requireTool } from './helpers/real-peers.js';
import type { ConfigInput } from '../src/config/schema.js';
import { validateConfig } from '../src/config/load.js';

interface Arrival {
  path: string;
  at: number;
  headers: Record<string, string | string[] | undefined>;
  sha: string;
  length: number;
}

/** An upstream that records when each request reached it (its head) and the body it got, then answers "ok". */
function recordingUpstream(arrivals: Arrival[]): ReturnType<typeof startUpstream> {
  return startUpstream((req, res) => {
    const at = performance.now();
    const hash = createHash('sha256');
    let length = 0;
    req.on('data', (c: Buffer) => {
      hash.update(c);
      length += c.length;
    });
    req.on('end', () => {
      arrivals.push({ path: req.url ?? '', at, headers: req.headers, sha: hash.digest('hex'), length });
      res.end('ok');
    });
  });
}

/** The routes of most tests: buffered with room, buffered with 16 KiB, buffered with a body limit, and streamed. */
function standardRoutes(up: string): object[] {
  return [
    { path: '/buffered', upstream: { targets: [up], requestBuffer: '1mb' } },
    { path: '/small-buffer', upstream: { targets: [up], requestBuffer: '16kb' } },
    { path: '/limited', upstream: { targets: [up], requestBuffer: '1mb' }, maxBodySize: '10kb' },
    { path: '/streamed', upstream: up },
  ];
}

/** Portico with host b.test, `routes` given the recording upstream's URL, and `config` besides. */
async function setup(t: TestContext, routes: (up: string) => object[] = standardRoutes, config: Record<string, unknown> = {}): Promise<{ pki: TestPki; proxy: TestProxy; arrivals: Arrival[] }> {
  const pki = await makePki();
  const arrivals: Arrival[] = [];
  const up = await recordingUpstream(arrivals);
  const cert = await pki.issue('b', ['b.test']);
  const proxy = await startProxyFor(t, pki, { ...config, hosts: { 'b.test': { tls: cert, routes: routes(up.url) } } } as Omit<ConfigInput, 'listen'>, [up.close]);
  return { pki, proxy, arrivals };
}

/** Sends `body` in `pieces` writes `gapMs` apart after the head; returns when the last piece was written, and the response. */
async function slowUpload(t: TestContext, s: { proxy: TestProxy; pki: TestPki }, path: string, body: Buffer, opts: { pieces: number; gapMs: number; chunked?: boolean }): Promise<{ lastAt: number; status: number }> {
  const c = await RawClient.open(t, { port: s.proxy.httpsPort, tls: { servername: 'b.test', ca: s.pki.caPem } });
  const framing = opts.chunked === true ? 'transfer-encoding: chunked' : `content-length: ${body.length}`;
  await c.write(`POST ${path} HTTP/1.1\r\nhost: b.test\r\n${framing}\r\n\r\n`);
  const size = Math.ceil(body.length / opts.pieces);
  let lastAt = 0;
  for (let i = 0; i < opts.pieces; i++) {
    await delay(opts.gapMs);
    const piece = body.subarray(i * size, (i + 1) * size);
    lastAt = performance.now();
    await c.write(opts.chunked === true ? Buffer.concat([Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from(i === opts.pieces - 1 ? '\r\n0\r\n\r\n' : '\r\n')]) : piece);
  }
  const res = await c.response({ timeoutMs: 5000 });
  return { lastAt, status: res.status };
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

test('with requestBuffer a slow upload reaches the upstream only once it has all arrived, whole and with its Content-Length; without, it streams', async (t) => {
  const s = await setup(t);
  const body = randomBytes(30_000);
  const buffered = await slowUpload(t, s, '/buffered', body, { pieces: 3, gapMs: 250 });
  assert.equal(buffered.status, 200);
  const a = s.arrivals.find((x) => x.path === '/buffered')!;
  assert.ok(a.at >= buffered.lastAt, `the upstream saw the request ${(buffered.lastAt - a.at).toFixed(0)} ms before the last piece was sent`);
  assert.equal(a.sha, sha(body));
  assert.equal(a.headers['content-length'], '30000');

  const streamed = await slowUpload(t, s, '/streamed', body, { pieces: 3, gapMs: 250 });
  assert.equal(streamed.status, 200);
  const b = s.arrivals.find((x) => x.path === '/streamed')!;
  assert.ok(b.at < streamed.lastAt - 200, 'without requestBuffer the request goes upstream as its body starts');
  assert.equal(b.sha, sha(body));
});

test('a chunked upload is buffered and sent with a Content-Length; one past the limit streams on from where the limit was passed', async (t) => {
  const s = await setup(t);
  const small = randomBytes(5_000);
  const r = await slowUpload(t, s, '/buffered', small, { pieces: 2, gapMs: 100, chunked: true });
  assert.equal(r.status, 200);
  const a = s.arrivals.find((x) => x.path === '/buffered')!;
  assert.equal(a.headers['content-length'], '5000');
  assert.equal(a.headers['transfer-encoding'], undefined);
  assert.equal(a.sha, sha(small));

  const big = randomBytes(200_000);
  const over = await slowUpload(t, s, '/small-buffer', big, { pieces: 4, gapMs: 250 });
  assert.equal(over.status, 200);
  const b = s.arrivals.find((x) => x.path === '/small-buffer')!;
  assert.ok(b.at < over.lastAt - 200, 'past the 16 KiB limit the request went upstream before the body had all arrived');
  assert.equal(b.length, big.length);
  assert.equal(b.sha, sha(big));
});

test('a buffered body larger than maxBodySize gets 413 and never reaches the upstream', async (t) => {
  const s = await setup(t);
  const r = await slowUpload(t, s, '/limited', randomBytes(20_000), { pieces: 2, gapMs: 50, chunked: true });
  assert.equal(r.status, 413);
  assert.equal(s.arrivals.length, 0);
});

test('requestBuffer over HTTP/2 (curl): the body arrives whole with its Content-Length', async (t) => {
  if (!requireTool(t, 'curl')) return;
  const s = await setup(t);
  const body = randomBytes(100_000);
  const file = join(s.pki.dir, 'upload.bin');
  await writeFile(file, body);
  const caFile = join(s.pki.dir, 'ca.pem');
  await writeFile(caFile, s.pki.caPem);
  const r = await curl({ host: 'b.test', port: s.proxy.httpsPort, caFile, path: '/buffered', args: ['--http2', '-H', 'content-length:', '-H', 'transfer-encoding:', '--data-binary', `@${file}`] });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^HTTP\/2 200/);
  const a = s.arrivals.find((x) => x.path === '/buffered')!;
  assert.equal(a.sha, sha(body));
  assert.equal(a.headers['content-length'], String(body.length));
});

test('a buffered PUT whose first target refuses the connection is sent to the next; a streamed one gets 502', async (t) => {
  const dead = `http://127.0.0.1:${await freePort()}`;
  const { pki, proxy, arrivals } = await setup(t, (up) => [
    { path: '/buffered', upstream: { targets: [dead, up], requestBuffer: '64kb' } },
    { path: '/streamed', upstream: { targets: [dead, up] } },
  ]);
  const body = randomBytes(10_000);
  const put = async (path: string): Promise<number> => {
    const c = await RawClient.open(t, { port: proxy.httpsPort, tls: { servername: 'b.test', ca: pki.caPem } });
    await c.write(Buffer.concat([Buffer.from(`PUT ${path} HTTP/1.1\r\nhost: b.test\r\ncontent-length: ${body.length}\r\n\r\n`), body]));
    return (await c.response({ timeoutMs: 5000 })).status;
  };
  // Round-robin: the dead target comes first for one of the two requests of each route; send two each.
  const buffered = [await put('/buffered'), await put('/buffered')];
  assert.deepEqual(buffered, [200, 200]);
  assert.deepEqual(arrivals.map((a) => a.sha), [sha(body), sha(body)]);
  const streamed = [await put('/streamed'), await put('/streamed')];
  assert.deepEqual([...streamed].sort(), [200, 502]);
});

test('a buffered body that stops arriving gets 408 after limits.bodyTimeout, and nothing reaches the upstream', async (t) => {
  const { pki, proxy, arrivals } = await setup(t, (up) => [{ path: '/', upstream: { targets: [up], requestBuffer: '1mb' } }], { limits: { bodyTimeout: '1s' } });
  const c = await RawClient.open(t, { port: proxy.httpsPort, tls: { servername: 'b.test', ca: pki.caPem } });
  await c.write('POST /stall HTTP/1.1\r\nhost: b.test\r\ncontent-length: 1000\r\n\r\nonly a part');
  const res = await c.response({ timeoutMs: 5000 });
  assert.equal(res.status, 408);
  assert.equal(arrivals.length, 0);
});

test('requestBuffer is a size from 1b to 64mb, refused otherwise at its path', () => {
  const issues = (requestBuffer: string): string[] => {
    const r = validateConfig({ hosts: { 'b.test': { tls: { cert: 'c', key: 'k' }, routes: [{ upstream: { targets: ['http://127.0.0.1:1'], requestBuffer } }] } } });
    return r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`);
  };
  assert.deepEqual(issues('64mb'), []);
  for (const bad of ['0b', '65mb', '1gb']) assert.match(issues(bad)[0] ?? '', /^hosts\["b\.test"\]\.routes\[0\]\.upstream\.requestBuffer: expected a size from 1b to 64mb/, bad);
});
