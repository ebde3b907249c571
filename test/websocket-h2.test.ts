/**
 * WebSockets over HTTP/2 (RFC 8441, extended CONNECT) through the proxy to a real `ws` server: the
 * SETTINGS_ENABLE_CONNECT_PROTOCOL announcement, frames both ways, the subprotocol, the Host/SNI check,
 * an upstream that is down, the access line, plain requests beside an open WebSocket, the refusal
 * of a plain CONNECT and of another :protocol, a 101 with the wrong proof, an upstream cut off, the route
 * gates, and WebSockets opened and reset in a flood (rapid reset).
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import pino from 'pino';
import { Portico } from '../src/server/portico.js';
import { wsEchoUpstream, type WsEchoUpstream } from './helpers/ws-echo-upstream.js';
import { makePki, startProxyFor, waitForLog, type TestProxy, type TestPki } from './helpers/proxy.js';
import { freePort, h2Connect, h2Request } from './helpers/net.js';
import { webSocketAccept } from '../src/proxy/websocket-key.js';
import { RawClient } from './helpers/raw-http1.js';
import { FLAG, FRAME, H2_ERROR, RawH2, frame, headerBlock, requestFields } from './helpers/raw-h2.js';

/** One masked text frame (RFC 6455 §5.2), as a client sends it; `text` under 126 bytes. */
function maskedTextFrame(text: string): Buffer {
  const payload = Buffer.from(text);
  const mask = Buffer.from([0x37, 0xfa, 0x21, 0x3d]);
  const masked = Buffer.alloc(payload.length);
  for (let i = 0; i < payload.length; i++) masked[i] = (payload[i] as number) ^ (mask[i % 4] as number);
  return Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, masked]);
}

/** Reads one unmasked text frame (as a server sends it) from a stream; its text. */
function readTextFrame(stream: http2.ClientHttp2Stream): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      got = Buffer.concat([got, chunk]);
      if (got.length < 2 || got.length < 2 + ((got[1] as number) & 0x7f)) return;
      stream.off('data', onData);
      stream.off('close', onClose);
      stream.pause();
      if (got[0] !== 0x81 || ((got[1] as number) & 0x80) !== 0) return reject(new Error(`not an unmasked final text frame: ${got.toString('hex')}`));
      resolve(got.subarray(2, 2 + ((got[1] as number) & 0x7f)).toString());
    };
    const onClose = (): void => reject(new Error('the stream closed before a frame came'));
    stream.on('data', onData);
    stream.once('close', onClose);
    stream.resume();
  });
}

async function setup(t: TestContext, limits: Record<string, string> = {}): Promise<{ pki: TestPki; proxy: TestProxy; up: WsEchoUpstream }> {
  const pki = await makePki();
  const up = await wsEchoUpstream({ subprotocol: 'chat.v2' });
  const down = `http://127.0.0.1:${await freePort()}`;
  const a = await pki.issue('ws', ['ws.test']);
  const b = await pki.issue('other', ['other.test']);
  const proxy = await startProxyFor(
    t,
    pki,
    {
      log: { level: 'info', access: true },
      limits,
      hosts: {
        'ws.test': {
          tls: a,
          routes: [
            { path: '/', upstream: up.url },
            { path: '/down', upstream: down },
            { path: '/private', upstream: up.url, allowFrom: ['::1/128'] },
            { path: '/one', upstream: { targets: [up.url], maxRequests: 1 } },
            { path: '/fixed', respond: { status: 200, body: 'fixed' } },
            { path: '/quiet', upstream: { targets: [up.url], tunnelIdleTimeout: '1s' } },
          ],
        },
        'other.test': { tls: b, routes: [{ path: '/', upstream: up.url }] },
      },
    },
    [() => up.close()],
  );
  return { pki, proxy, up };
}

/** An HTTP/2 session to the proxy for `sni`, once the server's SETTINGS arrived; closed before the proxy stops. */
async function session(t: TestContext, proxy: TestProxy, pki: TestPki, sni = 'ws.test'): Promise<http2.ClientHttp2Session> {
  const s = await h2Connect(proxy.httpsPort, sni, pki.caPem);
  t.after(() => s.destroy());
  // The PING's answer comes after the server's SETTINGS, which a server sends first (RFC 9113 §3.4).
  await new Promise((resolve) => s.ping(resolve));
  return s;
}

function openWebSocket(s: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders = {}): http2.ClientHttp2Stream {
  const stream = s.request({ ':method': 'CONNECT', ':protocol': 'websocket', ':path': '/chat', ':authority': 'ws.test', 'sec-websocket-version': '13', ...headers });
  stream.on('error', () => {});
  return stream;
}

async function responseOf(stream: http2.ClientHttp2Stream): Promise<http2.IncomingHttpHeaders> {
  const [head] = (await once(stream, 'response')) as [http2.IncomingHttpHeaders];
  return head;
}

test('an HTTP/2 client opens a WebSocket with extended CONNECT: frames pass both ways, plain requests go on beside it, and its close reaches the upstream', async (t) => {
  const { pki, proxy, up } = await setup(t);
  const s = await session(t, proxy, pki);
  assert.equal(s.remoteSettings.enableConnectProtocol, true, 'SETTINGS_ENABLE_CONNECT_PROTOCOL=1 (RFC 8441 §3)');
  const ws = openWebSocket(s);
  const head = await responseOf(ws);
  assert.equal(head[':status'], 200);
  assert.equal(head['sec-websocket-accept'], undefined, 'the HTTP/1.1 handshake proof stays upstream');
  const upgrade = up.upgrades[0];
  assert.ok(upgrade !== undefined);
  assert.equal(upgrade.method, 'GET');
  assert.equal(upgrade.url, '/chat');
  assert.equal(upgrade.headers.upgrade, 'websocket');
  assert.equal(upgrade.headers['sec-websocket-version'], '13');
  assert.match(upgrade.headers['sec-websocket-key'] ?? '', /^[A-Za-z0-9+/]{22}==$/, 'a fresh 16-byte key');
  assert.equal(upgrade.headers['x-forwarded-proto'], 'https');

  ws.write(maskedTextFrame('hello over h2'));
  assert.equal(await readTextFrame(ws), 'hello over h2');
  const plain = await h2Request(s, { path: '/page', authority: 'ws.test' });
  assert.equal(plain.status, 200, 'an ordinary request on the same session while the WebSocket is open');
  assert.equal(plain.body.toString(), 'plain');
  ws.write(maskedTextFrame('still open'));
  assert.equal(await readTextFrame(ws), 'still open');

  const [serverSide] = [...up.wss.clients];
  assert.ok(serverSide !== undefined);
  const serverClosed = once(serverSide, 'close');
  ws.close(http2.constants.NGHTTP2_CANCEL);
  await serverClosed;
  // The tunnel has an access line once it closed.
  const line = await waitForLog(proxy, 'for the CONNECT', (l) => l.msg === 'access' && l.method === 'CONNECT');
  assert.equal(line.proto, 'h2');
  assert.equal(line.upgrade, 'websocket');
  assert.equal(line.status, 200);
  assert.equal(line.path, '/chat');
  assert.equal(line.host, 'ws.test');
  assert.equal(line.bytes, 2 + 13 + 2 + 10, 'the bytes sent to the client: the two echoed frames');
  assert.equal(line.bytesIn, 6 + 13 + 6 + 10, 'the bytes from the client: the two masked frames');
});

test('the client\'s Sec-WebSocket-Protocol goes upstream and the one the upstream chose comes back on the 200', async (t) => {
  const { pki, proxy, up } = await setup(t);
  const s = await session(t, proxy, pki);
  const ws = openWebSocket(s, { 'sec-websocket-protocol': 'chat.v1, chat.v2' });
  const head = await responseOf(ws);
  assert.equal(head[':status'], 200);
  assert.equal(head['sec-websocket-protocol'], 'chat.v2');
  assert.equal(up.upgrades[0]?.headers['sec-websocket-protocol'], 'chat.v1, chat.v2');
  ws.write(maskedTextFrame('with a subprotocol'));
  assert.equal(await readTextFrame(ws), 'with a subprotocol');
  // The client's END_STREAM reaches the upstream as a FIN; the upstream's FIN comes back as the stream's end.
  const [serverSide] = [...up.wss.clients];
  assert.ok(serverSide !== undefined);
  const serverClosed = once(serverSide, 'close');
  ws.end();
  ws.resume();
  await serverClosed;
  await once(ws, 'close');
  assert.equal(ws.rstCode, http2.constants.NGHTTP2_NO_ERROR, 'closed by both ends, not reset');
});

test('an extended CONNECT whose :authority is not the connection\'s host gets 421 and reaches no upstream', async (t) => {
  const { pki, proxy, up } = await setup(t);
  const s = await session(t, proxy, pki);
  const ws = openWebSocket(s, { ':authority': 'other.test' });
  const head = await responseOf(ws);
  assert.equal(head[':status'], 421);
  assert.equal(head['x-portico-error'], 'PORTICO_SNI_HOST_MISMATCH');
  ws.resume();
  await once(ws, 'close');
  assert.equal(ws.rstCode, http2.constants.NGHTTP2_NO_ERROR, 'the answered stream is closed by the proxy');
  assert.equal(up.upgrades.length, 0);
});

test('an extended CONNECT to an upstream that is down gets 502 with its access line', async (t) => {
  const { pki, proxy } = await setup(t);
  const s = await session(t, proxy, pki);
  const ws = openWebSocket(s, { ':path': '/down/chat' });
  const head = await responseOf(ws);
  assert.equal(head[':status'], 502);
  assert.equal(head['x-portico-error'], 'PORTICO_UPSTREAM_UNREACHABLE');
  const line = proxy.logs.find((l) => l.msg === 'access' && l.path === '/down/chat');
  assert.equal(line?.status, 502);
  assert.equal(line?.proto, 'h2');
  assert.equal(line?.method, 'CONNECT');
  ws.close();
});

test('a plain CONNECT gets 405 and another :protocol 501, each with its code, and the session serves on; over HTTP/1.1 a CONNECT gets the same 405', async (t) => {
  const { pki, proxy, up } = await setup(t);
  const s = await session(t, proxy, pki);
  const plain = s.request({ ':method': 'CONNECT', ':authority': 'elsewhere.test:443' });
  plain.on('error', () => {});
  const plainHead = await responseOf(plain);
  assert.equal(plainHead[':status'], 405);
  assert.equal(plainHead['x-portico-error'], 'PORTICO_CONNECT_REFUSED');
  const other = openWebSocket(s, { ':protocol': 'connect-udp' });
  const otherHead = await responseOf(other);
  assert.equal(otherHead[':status'], 501);
  assert.equal(otherHead['x-portico-error'], 'PORTICO_PROTOCOL_UNSUPPORTED');
  assert.equal(up.upgrades.length, 0);
  assert.equal((await h2Request(s, { path: '/after', authority: 'ws.test' })).status, 200);
  plain.close();
  other.close();
  // Over HTTP/1.1 a CONNECT gets the same 405 and code.
  const h1 = await RawClient.open(t, { port: proxy.httpsPort, tls: { servername: 'ws.test', ca: pki.caPem } });
  await h1.write('CONNECT elsewhere.test:443 HTTP/1.1\r\nHost: elsewhere.test:443\r\n\r\n');
  const h1Answer = await h1.response();
  assert.equal(h1Answer.status, 405);
  assert.equal(h1Answer.headers['x-portico-error'], 'PORTICO_CONNECT_REFUSED');
});

test('a 101 whose Sec-WebSocket-Accept was not made from the key sent gets 502, and an upstream connection cut off after its 101 resets the stream with CANCEL', async (t) => {
  // A raw upstream: "/bad" answers 101 with a wrong accept; "/cut" a correct 101, then resets the connection (TCP RST).
  const raw = net.createServer((socket) => {
    socket.on('error', () => {});
    socket.once('data', (chunk: Buffer) => {
      const head = chunk.toString('latin1');
      const key = /sec-websocket-key: *([^\r]+)/i.exec(head)?.[1] ?? '';
      const accept = head.startsWith('GET /bad') ? webSocketAccept('not the key') : webSocketAccept(key);
      socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
      if (head.startsWith('GET /cut')) setTimeout(() => socket.resetAndDestroy(), 50);
    });
  });
  raw.listen(0, '127.0.0.1');
  await once(raw, 'listening');
  const pki = await makePki();
  const cert = await pki.issue('ws', ['ws.test']);
  const upstream = `http://127.0.0.1:${(raw.address() as AddressInfo).port}`;
  const proxy = await startProxyFor(t, pki, { hosts: { 'ws.test': { tls: cert, routes: [{ path: '/', upstream }] } } }, [() => new Promise((r) => raw.close(r))]);
  const s = await session(t, proxy, pki);
  const bad = openWebSocket(s, { ':path': '/bad' });
  const badHead = await responseOf(bad);
  assert.equal(badHead[':status'], 502);
  assert.equal(badHead['x-portico-error'], 'PORTICO_UPSTREAM_FAILED');
  bad.close();
  const cut = openWebSocket(s, { ':path': '/cut' });
  assert.equal((await responseOf(cut))[':status'], 200);
  cut.resume();
  await once(cut, 'close');
  assert.equal(cut.rstCode, http2.constants.NGHTTP2_CANCEL);
});

test('the route gates of an HTTP/1.1 upgrade apply to a WebSocket over HTTP/2: allowFrom, a fixed 2xx answer refused with 501, and maxRequests holding a slot while it is open', async (t) => {
  const { pki, proxy, up } = await setup(t);
  const s = await session(t, proxy, pki);
  const outside = openWebSocket(s, { ':path': '/private/chat' });
  const outsideHead = await responseOf(outside);
  assert.equal(outsideHead[':status'], 403, 'a client outside allowFrom');
  assert.equal(outsideHead['x-portico-error'], 'PORTICO_FORBIDDEN');
  outside.close();
  // A fixed 2xx answer would tell an HTTP/2 client its WebSocket is open: 501 instead.
  const fixed = openWebSocket(s, { ':path': '/fixed' });
  const fixedHead = await responseOf(fixed);
  assert.equal(fixedHead[':status'], 501);
  assert.equal(fixedHead['x-portico-error'], 'PORTICO_PROTOCOL_UNSUPPORTED');
  fixed.close();
  assert.equal(up.upgrades.length, 0);

  const first = openWebSocket(s, { ':path': '/one/chat' });
  assert.equal((await responseOf(first))[':status'], 200);
  const second = openWebSocket(s, { ':path': '/one/chat' });
  const secondHead = await responseOf(second);
  assert.equal(secondHead[':status'], 503, 'the open WebSocket holds the target\'s one slot');
  assert.equal(secondHead['x-portico-error'], 'PORTICO_UPSTREAM_BUSY');
  assert.equal(secondHead['retry-after'], '1');
  second.close();
  first.close(http2.constants.NGHTTP2_CANCEL);
  await once(first, 'close');
  let third: http2.IncomingHttpHeaders | undefined;
  for (let i = 0; i < 50 && Number(third?.[':status']) !== 200; i++) {
    if (i > 0) await new Promise((r) => setTimeout(r, 20));
    const again = openWebSocket(s, { ':path': '/one/chat' });
    third = await responseOf(again);
    again.close();
  }
  assert.equal(third?.[':status'], 200, 'the slot is free once the WebSocket closed');
});

test('a client opening WebSockets over HTTP/2 and resetting them before their answer gets GOAWAY ENHANCE_YOUR_CALM and its connection closed; upstream connections stay bounded', async (t) => {
  // An upstream that takes each upgrade and never answers it, so every reset lands while Portico waits.
  const sockets = new Set<net.Socket>();
  let seen = 0;
  const raw = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    socket.once('data', () => seen++);
    socket.once('close', () => sockets.delete(socket));
  });
  raw.listen(0, '127.0.0.1');
  await once(raw, 'listening');
  const pki = await makePki();
  const cert = await pki.issue('ws', ['ws.test']);
  const upstream = `http://127.0.0.1:${(raw.address() as AddressInfo).port}`;
  const proxy = await startProxyFor(t, pki, { hosts: { 'ws.test': { tls: cert, routes: [{ path: '/', upstream }] } } }, [
    () =>
      new Promise((r) => {
        for (const s of sockets) s.destroy();
        raw.close(r);
      }),
  ]);
  const c = await RawH2.connect(proxy.httpsPort, 'ws.test', pki.caPem);
  t.after(() => c.close());
  const fields = headerBlock(requestFields('ws.test', '/chat', 'CONNECT', [[':protocol', 'websocket'], ['sec-websocket-version', '13']]));
  let sid = 1;
  let opened = 0;
  while (!c.closed && opened < 3000) {
    const first = sid;
    const seenBefore = seen;
    const batch: Buffer[] = [];
    for (let i = 0; i < 100; i++, sid += 2) batch.push(frame(FRAME.HEADERS, FLAG.END_HEADERS, sid, fields));
    if (!c.send(Buffer.concat(batch))) break;
    opened += 100;
    const deadline = Date.now() + 2000;
    while (seen < seenBefore + 100 && Date.now() < deadline && !c.closed) await new Promise((r) => setTimeout(r, 5));
    const resets: Buffer[] = [];
    for (let s = first; s < sid; s += 2) resets.push(frame(FRAME.RST_STREAM, 0, s, Buffer.from([0, 0, 0, H2_ERROR.CANCEL])));
    c.send(Buffer.concat(resets));
  }
  assert.equal(await c.goaway(5000), H2_ERROR.ENHANCE_YOUR_CALM);
  assert.equal(await c.waitClosed(5000), true, 'the connection is closed, not left open after its GOAWAY');
  assert.ok(seen <= 700, `at most about 512 reset WebSockets reach the upstream (saw ${seen} of ${opened} opened)`);
  for (let i = 0; i < 250 && sockets.size > 0; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(sockets.size, 0, 'every upstream connection of a reset WebSocket is closed');
});

test('tunnelIdleTimeout closes a WebSocket over HTTP/2 that moved no byte for that long, and keeps one with traffic', async (t) => {
  const { pki, proxy } = await setup(t);
  const s = await session(t, proxy, pki);
  const quiet = openWebSocket(s, { ':path': '/quiet/a' });
  const busy = openWebSocket(s, { ':path': '/quiet/b' });
  assert.equal((await responseOf(quiet))[':status'], 200);
  assert.equal((await responseOf(busy))[':status'], 200);
  const quietClosed = once(quiet, 'close').then(() => performance.now());
  const started = performance.now();
  // A frame every 250 ms on the busy one for 2.5 s: never idle for the second the route allows.
  for (let i = 0; i < 10; i++) {
    busy.write(maskedTextFrame(`tick ${i}`));
    assert.equal(await readTextFrame(busy), `tick ${i}`);
    await new Promise((r) => setTimeout(r, 250));
  }
  const closedAt = await Promise.race([quietClosed, new Promise<number>((r) => setTimeout(r, 1500, Number.NaN))]);
  assert.ok(!Number.isNaN(closedAt), 'the quiet one closed within 4 s');
  assert.ok(closedAt - started >= 900 && closedAt - started < 2600, `the quiet one closed after ${Math.round(closedAt - started)} ms`);
  assert.equal(busy.closed, false, 'the busy one is still open');
  busy.write(maskedTextFrame('still here'));
  assert.equal(await readTextFrame(busy), 'still here');
  const line = await waitForLog(proxy, 'for /quiet/a', (l) => l.msg === 'access' && l.path === '/quiet/a', 0, 2500);
  assert.equal(line.reason, 'idle timeout');
  busy.close();
});

test('a quiet WebSocket over HTTP/2 outlives its session\'s idle GOAWAY and the grace after it, in which a session that cannot end is closed', async (t) => {
  const { pki, proxy } = await setup(t, { keepAliveTimeout: '500ms', sendTimeout: '1s' });
  const s = await session(t, proxy, pki);
  const goaway = new Promise<number>((resolve) => s.once('goaway', (code: number) => resolve(code)));
  const ws = openWebSocket(s);
  assert.equal((await responseOf(ws))[':status'], 200);
  ws.write(maskedTextFrame('before'));
  assert.equal(await readTextFrame(ws), 'before');
  // keepAliveTimeout (0.5 s) sends GOAWAY; sendTimeout (1 s) later, and a second after, the session is looked at again.
  assert.equal(await Promise.race([goaway, new Promise((r) => setTimeout(r, 3000, 'none'))]), http2.constants.NGHTTP2_NO_ERROR, 'GOAWAY after keepAliveTimeout');
  await new Promise((r) => setTimeout(r, 2600));
  assert.equal(ws.closed, false, 'the WebSocket is still open');
  ws.write(maskedTextFrame('after'));
  assert.equal(await readTextFrame(ws), 'after');
  ws.close();
});

test('after the idle GOAWAY and its grace have passed with a quiet WebSocket open, a client that then stops reading has the connection closed once its output has not moved for sendTimeout (at most twice that), not kept for good', async (t) => {
  // An upstream that answers "flood" with 16 MiB, more than the sockets between it and a client that stopped reading hold.
  const up = await wsEchoUpstream({
    serve: (ws) =>
      ws.on('message', () => {
        const chunk = Buffer.alloc(512 * 1024, 0x61);
        for (let i = 0; i < 32; i++) ws.send(chunk);
      }),
  });
  const pki = await makePki();
  const cert = await pki.issue('ws', ['ws.test']);
  const proxy = await startProxyFor(
    t,
    pki,
    { limits: { keepAliveTimeout: '500ms', sendTimeout: '1s' }, hosts: { 'ws.test': { tls: cert, routes: [{ path: '/', upstream: { targets: [up.url], tunnelIdleTimeout: '3s' } }] } } },
    [() => up.close()],
  );
  // Windows wide open (SETTINGS_INITIAL_WINDOW_SIZE and the connection's), so flow control holds nothing back: the sockets do.
  const c = await RawH2.connect(proxy.httpsPort, 'ws.test', pki.caPem, Buffer.from([0, 4, 0x7f, 0xff, 0xff, 0xff]));
  t.after(() => c.close());
  const increment = Buffer.alloc(4);
  increment.writeUInt32BE(0x7fffffff - 65535);
  c.send(frame(FRAME.WINDOW_UPDATE, 0, 0, increment));
  c.send(frame(FRAME.HEADERS, FLAG.END_HEADERS, 1, headerBlock(requestFields('ws.test', '/chat', 'CONNECT', [[':protocol', 'websocket'], ['sec-websocket-version', '13']]))));
  assert.deepEqual(await c.answer(1), { status: 200 });
  // Quiet: GOAWAY after keepAliveTimeout (0.5 s); the grace after it (sendTimeout, 1 s) passes with the WebSocket open.
  assert.equal(await c.goaway(3000), H2_ERROR.NO_ERROR);
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(c.closed, false, 'the session waits for its WebSocket, as its GOAWAY promised');
  // Now the client stops reading and asks for more than the sockets hold. Node's session timeout has fired
  // already (the grace) and is not re-armed by what the TLS socket writes; tunnelIdleTimeout (3 s) holds off while
  // a write drains. Without another look the session stayed open for good with the rest of the 16 MiB unsent.
  c.socket.pause();
  c.send(frame(FRAME.DATA, 0, 1, maskedTextFrame('flood')));
  await new Promise((r) => setTimeout(r, 4000));
  // A client that reads nothing sees no FIN: it learns of the close from the reset its next writes meet.
  for (let i = 0; i < 10 && !c.closed; i++) {
    c.send(frame(FRAME.PING, 0, 0, Buffer.alloc(8)));
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(c.closed, true, 'the connection was closed');
});

test('a WebSocket over HTTP/2 reaches the upstream with the forwarding headers of a request over HTTP/2: Via "2 portico", Forwarded, X-Forwarded-*', async (t) => {
  const pki = await makePki();
  const up = await wsEchoUpstream();
  const cert = await pki.issue('ws', ['ws.test']);
  const proxy = await startProxyFor(t, pki, { forwarding: { via: true, forwarded: true }, hosts: { 'ws.test': { tls: cert, routes: [{ path: '/', upstream: up.url }] } } }, [() => up.close()]);
  const s = await session(t, proxy, pki);
  const ws = openWebSocket(s, { 'x-real-ip': '::1', 'x-forwarded-for': '::1', 'x-forwarded-port': '8443' });
  assert.equal((await responseOf(ws))[':status'], 200);
  const upgrade = up.upgrades[0];
  assert.ok(upgrade !== undefined);
  assert.equal(upgrade.headers.via, '2 portico', 'the protocol the client spoke, as for a request over HTTP/2');
  assert.equal(upgrade.headers.forwarded, 'for=127.0.0.1;host="ws.test";proto=https');
  assert.equal(upgrade.headers['x-forwarded-for'], '127.0.0.1');
  assert.equal(upgrade.headers['x-forwarded-port'], undefined);
  assert.equal(upgrade.headers['x-real-ip'], undefined);
  ws.close(http2.constants.NGHTTP2_CANCEL);
});

test('listen.https.websocketsOverHttp2: false announces no extended CONNECT, and HTTP/2 requests are served as before', async (t) => {
  const pki = await makePki();
  const cert = await pki.issue('ws', ['ws.test']);
  const port = await freePort();
  const file = join(pki.dir, 'portico.json');
  await writeFile(file, JSON.stringify({ listen: { https: { port, addresses: ['127.0.0.1'], websocketsOverHttp2: false }, http: null }, certsDir: pki.dir, hosts: { 'ws.test': { tls: cert, routes: [{ respond: { body: 'plain' } }] } } }));
  const portico = new Portico(file, pino({ level: 'silent' }));
  t.after(async () => {
    await portico.stop();
    await pki.cleanup();
  });
  await portico.start();
  const s = await h2Connect(port, 'ws.test', pki.caPem);
  t.after(() => s.destroy());
  await new Promise((resolve) => s.ping(resolve));
  assert.equal(s.remoteSettings.enableConnectProtocol, false, 'SETTINGS_ENABLE_CONNECT_PROTOCOL not announced');
  const r = await h2Request(s, { path: '/' });
  assert.deepEqual([r.status, r.body.toString()], [200, 'plain']);
});
