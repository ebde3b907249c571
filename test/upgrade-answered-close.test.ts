/**
 * An HTTP/1.1 upgrade answered instead of tunnelled (an upstream's declined answer relayed, or a refusal
 * of Portico's own) ends the client connection, which the HTTP/1.1 server no longer reads: the client's
 * FIN went unnoticed and Portico's side stayed open for the life of the process (src/http1/end-detached.ts).
 * Counted here on the HTTPS listener's TCP server, as the connections limits.maxConnections counts.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { once } from 'node:events';
import { setTimeout as delay } from 'node:timers/promises';
import { makePki, startProxyFor, type TestProxy } from './helpers/proxy.js';
import { startUpstream } from './helpers/net.js';
import { RawClient, rawUpgradeRequest } from './helpers/raw-http1.js';
import { LINGER_MS as DETACHED_LINGER_MS } from '../src/http1/end-detached.js';

function openConnections(proxy: TestProxy): Promise<number> {
  const servers = proxy.portico.https!.netServers;
  return Promise.all(servers.map((s: net.Server) => new Promise<number>((r) => s.getConnections((_e, n) => r(n))))).then((ns) => ns.reduce((a, b) => a + b, 0));
}

async function openConnectionsWithin(proxy: TestProxy, ms: number): Promise<number> {
  const end = performance.now() + ms;
  let n = await openConnections(proxy);
  while (n > 0 && performance.now() < end) {
    await delay(25);
    n = await openConnections(proxy);
  }
  return n;
}

async function setup(t: TestContext): Promise<{ proxy: TestProxy; ca: string }> {
  const pki = await makePki();
  // The answer comes after 100 ms, so a client may leave before it.
  const up = await startUpstream((_req, res) => {
    setTimeout(() => {
      res.writeHead(403, { 'content-type': 'text/plain' });
      res.end('denied');
    }, 100);
  });
  const cert = await pki.issue('a', ['a.test']);
  const proxy = await startProxyFor(t, pki, {
    hosts: { 'a.test': { tls: cert, routes: [{ path: '/', upstream: up.url }, { path: '/closed', upstream: up.url, allowFrom: ['127.0.0.2/32'] }] } },
  }, [() => up.close()]);
  return { proxy, ca: pki.caPem };
}

test('a declined upgrade whose client sent bytes after its request closes once the client closes (it stayed open for good)', async (t) => {
  const { proxy, ca } = await setup(t);
  // The bytes: a WebSocket client's first frame, sent before the answer (unread by anyone, they kept the
  // client's FIN from being seen).
  for (const leave of ['after the answer', 'before the answer'] as const) {
    const c = await RawClient.open(t, { port: proxy.httpsPort, tls: { servername: 'a.test', ca } });
    await c.write(rawUpgradeRequest('a.test', '/ws'));
    await delay(10);
    await c.write('\x81\x85abcd12345');
    if (leave === 'after the answer') {
      assert.equal((await c.response()).status, 403);
      c.socket.end();
    } else {
      c.destroy();
    }
    assert.equal(await openConnectionsWithin(proxy, 1000), 0, `client leaving ${leave}: Portico's side of the connection is still open`);
  }
  // Portico's own refusal (403 by allowFrom) ends through the same path.
  const c = await RawClient.open(t, { port: proxy.httpsPort, tls: { servername: 'a.test', ca } });
  await c.write(rawUpgradeRequest('a.test', '/closed'));
  assert.equal((await c.response()).status, 403);
  c.socket.end();
  assert.equal(await openConnectionsWithin(proxy, 1000), 0, "/closed: Portico's side of the connection is still open");
});

test('a declined upgrade whose client never closes is closed after the linger time', async (t) => {
  const { proxy, ca } = await setup(t);
  // Half-open: the client reads Portico's FIN and keeps its own side open.
  const raw = net.connect({ port: proxy.httpsPort, host: '127.0.0.1', allowHalfOpen: true });
  const c = tls.connect({ socket: raw, servername: 'a.test', ca, ALPNProtocols: ['http/1.1'] });
  c.on('error', () => {});
  t.after(() => c.destroy());
  raw.on('error', () => {});
  await once(c, 'secureConnect');
  c.write(rawUpgradeRequest('a.test', '/ws'));
  c.resume();
  await once(c, 'end');
  const ended = performance.now();
  assert.equal(await openConnections(proxy), 1);
  assert.equal(await openConnectionsWithin(proxy, DETACHED_LINGER_MS + 1500), 0);
  const waited = performance.now() - ended;
  assert.ok(waited > DETACHED_LINGER_MS - 1000, `closed after ${Math.round(waited)} ms`);
});
