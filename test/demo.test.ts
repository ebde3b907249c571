import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, access } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { requireTool, runTool } from './helpers/real-peers.js';

const MAIN = fileURLToPath(new URL('../src/main.js', import.meta.url));

test('the built-in demo (npm start with no config) serves the README curl lines, redirects plain HTTP and answers 421', async (t) => {
  if (!requireTool(t, 'curl')) return;
  // A fresh working directory: no config/portico.json there, so the demo starts, and its files land in ./demo-data.
  const cwd = await mkdtemp(join(tmpdir(), 'portico-demo-'));
  const child = spawn(process.execPath, [MAIN], { cwd, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PORTICO_CONFIG: '' } });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (out += c.toString()));
  t.after(async () => {
    if (child.exitCode === null) child.kill('SIGKILL');
    await rm(cwd, { recursive: true, force: true });
  });
  const deadline = Date.now() + 15_000;
  while (!out.includes('Portico demo is running')) {
    assert.ok(Date.now() < deadline && child.exitCode === null, `demo did not start:\n${out}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const ca = join(cwd, 'demo-data', 'certs', 'demo-ca.pem');
  await access(ca);
  assert.ok(out.includes(`curl --cacert demo-data/certs/demo-ca.pem https://users.localhost:8443/users`), out);
  const curl = (...args: string[]) => runTool('curl', ['-s', '--cacert', ca, '--resolve', 'users.localhost:8443:127.0.0.1', '--resolve', 'localhost:8443:127.0.0.1', ...args]);

  const h2 = await curl('-w', '\\n%{http_version}', 'https://users.localhost:8443/users');
  assert.equal(h2.stdout, '[{"id":1,"name":"Alice"},{"id":2,"name":"Bob"}]\n2');
  const h1 = await curl('--http1.1', '-w', '\\n%{http_version}', 'https://users.localhost:8443/users');
  assert.equal(h1.stdout, '[{"id":1,"name":"Alice"},{"id":2,"name":"Bob"}]\n1.1');
  const orders = await curl('https://localhost:8443/orders');
  assert.equal(orders.stdout, '[{"id":101,"item":"Book"},{"id":102,"item":"Laptop"}]');
  const page = await curl('--compressed', '-w', '\n%{content_type}', 'https://localhost:8443/');
  assert.match(page.stdout, /<h1>Portico demo<\/h1>[\s\S]*\ntext\/html; charset=utf-8$/, 'the demo site is served by a files route');
  const posted = await curl('-d', '{"name":"Carol"}', 'https://users.localhost:8443/users');
  assert.deepEqual(JSON.parse(posted.stdout), { id: 3, name: 'Carol' });
  const redirect = await runTool('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code} %{redirect_url}', '--resolve', 'users.localhost:8080:127.0.0.1', 'http://users.localhost:8080/users?x=1']);
  assert.equal(redirect.stdout, '308 https://users.localhost:8443/users?x=1');
  const misdirected = await curl('-o', '/dev/null', '-w', '%{http_code}', '-H', 'Host: orders.localhost', 'https://users.localhost:8443/orders');
  assert.equal(misdirected.stdout, '421');
  // The misdirected request never reached the orders API: its list is unchanged and has no POSTed record.
  const ordersAfter = await curl('https://localhost:8443/orders');
  assert.equal(ordersAfter.stdout, orders.stdout);

  child.kill('SIGTERM');
  const [code] = (await once(child, 'exit')) as [number | null];
  assert.equal(code, 0, out);
});
