/**
 * 103 Early Hints (RFC 8297) from HTTP/1.1 and HTTP/2 upstreams reach HTTP/2 and HTTP/1.1 clients before the
 * final response, without hop-by-hop headers; never HTTP/1.0 clients, nor routes with "earlyHints": false;
 * 100 and 102 from upstreams are dropped; the cache and the access line keep the final response only.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { join } from 'node:path';
import { writeFile } from 'node:fs/promises';
import { listenH2 } from './helpers/h2-upstream.js';
import { checkHosts, makePki, startProxyFor, type TestProxy } from './helpers/proxy.js';
import { h2Connect, startUpstream } from './helpers/net.js';
import { curl, rawTlsExchange, requireTool } from './helpers/real-peers.js';

const HOST = 'hints.test';
/** A host with "earlyHints": false, its one route inheriting it. */
const QUIET = 'quiet.test';
const CSS = '</style.css>; rel=preload; as=style';
const JS = '</app.js>; rel=preload; as=script';

/** HTTP/1.1 upstream: `/hints` sends two 103s (Node's writeEarlyHints) then 200; `/hop` a 103 with hop-by-hop fields; `/102` a 102 and a 100 first; `/broken` a 103, then the connection closed. */
function answerH1(req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse): void {
  const path = (req.url ?? '/').replace(/^\/[a-z0-9]+/, '');
  if (path.startsWith('/hop')) {
    res.writeEarlyHints({ link: CSS, connection: 'x-secret', 'x-secret': 'hop', 'keep-alive': 'timeout=5', 'x-kept': 'yes' });
  } else if (path.startsWith('/102')) {
    res.writeProcessing();
    res.writeContinue();
    res.writeEarlyHints({ link: CSS });
  } else if (path.startsWith('/broken')) {
    res.writeEarlyHints({ link: CSS });
    setTimeout(() => req.socket.destroy(), 30);
    return;
  } else if (path.startsWith('/hints')) {
    res.writeEarlyHints({ link: CSS });
    res.writeEarlyHints({ link: JS });
  }
  setTimeout(() => {
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=60' });
    res.end('final');
  }, 30);
}

/** HTTP/2 upstream (h2c): `/hints` sends two 103 HEADERS frames, `/102` a 102 and a 103, then 200. */
function answerH2(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
  const path = String(headers[':path']);
  if (path.endsWith('/hints')) {
    stream.additionalHeaders({ ':status': 103, link: CSS });
    stream.additionalHeaders({ ':status': 103, link: JS });
  } else if (path.endsWith('/102')) {
    stream.additionalHeaders({ ':status': 102 });
    stream.additionalHeaders({ ':status': 103, link: CSS });
  }
  setTimeout(() => {
    if (stream.destroyed) return;
    stream.respond({ ':status': 200, 'content-type': 'text/plain' });
    stream.end('final');
  }, 30);
}

interface Setup {
  proxy: TestProxy;
  ca: string;
  caFile: string;
}

/** Portico for HOST: /h1 → the HTTP/1.1 upstream, /h2 → the h2c one, /off → the HTTP/1.1 one with earlyHints false, /cached → it with the cache. */
async function setup(t: TestContext): Promise<Setup> {
  const pki = await makePki();
  const caFile = join(pki.dir, 'ca.pem');
  await writeFile(caFile, pki.caPem);
  const h1 = await startUpstream(answerH1);
  const h2server = http2.createServer();
  h2server.on('stream', answerH2);
  const h2 = await listenH2(h2server, 'h2c');
  const tls = await pki.issue('hints', [HOST]);
  const quietTls = await pki.issue('quiet', [QUIET]);
  const proxy = await startProxyFor(t, pki, {
    hosts: {
      [HOST]: {
        tls,
        routes: [
          { path: '/h1', upstream: h1.url },
          { path: '/h2', upstream: h2.url },
          { path: '/h2off', upstream: h2.url, earlyHints: false },
          { path: '/off', upstream: h1.url, earlyHints: false },
          { path: '/cached', upstream: h1.url, cache: true },
        ],
      },
      [QUIET]: { tls: quietTls, earlyHints: false, routes: [{ path: '/', upstream: h1.url }] },
    },
  }, [() => h1.close(), () => h2.close()]);
  return { proxy, ca: pki.caPem, caFile };
}

/** The response heads curl -v printed ("< " lines), as one status line and its fields each. */
function curlHeads(stderr: string): { status: string; fields: string[] }[] {
  const heads: { status: string; fields: string[] }[] = [];
  for (const raw of stderr.split('\n')) {
    if (!raw.startsWith('< ')) continue;
    const line = raw.slice(2).trim();
    if (line.startsWith('HTTP/')) heads.push({ status: line, fields: [] });
    else if (line !== '' && heads.length > 0) heads[heads.length - 1]!.fields.push(line.toLowerCase());
  }
  return heads;
}

/** Each 1xx HEADERS block (status and fields) Node's HTTP/2 client got before the response, and the response's status and body. */
async function h2Hints(port: number, ca: string, path: string, host = HOST): Promise<{ hints: http2.IncomingHttpHeaders[]; status: number; body: string }> {
  const session = await h2Connect(port, host, ca);
  try {
    return await new Promise((resolve, reject) => {
      const stream = session.request({ ':path': path });
      const hints: http2.IncomingHttpHeaders[] = [];
      let status = 0;
      let body = '';
      stream.on('headers', (h) => hints.push(h));
      stream.on('response', (h) => {
        status = Number(h[':status']);
      });
      stream.setEncoding('utf8');
      stream.on('data', (c: string) => (body += c));
      stream.on('end', () => resolve({ hints, status, body }));
      stream.on('error', reject);
      stream.end();
    });
  } finally {
    session.close();
  }
}

test('an HTTP/2 client gets each 103 of an HTTP/1.1 upstream before the 200, as curl shows', async (t) => {
  if (!requireTool(t, 'curl')) return;
  const { proxy, caFile } = await setup(t);
  const r = await curl({ host: HOST, port: proxy.httpsPort, caFile, path: '/h1/hints', args: ['-v', '--http2'] });
  assert.equal(r.code, 0, r.stderr);
  const heads = curlHeads(r.stderr);
  assert.deepEqual(heads.map((h) => h.status), ['HTTP/2 103', 'HTTP/2 103', 'HTTP/2 200'], r.stderr);
  assert.ok(heads[0]!.fields.includes(`link: ${CSS}`), r.stderr);
  assert.ok(heads[1]!.fields.includes(`link: ${JS}`), r.stderr);
  assert.match(r.stdout, /final$/);
});

test('an HTTP/1.1 client gets "HTTP/1.1 103 Early Hints" with the link before the 200, as curl shows', async (t) => {
  if (!requireTool(t, 'curl')) return;
  const { proxy, caFile } = await setup(t);
  for (const path of ['/h1/hints', '/h2/hints']) {
    const r = await curl({ host: HOST, port: proxy.httpsPort, caFile, path, args: ['-v', '--http1.1'] });
    assert.equal(r.code, 0, r.stderr);
    const heads = curlHeads(r.stderr);
    assert.deepEqual(heads.map((h) => h.status), ['HTTP/1.1 103 Early Hints', 'HTTP/1.1 103 Early Hints', 'HTTP/1.1 200 OK'], `${path}: ${r.stderr}`);
    assert.ok(heads[0]!.fields.includes(`link: ${CSS}`), r.stderr);
    assert.ok(heads[1]!.fields.includes(`link: ${JS}`), r.stderr);
    assert.match(r.stdout, /final$/);
  }
});

test('an HTTP/2 upstream\'s 103 HEADERS frames reach an HTTP/2 client, as curl and Node\'s client see them', async (t) => {
  if (!requireTool(t, 'curl')) return;
  const { proxy, ca, caFile } = await setup(t);
  const r = await curl({ host: HOST, port: proxy.httpsPort, caFile, path: '/h2/hints', args: ['-v', '--http2'] });
  assert.equal(r.code, 0, r.stderr);
  const heads = curlHeads(r.stderr);
  assert.deepEqual(heads.map((h) => h.status), ['HTTP/2 103', 'HTTP/2 103', 'HTTP/2 200'], r.stderr);
  assert.ok(heads[0]!.fields.includes(`link: ${CSS}`), r.stderr);
  const got = await h2Hints(proxy.httpsPort, ca, '/h2/hints');
  assert.equal(got.status, 200);
  assert.equal(got.body, 'final');
  assert.deepEqual(got.hints.map((h) => [h[':status'], h['link']]), [[103, CSS], [103, JS]]);
});

test('Node\'s HTTP/2 client gets an HTTP/1.1 upstream\'s 103s in its headers event, and the access line has the 200', async (t) => {
  const { proxy, ca } = await setup(t);
  const got = await h2Hints(proxy.httpsPort, ca, '/h1/hints');
  assert.equal(got.status, 200);
  assert.equal(got.body, 'final');
  assert.deepEqual(got.hints.map((h) => [h[':status'], h['link']]), [[103, CSS], [103, JS]]);
  const lines = proxy.logs.filter((l) => l['msg'] === 'access' && l['path'] === '/h1/hints');
  assert.equal(lines.length, 1);
  assert.equal(lines[0]!['status'], 200);
});

test('an HTTP/1.0 client never gets a 103, from either kind of upstream', async (t) => {
  const { proxy, ca } = await setup(t);
  for (const path of ['/h1/hints', '/h2/hints']) {
    const r = await rawTlsExchange({ port: proxy.httpsPort, sni: HOST, ca, text: `GET ${path} HTTP/1.0\r\nHost: ${HOST}\r\n\r\n` });
    assert.match(r.raw, /^HTTP\/1\.1 200 OK\r\n/, `${path}: ${r.raw}`);
    assert.doesNotMatch(r.raw, /103|Early Hints|style\.css/, `${path}: ${r.raw}`);
    assert.match(r.raw, /final$/);
  }
});

test('"earlyHints": false on a route or a host keeps the upstream\'s 103s from HTTP/2 and HTTP/1.1 clients', async (t) => {
  const { proxy, ca } = await setup(t);
  for (const [host, path] of [[HOST, '/off/hints'], [HOST, '/h2off/hints'], [QUIET, '/quiet/hints']] as const) {
    const got = await h2Hints(proxy.httpsPort, ca, path, host);
    assert.equal(got.status, 200);
    assert.deepEqual(got.hints, [], path);
    const r = await rawTlsExchange({ port: proxy.httpsPort, sni: host, ca, text: `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n` });
    assert.match(r.raw, /^HTTP\/1\.1 200 OK\r\n/, `${path}: ${r.raw}`);
    assert.doesNotMatch(r.raw, /103/, r.raw);
  }
  // The same upstream on a route with the default sends them.
  const on = await h2Hints(proxy.httpsPort, ca, '/h1/hints');
  assert.equal(on.hints.length, 2);
});

test('a 103\'s hop-by-hop headers and the fields its Connection names are stripped on the way to the client', async (t) => {
  const { proxy, ca } = await setup(t);
  const r = await rawTlsExchange({ port: proxy.httpsPort, sni: HOST, ca, text: `GET /h1/hop HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n` });
  const hint = r.raw.slice(0, r.raw.indexOf('\r\n\r\n'));
  assert.match(hint, /^HTTP\/1\.1 103 Early Hints\r\n/, r.raw);
  assert.match(hint, /\r\nlink: <\/style\.css>; rel=preload; as=style/i, hint);
  assert.match(hint, /\r\nx-kept: yes/i, hint);
  assert.doesNotMatch(hint, /x-secret|keep-alive|connection/i, hint);
  assert.match(r.raw, /\r\n\r\nHTTP\/1\.1 200 OK\r\n/);
  // Over HTTP/2 a connection-specific field would make the 103 unsendable: it arrives, without them.
  const got = await h2Hints(proxy.httpsPort, ca, '/h1/hop');
  assert.equal(got.hints.length, 1);
  assert.equal(got.hints[0]!['link'], CSS);
  assert.equal(got.hints[0]!['x-kept'], 'yes');
  assert.equal(got.hints[0]!['x-secret'], undefined);
});

test('an upstream\'s 102 and 100 are dropped while its 103 goes on', async (t) => {
  const { proxy, ca } = await setup(t);
  for (const path of ['/h1/102', '/h2/102']) {
    const got = await h2Hints(proxy.httpsPort, ca, path);
    assert.equal(got.status, 200);
    assert.deepEqual(got.hints.map((h) => [h[':status'], h['link']]), [[103, CSS]], path);
  }
  const r = await rawTlsExchange({ port: proxy.httpsPort, sni: HOST, ca, text: `GET /h1/102 HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n` });
  assert.match(r.raw, /^HTTP\/1\.1 103 Early Hints\r\n/, r.raw);
  assert.doesNotMatch(r.raw, /HTTP\/1\.1 10[02]/, r.raw);
});

test('the response cache stores the final response only: a hit comes without the 103', async (t) => {
  const { proxy, ca } = await setup(t);
  const first = await h2Hints(proxy.httpsPort, ca, '/cached/hints');
  assert.equal(first.hints.length, 2);
  const second = await h2Hints(proxy.httpsPort, ca, '/cached/hints');
  assert.equal(second.status, 200);
  assert.equal(second.body, 'final');
  assert.deepEqual(second.hints, []);
  const lines = proxy.logs.filter((l) => l['msg'] === 'access' && l['path'] === '/cached/hints');
  assert.deepEqual(lines.map((l) => [l['status'], l['cache']]), [[200, 'miss'], [200, 'hit']]);
});

test('an upstream that fails after its 103 gets the client a 502, the 103 having gone before it', async (t) => {
  const { proxy, ca } = await setup(t);
  const got = await h2Hints(proxy.httpsPort, ca, '/h1/broken');
  assert.deepEqual(got.hints.map((h) => [h[':status'], h['link']]), [[103, CSS]]);
  assert.equal(got.status, 502);
  const r = await rawTlsExchange({ port: proxy.httpsPort, sni: HOST, ca, text: `GET /h1/broken HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n` });
  assert.match(r.raw, /^HTTP\/1\.1 103 Early Hints\r\n[^]*\r\n\r\nHTTP\/1\.1 502 Bad Gateway\r\n/, r.raw);
  const line = proxy.logs.find((l) => l['msg'] === 'access' && l['path'] === '/h1/broken');
  assert.equal(line?.['status'], 502);
});

test('"earlyHints" on a route that answers itself is refused, naming the route', async (t) => {
  const pki = await makePki();
  t.after(() => pki.cleanup());
  const tls = await pki.issue('cfg', [HOST]);
  const issues = await checkHosts(pki, { [HOST]: { tls, earlyHints: false, routes: [{ path: '/', respond: { status: 204 }, earlyHints: true }] } });
  assert.deepEqual(issues, [`hosts["${HOST}"].routes[0].earlyHints: a "respond" route sends nothing upstream, so there are no upstream 103 Early Hints to pass on; remove "earlyHints", got true`]);
});
