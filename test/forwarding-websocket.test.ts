/** WebSockets (RFC 6455) through the proxy: messages both ways, close both ways, and the Host/SNI check on the upgrade. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import { execFileSync } from 'node:child_process';
import { setTimeout as delay } from 'node:timers/promises';
import net, { type AddressInfo } from 'node:net';
import tls from 'node:tls';
import WebSocket from 'ws';
import { wsEchoUpstream, type WsEchoUpstream } from './helpers/ws-echo-upstream.js';
import { makePki, startProxyFor, type TestPki, type TestProxy } from './helpers/proxy.js';
import { metricValue } from './helpers/admin.js';
import { takeSnapshot } from '../src/admin/snapshot.js';
import { renderMetrics } from '../src/admin/metrics.js';

async function setup(t: import('node:test').TestContext): Promise<{ pki: TestPki; proxy: TestProxy; up: WsEchoUpstream; other: WsEchoUpstream }> {
  const pki = await makePki();
  const up = await wsEchoUpstream({ greeting: 'hello' });
  const other = await wsEchoUpstream({ greeting: 'hello' });
  const a = await pki.issue('ws', ['ws.test']);
  const b = await pki.issue('other', ['other.test']);
  const proxy = await startProxyFor(t, pki, {
    hosts: {
      'ws.test': { tls: a, routes: [{ path: '/', upstream: up.url }] },
      'other.test': { tls: b, routes: [{ path: '/', upstream: other.url }] },
    },
  }, [() => up.close(), () => other.close()]);
  return { pki, proxy, up, other };
}

/** A ws client to the proxy with SNI and Host chosen apart. */
function connect(proxy: TestProxy, pki: TestPki, sni: string, host: string, path = '/chat'): WebSocket {
  // ws hands `servername` to tls.connect; its types do not list it.
  const options = { servername: sni, headers: { host }, ca: pki.caPem } as WebSocket.ClientOptions;
  return new WebSocket(`wss://127.0.0.1:${proxy.httpsPort}${path}`, options);
}

/** The next `n` messages of a socket, as [data, isBinary]. */
function nextMessages(ws: WebSocket, n: number): Promise<[Buffer, boolean][]> {
  return new Promise((resolve) => {
    const got: [Buffer, boolean][] = [];
    const onMessage = (data: WebSocket.RawData, isBinary: boolean): void => {
      got.push([data as Buffer, isBinary]);
      if (got.length === n) {
        ws.off('message', onMessage);
        resolve(got);
      }
    };
    ws.on('message', onMessage);
  });
}

test('WebSocket text and binary messages pass both ways through the proxy and a client close reaches the upstream', async (t) => {
  const { pki, proxy, up } = await setup(t);
  const ws = connect(proxy, pki, 'ws.test', 'ws.test');
  const greeting = nextMessages(ws, 1);
  await once(ws, 'open');
  assert.deepEqual((await greeting).map(([d, b]) => [d.toString(), b]), [['hello', false]], 'the upstream spoke first and the client heard it');
  assert.equal(up.upgrades.length, 1);
  assert.equal(up.upgrades[0]?.url, '/chat');
  assert.equal(up.upgrades[0]?.headers['x-forwarded-proto'], 'https');

  const binary = Buffer.from([0, 1, 2, 255, 254, 0, 128]);
  const big = Buffer.alloc(256 * 1024, 'x');
  const echoes = nextMessages(ws, 5);
  ws.send('one');
  ws.send(binary);
  ws.send('two ✓');
  ws.send(big, { binary: true });
  ws.send('three');
  const got = await echoes;
  assert.deepEqual(
    got.map(([d, isBinary]) => (isBinary ? ['binary', d.length, d.subarray(0, 7).toString('hex')] : ['text', d.toString()])),
    [
      ['text', 'one'],
      ['binary', 7, binary.toString('hex')],
      ['text', 'two ✓'],
      ['binary', big.length, big.subarray(0, 7).toString('hex')],
      ['text', 'three'],
    ],
  );
  assert.ok(got[3]?.[0].equals(big), 'the 256 KiB binary message came back byte for byte');
  const openUpgrades = (): number | undefined => metricValue(renderMetrics([takeSnapshot(proxy.portico)]), 'portico_open_upgraded_connections{host="ws.test",route="/"}');
  assert.equal(openUpgrades(), 1, 'the admin metrics count the open WebSocket');

  const [serverSide] = [...up.wss.clients];
  assert.ok(serverSide !== undefined);
  const serverClosed = once(serverSide, 'close') as Promise<[number, Buffer]>;
  const clientClosed = once(ws, 'close') as Promise<[number, Buffer]>;
  ws.close(4001, 'client done');
  const [code, reason] = await serverClosed;
  assert.equal(code, 4001);
  assert.equal(reason.toString(), 'client done');
  const [echoedCode] = await clientClosed;
  assert.equal(echoedCode, 4001, 'the close handshake completed through the proxy');
  for (let i = 0; i < 50 && openUpgrades() !== 0; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(openUpgrades(), 0, 'and no longer once it closed');
});

test('a WebSocket closed by the upstream is closed at the client with the same code and reason', async (t) => {
  const { pki, proxy, up } = await setup(t);
  const ws = connect(proxy, pki, 'ws.test', 'ws.test');
  const greeting = nextMessages(ws, 1);
  await once(ws, 'open');
  await greeting;
  const [serverSide] = [...up.wss.clients];
  assert.ok(serverSide !== undefined);
  const clientClosed = once(ws, 'close') as Promise<[number, Buffer]>;
  serverSide.close(4002, 'server done');
  const [code, reason] = await clientClosed;
  assert.equal(code, 4002);
  assert.equal(reason.toString(), 'server done');
});

test('a WebSocket connection dropped without a close frame on either side is dropped on the other side too', async (t) => {
  const { pki, proxy, up } = await setup(t);
  for (const dropper of ['client', 'upstream'] as const) {
    const ws = connect(proxy, pki, 'ws.test', 'ws.test');
    const greeting = nextMessages(ws, 1);
    await once(ws, 'open');
    await greeting;
    const serverSide = [...up.wss.clients].at(-1);
    assert.ok(serverSide !== undefined);
    const survivor = dropper === 'client' ? serverSide : ws;
    const closed = once(survivor, 'close') as Promise<[number, Buffer]>;
    const started = performance.now();
    (dropper === 'client' ? ws : serverSide).terminate();
    const [code] = await closed;
    assert.equal(code, 1006, `the ${dropper === 'client' ? 'upstream' : 'client'} saw an abnormal closure`);
    assert.ok(performance.now() - started < 1000, 'within a second');
  }
});

test('an open tunnel has TCP keep-alive on both of its connections, so a peer that vanished without a FIN is noticed', async (t) => {
  const { pki, proxy, up } = await setup(t);
  const ws = connect(proxy, pki, 'ws.test', 'ws.test');
  const greeting = nextMessages(ws, 1);
  await once(ws, 'open');
  await greeting;
  const upPort = new URL(up.url).port;
  // Portico's own two sockets of the tunnel, as the kernel sees them: the client's (local port: the HTTPS
  // listener) and the upstream's (remote port: the upstream). ss -o shows a keep-alive timer on a socket with SO_KEEPALIVE.
  const sockets = (filter: string): string[] =>
    execFileSync('ss', ['-tnoH', 'state', 'established', filter], { encoding: 'utf8' }).split('\n').filter((l) => l.trim() !== '');
  for (const [side, filter] of [['client', `( sport = :${proxy.httpsPort} )`], ['upstream', `( dport = :${upPort} )`]] as const) {
    // ss shows one timer per socket: while sent bytes wait for their ACK (a busy machine delays it) that is the
    // retransmission timer, "timer:(on,…)", and the keep-alive timer shows again once they are acknowledged.
    let lines = sockets(filter);
    for (let i = 0; i < 20 && lines.length === 1 && /timer:\(on,/.test(lines[0]!); i++) {
      await delay(100);
      lines = sockets(filter);
    }
    assert.equal(lines.length, 1, `one ${side} socket: ${lines.join(' | ')}`);
    assert.match(lines[0]!, /timer:\(keepalive,(59|60)sec,0\)/, `the ${side} side of the tunnel probes after 60 s idle`);
  }
  ws.close();
  await once(ws, 'close');
});

test('a half-close passes through a tunnel: a client that ends its sending still gets the upstream\'s answer, then both close', async (t) => {
  const pki = await makePki();
  // As Docker's attach: the upstream reads until the client's FIN, then answers and ends.
  const up = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {});
    let got = '';
    s.once('data', () => {
      s.write('HTTP/1.1 101 UPGRADED\r\nUpgrade: tcp\r\nConnection: Upgrade\r\n\r\n');
      s.on('data', (d: Buffer) => (got += d.toString('latin1')));
      s.once('end', () => setTimeout(() => s.end(`you sent: ${got}`), 100));
    });
  });
  up.listen(0, '127.0.0.1');
  await once(up, 'listening');
  const cert = await pki.issue('ws', ['ws.test']);
  const proxy = await startProxyFor(t, pki, { log: { level: 'info', access: true }, hosts: { 'ws.test': { tls: cert, routes: [{ path: '/', upstream: `http://127.0.0.1:${(up.address() as AddressInfo).port}` }] } } }, [() => up.close()]);
  const c = tls.connect({ host: '127.0.0.1', port: proxy.httpsPort, servername: 'ws.test', ca: pki.caPem });
  // It keeps reading after its own end (tls.connect takes this option, its types do not list it).
  c.allowHalfOpen = true;
  await once(c, 'secureConnect');
  let got = '';
  c.on('data', (d: Buffer) => (got += d.toString('latin1')));
  c.write('POST /containers/x/attach HTTP/1.1\r\nHost: ws.test\r\nUpgrade: tcp\r\nConnection: Upgrade\r\n\r\n');
  while (!got.includes('\r\n\r\n')) await new Promise((r) => setTimeout(r, 10));
  const ended = once(c, 'end');
  const closed = once(c, 'close');
  c.end('stdin data');
  await Promise.race([ended, new Promise((_, reject) => setTimeout(() => reject(new Error(`no end from Portico; got ${JSON.stringify(got)}`)), 3000))]);
  assert.equal(got.slice(got.indexOf('\r\n\r\n') + 4), 'you sent: stdin data', 'the answer sent after the client\'s FIN reached it');
  await closed;
  // Portico's side of the tunnel closed too: its access line is written then.
  for (let i = 0; i < 100 && !proxy.logs.some((l) => l['msg'] === 'access' && l['status'] === 101); i++) await new Promise((r) => setTimeout(r, 20));
  const line = proxy.logs.find((l) => l['msg'] === 'access' && l['status'] === 101);
  assert.ok(line !== undefined, 'the tunnel closed at Portico once both sides had ended');
  assert.equal(line['bytesIn'], 'stdin data'.length);
});

test('a WebSocket upgrade whose Host differs from the SNI gets 421 and never reaches either upstream', async (t) => {
  const { pki, proxy, up, other } = await setup(t);
  const ws = connect(proxy, pki, 'ws.test', 'other.test');
  const [, res] = (await once(ws, 'unexpected-response')) as [http.ClientRequest, http.IncomingMessage];
  assert.equal(res.statusCode, 421);
  const body = Buffer.concat(await res.toArray()).toString();
  assert.match(body, /Misdirected Request/);
  ws.on('error', () => {});
  ws.terminate();
  assert.equal(up.upgrades.length, 0);
  assert.equal(other.upgrades.length, 0);
  assert.equal(other.wss.clients.size, 0);
});
