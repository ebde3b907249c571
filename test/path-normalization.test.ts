import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { normalizePath } from '../src/proxy/normalize-path.js';
import { makePki, startProxyFor } from './helpers/proxy.js';
import { h2Connect, h2Request, startUpstream } from './helpers/net.js';
import { RawClient } from './helpers/raw-http1.js';

test('normalizePath: escapes of unreserved characters decoded, slashes merged, dot segments resolved; climbing out or hidden dots refused', () => {
  const cases: [string, string | undefined][] = [
    ['/', '/'],
    ['/a/b/', '/a/b/'],
    ['//admin', '/admin'],
    ['/a//b///c', '/a/b/c'],
    ['/%61dmin/%7Euser', '/admin/~user'],
    ['/a%2fb', '/a%2Fb'],
    ['/a/./b/../c', '/a/c'],
    ['/a/b/..', '/a/'],
    ['/p/%2e%2E/admin', '/admin'],
    ['/.well-known/acme-challenge/x', '/.well-known/acme-challenge/x'],
    ['/x?next=/../../etc', '/x?next=/../../etc'],
    ['/..', undefined],
    ['/a/../../b', undefined],
    ['/public%2F..%2Fadmin', undefined],
    ['/public\\..\\admin', undefined],
    // Tomcat and Spring drop a segment's ";parameters" before resolving dot segments: "..;" is their "..".
    ['/public/..;/admin', undefined],
    ['/public/.;x/admin', undefined],
    ['/public/%2e%2e;/admin', undefined],
    ['/public%2F..;%2Fadmin', undefined],
    ['/a;b/c.;d/e', '/a;b/c.;d/e'],
    ['/.;', undefined],
  ];
  for (const [input, output] of cases) assert.equal(normalizePath(input), output, input);
});

/**
 * Portico serving `host` with an open "/" route, an "/admin" route only ::1 may use (so this client
 * gets 403 there), and the routes in `more`, all to one upstream that answers with the path it got; `ask`
 * sends a raw HTTP/1.1 GET on one TLS connection.
 */
async function guardedHost(t: TestContext, host: string, more: { path: string; stripPrefix?: boolean }[] = []) {
  const pki = await makePki();
  const up = await startUpstream((req, res) => {
    req.resume();
    res.end(`upstream got ${req.url ?? ''}`);
  });
  const cert = await pki.issue(host, [host]);
  const routes = [{ path: '/', upstream: up.url }, { path: '/admin', upstream: up.url, allowFrom: ['::1/128'] }, ...more.map((r) => ({ ...r, upstream: up.url }))];
  const proxy = await startProxyFor(t, pki, { hosts: { [host]: { tls: cert, routes } } }, [up.close]);
  const c = await RawClient.open(t, { port: proxy.httpsPort, tls: { servername: host, ca: pki.caPem } });
  const ask = async (path: string): Promise<{ status: number; body: string }> => {
    await c.write(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
    const r = await c.response();
    return { status: r.status, body: r.body.toString() };
  };
  return { pki, up, proxy, ask };
}

test('routes match the normalised path, so dot segments, doubled slashes and escapes cannot walk around a route\'s allowFrom or basicAuth', async (t) => {
  const { pki, up, proxy, ask } = await guardedHost(t, 'pn.test');

  for (const sneaky of ['/public/../admin', '//admin', '/%61dmin/x', '/public/%2e%2e/admin', '/./admin']) {
    assert.equal((await ask(sneaky)).status, 403, `${sneaky} is the /admin route`);
  }
  for (const refused of ['/public%2F..%2Fadmin', '/../admin', '/public\\..\\admin', '/public/..;/admin', '/public/.;/admin']) {
    const r = await ask(refused);
    assert.equal(r.status, 400, refused);
  }
  assert.equal(up.seen.length, 0, 'none of them reached the upstream');
  // What goes upstream is the normalised path; the query is left alone.
  assert.equal((await ask('//a//b/./c/%7Ed?x=/../y')).body, 'upstream got /a/b/c/~d?x=/../y');
  const s = await h2Connect(proxy.httpsPort, 'pn.test', pki.caPem);
  assert.equal((await h2Request(s, { path: '/x/../admin' })).status, 403, 'HTTP/2 too');
  s.close();
});

test('path parameters take no part in route matching: "/admin;x" meets the "/admin" route (as Tomcat and Spring serve it), and a stripped prefix takes its parameters along', async (t) => {
  const { up, ask } = await guardedHost(t, 'pp.test', [{ path: '/api', stripPrefix: true }]);

  for (const sneaky of ['/admin;jsessionid=1', '/admin;x/users', '/admin;/']) {
    assert.equal((await ask(sneaky)).status, 403, `${sneaky} is the /admin route`);
  }
  assert.equal(up.seen.length, 0, 'none of them reached the upstream');
  assert.equal((await ask('/adminx;y')).body, 'upstream got /adminx;y', 'another segment stays another route, parameters and all');
  assert.equal((await ask('/api;v=2/users;page=3?q=1')).body, 'upstream got /users;page=3?q=1', 'the stripped segment takes its parameters along; later ones are kept');
  assert.equal((await ask('/api/users?x=a;b')).body, 'upstream got /users?x=a;b', 'a ";" in the query is the query\'s');
});
