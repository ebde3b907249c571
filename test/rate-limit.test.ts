import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { validateConfig } from '../src/config/load.js';
import type { ConfigInput } from '../src/config/schema.js';
import { MAX_TRACKED_ADDRESSES, RateLimiter, RateLimitRegistry, rateLimitKey } from '../src/proxy/rate-limit.js';
import pino from 'pino';
import { Portico } from '../src/server/portico.js';
import { makePki, startProxyFor } from './helpers/proxy.js';
import { freePort, h1Request, h2Connect, h2Request, startUpstream } from './helpers/net.js';
import { adminRequest } from './helpers/admin.js';
import { RawClient, rawUpgradeRequest } from './helpers/raw-http1.js';
import { curl, requireTool } from './helpers/real-peers.js';

test('rateLimit: a burst, then the rate; a host\'s budget shared by its routes; per client behind a trusted proxy; 429 with Retry-After everywhere', async (t) => {
  const pki = await makePki();
  const up = await startUpstream((req, res) => {
    req.resume();
    res.end('ok');
  });
  const cert = await pki.issue('rl', ['rl.test']);
  const proxy = await startProxyFor(
    t,
    pki,
    {
      forwarding: { trustedProxies: ['127.0.0.1'] },
      hosts: {
        'rl.test': {
          tls: cert,
          rateLimit: { requests: 2, per: '2s', burst: 3 },
          routes: [
            { path: '/', upstream: up.url },
            { path: '/b', upstream: up.url },
            { path: '/free', upstream: up.url, rateLimit: false },
            { path: '/own', upstream: up.url, rateLimit: { requests: 1, per: '1m' } },
          ],
        },
      },
    },
    [up.close],
  );
  // Clients behind the trusted proxy 127.0.0.1: the one its X-Forwarded-For names, or the proxy itself when it names none.
  const get = (path: string, client?: string) => h1Request({ port: proxy.httpsPort, sni: 'rl.test', path, headers: client === undefined ? {} : { 'x-forwarded-for': client }, ca: pki.caPem });

  const statuses: number[] = [];
  for (const path of ['/', '/b', '/', '/b']) statuses.push((await get(path, '::1')).status);
  assert.deepEqual(statuses, [200, 200, 200, 429], 'a burst of 3 across the host\'s routes, then 429');
  const limited = await get('/', '::1');
  assert.equal(limited.status, 429);
  assert.equal(limited.headers['retry-after'], '1');
  assert.equal(limited.headers['x-portico-error'], 'PORTICO_RATE_LIMITED');
  assert.equal(up.seen.length, 3, 'limited requests reach no upstream');
  assert.equal((await get('/')).status, 200, 'another client (the peer 127.0.0.1 itself) has its own budget');
  for (let i = 0; i < 5; i++) assert.equal((await get('/free', '::1')).status, 200, 'rateLimit: false');
  assert.equal((await get('/own', '::1')).status, 200, "a route's own limit is not its host's, which ::1 has spent");
  const own = await get('/own', '::1');
  assert.equal(own.status, 429, "a route's own limit");
  assert.equal(own.headers['retry-after'], '60');

  // The bucket refills a token a second, which a loaded machine can spend between two checks: each check below
  // opens its connection first, then spends what refilled, then asks at once. A machine slow enough for a token to
  // come back even so gets a few tries; a protocol the limit missed would pass every one of them.
  const spend = async (): Promise<void> => {
    for (let i = 0; i < 10 && (await get('/', '::1')).status !== 429; i++);
  };
  /** `ask` (which opens its connection, spends, then asks), again up to five times while its answer is not 429. */
  const askSpent = async <R extends { status?: number }>(ask: () => Promise<R>): Promise<R> => {
    let r = await ask();
    for (let attempt = 1; attempt < 5 && r.status !== 429; attempt++) r = await ask();
    return r;
  };
  const h = await askSpent(async () => {
    const s = await h2Connect(proxy.httpsPort, 'rl.test', pki.caPem);
    await spend();
    const r = await h2Request(s, { path: '/', headers: { 'x-forwarded-for': '::1' } });
    s.close();
    return r;
  });
  assert.equal(h.status, 429, 'HTTP/2 requests share the budget');
  assert.equal(h.headers['retry-after'], '1');
  const w = await askSpent(async () => {
    const ws = await RawClient.open(t, { port: proxy.httpsPort, tls: { servername: 'rl.test', ca: pki.caPem } });
    await spend();
    await ws.write(rawUpgradeRequest('rl.test', '/chat', 'X-Forwarded-For: ::1\r\n'));
    const r = await ws.response();
    ws.destroy();
    return r;
  });
  assert.equal(w.status, 429, 'upgrades share the budget');
  assert.equal(w.headers['retry-after'], '1');

  // The rate refills the bucket: 2 per 2 s. Each request also lets a little more refill, so on a loaded machine
  // (requests over a second apart) a third may pass too: at most one more per second spent asking.
  await sleep(2100);
  const refillStart = performance.now();
  let passed = 0;
  while (passed < 10 && (await get('/', '::1')).status === 200) passed++;
  const asking = (performance.now() - refillStart) / 1000;
  assert.ok(passed >= 2 && passed <= 2 + Math.ceil(asking), `${passed} requests passed after 2.1 s at 1 a second (${asking.toFixed(1)} s spent asking)`);
});

test('rateLimit buckets survive a reload that keeps the limit (admin API or a rewritten file); a changed limit starts afresh, and limits left out are dropped', async (t) => {
  const pki = await makePki();
  const up = await startUpstream((req, res) => {
    req.resume();
    res.end('ok');
  });
  const token = 'r'.repeat(40);
  await writeFile(join(pki.dir, 'admin.token'), token);
  const adminPort = await freePort();
  const cert = await pki.issue('rl', ['rl.test']);
  const config = (host: Record<string, unknown>, routes: Record<string, unknown>[]): Omit<ConfigInput, 'listen'> => ({
    admin: { port: adminPort, tokenFile: 'admin.token' },
    forwarding: { trustedProxies: ['127.0.0.1'] },
    hosts: { 'rl.test': { tls: cert, ...host, routes: [{ path: '/', upstream: up.url }, ...routes] } },
  }) as Omit<ConfigInput, 'listen'>;
  const first = config({ rateLimit: { requests: 1, per: '1m', burst: 2 } }, [{ path: '/own', upstream: up.url, rateLimit: { requests: 1, per: '1m' } }]);
  const proxy = await startProxyFor(t, pki, first, [up.close]);
  // The client is ::1 behind the trusted proxy 127.0.0.1; `null`: the proxy itself (no X-Forwarded-For), another client.
  const get = (path: string, client: string | null = '::1') => h1Request({ port: proxy.httpsPort, sni: 'rl.test', path, headers: client === null ? {} : { 'x-forwarded-for': client }, ca: pki.caPem });
  // The buckets were emptied after this moment, so a token comes back at most 60 s later and at least 60 s less
  // the time the test has taken so far (a loaded machine can take several seconds over a reload).
  const started = performance.now();
  const limited = async (path: string, why: string): Promise<void> => {
    const r = await get(path);
    assert.equal(r.status, 429, why);
    assert.equal(r.headers['x-portico-error'], 'PORTICO_RATE_LIMITED');
    const wait = Number(r.headers['retry-after']);
    const since = Math.ceil((performance.now() - started) / 1000);
    assert.ok(wait >= 59 - since && wait <= 60, `Retry-After ${r.headers['retry-after']} ${since} s after the start: the bucket still empties at 1 a minute`);
  };

  assert.deepEqual([(await get('/')).status, (await get('/')).status], [200, 200]);
  await limited('/', 'the host\'s burst of 2 is spent');
  assert.equal((await get('/own')).status, 200);
  await limited('/own', 'the route\'s own burst of 1 is spent');
  assert.equal(proxy.portico.rateLimits.size, 2);

  // Reload through the admin API with the file rewritten (a route and a header rule added): the buckets are kept.
  const second = config({ rateLimit: { requests: 1, per: '1m', burst: 2 }, headers: { response: { set: { 'x-generation': '2' } } } }, [
    { path: '/own', upstream: up.url, rateLimit: { requests: 1, per: '1m' } },
    { path: '/more', upstream: up.url },
  ]);
  await writeFile(proxy.configFile, JSON.stringify({ listen: { https: { port: proxy.httpsPort, addresses: ['127.0.0.1'] } }, certsDir: pki.dir, ...second }));
  const reloaded = await adminRequest(adminPort, 'POST', '/reload', { token });
  assert.equal(reloaded.status, 200, reloaded.text);
  assert.equal((await get('/more', null)).headers['x-generation'], '2', 'the new config serves');
  await limited('/', 'no fresh burst after a reload');
  await limited('/more', 'a new route of the host shares its kept budget');
  await limited('/own', 'a route\'s own bucket is kept too');
  assert.equal(up.seen.filter((r) => String(r.headers['x-forwarded-for'] ?? '').startsWith('::1')).length, 3, 'limited requests reached no upstream');

  // Rewritten file and reload: the host's limit spelled "60s" is the same limit; the route's new burst is a new one.
  await proxy.reconfigure(config({ rateLimit: { requests: 1, per: '60s', burst: 2 } }, [{ path: '/own', upstream: up.url, rateLimit: { requests: 1, per: '1m', burst: 2 } }]));
  await limited('/', '"60s" is "1m": the bucket is kept');
  assert.deepEqual([(await get('/own')).status, (await get('/own')).status], [200, 200], 'a changed limit starts with a full bucket');
  await limited('/own', 'and empties as configured');
  assert.equal(proxy.portico.rateLimits.size, 2, 'the route\'s old limiter was dropped');

  // Limits taken out of the config are forgotten; put back, they start afresh.
  await proxy.reconfigure(config({}, [{ path: '/own', upstream: up.url }]));
  assert.equal(proxy.portico.rateLimits.size, 0);
  assert.equal((await get('/')).status, 200);
  await proxy.reconfigure(first);
  assert.deepEqual([(await get('/')).status, (await get('/')).status], [200, 200]);
  await limited('/', 'a limit put back counts from a full bucket');
});

test('RateLimitRegistry: one limiter per scope and settings, the same after a recompile, dropped when no Plan keeps it', () => {
  const reg = new RateLimitRegistry();
  const host = reg.get('host a.test', { requests: 5, per: '1s' });
  assert.equal(reg.get('host a.test', { requests: 5, per: '1000ms', burst: 5 }), host, 'defaults and units resolved before comparing');
  assert.notEqual(reg.get('host b.test', { requests: 5, per: '1s' }), host, 'another host has its own');
  assert.notEqual(reg.get('host a.test', { requests: 5, per: '1s', burst: 6 }), host, 'another burst is another limiter');
  assert.notEqual(reg.get('host a.test', { requests: 6, per: '1s' }), host);
  assert.notEqual(reg.get('host a.test', { requests: 5, per: '2s' }), host);
  assert.notEqual(reg.get('route a.test /', { requests: 5, per: '1s' }), host, "a route's own limit is not its host's");
  assert.equal(reg.get('host a.test', { requests: 5, per: '1s', ipv6Prefix: 64 }), host, 'ipv6Prefix 64 is the default');
  assert.notEqual(reg.get('host a.test', { requests: 5, per: '1s', ipv6Prefix: 128 }), host, 'another ipv6Prefix is another limiter');
  assert.equal(reg.size, 7);
  reg.retain(new Set([host]));
  assert.equal(reg.size, 1);
  assert.equal(reg.get('host a.test', { requests: 5, per: '1s' }), host);
});

test('RateLimiter forgets clients whose bucket has refilled, so its memory stays bounded', () => {
  const fast = new RateLimiter(1_000_000, 1, 1); // refills at once
  for (let i = 0; i < 20_000; i++) assert.equal(fast.take(`client-${i}`), 0);
  assert.ok(fast.size <= 4096 + 1, `tracks ${fast.size} addresses`);
  const slow = new RateLimiter(1, 60_000, 1);
  for (let i = 0; i < 5000; i++) slow.take(`client-${i}`);
  assert.equal(slow.size, 5000, 'clients still limited are kept');
  assert.equal(slow.take('client-0'), 60);
});

test('RateLimiter tracks at most MAX_TRACKED_ADDRESSES even when every client is still limited (rotating addresses), forgetting those seen first', () => {
  const slow = new RateLimiter(1, 3_600_000, 1); // one request per hour: no bucket refills during the test
  const n = MAX_TRACKED_ADDRESSES * 2.5;
  for (let i = 0; i < n; i++) assert.equal(slow.take(`client-${i}`), 0);
  assert.ok(slow.size <= MAX_TRACKED_ADDRESSES && slow.size >= MAX_TRACKED_ADDRESSES / 2, `tracks ${slow.size} clients`);
  assert.equal(slow.take(`client-${n - 1}`), 3600, 'the latest clients are still limited');
  assert.equal(slow.take('client-0'), 0, 'the first ones were forgotten');
});

test('rateLimit settings are checked with their paths', () => {
  const issues = (rateLimit: unknown): string[] => {
    const r = validateConfig({ hosts: { 'a.test': { tls: { cert: 'c', key: 'k' }, rateLimit, routes: [{ upstream: 'http://127.0.0.1:1' }] } } });
    return r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`);
  };
  assert.deepEqual(issues({ requests: 10 }), []);
  assert.match(issues({ requests: 0 })[0]!, /^hosts\["a\.test"\]\.rateLimit\.requests: Too small/);
  assert.match(issues({ requests: 10, per: 'minute' })[0]!, /rateLimit\.per: expected a duration/);
  assert.match(issues({ requests: 10, burst: 1.5 })[0]!, /rateLimit\.burst/);
  assert.match(issues({ rate: 10 })[0]!, /rateLimit\.requests: required|rateLimit\.rate: unknown key/);
  assert.deepEqual(issues({ requests: 10, ipv6Prefix: 48 }), []);
  assert.match(issues({ requests: 10, ipv6Prefix: 0 })[0]!, /^hosts\["a\.test"\]\.rateLimit\.ipv6Prefix: expected a prefix length from 1 to 128 bits/);
  assert.match(issues({ requests: 10, ipv6Prefix: 129 })[0]!, /^hosts\["a\.test"\]\.rateLimit\.ipv6Prefix: an IPv6 prefix is at most 128 bits/);
  assert.match(issues({ requests: 10, ipv6Prefix: 56.5 })[0]!, /rateLimit\.ipv6Prefix/);
});

test('rateLimitKey: an IPv6 client is its prefix (one /64 by default), an IPv4 one its address, IPv4-mapped IPv6 included', () => {
  // Addresses as strings only: nothing is dialled.
  assert.equal(rateLimitKey('::1', 64), rateLimitKey('::2', 64), 'one /64: one client');
  assert.notEqual(rateLimitKey('::1', 64), rateLimitKey('1::1', 64), 'another /64: another client');
  assert.equal(rateLimitKey('::1', 64), rateLimitKey('0:0:0:0:0:0:0:1', 64), 'however the address is written');
  assert.equal(rateLimitKey('1::1', 15), rateLimitKey('::1', 15), 'a prefix off a byte boundary: the 16th bit is past it');
  assert.notEqual(rateLimitKey('1::1', 16), rateLimitKey('::1', 16));
  assert.notEqual(rateLimitKey('::1', 128), rateLimitKey('::2', 128), '128: each address on its own');
  assert.equal(rateLimitKey('::1', 128), '::1');
  assert.equal(rateLimitKey('127.0.0.1', 64), '127.0.0.1');
  assert.equal(rateLimitKey('::ffff:127.0.0.1', 64), '127.0.0.1', 'IPv4-mapped: the IPv4 client, not ::ffff:0:0/64 with every IPv4 client');
  assert.equal(rateLimitKey('::ffff:7f00:1', 64), '127.0.0.1', 'IPv4-mapped in hexadecimal too');
  assert.equal(rateLimitKey('::ffff:127.0.0.1', 128), '127.0.0.1');
  assert.notEqual(rateLimitKey('::ffff:127.0.0.1', 64), rateLimitKey('::1', 64), '::1 shares ::/64 with the mapped addresses, not their key');
  assert.equal(rateLimitKey('unknown', 64), 'unknown', 'an X-Forwarded-For entry that is no address: as it is');

  const limiter = new RateLimiter(1, 3_600_000, 1); // one request per hour, ipv6Prefix 64
  assert.equal(limiter.take('::1'), 0);
  assert.equal(limiter.take('::2'), 3600, 'another address of the same /64 gets no fresh bucket');
  assert.equal(limiter.take('1::1'), 0);
  assert.equal(limiter.take('127.0.0.1'), 0);
  assert.equal(limiter.take('::ffff:127.0.0.1'), 3600, 'the IPv4 client, mapped or not');
  const each = new RateLimiter(1, 3_600_000, 1, 128);
  assert.equal(each.take('::1'), 0);
  assert.equal(each.take('::2'), 0, '128: every address on its own');
});

test('rateLimit holds for a client over ::1, and counts it as its /64 however a trusted proxy writes its address', async (t) => {
  const pki = await makePki();
  const up = await startUpstream((req, res) => {
    req.resume();
    res.end('ok');
  });
  t.after(() => up.close());
  const cert = await pki.issue('rl6', ['rl6.test']);
  const [port, httpPort] = [await freePort(), await freePort()];
  const configFile = join(pki.dir, 'rl6.json');
  const config: ConfigInput = {
    listen: { https: { port, addresses: ['127.0.0.1', '::1'] }, http: { port: httpPort, addresses: ['127.0.0.1'] } },
    certsDir: pki.dir,
    forwarding: { trustedProxies: ['127.0.0.1'] },
    hosts: { 'rl6.test': { tls: cert, rateLimit: { requests: 1, per: '1h', burst: 2 }, routes: [{ path: '/', upstream: up.url }] } },
  };
  await writeFile(configFile, JSON.stringify(config));
  const portico = new Portico(configFile, pino({ level: 'silent' }));
  await portico.start();
  t.after(() => portico.stop());
  const get = (address: '127.0.0.1' | '::1', xff?: string) =>
    h1Request({ port, address, sni: 'rl6.test', ca: pki.caPem, headers: xff === undefined ? {} : { 'x-forwarded-for': xff } });

  assert.equal((await get('::1')).status, 200);
  assert.equal((await get('::1')).status, 200);
  const limited = await get('::1');
  assert.equal(limited.status, 429, 'the burst of 2 spent over ::1');
  assert.equal(limited.headers['retry-after'], '3600');
  assert.equal((await get('127.0.0.1', '0:0:0:0:0:0:0:1')).status, 429, 'the same client named by the trusted proxy 127.0.0.1 in another spelling: the same /64, the same bucket');
  assert.equal((await get('127.0.0.1')).status, 200, 'the proxy itself, an IPv4 client, has its own');
  assert.equal(up.seen.length, 3, 'limited requests reach no upstream');
});

test('rateLimit behind a trusted proxy that writes the client\'s port in X-Forwarded-For ("203.0.113.7:51234", "[2001:db8::7]:443") counts the client, not each of its connections; allowFrom and the access line see the address; curl over HTTP/1.1 and HTTP/2', async (t) => {
  if (!requireTool(t, 'curl')) return;
  const pki = await makePki();
  const up = await startUpstream((req, res) => {
    req.resume();
    res.end(String(req.headers['x-forwarded-for']));
  });
  const cert = await pki.issue('rlp', ['rlp.test']);
  const proxy = await startProxyFor(
    t,
    pki,
    {
      forwarding: { trustedProxies: ['127.0.0.1'] },
      hosts: {
        'rlp.test': {
          tls: cert,
          rateLimit: { requests: 1, per: '1h', burst: 2 },
          routes: [
            { path: '/', upstream: up.url },
            { path: '/office', upstream: up.url, rateLimit: false, allowFrom: ['203.0.113.0/24', '2001:db8::/32'] },
          ],
        },
      },
    },
    [up.close],
  );
  const caFile = join(pki.dir, 'ca.pem');
  await writeFile(caFile, pki.caPem);
  const status = async (xff: string, version: string, path = '/'): Promise<string> =>
    (await curl({ host: 'rlp.test', port: proxy.httpsPort, caFile, path, args: [version, '-o', '/dev/null', '-w', '%{http_code}', '-H', `X-Forwarded-For: ${xff}`] })).stdout;
  for (const [client, version] of [['203.0.113.7', '--http1.1'], ['[2001:db8::7]', '--http2']] as const) {
    assert.equal(await status(`${client}:50001`, version), '200', version);
    assert.equal(await status(`${client}:50002`, version), '200', version);
    assert.equal(await status(`${client}:50003`, version), '429', `${version}: a new source port is the same client, its burst spent`);
    assert.equal(await status(`${client}:50004`, version, '/office'), '200', `${version}: allowFrom judges the address`);
  }
  const lines = proxy.logs.filter((l) => l['msg'] === 'access');
  assert.deepEqual([...new Set(lines.map((l) => l['client']))], ['203.0.113.7', '2001:db8::7']);
});
