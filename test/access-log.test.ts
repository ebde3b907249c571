/**
 * The access log (README, "Logs"): one JSON line per request with host, route, upstream, status and
 * duration. Portico writes it with its own template (src/log/access-line.ts); the line must be the
 * one pino itself would write for the same fields, so log shippers see no difference.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import WebSocket, { WebSocketServer } from 'ws';
import { once } from 'node:events';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import tls from 'node:tls';
import { AccessLog, hundredthsText, type AccessFields } from '../src/log/access-line.js';
import { makePki, startProxyFor } from './helpers/proxy.js';
import { h1Request, h2Connect, h2Request, startUpstream } from './helpers/net.js';

const BASE: AccessFields = {
  client: '127.0.0.1',
  host: 'site.test',
  sni: 'site.test',
  method: 'GET',
  path: '/a?b=1',
  route: 'site.test /',
  upstream: 'http://127.0.0.1:8080',
  status: 200,
  bytes: 100,
  durationMs: 1.25,
  proto: 'http/1.1',
  aborted: false,
  error: undefined,
  detail: undefined,
};

/** What pino writes for the same fields through `log.info(fields, 'access')` (it leaves undefined values out). */
function pinoFields(f: AccessFields): Record<string, unknown> {
  const { headerNames, requestHeaders, ...rest } = f;
  // The peer only when it differs from the client; the named request headers the request has, last.
  const out: Record<string, unknown> = { ...rest, peer: f.peer === f.client ? undefined : f.peer, aborted: f.aborted ? true : undefined };
  const headers: Record<string, string> = {};
  for (const name of headerNames ?? []) {
    const v = requestHeaders?.[name];
    if (v !== undefined) headers[name] = Array.isArray(v) ? v.join(', ') : v;
  }
  if (Object.keys(headers).length > 0) out.headers = headers;
  return out;
}

test('an access line is the line pino writes for the same fields: escaping, fields left out, bindings', () => {
  const cases: AccessFields[] = [
    BASE,
    { ...BASE, proto: 'h2', durationMs: 0, bytes: 0 },
    { ...BASE, path: '/q"uote\\back\u0001ctl\u007f/é/€/😀', host: 'xn--bcher-kva.test', detail: 'line\nbreak' },
    { ...BASE, path: `/${'long'.repeat(200)}` },
    { ...BASE, host: undefined, sni: undefined, route: undefined, upstream: undefined, path: undefined, status: 0, aborted: true, error: 'PORTICO_NO_ROUTE', detail: 'no route for /x' },
    { ...BASE, bytes: undefined, upgrade: 'websocket', status: 101, durationMs: 12 },
    // A closed tunnel: "bytesIn" right after "bytes", as the proxy passes it.
    Object.fromEntries(Object.entries({ ...BASE, bytes: 300_010, upgrade: 'websocket', status: 101, durationMs: 61_000 }).flatMap(([k, v]) => (k === 'bytes' ? [[k, v], ['bytesIn', 123_461]] : [[k, v]]))) as unknown as AccessFields,
    // In the order the proxy passes them (pino writes keys in object order).
    (({ client: _c, ...rest }) => ({ client: '::ffff:127.0.0.1', user: 'al"ice', ...rest }))(BASE),
    (({ client: _c, ...rest }) => ({ client: '::1', peer: '127.0.0.1', ...rest }))(BASE),
    (({ client: _c, ...rest }) => ({ client: '127.0.0.1', peer: '127.0.0.1', ...rest }))(BASE),
    { ...BASE, headerNames: ['referer', 'user-agent'], requestHeaders: { referer: 'https://site.test/a?b="c"', 'user-agent': 'Mozilla/5.0 (X11; Linux x86_64) \u0007 é' } },
    { ...BASE, error: 'PORTICO_NO_ROUTE', headerNames: ['x-custom', 'x-absent'], requestHeaders: { 'x-custom': '', 'x-other': 'not named' } },
    { ...BASE, headerNames: ['referer'], requestHeaders: {} },
    // A route with a response cache: "cache" after "upstream".
    Object.fromEntries(Object.entries(BASE).flatMap(([k, v]) => (k === 'upstream' ? [[k, undefined], ['cache', 'hit']] : [[k, v]]))) as unknown as AccessFields,
    Object.fromEntries(Object.entries(BASE).flatMap(([k, v]) => (k === 'upstream' ? [[k, v], ['cache', 'stale']] : [[k, v]]))) as unknown as AccessFields,
  ];
  for (const bindings of [{ pid: 42 }, { pid: 42, hostname: 'h', worker: 'a"b' }]) {
    const lines: string[] = [];
    const log = pino({ level: 'info', base: bindings }, { write: (l: string) => void lines.push(l) });
    const access = new AccessLog(log.child({ part: 'proxy' }));
    const child = log.child({ part: 'proxy' });
    for (const f of cases) {
      child.info(pinoFields(f), 'access');
      access.write(f);
    }
    assert.equal(lines.length, cases.length * 2);
    for (let i = 0; i < lines.length; i += 2) {
      const [fromPino, ours] = [lines[i]!, lines[i + 1]!].map((l) => l.replace(/"time":\d+/, '"time":0'));
      assert.equal(ours, fromPino, `case ${i / 2}`);
      const parsed = JSON.parse(lines[i + 1]!) as Record<string, unknown>;
      assert.equal(typeof parsed['time'], 'number');
      assert.ok(Math.abs((parsed['time'] as number) - Date.now()) < 5_000);
    }
  }
});

test('a duration is written as JSON writes it rounded to hundredths of a millisecond', () => {
  const samples: number[] = [0, 0.004, 0.005, 0.994, 0.995, 1, 1.25, 12.05, 12.5, 99.99, 100, 61_000, 2 ** 31 / 100 + 0.37, 1e9 + 0.01, 123_456_789.99];
  for (let c = 0; c < 200_000; c += 7) samples.push(c / 100, c / 100 + 0.003, c / 1000);
  for (const ms of samples) assert.equal(hundredthsText(ms), JSON.stringify(Math.round(ms * 100) / 100), String(ms));
  // Not a duration: written as JSON would, never as a bare NaN.
  assert.equal(hundredthsText(Number.NaN), 'null');
});

test('access lines follow the logger\'s level, also when it changes', () => {
  const lines: string[] = [];
  const log = pino({ level: 'warn' }, { write: (l: string) => void lines.push(l) });
  const access = new AccessLog(log);
  access.write(BASE);
  assert.equal(lines.length, 0, 'nothing at level warn');
  log.level = 'debug';
  access.write(BASE);
  assert.equal(lines.length, 1, 'written once the level lets info through');
});

test('requests over HTTP/1.1 and HTTP/2, a 404 and a WebSocket each leave one access line with their fields', async (t) => {
  const pki = await makePki();
  const up = await startUpstream();
  const wsServer = http.createServer((_req, res) => res.end('not a websocket'));
  const wss = new WebSocketServer({ server: wsServer });
  wss.on('connection', (ws) => ws.send('hello'));
  wsServer.listen(0, '127.0.0.1');
  await once(wsServer, 'listening');
  const wsUrl = `http://127.0.0.1:${(wsServer.address() as AddressInfo).port}`;
  const cert = await pki.issue('site', ['site.test']);
  const proxy = await startProxyFor(t, pki, {
    log: { level: 'info', access: true },
    hosts: { 'site.test': { tls: cert, routes: [{ path: '/app', upstream: up.url }, { path: '/ws', upstream: wsUrl }] } },
  }, [() => up.close(), () => new Promise<void>((r) => {
    for (const c of wss.clients) c.terminate();
    wss.close();
    wsServer.close(() => r());
  })]);
  const r1 = await h1Request({ port: proxy.httpsPort, sni: 'site.test', path: '/app/one?x="1"', ca: pki.caPem, headers: { 'user-agent': 'test-agent/1.0', referer: 'https://site.test/' } });
  assert.equal(r1.status, 200);
  const session = await h2Connect(proxy.httpsPort, 'site.test', pki.caPem);
  const r2 = await h2Request(session, { path: '/app/two' });
  assert.equal(r2.status, 200);
  session.close();
  const r3 = await h1Request({ port: proxy.httpsPort, sni: 'site.test', path: '/nowhere', ca: pki.caPem });
  assert.equal(r3.status, 404);
  const ws = new WebSocket(`wss://127.0.0.1:${proxy.httpsPort}/ws/chat`, { servername: 'site.test', headers: { host: 'site.test' }, ca: pki.caPem } as WebSocket.ClientOptions);
  const [hello] = (await once(ws, 'message')) as [Buffer];
  assert.equal(hello.toString(), 'hello');
  ws.close();
  await once(ws, 'close');

  let access: Record<string, unknown>[] = [];
  for (let i = 0; i < 50 && access.length < 4; i++) {
    await new Promise((r) => setTimeout(r, 20));
    access = proxy.logs.filter((l) => l['msg'] === 'access');
  }
  assert.equal(access.length, 4, JSON.stringify(access));
  const byPath = new Map(access.map((l) => [l['path'], l]));
  const one = byPath.get('/app/one?x="1"')!;
  assert.equal(one['level'], 30);
  assert.equal(one['client'], '127.0.0.1');
  assert.equal(one['host'], 'site.test');
  assert.equal(one['sni'], 'site.test');
  assert.equal(one['method'], 'GET');
  assert.equal(one['route'], 'site.test /app');
  assert.equal(one['upstream'], up.url);
  assert.equal(one['status'], 200);
  assert.equal(one['bytes'], Buffer.byteLength(r1.text));
  assert.equal(one['proto'], 'http/1.1');
  assert.ok(typeof one['durationMs'] === 'number' && one['durationMs'] >= 0);
  assert.equal(one['aborted'], undefined);
  assert.deepEqual(one['headers'], { referer: 'https://site.test/', 'user-agent': 'test-agent/1.0' }, 'Referer and User-Agent by default');
  assert.equal(one['peer'], undefined, 'no peer apart from the client without a trusted proxy');
  const two = byPath.get('/app/two')!;
  assert.equal(two['proto'], 'h2');
  assert.equal(two['status'], 200);
  assert.equal(two['bytes'], Buffer.byteLength(r2.text));
  const missing = byPath.get('/nowhere')!;
  assert.equal(missing['status'], 404);
  assert.equal(missing['error'], 'PORTICO_NO_ROUTE');
  assert.equal(missing['route'], undefined);
  const upgrade = byPath.get('/ws/chat')!;
  assert.equal(upgrade['status'], 101);
  assert.equal(upgrade['upgrade'], 'websocket');
  assert.equal(upgrade['upstream'], wsUrl);
  assert.equal(upgrade['client'], '127.0.0.1');
});

test('behind a trusted proxy the access line\'s client is the one its X-Forwarded-For names, and peer the proxy; log.accessHeaders picks the headers', async (t) => {
  const pki = await makePki();
  const up = await startUpstream();
  const cert = await pki.issue('site', ['site.test']);
  const proxy = await startProxyFor(t, pki, {
    log: { level: 'info', access: true, accessHeaders: ['X-Tenant', 'user-agent'] },
    forwarding: { trustedProxies: ['127.0.0.1'] },
    hosts: { 'site.test': { tls: cert, routes: [{ path: '/', upstream: up.url }] } },
  }, [() => up.close()]);
  const send = (path: string, headers: Record<string, string>): Promise<unknown> => h1Request({ port: proxy.httpsPort, sni: 'site.test', path, ca: pki.caPem, headers });
  await send('/behind', { 'x-forwarded-for': 'unknown, ::1', 'x-tenant': 'acme', referer: 'https://not.logged/' });
  await send('/direct', {});
  let lines: Record<string, unknown>[] = [];
  for (let i = 0; i < 50 && lines.length < 2; i++) {
    await new Promise((r) => setTimeout(r, 20));
    lines = proxy.logs.filter((l) => l['msg'] === 'access');
  }
  const behind = lines.find((l) => l['path'] === '/behind')!;
  assert.equal(behind['client'], '::1', 'the rightmost untrusted X-Forwarded-For entry');
  assert.equal(behind['peer'], '127.0.0.1');
  assert.deepEqual(behind['headers'], { 'x-tenant': 'acme' }, 'only the headers named, and only those sent');
  const direct = lines.find((l) => l['path'] === '/direct')!;
  assert.equal(direct['client'], '127.0.0.1', 'a trusted peer without X-Forwarded-For is the client itself');
  assert.equal(direct['peer'], undefined);
  assert.equal(direct['headers'], undefined);
});

test('a tunnel\'s access line is written when it closes, with its whole duration and the bytes it carried each way', async (t) => {
  const pki = await makePki();
  let upstreamGot = 0;
  // An upgrade upstream that switches protocols with 10 bytes right behind its 101, sends 300,000 more, and counts what it receives.
  const up = net.createServer((s) => {
    s.on('error', () => {});
    s.once('data', () => {
      s.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: x-test\r\nConnection: Upgrade\r\n\r\n${'U'.repeat(10)}`);
      s.write(Buffer.alloc(300_000, 0x41));
      s.on('data', (d: Buffer) => (upstreamGot += d.length));
    });
  });
  up.listen(0, '127.0.0.1');
  await once(up, 'listening');
  const cert = await pki.issue('site', ['site.test']);
  const proxy = await startProxyFor(t, pki, { log: { level: 'info', access: true }, hosts: { 'site.test': { tls: cert, routes: [{ path: '/', upstream: `http://127.0.0.1:${(up.address() as AddressInfo).port}` }] } } }, [() => up.close()]);
  const c = tls.connect({ host: '127.0.0.1', port: proxy.httpsPort, servername: 'site.test', ca: pki.caPem });
  await once(c, 'secureConnect');
  let clientGot = 0;
  c.on('data', (d: Buffer) => (clientGot += d.length));
  // 5 bytes of the new protocol in the same write as the head, then 123,456 more.
  c.write('GET /tunnel HTTP/1.1\r\nHost: site.test\r\nUpgrade: x-test\r\nConnection: Upgrade\r\n\r\nEARLY');
  while (clientGot < 300_010) await new Promise((r) => setTimeout(r, 20));
  c.write(Buffer.alloc(123_456));
  while (upstreamGot < 123_461) await new Promise((r) => setTimeout(r, 20));
  await new Promise((r) => setTimeout(r, 700));
  const lineFor = (): Record<string, unknown> | undefined => proxy.logs.find((l) => l['msg'] === 'access' && l['path'] === '/tunnel');
  // Open tunnels have no line yet: it is written with what it carried once it has closed.
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(lineFor(), undefined, 'no access line while the tunnel is open');
  c.destroy();
  for (let i = 0; i < 100 && lineFor() === undefined; i++) await new Promise((r) => setTimeout(r, 20));
  const line = lineFor();
  assert.ok(line !== undefined, 'an access line once the tunnel closed');
  assert.equal(line['status'], 101);
  assert.equal(line['upgrade'], 'x-test');
  assert.equal(line['bytes'], 300_010, 'bytes sent to the client through the tunnel, the 101 head left out');
  assert.equal(line['bytesIn'], 123_461, 'bytes from the client through the tunnel, those behind its head included');
  assert.ok((line['durationMs'] as number) >= 900, `durationMs ${String(line['durationMs'])}: the tunnel's life, not the wait for the 101`);
});

test('the access line counts the body of a respond answer and of an error answer in bytes, over HTTP/1.1 and HTTP/2, and none for HEAD', async (t) => {
  const pki = await makePki();
  const cert = await pki.issue('site', ['site.test']);
  const proxy = await startProxyFor(t, pki, {
    log: { level: 'info', access: true },
    hosts: { 'site.test': { tls: cert, routes: [
      { path: '/robots.txt', respond: { body: 'User-agent: *\nDisallow:\n' } },
      { path: '/private', respond: { body: 'never' }, allowFrom: ['::1/128'] },
    ] } },
  });
  const robots = await h1Request({ port: proxy.httpsPort, sni: 'site.test', path: '/robots.txt', ca: pki.caPem });
  assert.equal(robots.text, 'User-agent: *\nDisallow:\n');
  const head = await h1Request({ port: proxy.httpsPort, sni: 'site.test', path: '/robots.txt?head', method: 'HEAD', ca: pki.caPem });
  assert.equal(head.status, 200);
  const session = await h2Connect(proxy.httpsPort, 'site.test', pki.caPem);
  const forbidden = await h2Request(session, { path: '/private' });
  assert.equal(forbidden.status, 403);
  session.close();
  const missing = await h1Request({ port: proxy.httpsPort, sni: 'site.test', path: '/nowhere', ca: pki.caPem });
  assert.equal(missing.status, 404);

  let access: Record<string, unknown>[] = [];
  for (let i = 0; i < 50 && access.length < 4; i++) {
    await new Promise((r) => setTimeout(r, 20));
    access = proxy.logs.filter((l) => l['msg'] === 'access');
  }
  const byPath = new Map(access.map((l) => [l['path'], l]));
  assert.equal(byPath.get('/robots.txt')?.['bytes'], Buffer.byteLength(robots.text));
  assert.equal(byPath.get('/robots.txt?head')?.['bytes'], 0);
  assert.equal(byPath.get('/private')?.['bytes'], Buffer.byteLength(forbidden.text));
  assert.ok(forbidden.text.length > 0);
  assert.equal(byPath.get('/nowhere')?.['bytes'], Buffer.byteLength(missing.text));
});
