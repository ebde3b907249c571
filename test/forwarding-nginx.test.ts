/** nginx as the backend, curl as the client: real peers on both sides of Portico. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { makePki, startProxyFor, proxyOneHost } from './helpers/proxy.js';
import { h1Request, h2Connect, h2Request, startUpstream } from './helpers/net.js';
import { requireNginx, startNginx } from './helpers/nginx.js';
import { requireTool } from './helpers/real-peers.js';

function run(file: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: 10_000 }, (err, stdout, stderr) => resolve({ code: err === null ? 0 : Number((err as { code?: number }).code ?? 1), stdout, stderr }));
  });
}

test('a static file and a proxied path on nginx come through Portico intact, over reused upstream connections', async (t) => {
  const bin = requireNginx(t);
  if (bin === undefined) return;
  const pki = await makePki();
  const app = await startUpstream();
  const nginx = await startNginx(
    bin,
    `location /static/ {
      root {{www}};
      add_header X-Conn $connection always;
      add_header X-Conn-Requests $connection_requests always;
    }
    location /app/ {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      add_header X-Conn $connection always;
    }`,
    `upstream app { server ${app.url.slice('http://'.length)}; keepalive 4; }`,
  );
  const file = randomBytes(200 * 1024);
  await mkdir(join(nginx.dir, 'www', 'static'));
  await writeFile(join(nginx.dir, 'www', 'static', 'blob.bin'), file);
  const proxy = await proxyOneHost(t, pki, 'nginx.test', nginx.url, { also: [() => nginx.stop(), () => app.close()] });

  const conns: string[] = [];
  for (let i = 0; i < 4; i++) {
    const r = await h1Request({ port: proxy.httpsPort, sni: 'nginx.test', path: '/static/blob.bin', ca: pki.caPem });
    assert.equal(r.status, 200);
    assert.ok(r.body.equals(file), 'the static file arrived byte for byte');
    assert.equal(r.headers['content-length'], String(file.length));
    conns.push(String(r.headers['x-conn']));
  }
  const session = await h2Connect(proxy.httpsPort, 'nginx.test', pki.caPem);
  t.after(() => session.close());
  const r2 = await h2Request(session, { path: '/static/blob.bin' });
  assert.equal(r2.status, 200);
  assert.ok(r2.body.equals(file));
  conns.push(String(r2.headers['x-conn']));
  assert.equal(new Set(conns).size, 1, `one upstream connection served every sequential request (nginx $connection: ${conns.join(', ')})`);

  const missing = await h1Request({ port: proxy.httpsPort, sni: 'nginx.test', path: '/static/nope', ca: pki.caPem });
  assert.equal(missing.status, 404, "nginx's own 404 passes through");
  assert.equal(missing.headers['x-portico-error'], undefined);

  const proxied = await h1Request({ port: proxy.httpsPort, sni: 'nginx.test', path: '/app/hello?x=1', method: 'POST', body: 'through two proxies', ca: pki.caPem });
  assert.equal(proxied.status, 200);
  const echo = JSON.parse(proxied.text) as { url: string; body: string; headers: Record<string, string> };
  assert.equal(echo.url, '/app/hello?x=1');
  assert.equal(echo.body, 'through two proxies');
  assert.equal(echo.headers.host, 'nginx.test', 'the client Host survives both hops');
  assert.equal(echo.headers['x-forwarded-proto'], 'https');
  assert.equal(app.seen.length, 1);
});

test('curl over HTTP/1.1 and HTTP/2 fetches a file from nginx through Portico', async (t) => {
  const bin = requireNginx(t);
  if (bin === undefined || !requireTool(t, 'curl')) return;
  const pki = await makePki();
  const nginx = await startNginx(bin, 'location / { root {{www}}; }');
  const file = randomBytes(300 * 1024);
  await writeFile(join(nginx.dir, 'www', 'file.bin'), file);
  const cert = await pki.issue('n', ['nginx.test']);
  const caFile = join(pki.dir, 'ca.pem');
  await writeFile(caFile, pki.caPem);
  const proxy = await startProxyFor(t, pki, { hosts: { 'nginx.test': { tls: cert, routes: [{ path: '/', upstream: nginx.url }] } } }, [() => nginx.stop()]);
  for (const [flag, version] of [['--http1.1', '1.1'], ['--http2', '2']] as const) {
    const out = join(pki.dir, `out-${version}.bin`);
    const r = await run('curl', ['-sS', flag, '--resolve', `nginx.test:${proxy.httpsPort}:127.0.0.1`, '--cacert', caFile, '-o', out, '-w', '%{http_code} %{http_version}', `https://nginx.test:${proxy.httpsPort}/file.bin`]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `200 ${version}`);
    assert.ok((await readFile(out)).equals(file), `HTTP/${version}: the file arrived byte for byte`);
  }
});
