import { test } from 'node:test';
import assert from 'node:assert/strict';
import type http from 'node:http';
import { makePki, startProxyFor } from './helpers/proxy.js';
import { h1Request, startUpstream } from './helpers/net.js';

test('least-connections sends requests past a target that is still busy; client-ip keeps a client on one target', async (t) => {
  const pki = await makePki();
  const held: http.ServerResponse[] = [];
  // "slow" holds /hold requests until released; everything else is answered at once.
  const slow = await startUpstream((req, res) => {
    req.resume();
    if (req.url === '/hold') held.push(res);
    else res.end('slow');
  });
  const fast = await startUpstream((req, res) => {
    req.resume();
    res.end('fast');
  });
  const rr1 = await startUpstream();
  const rr2 = await startUpstream();
  const cert = await pki.issue('lb', ['lb.test']);
  const proxy = await startProxyFor(
    t,
    pki,
    {
      hosts: {
        'lb.test': {
          tls: cert,
          routes: [
            { path: '/', upstream: { targets: [slow.url, fast.url], loadBalancing: 'least-connections' } },
            { path: '/sticky', upstream: { targets: [rr1.url, rr2.url], loadBalancing: 'client-ip' } },
          ],
        },
      },
    },
    [slow.close, fast.close, rr1.close, rr2.close],
  );
  const get = (path: string) => h1Request({ port: proxy.httpsPort, sni: 'lb.test', path, ca: pki.caPem });

  const hold = get('/hold'); // ties go in turn: the first request lands on "slow" and stays in flight
  for (let i = 0; i < 50 && held.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(held.length, 1);
  const answers: string[] = [];
  for (let i = 0; i < 4; i++) answers.push((await get(`/n${i}`)).text);
  assert.deepEqual(answers, ['fast', 'fast', 'fast', 'fast'], 'round-robin would have sent two of them to the busy target');
  held[0]!.end('released');
  assert.equal((await hold).text, 'released');
  // Once nothing is in flight, both get requests again.
  const after: string[] = [];
  for (let i = 0; i < 2; i++) after.push((await get(`/m${i}`)).text);
  assert.deepEqual([...after].sort(), ['fast', 'slow']);

  for (let i = 0; i < 6; i++) assert.equal((await get(`/sticky/${i}`)).status, 200);
  assert.deepEqual([rr1.seen.length, rr2.seen.length].sort(), [0, 6], 'one client address, one target');
});
