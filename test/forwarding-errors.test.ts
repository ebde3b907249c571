/**
 * Upstream failures and client aborts: each maps to the right status (502,
 * 504, 404) with a short body and a log line, a response cut short upstream is
 * cut short at the client (never a complete-looking response), a client that
 * goes away cancels the upstream exchange, and no socket error takes the
 * process down.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import net, { type AddressInfo } from 'node:net';
import { spawn } from 'node:child_process';
import { setTimeout as delay } from 'node:timers/promises';
import { makePki, startProxy, startProxyFor, type TestPki, type TestProxy } from './helpers/proxy.js';
import { freePort, h1Request, h2Connect, h2Request, startRawUpstream, startUpstream } from './helpers/net.js';

/** Starts a proxy for one host with the given routes; cleans up after the test. */
async function proxyWith(t: TestContext, routes: NonNullable<Parameters<typeof startProxy>[1]['hosts'][string]>['routes']): Promise<{ pki: TestPki; proxy: TestProxy }> {
  const pki = await makePki();
  const cert = await pki.issue('e', ['err.test']);
  const proxy = await startProxyFor(t, pki, { hosts: { 'err.test': { tls: cert, routes } } });
  return { pki, proxy };
}

/** GETs / (or `path`) and checks that the proxy answered 504 PORTICO_UPSTREAM_TIMEOUT within [minMs, maxMs). */
async function expectTimeout504(proxy: TestProxy, pki: TestPki, minMs: number, maxMs: number, path = '/'): Promise<void> {
  const started = performance.now();
  const r = await h1Request({ port: proxy.httpsPort, sni: 'err.test', path, ca: pki.caPem });
  const ms = performance.now() - started;
  assert.equal(r.status, 504);
  assert.equal(r.headers['x-portico-error'], 'PORTICO_UPSTREAM_TIMEOUT');
  assert.ok(ms >= minMs && ms < maxMs, `answered after ${Math.round(ms)} ms`);
}

/** What an HTTP/1.1 client saw of a response that may be cut short. */
interface H1Outcome {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  complete: boolean;
  error: string | undefined;
}

/** One HTTP/1.1 request that reports how the response ended instead of throwing. */
function h1Outcome(port: number, pki: TestPki, path: string): Promise<H1Outcome> {
  return new Promise((resolve) => {
    const req = https.get({ host: '127.0.0.1', port, path, servername: 'err.test', ca: pki.caPem, headers: { host: 'err.test' }, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      let error: string | undefined;
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', (err: NodeJS.ErrnoException) => {
        error = err.code ?? err.message;
      });
      res.on('close', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), complete: res.complete, error: error ?? (res.complete ? undefined : 'aborted') }));
    });
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ status: 0, headers: {}, body: Buffer.alloc(0), complete: false, error: err.code ?? err.message }));
  });
}

/** What an HTTP/2 client saw of a stream that may be reset. */
interface H2Outcome {
  status: number;
  body: Buffer;
  ended: boolean;
  rstCode: number | undefined;
  error: string | undefined;
}

function h2Outcome(session: http2.ClientHttp2Session, path: string): Promise<H2Outcome> {
  return new Promise((resolve) => {
    const stream = session.request({ ':path': path });
    let status = 0;
    let ended = false;
    let error: string | undefined;
    const chunks: Buffer[] = [];
    stream.on('response', (h) => {
      status = Number(h[':status']);
    });
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      ended = true;
    });
    stream.on('error', (err: NodeJS.ErrnoException) => {
      error = err.code ?? err.message;
    });
    stream.on('close', () => resolve({ status, body: Buffer.concat(chunks), ended, rstCode: stream.rstCode, error }));
  });
}

/** Whether the proxy still serves an ordinary request. */
async function assertStillServing(proxy: TestProxy, pki: TestPki, okPath: string): Promise<void> {
  const r = await h1Request({ port: proxy.httpsPort, sni: 'err.test', path: okPath, ca: pki.caPem });
  assert.equal(r.status, 200, 'the proxy still answers after the failure');
}

test('a refused upstream connection gets 502 with a short body and a log line naming the upstream', async (t) => {
  const deadPort = await freePort();
  const dead = `http://127.0.0.1:${deadPort}`;
  const { pki, proxy } = await proxyWith(t, [{ path: '/', upstream: dead }]);
  const r1 = await h1Request({ port: proxy.httpsPort, sni: 'err.test', path: '/x', ca: pki.caPem });
  assert.equal(r1.status, 502);
  assert.equal(r1.headers['x-portico-error'], 'PORTICO_UPSTREAM_UNREACHABLE');
  assert.equal(r1.text, 'Bad Gateway: the upstream could not be reached\n');
  const session = await h2Connect(proxy.httpsPort, 'err.test', pki.caPem);
  t.after(() => session.close());
  const r2 = await h2Request(session, { path: '/y' });
  assert.equal(r2.status, 502);
  assert.ok(r2.body.length < 100, 'a short body, no internals');
  assert.doesNotMatch(r2.text, /ECONNREFUSED|127\.0\.0\.1/);
  const lines = proxy.logs.filter((l) => l.msg === 'upstream error');
  assert.equal(lines.length, 2);
  for (const l of lines) {
    assert.equal(l.upstream, dead);
    assert.equal(l.code, 'PORTICO_UPSTREAM_UNREACHABLE');
    assert.match(String(l.detail), /ECONNREFUSED/);
  }
});

test('an upstream slower than responseTimeout gets 504 and its request is cancelled', async (t) => {
  const up = await startUpstream(() => {
    // Never answers.
  });
  t.after(() => up.close());
  const { pki, proxy } = await proxyWith(t, [{ path: '/', upstream: { targets: [up.url], responseTimeout: '300ms' } }]);
  await expectTimeout504(proxy, pki, 280, 2000, '/slow');
  await delay(100);
  assert.equal(up.seen[0]?.aborted, true, 'the upstream saw its request closed');
  assert.ok(proxy.logs.some((l) => l.msg === 'upstream error' && l.upstream === up.url && l.code === 'PORTICO_UPSTREAM_TIMEOUT'));
});

test('an upstream whose backlog is full (connect never completes) gets 504 after connectTimeout', async (t) => {
  // A listener in a stopped process: the kernel queues a couple of connections, then drops further SYNs.
  const holder = spawn(process.execPath, ['-e', "const s=require('net').createServer();s.listen({port:0,host:'127.0.0.1',backlog:1},()=>{console.log(s.address().port);process.kill(process.pid,'SIGSTOP')})"], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.after(() => {
    holder.kill('SIGKILL');
  });
  const [line] = (await once(holder.stdout!, 'data')) as [Buffer];
  const port = Number(line.toString().trim());
  const fillers: net.Socket[] = [];
  t.after(() => {
    for (const s of fillers) s.destroy();
  });
  for (let i = 0; i < 8; i++) {
    const s = net.connect(port, '127.0.0.1');
    s.on('error', () => {});
    fillers.push(s);
  }
  await delay(200);
  const probe = net.connect(port, '127.0.0.1');
  probe.on('error', () => {});
  const probeConnected = await Promise.race([once(probe, 'connect').then(() => true), delay(500).then(() => false)]);
  probe.destroy();
  if (probeConnected) {
    t.skip('the loopback accepted a connection past a full backlog; connect timeouts are not reproducible here');
    return;
  }
  const { pki, proxy } = await proxyWith(t, [{ path: '/', upstream: { targets: [`http://127.0.0.1:${port}`], connectTimeout: '300ms', responseTimeout: '10s' } }]);
  await expectTimeout504(proxy, pki, 280, 3000);
});

for (const protocol of ['auto', 'http1'] as const) {
  test(`an https target (protocol ${protocol}) that accepts the connection but never completes the TLS handshake gets 504 after connectTimeout`, async (t) => {
    const silent = net.createServer((socket) => socket.on('error', () => {}));
    silent.listen(0, '127.0.0.1');
    await once(silent, 'listening');
    t.after(() => {
      silent.close();
    });
    const url = `https://127.0.0.1:${(silent.address() as AddressInfo).port}`;
    const { pki, proxy } = await proxyWith(t, [{ path: '/', upstream: { targets: [url], protocol, connectTimeout: '300ms', responseTimeout: '10s' } }]);
    await expectTimeout504(proxy, pki, 280, 3000);
  });
}

test('a path no route covers gets 404 without touching any upstream', async (t) => {
  const up = await startUpstream();
  t.after(() => up.close());
  const { pki, proxy } = await proxyWith(t, [{ path: '/api', upstream: up.url }]);
  const r = await h1Request({ port: proxy.httpsPort, sni: 'err.test', path: '/apix', ca: pki.caPem });
  assert.equal(r.status, 404);
  assert.equal(r.headers['x-portico-error'], 'PORTICO_NO_ROUTE');
  assert.equal(up.seen.length, 0);
});

for (const framing of ['content-length', 'chunked'] as const) {
  test(`an upstream that resets mid-response (${framing}) gives the client an error, never a complete-looking response`, async (t) => {
    const partial = await startRawUpstream((_path, socket) => {
      const head = framing === 'chunked' ? 'Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n' : 'Content-Length: 1000\r\n\r\nhello';
      socket.write(`HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n${head}`);
      setTimeout(() => socket.destroy(), 50);
    });
    const ok = await startUpstream();
    t.after(async () => {
      await partial.close();
      await ok.close();
    });
    const { pki, proxy } = await proxyWith(t, [
      { path: '/', upstream: partial.url },
      { path: '/ok', upstream: ok.url },
    ]);

    const h1 = await h1Outcome(proxy.httpsPort, pki, '/cut');
    assert.equal(h1.status, 200, 'the response had started');
    assert.equal(h1.complete, false, 'HTTP/1.1: the response is not complete');
    assert.ok(h1.error !== undefined, 'HTTP/1.1: the client sees an error');
    assert.equal(h1.body.toString(), 'hello');

    const session = await h2Connect(proxy.httpsPort, 'err.test', pki.caPem);
    t.after(() => session.close());
    const h2 = await h2Outcome(session, '/cut');
    assert.equal(h2.status, 200);
    assert.equal(h2.body.toString(), 'hello');
    assert.equal(h2.ended, false, 'HTTP/2: the stream did not end normally (no END_STREAM)');
    assert.ok(h2.rstCode !== undefined && h2.rstCode !== http2.constants.NGHTTP2_NO_ERROR, `HTTP/2: the stream was reset with an error code (got ${h2.rstCode})`);
    assert.ok(h2.error !== undefined, 'HTTP/2: the client sees a stream error');

    await assertStillServing(proxy, pki, '/ok');
    const h2After = await h2Request(session, { path: '/ok' });
    assert.equal(h2After.status, 200, 'the HTTP/2 session survives the reset stream');
  });
}

test('a client that goes away mid-upload or mid-download cancels the upstream exchange within a second', async (t) => {
  const events: string[] = [];
  const closed = new Map<string, () => void>();
  const up = await startUpstream((req, res) => {
    const id = req.url ?? '';
    if (id === '/after') {
      res.end('ok');
      return;
    }
    req.on('close', () => {
      events.push(`${id} req close complete=${req.complete}`);
    });
    res.on('close', () => {
      events.push(`${id} res close finished=${res.writableFinished}`);
      closed.get(id)?.();
    });
    if (req.method === 'PUT') {
      req.resume();
      return; // waits for a body that never ends
    }
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    const timer = setInterval(() => res.write(Buffer.alloc(1024, 'x')), 20);
    res.on('close', () => clearInterval(timer));
  });
  t.after(() => up.close());
  const { pki, proxy } = await proxyWith(t, [{ path: '/', upstream: up.url }]);
  const upstreamClosed = (id: string): Promise<number> => {
    const started = performance.now();
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(Infinity), 2000);
      closed.set(id, () => {
        clearTimeout(timer);
        resolve(performance.now() - started);
      });
    });
  };

  // HTTP/1.1 upload: the client sends part of a body, then drops the connection.
  const upload = https.request({ host: '127.0.0.1', port: proxy.httpsPort, method: 'PUT', path: '/h1-up', servername: 'err.test', ca: pki.caPem, headers: { host: 'err.test', 'content-length': 1_000_000 }, agent: false });
  upload.on('error', () => {});
  upload.write(Buffer.alloc(10_000));
  await waitFor(() => up.seen.some((s) => s.url === '/h1-up'));
  let waited = upstreamClosed('/h1-up');
  upload.destroy();
  assert.ok((await waited) < 1000, 'the upstream saw the exchange closed within a second');

  // HTTP/1.1 download: the client reads a little of an endless response, then drops the connection.
  const download = https.get({ host: '127.0.0.1', port: proxy.httpsPort, path: '/h1-down', servername: 'err.test', ca: pki.caPem, headers: { host: 'err.test' }, agent: false });
  download.on('error', () => {});
  const [res] = (await once(download, 'response')) as [http.IncomingMessage];
  await once(res, 'data');
  waited = upstreamClosed('/h1-down');
  download.destroy();
  assert.ok((await waited) < 1000, 'the upstream saw the exchange closed within a second');

  // HTTP/2: the client resets the stream mid-upload and mid-download; the session lives on.
  const session = await h2Connect(proxy.httpsPort, 'err.test', pki.caPem);
  t.after(() => session.close());
  const h2up = session.request({ ':method': 'PUT', ':path': '/h2-up' });
  h2up.on('error', () => {});
  h2up.write(Buffer.alloc(10_000));
  await waitFor(() => up.seen.some((s) => s.url === '/h2-up'));
  waited = upstreamClosed('/h2-up');
  // destroy() sends RST_STREAM alone; close(code) would first end the body with END_STREAM.
  h2up.destroy();
  assert.ok((await waited) < 1000, 'the upstream saw the exchange closed within a second');
  const h2down = session.request({ ':path': '/h2-down' });
  h2down.on('error', () => {});
  await once(h2down, 'data');
  waited = upstreamClosed('/h2-down');
  h2down.close(http2.constants.NGHTTP2_CANCEL);
  assert.ok((await waited) < 1000, 'the upstream saw the exchange closed within a second');

  for (const id of ['/h1-up', '/h2-up']) assert.ok(events.includes(`${id} req close complete=false`), `${id}: upstream request closed before its body ended (${events.join('; ')})`);
  for (const id of ['/h1-up', '/h1-down', '/h2-up', '/h2-down']) assert.ok(events.includes(`${id} res close finished=false`), `${id}: upstream response closed unfinished (${events.join('; ')})`);
  const r = await h2Request(session, { path: '/after' });
  assert.equal(r.status, 200, 'the same HTTP/2 session still works');
});

async function waitFor(check: () => boolean, timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await delay(10);
  }
}
