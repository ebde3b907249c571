/**
 * How Portico's HTTP/1.1 server reads a client's request head and body framing (RFC 9112), against
 * the classic request-smuggling shapes: Host lines, absolute-form targets, Content-Length and
 * Transfer-Encoding variants, obs-fold, bare CR and LF, NUL, broken chunk sizes, odd request lines and
 * versions. Each request goes out as exact bytes over a raw TLS (or TCP) socket, and a raw TCP upstream
 * records the exact bytes it received, so every case either is refused before anything reaches the
 * upstream, or reaches it as one request with one framing.
 */
import { after, before, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { makePki, startProxy, type TestPki, type TestProxy } from './helpers/proxy.js';
import { RawClient } from './helpers/raw-http1.js';

const HOST = 'h1.test';
const OTHER = 'other.test';
const WS_HEAD = 'Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n';

/** What one upstream connection received: every byte, and whether a whole request (head and body by its framing) arrived. */
interface UpstreamConn {
  bytes: string;
  complete: boolean;
}

/**
 * A raw upstream: records each connection's bytes; once one whole request has arrived (its head, then a
 * body by Content-Length or ending in a last chunk), answers 200 "ok" with Connection: close. One request
 * per connection, so each connection's bytes are exactly one forwarded request.
 */
async function startRecordingUpstream(): Promise<{ url: string; conns: UpstreamConn[]; close(): Promise<void> }> {
  const conns: UpstreamConn[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    const rec: UpstreamConn = { bytes: '', complete: false };
    conns.push(rec);
    sockets.add(socket);
    socket.on('error', () => {});
    socket.once('close', () => sockets.delete(socket));
    socket.on('data', (c: Buffer) => {
      rec.bytes += c.toString('latin1');
      if (rec.complete) return;
      const end = rec.bytes.indexOf('\r\n\r\n');
      if (end === -1) return;
      const head = rec.bytes.slice(0, end).toLowerCase();
      const body = rec.bytes.slice(end + 4);
      const cl = /\r\ncontent-length: *(\d+)/.exec(head);
      const chunked = /\r\ntransfer-encoding: *chunked/.test(head);
      const done = chunked ? body.endsWith('0\r\n\r\n') : cl !== null ? body.length >= Number(cl[1]) : true;
      if (!done) return;
      rec.complete = true;
      socket.end('HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok');
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    conns,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

let pki: TestPki;
let proxy: TestProxy;
let up: Awaited<ReturnType<typeof startRecordingUpstream>>;

before(async () => {
  pki = await makePki();
  up = await startRecordingUpstream();
  const cert = await pki.issue('h1', [HOST]);
  const otherCert = await pki.issue('other', [OTHER]);
  proxy = await startProxy(pki, {
    hosts: {
      [HOST]: {
        tls: cert,
        routes: [
          { path: '/', upstream: up.url },
          // Closed to every client of these tests (all on 127.0.0.1).
          { path: '/admin', allowFrom: ['::1/128'], upstream: up.url },
        ],
      },
      [OTHER]: { tls: otherCert, routes: [{ path: '/', upstream: up.url }] },
    },
    limits: { shutdownTimeout: '1s' },
  });
});

after(async () => {
  await proxy?.stop();
  await up?.close();
  await pki?.cleanup();
});

/** The lines Portico adds to every request it forwards from a TLS client on 127.0.0.1 for HOST. */
const ADDED = `x-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: https\r\nx-forwarded-host: ${HOST}\r\n`;

/** Sends `text` on a new connection (TLS for HOST unless `plain`), reads one response, and waits for what the upstream got from it. */
async function exchange(t: TestContext, text: string, opts: { plain?: boolean } = {}): Promise<{ status: number; code: string | undefined; body: string; closed: boolean; location: string | undefined; upstream: UpstreamConn[] }> {
  const seenBefore = up.conns.length;
  const c = await RawClient.open(t, opts.plain === true ? { port: proxy.httpPort } : { port: proxy.httpsPort, tls: { servername: HOST, ca: pki.caPem } });
  await c.write(text).catch(() => {});
  const r = await c.response();
  const closed = r.headers.connection?.toLowerCase() === 'close' ? await c.closesWithin(1000) : false;
  // Anything the proxy still sends upstream for this request arrives within this.
  await delay(150);
  c.destroy();
  return { status: r.status, code: r.headers['x-portico-error'], body: r.text, closed, location: r.headers.location, upstream: up.conns.slice(seenBefore) };
}

/** Asserts a refusal: `status` (and `code` when given), the connection closed, and no request reaching the upstream whole. */
function assertRefused(what: string, r: Awaited<ReturnType<typeof exchange>>, status: number, code?: string): void {
  assert.equal(r.status, status, what);
  if (code !== undefined) assert.equal(r.code, code, what);
  assert.equal(r.closed, true, `${what}: the connection closes`);
  assert.deepEqual(
    r.upstream.filter((u) => u.complete).map((u) => u.bytes),
    [],
    `${what}: no request reached the upstream whole`,
  );
}

test('a request with two Host lines, the same or different, gets 400 PORTICO_DUPLICATE_HOST and a close, and reaches no upstream (an upgrade too)', async (t) => {
  const cases: [string, string][] = [
    ['the same Host twice', `GET /dup HTTP/1.1\r\nHost: ${HOST}\r\nHost: ${HOST}\r\n\r\n`],
    ['the SNI host, then another', `GET /dup HTTP/1.1\r\nHost: ${HOST}\r\nHost: ${OTHER}\r\n\r\n`],
    ['another host, then the SNI host', `GET /dup HTTP/1.1\r\nHost: ${OTHER}\r\nHost: ${HOST}\r\n\r\n`],
    ['an HTTP/1.0 request', `GET /dup HTTP/1.0\r\nHost: ${HOST}\r\nHost: ${OTHER}\r\n\r\n`],
    ['an absolute-form target', `GET https://${HOST}/dup HTTP/1.1\r\nHost: ${HOST}\r\nHost: ${OTHER}\r\n\r\n`],
    ['a WebSocket upgrade', `GET /dup HTTP/1.1\r\nHost: ${HOST}\r\nHost: ${OTHER}\r\n${WS_HEAD}\r\n`],
  ];
  for (const [what, text] of cases) {
    const r = await exchange(t, text);
    assertRefused(what, r, 400, 'PORTICO_DUPLICATE_HOST');
    assert.match(r.body, /more than one Host header/, what);
    assert.deepEqual(r.upstream, [], `${what}: nothing was sent upstream`);
  }
});

test('a Host with a space, a slash, user info, no name, an empty label or a port past 65535 gets 400 PORTICO_BAD_HOST and reaches no upstream', async (t) => {
  for (const host of [`h1 .test`, `${HOST}/x`, `u@${HOST}`, ':443', '', `${HOST}:`, `${HOST}..`, `.${HOST}`, `${HOST}:99999`, `${HOST}, ${OTHER}`]) {
    const r = await exchange(t, `GET /badhost HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
    assert.equal(r.status, 400, JSON.stringify(host));
    assert.equal(r.code, 'PORTICO_BAD_HOST', JSON.stringify(host));
    assert.deepEqual(r.upstream, [], JSON.stringify(host));
  }
});

test('an absolute-form https target is served by its authority, whatever the Host header says, and goes upstream in origin-form with that authority as Host', async (t) => {
  const cases: [string, string, string][] = [
    // [request target, Host header, what the upstream's request line and Host say]
    [`https://${HOST}/abs?q=1`, HOST, `GET /abs?q=1 HTTP/1.1\r\nhost: ${HOST}`],
    [`https://${HOST}/abs`, OTHER, `GET /abs HTTP/1.1\r\nhost: ${HOST}`],
    [`HTTPS://${HOST.toUpperCase()}.:${proxy.httpsPort}?x=1`, HOST, `GET /?x=1 HTTP/1.1\r\nhost: ${HOST.toUpperCase()}.:${proxy.httpsPort}`],
    [`https://${HOST}`, HOST, `GET / HTTP/1.1\r\nhost: ${HOST}`],
  ];
  for (const [target, host, line] of cases) {
    const r = await exchange(t, `GET ${target} HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
    assert.equal(r.status, 200, target);
    assert.equal(r.closed, false, target);
    const xfHost = line.slice(line.indexOf('host: ') + 6);
    assert.deepEqual(
      r.upstream.map((u) => u.bytes),
      [`${line}\r\n${ADDED.replace(`x-forwarded-host: ${HOST}`, `x-forwarded-host: ${xfHost}`)}\r\n`],
      target,
    );
  }
  // HTTP/1.0 needs no Host: the authority is the Host.
  const r10 = await exchange(t, `GET https://${HOST}/abs10 HTTP/1.0\r\n\r\n`);
  assert.equal(r10.status, 200);
  assert.deepEqual(r10.upstream.map((u) => u.bytes), [`GET /abs10 HTTP/1.1\r\nhost: ${HOST}\r\n${ADDED}\r\n`]);
});

test('an absolute-form target naming another host than the SNI gets 421 and reaches no upstream, even with a Host header naming the SNI (an upgrade too)', async (t) => {
  for (const text of [
    `GET https://${OTHER}/abs HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`,
    `GET https://${OTHER}:${proxy.httpsPort}/abs HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`,
    `GET https://${OTHER}/ws HTTP/1.1\r\nHost: ${HOST}\r\n${WS_HEAD}\r\n`,
  ]) {
    const r = await exchange(t, text);
    assertRefused(text, r, 421, 'PORTICO_SNI_HOST_MISMATCH');
    assert.deepEqual(r.upstream, [], text);
  }
});

test('an absolute-form target with another scheme, user info or a bad authority gets 400, and http:// on the HTTPS port 421, without reaching an upstream', async (t) => {
  const cases: [string, number, string][] = [
    [`ftp://${HOST}/x`, 400, 'PORTICO_BAD_TARGET'],
    [`https://user:pass@${HOST}/x`, 400, 'PORTICO_BAD_TARGET'],
    [`https://${HOST}@${OTHER}/x`, 400, 'PORTICO_BAD_TARGET'],
    ['https:///x', 400, 'PORTICO_BAD_HOST'],
    [`https://${HOST}:x/x`, 400, 'PORTICO_BAD_HOST'],
    [`http://${HOST}/x`, 421, 'PORTICO_SCHEME_MISMATCH'],
  ];
  for (const [target, status, code] of cases) {
    const r = await exchange(t, `GET ${target} HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`);
    assert.equal(r.status, status, target);
    assert.equal(r.code, code, target);
    assert.deepEqual(r.upstream, [], target);
  }
});

test('on the plain HTTP port, an absolute-form http:// target is redirected by its authority and an https:// one gets 421', async (t) => {
  const redirected = await exchange(t, `GET http://${HOST}/p?q=1 HTTP/1.1\r\nHost: ${OTHER}\r\n\r\n`, { plain: true });
  assert.equal(redirected.status, 308);
  assert.match(redirected.location ?? '', new RegExp(`^https://${HOST.replace('.', '\\.')}(:\\d+)?/p\\?q=1$`));
  const refused = await exchange(t, `GET https://${HOST}/p HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`, { plain: true });
  assertRefused('https:// on the plain port', refused, 421, 'PORTICO_SCHEME_MISMATCH');
});

test('a WebSocket upgrade with an absolute-form target goes upstream in origin-form with the authority as Host', async (t) => {
  const r = await exchange(t, `GET https://${HOST}/ws HTTP/1.1\r\nHost: ${OTHER}\r\n${WS_HEAD}\r\n`);
  assert.equal(r.upstream.length, 1);
  const head = r.upstream[0]!.bytes;
  assert.match(head, /^GET \/ws HTTP\/1\.1\r\n/);
  assert.match(head, new RegExp(`\r\nhost: ${HOST.replace('.', '\\.')}\r\n`));
  assert.doesNotMatch(head, new RegExp(OTHER.replace('.', '\\.')));
});

test('a request target with a "#" fragment gets 400 and reaches no upstream, so "/admin#x" cannot pass a closed "/admin" route by the "/" route to an upstream that drops the fragment', async (t) => {
  const closed = await exchange(t, `GET /admin HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`);
  assert.equal(closed.status, 403, 'the /admin route is closed to this client');
  for (const target of ['/admin#x', '/admin#/../x', '/x?a=1#b', `https://${HOST}/admin#x`]) {
    const r = await exchange(t, `GET ${target} HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`);
    assert.equal(r.status, 400, target);
    assert.deepEqual(r.upstream, [], target);
  }
});

/** Smuggling shapes refused outright: [what, request bytes, status, code]. */
const REFUSED: [string, string, number, string][] = [
  ['Content-Length and Transfer-Encoding', 'Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n', 400, 'PORTICO_MALFORMED_REQUEST'],
  ['two Content-Length lines, the same value', 'Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello', 400, 'PORTICO_MALFORMED_REQUEST'],
  ['two Content-Length lines, different values', 'Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!', 400, 'PORTICO_MALFORMED_REQUEST'],
  ['Content-Length: +5', 'Content-Length: +5\r\n\r\nhello', 400, 'PORTICO_MALFORMED_REQUEST'],
  ['Content-Length: 5, 5', 'Content-Length: 5, 5\r\n\r\nhello', 400, 'PORTICO_MALFORMED_REQUEST'],
  ['Content-Length: 0x5', 'Content-Length: 0x5\r\n\r\nhello', 400, 'PORTICO_MALFORMED_REQUEST'],
  ['Transfer-Encoding: chunked, identity', 'Transfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n', 400, 'PORTICO_MALFORMED_REQUEST'],
  ['Transfer-Encoding twice', 'Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n', 400, 'PORTICO_MALFORMED_REQUEST'],
  ['Transfer-Encoding : chunked (space before the colon)', 'Transfer-Encoding : chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n', 400, 'PORTICO_MALFORMED_REQUEST'],
  ['Transfer-Encoding: identity', 'Transfer-Encoding: identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n', 501, 'PORTICO_TRANSFER_ENCODING_UNSUPPORTED'],
  ['Transfer-Encoding: xchunked', 'Transfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n', 501, 'PORTICO_TRANSFER_ENCODING_UNSUPPORTED'],
  ['Transfer-Encoding: gzip, chunked', 'Transfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n', 501, 'PORTICO_TRANSFER_ENCODING_UNSUPPORTED'],
  ['obs-fold hiding Transfer-Encoding', 'X-A: a\r\n Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n', 400, 'PORTICO_MALFORMED_REQUEST'],
  ['obs-fold with a tab', 'X-A: a\r\n\tb\r\nContent-Length: 0\r\n\r\n', 400, 'PORTICO_MALFORMED_REQUEST'],
  ['a bare LF between header lines', 'X-A: 1\nContent-Length: 0\r\n\r\n', 400, 'PORTICO_MALFORMED_REQUEST'],
  ['a bare CR in a header line', 'X-A: 1\rContent-Length: 0\r\n\r\n', 400, 'PORTICO_MALFORMED_REQUEST'],
  ['a NUL in a header value', 'X-A: a\x00b\r\nContent-Length: 0\r\n\r\n', 400, 'PORTICO_MALFORMED_REQUEST'],
  ['a header name with a space', 'X A: 1\r\nContent-Length: 0\r\n\r\n', 400, 'PORTICO_MALFORMED_REQUEST'],
  ['a chunk size with 0x', 'Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n', 400, 'PORTICO_MALFORMED_REQUEST'],
  ['a chunk size with trailing junk', 'Transfer-Encoding: chunked\r\n\r\n5 junk\r\nhello\r\n0\r\n\r\n', 400, 'PORTICO_MALFORMED_REQUEST'],
  ['a chunk extension ended by a bare LF', 'Transfer-Encoding: chunked\r\n\r\n5;a=b\nhello\r\n0\r\n\r\n', 400, 'PORTICO_MALFORMED_REQUEST'],
  ['a chunk size ended by a bare LF', 'Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n', 400, 'PORTICO_MALFORMED_REQUEST'],
  ['chunk data longer than its size', 'Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n', 400, 'PORTICO_MALFORMED_REQUEST'],
  ['a chunk size that overflows 64 bits', `Transfer-Encoding: chunked\r\n\r\n${'f'.repeat(17)}\r\nhello\r\n0\r\n\r\n`, 400, 'PORTICO_MALFORMED_REQUEST'],
  ['Content-Length in the trailer', 'Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nContent-Length: 5\r\n\r\n', 400, 'PORTICO_MALFORMED_REQUEST'],
];

test('each smuggling shape of the head or the chunked body is refused and closed, and no request reaches the upstream whole', async (t) => {
  for (const [what, rest, status, code] of REFUSED) {
    // Behind the body, a second request that must never reach the upstream.
    const r = await exchange(t, `POST /smuggle HTTP/1.1\r\nHost: ${HOST}\r\n${rest}GET /smuggled HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`);
    assertRefused(what, r, status, code);
    assert.equal(r.upstream.some((u) => u.bytes.includes('/smuggled')), false, `${what}: the request behind it never reached the upstream`);
  }
});

test('Transfer-Encoding in an HTTP/1.0 request gets 400 and a close, even with a Content-Length, and reaches no upstream', async (t) => {
  for (const rest of ['Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n', 'Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello']) {
    const r = await exchange(t, `POST /te10 HTTP/1.0\r\nHost: ${HOST}\r\n${rest}`);
    assertRefused(rest, r, 400);
    assert.deepEqual(r.upstream, [], rest);
  }
  const r = await exchange(t, `POST /te10 HTTP/1.0\r\nHost: ${HOST}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`);
  assert.equal(r.code, 'PORTICO_BAD_TRANSFER_ENCODING');
});

test('a request line with a tab, or a version other than HTTP/1.x, is refused (HTTP/2.0 and HTTP/0.9 get 505), and the proxy keeps serving', async (t) => {
  const cases: [string, number, string][] = [
    [`GET\t/line HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`, 400, 'PORTICO_MALFORMED_REQUEST'],
    [`GET /line\tHTTP/1.1\r\nHost: ${HOST}\r\n\r\n`, 400, 'PORTICO_MALFORMED_REQUEST'],
    [`GET /line HTTP/1.2\r\nHost: ${HOST}\r\n\r\n`, 400, 'PORTICO_MALFORMED_REQUEST'],
    [`GET /line HTTP/2.0\r\nHost: ${HOST}\r\n\r\n`, 505, 'PORTICO_HTTP_VERSION'],
    [`GET /line HTTP/2.0\r\nHost: ${HOST}\r\n${WS_HEAD}\r\n`, 505, 'PORTICO_HTTP_VERSION'],
    [`GET /line\r\nHost: ${HOST}\r\n\r\n`, 505, 'PORTICO_HTTP_VERSION'],
  ];
  for (const [text, status, code] of cases) {
    const r = await exchange(t, text);
    assertRefused(JSON.stringify(text), r, status, code);
    assert.deepEqual(r.upstream, [], JSON.stringify(text));
  }
  const ok = await exchange(t, `GET /still HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`);
  assert.equal(ok.status, 200);
});

test('lenient but unambiguous shapes go upstream as one request with Portico\'s own framing: a tab before chunked, CHUNKED, zero-padded chunk sizes, two spaces in the request line, OWS around Content-Length', async (t) => {
  const chunkedHello = `POST /ok HTTP/1.1\r\nhost: ${HOST}\r\n${ADDED}transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`;
  const cases: [string, string, string][] = [
    ['Transfer-Encoding:<tab>chunked', `POST /ok HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding:\tchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`, chunkedHello],
    ['Transfer-Encoding: CHUNKED', `POST /ok HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: CHUNKED\r\n\r\n5\r\nhello\r\n0\r\n\r\n`, chunkedHello],
    ['a zero-padded chunk size', `POST /ok HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: chunked\r\n\r\n${'0'.repeat(20)}5\r\nhello\r\n0\r\n\r\n`, chunkedHello],
    ['Content-Length with spaces around it', `POST /ok HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length:  5 \r\n\r\nhello`, `POST /ok HTTP/1.1\r\nhost: ${HOST}\r\n${ADDED}content-length: 5\r\n\r\nhello`],
    ['a zero-padded Content-Length', `POST /ok HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: 005\r\n\r\nhello`, `POST /ok HTTP/1.1\r\nhost: ${HOST}\r\n${ADDED}content-length: 5\r\n\r\nhello`],
    ['Content-Length: 0 on a POST', `POST /ok HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: 0\r\n\r\n`, `POST /ok HTTP/1.1\r\nhost: ${HOST}\r\n${ADDED}content-length: 0\r\n\r\n`],
    ['two spaces in the request line', `GET  /ok HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`, `GET /ok HTTP/1.1\r\nhost: ${HOST}\r\n${ADDED}\r\n`],
  ];
  for (const [what, text, expected] of cases) {
    const r = await exchange(t, text);
    assert.equal(r.status, 200, what);
    assert.deepEqual(r.upstream.map((u) => u.bytes), [expected], what);
  }
});

test('a client that lists Content-Length or Transfer-Encoding in Connection cannot strip the framing of the body Portico forwards: the upstream gets one request, never the body as a second one', async (t) => {
  const smuggled = `GET /smuggled HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`;
  const byLength = await exchange(t, `POST /conn HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: ${smuggled.length}\r\nConnection: content-length\r\n\r\n${smuggled}`);
  assert.equal(byLength.status, 200);
  assert.deepEqual(byLength.upstream.map((u) => u.bytes), [`POST /conn HTTP/1.1\r\nhost: ${HOST}\r\n${ADDED}content-length: ${smuggled.length}\r\n\r\n${smuggled}`]);
  const chunked = await exchange(t, `POST /conn HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: chunked\r\nConnection: transfer-encoding, content-length\r\n\r\n5\r\nhello\r\n0\r\n\r\n`);
  assert.equal(chunked.status, 200);
  assert.deepEqual(chunked.upstream.map((u) => u.bytes), [`POST /conn HTTP/1.1\r\nhost: ${HOST}\r\n${ADDED}transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`]);
});

test('bytes sent behind a WebSocket upgrade head go upstream only after its 101: an upstream that declines the upgrade never reads them as a request', async (t) => {
  const r = await exchange(t, `GET /ws HTTP/1.1\r\nHost: ${HOST}\r\n${WS_HEAD}\r\nGET /smuggled HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`);
  assert.equal(r.status, 200, 'the upstream declined the upgrade with its own answer');
  assert.equal(r.upstream.length, 1);
  assert.doesNotMatch(r.upstream[0]!.bytes, /smuggled/);
  assert.match(r.upstream[0]!.bytes, /^GET \/ws HTTP\/1\.1\r\n[^]*\r\n\r\n$/);
});

test('an upgrade request with a body (Content-Length or chunked) gets 400 PORTICO_UPGRADE_WITH_BODY and reaches no upstream', async (t) => {
  for (const rest of ['Content-Length: 5\r\n\r\nhello', 'Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n']) {
    const r = await exchange(t, `GET /ws HTTP/1.1\r\nHost: ${HOST}\r\n${WS_HEAD}${rest}GET /smuggled HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`);
    assertRefused(rest, r, 400, 'PORTICO_UPGRADE_WITH_BODY');
    assert.deepEqual(r.upstream, [], rest);
  }
});

test('a head llhttp cannot read gets 400 with PORTICO_MALFORMED_REQUEST and its message; over maxHeaderSize, a request line gets 414 PORTICO_URI_TOO_LONG and header fields 431 PORTICO_HEADERS_TOO_LARGE', async (t) => {
  const bad = await exchange(t, `GET /x HTTP/1.1\r\nHost: ${HOST}\r\nX-A: a\r\n b\r\n\r\n`);
  assertRefused('obs-fold', bad, 400, 'PORTICO_MALFORMED_REQUEST');
  assert.match(bad.body, /not valid HTTP\/1\.1/);
  const big = await exchange(t, `GET /${'a'.repeat(20_000)} HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`);
  assertRefused('a 20 kB request target', big, 414, 'PORTICO_URI_TOO_LONG');
  assert.match(big.body, /^URI Too Long: the request line exceeds the size limit/);
  const header = await exchange(t, `GET /x HTTP/1.1\r\nHost: ${HOST}\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
  assertRefused('a 20 kB header field', header, 431, 'PORTICO_HEADERS_TOO_LARGE');
  assert.match(header.body, /headers exceed the size limit/);
});

test('an upgrade to h2c gets 400 and reaches no upstream: an upstream that took it would serve HTTP/2 requests Portico never routes', async (t) => {
  for (const upgrade of ['h2c', 'websocket, h2c', 'H2C']) {
    const r = await exchange(t, `GET / HTTP/1.1\r\nHost: ${HOST}\r\nUpgrade: ${upgrade}\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n`);
    assertRefused(upgrade, r, 400, 'PORTICO_BAD_REQUEST');
    assert.deepEqual(r.upstream, [], upgrade);
  }
});
