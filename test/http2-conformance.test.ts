/**
 * HTTP/2 request conformance (RFC 9113 §8.1–8.3) from a raw peer (test/helpers/raw-h2.ts), which sends
 * what node:http2's client refuses to: malformed requests are refused (stream reset with PROTOCOL_ERROR
 * by nghttp2, or 400 from Portico) and none of them reaches the upstream.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type http from 'node:http';
import { makePki, proxyOneHost, startProxyFor } from './helpers/proxy.js';
import { startUpstream } from './helpers/net.js';
import { FLAG, FRAME, H2_ERROR, RawH2, frame, headerBlock, requestFields, statusOf } from './helpers/raw-h2.js';

const HOST = 'h2-conformance.test';

interface UpstreamView {
  url: string;
  headers: http.IncomingHttpHeaders;
  trailers: http.IncomingHttpHeaders;
  body: string;
  /** The whole body arrived ('end'); false when the request was cut off. */
  complete: boolean;
}

async function setup(t: test.TestContext) {
  const got: UpstreamView[] = [];
  const up = await startUpstream((req, res) => {
    const view: UpstreamView = { url: req.url ?? '', headers: req.headers, trailers: {}, body: '', complete: false };
    got.push(view);
    req.on('data', (c: Buffer) => (view.body += c.toString()));
    req.on('end', () => {
      view.complete = true;
      view.trailers = req.trailers;
      res.end('ok');
    });
  });
  const pki = await makePki();
  const proxy = await proxyOneHost(t, pki, HOST, up.url, { also: [() => up.close()] });
  const connect = (): Promise<RawH2> => RawH2.connect(proxy.httpsPort, HOST, pki.caPem);
  return { got, connect };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

test('malformed HTTP/2 requests are refused and never reach the upstream, while a well-formed one on the same connection does', async (t) => {
  const { got, connect } = await setup(t);
  const c = await connect();
  t.after(() => c.close());
  const fields = (path: string, extra: [string, string][] = []): [string, string][] => requestFields(HOST, path, 'GET', extra);
  // Each: what is wrong, the header block, and the answer expected (a reset code, or a status).
  type Answer = { rst?: number; status?: number };
  const cases: [string, [string, string][], Answer | Answer[]][] = [
    ['connection', fields('/a', [['connection', 'keep-alive']]), { rst: H2_ERROR.PROTOCOL_ERROR }],
    ['transfer-encoding', fields('/a', [['transfer-encoding', 'chunked']]), { rst: H2_ERROR.PROTOCOL_ERROR }],
    ['keep-alive', fields('/a', [['keep-alive', 'timeout=5']]), { rst: H2_ERROR.PROTOCOL_ERROR }],
    ['upgrade', fields('/a', [['upgrade', 'websocket']]), { rst: H2_ERROR.PROTOCOL_ERROR }],
    ['proxy-connection', fields('/a', [['proxy-connection', 'keep-alive']]), { rst: H2_ERROR.PROTOCOL_ERROR }],
    ['te other than trailers', fields('/a', [['te', 'gzip']]), { rst: H2_ERROR.PROTOCOL_ERROR }],
    ['an upper-case header name', fields('/a', [['X-Upper', '1']]), { rst: H2_ERROR.PROTOCOL_ERROR }],
    ['an empty :path', fields(''), { rst: H2_ERROR.PROTOCOL_ERROR }],
    ['a :path without its leading slash', fields('a'), { rst: H2_ERROR.PROTOCOL_ERROR }],
    ['an absolute :path', fields('https://h2-conformance.test/a'), { rst: H2_ERROR.PROTOCOL_ERROR }],
    ['no :method', [[':scheme', 'https'], [':authority', HOST], [':path', '/a']], { rst: H2_ERROR.PROTOCOL_ERROR }],
    ['no :scheme', [[':method', 'GET'], [':authority', HOST], [':path', '/a']], { rst: H2_ERROR.PROTOCOL_ERROR }],
    ['no :path', [[':method', 'GET'], [':scheme', 'https'], [':authority', HOST]], { rst: H2_ERROR.PROTOCOL_ERROR }],
    ['a pseudo-header after a regular one', [[':method', 'GET'], [':scheme', 'https'], ['x-a', '1'], [':authority', HOST], [':path', '/a']], { rst: H2_ERROR.PROTOCOL_ERROR }],
    ['an unknown pseudo-header', [...fields('/a'), [':tunnel', '1']], { rst: H2_ERROR.PROTOCOL_ERROR }],
    ['two :path', [...fields('/a'), [':path', '/b']], { rst: H2_ERROR.PROTOCOL_ERROR }],
    // Portico's 400 where nghttp2 passes the field on (Node 20), nghttp2's own reset where it checks :authority (Node 26).
    ['userinfo in :authority', requestFields(`user:secret@${HOST}`, '/a'), [{ status: 400 }, { rst: H2_ERROR.PROTOCOL_ERROR }]],
    ['the http :scheme over TLS', [[':method', 'GET'], [':scheme', 'http'], [':authority', HOST], [':path', '/a']], { status: 400 }],
    ['an unknown :scheme', [[':method', 'GET'], [':scheme', 'gopher'], [':authority', HOST], [':path', '/a']], { status: 400 }],
  ];
  let sid = 1;
  for (const [what, block, expected] of cases) {
    c.request(sid, block);
    const answer = await c.answer(sid);
    const allowed = Array.isArray(expected) ? expected : [expected];
    assert.ok(allowed.some((a) => JSON.stringify(a) === JSON.stringify(answer)), `${what}: got ${JSON.stringify(answer)}, want ${allowed.map((a) => JSON.stringify(a)).join(' or ')}`);
    sid += 2;
  }
  assert.equal(got.length, 0, `nothing reached the upstream (got ${got.map((g) => g.url).join(', ')})`);
  assert.equal(c.closed, false, 'stream errors leave the connection open');
  c.request(sid, fields('/fine', [['te', 'trailers']]));
  assert.deepEqual(await c.answer(sid), { status: 200 }, 'TE: trailers is fine');
  assert.equal(got.length, 1);
  assert.equal(got[0]?.url, '/fine');
});

test('HTTP/2 header fields with a forbidden character in their name or value are dropped, never forwarded', async (t) => {
  const { got, connect } = await setup(t);
  const c = await connect();
  t.after(() => c.close());
  c.request(
    1,
    requestFields(HOST, '/fields', 'GET', [
      ['x-cr', 'a\rInjected: 1'],
      ['x-lf', 'a\nInjected: 2'],
      ['x-nul', 'a\0b'],
      ['x-space', ' padded'],
      ['x bad', 'name with a space'],
      ['x-kept', 'fine'],
    ]),
  );
  assert.deepEqual(await c.answer(1), { status: 200 });
  const h = got[0]?.headers ?? {};
  assert.equal(h['x-kept'], 'fine');
  for (const name of ['x-cr', 'x-lf', 'x-nul', 'x-space', 'x bad', 'injected']) assert.equal(h[name], undefined, name);
});

test('an HTTP/2 request body shorter or longer than its content-length is reset and the upstream never gets it as a complete request', async (t) => {
  const { got, connect } = await setup(t);
  for (const [declared, sent] of [
    [10, 'abc'],
    [2, 'abcdef'],
  ] as const) {
    const c = await connect();
    t.after(() => c.close());
    c.request(1, requestFields(HOST, '/upload', 'POST', [['content-length', String(declared)]]), false);
    // Let the request reach the upstream first, so the body's end is what must be caught.
    const before = got.length;
    const deadline = Date.now() + 5000;
    while (got.length === before && Date.now() < deadline) await sleep(10);
    assert.equal(got.length, before + 1, 'the request head went upstream');
    c.send(frame(FRAME.DATA, FLAG.END_STREAM, 1, Buffer.from(sent)));
    const answer = await c.answer(1);
    // A stream reset, or (Node 26) a connection error: a GOAWAY with an error code, and the connection closed.
    if (answer === undefined) assert.ok(((await c.goaway(100)) ?? 0) > 0, `content-length ${declared} with ${sent.length} bytes: neither a reset nor a GOAWAY with an error`);
    else assert.deepEqual(answer, { rst: H2_ERROR.PROTOCOL_ERROR }, `content-length ${declared} with ${sent.length} bytes`);
    await sleep(300);
    const view = got.at(-1)!;
    assert.equal(view.headers['content-length'], String(declared));
    assert.equal(view.complete, false, `the upstream did not see a complete request (body ${JSON.stringify(view.body)})`);
  }
});

test('HTTP/2 request trailers are dropped: the body reaches the upstream whole, without them', async (t) => {
  const { got, connect } = await setup(t);
  const c = await connect();
  t.after(() => c.close());
  c.request(1, requestFields(HOST, '/with-trailers', 'POST', [['te', 'trailers']]), false);
  c.send(frame(FRAME.DATA, 0, 1, Buffer.from('payload')));
  c.send(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 1, headerBlock([['x-checksum', 'abc']])));
  assert.deepEqual(await c.answer(1), { status: 200 });
  assert.equal(got.length, 1);
  assert.equal(got[0]?.body, 'payload');
  assert.equal(got[0]?.complete, true);
  assert.deepEqual(got[0]?.trailers, {});
});

test('an answer without a body to an HTTP/2 request whose body is still coming is sent, then the stream is closed with NO_ERROR (RFC 9113 §8.1)', async (t) => {
  const pki = await makePki();
  const cert = await pki.issue('early', ['early.test']);
  const proxy = await startProxyFor(t, pki, { hosts: { 'early.test': { tls: cert, routes: [{ path: '/', respond: { status: 204 } }] } } });
  const c = await RawH2.connect(proxy.httpsPort, 'early.test', pki.caPem);
  t.after(() => c.close());
  c.request(1, requestFields('early.test', '/', 'POST', [['content-length', '100000']]), false);
  c.send(frame(FRAME.DATA, 0, 1, Buffer.alloc(1000)));
  const rst = await c.waitFor((f) => f.stream === 1 && f.type === FRAME.RST_STREAM);
  const ofStream = c.frames.filter((f) => f.stream === 1).map((f) => f.type);
  // Node 26's nghttp2 dropped the HEADERS of a 204 for a reset sent right after it: the client saw only the reset.
  assert.deepEqual(ofStream, [FRAME.HEADERS, FRAME.RST_STREAM]);
  assert.equal(statusOf(c.frames.find((f) => f.stream === 1)!.payload), 204);
  assert.equal(rst!.payload.readUInt32BE(0), H2_ERROR.NO_ERROR);
});
