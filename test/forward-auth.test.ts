/**
 * forwardAuth: every request is first put to an authentication service (a real HTTP server here, as
 * Authelia or oauth2-proxy would be): its 2xx lets the request through with the identity headers it
 * names (never the client's), any other answer goes back to the client as given, a service that is
 * down or slow fails closed with 502, WebSocket upgrades are asked about too, and `false` exempts a route.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { validateConfig } from '../src/config/load.js';
import { makePki, startProxyFor, type TestPki, type TestProxy } from './helpers/proxy.js';
import { freePort, h1Request, h2Connect, h2Request, startUpstream } from './helpers/net.js';
import { RawClient, rawUpgradeRequest } from './helpers/raw-http1.js';
import { curl, requireTool, runTool } from './helpers/real-peers.js';

const HOST = 'fa.test';

/** An authentication service: cookie session=ok is alice (admins), "Bearer t" is bob; anyone else goes to the login page. */
async function startAuthService(): Promise<{ url: string; seen: { url: string; method: string; headers: http.IncomingHttpHeaders; bodyBytes: number }[]; close: () => Promise<void> }> {
  const seen: { url: string; method: string; headers: http.IncomingHttpHeaders; bodyBytes: number }[] = [];
  const server = http.createServer((req, res) => {
    const entry = { url: req.url ?? '', method: req.method ?? '', headers: req.headers, bodyBytes: 0 };
    seen.push(entry);
    req.on('data', (c: Buffer) => (entry.bodyBytes += c.length));
    req.on('end', () => {
      if (req.url === '/slow') return; // never answers
      if (/(^|;\s*)session=ok(;|$)/.test(req.headers.cookie ?? '')) {
        res.writeHead(200, { 'remote-user': 'alice', 'remote-groups': 'admins' });
        return res.end('ok');
      }
      if (req.headers.authorization === 'Bearer t') {
        res.writeHead(204, { 'remote-user': 'bob' });
        return res.end();
      }
      const back = `${req.headers['x-forwarded-proto'] as string}://${req.headers['x-forwarded-host'] as string}${req.headers['x-forwarded-uri'] as string}`;
      res.writeHead(302, { location: `https://auth.test/login?rd=${encodeURIComponent(back)}`, 'set-cookie': 'auth_state=1; Path=/; HttpOnly', 'content-type': 'text/plain' });
      res.end('redirecting');
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

type Upstream = Awaited<ReturnType<typeof startUpstream>>;
type Auth = Awaited<ReturnType<typeof startAuthService>>;

async function setup(t: TestContext): Promise<{ pki: TestPki; proxy: TestProxy; up: Upstream; auth: Auth; ws: Upstream }> {
  const pki = await makePki();
  const up = await startUpstream();
  const ws = await startUpstream();
  ws.server.on('upgrade', (req: http.IncomingMessage, socket) => {
    socket.end(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Saw-User: ${String(req.headers['remote-user'])}\r\n\r\n`);
  });
  const auth = await startAuthService();
  const cert = await pki.issue('fa', [HOST]);
  const forwardAuth = { url: `${auth.url}/verify`, responseHeaders: ['Remote-User', 'Remote-Groups'] };
  const proxy = await startProxyFor(
    t,
    pki,
    {
      hosts: {
        [HOST]: {
          tls: cert,
          forwardAuth,
          routes: [
            { path: '/', upstream: up.url },
            { path: '/health', forwardAuth: false, respond: { body: 'ok' } },
            { path: '/chat', upstream: ws.url },
            { path: '/slow', upstream: up.url, forwardAuth: { url: `${auth.url}/slow`, timeout: '300ms' } },
            { path: '/down', upstream: up.url, forwardAuth: { url: `http://127.0.0.1:${await freePort()}/verify` } },
          ],
        },
      },
    },
    [() => up.close(), () => ws.close(), () => auth.close()],
  );
  return { pki, proxy, up, auth, ws };
}

test('forwardAuth: the service\'s refusal goes to the client as given; its 2xx lets the request through with its identity headers, never the client\'s; over HTTP/1.1 and HTTP/2', async (t) => {
  const { pki, proxy, up, auth } = await setup(t);
  const port = proxy.httpsPort;
  // No session: the login redirect, cookie and body as the service gave them; nothing reaches the upstream.
  const denied = await h1Request({ port, sni: HOST, path: '/app/page?x=1', ca: pki.caPem, headers: { 'remote-user': 'mallory' } });
  assert.equal(denied.status, 302);
  assert.equal(denied.headers.location, `https://auth.test/login?rd=${encodeURIComponent('https://fa.test/app/page?x=1')}`);
  assert.deepEqual(denied.headers['set-cookie'], ['auth_state=1; Path=/; HttpOnly']);
  assert.equal(denied.text, 'redirecting');
  assert.equal(denied.headers['content-length'], String('redirecting'.length));
  assert.equal(up.seen.length, 0);
  const asked = auth.seen[0]!;
  assert.equal(asked.method, 'GET');
  assert.equal(asked.url, '/verify');
  assert.equal(asked.headers['x-forwarded-method'], 'GET');
  assert.equal(asked.headers['x-forwarded-proto'], 'https');
  assert.equal(asked.headers['x-forwarded-host'], HOST);
  assert.equal(asked.headers['x-forwarded-uri'], '/app/page?x=1');
  assert.equal(asked.headers['x-forwarded-for'], '127.0.0.1');
  assert.equal(asked.headers.host, new URL(auth.url).host);

  // A session: through, with the service's Remote-User and Remote-Groups in place of the client's, and the body.
  const ok = await h1Request({ port, sni: HOST, path: '/app/save', method: 'POST', body: 'data', ca: pki.caPem, headers: { cookie: 'session=ok', 'remote-user': 'mallory', 'remote-groups': 'root', Remote_User: 'mallory', 'Remote_Groups': 'root', 'remote-groups_x': 'kept' } });
  assert.equal(ok.status, 200);
  const saved = up.seen.find((s) => s.url === '/app/save')!;
  assert.equal(saved.headers['remote-user'], 'alice');
  assert.equal(saved.headers['remote-groups'], 'admins');
  // CGI, WSGI and Rack read Remote_User as Remote-User: the client's "_" spellings of the copied names are dropped too.
  assert.equal(saved.headers['remote_user'], undefined);
  assert.equal(saved.headers['remote_groups'], undefined);
  assert.equal(saved.headers['remote-groups_x'], 'kept', 'other names with "_" pass');
  assert.equal(saved.body.toString(), 'data');
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(proxy.logs.find((l) => l.msg === 'access' && l.path === '/app/save')?.user, 'alice', 'the access line names the user the service named');
  const askedPost = auth.seen.at(-1)!;
  assert.equal(askedPost.headers['x-forwarded-method'], 'POST');
  assert.equal(askedPost.bodyBytes, 0, 'the service gets no body');
  assert.equal(askedPost.headers['content-length'], undefined);

  // A header the service does not send back is still taken from the client.
  await h1Request({ port, sni: HOST, path: '/app/bob', ca: pki.caPem, headers: { authorization: 'Bearer t', 'remote-groups': 'root' } });
  const bob = up.seen.find((s) => s.url === '/app/bob')!;
  assert.equal(bob.headers['remote-user'], 'bob');
  assert.equal(bob.headers['remote-groups'], undefined, 'the client cannot claim a group');

  // The service is told the path that will be served, normalised as routing saw it, not the client's spelling.
  await h1Request({ port, sni: HOST, path: '/public/../admin/%61?q=%2F', ca: pki.caPem });
  assert.equal(auth.seen.at(-1)!.headers['x-forwarded-uri'], '/admin/a?q=%2F');

  // A route with "forwardAuth": false asks nobody.
  const before = auth.seen.length;
  assert.equal((await h1Request({ port, sni: HOST, path: '/health', ca: pki.caPem })).text, 'ok');
  assert.equal(auth.seen.length, before);

  const session = await h2Connect(port, HOST, pki.caPem);
  t.after(() => session.close());
  const h2denied = await h2Request(session, { path: '/h2' });
  assert.equal(h2denied.status, 302);
  assert.match(String(h2denied.headers.location), /^https:\/\/auth\.test\/login\?rd=/);
  assert.equal(h2denied.text, 'redirecting');
  const h2ok = await h2Request(session, { path: '/h2ok', headers: { cookie: 'session=ok' } });
  assert.equal(h2ok.status, 200);
  assert.equal(up.seen.find((s) => s.url === '/h2ok')?.headers['remote-user'], 'alice');
});

test('forwardAuth fails closed: a service that is down or slower than its timeout gets 502 PORTICO_FORWARD_AUTH_FAILED, and nothing reaches the upstream', async (t) => {
  const { pki, proxy, up } = await setup(t);
  const down = await h1Request({ port: proxy.httpsPort, sni: HOST, path: '/down/x', ca: pki.caPem, headers: { cookie: 'session=ok' } });
  assert.equal(down.status, 502);
  assert.equal(down.headers['x-portico-error'], 'PORTICO_FORWARD_AUTH_FAILED');
  const started = performance.now();
  const slow = await h1Request({ port: proxy.httpsPort, sni: HOST, path: '/slow/x', ca: pki.caPem, headers: { cookie: 'session=ok' } });
  const ms = performance.now() - started;
  assert.equal(slow.status, 502);
  assert.ok(ms >= 250 && ms < 3000, `gave up after the timeout: ${Math.round(ms)} ms`);
  assert.equal(up.seen.length, 0);
  assert.ok(proxy.logs.some((l) => l.msg === 'forwardAuth: the authentication service could not be asked' && /ECONNREFUSED/.test(String(l.detail))));
});

test('forwardAuth asks about WebSocket upgrades: refused ones get the service\'s answer, allowed ones reach the upstream with its identity headers', async (t) => {
  const { pki, proxy } = await setup(t);
  const c = await RawClient.open(t, { port: proxy.httpsPort, tls: { servername: HOST, ca: pki.caPem } });
  await c.write(rawUpgradeRequest(HOST, '/chat'));
  const refused = await c.response();
  assert.equal(refused.status, 302);
  assert.match(refused.headers.location ?? '', /^https:\/\/auth\.test\/login/);
  assert.equal(refused.text, 'redirecting');
  const d = await RawClient.open(t, { port: proxy.httpsPort, tls: { servername: HOST, ca: pki.caPem } });
  await d.write(rawUpgradeRequest(HOST, '/chat', 'Cookie: session=ok\r\nRemote-User: mallory\r\n'));
  const upgraded = await d.response();
  assert.equal(upgraded.status, 101);
  assert.equal(upgraded.headers['x-saw-user'], 'alice');
});

test('forwardAuth: a client outside trustedProxies cannot tell the service its address or scheme (X-Real-IP, X-Forwarded-Port, X_Forwarded_For, …), over HTTP/1.1 and HTTP/2', async (t) => {
  const { pki, proxy, auth } = await setup(t);
  const claims = { 'x-real-ip': '::1', 'true-client-ip': '::1', 'x-forwarded-port': '8443', 'x-forwarded-ssl': 'on', x_forwarded_for: '::1', x_real_ip: '::1', 'x-forwarded-prefix': '/admin' };
  const names = Object.keys(claims);
  await h1Request({ port: proxy.httpsPort, sni: HOST, path: '/app', ca: pki.caPem, headers: { ...claims, 'x-kept': 'yes' } });
  let asked = auth.seen.at(-1)!;
  for (const name of names) assert.equal(asked.headers[name], undefined, `${name} over HTTP/1.1`);
  assert.equal(asked.headers['x-kept'], 'yes');
  assert.equal(asked.headers['x-forwarded-for'], '127.0.0.1');
  const s = await h2Connect(proxy.httpsPort, HOST, pki.caPem);
  t.after(() => s.close());
  await h2Request(s, { path: '/app', headers: claims });
  asked = auth.seen.at(-1)!;
  for (const name of names) assert.equal(asked.headers[name], undefined, `${name} over HTTP/2`);
});

test('curl: the login redirect without a session, the page with one', async (t) => {
  if (!requireTool(t, 'curl')) return;
  const { pki, proxy } = await setup(t);
  const caFile = join(pki.dir, 'ca.pem');
  await writeFile(caFile, pki.caPem);
  const out = await curl({ host: HOST, port: proxy.httpsPort, caFile, path: '/page', args: ['-o', '/dev/null', '-w', '%{http_code} %{redirect_url}'] });
  // The way back keeps the port the client asked for (curl's Host is fa.test:<port>), as the upstream's X-Forwarded-Host does.
  assert.equal(out.stdout, `302 https://auth.test/login?rd=https%3A%2F%2Ffa.test%3A${proxy.httpsPort}%2Fpage`);
  const ok = await curl({ host: HOST, port: proxy.httpsPort, caFile, path: '/page', args: ['--http2', '-b', 'session=ok', '-o', '/dev/null', '-w', '%{http_code} %{http_version}'] });
  assert.equal(ok.stdout, '200 2');
});

test('forwardAuth settings are checked with their paths', () => {
  const tls = { cert: 'c.pem', key: 'k.pem' };
  const r = validateConfig({
    hosts: {
      'a.test': {
        tls,
        forwardAuth: { url: 'ftp://auth', responseHeaders: ['Remote User'] },
        routes: [
          { upstream: 'http://127.0.0.1:1', forwardAuth: { url: 'http://127.0.0.1:9091/verify', timeout: 'soon' } },
          // The service's own framing would go upstream: its Content-Length for a body the request does not have.
          { path: '/b', upstream: 'http://127.0.0.1:1', forwardAuth: { url: 'http://127.0.0.1:9091/verify', responseHeaders: ['Remote-User', 'Content-Length', 'connection', 'Host'] } },
          // No timeout at all would leave a request waiting for a service that never answers.
          { path: '/c', upstream: 'http://127.0.0.1:1', forwardAuth: { url: 'http://127.0.0.1:9091/verify', timeout: '0s' } },
        ],
      },
    },
  });
  const lines = r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`);
  assert.ok(lines.some((l) => /^hosts\["a\.test"\]\.forwardAuth\.url: expected the authentication service's URL with http:\/\/ or https:\/\//.test(l)), lines.join('\n'));
  assert.ok(lines.some((l) => l.startsWith('hosts["a.test"].forwardAuth.responseHeaders[0]: expected a header name')), lines.join('\n'));
  assert.ok(lines.some((l) => l.startsWith('hosts["a.test"].routes[0].forwardAuth.timeout: ')), lines.join('\n'));
  for (const i of [1, 2, 3]) {
    assert.ok(lines.some((l) => l.startsWith(`hosts["a.test"].routes[1].forwardAuth.responseHeaders[${i}]: Portico writes the framing, connection and Host headers`)), lines.join('\n'));
  }
  assert.ok(!lines.some((l) => l.includes('responseHeaders[0]') && l.includes('routes[1]')), lines.join('\n'));
  assert.ok(lines.some((l) => l.startsWith('hosts["a.test"].routes[2].forwardAuth.timeout: expected a duration of at least 1ms')), lines.join('\n'));
});

test('forwardAuth: X-Forwarded-Proto and -Host are those the upstream gets: the Host with its port, or a trusted load balancer\'s; curl over HTTP/1.1, HTTP/2 and plain HTTP', async (t) => {
  if (!requireTool(t, 'curl')) return;
  const pki = await makePki();
  const up = await startUpstream();
  const auth = await startAuthService();
  const cert = await pki.issue('fa', [HOST]);
  // The test's client stands for a load balancer that terminated TLS and reaches Portico over plain HTTP.
  const proxy = await startProxyFor(
    t,
    pki,
    { forwarding: { trustedProxies: ['127.0.0.1'] }, hosts: { [HOST]: { tls: cert, plainHttp: 'serve', forwardAuth: { url: `${auth.url}/verify` }, routes: [{ path: '/', upstream: up.url }] } } },
    [() => up.close(), () => auth.close()],
  );
  const caFile = join(pki.dir, 'ca.pem');
  await writeFile(caFile, pki.caPem);
  const redirect = '-w%{redirect_url}';
  for (const version of ['--http1.1', '--http2']) {
    const out = await curl({ host: HOST, port: proxy.httpsPort, caFile, path: '/page?a=1', args: [version, '-o', '/dev/null', redirect] });
    assert.equal(out.stdout, `https://auth.test/login?rd=${encodeURIComponent(`https://${HOST}:${proxy.httpsPort}/page?a=1`)}`, version);
    assert.equal(auth.seen.at(-1)!.headers['x-forwarded-host'], `${HOST}:${proxy.httpsPort}`, version);
  }
  // Through the load balancer: where the client was going is what it says, as for the upstream.
  const lb = await runTool('curl', ['-sS', '-o', '/dev/null', redirect, '-H', `Host: ${HOST}`, '-H', 'X-Forwarded-Proto: https', '-H', `X-Forwarded-Host: ${HOST}`, `http://127.0.0.1:${proxy.httpPort}/page`]);
  assert.equal(lb.stdout, `https://auth.test/login?rd=${encodeURIComponent(`https://${HOST}/page`)}`);
  // Without them, Portico's own view: plain HTTP, and the Host with its port.
  const plain = await runTool('curl', ['-sS', '-o', '/dev/null', redirect, '-H', `Host: ${HOST}:8080`, `http://127.0.0.1:${proxy.httpPort}/page`]);
  assert.equal(plain.stdout, `https://auth.test/login?rd=${encodeURIComponent(`http://${HOST}:8080/page`)}`);
  assert.equal(up.seen.length, 0);
});
