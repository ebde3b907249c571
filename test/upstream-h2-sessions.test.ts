/**
 * HTTP/2 upstream sessions under the events production brings: a graceful GOAWAY with requests in flight and
 * new ones arriving, a small SETTINGS_MAX_CONCURRENT_STREAMS, a session cut with streams open, reloads, idle
 * sessions, and connectTimeout. Real node:http2 servers (h2c and TLS) on 127.0.0.1.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import net, { type AddressInfo, type Socket } from 'node:net';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { listenH2 } from './helpers/h2-upstream.js';
import { makePki, startProxyFor, type TestPki, type TestProxy } from './helpers/proxy.js';
import { h1Request, type TestResponse } from './helpers/net.js';
import type { ConfigInput } from '../src/config/schema.js';
import { Target } from '../src/upstream/target.js';
import { openUpstreamRequest } from '../src/upstream/open-request.js';

type Scheme = 'h2c' | 'https';

/** An HTTP/2 upstream whose streams are answered by `onStream`; it counts the sessions it saw and has open. */
interface H2Upstream {
  url: string;
  server: http2.Http2Server | http2.Http2SecureServer;
  sessionsSeen: number;
  open: Set<http2.ServerHttp2Session>;
  /** Its clients' connections (TCP for h2c, TLS for https), to cut them. */
  sockets: Set<Socket>;
  close(): Promise<void>;
}

async function startH2(pki: TestPki, scheme: Scheme, onStream: (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void, settings: http2.Settings = {}): Promise<H2Upstream> {
  let server: http2.Http2Server | http2.Http2SecureServer;
  if (scheme === 'h2c') server = http2.createServer({ settings });
  else {
    const leaf = await pki.ca.issue(['up.test'], { ips: ['127.0.0.1'] });
    server = http2.createSecureServer({ cert: leaf.chain, key: leaf.key, allowHTTP1: false, settings });
  }
  const up = { server, sessionsSeen: 0, open: new Set<http2.ServerHttp2Session>(), sockets: new Set<Socket>() } as H2Upstream;
  server.on(scheme === 'h2c' ? 'connection' : 'secureConnection', (socket: Socket) => {
    up.sockets.add(socket);
    socket.once('close', () => up.sockets.delete(socket));
  });
  server.on('session', (s: http2.ServerHttp2Session) => {
    up.sessionsSeen++;
    up.open.add(s);
    s.once('close', () => up.open.delete(s));
  });
  server.on('stream', (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => {
    // Streams Portico resets or that a GOAWAY refused end with an error here; that is the point of some tests.
    stream.on('error', () => {});
    onStream(stream, headers);
  });
  const l = await listenH2(server, scheme);
  up.url = l.url;
  up.close = l.close;
  return up;
}

function answer(stream: http2.ServerHttp2Stream, body: string): void {
  if (stream.destroyed) return;
  stream.respond({ ':status': 200 });
  stream.end(body);
}

/** Portico with one host, `h2.test`, whose `/` goes to `upstream` (protocol "h2" with the test CA for https). */
async function proxyTo(t: TestContext, pki: TestPki, url: string, extra: Record<string, unknown> = {}, also: (() => unknown)[] = []): Promise<TestProxy> {
  await writeFile(join(pki.dir, 'upstream-ca.pem'), pki.caPem);
  const cert = await pki.issue('h2', ['h2.test']);
  return startProxyFor(t, pki, configFor(cert, url, extra), also);
}

function configFor(cert: { cert: string; key: string }, url: string, extra: Record<string, unknown> = {}): Omit<ConfigInput, 'listen'> {
  const upstream = url.startsWith('https:') ? { targets: [url], protocol: 'h2', tls: { ca: 'upstream-ca.pem', servername: 'up.test' }, ...extra } : { targets: [url], ...extra };
  return { hosts: { 'h2.test': { tls: cert, routes: [{ path: '/', upstream }] } } } as Omit<ConfigInput, 'listen'>;
}

function get(proxy: TestProxy, pki: TestPki, path: string): Promise<TestResponse> {
  return h1Request({ port: proxy.httpsPort, sni: 'h2.test', path, ca: pki.caPem });
}

const delay = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitFor(what: string, pred: () => boolean, timeoutMs = 4000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`not ${what} within ${timeoutMs} ms`);
    await delay(20);
  }
}

for (const scheme of ['h2c', 'https'] as const) {
  test(`${scheme}: a graceful GOAWAY lets the requests below its last stream finish, refuses those above once, and new requests go on a new session`, async (t) => {
    const pki = await makePki();
    const held: http2.ServerHttp2Stream[] = [];
    const up = await startH2(pki, scheme, (stream, headers) => {
      const path = headers[':path'] as string;
      if (path.startsWith('/hold') && stream.session !== undefined && stream.session === [...up.open][0] && up.sessionsSeen === 1) {
        held.push(stream);
        // The first request is the one that stays below the last stream id; the others are refused.
        if (held.length === 3) {
          const first = held[0]!;
          first.session!.goaway(http2.constants.NGHTTP2_NO_ERROR, first.id!);
          setTimeout(() => answer(first, 'first'), 300);
        }
        return;
      }
      answer(stream, `ok ${path}`);
    });
    const proxy = await proxyTo(t, pki, up.url, {}, [() => up.close()]);
    const warm = await get(proxy, pki, '/warm');
    assert.equal(warm.status, 200);
    const inFlight = [get(proxy, pki, '/hold1'), get(proxy, pki, '/hold2'), get(proxy, pki, '/hold3')];
    await waitFor('the GOAWAY sent', () => held.length === 3);
    await delay(50);
    // New requests while the first is still in flight on the closing session.
    const fresh = await Promise.all([get(proxy, pki, '/new1'), get(proxy, pki, '/new2')]);
    const done = await Promise.all(inFlight);
    if (process.env.DEBUG_LOGS) console.log(proxy.logs.filter((l) => (l.level as number) >= 40));
    assert.deepEqual(done.map((r) => [r.status, r.text]), [[200, 'first'], [200, 'ok /hold2'], [200, 'ok /hold3']]);
    assert.deepEqual(fresh.map((r) => [r.status, r.text]), [[200, 'ok /new1'], [200, 'ok /new2']]);
  });

  test(`${scheme}: more requests at once than the upstream's SETTINGS_MAX_CONCURRENT_STREAMS all get their answers`, async (t) => {
    const pki = await makePki();
    let open = 0;
    let most = 0;
    const up = await startH2(
      pki,
      scheme,
      (stream, headers) => {
        open++;
        most = Math.max(most, open);
        stream.once('close', () => open--);
        setTimeout(() => answer(stream, `ok ${headers[':path'] as string}`), 100);
      },
      { maxConcurrentStreams: 1 },
    );
    const proxy = await proxyTo(t, pki, up.url, {}, [() => up.close()]);
    const rs = await Promise.all(Array.from({ length: 6 }, (_, i) => get(proxy, pki, `/r${i}`)));
    assert.deepEqual(rs.map((r) => r.status), [200, 200, 200, 200, 200, 200]);
    assert.deepEqual(rs.map((r) => r.text), Array.from({ length: 6 }, (_, i) => `ok /r${i}`));
  });

  test(`${scheme}: a session cut with streams in flight gets a 502 to the request not yet answered, a cut response to the one started, and the next request works`, async (t) => {
    const pki = await makePki();
    let cut = false;
    const up = await startH2(pki, scheme, (stream, headers) => {
      const path = headers[':path'] as string;
      if (path === '/started') {
        stream.respond({ ':status': 200 });
        stream.write('part of it');
        cut = true;
        return;
      }
      if (path === '/waiting') {
        setTimeout(() => {
          for (const socket of up.sockets) socket.destroy();
        }, 200);
        return;
      }
      answer(stream, `ok ${path}`);
    });
    const proxy = await proxyTo(t, pki, up.url, {}, [() => up.close()]);
    const started = get(proxy, pki, '/started').then(
      (r) => ({ ok: true, r }),
      (err: Error) => ({ ok: false, err }),
    );
    await waitFor('the response started', () => cut);
    const waiting = await get(proxy, pki, '/waiting');
    assert.equal(waiting.status, 502);
    const s = await started;
    assert.equal(s.ok, false, 'the started response is cut, not ended');
    const next = await get(proxy, pki, '/next');
    assert.equal(next.status, 200);
    assert.equal(next.text, 'ok /next');
  });
}

for (const scheme of ['h2c', 'https'] as const) {
  test(`${scheme}: a reload that removes the target lets its request in flight finish, then closes its session; one that keeps it reuses the session`, async (t) => {
    const pki = await makePki();
    const slow = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void => {
      const path = headers[':path'] as string;
      setTimeout(() => answer(stream, `ok ${path}`), path === '/slow' ? 500 : 0);
    };
    const a = await startH2(pki, scheme, slow);
    const b = await startH2(pki, scheme, slow);
    const proxy = await proxyTo(t, pki, a.url, {}, [() => a.close(), () => b.close()]);
    assert.equal((await get(proxy, pki, '/one')).status, 200);
    // A reload that keeps the target: its session serves on.
    await proxy.reconfigure({ ...configFor({ cert: 'h2.pem', key: 'h2-key.pem' }, a.url), log: { access: true } } as Omit<ConfigInput, 'listen'>);
    assert.equal((await get(proxy, pki, '/two')).status, 200);
    assert.equal(a.sessionsSeen, 1, 'the session survives a reload that keeps its target');
    const inFlight = get(proxy, pki, '/slow');
    await delay(100);
    await proxy.reconfigure(configFor({ cert: 'h2.pem', key: 'h2-key.pem' }, b.url));
    const r = await inFlight;
    assert.deepEqual([r.status, r.text], [200, 'ok /slow'], 'the request in flight finishes on its old target');
    assert.equal((await get(proxy, pki, '/three')).text, 'ok /three');
    await waitFor('the old target\'s session closed', () => a.open.size === 0);
    assert.equal(b.open.size, 1);
  });
}

test('https: connectTimeout bounds a TLS handshake the upstream never completes', { timeout: 10_000 }, async (t) => {
  const pki = await makePki();
  const sockets = new Set<Socket>();
  const silent = net.createServer((s) => {
    sockets.add(s);
    s.on('error', () => {});
  });
  silent.listen(0, '127.0.0.1');
  await once(silent, 'listening');
  const url = `https://127.0.0.1:${(silent.address() as AddressInfo).port}`;
  const proxy = await proxyTo(t, pki, url, { connectTimeout: '1s' }, [() => { for (const s of sockets) s.destroy(); silent.close(); }]);
  const started = Date.now();
  const r = await get(proxy, pki, '/');
  assert.equal(r.status, 504);
  assert.ok(Date.now() - started < 3000, `answered after ${Date.now() - started} ms`);
});

test('h2c: the first request on a new session may take longer than connectTimeout to be answered', async (t) => {
  const pki = await makePki();
  const up = await startH2(pki, 'h2c', (stream) => setTimeout(() => answer(stream, 'late'), 1500));
  const proxy = await proxyTo(t, pki, up.url, { connectTimeout: '1s' }, [() => up.close()]);
  const r = await get(proxy, pki, '/');
  assert.deepEqual([r.status, r.text], [200, 'late']);
});

test('h2c: connectTimeout bounds an upstream that accepts the connection but never sends its SETTINGS', { timeout: 10_000 }, async (t) => {
  const pki = await makePki();
  const sockets = new Set<Socket>();
  const mute = net.createServer((s) => {
    sockets.add(s);
    s.on('error', () => {});
  });
  mute.listen(0, '127.0.0.1');
  await once(mute, 'listening');
  const url = `h2c://127.0.0.1:${(mute.address() as AddressInfo).port}`;
  const proxy = await proxyTo(t, pki, url, { connectTimeout: '1s' }, [() => { for (const s of sockets) s.destroy(); mute.close(); }]);
  const started = Date.now();
  const r = await get(proxy, pki, '/');
  assert.equal(r.status, 504);
  assert.ok(Date.now() - started < 3000, `answered after ${Date.now() - started} ms`);
});

for (const scheme of ['h2c', 'https'] as const) {
  test(`${scheme}: a target that refuses the connection is skipped for the next one`, async (t) => {
    const pki = await makePki();
    const up = await startH2(pki, scheme, (stream) => answer(stream, 'second'));
    const closed = net.createServer();
    closed.listen(0, '127.0.0.1');
    await once(closed, 'listening');
    const dead = `${scheme}://127.0.0.1:${(closed.address() as AddressInfo).port}`;
    await new Promise<void>((r) => closed.close(() => r()));
    await writeFile(join(pki.dir, 'upstream-ca.pem'), pki.caPem);
    const cert = await pki.issue('h2', ['h2.test']);
    const config = configFor(cert, dead) as { hosts: Record<string, { routes: { upstream: { targets: string[] } }[] }> };
    config.hosts['h2.test']!.routes[0]!.upstream.targets.push(up.url);
    const proxy = await startProxyFor(t, pki, config as Omit<ConfigInput, 'listen'>, [() => up.close()]);
    const r = await get(proxy, pki, '/');
    assert.deepEqual([r.status, r.text], [200, 'second']);
  });
}

/** One GET through `target`'s own HTTP/2 client (no proxy): status and body. */
function getVia(target: Target, path: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = openUpstreamRequest(target, 'GET', path, { host: 'up.test' });
    req.on('error', reject);
    req.on('response', (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.end();
  });
}

for (const scheme of ['h2c', 'https'] as const) {
  test(`${scheme}: an idle upstream session is reused within the idle time, outlives a stream silent for longer, and is closed once idle for that long`, async (t) => {
    const pki = await makePki();
    const up = await startH2(pki, scheme, (stream, headers) => {
      const path = headers[':path'] as string;
      setTimeout(() => answer(stream, `ok ${path}`), path === '/slow' ? 900 : 0);
    });
    t.after(() => up.close());
    const url = new URL(up.url);
    const tls = scheme === 'https' ? { ca: Buffer.from(pki.caPem), cert: undefined, key: undefined, servername: 'up.test', rejectUnauthorized: true } : undefined;
    const target = new Target('idle-test', url, 'h2', tls, 5000, undefined, 400);
    t.after(() => target.close());
    await target.prepare();
    assert.deepEqual(await getVia(target, '/a'), { status: 200, text: 'ok /a' });
    await delay(150);
    assert.deepEqual(await getVia(target, '/b'), { status: 200, text: 'ok /b' });
    assert.equal(up.sessionsSeen, 1, 'a session used within the idle time is reused');
    // A stream silent for longer than the idle time keeps its session (h2-tls) or finishes on it (h2c, closed gracefully).
    assert.deepEqual(await getVia(target, '/slow'), { status: 200, text: 'ok /slow' });
    await waitFor('the idle session closed', () => up.open.size === 0, 2000);
  });
}
