/**
 * The byte counts of a tunnel's access line (src/proxy/upgrade-client*.ts): `bytes` is what Portico handed to the
 * client after the 101 (HTTP/2: the 200), `bytesIn` what it received from the client after its request head, the
 * WebSocket frames whole (their headers included), HTTP/2 frame headers not; exact for tunnels that close
 * normally, over HTTP/1.1 and HTTP/2, with known amounts each way; bytes a client sent before the upstream's 101
 * are counted; an HTTP/2 WebSocket cancelled because its client stopped reading counts the DATA it was sent, not
 * what Portico read from the upstream.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net, { type AddressInfo } from 'node:net';
import tls from 'node:tls';
import { setTimeout as delay } from 'node:timers/promises';
import WebSocket from 'ws';
import { makePki, startProxyFor, waitForLog, type TestPki, type TestProxy } from './helpers/proxy.js';
import { h2Connect } from './helpers/net.js';
import { FRAME, RawH2, requestFields } from './helpers/raw-h2.js';
import { wsEchoUpstream } from './helpers/ws-echo-upstream.js';

const HOST = 'bytes.test';
/** Message sizes that take each of WebSocket's three length encodings (RFC 6455 §5.2: 7 bits, 16 bits, 64 bits). */
const SIZES = [10, 200, 70_000];
const GREETING = 'hello';
/** A 16 KiB message, sent without end by the upstream's "/flood". */
const MESSAGE = Buffer.alloc(16 * 1024, 0x61);

/** The size of a WebSocket frame with `payload` bytes: its header, and the 4-byte mask of a client's frame. */
function frameBytes(payload: number, masked: boolean): number {
  return payload + (payload < 126 ? 2 : payload < 65_536 ? 4 : 10) + (masked ? 4 : 0);
}

/** What the client is sent (the greeting, then each message echoed) and what it sends (each message, masked). */
const EXPECTED_OUT = frameBytes(GREETING.length, false) + SIZES.reduce((n, s) => n + frameBytes(s, false), 0);
const EXPECTED_IN = SIZES.reduce((n, s) => n + frameBytes(s, true), 0);

/** One masked binary frame, as a client sends it. */
function maskedFrame(payload: Buffer): Buffer {
  const n = payload.length;
  const head = n < 126 ? Buffer.from([0x82, 0x80 | n]) : Buffer.alloc(n < 65_536 ? 4 : 10);
  if (n >= 126) {
    head[0] = 0x82;
    head[1] = 0x80 | (n < 65_536 ? 126 : 127);
    if (n < 65_536) head.writeUInt16BE(n, 2);
    else head.writeBigUInt64BE(BigInt(n), 2);
  }
  const mask = Buffer.from([0x12, 0x34, 0x56, 0x78]);
  const body = Buffer.alloc(n);
  for (let i = 0; i < n; i++) body[i] = (payload[i] as number) ^ (mask[i % 4] as number);
  return Buffer.concat([head, mask, body]);
}

async function setup(t: TestContext, rawUpstream?: string): Promise<{ pki: TestPki; proxy: TestProxy }> {
  const pki = await makePki();
  const up = await wsEchoUpstream({
    serve(ws, req) {
      ws.on('error', () => {});
      if (req.url === '/flood') {
        const timer = setInterval(() => {
          while (ws.readyState === ws.OPEN && ws.bufferedAmount < 1024 * 1024) ws.send(MESSAGE);
        }, 5);
        ws.once('close', () => clearInterval(timer));
        return;
      }
      ws.send(GREETING);
      ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    },
  });
  const cert = await pki.issue('bytes', [HOST]);
  const routes = [{ path: '/', upstream: up.url }, ...(rawUpstream === undefined ? [] : [{ path: '/raw', upstream: rawUpstream }])];
  const proxy = await startProxyFor(t, pki, { log: { level: 'info', access: true }, limits: { sendTimeout: '1s' }, hosts: { [HOST]: { tls: cert, routes } } }, [() => up.close()]);
  return { pki, proxy };
}

function tunnelLine(proxy: TestProxy, proto: string, path: string): Promise<Record<string, unknown>> {
  return waitForLog(proxy, `for the ${proto} tunnel to ${path}`, (l) => l['msg'] === 'access' && l['proto'] === proto && l['path'] === path, 0, 8000);
}

test('a WebSocket\'s access line counts exactly the bytes each way after the heads, WebSocket frame headers included, over HTTP/1.1 and HTTP/2', async (t) => {
  const { pki, proxy } = await setup(t);
  // HTTP/1.1, with ws's client; it is cut off (no close frames) once every echo came back, so that only the messages count.
  const ws = new WebSocket(`wss://127.0.0.1:${proxy.httpsPort}/h1`, { servername: HOST, headers: { host: HOST }, ca: pki.caPem } as WebSocket.ClientOptions);
  let messages = 0;
  ws.on('message', () => messages++);
  await once(ws, 'open');
  for (const size of SIZES) ws.send(Buffer.alloc(size, 0x31));
  while (messages < 1 + SIZES.length) await delay(10);
  ws.terminate();
  const h1 = await tunnelLine(proxy, 'http/1.1', '/h1');
  assert.equal(h1['status'], 101);
  assert.deepEqual([h1['bytes'], h1['bytesIn']], [EXPECTED_OUT, EXPECTED_IN], 'HTTP/1.1: the frames each way, without the 101 and the request head');

  // HTTP/2 (RFC 8441), the same frames as DATA; the stream is cancelled once every echo came back.
  const s = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => s.destroy());
  const stream = s.request({ ':method': 'CONNECT', ':protocol': 'websocket', ':path': '/h2', ':authority': HOST, 'sec-websocket-version': '13' });
  stream.on('error', () => {});
  let received = 0;
  stream.on('data', (chunk: Buffer) => (received += chunk.length));
  await once(stream, 'response');
  for (const size of SIZES) stream.write(maskedFrame(Buffer.alloc(size, 0x31)));
  while (received < EXPECTED_OUT) await delay(10);
  stream.close();
  const h2 = await tunnelLine(proxy, 'h2', '/h2');
  assert.equal(h2['status'], 200);
  assert.equal(received, EXPECTED_OUT);
  assert.deepEqual([h2['bytes'], h2['bytesIn']], [EXPECTED_OUT, EXPECTED_IN], 'HTTP/2: the same, without the HTTP/2 frame headers');
});

test('an HTTP/1.1 upgrade counts the bytes its client sent before the upstream\'s 101, which wait for the tunnel and go through it', async (t) => {
  // An upstream that answers 300 ms after the request head, then sends 5 bytes; it keeps what it got.
  let got = '';
  const raw = net.createServer((sock) => {
    sock.on('error', () => {});
    let answered = false;
    sock.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (answered || !got.includes('\r\n\r\n')) return;
      answered = true;
      setTimeout(() => sock.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: tcp\r\nConnection: Upgrade\r\n\r\nHELLO'), 300);
    });
  });
  raw.listen(0, '127.0.0.1');
  await once(raw, 'listening');
  t.after(() => raw.close());
  const { pki, proxy } = await setup(t, `http://127.0.0.1:${(raw.address() as AddressInfo).port}`);
  const c = tls.connect({ host: '127.0.0.1', port: proxy.httpsPort, servername: HOST, ca: pki.caPem, ALPNProtocols: ['http/1.1'] });
  c.on('error', () => {});
  t.after(() => c.destroy());
  await once(c, 'secureConnect');
  let answer = '';
  c.on('data', (d: Buffer) => (answer += d.toString('latin1')));
  // 5 bytes with the head, 5 while the upstream has not answered, 5 once the tunnel is open.
  c.write(`GET /raw HTTP/1.1\r\nHost: ${HOST}\r\nUpgrade: tcp\r\nConnection: Upgrade\r\n\r\nEARLY`);
  await delay(100);
  c.write('LATE1');
  while (!answer.includes('HELLO')) await delay(10);
  c.write('AFTER');
  while (!got.endsWith('AFTER')) await delay(10);
  c.end();
  const line = await tunnelLine(proxy, 'http/1.1', '/raw');
  assert.equal(got.slice(got.indexOf('\r\n\r\n') + 4), 'EARLYLATE1AFTER', 'all 15 bytes reached the upstream');
  assert.deepEqual([line['bytes'], line['bytesIn']], [5, 15], 'and all 15 are counted (the 5 sent before the 101 were not)');
});

test('an HTTP/2 WebSocket cancelled after sendTimeout because its client stopped reading counts the DATA the client was sent, not what Portico read from the upstream', async (t) => {
  const { pki, proxy } = await setup(t);
  // A raw HTTP/2 client never sends WINDOW_UPDATE: it can be sent 65,535 bytes of DATA (the initial windows, RFC
  // 9113 §6.9.2), and the flooding upstream's bytes pile up in Portico until sendTimeout cancels the stream.
  const c = await RawH2.connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => c.close());
  c.request(1, requestFields(HOST, '/flood', 'CONNECT', [[':protocol', 'websocket'], ['sec-websocket-version', '13']]), false);
  const line = await tunnelLine(proxy, 'h2', '/flood');
  assert.equal(line['reason'], 'send timeout');
  const rst = await c.waitFor((f) => f.stream === 1 && f.type === FRAME.RST_STREAM);
  assert.ok(rst !== undefined, 'the stream was cancelled');
  const sent = c.frames.filter((f) => f.stream === 1 && f.type === FRAME.DATA).reduce((n, f) => n + f.payload.length, 0);
  assert.equal(sent, 65_535, 'the client was sent its window');
  // Portico had read about 48 KiB more from the upstream (114,716 bytes were logged). The write nghttp2 was taking
  // when the stream was cancelled is counted whole: of its 65,536 bytes, the last one had no window left.
  const bytes = line['bytes'] as number;
  assert.ok(bytes >= sent && bytes - sent < 16 * 1024, `bytes ${bytes} is the ${sent} sent, within the write in progress`);
});
