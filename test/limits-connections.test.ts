import { test } from 'node:test';
import assert from 'node:assert/strict';
import tls from 'node:tls';
import { once } from 'node:events';
import { makePki, startProxyFor } from './helpers/proxy.js';
import { h1Request, startUpstream } from './helpers/net.js';

test('limits.maxConnections: connections past the cap are closed at once, logged, and served again once below it', async (t) => {
  const pki = await makePki();
  const up = await startUpstream();
  const cert = await pki.issue('c', ['cap.test']);
  const proxy = await startProxyFor(t, pki, { limits: { maxConnections: 2 }, hosts: { 'cap.test': { tls: cert, routes: [{ path: '/', upstream: up.url }] } } }, [up.close]);
  const open = async (): Promise<tls.TLSSocket> => {
    const s = tls.connect({ host: '127.0.0.1', port: proxy.httpsPort, servername: 'cap.test', ca: pki.caPem });
    await once(s, 'secureConnect');
    return s;
  };
  const a = await open();
  const b = await open();
  // The third never completes its handshake: the server closes it as it arrives.
  const c = tls.connect({ host: '127.0.0.1', port: proxy.httpsPort, servername: 'cap.test', ca: pki.caPem });
  const [err] = (await once(c, 'error')) as [NodeJS.ErrnoException];
  assert.match(String(err.code), /ECONNRESET|EPIPE/);
  for (let i = 0; i < 50 && !proxy.logs.some((l) => l.msg === 'connection refused: limits.maxConnections reached'); i++) await new Promise((r) => setTimeout(r, 20));
  const line = proxy.logs.find((l) => l.msg === 'connection refused: limits.maxConnections reached');
  assert.equal(line?.port, proxy.httpsPort);
  assert.equal(line?.maxConnections, 2);
  a.destroy();
  await once(a, 'close');
  await new Promise((r) => setTimeout(r, 50));
  assert.equal((await h1Request({ port: proxy.httpsPort, sni: 'cap.test', ca: pki.caPem })).status, 200);
  b.destroy();
  // A reload raises the cap on the open listener.
  await proxy.reconfigure({ limits: { maxConnections: 5 }, hosts: { 'cap.test': { tls: cert, routes: [{ path: '/', upstream: up.url }] } } });
  const held = await Promise.all([open(), open(), open()]);
  assert.equal((await h1Request({ port: proxy.httpsPort, sni: 'cap.test', ca: pki.caPem })).status, 200);
  for (const s of held) s.destroy();
});
