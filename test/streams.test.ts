import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { once } from 'node:events';
import { randomBytes, createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { validateConfig } from '../src/config/load.js';
import { readServerName } from '../src/tls/client-hello.js';
import { makePki, startProxy, startProxyFor, type TestPki } from './helpers/proxy.js';
import { freePort } from './helpers/net.js';
import { metricValue } from './helpers/admin.js';
import { spawnProxy } from './helpers/child-proxy.js';
import { takeSnapshot } from '../src/admin/snapshot.js';
import { renderMetrics } from '../src/admin/metrics.js';

/** A TCP server on 127.0.0.1 that answers each connection with `hello` then echoes; ends its side when the client ends. */
async function echoServer(hello = ''): Promise<{ port: number; url: string; connections: () => number; close: () => Promise<void> }> {
  let count = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    count++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    if (hello !== '') s.write(hello);
    s.pipe(s);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    url: `tcp://127.0.0.1:${port}`,
    connections: () => count,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/** A TLS server for `name` (its own certificate from the test CA) that says which it is, then echoes. */
async function tlsServer(pki: TestPki, name: string): Promise<{ port: number; url: string; close: () => Promise<void> }> {
  const files = await pki.issue(`backend-${name}`, [name]);
  const server = tls.createServer({ cert: await readFile(join(pki.dir, files.cert)), key: await readFile(join(pki.dir, files.key)) }, (s) => {
    s.on('error', () => {});
    s.write(`I am ${name}\n`);
    s.pipe(s);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  return { port, url: `tcp://127.0.0.1:${port}`, close: () => new Promise<void>((r) => server.close(() => r())) };
}

/** Reads from `s` until `n` bytes came, leaving it open. */
function readBytes(s: net.Socket | tls.TLSSocket, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let got = 0;
    const onData = (c: Buffer): void => {
      chunks.push(c);
      got += c.length;
      if (got < n) return;
      s.off('data', onData);
      s.pause();
      resolve(Buffer.concat(chunks));
    };
    s.on('data', onData);
    s.resume(); // after an earlier readBytes paused it
    s.once('error', reject);
  });
}

test('a TCP stream forwards bytes both ways, 4 MiB byte-exact, and passes a half-close through', async (t) => {
  const pki = await makePki();
  const echo = await echoServer();
  const port = await freePort();
  const cert = await pki.issue('s', ['s.test']);
  const proxy = await startProxyFor(t, pki, { log: { access: true }, streams: [{ port, addresses: ['127.0.0.1'], upstream: echo.url }], hosts: { 's.test': { tls: cert, routes: [{ path: '/', upstream: 'http://127.0.0.1:1' }] } } }, [echo.close]);
  const payload = randomBytes(4 * 1024 * 1024);
  const c = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
  await once(c, 'connect');
  const received: Buffer[] = [];
  c.on('data', (d: Buffer) => received.push(d));
  const ended = once(c, 'end');
  c.end(payload); // half-close: the echo server sees the end after the payload and ends its side
  await ended;
  const back = Buffer.concat(received);
  assert.equal(back.length, payload.length);
  assert.equal(createHash('sha256').update(back).digest('hex'), createHash('sha256').update(payload).digest('hex'));
  c.destroy();
  for (let i = 0; i < 50 && !proxy.logs.some((l) => l.msg === 'stream'); i++) await new Promise((r) => setTimeout(r, 20));
  const line = proxy.logs.find((l) => l.msg === 'stream')!;
  assert.equal(line.upstream, echo.url);
  assert.equal(line.bytesIn, payload.length);
  assert.equal(line.bytesOut, payload.length);
});

test('the stream line and the stream failed line name the client address, though the line is written after its socket closed', async (t) => {
  const pki = await makePki();
  const echo = await echoServer('hi\n');
  const dead = await freePort();
  const port = await freePort();
  const deadPort = await freePort();
  const cert = await pki.issue('s', ['s.test']);
  const proxy = await startProxyFor(t, pki, {
    log: { access: true },
    streams: [
      { port, addresses: ['127.0.0.1'], upstream: echo.url },
      { port: deadPort, addresses: ['127.0.0.1'], upstream: `tcp://127.0.0.1:${dead}` },
    ],
    hosts: { 's.test': { tls: cert, routes: [{ path: '/', upstream: 'http://127.0.0.1:1' }] } },
  }, [echo.close]);
  const c = net.connect({ host: '127.0.0.1', port });
  assert.equal((await readBytes(c, 3)).toString(), 'hi\n');
  c.destroy();
  const d = net.connect({ host: '127.0.0.1', port: deadPort });
  d.on('error', () => {});
  await once(d, 'close');
  for (let i = 0; i < 50 && !(proxy.logs.some((l) => l.msg === 'stream') && proxy.logs.some((l) => l.msg === 'stream failed')); i++) await new Promise((r) => setTimeout(r, 20));
  const line = proxy.logs.find((l) => l.msg === 'stream');
  assert.equal(line?.['stream'], port);
  assert.equal(line?.['client'], '127.0.0.1');
  const failed = proxy.logs.find((l) => l.msg === 'stream failed');
  assert.equal(failed?.['stream'], deadPort);
  assert.equal(failed?.['client'], '127.0.0.1');
});

test('TLS passthrough routes by the ClientHello server name without terminating TLS', async (t) => {
  const pki = await makePki();
  const a = await tlsServer(pki, 'a.pass.test');
  const wild = await tlsServer(pki, 'x.wild.test');
  const fallback = await echoServer('fallback\n');
  const port = await freePort();
  const noFallbackPort = await freePort();
  const cert = await pki.issue('s', ['s.test']);
  const proxy = await startProxyFor(
    t,
    pki,
    {
      streams: [
        { port, addresses: ['127.0.0.1'], sni: { 'a.pass.test': a.url, '*.wild.test': wild.url }, upstream: fallback.url },
        { port: noFallbackPort, addresses: ['127.0.0.1'], sni: { 'a.pass.test': a.url } },
      ],
      hosts: { 's.test': { tls: cert, routes: [{ path: '/', upstream: 'http://127.0.0.1:1' }] } },
    },
    [a.close, wild.close, fallback.close],
  );
  const via = async (servername: string, p = port): Promise<{ peer: string; line: string }> => {
    const s = tls.connect({ host: '127.0.0.1', port: p, servername, ca: pki.caPem });
    await once(s, 'secureConnect');
    const peer = s.getPeerCertificate().subjectaltname ?? '';
    const line = (await readBytes(s, 5)).toString().split('\n')[0]!;
    s.destroy();
    return { peer, line };
  };
  // The client's TLS session is with the backend itself: its certificate, its greeting.
  assert.deepEqual(await via('a.pass.test'), { peer: 'DNS:a.pass.test', line: 'I am a.pass.test' });
  assert.deepEqual(await via('x.wild.test'), { peer: 'DNS:x.wild.test', line: 'I am x.wild.test' });
  // A name sent with a trailing dot or in capitals is the same name, as on the HTTPS listener.
  for (const spelled of ['a.pass.test.', 'A.Pass.TEST']) {
    const s = tls.connect({ host: '127.0.0.1', port, servername: spelled, rejectUnauthorized: false });
    await once(s, 'secureConnect');
    assert.equal((await readBytes(s, 5)).toString().split('\n')[0], 'I am a.pass.test', spelled);
    s.destroy();
  }
  // A name not listed goes to "upstream": here a plain TCP server, which the client's TLS can't talk to, but it got the bytes.
  const raw = net.connect({ host: '127.0.0.1', port });
  await once(raw, 'connect');
  const other = tls.connect({ socket: raw, servername: 'unknown.test', ca: pki.caPem });
  other.on('error', () => {});
  for (let i = 0; i < 50 && fallback.connections() === 0; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(fallback.connections(), 1);
  other.destroy();
  // Without "upstream", an unlisted name is closed before any byte reaches a target.
  const refused = tls.connect({ host: '127.0.0.1', port: noFallbackPort, servername: 'b.pass.test', ca: pki.caPem });
  const err = await once(refused, 'error').then(([e]) => e as NodeJS.ErrnoException);
  assert.match(String(err.code), /ECONNRESET|ERR_SSL|EPIPE/);
  for (let i = 0; i < 50 && !proxy.logs.some((l) => l.msg === 'stream failed'); i++) await new Promise((r) => setTimeout(r, 20));
  const failed = proxy.logs.find((l) => l.msg === 'stream failed')!;
  assert.equal(failed.sni, 'b.pass.test');
  assert.equal(failed.error, 'no target for server name "b.pass.test"');
});

test('a stream skips a target that refuses the connection, and closes idle connections', async (t) => {
  const pki = await makePki();
  const echo = await echoServer('hi\n');
  const dead = await freePort();
  const port = await freePort();
  const cert = await pki.issue('s', ['s.test']);
  await startProxyFor(t, pki, { streams: [{ port, addresses: ['127.0.0.1'], upstream: [`tcp://127.0.0.1:${dead}`, echo.url], idleTimeout: '300ms' }], hosts: { 's.test': { tls: cert, routes: [{ path: '/', upstream: 'http://127.0.0.1:1' }] } } }, [echo.close]);
  for (let i = 0; i < 2; i++) {
    const c = net.connect({ host: '127.0.0.1', port });
    const closed = once(c, 'close');
    assert.equal((await readBytes(c, 3)).toString(), 'hi\n');
    c.resume();
    const started = Date.now();
    await closed;
    const idle = Date.now() - started;
    assert.ok(idle >= 250 && idle < 3000, `closed after ${idle} ms idle`);
  }
  assert.equal(echo.connections(), 2);
});

test('ClientHello server names, and bad stream settings refused with their paths', async () => {
  // A real ClientHello, as Node's TLS client writes it.
  const hello = await captureHello('Mixed.Case.test');
  assert.equal(readServerName(hello), 'mixed.case.test');
  assert.equal(readServerName(hello.subarray(0, 40)), undefined, 'incomplete');
  assert.equal(readServerName(Buffer.from('GET / HTTP/1.1\r\n\r\n')), '', 'not TLS');

  const base = { listen: { https: { port: 8443 }, http: { port: 8080 } }, hosts: { 'a.test': { tls: { cert: 'c', key: 'k' }, routes: [{ path: '/', upstream: 'http://127.0.0.1:1' }] } } };
  const first = (streams: unknown): string => {
    const r = validateConfig({ ...base, streams });
    assert.equal(r.ok, false);
    return r.ok ? '' : `${r.issues[0]!.path}: ${r.issues[0]!.message}`;
  };
  assert.match(first([{ port: 5432 }]), /^streams\[0\]: a stream needs "upstream" \(plain TCP forwarding\) or "sni"/);
  assert.match(first([{ port: 5432, upstream: 'http://127.0.0.1:5432' }]), /^streams\[0\]\.upstream: expected a TCP target such as "tcp:\/\/127\.0\.0\.1:5432"/);
  assert.match(first([{ port: 5432, upstream: 'tcp://db.internal' }]), /^streams\[0\]\.upstream: expected a TCP target/);
  assert.match(first([{ port: 8443, upstream: 'tcp://127.0.0.1:1' }]), /^streams\[0\]\.port: port 8443 is already used by listen\.https/);
  assert.match(first([{ port: 9000, upstream: 'tcp://127.0.0.1:1' }, { port: 9000, upstream: 'tcp://127.0.0.1:2' }]), /^streams\[1\]\.port: port 9000 is already used by streams\[0\]/);
  assert.match(first([{ port: 9000, sni: { 'Not A Name': 'tcp://127.0.0.1:1' } }]), /^streams\[0\]\.sni/);
  assert.match(first([{ port: 9000, upstream: 'tcp://127.0.0.1:1', sendTimeout: 'soon' }]), /^streams\[0\]\.sendTimeout: expected a duration such as "500ms"/);
  assert.match(first([{ port: 9000, upstream: 'tcp://127.0.0.1:1', sendTimeout: '25d' }]), /^streams\[0\]\.sendTimeout: expected a duration of at most "24d"/);
  assert.equal(validateConfig({ ...base, streams: [{ port: 9000, sni: { '*.a.test': ['tcp://127.0.0.1:1', 'tcp://[::1]:2'] } }] }).ok, true);
});

/** The first bytes a Node TLS client sends for `servername` (its ClientHello), caught by a plain TCP server on 127.0.0.1. */
async function captureHello(servername: string): Promise<Buffer> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const got = once(server, 'connection').then(async ([sock]) => {
    const [data] = (await once(sock as net.Socket, 'data')) as [Buffer];
    (sock as net.Socket).destroy();
    return data;
  });
  const client = tls.connect({ host: '127.0.0.1', port: (server.address() as net.AddressInfo).port, servername });
  client.on('error', () => {});
  const hello = await got;
  client.destroy();
  server.close();
  return hello;
}

test('a reload changes where a stream goes; connections already open stay with their target', async (t) => {
  const pki = await makePki();
  const one = await echoServer('one\n');
  const two = await echoServer('two\n');
  const port = await freePort();
  const cert = await pki.issue('s', ['s.test']);
  const hosts = { 's.test': { tls: cert, routes: [{ path: '/', upstream: 'http://127.0.0.1:1' }] } };
  const proxy = await startProxyFor(t, pki, { streams: [{ port, addresses: ['127.0.0.1'], upstream: one.url }], hosts }, [one.close, two.close]);
  const first = net.connect({ host: '127.0.0.1', port });
  assert.equal((await readBytes(first, 4)).toString(), 'one\n');
  await proxy.reconfigure({ streams: [{ port, addresses: ['127.0.0.1'], upstream: two.url }], hosts });
  const second = net.connect({ host: '127.0.0.1', port });
  assert.equal((await readBytes(second, 4)).toString(), 'two\n');
  // The first connection still talks to "one".
  first.write('ping');
  assert.equal((await readBytes(first, 4)).toString(), 'ping');
  assert.equal(one.connections(), 1);
  first.destroy();
  second.destroy();
});

test('on stop, an open stream connection gets limits.shutdownTimeout, then is closed', async () => {
  const pki = await makePki();
  const echo = await echoServer('hi\n');
  const port = await freePort();
  const cert = await pki.issue('s', ['s.test']);
  const proxy = await startProxy(pki, { limits: { shutdownTimeout: '400ms' }, streams: [{ port, addresses: ['127.0.0.1'], upstream: echo.url }], hosts: { 's.test': { tls: cert, routes: [{ path: '/', upstream: 'http://127.0.0.1:1' }] } } });
  try {
    const c = net.connect({ host: '127.0.0.1', port });
    const closed = once(c, 'close');
    assert.equal((await readBytes(c, 3)).toString(), 'hi\n');
    c.resume();
    const started = Date.now();
    await proxy.stop();
    const took = Date.now() - started;
    await closed;
    assert.ok(took >= 350 && took < 3000, `stop waited ${took} ms for the open connection`);
  } finally {
    await echo.close();
    await pki.cleanup();
  }
});

/** A TCP server on 127.0.0.1:`port` that says `hello` to each connection and closes it. */
async function helloOn(port: number, hello: string): Promise<{ connections: () => number; close: () => Promise<void> }> {
  let count = 0;
  const server = net.createServer((s) => {
    count++;
    s.on('error', () => {});
    s.end(hello);
  });
  server.listen(port, '127.0.0.1');
  await once(server, 'listening');
  return { connections: () => count, close: () => new Promise<void>((r) => server.close(() => r())) };
}

test('stream healthCheck: a target that stops accepting is taken out and gets no connection, put back when it accepts again; with none left, connections close', async (t) => {
  const pki = await makePki();
  const [portA, portB, port] = [await freePort(), await freePort(), await freePort()];
  let a = await helloOn(portA, 'A');
  let b = await helloOn(portB, 'B');
  const cert = await pki.issue('s', ['s.test']);
  const urlA = `tcp://127.0.0.1:${portA}`;
  const urlB = `tcp://127.0.0.1:${portB}`;
  const proxy = await startProxyFor(
    t,
    pki,
    {
      streams: [{ port, addresses: ['127.0.0.1'], upstream: [urlA, urlB], healthCheck: { interval: '150ms', timeout: '100ms', unhealthyAfter: 1, healthyAfter: 1 } }],
      hosts: { 's.test': { tls: cert, routes: [{ path: '/', upstream: 'http://127.0.0.1:1' }] } },
    },
    [() => a.close(), () => b.close()],
  );
  const ask = async (): Promise<string> => {
    const c = net.connect({ host: '127.0.0.1', port });
    c.on('error', () => {});
    let got = '';
    c.on('data', (d: Buffer) => (got += d.toString()));
    await once(c, 'close');
    return got;
  };
  const waitLog = async (msg: string, url: string): Promise<void> => {
    for (let i = 0; i < 100 && !proxy.logs.some((l) => l.msg === msg && l.upstream === url); i++) await new Promise((r) => setTimeout(r, 20));
    assert.ok(proxy.logs.some((l) => l.msg === msg && l.upstream === url), `${msg} ${url}`);
  };
  const answers = async (n: number): Promise<string[]> => {
    const out: string[] = [];
    for (let i = 0; i < n; i++) out.push(await ask());
    return out.sort();
  };
  assert.deepEqual(await answers(4), ['A', 'A', 'B', 'B'], 'round-robin over both');

  await b.close();
  await waitLog('stream target down', urlB);
  const upOf = (url: string): number | undefined => metricValue(renderMetrics([takeSnapshot(proxy.portico)]), `portico_stream_target_up{upstream="${url}"}`);
  assert.equal(upOf(urlB), 0);
  const before = proxy.logs.filter((l) => l.msg === 'stream target unreachable, trying the next one').length;
  assert.deepEqual(await answers(4), ['A', 'A', 'A', 'A']);
  assert.equal(proxy.logs.filter((l) => l.msg === 'stream target unreachable, trying the next one').length, before, 'the target out of rotation was not even tried');

  b = await helloOn(portB, 'B');
  await waitLog('stream target up', urlB);
  assert.equal(upOf(urlB), 1);
  assert.deepEqual(await answers(4), ['A', 'A', 'B', 'B']);

  await a.close();
  await b.close();
  await waitLog('stream target down', urlA);
  for (let i = 0; i < 100 && proxy.logs.filter((l) => l.msg === 'stream target down' && l.upstream === urlB).length < 2; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(await ask(), '', 'no target left: the connection is closed');
  assert.ok(proxy.logs.some((l) => l.msg === 'stream failed' && /no target in rotation/.test(String(l.reason ?? l.error ?? ''))), JSON.stringify(proxy.logs.filter((l) => l.msg === 'stream failed')));
  a = await helloOn(portA, 'A');
  await waitLog('stream target up', urlA);
  assert.equal(await ask(), 'A');
});

test('stream healthCheck settings are checked with their paths', () => {
  const lines = (healthCheck: unknown): string[] => {
    const r = validateConfig({ streams: [{ port: 9000, upstream: 'tcp://127.0.0.1:1', healthCheck }], hosts: { 's.test': { tls: { cert: 'c.pem', key: 'k.pem' }, routes: [{ upstream: 'http://127.0.0.1:1' }] } } });
    return r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`);
  };
  assert.match(lines({ unhealthyAfter: 0 }).join('\n'), /^streams\[0\]\.healthCheck\.unhealthyAfter: /);
  assert.deepEqual(lines({ interval: '1s', timeout: '2s' }), ['streams[0].healthCheck.timeout: the health check "timeout" must not exceed its "interval", got "2s"']);
  assert.deepEqual(lines({}), [], 'defaults: every 10 s, 2 s to connect');
});

/** `hello` (one record, one ClientHello) with a padding extension (RFC 7685) of `pad` bytes put before its other extensions, lengths mended. */
function padHello(hello: Buffer, pad: number): Buffer {
  let p = 9 + 2 + 32;
  p += 1 + hello[p]!;
  p += 2 + hello.readUInt16BE(p);
  p += 1 + hello[p]!;
  const extLen = hello.readUInt16BE(p);
  const padding = Buffer.alloc(4 + pad);
  padding.writeUInt16BE(0x0015, 0);
  padding.writeUInt16BE(pad, 2);
  const out = Buffer.concat([hello.subarray(0, p), Buffer.from([0, 0]), padding, hello.subarray(p + 2)]);
  out.writeUInt16BE(extLen + padding.length, p);
  out.writeUInt16BE(out.length - 5, 3);
  out.writeUIntBE(out.length - 9, 6, 3);
  return out;
}

/** User and system CPU time of a process so far, in ms, from /proc/PID/stat (clock ticks of 10 ms). */
function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

test('a 16 KiB ClientHello trickled a byte at a time is read in linear time and routed whole by its server name', async (t) => {
  const pki = await makePki();
  const target = await echoServer();
  const received: Buffer[] = [];
  const sink = net.createServer((s) => s.on('data', (d: Buffer) => received.push(d)).on('error', () => {}));
  sink.listen(0, '127.0.0.1');
  await once(sink, 'listening');
  const port = await freePort();
  const cert = await pki.issue('s', ['s.test']);
  const sinkUrl = `tcp://127.0.0.1:${(sink.address() as net.AddressInfo).port}`;
  const proxy = await spawnProxy(pki, { streams: [{ port, addresses: ['127.0.0.1'], sni: { 'big.pass.test': sinkUrl }, upstream: target.url, helloTimeout: '5m' }], hosts: { 's.test': { tls: cert, routes: [{ path: '/', respond: { status: 204 } }] } } });
  t.after(async () => {
    await proxy.kill();
    await target.close();
    sink.close();
    await pki.cleanup();
  });
  // The server name comes last, after padding up to a 16,300-byte record (a record holds at most 16 KiB; Node 26's own
  // hello is larger than Node 20's): nothing can be routed before the whole record is in.
  const plain = await captureHello('big.pass.test');
  const hello = padHello(plain, 5 + 16_300 - 4 - plain.length);
  assert.equal(hello.length, 5 + 16_300);
  assert.equal(readServerName(hello), 'big.pass.test');
  const before = cpuMs(proxy.pid);
  const trickle = async (): Promise<void> => {
    const s = net.connect({ host: '127.0.0.1', port, noDelay: true });
    s.on('error', () => {});
    await once(s, 'connect');
    // One byte per write, 250 µs apart (about 4 s in all, as a slow attacker would send them): each reaches Portico as a read of its own.
    // On a loaded machine the trickle took over 40 s, hence helloTimeout above: this test is about CPU and bytes, not the timeout.
    for (let i = 0; i < hello.length; i++) {
      s.write(hello.subarray(i, i + 1));
      const next = performance.now() + 0.25;
      while (performance.now() < next) await new Promise((r) => setImmediate(r));
    }
    await new Promise((r) => setTimeout(r, 100));
    s.destroy();
  };
  await trickle();
  const spent = cpuMs(proxy.pid) - before;
  t.diagnostic(`cpu ${spent} ms`);
  for (let i = 0; i < 50 && Buffer.concat(received).length < hello.length; i++) await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(Buffer.concat(received), hello, 'the target got the ClientHello byte for byte');
  assert.equal(target.connections(), 0, 'nothing went to the fallback upstream');
  // Joined again on every read, such a hello costs Portico about 2.5 s of CPU (a fifth of a core for each slow client); gathered linearly, 0.3 to 0.6 s.
  assert.ok(spent < 1400, `Portico spent ${spent} ms of CPU on one trickled ClientHello`);
});

test('a client that ends its sending before its ClientHello is whole is closed at once, not at helloTimeout; a whole one sent with its FIN is still routed', async (t) => {
  const pki = await makePki();
  const target = await echoServer();
  const port = await freePort();
  const cert = await pki.issue('s', ['s.test']);
  const proxy = await startProxyFor(t, pki, { log: { level: 'info', access: true }, streams: [{ port, addresses: ['127.0.0.1'], sni: { 'a.pass.test': target.url } }], hosts: { 's.test': { tls: cert, routes: [{ path: '/', respond: { status: 204 } }] } } }, [target.close]);
  const hello = await captureHello('a.pass.test');
  const cut = net.connect({ host: '127.0.0.1', port });
  cut.on('error', () => {});
  await once(cut, 'connect');
  const started = performance.now();
  cut.end(hello.subarray(0, 40));
  cut.resume();
  await once(cut, 'close');
  const waited = performance.now() - started;
  assert.ok(waited < 2000, `closed after ${Math.round(waited)} ms (helloTimeout is 10 s)`);
  for (let i = 0; i < 50 && !proxy.logs.some((l) => l['msg'] === 'stream'); i++) await new Promise((r) => setTimeout(r, 20));
  const line = proxy.logs.find((l) => l['msg'] === 'stream');
  assert.equal(line?.['error'], 'client ended before its TLS ClientHello was whole', 'an info line, the client\'s doing, not a failed stream');
  assert.equal(proxy.logs.filter((l) => l['msg'] === 'stream failed').length, 0);
  assert.equal(target.connections(), 0);
  // The whole hello in the same write as the FIN: routed, and the target's echo comes back before the close.
  const whole = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
  whole.on('error', () => {});
  await once(whole, 'connect');
  whole.end(hello);
  const echoed = await readBytes(whole, hello.length);
  assert.deepEqual(echoed, hello);
  assert.equal(target.connections(), 1);
});
