import { test } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import http from 'node:http';
import https from 'node:https';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { validateConfig } from '../src/config/load.js';
import { checkConfigFile } from '../src/cli/check-config.js';
import { ResponseCache, type CachedResponse } from '../src/cache/response-cache.js';
import { listenH2 } from './helpers/h2-upstream.js';
import { makePki, startProxyFor } from './helpers/proxy.js';
import { freePort, h1Request, h2Connect, h2Request, startUpstream } from './helpers/net.js';
import { spawnProxy } from './helpers/child-proxy.js';
import { adminRequest, metricValue } from './helpers/admin.js';
import { curl, requireTool } from './helpers/real-peers.js';

const BIG = randomBytes(300 * 1024); // read raw into recycled buffers by the HTTP/1.1 upstream client

/** An upstream whose answers say how they may be cached; each body names how many times its path was asked. */
async function cacheableUpstream() {
  const counts = new Map<string, number>();
  const up = await startUpstream((req, res) => {
    req.resume();
    const url = req.url ?? '/';
    const bare = url.split('?')[0] as string;
    const path = bare.slice(bare.lastIndexOf('/')); // "/assets/fresh" answers as "/fresh" does
    const n = (counts.get(url) ?? 0) + 1;
    counts.set(url, n);
    const body = `${path} #${n}`;
    const h: Record<string, string | number | string[]> = { 'content-type': 'text/plain' };
    switch (path) {
      case '/fresh':
        Object.assign(h, { 'cache-control': 'public, max-age=60', etag: '"v1"', 'last-modified': 'Tue, 01 Dec 2026 10:00:00 GMT' });
        break;
      case '/short':
        h['cache-control'] = 'max-age=1';
        break;
      case '/strict':
        h['cache-control'] = 'max-age=1, must-revalidate';
        break;
      case '/aged':
        Object.assign(h, { 'cache-control': 'max-age=100', age: '40' });
        break;
      case '/expires':
        Object.assign(h, { date: new Date().toUTCString(), expires: new Date(Date.now() + 60_000).toUTCString() });
        break;
      case '/no-store':
        h['cache-control'] = 'no-store';
        break;
      case '/private':
        h['cache-control'] = 'private, max-age=60';
        break;
      case '/cookie':
        Object.assign(h, { 'cache-control': 'max-age=60', 'set-cookie': 'session=abc' });
        break;
      case '/vary-star':
        Object.assign(h, { 'cache-control': 'max-age=60', vary: '*' });
        break;
      case '/error':
        h['cache-control'] = 'max-age=60';
        res.writeHead(500, h);
        return res.end(body);
      case '/lang':
        Object.assign(h, { 'cache-control': 'max-age=60', vary: 'Accept-Language' });
        res.writeHead(200, h);
        return res.end(`${body} ${req.headers['accept-language'] ?? '-'}`);
      case '/big':
        Object.assign(h, { 'cache-control': 'max-age=60', 'content-length': BIG.length });
        res.writeHead(200, h);
        return res.end(BIG);
      case '/chunked':
        h['cache-control'] = 'max-age=60';
        res.writeHead(200, h);
        res.write(`${body} `);
        return setTimeout(() => res.end('and the rest'), 20);
      case '/plain':
        break; // says nothing of its freshness
    }
    if (req.method === 'POST' || req.method === 'HEAD') h['cache-control'] = 'max-age=60';
    res.writeHead(200, h);
    res.end(req.method === 'HEAD' ? undefined : body);
  });
  return { up, counts };
}

test('cache: a fresh response is stored and served again with Age and Cache-Status, over HTTP/1.1 and HTTP/2, HEAD and 304 included', async (t) => {
  const pki = await makePki();
  const { up, counts } = await cacheableUpstream();
  const cert = await pki.issue('c1', ['c1.test']);
  const proxy = await startProxyFor(t, pki, { log: { access: true }, hosts: { 'c1.test': { tls: cert, cache: true, routes: [{ path: '/', upstream: up.url }] } } }, [up.close]);
  // The Host with the port, as clients (curl, and HTTP/2's :authority below) send it for a port other than 443: the port is part of the key.
  const get = (path: string, headers: Record<string, string> = {}, method = 'GET') => h1Request({ port: proxy.httpsPort, sni: 'c1.test', host: `c1.test:${proxy.httpsPort}`, path, method, headers, ca: pki.caPem });

  let r = await get('/fresh');
  assert.equal(r.text, '/fresh #1');
  assert.equal(r.headers['cache-status'], 'Portico; fwd=uri-miss; stored');
  r = await get('/fresh');
  assert.equal(r.text, '/fresh #1', 'the second request is answered from the cache');
  assert.match(String(r.headers['cache-status']), /^Portico; hit; ttl=(5[7-9]|60)$/);
  assert.match(String(r.headers.age), /^[0-3]$/);
  assert.equal(r.headers.etag, '"v1"');
  assert.equal(r.headers['content-type'], 'text/plain');
  assert.equal(r.headers['content-length'], String('/fresh #1'.length));
  assert.ok(r.headers.date !== undefined);
  await new Promise((res) => setTimeout(res, 400)); // access lines are written in batches
  const lines = proxy.logs.filter((l) => l['msg'] === 'access' && l['path'] === '/fresh');
  assert.deepEqual(
    lines.map((l) => [l['cache'], l['upstream'], l['status']]),
    [
      ['miss', up.url, 200],
      ['hit', undefined, 200],
    ],
    'the access line says whether the cache answered',
  );

  const session = await h2Connect(proxy.httpsPort, 'c1.test', pki.caPem);
  t.after(() => session.close());
  const h2 = await h2Request(session, { path: '/fresh' });
  assert.equal(h2.text, '/fresh #1', 'an HTTP/2 client gets the stored response too');
  assert.match(String(h2.headers['cache-status']), /^Portico; hit/);
  const h2head = await h2Request(session, { path: '/fresh', method: 'HEAD' });
  assert.equal(h2head.status, 200);
  assert.equal(h2head.body.length, 0);
  assert.equal(h2head.headers['content-length'], String('/fresh #1'.length));
  const h2cond = await h2Request(session, { path: '/fresh', headers: { 'if-none-match': '"v1"' } });
  assert.equal(h2cond.status, 304, 'over HTTP/2 too');
  assert.equal(h2cond.body.length, 0);

  r = await get('/fresh', {}, 'HEAD');
  assert.equal(r.status, 200);
  assert.equal(r.body.length, 0);
  assert.equal(r.headers['content-length'], String('/fresh #1'.length), 'HEAD gets the stored headers');
  r = await get('/fresh', { 'if-none-match': '"v1"' });
  assert.equal(r.status, 304, 'a matching If-None-Match gets 304 from the cache');
  assert.equal(r.body.length, 0);
  assert.equal(r.headers.etag, '"v1"');
  assert.equal(r.headers['content-type'], undefined, 'a 304 carries no representation headers');
  r = await get('/fresh', { 'if-none-match': '"v0"' });
  assert.equal(r.status, 200, 'a different ETag gets the full response');
  assert.equal(r.text, '/fresh #1');
  r = await get('/fresh', { 'if-modified-since': 'Tue, 01 Dec 2026 10:00:00 GMT' });
  assert.equal(r.status, 304);
  assert.equal(counts.get('/fresh'), 1, 'the upstream was asked once for all of these');
  r = await get('/fresh?page=2');
  assert.equal(r.text, '/fresh #1', 'another query is another response');
  assert.equal(counts.get('/fresh?page=2'), 1);

  // Its Age counts from the upstream's: 40 s old with 100 s to live leaves 60.
  await get('/aged');
  r = await get('/aged');
  assert.equal(r.text, '/aged #1');
  assert.match(String(r.headers.age), /^4[0-3]$/);
  assert.match(String(r.headers['cache-status']), /ttl=(5[7-9]|60)$/);
  await get('/expires');
  assert.equal((await get('/expires')).text, '/expires #1', 'Expires minus Date is a lifetime too');

  // curl, over HTTP/1.1 and HTTP/2.
  if (requireTool(t, 'curl')) {
    const caFile = join(pki.dir, 'ca.pem');
    await writeFile(caFile, pki.caPem);
    for (const args of [['--http1.1'], ['--http2']]) {
      const out = await curl({ host: 'c1.test', port: proxy.httpsPort, caFile, path: '/fresh', args });
      assert.equal(out.code, 0, out.stderr);
      assert.match(out.stdout, /^cache-status: Portico; hit; ttl=\d+\r$/im);
      assert.match(out.stdout, /\/fresh #1$/);
    }
    assert.equal(counts.get('/fresh'), 1);
  }
});

test('cache: what is not stored, and what a request can ask of the cache', async (t) => {
  const pki = await makePki();
  const { up, counts } = await cacheableUpstream();
  const cert = await pki.issue('c2', ['c2.test']);
  const proxy = await startProxyFor(
    t,
    pki,
    {
      hosts: {
        'c2.test': {
          tls: cert,
          cache: true,
          routes: [
            { path: '/', upstream: up.url },
            { path: '/ttl', upstream: up.url, stripPrefix: true, cache: { defaultTtl: '1m' } },
            { path: '/off', upstream: up.url, stripPrefix: true, cache: false },
          ],
        },
      },
    },
    [up.close],
  );
  const get = (path: string, headers: Record<string, string> = {}, method = 'GET') => h1Request({ port: proxy.httpsPort, sni: 'c2.test', path, method, headers, ca: pki.caPem });
  const twice = async (path: string, headers: Record<string, string> = {}) => {
    await get(path, headers);
    return get(path, headers);
  };

  for (const path of ['/no-store', '/private', '/cookie', '/vary-star', '/error', '/plain']) {
    const r = await twice(path);
    assert.equal(r.text, `${path} #2`, `${path} is not stored`);
    assert.equal(r.headers['cache-status'], 'Portico; fwd=uri-miss', `${path}: a miss, not stored`);
  }
  assert.equal((await twice('/ttl/plain')).text, '/plain #3', 'defaultTtl stores a response that says nothing of its freshness');
  assert.equal((await twice('/off/fresh')).text, '/fresh #2', 'cache: false on a route');
  assert.equal((await get('/off/fresh')).headers['cache-status'], undefined);

  // Requests with credentials or ranges go to the upstream, and are not stored.
  await get('/fresh');
  let r = await get('/fresh', { authorization: 'Basic dTpw' });
  assert.equal(r.text, '/fresh #5');
  assert.equal(r.headers['cache-status'], 'Portico; fwd=bypass');
  r = await get('/fresh', { range: 'bytes=0-3' });
  assert.equal(r.text, '/fresh #6');
  assert.equal((await get('/fresh')).text, '/fresh #4', 'what is stored was not replaced by either');
  // no-cache on a request fetches a new copy, which is stored; no-store neither reads nor stores.
  r = await get('/fresh', { 'cache-control': 'no-cache' });
  assert.equal(r.text, '/fresh #7');
  assert.equal(r.headers['cache-status'], 'Portico; fwd=request; stored');
  assert.equal((await get('/fresh')).text, '/fresh #7');
  assert.equal((await get('/fresh', { pragma: 'no-cache' })).text, '/fresh #8');
  assert.equal((await get('/fresh', { 'cache-control': 'no-store' })).text, '/fresh #9');
  assert.equal((await get('/fresh')).text, '/fresh #8');

  // Variants by the request headers Vary names.
  assert.equal((await twice('/lang')).text, '/lang #1 -');
  assert.equal((await twice('/lang', { 'accept-language': 'fr' })).text, '/lang #2 fr');
  assert.equal((await get('/lang', { 'accept-language': 'en' })).text, '/lang #3 en');
  assert.equal((await get('/lang', { 'accept-language': 'fr' })).text, '/lang #2 fr');
  assert.equal((await get('/lang')).text, '/lang #1 -');

  // An unsafe method drops what is stored for its URL (RFC 9111 §4.4).
  assert.equal((await get('/fresh', {}, 'POST')).text, '/fresh #10');
  r = await get('/fresh');
  assert.equal(r.text, '/fresh #11');
  assert.equal(r.headers['cache-status'], 'Portico; fwd=uri-miss; stored');

  // A stale response is fetched again.
  await get('/short');
  assert.equal((await get('/short')).text, '/short #1');
  await new Promise((res) => setTimeout(res, 1100));
  r = await get('/short');
  assert.equal(r.text, '/short #2');
  assert.equal(r.headers['cache-status'], 'Portico; fwd=stale; stored');
  assert.equal(counts.get('/short'), 2);
});

test('cache: a request\'s max-age, min-fresh, max-stale and only-if-cached bound what it is answered from the cache (RFC 9111 §5.2.1)', async (t) => {
  const pki = await makePki();
  const { up, counts } = await cacheableUpstream();
  const cert = await pki.issue('c9', ['c9.test']);
  const proxy = await startProxyFor(t, pki, { hosts: { 'c9.test': { tls: cert, cache: true, routes: [{ path: '/', upstream: up.url }] } } }, [up.close]);
  const get = (path: string, cc?: string) => h1Request({ port: proxy.httpsPort, sni: 'c9.test', path, headers: cc === undefined ? {} : { 'cache-control': cc }, ca: pki.caPem });

  // /aged is 40 s old when it comes (Age: 40) and fresh for 60 s more.
  assert.equal((await get('/aged')).text, '/aged #1');
  let r = await get('/aged', 'max-age=30');
  assert.equal(r.text, '/aged #2', 'older than the request\'s max-age: fetched again');
  assert.equal(r.headers['cache-status'], 'Portico; fwd=request; stored');
  r = await get('/aged', 'max-age=50');
  assert.equal(r.text, '/aged #2', 'young enough for max-age=50');
  assert.match(String(r.headers['cache-status']), /^Portico; hit; ttl=\d+$/);
  assert.equal((await get('/aged', 'min-fresh=70')).text, '/aged #3', 'not fresh for 70 s more');
  assert.equal((await get('/aged', 'min-fresh=30')).text, '/aged #3', 'fresh for 30 s more');
  assert.equal((await get('/aged')).text, '/aged #3');

  // max-stale takes a stale copy, unless the response says must-revalidate.
  await get('/short');
  await get('/strict');
  await new Promise((res) => setTimeout(res, 1100));
  r = await get('/short', 'max-stale');
  assert.equal(r.text, '/short #1');
  assert.match(String(r.headers['cache-status']), /^Portico; hit; ttl=-\d+; detail=max-stale$/);
  assert.equal((await get('/short', 'max-stale=60')).text, '/short #1');
  r = await get('/strict', 'max-stale');
  assert.equal(r.text, '/strict #2', 'must-revalidate: never served stale');
  assert.equal(r.headers['cache-status'], 'Portico; fwd=stale; stored');
  assert.equal((await get('/short', 'max-stale=0')).text, '/short #2', 'max-stale=0 takes nothing stale');

  // only-if-cached: what is stored, or 504 without asking the upstream.
  r = await get('/aged', 'only-if-cached');
  assert.deepEqual([r.status, r.text], [200, '/aged #3']);
  for (const [path, cc] of [['/plain', 'only-if-cached'], ['/aged', 'only-if-cached, no-cache'], ['/aged', 'only-if-cached, max-age=10']] as const) {
    r = await get(path, cc);
    assert.equal(r.status, 504, `${path} ${cc}`);
    assert.equal(r.headers['x-portico-error'], 'PORTICO_NOT_CACHED');
    assert.equal(r.headers['cache-status'], 'Portico; fwd=miss; detail=only-if-cached');
  }
  assert.equal(counts.get('/plain'), undefined, 'only-if-cached never reached the upstream');
  assert.equal(counts.get('/aged'), 3);
});

test('cache: large and chunked bodies byte for byte from HTTP/1.1 and HTTP/2 upstreams, maxObjectSize, and limits.cacheSize', async (t) => {
  const pki = await makePki();
  const { up, counts } = await cacheableUpstream();
  let h2count = 0;
  const h2up = http2.createServer((req, res) => {
    h2count++;
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'cache-control': 'max-age=60' });
    res.end(req.url === '/big' ? BIG : `h2 #${h2count}`);
  });
  h2up.listen(0, '127.0.0.1');
  await once(h2up, 'listening');
  const h2url = `h2c://127.0.0.1:${(h2up.address() as AddressInfo).port}`;
  const cert = await pki.issue('c3', ['c3.test']);
  const proxy = await startProxyFor(
    t,
    pki,
    {
      limits: { cacheSize: '700kb' },
      hosts: {
        'c3.test': {
          tls: cert,
          cache: { maxObjectSize: '400kb' },
          routes: [
            { path: '/', upstream: up.url },
            { path: '/small', upstream: up.url, stripPrefix: true, cache: { maxObjectSize: '100kb' } },
            { path: '/h2', upstream: h2url, stripPrefix: true },
          ],
        },
      },
    },
    [up.close, () => h2up.close()],
  );
  const get = (path: string) => h1Request({ port: proxy.httpsPort, sni: 'c3.test', host: `c3.test:${proxy.httpsPort}`, path, ca: pki.caPem });

  let r = await get('/big');
  assert.ok(r.body.equals(BIG));
  r = await get('/big');
  assert.ok(r.body.equals(BIG), 'a body read into recycled buffers is stored byte for byte');
  assert.match(String(r.headers['cache-status']), /^Portico; hit/);
  r = await get('/chunked');
  r = await get('/chunked');
  assert.equal(r.text, '/chunked #1 and the rest');
  assert.equal(r.headers['content-length'], String(r.body.length), 'a chunked body is stored with its length');
  assert.equal(counts.get('/chunked'), 1);
  r = await get('/h2/big');
  r = await get('/h2/big');
  assert.ok(r.body.equals(BIG), 'from an HTTP/2 upstream too');
  assert.equal(h2count, 1);
  await get('/h2/x');
  const session = await h2Connect(proxy.httpsPort, 'c3.test', pki.caPem);
  t.after(() => session.close());
  assert.equal((await h2Request(session, { path: '/h2/x' })).text, 'h2 #2');

  // Larger than the route's maxObjectSize: forwarded, never stored.
  await get('/small/big');
  r = await get('/small/big');
  assert.ok(r.body.equals(BIG));
  assert.equal(counts.get('/big'), 3, 'the 300 KiB body is over 100kb: asked each time');

  // 700kb holds two 300 KiB bodies, not three: the least recently used goes.
  await get('/big?2'); // the third: '/big' (used before '/h2/big') is dropped
  r = await get('/h2/big');
  assert.equal(h2count, 2, 'still stored');
  assert.match(String(r.headers['cache-status']), /^Portico; hit/);
  assert.ok((await get('/big')).body.equals(BIG));
  assert.equal(counts.get('/big'), 4, 'the least recently used response was dropped');
});

test('cache: config problems name their field', async () => {
  const base = { hosts: { 'a.test': { tls: { cert: 'a.pem', key: 'a.key' }, routes: [{ path: '/', respond: { status: 200, body: 'x' }, cache: true }] } } };
  const r = validateConfig(base);
  assert.equal(r.ok, false);
  assert.ok(!r.ok && r.issues.some((i) => i.path === 'hosts["a.test"].routes[0].cache' && /answers itself/.test(i.message)), JSON.stringify(!r.ok && r.issues));
  const bad = validateConfig({ limits: { cacheSize: 'lots' }, hosts: { 'a.test': { tls: { cert: 'a.pem', key: 'a.key' }, cache: { defaultTtl: 'soon' }, routes: [{ path: '/', upstream: 'http://127.0.0.1:1' }] } } });
  assert.equal(bad.ok, false);
  const paths = !bad.ok ? bad.issues.map((i) => i.path) : [];
  assert.ok(paths.includes('limits.cacheSize'), paths.join());
  assert.ok(paths.includes('hosts["a.test"].cache.defaultTtl') || paths.some((p) => p.startsWith('hosts["a.test"].cache')), paths.join());
});

test('cache: POST /cache/purge drops stored responses in every worker, and /metrics counts hits, misses and what is held', async (t) => {
  const TOKEN = 'c'.repeat(24) + '0123456789abcdef';
  const pki = await makePki();
  await writeFile(join(pki.dir, 'admin.token'), `${TOKEN}\n`);
  const adminPort = await freePort();
  const { up, counts } = await cacheableUpstream();
  t.after(async () => {
    await up.close();
    await pki.cleanup();
  });
  const cert = await pki.issue('c5', ['c5.test', 'other.test']);
  const proxy = await spawnProxy(
    pki,
    {
      workers: 2,
      admin: { port: adminPort, tokenFile: 'admin.token' },
      hosts: { 'c5.test': { tls: cert, cache: true, routes: [{ path: '/', upstream: up.url }] }, 'other.test': { tls: cert, cache: true, routes: [{ path: '/', upstream: up.url }] } },
    },
    { startTimeoutMs: 20_000 },
  );
  t.after(() => proxy.kill());
  const listening = (): number => new Set(proxy.logs.filter((l) => l['msg'] === 'listening').map((l) => l['pid'])).size;
  for (let i = 0; i < 150 && listening() < 2; i++) await new Promise((r) => setTimeout(r, 100));
  const get = (host: string, path: string) => h1Request({ port: proxy.httpsPort, sni: host, path, ca: pki.caPem });
  const admin = (method: string, path: string, body?: unknown) => adminRequest(adminPort, method, path, { token: TOKEN, body });
  const metrics = async () => (await admin('GET', '/metrics')).text;

  // Each request on a new connection: the two workers take turns, and each fills its own cache.
  for (let i = 0; i < 4; i++) {
    assert.equal((await get('c5.test', '/fresh')).status, 200);
    assert.equal((await get('c5.test', '/assets/fresh')).status, 200);
  }
  await get('other.test', '/fresh');
  const stored = counts.get('/fresh')!;
  assert.ok(stored >= 2 && stored <= 3, `each worker asked once for c5.test/fresh (and one for other.test): ${stored}`);
  let page = await metrics();
  assert.equal(metricValue(page, 'portico_cache_requests_total{host="c5.test",route="/",result="hit"}'), 8 - (stored - 1 + counts.get('/assets/fresh')!));
  assert.equal(metricValue(page, 'portico_cache_requests_total{host="c5.test",route="/",result="miss"}'), stored - 1 + counts.get('/assets/fresh')!);
  assert.equal(metricValue(page, 'portico_cache_requests_total{host="other.test",route="/",result="miss"}'), 1);
  assert.equal(metricValue(page, 'portico_cache_stores_total'), stored + counts.get('/assets/fresh')!);
  const entries = metricValue(page, 'portico_cache_entries')!;
  assert.equal(entries, stored + counts.get('/assets/fresh')!);
  assert.ok(metricValue(page, 'portico_cache_bytes')! > 0);

  // Bad bodies, then a path prefix on one host, then a whole host, then everything.
  for (const [body, re] of [
    ['{"host": 5}', /"host" must be a host name/],
    ['{"path": "/x"}', /"path" needs a "host"/],
    ['{"host": "c5.test", "path": "x"}', /path prefix starting with/],
    ['{"hots": "c5.test"}', /unknown key "hots"/],
    ['not json', /not valid JSON/],
    ['[]', /an array, not a JSON object/],
  ] as const) {
    const r = await admin('POST', '/cache/purge', body);
    assert.equal(r.status, 400, body);
    assert.match((JSON.parse(r.text) as { error: string }).error, re);
  }
  let r = await admin('POST', '/cache/purge', { host: 'c5.test', path: '/assets/' });
  assert.equal(r.status, 200, r.text);
  const purged = JSON.parse(r.text) as { purged: number; processes: { pid: number; purged: number }[] };
  assert.equal(purged.processes.length, 2, 'both workers were asked');
  assert.equal(purged.purged, counts.get('/assets/fresh'));
  const before = counts.get('/assets/fresh')!;
  await get('c5.test', '/assets/fresh');
  assert.equal(counts.get('/assets/fresh'), before + 1, 'a purged response is fetched again');
  r = await admin('POST', '/cache/purge', { host: 'c5.test' });
  assert.equal(r.status, 200);
  assert.ok((JSON.parse(r.text) as { purged: number }).purged >= 2);
  page = await metrics();
  assert.equal(metricValue(page, 'portico_cache_entries'), 1, "other.test's response stays");
  r = await admin('POST', '/cache/purge');
  assert.equal((JSON.parse(r.text) as { purged: number }).purged, 1);
  assert.equal(metricValue(await metrics(), 'portico_cache_entries'), 0);
});

test('cache: past its size the store drops a response not used since the hand last passed (second chance), never the one just stored', () => {
  const cache = new ResponseCache();
  cache.setMaxBytes(3000);
  const entry = (url: string): CachedResponse => ({
    base: `r\nh\n${url}`, variant: '', host: 'h', url, status: 200, pairs: [], body: Buffer.alloc(0), storedAt: 0, initialAgeS: 0,
    expiresAt: Number.MAX_SAFE_INTEGER, staleUntil: Number.MAX_SAFE_INTEGER, refreshUntil: 0, mayServeStale: true, etag: undefined, lastModified: undefined, size: 1000, used: false,
  });
  const has = (url: string): boolean => cache.lookup(`r\nh\n${url}`, {}) !== undefined;
  for (const u of ['/a', '/b', '/c']) cache.store(entry(u), []);
  assert.ok(has('/b'), 'b answered a request');
  cache.store(entry('/d'), []);
  assert.deepEqual([cache.lookup('r\nh\n/a', {}), cache.entries], [undefined, 3], 'a, stored first and never used, went');
  cache.store(entry('/e'), []);
  // b was used, so it was spared (and its flag cleared); c was the next one not used.
  assert.equal(cache.lookup('r\nh\n/c', {}), undefined);
  assert.ok(has('/d') && has('/e'));
  assert.equal(cache.counters.evictions, 2);
  // b, spared once, is now the first not used; the one just stored is never the one to go.
  cache.store(entry('/f'), []);
  assert.equal(cache.entries, 3);
  assert.ok(has('/f'));
  assert.equal(cache.bytes, 3000);
});

test('cache: a stale response with an ETag is revalidated upstream, and a 304 makes it fresh again with the 304\'s headers, from HTTP/1.1 and HTTP/2 upstreams', async (t) => {
  const pki = await makePki();
  let version = 1;
  const seen: (string | undefined)[] = [];
  const handler = (req: { url?: string; headers: Record<string, string | string[] | undefined> }, res: { writeHead(s: number, h: Record<string, string>): unknown; end(b?: string): unknown }): void => {
    const inm = req.headers['if-none-match'] as string | undefined;
    seen.push(inm);
    const etag = `"r${version}"`;
    if (inm === etag) {
      res.writeHead(304, { etag, 'cache-control': 'max-age=1', 'x-gen': `checked ${seen.length}` });
      return void res.end();
    }
    res.writeHead(200, { etag, 'cache-control': 'max-age=1', 'content-type': 'text/plain', 'x-gen': `made ${seen.length}` });
    res.end(`version ${version}`);
  };
  const up = await startUpstream((req, res) => {
    req.resume();
    handler(req, res);
  });
  let upstreamConnections = 0;
  up.server.on('connection', () => upstreamConnections++);
  const h2up = http2.createServer((req, res) => handler(req, { writeHead: (st, h) => res.writeHead(st, h), end: (b) => (b === undefined ? res.end() : res.end(b)) }));
  h2up.listen(0, '127.0.0.1');
  await once(h2up, 'listening');
  const cert = await pki.issue('c6', ['c6.test']);
  const proxy = await startProxyFor(
    t,
    pki,
    {
      log: { access: true },
      hosts: {
        'c6.test': {
          tls: cert,
          cache: true,
          routes: [
            { path: '/', upstream: up.url },
            { path: '/h2', upstream: `h2c://127.0.0.1:${(h2up.address() as AddressInfo).port}`, stripPrefix: true },
          ],
        },
      },
    },
    [up.close, () => h2up.close()],
  );
  const get = (path: string, headers: Record<string, string> = {}) => h1Request({ port: proxy.httpsPort, sni: 'c6.test', path, headers, ca: pki.caPem });
  const expire = () => new Promise((res) => setTimeout(res, 1100));

  for (const path of ['/doc', '/h2/doc']) {
    version = 1;
    seen.length = 0;
    let r = await get(path);
    assert.equal(r.text, 'version 1');
    await expire();
    r = await get(path);
    assert.equal(r.status, 200);
    assert.equal(r.text, 'version 1', `${path}: the stored body, confirmed by a 304`);
    assert.deepEqual(seen, [undefined, '"r1"'], `${path}: the revalidation carried the stored ETag`);
    assert.match(String(r.headers['cache-status']), /^Portico; fwd=stale; fwd-status=304; ttl=[0-1]$/);
    assert.equal(r.headers['x-gen'], 'checked 2', `${path}: the 304's headers replace the stored ones`);
    assert.equal(r.headers['content-type'], 'text/plain');
    r = await get(path);
    assert.match(String(r.headers['cache-status']), /^Portico; hit/, `${path}: fresh again`);
    assert.equal(seen.length, 2);
    // The client's own validators: the cache revalidates with its own, then answers the client's.
    await expire();
    r = await get(path, { 'if-none-match': '"r1"' });
    assert.equal(r.status, 304);
    assert.deepEqual(seen.slice(2), ['"r1"']);
    // Changed upstream: the new response replaces the stored one.
    await expire();
    version = 2;
    r = await get(path);
    assert.equal(r.text, 'version 2');
    assert.equal(r.headers['cache-status'], 'Portico; fwd=stale; stored');
    r = await get(path);
    assert.equal(r.text, 'version 2');
    assert.match(String(r.headers['cache-status']), /^Portico; hit/);
  }
  assert.equal(upstreamConnections, 1, 'the HTTP/1.1 upstream connection was kept after each 304');
  await new Promise((res) => setTimeout(res, 400));
  const results = proxy.logs.filter((l) => l['msg'] === 'access' && l['path'] === '/doc').map((l) => l['cache']);
  assert.deepEqual(results, ['miss', 'revalidated', 'hit', 'revalidated', 'stale', 'hit']);
});

test('cache: with staleIfError a stale response is served while the upstream answers 5xx, is down or out; must-revalidate and the response\'s own stale-if-error are honoured', async (t) => {
  const pki = await makePki();
  let failWith = 0;
  const up = await startUpstream((req, res) => {
    req.resume();
    if (failWith !== 0) {
      res.writeHead(failWith, { 'content-type': 'text/plain' });
      return void res.end('upstream trouble');
    }
    const cc = req.url === '/strict' ? 'max-age=1, must-revalidate' : req.url === '/own' ? 'max-age=1, stale-if-error=0' : 'max-age=1';
    res.writeHead(200, { 'cache-control': cc, 'content-type': 'text/plain' });
    res.end(`good ${req.url}`);
  });
  const cert = await pki.issue('c7', ['c7.test']);
  await writeFile(join(pki.dir, '5xx.html'), '<h1>our error page</h1>');
  const proxy = await startProxyFor(
    t,
    pki,
    {
      hosts: {
        'c7.test': {
          tls: cert,
          cache: { staleIfError: '1m' },
          // A stale response wins over the error page that would replace the upstream's 503.
          errorPages: { '5xx': '5xx.html' },
          interceptErrors: true,
          routes: [
            { path: '/', upstream: up.url },
            { path: '/plain', upstream: up.url, cache: true },
          ],
        },
      },
    },
    [up.close],
  );
  const get = (path: string) => h1Request({ port: proxy.httpsPort, sni: 'c7.test', path, ca: pki.caPem });
  for (const p of ['/page', '/strict', '/own', '/plain']) assert.equal((await get(p)).status, 200);
  await new Promise((res) => setTimeout(res, 1100));

  failWith = 503;
  let r = await get('/page');
  assert.equal(r.status, 200);
  assert.equal(r.text, 'good /page', 'the stale response instead of the 503');
  assert.match(String(r.headers['cache-status']), /^Portico; fwd=stale; fwd-status=503; ttl=-\d+$/);
  for (const p of ['/strict', '/own', '/plain']) {
    r = await get(p);
    assert.equal(r.status, 503, `${p}: not served stale`);
    assert.equal(r.text, '<h1>our error page</h1>', `${p}: the error page, as without a cache`);
  }
  failWith = 0;
  await up.close();
  r = await get('/page');
  assert.equal(r.status, 200, 'the upstream down: the stale response');
  assert.equal(r.text, 'good /page');
  assert.match(String(r.headers['cache-status']), /^Portico; fwd=stale; detail=PORTICO_UPSTREAM_UNREACHABLE; ttl=-\d+$/);
  r = await get('/plain');
  assert.equal(r.status, 502, 'a route without staleIfError answers the error');
});

test('cache: concurrent requests for a response being fetched wait for it and take it from the cache (lockTimeout), and go on at once when it is not stored', async (t) => {
  const pki = await makePki();
  const asked = new Map<string, number>();
  const up = await startUpstream((req, res) => {
    req.resume();
    const url = req.url ?? '/';
    asked.set(url, (asked.get(url) ?? 0) + 1);
    const cc = url.startsWith('/private') ? 'no-store' : 'max-age=60';
    // Slow enough that every request below arrives while the first is still being answered.
    setTimeout(() => {
      res.writeHead(200, { 'cache-control': cc, 'content-type': 'text/plain' });
      res.end(`${url} answer ${asked.get(url)}`);
    }, url.startsWith('/slow') ? 1500 : 300);
  });
  const cert = await pki.issue('c8', ['c8.test']);
  const proxy = await startProxyFor(
    t,
    pki,
    {
      hosts: {
        'c8.test': {
          tls: cert,
          cache: true,
          routes: [
            { path: '/', upstream: up.url },
            { path: '/slow', upstream: up.url, cache: { lockTimeout: '200ms' } },
            { path: '/nolock', upstream: up.url, cache: { lockTimeout: '0s' } },
          ],
        },
      },
    },
    [up.close],
  );
  const get = (path: string) => h1Request({ port: proxy.httpsPort, sni: 'c8.test', path, ca: pki.caPem });
  const burst = (path: string, n: number) => Promise.all(Array.from({ length: n }, () => get(path)));

  let rs = await burst('/page', 10);
  assert.equal(asked.get('/page'), 1, 'ten concurrent requests, one upstream request');
  assert.deepEqual(new Set(rs.map((r) => r.text)), new Set(['/page answer 1']));
  assert.equal(rs.filter((r) => r.headers['cache-status'] === 'Portico; fwd=uri-miss; stored').length, 1);
  assert.equal(rs.filter((r) => /^Portico; hit/.test(String(r.headers['cache-status']))).length, 9);

  rs = await burst('/private', 5);
  assert.equal(asked.get('/private'), 5, 'a response that is not stored: the waiters went upstream themselves');
  assert.ok(rs.every((r) => r.status === 200));

  rs = await burst('/slow/x', 3);
  assert.equal(asked.get('/slow/x'), 3, 'past lockTimeout the waiters went upstream on their own');
  rs = await burst('/nolock/y', 3);
  assert.equal(asked.get('/nolock/y'), 3, 'lockTimeout "0s": nobody waits');

  // A waiting client that leaves does not hold up the others or the lock.
  const controller = new AbortController();
  const first = get('/left');
  const leaving = new Promise<void>((resolve) => {
    const req = https.request({ host: '127.0.0.1', port: proxy.httpsPort, path: '/left', servername: 'c8.test', headers: { host: 'c8.test' }, ca: pki.caPem, agent: false, signal: controller.signal });
    req.on('error', () => resolve());
    req.end();
    setTimeout(() => controller.abort(), 100);
  });
  const after = get('/left');
  const [a, , b] = await Promise.all([first, leaving, after]);
  assert.equal(a.text, '/left answer 1');
  assert.equal(b.text, '/left answer 1');
  assert.equal(asked.get('/left'), 1);
});

test('cache: requests waiting on a response without Content-Length go upstream as soon as it grows past maxObjectSize, not after lockTimeout', async (t) => {
  const pki = await makePki();
  const arrivals: number[] = [];
  const t0 = performance.now();
  // A long streamed response (600 bytes every 300 ms for 4.5 s), storable by its headers, too large by its body.
  const up = await startUpstream((req, res) => {
    req.resume();
    arrivals.push(performance.now() - t0);
    res.writeHead(200, { 'cache-control': 'max-age=60', 'content-type': 'text/plain' });
    let n = 0;
    const timer = setInterval(() => {
      res.write('x'.repeat(600));
      if (++n === 15) {
        clearInterval(timer);
        res.end();
      }
    }, 300);
    res.on('close', () => clearInterval(timer));
  });
  const cert = await pki.issue('c11', ['c11.test']);
  const proxy = await startProxyFor(t, pki, { hosts: { 'c11.test': { tls: cert, cache: { maxObjectSize: '1kb', lockTimeout: '5s' }, routes: [{ path: '/', upstream: up.url }] } } }, [up.close]);
  const get = () => h1Request({ port: proxy.httpsPort, sni: 'c11.test', path: '/stream', ca: pki.caPem });
  const holder = get();
  await new Promise((r) => setTimeout(r, 150));
  const waiter = get();
  const [a, b] = await Promise.all([holder, waiter]);
  assert.equal(a.body.length, 9000);
  assert.equal(b.body.length, 9000);
  assert.equal(arrivals.length, 2, 'the response was not stored: the waiter asked the upstream itself');
  const waited = (arrivals[1] as number) - (arrivals[0] as number);
  // Past 1 KiB after the second chunk (about 600 ms in); the holder's response ends at 4.5 s, lockTimeout is 5 s.
  assert.ok(waited < 2000, `the waiter went upstream ${Math.round(waited)} ms after the first request, once the body was over maxObjectSize`);
});

test('cache: a POST drops what is stored for its URL again when it is answered, so a GET stored while the upstream acted on it is not served after', async (t) => {
  const pki = await makePki();
  let version = 1;
  // The document changes when the POST's answer goes out, 400 ms after it arrived.
  const up = await startUpstream((req, res) => {
    req.resume();
    if (req.method === 'POST') {
      return void setTimeout(() => {
        version++;
        res.writeHead(204);
        res.end();
      }, 400);
    }
    res.writeHead(200, { 'cache-control': 'max-age=600', 'content-type': 'text/plain' });
    res.end(`version ${version}`);
  });
  const cert = await pki.issue('c12', ['c12.test']);
  const proxy = await startProxyFor(t, pki, { hosts: { 'c12.test': { tls: cert, cache: true, routes: [{ path: '/', upstream: up.url }] } } }, [up.close]);
  const request = (method = 'GET') => h1Request({ port: proxy.httpsPort, sni: 'c12.test', path: '/doc', method, ca: pki.caPem });
  assert.equal((await request()).text, 'version 1');
  assert.match(String((await request()).headers['cache-status']), /^Portico; hit/);
  const post = request('POST');
  await new Promise((r) => setTimeout(r, 150));
  // Another client's GET while the upstream is still acting on the POST: it gets (and stores) the old state.
  const during = await request();
  assert.equal(during.text, 'version 1');
  assert.equal(during.headers['cache-status'], 'Portico; fwd=uri-miss; stored', 'the POST dropped the stored response as it came in');
  assert.equal((await post).status, 204);
  const after = await request();
  assert.equal(after.text, 'version 2', 'after the POST was answered, the response stored while it ran is gone');
  assert.equal(after.headers['cache-status'], 'Portico; fwd=uri-miss; stored');
});

test('cache: the scheme is part of the key, so an http-to-https redirect stored for plain HTTP is never served over HTTPS', async (t) => {
  const pki = await makePki();
  const up = await startUpstream((req, res) => {
    req.resume();
    if (req.headers['x-forwarded-proto'] === 'http') {
      res.writeHead(301, { location: `https://c9.test${req.url ?? '/'}`, 'cache-control': 'max-age=600' });
      return void res.end();
    }
    res.writeHead(200, { 'cache-control': 'max-age=600', 'content-type': 'text/plain' });
    res.end('secure page');
  });
  const cert = await pki.issue('c9', ['c9.test']);
  const proxy = await startProxyFor(t, pki, { hosts: { 'c9.test': { tls: cert, plainHttp: 'serve', cache: true, routes: [{ path: '/', upstream: up.url }] } } }, [up.close]);
  const plain = (): Promise<{ status: number; cacheStatus: string | undefined }> =>
    new Promise((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: proxy.httpPort, path: '/page', headers: { host: 'c9.test' }, agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0, cacheStatus: res.headers['cache-status'] as string | undefined }));
      });
      req.on('error', reject);
      req.end();
    });
  assert.equal((await plain()).status, 301);
  assert.match(String((await plain()).cacheStatus), /^Portico; hit/, 'the redirect is stored for plain HTTP');
  const r = await h1Request({ port: proxy.httpsPort, sni: 'c9.test', path: '/page', ca: pki.caPem });
  assert.equal(r.status, 200);
  assert.equal(r.text, 'secure page');
  assert.equal(r.headers['cache-status'], 'Portico; fwd=uri-miss; stored');
});

test('cache: a Host with another port, or a trusted proxy\'s X-Forwarded-Host, is part of the key, so an answer built from it is never served to other clients (cache poisoning)', async (t) => {
  const pki = await makePki();
  // An app that builds an absolute link from the host it was asked for, as many do for redirects and canonical links.
  const up = await startUpstream((req, res) => {
    req.resume();
    res.writeHead(200, { 'cache-control': 'max-age=600', 'content-type': 'text/html' });
    res.end(`<script src="https://${String(req.headers['x-forwarded-host'])}/app.js"></script>`);
  });
  const cert = await pki.issue('c10', ['c10.test']);
  // The test's client is a trusted proxy: its X-Forwarded-Host reaches the upstream as it came.
  const proxy = await startProxyFor(t, pki, { forwarding: { trustedProxies: ['127.0.0.1'] }, hosts: { 'c10.test': { tls: cert, cache: true, routes: [{ path: '/', upstream: up.url }] } } }, [up.close]);
  const get = (headers: Record<string, string> = {}, host?: string) => h1Request({ port: proxy.httpsPort, sni: 'c10.test', host, path: '/page', headers, ca: pki.caPem });
  const poisoned = await get({}, 'c10.test:6666');
  assert.equal(poisoned.status, 200);
  assert.equal(poisoned.text, '<script src="https://c10.test:6666/app.js"></script>', 'the upstream builds the link from the Host with its port');
  let r = await get();
  assert.equal(r.text, '<script src="https://c10.test/app.js"></script>', 'a client sending the plain Host never gets the answer built for another port');
  assert.equal(r.headers['cache-status'], 'Portico; fwd=uri-miss; stored');
  r = await get({}, 'c10.test:6666');
  assert.match(String(r.headers['cache-status']), /^Portico; hit/, 'the same Host is still answered from the cache');
  assert.equal(r.text, poisoned.text);
  const forged = await get({ 'x-forwarded-host': 'attacker.test' });
  assert.equal(forged.text, '<script src="https://attacker.test/app.js"></script>');
  assert.equal(forged.headers['cache-status'], 'Portico; fwd=uri-miss; stored', 'an X-Forwarded-Host that reaches the upstream is in the key');
  r = await get();
  assert.equal(r.text, '<script src="https://c10.test/app.js"></script>', 'the response to the forged X-Forwarded-Host stays with it');
  assert.match(String(r.headers['cache-status']), /^Portico; hit/);
  // Over HTTP/2 the :authority is the Host.
  const session = await h2Connect(proxy.httpsPort, 'c10.test', pki.caPem);
  t.after(() => session.close());
  const h2 = await h2Request(session, { path: '/page', authority: 'c10.test:7777' });
  assert.equal(h2.text, '<script src="https://c10.test:7777/app.js"></script>');
  assert.equal((await get()).text, '<script src="https://c10.test/app.js"></script>');
});

for (const protocol of ['HTTP/1.1', 'HTTP/2 (h2c)'] as const) {
test(`cache: with staleWhileRevalidate a stale response is sent at once while one background request fetches a new copy, from an ${protocol} upstream`, async (t) => {
  const pki = await makePki();
  let version = 1;
  let requests = 0;
  const seen: (string | undefined)[] = [];
  const answer = (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse): void => {
    req.resume();
    requests++;
    seen.push(req.headers['if-none-match'] as string | undefined);
    const etag = `"v${version}"`;
    const cc = req.url === '/strict' ? 'max-age=1, must-revalidate' : 'max-age=1';
    // Slow (1 s), so that a client that waited for it would show, even on a loaded machine.
    setTimeout(() => {
      if (req.headers['if-none-match'] === etag) {
        res.writeHead(304, { etag, 'cache-control': cc, 'x-checked': String(requests) });
        return void res.end();
      }
      res.writeHead(200, { etag, 'cache-control': cc, 'content-type': 'text/plain' });
      res.end(`${req.url} v${version}`);
    }, 1000);
  };
  const up = protocol === 'HTTP/1.1' ? await startUpstream(answer) : await listenH2(http2.createServer(answer), 'h2c');
  // A host of its own per protocol: the store is the test process's, shared by both runs.
  const host = protocol === 'HTTP/1.1' ? 'c10.test' : 'c10-h2.test';
  const cert = await pki.issue('c10', [host]);
  const proxy = await startProxyFor(t, pki, { hosts: { [host]: { tls: cert, cache: { staleWhileRevalidate: '1m' }, routes: [{ path: '/', upstream: up.url }] } } }, [up.close]);
  const get = (path: string) => h1Request({ port: proxy.httpsPort, sni: host, path, ca: pki.caPem });
  const timed = async (path: string) => {
    const t0 = performance.now();
    const r = await get(path);
    return { r, ms: performance.now() - t0 };
  };

  await get('/page');
  await new Promise((res) => setTimeout(res, 1100));
  version = 2;
  // Three requests while stale: each answered at once with the stored copy; one background request upstream.
  const answers = await Promise.all([timed('/page'), timed('/page'), timed('/page')]);
  for (const { r, ms } of answers) {
    assert.equal(r.text, '/page v1');
    assert.match(String(r.headers['cache-status']), /^Portico; hit; ttl=-\d+; detail=stale-while-revalidate$/);
    assert.ok(ms < 800, `answered without waiting for the upstream (${Math.round(ms)} ms)`);
  }
  await new Promise((res) => setTimeout(res, 1300));
  assert.equal(requests, 2, 'one background request for the three');
  assert.equal(seen[1], '"v1"', 'it revalidates with the stored ETag');
  const r = await get('/page');
  assert.equal(r.text, '/page v2', 'the new copy, fetched in the background');
  assert.match(String(r.headers['cache-status']), /^Portico; hit; ttl=\d+$/);
  assert.equal(requests, 2);

  // A 304 in the background makes the stored copy fresh again; must-revalidate forbids serving stale.
  await new Promise((res) => setTimeout(res, 1100));
  await get('/page');
  await new Promise((res) => setTimeout(res, 1300));
  const again = await get('/page');
  assert.match(String(again.headers['cache-status']), /^Portico; hit; ttl=\d+$/, 'fresh after the background 304');
  assert.equal(again.headers['x-checked'], '3');
  await get('/strict');
  await new Promise((res) => setTimeout(res, 1100));
  const strict = await timed('/strict');
  assert.ok(strict.ms >= 950, 'must-revalidate: the client waits for the revalidation');
  assert.match(String(strict.r.headers['cache-status']), /^Portico; fwd=stale; fwd-status=304/);
});
}

test('cache: a cache whose largest response would not fit in limits.cacheSize is a config problem at its path', async (t) => {
  const pki = await makePki();
  t.after(() => pki.cleanup());
  const cert = await pki.issue('c11', ['c11.test']);
  const file = join(pki.dir, 'portico.json');
  await writeFile(
    file,
    JSON.stringify({
      certsDir: pki.dir,
      limits: { cacheSize: '512kb' },
      hosts: {
        'c11.test': {
          tls: cert,
          cache: true,
          routes: [
            { path: '/', upstream: 'http://127.0.0.1:1' },
            { path: '/big', upstream: 'http://127.0.0.1:1', cache: { maxObjectSize: '2mb' } },
            { path: '/fits', upstream: 'http://127.0.0.1:1', cache: { maxObjectSize: '256kb' } },
          ],
        },
      },
    }),
  );
  const issues = (await checkConfigFile(file)).issues.map((i) => `${i.path}: ${i.message}`);
  assert.equal(issues.length, 2, issues.join('\n'));
  assert.match(issues[0]!, /^hosts\["c11\.test"\]\.cache: responses up to 1048576 bytes would be stored, but limits\.cacheSize holds 524288 bytes in all; raise limits\.cacheSize or lower "maxObjectSize"$/);
  assert.match(issues[1]!, /^hosts\["c11\.test"\]\.routes\[1\]\.cache\.maxObjectSize: responses up to 2097152 bytes/);
});

test('cache: headers an upstream named in Connection are not stored, so a hit never passes them on (RFC 9110 §7.6.1), over HTTP/1.1 and HTTP/2', async (t) => {
  const pki = await makePki();
  const up = await startUpstream((req, res) => {
    req.resume();
    res.writeHead(200, ['content-type', 'text/plain', 'cache-control', 'max-age=60', 'connection', 'keep-alive, X-Internal', 'x-internal', 'secret', 'x-public', 'yes']);
    res.end('hop');
  });
  const cert = await pki.issue('ch', ['ch.test']);
  const proxy = await startProxyFor(t, pki, { hosts: { 'ch.test': { tls: cert, cache: true, routes: [{ path: '/', upstream: up.url }] } } }, [up.close]);
  const session = await h2Connect(proxy.httpsPort, 'ch.test', pki.caPem);
  t.after(() => session.close());
  for (const path of ['/a', '/b']) {
    // Stored from an HTTP/1.1 client's request, then from an HTTP/2 client's.
    const first = path === '/a' ? await h1Request({ port: proxy.httpsPort, sni: 'ch.test', host: `ch.test:${proxy.httpsPort}`, path, ca: pki.caPem }) : await h2Request(session, { path });
    assert.equal(first.headers['x-internal'], undefined, 'the upstream\'s own answer drops it');
    const hits = [await h1Request({ port: proxy.httpsPort, sni: 'ch.test', host: `ch.test:${proxy.httpsPort}`, path, ca: pki.caPem }), await h2Request(session, { path })];
    for (const hit of hits) {
      assert.match(String(hit.headers['cache-status']), /hit/);
      assert.equal(hit.headers['x-internal'], undefined, `${path}: a hit does not carry a header the upstream made hop-by-hop`);
      assert.equal(hit.headers['x-public'], 'yes');
    }
  }
});

test('cache: a response that varies on a header forwardAuth sets (Vary: Remote-User) is kept per user, as its upstream saw the request, never sent to another user; curl over HTTP/1.1 and HTTP/2', async (t) => {
  if (!requireTool(t, 'curl')) return;
  const pki = await makePki();
  // An authentication service as Authelia: the session cookie names the user.
  const auth = http.createServer((req, res) => {
    const user = /(?:^|;\s*)session=(\w+)/.exec(req.headers.cookie ?? '')?.[1];
    res.writeHead(user === undefined ? 401 : 200, user === undefined ? {} : { 'remote-user': user });
    res.end();
  });
  auth.listen(0, '127.0.0.1');
  await once(auth, 'listening');
  // An app that personalises its page and says so the HTTP way: Vary on the header that names the user.
  const up = await startUpstream((req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=600', vary: 'Remote-User' });
    res.end(`inbox of ${String(req.headers['remote-user'])}`);
  });
  const cert = await pki.issue('c11', ['c11.test']);
  const proxy = await startProxyFor(
    t,
    pki,
    { hosts: { 'c11.test': { tls: cert, cache: true, forwardAuth: { url: `http://127.0.0.1:${(auth.address() as AddressInfo).port}/`, responseHeaders: ['Remote-User'] }, routes: [{ path: '/', upstream: up.url }] } } },
    [up.close, () => new Promise<void>((r) => auth.close(() => r()))],
  );
  const caFile = join(pki.dir, 'ca.pem');
  await writeFile(caFile, pki.caPem);
  const get = async (user: string, http2: boolean, extra: string[] = []) => {
    const out = await curl({ host: 'c11.test', port: proxy.httpsPort, caFile, path: '/inbox', args: [http2 ? '--http2' : '--http1.1', '-b', `session=${user}`, ...extra] });
    const cacheStatus = /^cache-status: (.*)\r$/im.exec(out.stdout)?.[1];
    return { body: out.stdout.slice(out.stdout.indexOf('\r\n\r\n') + 4), cacheStatus };
  };
  for (const h2 of [false, true]) {
    const path = h2 ? 'HTTP/2' : 'HTTP/1.1';
    const alice = await get(h2 ? 'alice2' : 'alice', h2);
    assert.equal(alice.body, `inbox of ${h2 ? 'alice2' : 'alice'}`, path);
    assert.equal(alice.cacheStatus, 'Portico; fwd=uri-miss; stored', path);
    const bob = await get(h2 ? 'bob2' : 'bob', h2);
    assert.equal(bob.body, `inbox of ${h2 ? 'bob2' : 'bob'}`, `${path}: another user never gets the page stored for the first`);
    assert.equal(bob.cacheStatus, 'Portico; fwd=uri-miss; stored', path);
    // A client's own Remote-User is not the one the upstream gets, so it picks no stored page either.
    const forged = await get(h2 ? 'bob2' : 'bob', h2, ['-H', `Remote-User: ${h2 ? 'alice2' : 'alice'}`]);
    assert.equal(forged.body, `inbox of ${h2 ? 'bob2' : 'bob'}`, path);
    assert.match(String(forged.cacheStatus), /^Portico; hit/, `${path}: each user's page is still served from the cache`);
  }
  assert.equal(up.seen.length, 4);
});

test('cache: Portico\'s Cache-Status member comes after an upstream cache\'s (RFC 9211 §2), never in its place, from HTTP/1.1 and HTTP/2 upstreams; curl over HTTP/1.1 and HTTP/2', async (t) => {
  if (!requireTool(t, 'curl')) return;
  const pki = await makePki();
  const headers = { 'content-type': 'text/plain', 'cache-control': 'max-age=600', 'cache-status': 'OriginCache; hit; ttl=30' };
  const up = await startUpstream((req, res) => {
    req.resume();
    res.writeHead(200, headers);
    res.end('from h1');
  });
  const h2up = await listenH2(
    http2.createServer((req, res) => {
      res.writeHead(200, headers);
      res.end('from h2');
    }),
    'h2c',
  );
  const cert = await pki.issue('c12', ['c12.test']);
  const proxy = await startProxyFor(t, pki, { hosts: { 'c12.test': { tls: cert, cache: true, routes: [{ path: '/', upstream: up.url }, { path: '/h2', upstream: h2up.url }] } } }, [up.close, h2up.close]);
  const caFile = join(pki.dir, 'ca.pem');
  await writeFile(caFile, pki.caPem);
  for (const version of ['--http1.1', '--http2']) {
    for (const prefix of ['', '/h2']) {
      const path = `${prefix}/page${version}`;
      const statuses = async (): Promise<string> => {
        const out = await curl({ host: 'c12.test', port: proxy.httpsPort, caFile, path, args: [version] });
        // An HTTP/1.1 client may get the members on lines of their own: one list all the same.
        return [...out.stdout.matchAll(/^cache-status: (.*)\r$/gim)].map((m) => m[1]).join(', ');
      };
      assert.equal(await statuses(), 'OriginCache; hit; ttl=30, Portico; fwd=uri-miss; stored', `${version} ${prefix}: a miss`);
      assert.match(await statuses(), /^OriginCache; hit; ttl=30, Portico; hit; ttl=\d+$/, `${version} ${prefix}: a hit`);
    }
  }
});
