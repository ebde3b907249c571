/**
 * `OPTIONS *` (RFC 9110 §9.3.7, asterisk-form RFC 9112 §3.2.4, HTTP/2 `:path` "*" RFC 9113 §8.3.1):
 * a question about the server as a whole, answered by Portico itself with 200 and Allow, after the Host
 * and Host/SNI checks; "*" with any other method is 400. Real peers: curl over HTTP/1.1 and HTTP/2, a
 * raw TLS socket, node:http2.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { makePki, startProxyFor } from './helpers/proxy.js';
import { h2Connect, h2Request, startUpstream } from './helpers/net.js';
import { curl, rawTlsExchange, requireTool } from './helpers/real-peers.js';

const HOST = 'star.test';
const OTHER = 'other.test';
const ALLOW = 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE';

async function setup(t: test.TestContext) {
  const up = await startUpstream();
  const pki = await makePki();
  const a = await pki.issue(HOST, [HOST]);
  const b = await pki.issue(OTHER, [OTHER]);
  const routes = [{ path: '/', upstream: up.url }];
  const proxy = await startProxyFor(t, pki, { hosts: { [HOST]: { tls: a, routes }, [OTHER]: { tls: b, routes } } }, [() => up.close()]);
  const caFile = join(pki.dir, 'ca.pem');
  await writeFile(caFile, pki.caPem);
  return { up, pki, proxy, caFile };
}

test('OPTIONS * over HTTP/1.1 gets 200 with Allow and no body from Portico itself, and the connection serves on', async (t) => {
  const { up, pki, proxy } = await setup(t);
  const r = await rawTlsExchange({ port: proxy.httpsPort, sni: HOST, ca: pki.caPem, text: `OPTIONS * HTTP/1.1\r\nHost: ${HOST}\r\n\r\nGET /next HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n` });
  assert.equal(r.status, 200, r.raw);
  assert.equal(r.headers.allow, ALLOW);
  assert.equal(r.headers['content-length'], '0');
  assert.equal(r.body, '');
  assert.match(r.raw, /\r\n\r\nHTTP\/1\.1 200 OK\r\n/, 'the pipelined GET behind it is answered on the same connection');
  assert.deepEqual(up.seen.map((s) => s.url), ['/next'], 'OPTIONS * reached no upstream');
  const line = proxy.logs.find((l) => l.msg === 'access' && l.path === '*');
  assert.equal(line?.status, 200, 'an access line is written');
});

test('curl --request-target "*" -X OPTIONS gets 200 with Allow over HTTP/1.1 and HTTP/2', async (t) => {
  if (!requireTool(t, 'curl')) return;
  const { up, proxy, caFile } = await setup(t);
  for (const proto of ['--http1.1', '--http2']) {
    const r = await curl({ host: HOST, port: proxy.httpsPort, caFile, args: [proto, '-X', 'OPTIONS', '--request-target', '*'] });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, proto === '--http2' ? /^HTTP\/2 200 \r\n/ : /^HTTP\/1\.1 200 OK\r\n/, proto);
    assert.match(r.stdout, new RegExp(`\\r\\nallow: ${ALLOW}\\r\\n`, 'i'), proto);
    assert.match(r.stdout, /\r\ncontent-length: 0\r\n/i, proto);
  }
  assert.equal(up.seen.length, 0);
});

test('OPTIONS * over HTTP/2 (:path "*") gets 200 with Allow', async (t) => {
  const { up, pki, proxy } = await setup(t);
  const session = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => session.close());
  const r = await h2Request(session, { method: 'OPTIONS', path: '*' });
  assert.equal(r.status, 200);
  assert.equal(r.headers.allow, ALLOW);
  assert.equal(r.text, '');
  assert.equal(up.seen.length, 0);
});

test('OPTIONS * is still subject to the Host checks: a Host the TLS server name does not cover gets 421, none 400', async (t) => {
  const { up, pki, proxy } = await setup(t);
  const mismatch = await rawTlsExchange({ port: proxy.httpsPort, sni: HOST, ca: pki.caPem, text: `OPTIONS * HTTP/1.1\r\nHost: ${OTHER}\r\n\r\n` });
  assert.equal(mismatch.status, 421);
  assert.equal(mismatch.headers['x-portico-error'], 'PORTICO_SNI_HOST_MISMATCH');
  const session = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => session.close());
  const h2mismatch = await h2Request(session, { method: 'OPTIONS', path: '*', authority: OTHER });
  assert.equal(h2mismatch.status, 421);
  const noHost = await rawTlsExchange({ port: proxy.httpsPort, sni: HOST, ca: pki.caPem, text: 'OPTIONS * HTTP/1.1\r\n\r\n' });
  assert.equal(noHost.status, 400);
  assert.equal(noHost.headers['x-portico-error'], 'PORTICO_BAD_HOST');
  assert.equal(up.seen.length, 0);
});

test('an asterisk-form target with a method other than OPTIONS gets 400 PORTICO_BAD_TARGET and reaches no upstream', async (t) => {
  const { up, pki, proxy } = await setup(t);
  for (const method of ['GET', 'POST', 'DELETE']) {
    const r = await rawTlsExchange({ port: proxy.httpsPort, sni: HOST, ca: pki.caPem, text: `${method} * HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: 0\r\n\r\n` });
    assert.equal(r.status, 400, method);
    assert.equal(r.headers['x-portico-error'], 'PORTICO_BAD_TARGET', method);
    assert.match(r.body, /"\*" for OPTIONS/, method);
  }
  assert.equal(up.seen.length, 0);
});
