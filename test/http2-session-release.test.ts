/**
 * A closed HTTP/2 client connection is released at once, not when its keepAliveTimeout timer fires:
 * node:http2 (Node 20) leaves a closed session's timeout armed, and the timer held the session and its
 * TLS socket for up to keepAliveTimeout (60 s by default) after the connection had gone
 * (clearSessionTimer in src/http2/idle-close.ts).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type http2 from 'node:http2';
import v8 from 'node:v8';
import vm from 'node:vm';
import { setTimeout as delay } from 'node:timers/promises';
import { makePki, proxyOneHost } from './helpers/proxy.js';
import { h2Connect, h2Request, startUpstream } from './helpers/net.js';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

test('a closed HTTP/2 connection is garbage once closed, not kept until its keepAliveTimeout timer fires', async (t) => {
  const pki = await makePki();
  const up = await startUpstream();
  const proxy = await proxyOneHost(t, pki, 'a.test', up.url, { also: [() => up.close()] });
  const refs: WeakRef<http2.ServerHttp2Session>[] = [];
  let closed = 0;
  proxy.portico.https!.h2Server.on('session', (s: http2.ServerHttp2Session) => {
    refs.push(new WeakRef(s));
    s.once('close', () => closed++);
  });
  for (const end of ['close', 'destroy'] as const) {
    const c = await h2Connect(proxy.httpsPort, 'a.test', pki.caPem);
    const r = await h2Request(c, { path: '/' });
    assert.equal(r.status, 200);
    if (end === 'close') c.close();
    else c.destroy();
    await once(c, 'close');
  }
  for (let i = 0; i < 100 && closed < 2; i++) await delay(10);
  assert.equal(closed, 2);
  // A few turns for the socket's own close callbacks, then a full collection.
  await delay(50);
  gc();
  await delay(10);
  gc();
  assert.deepEqual(refs.map((r) => r.deref() === undefined), [true, true], 'a closed session is still reachable');
});
