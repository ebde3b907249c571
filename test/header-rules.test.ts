import { test } from 'node:test';
import assert from 'node:assert/strict';
import { validateConfig } from '../src/config/load.js';
import { applyToObject, applyToPairs, compileHeaderRules } from '../src/proxy/header-rules.js';
import { makePki, startProxyFor } from './helpers/proxy.js';
import { h1Request, h2Connect, h2Request, startUpstream } from './helpers/net.js';

test('header rules: a host\'s and a route\'s changes to requests and responses, over HTTP/1.1 and HTTP/2', async (t) => {
  const pki = await makePki();
  const up = await startUpstream((req, res, seen) => {
    req.resume();
    req.on('end', () => {
      const body = JSON.stringify({ headers: seen.headers });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), server: 'backend/1.0', 'x-powered-by': 'php', 'x-keep': 'yes' });
      res.end(body);
    });
  });
  const cert = await pki.issue('h', ['hr.test']);
  const proxy = await startProxyFor(
    t,
    pki,
    {
      hosts: {
        'hr.test': {
          tls: cert,
          headers: {
            request: { set: { 'X-Env': 'prod', 'X-Team': 'web' }, remove: ['X-Debug'] },
            response: { set: { 'Strict-Transport-Security': 'max-age=31536000' }, remove: ['Server'] },
          },
          routes: [
            { path: '/', upstream: up.url },
            { path: '/api', upstream: up.url, headers: { request: { set: { 'X-Team': 'api' } }, response: { remove: ['X-Powered-By'] } } },
          ],
        },
      },
    },
    [up.close],
  );
  const check = (h: Record<string, unknown>, upstreamHeaders: Record<string, unknown>, route: 'root' | 'api'): void => {
    assert.equal(upstreamHeaders['x-env'], 'prod');
    assert.equal(upstreamHeaders['x-team'], route === 'api' ? 'api' : 'web', "a route's set wins over its host's");
    assert.equal(upstreamHeaders['x-debug'], undefined, 'removed before the upstream');
    assert.equal(upstreamHeaders['x-forwarded-for'], '127.0.0.1', "Portico's own headers stay");
    assert.equal(h['strict-transport-security'], 'max-age=31536000');
    assert.equal(h.server, undefined);
    assert.equal(h['x-keep'], 'yes');
    assert.equal(h['x-powered-by'], route === 'api' ? undefined : 'php');
  };
  for (const path of ['/', '/api/x']) {
    const r = await h1Request({ port: proxy.httpsPort, sni: 'hr.test', path, headers: { 'x-debug': '1', 'x-env': 'dev' }, ca: pki.caPem });
    assert.equal(r.status, 200);
    check(r.headers as Record<string, unknown>, (JSON.parse(r.text) as { headers: Record<string, unknown> }).headers, path === '/' ? 'root' : 'api');
  }
  const s = await h2Connect(proxy.httpsPort, 'hr.test', pki.caPem);
  for (const path of ['/', '/api/x']) {
    const r = await h2Request(s, { path, headers: { 'x-debug': '1' } });
    assert.equal(r.status, 200);
    check(r.headers as Record<string, unknown>, (JSON.parse(r.text) as { headers: Record<string, unknown> }).headers, path === '/' ? 'root' : 'api');
  }
  s.close();
  // Portico's own answers are not changed.
  const notFound = await h1Request({ port: proxy.httpsPort, sni: 'hr.test', host: 'other.test', ca: pki.caPem });
  assert.equal(notFound.headers['strict-transport-security'], undefined);
});

test('header rules that would break framing, or split a header, are refused with their paths', () => {
  const first = (headers: unknown): string => {
    const r = validateConfig({ hosts: { 'a.test': { tls: { cert: 'c', key: 'k' }, routes: [{ path: '/', upstream: 'http://127.0.0.1:1', headers }] } } });
    assert.equal(r.ok, false);
    return r.ok ? '' : `${r.issues[0]!.path}: ${r.issues[0]!.message}`;
  };
  const at = 'hosts["a.test"].routes[0].headers';
  assert.match(first({ response: { remove: ['Content-Length'] } }), new RegExp(`^${at.replace(/[[\]"().]/g, '\\$&')}\\.response\\.remove\\[0\\]: "Content-Length" cannot be set or removed by a rule`));
  assert.match(first({ request: { set: { Host: 'x' } } }), /request\.set.*"Host" cannot be set or removed by a rule.*use the upstream's "hostHeader"/);
  assert.match(first({ request: { set: { 'X-A': 'a\r\nX-B: b' } } }), /request\.set\["X-A"\]: a header value cannot hold control characters/);
  assert.match(first({ request: { set: { 'Bad Name': 'x' } } }), /expected a header name/);
  assert.match(first({ responses: {} }), /headers\.responses: unknown key/);
  assert.match(first({ response: { set: { 'X-A': '1', 'x-a': '2' } } }), /response\.set\["x-a"\]: "x-a" names the same header as "X-A" \(header names ignore case\); keep one/);
});

test('compiled rules remove names in any case and of any length, leave others of a length that shares their bits, and put a set header last', () => {
  const long = 'X-A-Header-Name-Of-Forty-Characters-Long'; // 40 characters: 40 % 32 = 8, as "X-Remove" and "X-Keep-1"
  assert.equal(long.length, 40);
  const rules = compileHeaderRules({ response: { set: { 'X-Set': 'new' }, remove: [long, 'X-Remove'] } }, undefined)!.response!;
  const pairs = ['Server', 'a', long.toUpperCase(), 'b', 'x-remove', 'c', 'X-Keep-1', 'd', 'X-SET', 'old', 'Content-Type', 'e'];
  assert.deepEqual(applyToPairs(pairs, rules), ['Server', 'a', 'X-Keep-1', 'd', 'Content-Type', 'e', 'X-Set', 'new']);
  const headers: Record<string, string> = { 'x-set': 'old', 'x-remove': 'c', 'x-keep-1': 'd', [long.toLowerCase()]: 'b' };
  applyToObject(headers, rules);
  assert.deepEqual(Object.entries(headers), [['x-keep-1', 'd'], ['x-set', 'new']]);
});
