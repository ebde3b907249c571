import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { validateConfig } from '../src/config/load.js';
import { BasicAuth, hashPassword } from '../src/proxy/basic-auth.js';
import { makePki, startProxyFor } from './helpers/proxy.js';
import { h1Request, h2Connect, h2Request, startUpstream } from './helpers/net.js';
import { RawClient, rawUpgradeRequest } from './helpers/raw-http1.js';
import { curl, requireTool } from './helpers/real-peers.js';

const MAIN = new URL('../src/main.js', import.meta.url).pathname;

/** `portico hash-password` with the password piped on stdin. */
function cliHash(password: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(process.execPath, [MAIN, 'hash-password'], (err, stdout, stderr) => (err ? reject(new Error(`${err.message}: ${stderr}`)) : resolve(stdout.trim())));
    child.stdin!.end(`${password}\n`);
  });
}

const basic = (user: string, password: string): string => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

test('basicAuth: a host\'s login, a route\'s own, a public route; 401 with the challenge, over HTTP/1.1, HTTP/2, curl and an upgrade', async (t) => {
  const [alice, bob] = await Promise.all([cliHash('wonder land'), hashPassword('b0b')]);
  assert.match(alice, /^\$scrypt\$ln=15,r=8,p=1\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$/);
  const pki = await makePki();
  const up = await startUpstream((req, res) => {
    req.resume();
    res.end('secret');
  });
  const cert = await pki.issue('ba', ['ba.test']);
  const proxy = await startProxyFor(
    t,
    pki,
    {
      hosts: {
        'ba.test': {
          tls: cert,
          basicAuth: { users: { alice } },
          routes: [
            { path: '/', upstream: up.url },
            { path: '/health', basicAuth: false, respond: { body: 'ok' } },
            { path: '/admin', basicAuth: { realm: 'admin area', users: { bob } }, upstream: up.url },
          ],
        },
      },
    },
    [up.close],
  );
  const get = (path: string, authorization?: string) =>
    h1Request({ port: proxy.httpsPort, sni: 'ba.test', path, headers: authorization === undefined ? {} : { authorization }, ca: pki.caPem });

  let r = await get('/');
  assert.equal(r.status, 401);
  assert.equal(r.headers['www-authenticate'], 'Basic realm="restricted", charset="UTF-8"');
  assert.equal(r.headers['x-portico-error'], 'PORTICO_UNAUTHORIZED');
  assert.equal((await get('/', basic('alice', 'wrong'))).status, 401);
  assert.equal((await get('/', basic('mallory', 'wonder land'))).status, 401);
  assert.equal((await get('/', 'Bearer abc')).status, 401);
  assert.equal((await get('/', 'Basic !!!')).status, 401);
  assert.equal(up.seen.length, 0, 'nothing reached the upstream');
  r = await get('/x', basic('alice', 'wonder land'));
  assert.equal(r.status, 200);
  assert.equal(r.text, 'secret');
  assert.equal(up.seen[0]!.headers.authorization, basic('alice', 'wonder land'), 'forwarded as sent');
  assert.equal((await get('/y', basic('alice', 'wonder land'))).status, 200, 'remembered credentials');
  assert.equal((await get('/health')).status, 200, 'basicAuth: false makes a route public');
  r = await get('/admin', basic('alice', 'wonder land'));
  assert.equal(r.status, 401, "a route's login replaces its host's");
  assert.equal(r.headers['www-authenticate'], 'Basic realm="admin area", charset="UTF-8"');
  assert.equal((await get('/admin', basic('bob', 'b0b'))).status, 200);

  const s = await h2Connect(proxy.httpsPort, 'ba.test', pki.caPem);
  const h = await h2Request(s, { path: '/' });
  assert.equal(h.status, 401);
  assert.equal(h.headers['www-authenticate'], 'Basic realm="restricted", charset="UTF-8"');
  assert.equal((await h2Request(s, { path: '/', headers: { authorization: basic('alice', 'wonder land') } })).status, 200);
  // Several new requests with new credentials at once: each is answered.
  const many = await Promise.all([1, 2, 3, 4].map(() => h2Request(s, { path: '/admin', headers: { authorization: basic('bob', 'b0b') } })));
  assert.deepEqual(many.map((m) => m.status), [200, 200, 200, 200]);
  s.close();

  const ws = await RawClient.open(t, { port: proxy.httpsPort, tls: { servername: 'ba.test', ca: pki.caPem } });
  await ws.write(rawUpgradeRequest('ba.test', '/chat'));
  const w = await ws.response();
  assert.equal(w.status, 401);
  assert.equal(w.headers['www-authenticate'], 'Basic realm="restricted", charset="UTF-8"');

  if (requireTool(t, 'curl')) {
    const caFile = join(pki.dir, 'ca.pem');
    await writeFile(caFile, pki.caPem);
    for (const proto of ['--http1.1', '--http2']) {
      const no = await curl({ host: 'ba.test', port: proxy.httpsPort, caFile, args: [proto, '-o', '/dev/null', '-w', '%{http_code}'] });
      assert.equal(no.stdout, '401', no.stderr);
      const yes = await curl({ host: 'ba.test', port: proxy.httpsPort, caFile, args: [proto, '-u', 'alice:wonder land', '-o', '-', '-w', ' %{http_code}'] });
      assert.match(yes.stdout, /\r\n\r\nsecret 200$/, yes.stderr);
    }
  }
});

test('BasicAuth checks new credentials off-thread once, then answers from memory', async () => {
  const auth = new BasicAuth('r', { carol: await hashPassword('pw') });
  const header = basic('carol', 'pw');
  const first = auth.check(header);
  assert.ok(first instanceof Promise, 'new credentials are hashed');
  assert.equal(auth.check(header), first, 'a second request meanwhile shares the check');
  assert.equal(await first, 'carol');
  assert.equal(auth.check(header), 'carol', 'then known at once');
  const wrong = auth.check(basic('carol', 'nope'));
  assert.ok(wrong instanceof Promise);
  assert.equal(await wrong, undefined);
  assert.ok(auth.check(basic('carol', 'nope')) instanceof Promise, 'failures are not remembered');
  assert.equal(auth.check(undefined), undefined);
  assert.equal(auth.check(`Basic ${Buffer.from('no-colon').toString('base64')}`), undefined);
});

test('basicAuth settings are checked with their paths', () => {
  const issues = (host: Record<string, unknown>, route: Record<string, unknown> = {}): string[] => {
    const r = validateConfig({ hosts: { 'a.test': { tls: { cert: 'c', key: 'k' }, ...host, routes: [{ upstream: 'http://127.0.0.1:1', ...route }] } } });
    return r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`);
  };
  const good = '$scrypt$ln=15,r=8,p=1$Qs6H5PKdQXtj7fN3sJVdNA$Ia9Y68GBtddf1IVpEUmnfR66qWxsAUaaLsDqVTrULHY';
  assert.deepEqual(issues({ basicAuth: { users: { alice: good } } }), []);
  assert.match(issues({ basicAuth: { users: { alice: 'plaintext' } } })[0]!, /^hosts\["a\.test"\]\.basicAuth\.users\.alice: expected a password hash made by "portico hash-password"/);
  assert.match(issues({ basicAuth: { users: { alice: good.replace('ln=15', 'ln=30') } } })[0]!, /scrypt parameters out of range/);
  assert.match(issues({ basicAuth: { users: {} } })[0]!, /basicAuth\.users: list at least one user/);
  assert.match(issues({ basicAuth: { users: { 'a:b': good } } })[0]!, /a user name cannot be empty or hold ":"/);
  assert.match(issues({ basicAuth: { realm: 'say "hi"', users: { alice: good } } })[0]!, /basicAuth\.realm: expected printable characters without quotes/);
  assert.match(issues({}, { basicAuth: true })[0]!, /^hosts\["a\.test"\]\.routes\[0\]\.basicAuth/);
  assert.deepEqual(issues({}, { basicAuth: false }), []);
});
