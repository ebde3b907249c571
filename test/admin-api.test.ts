import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createHash } from 'node:crypto';
import pino from 'pino';
import { AdminServer } from '../src/admin/admin-server.js';
import { hashPassword } from '../src/proxy/basic-auth.js';
import { redactConfig } from '../src/admin/effective-config.js';
import { validateConfig } from '../src/config/load.js';
import { checkConfigFile } from '../src/cli/check-config.js';
import { makePki, startProxyFor, type TestPki } from './helpers/proxy.js';
import { spawnProxy, type ChildProxy } from './helpers/child-proxy.js';
import { freePort, h1Request, startUpstream } from './helpers/net.js';
import { adminRequest, metricValue as metric, type AdminResponse } from './helpers/admin.js';

const TOKEN = 'a'.repeat(20) + '0123456789abcdef0123';
const TOKEN2 = 'b'.repeat(40);

/** One request to the admin API on 127.0.0.1. */
function admin(port: number, method: string, path: string, token?: string): Promise<AdminResponse> {
  return adminRequest(port, method, path, token === undefined ? {} : { token });
}

/** Portico in a child process with 2 workers, the admin API on a port of its own and host site.test to an echo upstream; all stopped after the test. */
async function spawnWorkersWithAdmin(t: TestContext): Promise<{ pki: TestPki; up: Awaited<ReturnType<typeof startUpstream>>; adminPort: number; proxy: ChildProxy }> {
  const pki = await makePki();
  const up = await startUpstream();
  t.after(async () => {
    await up.close();
    await pki.cleanup();
  });
  await writeFile(join(pki.dir, 'admin.token'), TOKEN);
  const adminPort = await freePort();
  const cert = await pki.issue('site', ['site.test']);
  const proxy = await spawnProxy(pki, { workers: 2, admin: { port: adminPort, tokenFile: 'admin.token' }, hosts: { 'site.test': { tls: cert, routes: [{ path: '/', upstream: up.url }] } } }, { startTimeoutMs: 20_000 });
  t.after(() => proxy.kill());
  return { pki, up, adminPort, proxy };
}

test('admin API: token required, status, metrics, reload (refused and accepted), token rotation', async (t) => {
  const pki = await makePki();
  const up = await startUpstream();
  await writeFile(join(pki.dir, 'admin.token'), `${TOKEN}\n`);
  const adminPort = await freePort();
  const cert = await pki.issue('adm', ['adm.test']);
  const streamPort = await freePort();
  const deadStreamPort = await freePort();
  const deadPort = await freePort();
  const HASH = await hashPassword('secret');
  const config = {
    admin: { port: adminPort, tokenFile: 'admin.token' },
    streams: [
      { port: streamPort, addresses: ['127.0.0.1'], upstream: `tcp://127.0.0.1:${up.port}` },
      { port: deadStreamPort, addresses: ['127.0.0.1'], upstream: `tcp://127.0.0.1:${deadPort}` },
    ],
    hosts: {
      'adm.test': {
        tls: cert,
        routes: [
          { path: '/', upstream: up.url },
          { path: '/private', upstream: '${PORTICO_TEST_ADMIN_UP}', basicAuth: { users: { alice: HASH } } },
        ],
      },
    } };
  process.env.PORTICO_TEST_ADMIN_UP = up.url;
  t.after(() => delete process.env.PORTICO_TEST_ADMIN_UP);
  const proxy = await startProxyFor(t, pki, config, [up.close]);

  // GET /config: what is served, after ${ENV} and with the defaults, its secrets redacted; token required.
  assert.equal((await admin(adminPort, 'GET', '/config', undefined)).status, 401);
  const shown = await admin(adminPort, 'GET', '/config', TOKEN);
  assert.equal(shown.status, 200);
  const served = JSON.parse(shown.text) as { hosts: Record<string, { routes: { upstream: unknown; basicAuth?: { users: Record<string, string>; realm: string } }[] }>; limits: { headersTimeout: string } };
  const privateRoute = served.hosts['adm.test']!.routes[1]!;
  assert.equal(privateRoute.upstream, up.url, 'the environment variable, replaced');
  assert.deepEqual(privateRoute.basicAuth, { realm: 'restricted', users: { alice: '(redacted)' } });
  assert.equal(served.limits.headersTimeout, '30s', 'defaults filled in');
  assert.doesNotMatch(shown.text, /\$scrypt\$/);

  // No token, a wrong one, a malformed header: 401, and nothing about the proxy.
  for (const token of [undefined, TOKEN2, '']) {
    const r = await admin(adminPort, 'GET', '/status', token);
    assert.equal(r.status, 401);
    assert.equal(r.headers['www-authenticate'], 'Bearer realm="portico-admin"');
    assert.doesNotMatch(r.text, /adm\.test/);
  }
  // The liveness endpoint needs no token and says nothing but "ok".
  const live = await admin(adminPort, 'GET', '/healthz', undefined);
  assert.equal(live.status, 200);
  assert.equal(live.text, 'ok\n');
  assert.equal((await admin(adminPort, 'POST', '/healthz', undefined)).status, 401, 'only GET and HEAD are open');

  for (let i = 0; i < 3; i++) assert.equal((await h1Request({ port: proxy.httpsPort, sni: 'adm.test', path: `/x${i}`, ca: pki.caPem })).status, 200);
  assert.equal((await h1Request({ port: proxy.httpsPort, sni: 'adm.test', host: 'nothere.test', ca: pki.caPem })).status, 421);

  // One stream connection that carries an HTTP request to the upstream, one whose target refuses it.
  const raw = `GET /via-stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`;
  const sock = net.connect({ host: '127.0.0.1', port: streamPort });
  sock.end(raw);
  let answer = '';
  for await (const c of sock) answer += String(c);
  assert.match(answer, /^HTTP\/1\.1 200/);
  const dead = net.connect({ host: '127.0.0.1', port: deadStreamPort });
  dead.on('error', () => {});
  await once(dead, 'close');
  // Both connections are counted once each side has closed: wait for that rather than a fixed time.
  for (let i = 0; i < 100; i++) {
    const snap = JSON.parse((await admin(adminPort, 'GET', '/status', TOKEN)).text) as { processes: { streams: { closed: number }[] }[] };
    if (snap.processes[0]!.streams.reduce((a, st) => a + st.closed, 0) === 2) break;
    await sleep(30);
  }

  const status = await admin(adminPort, 'GET', '/status', TOKEN);
  assert.equal(status.status, 200);
  const body = JSON.parse(status.text) as { version: string; processes: { pid: number; generation: number; upstreams: { url: string; available: boolean }[]; certificates: { subjectAltName: string; notAfter: string }[] }[] };
  assert.equal(body.processes.length, 1);
  assert.equal(body.processes[0]!.pid, process.pid);
  assert.equal(body.processes[0]!.generation, 1);
  assert.deepEqual(body.processes[0]!.upstreams.map((u) => [u.url, u.available]), [[up.url, true]]);
  assert.equal(body.processes[0]!.certificates[0]!.subjectAltName, 'DNS:adm.test');

  const page = (await admin(adminPort, 'GET', '/metrics', TOKEN)).text;
  assert.equal(metric(page, 'portico_requests_total{host="adm.test",route="/",class="2xx"}'), 3);
  assert.equal(metric(page, 'portico_requests_total{host="",route="",class="4xx"}'), 1, 'the 421 is counted with the requests no route took');
  assert.equal(metric(page, 'portico_request_duration_seconds_count{host="adm.test",route="/"}'), 3);
  assert.match(page, /# TYPE portico_request_duration_seconds histogram/);
  assert.equal(metric(page, 'portico_request_duration_seconds_bucket{host="adm.test",route="/",le="+Inf"}'), 3);
  assert.equal(metric(page, 'portico_request_duration_seconds_bucket{host="adm.test",route="/",le="10"}'), 3, 'all three within 10 s');
  const buckets = [...page.matchAll(/^portico_request_duration_seconds_bucket\{host="adm\.test",route="\/",le="[^"]+"\} (\d+)$/gm)].map((m) => Number(m[1]));
  assert.equal(buckets.length, 12);
  assert.ok(buckets.every((n, i) => i === 0 || n >= buckets[i - 1]!), `cumulative: ${buckets.join(' ')}`);
  assert.equal(metric(page, `portico_upstream_up{upstream="${up.url}"}`), 1);
  assert.equal(metric(page, 'portico_config_generation'), 1);
  assert.equal(metric(page, 'portico_processes'), 1);
  assert.match(page, /^# TYPE portico_requests_total counter$/m);
  assert.equal(metric(page, `portico_stream_connections_total{port="${streamPort}",outcome="ok"}`), 1);
  assert.equal(metric(page, `portico_stream_connections_total{port="${deadStreamPort}",outcome="failed"}`), 1);
  assert.equal(metric(page, `portico_stream_bytes_total{port="${streamPort}",direction="in"}`), raw.length);
  assert.equal(metric(page, `portico_stream_bytes_total{port="${streamPort}",direction="out"}`), answer.length);
  assert.equal(metric(page, `portico_stream_open_connections{port="${streamPort}"}`), 0);
  assert.match(page, /^portico_certificate_expiry_timestamp_seconds\{certificate="[^"]+",names="DNS:adm.test"\} \d{10}$/m);

  // Wrong method, unknown path.
  const get = await admin(adminPort, 'GET', '/reload', TOKEN);
  assert.equal(get.status, 405);
  assert.equal(get.headers.allow, 'POST');
  assert.equal((await admin(adminPort, 'GET', '/nope', TOKEN)).status, 404);

  // A broken config: 422 with the field, and the old config keeps serving.
  await writeFile(proxy.configFile, JSON.stringify({ listen: { https: { port: proxy.httpsPort, addresses: ['127.0.0.1'] } }, certsDir: pki.dir, admin: config.admin, hosts: { 'adm.test': { tls: cert, routes: [{ path: '/', upstream: 'localhost:1' }] } } }));
  const refused = await admin(adminPort, 'POST', '/reload', TOKEN);
  assert.equal(refused.status, 422);
  const refusedBody = JSON.parse(refused.text) as { ok: boolean; processes: { ok: boolean; issues: { path: string }[] }[] };
  assert.equal(refusedBody.ok, false);
  assert.equal(refusedBody.processes[0]!.issues[0]!.path, 'hosts["adm.test"].routes[0].upstream');
  assert.equal((await h1Request({ port: proxy.httpsPort, sni: 'adm.test', path: '/still', ca: pki.caPem })).status, 200);
  assert.equal(metric((await admin(adminPort, 'GET', '/metrics', TOKEN)).text, 'portico_config_last_reload_successful'), 0);

  // A good config with a new token: 200, counters kept, and only the new token works afterwards.
  await writeFile(join(pki.dir, 'admin.token'), TOKEN2);
  await writeFile(proxy.configFile, JSON.stringify({ listen: { https: { port: proxy.httpsPort, addresses: ['127.0.0.1'] } }, certsDir: pki.dir, ...config }));
  const accepted = await admin(adminPort, 'POST', '/reload', TOKEN);
  assert.equal(accepted.status, 200);
  assert.deepEqual((JSON.parse(accepted.text) as { processes: { generation: number }[] }).processes.map((p) => p.generation), [2]);
  assert.equal((await admin(adminPort, 'GET', '/metrics', TOKEN)).status, 401);
  const after = (await admin(adminPort, 'GET', '/metrics', TOKEN2)).text;
  assert.equal(metric(after, 'portico_requests_total{host="adm.test",route="/",class="2xx"}'), 4, 'counters survive the reload');
  assert.equal(metric(after, 'portico_config_last_reload_successful'), 1);
});

test('admin settings: loopback unless allowRemote, a readable token of 32 characters or more', async () => {
  const host = { 'a.test': { tls: { cert: 'c.pem', key: 'k.pem' }, routes: [{ path: '/', upstream: 'http://127.0.0.1:1' }] } };
  const remote = validateConfig({ admin: { port: 9180, address: '0.0.0.0', tokenFile: 't' }, hosts: host });
  assert.equal(remote.ok, false);
  assert.match(remote.ok ? '' : `${remote.issues[0]!.path}: ${remote.issues[0]!.message}`, /^admin\.address: the admin API listens on loopback .*"allowRemote": true/);
  assert.equal(validateConfig({ admin: { port: 9180, address: '0.0.0.0', tokenFile: 't', allowRemote: true }, hosts: host }).ok, true);
  assert.equal(validateConfig({ admin: { port: 9180, address: '::1', tokenFile: 't' }, hosts: host }).ok, true);
  assert.equal(validateConfig({ admin: { port: 9180 }, hosts: host }).ok, false);

  const pki = await makePki();
  try {
    const cert = await pki.issue('c', ['a.test']);
    const file = join(pki.dir, 'p.json');
    const write = (tokenFile: string) => writeFile(file, JSON.stringify({ certsDir: '.', admin: { port: 9180, tokenFile }, hosts: { 'a.test': { tls: cert, routes: [{ path: '/', upstream: 'http://127.0.0.1:1' }] } } }));
    await write('missing.token');
    let r = await checkConfigFile(file);
    assert.equal(r.issues[0]?.path, 'admin.tokenFile');
    assert.match(r.issues[0]!.message, /cannot read the admin token file .*missing\.token \(ENOENT\); create it, e\.g\. with: openssl rand -hex 32/);
    await writeFile(join(pki.dir, 'short.token'), 'tooshort\n');
    await write('short.token');
    r = await checkConfigFile(file);
    assert.match(r.issues[0]!.message, /has 8 characters, fewer than 32/);
    await writeFile(join(pki.dir, 'spaced.token'), `${'a'.repeat(20)} ${'b'.repeat(20)}\n`);
    await write('spaced.token');
    r = await checkConfigFile(file);
    assert.match(r.issues[0]!.message, /has whitespace inside it, which an "Authorization: Bearer" header cannot carry/);
  } finally {
    await pki.cleanup();
  }
});

test('admin API with workers: the primary answers for every worker and reloads them all', async (t) => {
  const { pki, adminPort, proxy } = await spawnWorkersWithAdmin(t);
  let processes: { pid: number }[] = [];
  for (let i = 0; i < 100; i++) {
    const r = await admin(adminPort, 'GET', '/status', TOKEN).catch(() => undefined);
    if (r?.status === 200) processes = (JSON.parse(r.text) as { processes: { pid: number }[] }).processes;
    if (processes.length === 2) break;
    await sleep(100);
  }
  assert.equal(processes.length, 2, 'both workers answer');
  assert.equal((await admin(adminPort, 'GET', '/healthz', undefined)).status, 200, 'the primary is live once its workers serve');
  assert.ok(processes.every((p) => p.pid !== proxy.pid), 'the answers come from the workers, not the primary');
  for (let i = 0; i < 6; i++) assert.equal((await h1Request({ port: proxy.httpsPort, sni: 'site.test', path: `/w${i}`, ca: pki.caPem })).status, 200);
  const page = (await admin(adminPort, 'GET', '/metrics', TOKEN)).text;
  assert.equal(metric(page, 'portico_processes'), 2);
  assert.equal(metric(page, 'portico_requests_total{host="site.test",route="/",class="2xx"}'), 6, 'counts summed over the workers');
  const reload = await admin(adminPort, 'POST', '/reload', TOKEN);
  assert.equal(reload.status, 200);
  assert.deepEqual((JSON.parse(reload.text) as { processes: { generation: number }[] }).processes.map((p) => p.generation), [2, 2]);
  const served = JSON.parse((await admin(adminPort, 'GET', '/config', TOKEN)).text) as { workers: number; hosts: Record<string, unknown> };
  assert.equal(served.workers, 2, 'a worker\'s config, through the primary');
  assert.deepEqual(Object.keys(served.hosts), ['site.test']);
});

test('admin API with no worker serving yet: 503 with Retry-After, not an empty answer', async (t) => {
  const digest = createHash('sha256').update(TOKEN).digest();
  const server = new AdminServer({ snapshots: async () => [], reload: async () => [], setTargetDrained: async () => [], purgeCache: async () => [], effectiveConfig: async () => undefined, tokenDigest: () => digest, serving: () => 0 }, pino({ level: 'silent' }), '0.0.0');
  await server.listen(0, '127.0.0.1');
  t.after(() => server.close());
  for (const [method, path] of [['GET', '/status'], ['GET', '/metrics'], ['POST', '/reload'], ['POST', '/cache/purge']] as const) {
    const r = await admin(server.port, method, path, TOKEN);
    assert.equal(r.status, 503, `${method} ${path}`);
    assert.equal(r.headers['retry-after'], '1');
    assert.match(r.text, /no worker process is serving yet/);
  }
  const live = await admin(server.port, 'GET', '/healthz', undefined);
  assert.equal(live.status, 503, 'not live while no process serves');
  assert.equal(live.headers['retry-after'], '1');
});

test('GET /config redacts the ACME EAB key, the DNS-01 program\'s arguments, every basicAuth hash and the cookie values routes match, on hosts and routes', () => {
  const r = validateConfig({
    acme: {
      email: 'ops@example.com',
      termsOfServiceAgreed: true,
      eab: { kid: 'kid-1', hmacKey: 'c2VjcmV0LWtleQ' },
      dns01: { command: ['/usr/local/bin/dns-hook', '--api-token', 'dns-api-token-4242'] },
    },
    hosts: {
      'a.test': {
        tls: { acme: true },
        basicAuth: { users: { bob: '$scrypt$ln=15,r=8,p=1$c2FsdHNhbHRzYWx0c2FsdA$' + 'A'.repeat(86) } },
        routes: [
          { path: '/preview', match: { cookies: { preview: 'preview-token-7781', beta: ['beta-one-55', 'beta-two-66'] }, methods: ['GET'] }, upstream: 'http://127.0.0.1:1' },
          { upstream: 'http://127.0.0.1:1' },
          { path: '/open', basicAuth: false, upstream: 'http://127.0.0.1:1' },
        ],
      },
    },
  });
  assert.ok(r.ok, r.ok ? '' : JSON.stringify(r.issues));
  const redacted = redactConfig(r.config);
  const shown = JSON.stringify(redacted);
  assert.doesNotMatch(shown, /c2VjcmV0LWtleQ|\$scrypt\$|dns-api-token-4242|preview-token-7781|beta-one-55|beta-two-66/);
  assert.match(shown, /"hmacKey":"\(redacted\)"/);
  assert.match(shown, /"bob":"\(redacted\)"/);
  assert.match(shown, /"kid":"kid-1"/);
  // The structure stays: the program, how many arguments, which cookies and how many values each.
  assert.deepEqual(redacted.acme?.dns01?.command, ['/usr/local/bin/dns-hook', '(redacted)', '(redacted)']);
  const preview = redacted.hosts['a.test']!.routes[0]!.match;
  assert.deepEqual(preview?.cookies, { preview: '(redacted)', beta: ['(redacted)', '(redacted)'] });
  assert.deepEqual(preview?.methods, ['GET']);
  // The config being served keeps its values.
  assert.deepEqual(r.config.acme?.dns01?.command, ['/usr/local/bin/dns-hook', '--api-token', 'dns-api-token-4242']);
  assert.equal(r.config.hosts['a.test']!.routes[0]!.match?.cookies?.preview, 'preview-token-7781');
});

test('GET /config redacts credential headers set by header rules or matched by routes, ${ENV} secrets included, while the upstream still gets them', async (t) => {
  const pki = await makePki();
  const up = await startUpstream();
  await writeFile(join(pki.dir, 'admin.token'), TOKEN);
  const adminPort = await freePort();
  const cert = await pki.issue('sec', ['sec.test']);
  process.env.PORTICO_TEST_UPSTREAM_TOKEN = 'env-upstream-token-4711';
  t.after(() => delete process.env.PORTICO_TEST_UPSTREAM_TOKEN);
  const proxy = await startProxyFor(t, pki, {
    admin: { port: adminPort, tokenFile: 'admin.token' },
    hosts: {
      'sec.test': {
        tls: cert,
        headers: { request: { set: { Authorization: 'Bearer ${PORTICO_TEST_UPSTREAM_TOKEN}', 'X-Tenant': 'blue' } } },
        routes: [
          { path: '/', upstream: up.url, headers: { request: { set: { 'X-Api-Key': 'route-api-key-0815' } }, response: { set: { 'Set-Cookie': 'gate=cookie-secret-99' } } } },
          { path: '/internal', match: { headers: { 'X-Internal-Secret': 'match-secret-1234', 'X-Env': 'prod' } }, upstream: up.url },
          { path: '/preview', match: { cookies: { preview: 'cookie-match-token-5150' } }, upstream: up.url },
        ],
      },
    },
  }, [up.close]);
  const shown = await admin(adminPort, 'GET', '/config', TOKEN);
  assert.equal(shown.status, 200);
  for (const secret of ['env-upstream-token-4711', 'route-api-key-0815', 'cookie-secret-99', 'match-secret-1234', 'cookie-match-token-5150']) assert.ok(!shown.text.includes(secret), `${secret} is not shown`);
  const host = (JSON.parse(shown.text) as { hosts: Record<string, { headers: { request: { set: Record<string, string> } }; routes: { headers?: { request: { set: Record<string, string> }; response: { set: Record<string, string> } }; match?: { headers?: Record<string, string>; cookies?: Record<string, string> } }[] }> }).hosts['sec.test']!;
  assert.deepEqual(host.headers.request.set, { Authorization: '(redacted)', 'X-Tenant': 'blue' }, 'other headers are shown as they are');
  assert.deepEqual(host.routes[0]!.headers!.request.set, { 'X-Api-Key': '(redacted)' });
  assert.deepEqual(host.routes[0]!.headers!.response.set, { 'Set-Cookie': '(redacted)' });
  assert.deepEqual(host.routes[1]!.match!.headers, { 'X-Internal-Secret': '(redacted)', 'X-Env': 'prod' });
  assert.deepEqual(host.routes[2]!.match!.cookies, { preview: '(redacted)' });
  // Redacting the copy the admin API shows leaves the config being served alone.
  const r = await h1Request({ port: proxy.httpsPort, sni: 'sec.test', path: '/x', ca: pki.caPem });
  assert.equal(r.status, 200);
  assert.equal(up.seen.at(-1)!.headers.authorization, 'Bearer env-upstream-token-4711');
  assert.equal(up.seen.at(-1)!.headers['x-api-key'], 'route-api-key-0815');
});

test('with workers, /metrics counters do not go back when a worker dies and is replaced', async (t) => {
  const { pki, adminPort, proxy } = await spawnWorkersWithAdmin(t);
  const pids = async (): Promise<number[]> => {
    const r = await admin(adminPort, 'GET', '/status', TOKEN).catch(() => undefined);
    return r?.status === 200 ? (JSON.parse(r.text) as { processes: { pid: number }[] }).processes.map((p) => p.pid) : [];
  };
  let before: number[] = [];
  for (let i = 0; i < 100 && before.length < 2; i++) {
    before = await pids();
    if (before.length < 2) await sleep(100);
  }
  assert.equal(before.length, 2, 'both workers answer');
  for (let i = 0; i < 6; i++) assert.equal((await h1Request({ port: proxy.httpsPort, sni: 'site.test', path: `/m${i}`, ca: pki.caPem })).status, 200);
  const REQUESTS = 'portico_requests_total{host="site.test",route="/",class="2xx"}';
  const COUNT = 'portico_request_duration_seconds_count{host="site.test",route="/"}';
  const INF = 'portico_request_duration_seconds_bucket{host="site.test",route="/",le="+Inf"}';
  const page1 = (await admin(adminPort, 'GET', '/metrics', TOKEN)).text;
  assert.equal(metric(page1, REQUESTS), 6);
  const cpu1 = metric(page1, 'process_cpu_seconds_total') as number;
  // The worker that served the most of them dies.
  const status = JSON.parse((await admin(adminPort, 'GET', '/status', TOKEN)).text) as { processes: { pid: number; routes: { host: string; byClass: number[] }[] }[] };
  const served = (p: (typeof status.processes)[number]): number => p.routes.find((r) => r.host === 'site.test')?.byClass[2] ?? 0;
  const busiest = [...status.processes].sort((a, b) => served(b) - served(a))[0]!;
  assert.ok(served(busiest) > 0);
  before = [busiest.pid];
  process.kill(before[0]!, 'SIGKILL');
  let after: number[] = [];
  for (let i = 0; i < 150; i++) {
    after = await pids();
    if (after.length === 2 && !after.includes(before[0]!)) break;
    await sleep(100);
  }
  assert.equal(after.length, 2, 'a new worker replaced the dead one');
  assert.ok(!after.includes(before[0]!));
  const page2 = (await admin(adminPort, 'GET', '/metrics', TOKEN)).text;
  assert.equal(metric(page2, REQUESTS), 6, 'the dead worker\'s requests still count');
  assert.equal(metric(page2, COUNT), 6);
  assert.equal(metric(page2, INF), 6);
  assert.equal(metric(page2, 'portico_processes'), 2);
  assert.ok((metric(page2, 'process_cpu_seconds_total') as number) >= cpu1, 'CPU time does not go back');
  for (let i = 0; i < 2; i++) assert.equal((await h1Request({ port: proxy.httpsPort, sni: 'site.test', path: `/n${i}`, ca: pki.caPem })).status, 200);
  assert.equal(metric((await admin(adminPort, 'GET', '/metrics', TOKEN)).text, REQUESTS), 8);
});

test('requests refused for their token get one warn line a minute, not one each: the first at once, then a count', async (t) => {
  const digest = createHash('sha256').update(TOKEN).digest();
  const lines: { msg: string; count?: number; remote?: string }[] = [];
  const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as { msg: string }) });
  const server = new AdminServer({ snapshots: async () => [], reload: async () => [], setTargetDrained: async () => [], purgeCache: async () => [], effectiveConfig: async () => undefined, tokenDigest: () => digest, serving: () => 1 }, log, '0.0.0');
  await server.listen(0, '127.0.0.1');
  t.after(() => server.close());
  t.mock.timers.enable({ apis: ['setTimeout'] });
  for (let i = 0; i < 20; i++) assert.equal((await admin(server.port, 'GET', '/status', `guess-${i}`)).status, 401);
  const refused = (): typeof lines => lines.filter((l) => l.msg.includes('refused'));
  assert.equal(refused().length, 1, 'one line for the first refusal');
  t.mock.timers.tick(60_000);
  assert.equal(refused().length, 2);
  assert.equal(refused()[1]!.count, 19);
  assert.equal(refused()[1]!.remote, '127.0.0.1');
});
