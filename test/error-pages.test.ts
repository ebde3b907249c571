import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { validateConfig } from '../src/config/load.js';
import { checkHosts, makePki, startProxyFor } from './helpers/proxy.js';
import { freePort, h1Request, h2Connect, h2Request, startUpstream } from './helpers/net.js';

test('errorPages: a host\'s pages for the errors Portico answers, exact status before class; upstream answers untouched', async (t) => {
  const pki = await makePki();
  await mkdir(join(pki.dir, 'pages'));
  await writeFile(join(pki.dir, 'pages', '5xx.html'), '<h1>We are fixing it</h1>\n');
  await writeFile(join(pki.dir, 'pages', '504.txt'), 'too slow\n');
  await writeFile(join(pki.dir, 'pages', '404.json'), '{"error":"not found"}\n');
  await writeFile(join(pki.dir, 'pages', '4xx.html'), '<h1>Client error</h1>\n');
  const up = await startUpstream((req, res) => {
    req.resume();
    res.writeHead(500, { 'content-type': 'text/plain' });
    res.end('the app failed');
  });
  // A server that accepts and never answers: 504 after responseTimeout.
  // (It reads, so it sees Portico close the connection, and close() can finish.)
  const silent = net.createServer((socket) => socket.resume());
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
  const silentUrl = `http://127.0.0.1:${(silent.address() as net.AddressInfo).port}`;
  const dead = `http://127.0.0.1:${await freePort()}`;
  const cert = await pki.issue('ep', ['ep.test', 'plain.test']);
  const proxy = await startProxyFor(
    t,
    pki,
    {
      hosts: {
        'ep.test': {
          tls: cert,
          errorPages: { '5xx': 'pages/5xx.html', '504': 'pages/504.txt', '404': 'pages/404.json', '4xx': 'pages/4xx.html' },
          routes: [
            { path: '/app', upstream: up.url },
            { path: '/dead', upstream: dead },
            { path: '/slow', upstream: { targets: [silentUrl], responseTimeout: '200ms' } },
            { path: '/limited', upstream: up.url, rateLimit: { requests: 1, per: '1m' } },
          ],
        },
        'plain.test': { tls: cert, routes: [{ path: '/dead', upstream: dead }] },
      },
    },
    [up.close, () => new Promise((r) => silent.close(r))],
  );
  const get = (path: string, sni = 'ep.test') => h1Request({ port: proxy.httpsPort, sni, path, ca: pki.caPem });

  let r = await get('/dead');
  assert.equal(r.status, 502);
  assert.equal(r.text, '<h1>We are fixing it</h1>\n');
  assert.equal(r.headers['content-type'], 'text/html; charset=utf-8');
  assert.equal(r.headers['x-portico-error'], 'PORTICO_UPSTREAM_UNREACHABLE', 'the code is still there');
  r = await get('/slow');
  assert.equal(r.status, 504);
  assert.equal(r.text, 'too slow\n', 'an exact status wins over its class');
  r = await get('/nowhere');
  assert.equal(r.status, 404);
  assert.equal(r.text, '{"error":"not found"}\n');
  assert.equal(r.headers['content-type'], 'application/json');
  await get('/limited');
  r = await get('/limited');
  assert.equal(r.status, 429);
  assert.equal(r.text, '<h1>Client error</h1>\n');
  assert.equal(r.headers['retry-after'], '60');
  r = await get('/app');
  assert.equal(r.status, 500);
  assert.equal(r.text, 'the app failed', "an upstream's own error is passed on as it is");
  r = await get('/dead', 'plain.test');
  assert.match(r.text, /^Bad Gateway/, 'another host keeps the plain answers');
  const s = await h2Connect(proxy.httpsPort, 'ep.test', pki.caPem);
  const h = await h2Request(s, { path: '/dead' });
  assert.equal(h.status, 502);
  assert.equal(h.text, '<h1>We are fixing it</h1>\n');
  s.close();
});

test('errorPages problems are reported with their paths', async (t) => {
  const pki = await makePki();
  t.after(() => pki.cleanup());
  await writeFile(join(pki.dir, 'big.html'), Buffer.alloc(1024 * 1024 + 1, 0x41));
  await writeFile(join(pki.dir, 'page.png'), 'x');
  const cert = await pki.issue('e', ['e.test']);
  const lines = await checkHosts(pki, {
    'e.test': { tls: cert, errorPages: { '502': 'missing.html', '503': 'big.html', '5xx': 'page.png', '418': 'page.html' }, routes: [{ upstream: 'http://127.0.0.1:1' }] },
  });
  assert.equal(lines.length, 4, lines.join('\n'));
  // A page for a status Portico never answers itself would never be sent: refused, with the ones it does.
  assert.match(lines.find((l) => l.includes('"418"')) ?? '', /^hosts\["e\.test"\]\.errorPages\["418"\]: Portico never answers 418 itself, so this page would never be sent; pages apply to 400, 401, 403, 404, 405, .*504/);
  assert.match(lines.find((l) => l.includes('"502"')) ?? '', /^hosts\["e\.test"\]\.errorPages\["502"\]: cannot read the error page .*missing\.html \(ENOENT\)/);
  assert.match(lines.find((l) => l.includes('"503"')) ?? '', /big\.html is 1048577 bytes; an error page may have at most 1 MiB/);
  assert.match(lines.find((l) => l.includes('["5xx"]')) ?? '', /page\.png: an error page must be \.html/);
  const invalid = validateConfig({ hosts: { 'e.test': { tls: { cert: 'c', key: 'k' }, errorPages: { '600': 'x.html' }, routes: [{ upstream: 'http://127.0.0.1:1' }] } } });
  assert.equal(invalid.ok, false);
  assert.match(invalid.ok ? '' : `${invalid.issues[0]!.path}: ${invalid.issues[0]!.message}`, /errorPages.*expected a status such as "502", or a class "4xx" or "5xx"/);
});
