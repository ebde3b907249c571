/** Graceful shutdown: new connections are refused, the request in flight still gets its whole response, then the proxy is gone. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import pino from 'pino';
import WebSocket from 'ws';
import { makePki, proxyOneHost, startProxyFor } from './helpers/proxy.js';
import { spawnProxy } from './helpers/child-proxy.js';
import { canConnect, freePort, h1Request, h2Connect, h2Request, startUpstream } from './helpers/net.js';
import { Portico } from '../src/server/portico.js';
import { upgradeUpstream } from './helpers/upgrade-upstream.js';

const BODY = 'slow-but-complete:'.padEnd(64 * 1024, '.');

/** An upstream that answers after 600 ms, with a body long enough to need several writes. */
function startSlowUpstream(): ReturnType<typeof startUpstream> {
  return startUpstream((_req, res) => {
    setTimeout(() => {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(BODY) });
      res.end(BODY);
    }, 600);
  });
}

async function waitForSeen(seen: unknown[], n: number): Promise<void> {
  const deadline = Date.now() + 3000;
  while (seen.length < n) {
    if (Date.now() > deadline) throw new Error('the upstream never saw the request');
    await delay(10);
  }
}

test('stop() refuses new connections but lets in-flight HTTP/1.1 and HTTP/2 requests finish with complete responses', async (t) => {
  const pki = await makePki();
  const up = await startSlowUpstream();
  const proxy = await proxyOneHost(t, pki, 'down.test', up.url, { also: [() => up.close()] });
  const session = await h2Connect(proxy.httpsPort, 'down.test', pki.caPem);
  t.after(() => session.destroy());
  const h1 = h1Request({ port: proxy.httpsPort, sni: 'down.test', path: '/h1', ca: pki.caPem });
  const h2 = h2Request(session, { path: '/h2' });
  await waitForSeen(up.seen, 2);
  const started = performance.now();
  const stopped = proxy.stop();
  await delay(50);
  assert.equal(await canConnect(proxy.httpsPort), false, 'new connections are refused while stopping');
  const [r1, r2] = await Promise.all([h1, h2]);
  assert.equal(r1.status, 200);
  assert.equal(r1.text, BODY, 'the HTTP/1.1 response arrived whole');
  assert.equal(r2.status, 200);
  assert.equal(r2.text, BODY, 'the HTTP/2 response arrived whole');
  await stopped;
  const ms = performance.now() - started;
  assert.ok(ms < 5000, `stop() returned after ${Math.round(ms)} ms, well before the 10 s shutdown deadline`);
});

test('SIGTERM makes the CLI refuse new connections, finish the request in flight and exit 0', async (t) => {
  const pki = await makePki();
  const up = await startSlowUpstream();
  const cert = await pki.issue('d', ['down.test']);
  const child = await spawnProxy(pki, { hosts: { 'down.test': { tls: cert, routes: [{ path: '/', upstream: up.url }] } } });
  t.after(async () => {
    await child.kill();
    await up.close();
    await pki.cleanup();
  });
  const inFlight = h1Request({ port: child.httpsPort, sni: 'down.test', path: '/term', ca: pki.caPem });
  await waitForSeen(up.seen, 1);
  child.proc.kill('SIGTERM');
  await delay(100);
  assert.equal(await canConnect(child.httpsPort), false, 'new connections are refused after SIGTERM');
  const r = await inFlight;
  assert.equal(r.status, 200);
  assert.equal(r.text, BODY, 'the in-flight response arrived whole');
  const code = await Promise.race([child.exited, delay(5000).then(() => 'still running')]);
  assert.equal(code, 0, 'the process exited cleanly');
  assert.ok(child.logs.some((l) => l.msg === 'stopped'), 'it logged its shutdown');
});

test('a start that cannot open its http port throws PORTICO_LISTEN_FAILED and closes the https listener it had already opened', async (t) => {
  const pki = await makePki();
  t.after(() => pki.cleanup());
  const cert = await pki.issue('s', ['start.test']);
  const httpsPort = await freePort();
  const taken = net.createServer();
  taken.listen(0, '127.0.0.1');
  await once(taken, 'listening');
  t.after(() => new Promise<void>((r) => taken.close(() => r())));
  const httpPort = (taken.address() as net.AddressInfo).port;
  const configFile = join(pki.dir, 'taken.json');
  await writeFile(
    configFile,
    JSON.stringify({
      listen: { https: { port: httpsPort, addresses: ['127.0.0.1'] }, http: { port: httpPort, addresses: ['127.0.0.1'] } },
      certsDir: pki.dir,
      hosts: { 'start.test': { tls: cert, routes: [{ path: '/', upstream: 'http://127.0.0.1:9' }] } },
    }),
  );
  const portico = new Portico(configFile, pino({ level: 'silent' }));
  await assert.rejects(portico.start(), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'PORTICO_LISTEN_FAILED');
    assert.match(err.message, new RegExp(`127\\.0\\.0\\.1:${httpPort} \\(EADDRINUSE\\)`));
    return true;
  });
  // The https port was opened first; nothing may be left listening on it.
  assert.equal(await canConnect(httpsPort), false, 'the https listener was left open');
});

test('stop() keeps a WebSocket tunnel on the plain HTTP listener working until the shutdown deadline, then closes it, and returns once it is closed', async (t) => {
  const pki = await makePki();
  const up = await upgradeUpstream();
  const tls = await pki.issue('plain.test', ['plain.test']);
  const proxy = await startProxyFor(t, pki, { hosts: { 'plain.test': { tls, plainHttp: 'serve', routes: [{ path: '/', upstream: up.url }] } }, limits: { shutdownTimeout: '1s' } }, [up.close]);
  const ws = new WebSocket(`ws://127.0.0.1:${proxy.httpPort}/ws`, { headers: { host: 'plain.test' } });
  await once(ws, 'open');
  const closed = once(ws, 'close');
  const echo = (text: string): Promise<string> => {
    const got = once(ws, 'message').then(([m]) => String(m));
    ws.send(text);
    return got;
  };
  assert.equal(await echo('before'), 'before');
  const started = performance.now();
  const stopped = proxy.stop();
  await delay(300);
  assert.equal(await canConnect(proxy.httpPort), false, 'new connections are refused while stopping');
  assert.equal(await echo('while stopping'), 'while stopping', 'the tunnel still works before the deadline');
  await stopped;
  const ms = performance.now() - started;
  assert.ok(ms >= 800, `stop() returned after ${Math.round(ms)} ms, before the 1 s deadline closed the tunnel`);
  assert.ok(ms < 5000, `stop() returned after ${Math.round(ms)} ms`);
  await Promise.race([closed, delay(1000).then(() => assert.fail('the tunnel is still open after stop() returned'))]);
});
