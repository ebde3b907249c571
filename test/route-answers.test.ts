import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { validateConfig } from '../src/config/load.js';
import { makePki, startProxyFor } from './helpers/proxy.js';
import { h1Request, h2Connect, h2Request, startUpstream } from './helpers/net.js';
import { RawClient, rawUpgradeRequest } from './helpers/raw-http1.js';
import { curl, requireTool } from './helpers/real-peers.js';

test('redirect and respond routes answer without an upstream, over HTTP/1.1, HTTP/2 and curl', async (t) => {
  const pki = await makePki();
  const up = await startUpstream((req, res) => {
    req.resume();
    res.end('from upstream');
  });
  const www = await pki.issue('www', ['www.ra.test', 'ra.test']);
  const proxy = await startProxyFor(
    t,
    pki,
    {
      hosts: {
        'www.ra.test': { tls: www, routes: [{ path: '/', redirect: { to: 'https://ra.test{uri}', status: 308 } }] },
        'ra.test': {
          tls: www,
          headers: { response: { set: { 'Strict-Transport-Security': 'max-age=60' } } },
          routes: [
            { path: '/', upstream: up.url },
            { path: '/old', stripPrefix: true, redirect: '/new{path}?from={host}&{query}' },
            { path: '/docs', redirect: 'https://docs.ra.test{uri}' },
            { path: '/robots.txt', respond: { body: 'User-agent: *\nDisallow: /\n' } },
            { path: '/down', respond: { status: 503, body: '<h1>Back soon</h1>', contentType: 'text/html; charset=utf-8' }, headers: { response: { set: { 'Retry-After': '120' } } } },
            { path: '/empty', respond: { status: 204 } },
          ],
        },
      },
    },
    [up.close],
  );
  const ca = pki.caPem;
  const port = proxy.httpsPort;

  // A whole-site redirect keeps path and query.
  let r = await h1Request({ port, sni: 'www.ra.test', path: '/a/b?c=1', ca });
  assert.equal(r.status, 308);
  assert.equal(r.headers.location, 'https://ra.test/a/b?c=1');
  assert.equal(r.headers['content-length'], '0');
  // Default status 302; the placeholders; stripPrefix applies to {path}.
  r = await h1Request({ port, sni: 'ra.test', path: '/old/page?x=2', ca });
  assert.equal(r.status, 302);
  assert.equal(r.headers.location, '/new/page?from=ra.test&x=2');
  assert.equal(r.headers['strict-transport-security'], 'max-age=60', "the host's response rules apply to answers");
  r = await h1Request({ port, sni: 'ra.test', path: '/docs', ca });
  assert.equal(r.headers.location, 'https://docs.ra.test/docs');
  // Fixed answers.
  r = await h1Request({ port, sni: 'ra.test', path: '/robots.txt', ca });
  assert.equal(r.status, 200);
  assert.equal(r.text, 'User-agent: *\nDisallow: /\n');
  assert.equal(r.headers['content-type'], 'text/plain; charset=utf-8');
  r = await h1Request({ port, sni: 'ra.test', path: '/down/x', ca });
  assert.equal(r.status, 503);
  assert.equal(r.text, '<h1>Back soon</h1>');
  assert.equal(r.headers['content-type'], 'text/html; charset=utf-8');
  assert.equal(r.headers['retry-after'], '120');
  r = await h1Request({ port, sni: 'ra.test', path: '/empty', ca });
  assert.equal(r.status, 204);
  assert.equal(r.text, '');
  // Other paths still go upstream.
  r = await h1Request({ port, sni: 'ra.test', path: '/other', ca });
  assert.equal(r.text, 'from upstream');
  // The Host/SNI rule holds for answers too.
  r = await h1Request({ port, sni: 'www.ra.test', host: 'ra.test', path: '/robots.txt', ca });
  assert.equal(r.status, 421);

  const s = await h2Connect(port, 'ra.test', ca);
  let h = await h2Request(s, { path: '/old/p?q' });
  assert.equal(h.status, 302);
  assert.equal(h.headers.location, '/new/p?from=ra.test&q');
  h = await h2Request(s, { path: '/down' });
  assert.equal(h.status, 503);
  assert.equal(h.text, '<h1>Back soon</h1>');
  h = await h2Request(s, { path: '/robots.txt', method: 'HEAD' });
  assert.equal(h.status, 200);
  assert.equal(h.text, '');
  assert.equal(h.headers['content-length'], '26');
  h = await h2Request(s, { path: '/robots.txt', method: 'POST', body: 'x'.repeat(100_000) });
  assert.equal(h.status, 200, 'a request body is read and dropped');
  s.close();

  if (requireTool(t, 'curl')) {
    const caFile = join(pki.dir, 'ca.pem');
    await writeFile(caFile, ca);
    for (const proto of ['--http1.1', '--http2']) {
      const c = await curl({ host: 'www.ra.test', port, caFile, path: '/x?y', args: [proto, '-o', '/dev/null', '-w', '%{http_code} %{redirect_url}'] });
      assert.equal(c.stdout.trim(), '308 https://ra.test/x?y', `curl ${proto}: ${c.stderr}`);
    }
    // curl follows a relative redirect on the same host to the upstream.
    const c = await curl({ host: 'ra.test', port, caFile, path: '/old/x', args: ['-L', '--max-redirs', '2', '-o', '-', '-w', '\n%{http_code} %{num_redirects}'] });
    assert.match(c.stdout, /from upstream\n200 1$/, c.stderr);
  }
});

test('an HTTP/1.1 connection stays usable after an answer to a request with a body, and an upgrade gets the answer', async (t) => {
  const pki = await makePki();
  const cert = await pki.issue('k', ['ka.test']);
  const proxy = await startProxyFor(t, pki, {
    hosts: { 'ka.test': { tls: cert, routes: [{ path: '/', respond: { body: 'ok' } }, { path: '/ws', redirect: 'https://other.test{uri}' }] } },
  });
  const c = await RawClient.open(t, { port: proxy.httpsPort, tls: { servername: 'ka.test', ca: pki.caPem } });
  await c.write(`POST /form HTTP/1.1\r\nHost: ka.test\r\nContent-Length: 5\r\n\r\nhello`);
  let res = await c.response();
  assert.equal(res.status, 200);
  assert.equal(res.body.toString(), 'ok');
  await c.write('HEAD /x HTTP/1.1\r\nHost: ka.test\r\n\r\nGET /y HTTP/1.1\r\nHost: ka.test\r\n\r\n');
  res = await c.response({ head: true });
  assert.equal(res.status, 200);
  assert.equal(res.headers['content-length'], '2');
  res = await c.response();
  assert.equal(res.body.toString(), 'ok', 'the pipelined request after a HEAD answer is read right');

  const w = await RawClient.open(t, { port: proxy.httpsPort, tls: { servername: 'ka.test', ca: pki.caPem } });
  await w.write(rawUpgradeRequest('ka.test', '/ws/chat'));
  res = await w.response();
  assert.equal(res.status, 302);
  assert.equal(res.headers.location, 'https://other.test/ws/chat');
  assert.equal(await w.until(() => w.closed, 2000), true, 'the connection closes after the answer');
});

test('redirect and respond settings are checked, each problem with its path', () => {
  const issues = (route: Record<string, unknown>): string[] => {
    const r = validateConfig({ hosts: { 'a.test': { tls: { cert: 'c', key: 'k' }, routes: [{ path: '/', ...route }] } } });
    return r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`);
  };
  const at = 'hosts["a.test"].routes[0]';
  assert.deepEqual(issues({}), [`${at}: a route needs one of "upstream" (forward), "redirect", "respond" or "files", got {"path":"/"}`]);
  assert.match(issues({ upstream: 'http://127.0.0.1:1', redirect: '/x' })[0]!, /routes\[0\]\.redirect: a route has one of "upstream", "redirect", "respond" and "files", and this one also has "upstream"; split them into two routes/);
  assert.match(issues({ redirect: 'https://x.test{url}' })[0]!, /routes\[0\]\.redirect: unknown placeholder \{url\}.*use \{host\}, \{uri\}, \{path\}, \{query\}/);
  assert.match(issues({ redirect: '{uri}' })[0]!, /expected an http:\/\/ or https:\/\/ URL with a host/);
  assert.match(issues({ redirect: '/{uri}' })[0]!, /a redirect to a path must start with "\/" and a literal segment/);
  assert.match(issues({ redirect: '//evil.test/' })[0]!, /a redirect to a path must start/);
  assert.match(issues({ redirect: 'https://{host}{uri}' })[0] ?? 'ok', /ok/, 'a configured host name in the authority is fine');
  assert.match(issues({ redirect: 'ftp://x.test/' })[0]!, /expected an http:\/\/ or https:\/\/ URL/);
  assert.match(issues({ redirect: '/a b' })[0]!, /cannot hold spaces or control characters/);
  assert.match(issues({ redirect: { to: '/x', status: 300 } })[0]!, /routes\[0\]\.redirect\.status/);
  assert.match(issues({ redirect: '/x', headers: { request: { set: { 'X-A': '1' } } } })[0]!, /routes\[0\]\.headers\.request: a "redirect" route sends nothing upstream/);
  assert.match(issues({ respond: { body: 'x' }, compress: true })[0]!, /routes\[0\]\.compress: a "respond" route answers itself/);
  assert.match(issues({ respond: { status: 204, body: 'x' } })[0]!, /routes\[0\]\.respond\.body: a 204 or 304 answer has no body/);
  assert.match(issues({ respond: { body: 'x' }, stripPrefix: true })[0]!, /routes\[0\]\.stripPrefix: a "respond" route forwards no path/);
  assert.match(issues({ respond: { status: 101 } })[0]!, /routes\[0\]\.respond\.status/);
  assert.match(issues({ respond: { body: 'x', contentType: 'text/html\r\nX: y' } })[0]!, /routes\[0\]\.respond\.contentType: expected a media type/);
});
