import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { buildProxyHeader, parseProxyHeader } from '../src/listen/proxy-protocol.js';
import { makePki, startProxyFor } from './helpers/proxy.js';
import { freePort } from './helpers/net.js';
import { requireNginx, startNginx } from './helpers/nginx.js';

test('buildProxyHeader writes v1 and v2 headers that parseProxyHeader reads back', () => {
  // Loopback addresses only: the header carries them as data, nothing is dialled.
  const cases: [string, number, string, number, string][] = [
    ['127.0.0.5', 40000, '127.0.0.1', 443, '127.0.0.5'],
    ['::1', 40001, '::1', 8443, '::1'],
    ['::ffff:127.0.0.7', 1, '::ffff:127.0.0.1', 2, '127.0.0.7'],
    ['::1', 65535, '::1', 0, '::1'],
  ];
  for (const [src, sport, dst, dport, expected] of cases) {
    for (const v of ['v1', 'v2'] as const) {
      const h = buildProxyHeader(v, src, sport, dst, dport);
      const back = parseProxyHeader(Buffer.concat([h, Buffer.from('payload')]));
      assert.ok(typeof back === 'object' && 'source' in back, `${v} ${src}`);
      assert.equal(back.source, expected, `${v} ${src}`);
      assert.equal(back.sourcePort, sport);
      assert.equal(back.length, h.length);
    }
  }
  assert.equal(buildProxyHeader('v1', '127.0.0.1', 1, '::1', 2).toString(), 'PROXY UNKNOWN\r\n', 'two families: UNKNOWN');
  assert.deepEqual(parseProxyHeader(buildProxyHeader('v2', '127.0.0.1', 1, '::1', 2)), { source: undefined, length: 16 }, 'two families: LOCAL');
});

/** A plain HTTP GET over a stream port from `localAddress`, with optional bytes before it; the body nginx answers. */
async function getThrough(port: number, localAddress: string, prefix = ''): Promise<string> {
  const s = net.connect({ port, host: '127.0.0.1', localAddress });
  await once(s, 'connect');
  const chunks: Buffer[] = [];
  s.on('data', (c: Buffer) => chunks.push(c));
  s.on('error', () => {});
  s.write(`${prefix}GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
  await new Promise((r) => s.once('close', r));
  const text = Buffer.concat(chunks).toString();
  return text.slice(text.indexOf('\r\n\r\n') + 4);
}

test('streams send the client to nginx in a PROXY header (v1 and v2), and take one from a load balancer in front', async (t) => {
  const bin = requireNginx(t);
  if (bin === undefined) return;
  const ppPort = await freePort();
  const nginx = await startNginx(bin, 'location / { return 200 "plain\\n"; }', `server { listen 127.0.0.1:${ppPort} proxy_protocol; location / { return 200 "$proxy_protocol_addr $proxy_protocol_port\\n"; } }`);
  const pki = await makePki();
  const cert = await pki.issue('s', ['s.test']);
  const [v1Port, v2Port, chainPort] = [await freePort(), await freePort(), await freePort()];
  const target = `tcp://127.0.0.1:${ppPort}`;
  await startProxyFor(
    t,
    pki,
    {
      streams: [
        { port: v1Port, addresses: ['127.0.0.1'], upstream: target, sendProxyProtocol: 'v1' },
        { port: v2Port, addresses: ['127.0.0.1'], upstream: target, sendProxyProtocol: 'v2' },
        { port: chainPort, addresses: ['127.0.0.1'], upstream: target, proxyProtocol: true, sendProxyProtocol: 'v2' },
      ],
      hosts: { 's.test': { tls: cert, routes: [{ path: '/', respond: { body: 'x' } }] } },
    },
    [() => nginx.stop()],
  );
  assert.match(await getThrough(v1Port, '127.0.0.3'), /^127\.0\.0\.3 \d+\n$/, 'v1: nginx sees the client, not Portico');
  assert.match(await getThrough(v2Port, '127.0.0.4'), /^127\.0\.0\.4 \d+\n$/, 'v2');
  assert.equal(await getThrough(chainPort, '127.0.0.1', 'PROXY TCP4 127.0.0.9 127.0.0.1 41234 443\r\n'), '127.0.0.9 41234\n', 'passed on from the balancer in front');
  assert.equal(await getThrough(chainPort, '127.0.0.1'), '', 'no header from the front: closed');
});
