import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makePki, startProxyFor } from './helpers/proxy.js';
import { h1Request, h2Connect, h2Request, startUpstream } from './helpers/net.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

test('forwarding.requestId: a new X-Request-ID per request, upstream and in the access line; a trusted proxy\'s is kept', async (t) => {
  const pki = await makePki();
  const up = await startUpstream((req, res, seen) => {
    req.resume();
    res.end(String(seen.headers['x-request-id']));
  });
  const cert = await pki.issue('rid', ['rid.test']);
  const hosts = { 'rid.test': { tls: cert, routes: [{ path: '/app', upstream: up.url }] } };
  const proxy = await startProxyFor(t, pki, { forwarding: { requestId: true }, log: { access: true }, hosts }, [up.close]);
  const get = (path: string, id?: string) => h1Request({ port: proxy.httpsPort, sni: 'rid.test', path, headers: id === undefined ? {} : { 'x-request-id': id }, ca: pki.caPem });
  const accessFor = async (path: string): Promise<Record<string, unknown>> => {
    for (let i = 0; i < 50; i++) {
      const line = proxy.logs.find((l) => l.msg === 'access' && l.path === path);
      if (line !== undefined) return line;
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`no access line for ${path}`);
  };

  const a = await get('/app/a');
  const b = await get('/app/b');
  assert.match(a.text, UUID);
  assert.notEqual(a.text, b.text, 'one per request');
  assert.equal((await accessFor('/app/a')).requestId, a.text, 'the access line names the ID the upstream got');
  const forged = await get('/app/c', 'from-the-client');
  assert.match(forged.text, UUID, 'an untrusted client\'s ID is replaced');
  await get('/nowhere');
  assert.match(String((await accessFor('/nowhere')).requestId), UUID, 'requests Portico answers itself have one too');
  const s = await h2Connect(proxy.httpsPort, 'rid.test', pki.caPem);
  assert.match((await h2Request(s, { path: '/app/h2' })).text, UUID);
  s.close();

  await proxy.reconfigure({ forwarding: { requestId: true, trustedProxies: ['127.0.0.1'] }, log: { access: true }, hosts });
  assert.equal((await get('/app/d', 'lb-7f3a')).text, 'lb-7f3a', 'a trusted proxy\'s ID is kept');
  assert.match((await get('/app/e', 'has space')).text, UUID, 'a malformed one is replaced');
  await proxy.reconfigure({ log: { access: true }, hosts });
  assert.equal((await get('/app/f', 'passes-through')).text, 'passes-through', 'off: the header is forwarded as any other');
  assert.equal((await accessFor('/app/f')).requestId, undefined);
});
