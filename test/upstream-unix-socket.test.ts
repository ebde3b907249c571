import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import http from 'node:http';
import { join } from 'node:path';
import WebSocket, { WebSocketServer } from 'ws';
import { validateConfig } from '../src/config/load.js';
import { makePki, startProxyFor } from './helpers/proxy.js';
import { h1Request, h2Connect, h2Request } from './helpers/net.js';
import { requireNginx, startNginx } from './helpers/nginx.js';
import { curl, requireTool } from './helpers/real-peers.js';
import { waitFor } from './helpers/pebble.js';

test('unix:/path targets: nginx and a Node app on Unix sockets, kept alive, over HTTP/1.1, HTTP/2, curl and WebSocket; a missing socket is skipped for the next target', async (t) => {
  const bin = requireNginx(t);
  if (bin === undefined) return;
  const pki = await makePki();
  const nginx = await startNginx(bin, 'listen unix:{{dir}}/nginx.sock;\nlocation / { return 200 "nginx over unix: $http_host $request_uri\\n"; }');
  // A Node app on a socket of its own, counting its connections, with a WebSocket echo.
  const appSock = join(pki.dir, 'app.sock');
  let connections = 0;
  const app = http.createServer((req, res) => {
    req.resume();
    res.end(`app over unix: ${req.headers.host} ${req.url}`);
  });
  app.on('connection', () => connections++);
  const wss = new WebSocketServer({ server: app });
  wss.on('connection', (ws) => ws.on('message', (m, binary) => ws.send(m, { binary })));
  app.listen(appSock);
  await once(app, 'listening');
  // A third socket that only answers health checks.
  const checks: string[] = [];
  const checked = http.createServer((req, res) => {
    checks.push(`${req.url} ${req.headers['user-agent']}`);
    res.end('ok');
  });
  checked.listen(join(pki.dir, 'checked.sock'));
  await once(checked, 'listening');
  const cert = await pki.issue('u', ['u.test']);
  const proxy = await startProxyFor(
    t,
    pki,
    {
      hosts: {
        'u.test': {
          tls: cert,
          routes: [
            { path: '/', upstream: `unix:${nginx.dir}/nginx.sock` },
            { path: '/app', upstream: { targets: [`unix:${join(pki.dir, 'gone.sock')}`, `unix:${appSock}`], hostHeader: 'target' } },
            { path: '/checked', upstream: { targets: [`unix:${join(pki.dir, 'checked.sock')}`], healthCheck: { path: '/healthz', interval: '200ms', timeout: '200ms' } } },
          ],
        },
      },
    },
    [() => new Promise((r) => app.close(r)), () => new Promise((r) => checked.close(r)), nginx.stop],
  );
  const ca = pki.caPem;
  const port = proxy.httpsPort;

  let r = await h1Request({ port, sni: 'u.test', path: '/x?y=1', ca });
  assert.equal(r.status, 200);
  assert.equal(r.text, 'nginx over unix: u.test /x?y=1\n', 'the client\'s Host and path reach nginx on its socket');
  const s = await h2Connect(port, 'u.test', ca);
  const h = await h2Request(s, { path: '/h2' });
  assert.match(h.text, /^nginx over unix: u\.test:\d+ \/h2\n$/);

  // The first target's socket does not exist: each request goes on to the next one, and keeps its connection.
  for (let i = 0; i < 5; i++) {
    const a = await h2Request(s, { path: `/app/${i}` });
    assert.equal(a.status, 200);
    assert.equal(a.text, `app over unix: localhost /app/${i}`, 'hostHeader "target" is "localhost" for a socket');
  }
  s.close();
  assert.equal(connections, 1, 'one kept-alive connection to the socket served every request');
  await waitFor('a health check over the socket', () => (checks.length > 0 ? true : undefined), 5000);
  assert.equal(checks[0], '/healthz portico-health-check', 'active health checks reach a socket too');
  const skipped = proxy.logs.find((l) => l.msg === 'upstream failed, trying the next target');
  assert.equal(skipped?.code, 'ENOENT');
  assert.equal(skipped?.upstream, `unix:${join(pki.dir, 'gone.sock')}`);

  // WebSocket through to the socket.
  const ws = new WebSocket(`wss://127.0.0.1:${port}/app/chat`, { servername: 'u.test', headers: { host: 'u.test' }, ca } as WebSocket.ClientOptions);
  await once(ws, 'open');
  ws.send('ping over unix');
  const [echo] = (await once(ws, 'message')) as [Buffer];
  assert.equal(echo.toString(), 'ping over unix');
  ws.close();

  if (requireTool(t, 'curl')) {
    const caFile = join(pki.dir, 'ca.pem');
    await writeFile(caFile, ca);
    for (const proto of ['--http1.1', '--http2']) {
      const c = await curl({ host: 'u.test', port, caFile, path: '/curl', args: [proto, '-o', '-', '-w', '%{http_code}'] });
      assert.match(c.stdout, /nginx over unix: u\.test:\d+ \/curl\n200$/, c.stderr);
    }
  }
});

test('unix: targets are checked: an absolute path, nothing else', () => {
  const issue = (target: string): string => {
    const r = validateConfig({ hosts: { 'a.test': { tls: { cert: 'c', key: 'k' }, routes: [{ upstream: target }] } } });
    return r.ok ? 'ok' : `${r.issues[0]!.path}: ${r.issues[0]!.message}`;
  };
  assert.equal(issue('unix:/run/app.sock'), 'ok');
  for (const bad of ['unix:run/app.sock', 'unix://run/app.sock', 'unix:/run/dir/', 'unix:']) {
    assert.match(issue(bad), /^hosts\["a\.test"\]\.routes\[0\]\.upstream: expected a Unix socket target such as "unix:\/run\/app\.sock"/, bad);
  }
  assert.match(issue('localhost:3000'), /or a Unix socket "unix:\/path\.sock"/);
});
