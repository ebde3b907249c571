import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { validateConfig } from '../src/config/load.js';
import { scryptSync } from 'node:crypto';
import { AUTH_BUSY, BasicAuth, hashPassword } from '../src/proxy/basic-auth.js';
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
  const again = auth.check(basic('carol', 'nope'));
  assert.ok(again instanceof Promise, 'failures are not remembered');
  await again;
  assert.equal(auth.check(undefined), undefined);
  assert.equal(auth.check(`Basic ${Buffer.from('no-colon').toString('base64')}`), undefined);
});

/** A valid hash at the lowest cost the config allows (ln=10), so that tests can make many checks quickly. */
function cheapHash(password: string): string {
  const salt = Buffer.alloc(16, 7);
  const b64 = (b: Buffer): string => b.toString('base64').replace(/=+$/, '');
  return `$scrypt$ln=10,r=8,p=1$${b64(salt)}$${b64(scryptSync(password, salt, 32, { N: 1024, r: 8, p: 1 }))}`;
}

test('BasicAuth runs 2 password checks at once and queues 32; past that a check is refused at once (AUTH_BUSY) instead of queueing on the thread pool without bound', async () => {
  const auth = new BasicAuth('r', { dave: cheapHash('pw') });
  // An attacker's flood of made-up passwords, all arriving before any check ends.
  const results = Array.from({ length: 50 }, (_, i) => auth.check(basic(i % 2 === 0 ? 'dave' : 'nobody', `guess${i}`)));
  assert.ok(results.slice(0, 34).every((r) => r instanceof Promise), 'the first 2 run and 32 wait');
  assert.deepEqual(results.slice(34), Array(16).fill(AUTH_BUSY), 'the rest are refused, known user or not');
  assert.deepEqual(await Promise.all(results.slice(0, 34)), Array(34).fill(undefined));
  // The queue drained: checks run again.
  assert.equal(await auth.check(basic('dave', 'pw')), 'dave');
});

test('basicAuth: a flood of new credentials gets 503 PORTICO_AUTH_BUSY with Retry-After past the check queue; a valid login works once it drains', async (t) => {
  const pki = await makePki();
  const cert = await pki.issue('bb', ['busy.test']);
  const proxy = await startProxyFor(t, pki, {
    hosts: { 'busy.test': { tls: cert, basicAuth: { users: { erin: cheapHash('pw') } }, routes: [{ path: '/', respond: { body: 'in' } }] } },
  });
  const session = await h2Connect(proxy.httpsPort, 'busy.test', pki.caPem);
  t.after(() => session.close());
  // On one HTTP/2 connection the streams arrive together, before any check can end.
  const flood = await Promise.all(Array.from({ length: 80 }, (_, i) => h2Request(session, { headers: { authorization: basic('erin', `guess${i}`) } })));
  const busy = flood.filter((r) => r.status === 503);
  assert.ok(busy.length > 0, `some requests past the queue are refused (statuses: ${flood.map((r) => r.status).join(' ')})`);
  assert.equal(busy.length + flood.filter((r) => r.status === 401).length, 80);
  assert.equal(busy[0]!.headers['x-portico-error'], 'PORTICO_AUTH_BUSY');
  assert.equal(busy[0]!.headers['retry-after'], '1');
  const ok = await h2Request(session, { headers: { authorization: basic('erin', 'pw') } });
  assert.equal(ok.status, 200);
  assert.equal(ok.text, 'in');
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
