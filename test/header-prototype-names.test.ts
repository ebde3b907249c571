/**
 * Header names that are also Object.prototype members (`constructor`, `toString`, `valueOf`,
 * `hasOwnProperty`, `__proto__`): HTTP/1.1 header objects in Portico are plain objects, so such a name
 * reads an inherited function (or Object.prototype) where a header is absent. End to end through
 * Portico: they pass between clients and upstreams as node:http passes them, and nothing that reads a
 * header by a name from a client, an upstream or the config (Vary, log.accessHeaders, a route's
 * "match", forwardAuth's header lists, `${NAME}` in the config) takes such a member for a value.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type http from 'node:http';
import { makePki, startProxyFor, type TestPki, type TestProxy } from './helpers/proxy.js';
import { h1Request, h2Connect, h2Request, startRawUpstream, startUpstream, type TestResponse } from './helpers/net.js';
import type { ConfigInput } from '../src/config/schema.js';

const HOST = 'proto.test';
const INHERITED = /function|native code|\[object Object\]/;

/** The request header `name` as node:http gave it to an upstream, or undefined when the request had none of its own. */
function own(h: http.IncomingHttpHeaders, name: string): string | string[] | undefined {
  return Object.hasOwn(h, name) ? h[name] : undefined;
}

/** Every header name and value of a response or request, for a search of inherited-member text. */
function allText(h: http.IncomingHttpHeaders, raw?: readonly string[]): string {
  return JSON.stringify(h) + (raw === undefined ? '' : raw.join('\n'));
}

async function proxyWith(t: TestContext, host: Omit<NonNullable<ConfigInput['hosts']>[string], 'tls'>, config: Omit<ConfigInput, 'listen' | 'hosts'> = {}, also: readonly (() => unknown)[] = []): Promise<{ pki: TestPki; proxy: TestProxy }> {
  const pki = await makePki();
  const tls = await pki.issue('proto', [HOST]);
  const proxy = await startProxyFor(t, pki, { ...config, hosts: { [HOST]: { tls, ...host } as NonNullable<ConfigInput['hosts']>[string] } }, also);
  return { pki, proxy };
}

test('requests: Constructor, toString and two valueOf lines reach the upstream as an HTTP/1.1 or HTTP/2 client sent them', async (t) => {
  const up = await startUpstream();
  const { pki, proxy } = await proxyWith(t, { routes: [{ path: '/', upstream: up.url }] }, {}, [() => up.close()]);
  const h1 = await h1Request({ port: proxy.httpsPort, sni: HOST, path: '/h1', ca: pki.caPem, headers: { Constructor: 'x', toString: 'y', valueOf: ['1', '2'] } });
  assert.equal(h1.status, 200);
  const session = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => session.close());
  const h2 = await h2Request(session, { path: '/h2', headers: { constructor: 'x', tostring: 'y', valueof: ['1', '2'] } });
  assert.equal(h2.status, 200);
  for (const path of ['/h1', '/h2']) {
    const seen = up.seen.find((s) => s.url === path);
    assert.ok(seen !== undefined, `${path}: the upstream saw it`);
    assert.equal(own(seen.headers, 'constructor'), 'x', path);
    assert.equal(own(seen.headers, 'tostring'), 'y', path);
    assert.equal(own(seen.headers, 'valueof'), '1, 2', `${path}: folded as node:http folds them`);
    assert.doesNotMatch(allText(seen.headers, seen.rawHeaders), INHERITED, path);
  }
});

test('responses: an HTTP/1.1 upstream\'s Constructor, hasOwnProperty and two valueOf lines reach HTTP/1.1 and HTTP/2 clients as it sent them', async (t) => {
  const up = await startRawUpstream((_path, socket) => {
    socket.write('HTTP/1.1 200 OK\r\nConstructor: a\r\nhasOwnProperty: b\r\nvalueOf: c\r\nvalueOf: d\r\nContent-Length: 2\r\n\r\nok');
  });
  const { pki, proxy } = await proxyWith(t, { routes: [{ path: '/', upstream: up.url }] }, {}, [() => up.close()]);
  const h1 = await h1Request({ port: proxy.httpsPort, sni: HOST, ca: pki.caPem });
  const session = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => session.close());
  const h2 = await h2Request(session, {});
  for (const [proto, r] of [['h1', h1], ['h2', h2]] as const) {
    assert.equal(r.status, 200, proto);
    assert.equal(r.text, 'ok', proto);
    assert.equal(own(r.headers, 'constructor'), 'a', proto);
    assert.equal(own(r.headers, 'hasownproperty'), 'b', proto);
    assert.equal(own(r.headers, 'valueof'), 'c, d', proto);
    assert.doesNotMatch(allText(r.headers), INHERITED, proto);
  }
});

test('log.accessHeaders naming Constructor, toString or __proto__: logged when the request has them, left out when it has not', async (t) => {
  const up = await startUpstream();
  const { pki, proxy } = await proxyWith(t, { routes: [{ path: '/', upstream: up.url }] }, { log: { level: 'info', access: true, accessHeaders: ['Constructor', 'toString', '__proto__'] } }, [() => up.close()]);
  await h1Request({ port: proxy.httpsPort, sni: HOST, path: '/none', ca: pki.caPem });
  await h1Request({ port: proxy.httpsPort, sni: HOST, path: '/some', ca: pki.caPem, headers: { Constructor: 'x' } });
  const session = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => session.close());
  await h2Request(session, { path: '/h2-none' });
  await h2Request(session, { path: '/h2-some', headers: { tostring: 'y' } });
  let lines: Record<string, unknown>[] = [];
  for (let i = 0; i < 100 && lines.length < 4; i++) {
    await new Promise((r) => setTimeout(r, 20));
    lines = proxy.logs.filter((l) => l['msg'] === 'access');
  }
  const at = (path: string): Record<string, unknown> => {
    const line = lines.find((l) => l['path'] === path);
    assert.ok(line !== undefined, `an access line for ${path}`);
    return line;
  };
  assert.equal(at('/none')['headers'], undefined, 'a request without them has no "headers"');
  assert.deepEqual(at('/some')['headers'], { constructor: 'x' });
  assert.equal(at('/h2-none')['headers'], undefined);
  assert.deepEqual(at('/h2-some')['headers'], { tostring: 'y' });
});

test('cache: "Vary: Constructor" keys on the request\'s own Constructor header or its absence, over HTTP/1.1 and HTTP/2', async (t) => {
  let fetched = 0;
  const up = await startUpstream((req, res) => {
    req.resume();
    fetched++;
    const body = `constructor=${String(own(req.headers, 'constructor') ?? '(none)')} #${fetched}`;
    res.writeHead(200, { 'cache-control': 'max-age=60', vary: 'Constructor', 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
  const { pki, proxy } = await proxyWith(t, { cache: true, routes: [{ path: '/', upstream: up.url }] }, {}, [() => up.close()]);
  const get = (headers: http.OutgoingHttpHeaders = {}): Promise<TestResponse> => h1Request({ port: proxy.httpsPort, sni: HOST, path: '/v', ca: pki.caPem, headers });
  let r = await get();
  assert.equal(r.status, 200, r.text);
  assert.equal(r.text, 'constructor=(none) #1');
  assert.match(String(r.headers['cache-status']), /stored$/);
  r = await get();
  assert.equal(r.text, 'constructor=(none) #1', 'the same variant: no Constructor');
  assert.match(String(r.headers['cache-status']), /^Portico; hit/);
  r = await get({ Constructor: 'x' });
  assert.equal(r.text, 'constructor=x #2', 'another variant: Constructor x');
  r = await get({ Constructor: 'x' });
  assert.equal(r.text, 'constructor=x #2');
  assert.match(String(r.headers['cache-status']), /^Portico; hit/);
  const session = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => session.close());
  // The same Host as the HTTP/1.1 requests' (the cache keys on the Host as sent, port and all).
  assert.equal((await h2Request(session, { authority: HOST, path: '/v' })).text, 'constructor=(none) #1');
  assert.equal((await h2Request(session, { authority: HOST, path: '/v', headers: { constructor: 'x' } })).text, 'constructor=x #2');
  assert.equal((await h2Request(session, { authority: HOST, path: '/v', headers: { constructor: 'z' } })).text, 'constructor=z #3');
  assert.equal(fetched, 3);
});

test('a route\'s "match" on a header named Constructor or toString: only requests that have it match', async (t) => {
  const { pki, proxy } = await proxyWith(t, {
    routes: [
      { path: '/', match: { headers: { Constructor: '*' } }, respond: { body: 'constructor' } },
      { path: '/', match: { headers: { toString: '*x*' } }, respond: { body: 'tostring' } },
      { path: '/', respond: { body: 'other' } },
    ],
  });
  const get = (headers: http.OutgoingHttpHeaders = {}): Promise<TestResponse> => h1Request({ port: proxy.httpsPort, sni: HOST, ca: pki.caPem, headers });
  assert.equal((await get()).text, 'other', 'HTTP/1.1 without either header');
  assert.equal((await get({ Constructor: 'anything' })).text, 'constructor');
  assert.equal((await get({ toString: 'axb' })).text, 'tostring');
  assert.equal((await get({ toString: 'ab' })).text, 'other');
  const session = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => session.close());
  assert.equal((await h2Request(session, {})).text, 'other', 'HTTP/2 without either header');
  assert.equal((await h2Request(session, { headers: { constructor: '1' } })).text, 'constructor');
});

test('forwardAuth with requestHeaders and responseHeaders naming Constructor: sent and copied only when present', async (t) => {
  const auth = await startUpstream((req, res) => {
    req.resume();
    const give = req.headers['x-give'];
    res.writeHead(200, typeof give === 'string' ? { Constructor: give } : {});
    res.end();
  });
  const up = await startUpstream();
  const { pki, proxy } = await proxyWith(
    t,
    { forwardAuth: { url: `${auth.url}/verify`, requestHeaders: ['Constructor', 'toString', 'X-Give'], responseHeaders: ['Constructor'] }, routes: [{ path: '/', upstream: up.url }] },
    {},
    [() => up.close(), () => auth.close()],
  );
  const get = (path: string, headers: http.OutgoingHttpHeaders = {}): Promise<TestResponse> => h1Request({ port: proxy.httpsPort, sni: HOST, path, ca: pki.caPem, headers });

  // Neither the request nor the service's answer has Constructor.
  assert.equal((await get('/none')).status, 200);
  let asked = auth.seen.at(-1)!;
  assert.equal(own(asked.headers, 'constructor'), undefined, 'the service is not sent a Constructor the request does not have');
  assert.equal(own(asked.headers, 'tostring'), undefined);
  assert.doesNotMatch(allText(asked.headers, asked.rawHeaders), INHERITED);
  let seen = up.seen.find((s) => s.url === '/none')!;
  assert.equal(own(seen.headers, 'constructor'), undefined, 'nothing copied from an answer without it');
  assert.doesNotMatch(allText(seen.headers, seen.rawHeaders), INHERITED);

  // The request has them: the service gets them; the upstream gets the service's Constructor, never the client's.
  assert.equal((await get('/some', { Constructor: 'client', toString: 't', 'X-Give': 'service' })).status, 200);
  asked = auth.seen.at(-1)!;
  assert.equal(own(asked.headers, 'constructor'), 'client');
  assert.equal(own(asked.headers, 'tostring'), 't');
  seen = up.seen.find((s) => s.url === '/some')!;
  assert.equal(own(seen.headers, 'constructor'), 'service');

  // The client's Constructor is dropped even when the service sends none.
  assert.equal((await get('/client-only', { Constructor: 'client' })).status, 200);
  seen = up.seen.find((s) => s.url === '/client-only')!;
  assert.equal(own(seen.headers, 'constructor'), undefined);
});

test('${toString} and ${constructor} in the config are variables that are not set, not Object.prototype members', async (t) => {
  const { pki, proxy } = await proxyWith(t, { routes: [{ path: '/', respond: { body: '${toString:-unset}|${constructor:-unset}|${hasOwnProperty:-unset}' } }] });
  const r = await h1Request({ port: proxy.httpsPort, sni: HOST, ca: pki.caPem });
  assert.equal(r.text, 'unset|unset|unset');
});
