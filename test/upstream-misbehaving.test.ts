/**
 * Upstreams that break HTTP: scripted HTTP/1.1 upstreams writing exact bytes and raw h2c upstreams
 * writing exact frames, with real HTTP/1.1 and HTTP/2 clients through Portico. Nothing an upstream
 * gets wrong may reach a client as a valid response, a cut-off body must look cut off, heads are held
 * to responseTimeout as a whole, and only requests that were never processed are sent again.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http2 from 'node:http2';
import https from 'node:https';
import net from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { makePki, startProxyFor, type TestPki, type TestProxy } from './helpers/proxy.js';
import { h1Request, h2Connect, h2Request, startRawUpstream } from './helpers/net.js';
import { FLAG, FRAME, frame, headerBlock } from './helpers/raw-h2.js';

const HOST = 'misbehave.test';

/** Portico with one route per path prefix, each to its own upstream (responseTimeout 1 s). */
async function proxyRoutes(t: TestContext, routes: Record<string, string>, responseTimeout = '1s'): Promise<{ pki: TestPki; proxy: TestProxy }> {
  const pki = await makePki();
  const tls = await pki.issue(HOST, [HOST]);
  const proxy = await startProxyFor(t, pki, {
    hosts: { [HOST]: { tls, routes: Object.entries(routes).map(([path, url]) => ({ path, upstream: { targets: [url], responseTimeout } })) } },
  });
  return { pki, proxy };
}

/** An HTTP/1.1 request's outcome as a string: "status body", or "error" when the response was cut off. */
async function h1Outcome(proxy: TestProxy, pki: TestPki, path: string, method = 'GET', body?: string): Promise<string> {
  try {
    const r = await h1Request({ port: proxy.httpsPort, sni: HOST, ca: pki.caPem, path, method, body });
    return `${r.status} ${r.text}`;
  } catch {
    return 'error';
  }
}

test('a response with ambiguous or broken framing (two Content-Lengths, Content-Length with chunked, bare CR, obs-fold, NUL, a bad chunk size) or a head over 16 KiB never reaches a client as a valid response, and its connection is not reused', async (t) => {
  const wires: Record<string, string> = {
    '/two-lengths': 'HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 5\r\n\r\nhello',
    '/length-and-chunked': 'HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
    '/bare-cr': 'HTTP/1.1 200 OK\r\nx-a: a\rb\r\ncontent-length: 2\r\n\r\nok',
    '/obs-fold': 'HTTP/1.1 200 OK\r\nx-a: a\r\n b\r\ncontent-length: 2\r\n\r\nok',
    '/nul': 'HTTP/1.1 200 OK\r\nx-a: a\0b\r\ncontent-length: 2\r\n\r\nok',
    '/bad-chunk': 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\nworld\r\n0\r\n\r\n',
    '/huge-header': `HTTP/1.1 200 OK\r\nx-a: ${'a'.repeat(20_000)}\r\ncontent-length: 2\r\n\r\nok`,
    '/many-headers': `HTTP/1.1 200 OK\r\n${'x-a: b\r\n'.repeat(5000)}content-length: 2\r\n\r\nok`,
  };
  const up = await startRawUpstream((path, s) => s.write(wires[path] ?? 'HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\ngood'));
  t.after(() => up.close());
  const { pki, proxy } = await proxyRoutes(t, { '/': up.url });
  const session = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => session.close());
  for (const path of Object.keys(wires)) {
    const h1 = await h1Outcome(proxy, pki, path);
    // A bad chunk comes after the head went out: the response is cut off; the rest never get a head out.
    assert.ok(h1 === 'error' || h1.startsWith('502 '), `${path} over HTTP/1.1: ${h1}`);
    const h2 = await h2Request(session, { path }).then((r) => `${r.status} ${r.text}`, () => 'error');
    assert.ok(h2 === 'error' || h2.startsWith('502 '), `${path} over HTTP/2: ${h2}`);
    assert.equal(await h1Outcome(proxy, pki, '/next'), '200 good', `the request after ${path}`);
  }
  // Each broken response retired its connection (two clients each): the good ones reused theirs.
  assert.ok(up.connections() >= 2 * Object.keys(wires).length, `connections: ${up.connections()}`);
  for (const reason of ['HPE_UNEXPECTED_CONTENT_LENGTH', 'HPE_HEADER_OVERFLOW']) {
    assert.ok(proxy.logs.some((l) => l.msg === 'upstream error' && String(l.detail).endsWith(reason)), `a log line names ${reason}`);
  }
});

test('a status outside 100–599, or a status line of another HTTP version, gets 502 and nothing of it reaches the client', async (t) => {
  const wires: Record<string, string> = {
    '/600': 'HTTP/1.1 600 Beyond\r\ncontent-length: 2\r\n\r\nno',
    '/999': 'HTTP/1.1 999 Beyond\r\ncontent-length: 2\r\n\r\nno',
    '/h2': 'HTTP/2.0 200 OK\r\ncontent-length: 2\r\n\r\nno',
    '/h09': 'HTTP/0.9 200 OK\r\ncontent-length: 2\r\n\r\nno',
  };
  const up = await startRawUpstream((path, s) => s.write(wires[path] ?? 'HTTP/1.0 200 OK\r\ncontent-length: 4\r\n\r\ngood'));
  t.after(() => up.close());
  const { pki, proxy } = await proxyRoutes(t, { '/': up.url });
  for (const path of Object.keys(wires)) {
    const r = await h1Request({ port: proxy.httpsPort, sni: HOST, ca: pki.caPem, path });
    assert.equal(r.status, 502, path);
    assert.equal(r.headers['x-portico-error'], 'PORTICO_UPSTREAM_FAILED', path);
  }
  assert.equal((await h1Request({ port: proxy.httpsPort, sni: HOST, ca: pki.caPem, path: '/http10' })).text, 'good', 'an HTTP/1.0 response is fine');
  assert.equal(proxy.logs.filter((l) => l.msg === 'upstream error' && /PORTICO_INVALID_STATUS_LINE/.test(String(l.detail))).length, 4);
});

test('a transfer coding other than chunked (gzip, chunked; gzip to the close) gets 502 rather than its coded bytes passed on as the body', async (t) => {
  const up = await startRawUpstream((path, s) => {
    if (path === '/gzip-chunked') s.write('HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n2\r\nzz\r\n0\r\n\r\n');
    else if (path === '/gzip') s.end('HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nzz');
    else s.write('HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n');
  });
  t.after(() => up.close());
  const { pki, proxy } = await proxyRoutes(t, { '/': up.url });
  const session = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => session.close());
  for (const path of ['/gzip-chunked', '/gzip']) {
    assert.match(await h1Outcome(proxy, pki, path), /^502 /, path);
    assert.equal((await h2Request(session, { path })).status, 502, path);
  }
  assert.equal(await h1Outcome(proxy, pki, '/chunked'), '200 ok');
  assert.equal((await h2Request(session, { path: '/chunked' })).text, 'ok');
  assert.ok(proxy.logs.some((l) => l.msg === 'upstream error' && /PORTICO_UNSUPPORTED_TRANSFER_CODING/.test(String(l.detail))));
});

test('a 204 that carries a Content-Length reaches HTTP/1.1 and HTTP/2 clients as a 204 without one', async (t) => {
  const up = await startRawUpstream((_path, s) => s.write('HTTP/1.1 204 No Content\r\ncontent-length: 100\r\nx-a: 1\r\n\r\n'));
  t.after(() => up.close());
  const { pki, proxy } = await proxyRoutes(t, { '/': up.url });
  const r1 = await h1Request({ port: proxy.httpsPort, sni: HOST, ca: pki.caPem });
  assert.equal(r1.status, 204);
  assert.equal(r1.headers['content-length'], undefined);
  assert.equal(r1.headers['x-a'], '1');
  const session = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => session.close());
  const r2 = await h2Request(session, { path: '/' });
  assert.equal(r2.status, 204);
  assert.equal(r2.headers['content-length'], undefined);
});

test('trailers with connection-specific, framing or routing fields reach the client without those fields, the response whole', async (t) => {
  const up = await startRawUpstream((_path, s) =>
    s.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n2\r\nok\r\n0\r\nconnection: close\r\nkeep-alive: timeout=1\r\nhost: elsewhere.test\r\nupgrade: h2c\r\nx-checksum: abc\r\n\r\n'),
  );
  t.after(() => up.close());
  const { pki, proxy } = await proxyRoutes(t, { '/': up.url });
  const session = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => session.close());
  const r = await h2Request(session, { path: '/' });
  assert.equal(r.text, 'ok');
  assert.deepEqual(Object.keys(r.trailers), ['x-checksum']);
  assert.equal(r.trailers['x-checksum'], 'abc');
  assert.equal(await h1Outcome(proxy, pki, '/'), '200 ok');
});

test('several Set-Cookie lines and a 304 with its Content-Length reach HTTP/1.1 and HTTP/2 clients as sent', async (t) => {
  const up = await startRawUpstream((path, s) =>
    s.write(path === '/304' ? 'HTTP/1.1 304 Not Modified\r\netag: "v1"\r\ncontent-length: 1234\r\n\r\n' : 'HTTP/1.1 200 OK\r\nset-cookie: a=1; Path=/\r\nset-cookie: b=2, c=3\r\ncontent-length: 2\r\n\r\nok'),
  );
  t.after(() => up.close());
  const { pki, proxy } = await proxyRoutes(t, { '/': up.url });
  const session = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => session.close());
  const r1 = await h1Request({ port: proxy.httpsPort, sni: HOST, ca: pki.caPem, path: '/cookies' });
  const r2 = await h2Request(session, { path: '/cookies' });
  for (const r of [r1, r2]) assert.deepEqual(r.headers['set-cookie'], ['a=1; Path=/', 'b=2, c=3']);
  const n1 = await h1Request({ port: proxy.httpsPort, sni: HOST, ca: pki.caPem, path: '/304' });
  const n2 = await h2Request(session, { path: '/304' });
  for (const r of [n1, n2]) {
    assert.equal(r.status, 304);
    assert.equal(r.headers['content-length'], '1234', 'the length the 200 would have had (RFC 9110 §8.6)');
    assert.equal(r.text, '');
  }
  assert.equal(await h1Outcome(proxy, pki, '/cookies'), '200 ok');
});

test('an upstream that answers before reading the request body is relayed, and its connection, the body cut short on it, is not reused', async (t) => {
  const up = await startRawUpstream((path, s) => {
    if (path === '/upload') s.write('HTTP/1.1 413 Payload Too Large\r\ncontent-length: 3\r\n\r\nbig');
    else if (path === '/upload-close') s.end('HTTP/1.1 413 Payload Too Large\r\nconnection: close\r\ncontent-length: 3\r\n\r\nbig');
    else s.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
  });
  t.after(() => up.close());
  const { pki, proxy } = await proxyRoutes(t, { '/': up.url });
  // The client holds back the rest of its body until the answer came, so the upstream surely answered early.
  const status = await new Promise<number>((resolve, reject) => {
    const req = https.request(
      { host: '127.0.0.1', port: proxy.httpsPort, path: '/upload', method: 'POST', servername: HOST, ca: pki.caPem, agent: false, headers: { host: HOST, 'content-length': '100000' } },
      (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
        req.destroy();
      },
    );
    req.on('error', reject);
    req.write(Buffer.alloc(1000, 'x'));
  });
  assert.equal(status, 413);
  assert.equal(await h1Outcome(proxy, pki, '/next'), '200 ok');
  assert.equal(up.connections(), 2, 'the GET went over a new connection');
  const session = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => session.close());
  const r = await h2Request(session, { path: '/upload-close', method: 'POST', body: Buffer.alloc(1_000_000, 'x') });
  assert.equal(`${r.status} ${r.text}`, '413 big');
});

test('an HTTP/2 upstream that allows one stream at a time answers concurrent requests one after another', async (t) => {
  const server = http2.createServer({ settings: { maxConcurrentStreams: 1 } });
  let open = 0;
  let most = 0;
  server.on('stream', (stream) => {
    open++;
    most = Math.max(most, open);
    setTimeout(() => {
      open--;
      stream.respond({ ':status': 200 });
      stream.end('ok');
    }, 50);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on('session', (s: http2.ServerHttp2Session) => sessions.add(s));
  t.after(() => {
    for (const s of sessions) s.destroy();
    server.close();
  });
  const { pki, proxy } = await proxyRoutes(t, { '/': `h2c://127.0.0.1:${(server.address() as net.AddressInfo).port}` }, '5s');
  const all = await Promise.all([1, 2, 3, 4].map(() => h1Outcome(proxy, pki, '/')));
  assert.deepEqual(all, ['200 ok', '200 ok', '200 ok', '200 ok']);
  assert.equal(most, 1);
});

test('responseTimeout bounds the whole wait for a response head: a head trickled a byte at a time, or endless 100 Continue, gets 504', { timeout: 20_000 }, async (t) => {
  const head = `HTTP/1.1 200 OK\r\nx-pad: ${'p'.repeat(60)}\r\ncontent-length: 2\r\n\r\nok`;
  const up = await startRawUpstream((path, s) => {
    let i = 0;
    const timer = setInterval(() => {
      if (s.destroyed || (path === '/trickle' && i >= head.length)) return clearInterval(timer);
      s.write(path === '/trickle' ? head.charAt(i++) : 'HTTP/1.1 100 Continue\r\n\r\n');
    }, 100);
  });
  t.after(() => up.close());
  const { pki, proxy } = await proxyRoutes(t, { '/': up.url });
  for (const path of ['/trickle', '/continue']) {
    const started = Date.now();
    const r = await h1Request({ port: proxy.httpsPort, sni: HOST, ca: pki.caPem, path });
    assert.equal(r.status, 504, path);
    assert.ok(Date.now() - started < 4000, `${path} answered after ${Date.now() - started} ms (responseTimeout 1 s)`);
  }
});

test('a body that stalls mid-way past responseTimeout is cut off for HTTP/1.1 and HTTP/2 clients, never ended', async (t) => {
  const up = await startRawUpstream((path, s) => s.write(path === '/chunked' ? 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n' : 'HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello'));
  t.after(() => up.close());
  const { pki, proxy } = await proxyRoutes(t, { '/': up.url });
  const session = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => session.close());
  for (const path of ['/length', '/chunked']) {
    assert.equal(await h1Outcome(proxy, pki, path), 'error', path);
    await assert.rejects(h2Request(session, { path }), /NGHTTP2_INTERNAL_ERROR/, path);
  }
});

test('a GET whose kept-alive upstream connection times out gets 504 after one responseTimeout and reaches the upstream once', async (t) => {
  const seen: string[] = [];
  const up = await startRawUpstream((path, s) => {
    seen.push(path);
    if (path === '/ok') s.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
  });
  t.after(() => up.close());
  const { pki, proxy } = await proxyRoutes(t, { '/': up.url });
  assert.equal(await h1Outcome(proxy, pki, '/ok'), '200 ok');
  const r = await h1Request({ port: proxy.httpsPort, sni: HOST, ca: pki.caPem, path: '/hang' });
  assert.equal(r.status, 504);
  assert.deepEqual(seen, ['/ok', '/hang']);
});

test('an upstream that closes a kept-alive connection as a request arrives: a GET is sent again on a new connection; a POST, or a GET the upstream began to answer, is not', async (t) => {
  const served = new WeakMap<net.Socket, number>();
  const seen: string[] = [];
  const up = await startRawUpstream((path, s) => {
    seen.push(path);
    const n = (served.get(s) ?? 0) + 1;
    served.set(s, n);
    if (n === 1 || path === '/warm') return void s.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
    if (path === '/begun') s.write('HTTP/1.1 200 OK\r\n');
    s.destroy();
  });
  t.after(() => up.close());
  // responseTimeout well past the test: its timer would close an idle upstream connection on a slow machine.
  const { pki, proxy } = await proxyRoutes(t, { '/': up.url }, '10s');
  // One client connection at a time, so each request after /warm finds the one idle upstream connection.
  const warm = (): Promise<string> => h1Outcome(proxy, pki, '/warm');
  await warm();
  await warm();
  assert.equal(await h1Outcome(proxy, pki, '/get'), '200 ok', 'the GET went again, on a fresh connection');
  await warm();
  assert.equal((await h1Request({ port: proxy.httpsPort, sni: HOST, ca: pki.caPem, path: '/post', method: 'POST', body: 'x' })).status, 502);
  await warm();
  assert.equal((await h1Request({ port: proxy.httpsPort, sni: HOST, ca: pki.caPem, path: '/post-empty', method: 'POST' })).status, 502);
  await warm();
  assert.equal((await h1Request({ port: proxy.httpsPort, sni: HOST, ca: pki.caPem, path: '/begun' })).status, 502);
  const count = (p: string): number => seen.filter((x) => x === p).length;
  assert.equal(count('/get'), 2);
  assert.equal(count('/post'), 1, 'a POST is never replayed');
  assert.equal(count('/post-empty'), 1, 'nor one without a body');
  assert.equal(count('/begun'), 1, 'nor a request whose response had begun');
});

test('bytes an upstream sends a moment after a complete response retire its connection; the next request gets its own answer over a new one', async (t) => {
  let n = 0;
  const up = await startRawUpstream((_path, s) => {
    n++;
    if (n === 1) {
      s.write('HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\none');
      // A whole, well-formed response to nothing: read as the next request's answer, it would be wrong bytes to the wrong client.
      setTimeout(() => s.write('HTTP/1.1 204 No Content\r\nx-evil: 1\r\n\r\n'), 30);
    } else {
      s.write('HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\ntwo');
    }
  });
  t.after(() => up.close());
  // responseTimeout past the wait below: its timer would close the idle connection too.
  const { pki, proxy } = await proxyRoutes(t, { '/': up.url }, '10s');
  assert.equal(await h1Outcome(proxy, pki, '/1'), '200 one');
  // Portico closes the connection when the stray bytes arrive (waited for, at most 2 s, so a loaded machine can't turn this into a race).
  for (let waited = 0; up.closed() === 0 && waited < 2000; waited += 20) await delay(20);
  assert.equal(await h1Outcome(proxy, pki, '/2'), '200 two');
  assert.equal(up.connections(), 2);
});

/** A cleartext HTTP/2 upstream that writes raw frames: `onRequest` answers the n-th request (from 1) on stream `id`. */
async function startRawH2c(onRequest: (id: number, socket: net.Socket, n: number) => void): Promise<{ url: string; requests: () => number; close: () => void }> {
  let n = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    socket.once('close', () => sockets.delete(socket));
    socket.write(frame(FRAME.SETTINGS, 0, 0));
    let buf = Buffer.alloc(0);
    let preface = false;
    socket.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      if (!preface) {
        if (buf.length < 24) return;
        buf = buf.subarray(24);
        preface = true;
      }
      while (buf.length >= 9) {
        const length = buf.readUIntBE(0, 3);
        if (buf.length < 9 + length) return;
        const type = buf[3];
        const flags = buf[4] ?? 0;
        const id = buf.readUInt32BE(5) & 0x7fffffff;
        buf = buf.subarray(9 + length);
        if (type === FRAME.SETTINGS && (flags & FLAG.ACK) === 0) socket.write(frame(FRAME.SETTINGS, FLAG.ACK, 0));
        if (type === FRAME.HEADERS) onRequest(id, socket, ++n);
      }
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `h2c://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    requests: () => n,
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

function rstStream(id: number, code: number): Buffer {
  const p = Buffer.alloc(4);
  p.writeUInt32BE(code);
  return frame(FRAME.RST_STREAM, 0, id, p);
}

function goaway(lastStream: number): Buffer {
  const p = Buffer.alloc(8);
  p.writeUInt32BE(lastStream);
  return frame(FRAME.GOAWAY, 0, 0, p);
}

const HEAD_200 = (id: number, end: boolean, fields: [string, string][] = []): Buffer =>
  frame(FRAME.HEADERS, FLAG.END_HEADERS | (end ? FLAG.END_STREAM : 0), id, headerBlock([[':status', '200'], ...fields]));

test('an HTTP/2 upstream whose connection drops or whose stream is reset after the head gives HTTP/1.1 and HTTP/2 clients a cut-off response, never a whole one', async (t) => {
  const part = (id: number, s: net.Socket): boolean => s.write(Buffer.concat([HEAD_200(id, false), frame(FRAME.DATA, 0, id, Buffer.from('part'))]));
  const dropped = await startRawH2c((id, s) => {
    part(id, s);
    setTimeout(() => s.destroy(), 30);
  });
  const reset = await startRawH2c((id, s) => {
    part(id, s);
    setTimeout(() => s.write(rstStream(id, 2)), 30);
  });
  const connHeader = await startRawH2c((id, s) => s.write(HEAD_200(id, true, [['connection', 'close']])));
  t.after(() => [dropped, reset, connHeader].forEach((u) => u.close()));
  const { pki, proxy } = await proxyRoutes(t, { '/dropped': dropped.url, '/reset': reset.url, '/conn': connHeader.url });
  const session = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => session.close());
  for (const path of ['/dropped', '/reset']) {
    assert.equal(await h1Outcome(proxy, pki, path), 'error', `${path} over HTTP/1.1`);
    await assert.rejects(h2Request(session, { path }), /NGHTTP2_INTERNAL_ERROR/, `${path} over HTTP/2`);
  }
  // A connection-specific header is malformed in HTTP/2 (RFC 9113 §8.2.2): node:http2 refuses the response.
  assert.match(await h1Outcome(proxy, pki, '/conn'), /^502 /);
});

test('a stream an HTTP/2 upstream refuses (REFUSED_STREAM, or past the last stream of its GOAWAY) is sent once more; a request with a body is not', async (t) => {
  const answer = (id: number, s: net.Socket): boolean => s.write(Buffer.concat([HEAD_200(id, false, [['content-length', '2']]), frame(FRAME.DATA, FLAG.END_STREAM, id, Buffer.from('ok'))]));
  const refusing = await startRawH2c((id, s, n) => (n % 2 === 1 ? s.write(rstStream(id, 7)) : answer(id, s)));
  const goingAway = await startRawH2c((id, s, n) => (n % 2 === 1 ? s.end(goaway(0)) : answer(id, s)));
  t.after(() => [refusing, goingAway].forEach((u) => u.close()));
  const { pki, proxy } = await proxyRoutes(t, { '/refused': refusing.url, '/goaway': goingAway.url });
  assert.equal(await h1Outcome(proxy, pki, '/refused'), '200 ok');
  assert.equal(refusing.requests(), 2);
  assert.equal(await h1Outcome(proxy, pki, '/goaway'), '200 ok');
  assert.equal(goingAway.requests(), 2);
  // A body streamed upstream is gone once sent: the client gets the 502.
  assert.match(await h1Outcome(proxy, pki, '/refused', 'POST', 'body'), /^502 /);
  assert.equal(refusing.requests(), 3);
});
