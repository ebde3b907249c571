import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readCookie } from '../src/proxy/sticky-cookie.js';
import { makePki, startProxyFor } from './helpers/proxy.js';
import { freePort, h1Request, h2Connect, h2Request, startUpstream } from './helpers/net.js';
import { curl, requireTool } from './helpers/real-peers.js';

test('loadBalancing "cookie": the first answer sets a cookie naming its target, and the cookie keeps the client there', async (t) => {
  const pki = await makePki();
  const named = (name: string) =>
    startUpstream((req, res) => {
      req.resume();
      res.writeHead(200, { 'set-cookie': 'app=1; Path=/' });
      res.end(name);
    });
  const [a, b] = await Promise.all([named('a'), named('b')]);
  const dead = `http://127.0.0.1:${await freePort()}`;
  const cert = await pki.issue('st', ['st.test']);
  const upstream = (targets: string[]) => ({ targets, loadBalancing: 'cookie' as const, stickyCookie: 'srv' });
  const proxy = await startProxyFor(
    t,
    pki,
    { hosts: { 'st.test': { tls: cert, routes: [{ path: '/', upstream: upstream([a.url, b.url]) }, { path: '/flaky', upstream: upstream([dead, a.url]) }] } } },
    [a.close, b.close],
  );
  const get = (path: string, cookie?: string) => h1Request({ port: proxy.httpsPort, sni: 'st.test', path, headers: cookie === undefined ? {} : { cookie }, ca: pki.caPem });
  const cookieOf = (h: Record<string, unknown>): string | undefined => {
    const list = (h['set-cookie'] as string[] | undefined) ?? [];
    const ours = list.find((c) => c.startsWith('srv='));
    return ours?.split(';')[0];
  };

  const first = await get('/');
  const jar = cookieOf(first.headers);
  assert.ok(jar !== undefined, 'the first answer sets the cookie');
  assert.match((first.headers['set-cookie'] as string[]).find((c) => c.startsWith('srv='))!, /^srv=[A-Za-z0-9_-]{16}; Path=\/; HttpOnly; SameSite=Lax; Secure$/);
  assert.ok((first.headers['set-cookie'] as string[]).includes('app=1; Path=/'), "the upstream's own cookie stays");
  assert.doesNotMatch(jar, /127\.0\.0\.1/, 'the cookie does not show the address');
  for (let i = 0; i < 6; i++) {
    const r = await get('/', `app=1; ${jar}`);
    assert.equal(r.text, first.text, 'the same target every time');
    assert.equal(cookieOf(r.headers), undefined, 'no new cookie while it is right');
  }
  const moved = await get('/', 'srv=not-a-target');
  assert.ok(cookieOf(moved.headers) !== undefined, 'an unknown value gets a new cookie');

  // A cookie for a target that fails: the request goes elsewhere and the cookie is replaced.
  const onFlaky = await get('/flaky');
  const flakyJar = cookieOf(onFlaky.headers)!;
  assert.equal(onFlaky.text, 'a');
  const deadValue = (await import('node:crypto')).createHash('sha256').update(dead).digest('base64url').slice(0, 16);
  const rescued = await get('/flaky', `srv=${deadValue}`);
  assert.equal(rescued.text, 'a');
  assert.equal(cookieOf(rescued.headers), flakyJar, 'the cookie now names the target that answered');

  const s = await h2Connect(proxy.httpsPort, 'st.test', pki.caPem);
  const h2first = await h2Request(s, { path: '/' });
  const h2jar = cookieOf(h2first.headers as Record<string, unknown>)!;
  for (let i = 0; i < 4; i++) assert.equal((await h2Request(s, { path: '/', headers: { cookie: h2jar } })).text, h2first.text, 'HTTP/2');
  s.close();

  if (requireTool(t, 'curl')) {
    const caFile = join(pki.dir, 'ca.pem');
    await writeFile(caFile, pki.caPem);
    const jarFile = join(pki.dir, 'curl.jar');
    const seen = new Set<string>();
    for (let i = 0; i < 5; i++) {
      const c = await curl({ host: 'st.test', port: proxy.httpsPort, caFile, args: ['-c', jarFile, '-b', jarFile, '-o', '-', '-w', ''] });
      seen.add(c.stdout.slice(c.stdout.lastIndexOf('\n') + 1));
    }
    assert.equal(seen.size, 1, `curl with a cookie jar stays on one target: ${[...seen].join(',')}`);
  }
});

test('stickyCookie without loadBalancing "cookie" is refused with its path', async () => {
  const { validateConfig } = await import('../src/config/load.js');
  const r = validateConfig({ hosts: { 'a.test': { tls: { cert: 'c', key: 'k' }, routes: [{ upstream: { targets: ['http://127.0.0.1:1'], stickyCookie: 'srv' } }] } } });
  assert.equal(r.ok, false);
  assert.match(r.ok ? '' : `${r.issues[0]!.path}: ${r.issues[0]!.message}`, /routes\[0\]\.upstream\.stickyCookie: "stickyCookie" only names the cookie of "loadBalancing": "cookie"/);
});

test('readCookie finds one cookie among several', () => {
  assert.equal(readCookie('a=1; srv=xyz; b=2', 'srv'), 'xyz');
  assert.equal(readCookie('srv=xyz', 'srv'), 'xyz');
  assert.equal(readCookie('xsrv=1; srv = v ', 'srv'), 'v');
  assert.equal(readCookie('a=1', 'srv'), undefined);
  assert.equal(readCookie(undefined, 'srv'), undefined);
  assert.equal(readCookie(['a=1', 'srv=2'], 'srv'), '2');
});
