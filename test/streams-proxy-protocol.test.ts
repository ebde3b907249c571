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
    ['127.0.0.1', 40000, '127.0.0.1', 443, '127.0.0.1'],
    ['::1', 40001, '::1', 8443, '::1'],
    ['::ffff:127.0.0.1', 1, '::ffff:127.0.0.1', 2, '127.0.0.1'],
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
  // Two families (an IPv4 client at an IPv6 listener, or the reverse): TCP6 with the IPv4 side mapped, as HAProxy sends.
  assert.equal(buildProxyHeader('v1', '127.0.0.1', 1, '::1', 2).toString(), 'PROXY TCP6 ::ffff:127.0.0.1 ::1 1 2\r\n');
  assert.equal(buildProxyHeader('v1', '::1', 1, '127.0.0.1', 2).toString(), 'PROXY TCP6 ::1 ::ffff:127.0.0.1 1 2\r\n');
  assert.deepEqual(parseProxyHeader(buildProxyHeader('v2', '127.0.0.1', 1, '::1', 2)), { source: '::ffff:127.0.0.1', sourcePort: 1, length: 52 }, 'two families, v2');
  assert.deepEqual(parseProxyHeader(buildProxyHeader('v2', '::1', 7, '127.0.0.1', 2)), { source: '::1', sourcePort: 7, length: 52 });
  // Not an address at all: UNKNOWN (v1) or LOCAL (v2), and the receiver uses the connection's own.
  assert.equal(buildProxyHeader('v1', 'unknown', 1, '::1', 2).toString(), 'PROXY UNKNOWN\r\n');
  assert.deepEqual(parseProxyHeader(buildProxyHeader('v2', 'unknown', 1, '::1', 2)), { source: undefined, length: 16 });
});

/**
 * A plain HTTP GET over a stream port of `host`, with optional bytes before it: the body nginx
 * answers, and the client's own port (to tell the client from Portico, which dials nginx from 127.0.0.1).
 */
async function getThrough(port: number, host: '127.0.0.1' | '::1', prefix = ''): Promise<{ body: string; localPort: number }> {
  const s = net.connect({ port, host });
  await once(s, 'connect');
  const localPort = s.localPort ?? 0;
  const chunks: Buffer[] = [];
  s.on('data', (c: Buffer) => chunks.push(c));
  s.on('error', () => {});
  s.write(`${prefix}GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
  await new Promise((r) => s.once('close', r));
  const text = Buffer.concat(chunks).toString();
  return { body: text.slice(text.indexOf('\r\n\r\n') + 4), localPort };
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
        // The clients come over ::1; Portico dials nginx from 127.0.0.1, so nginx's answer tells them apart.
        { port: v1Port, addresses: ['::1'], upstream: target, sendProxyProtocol: 'v1' },
        { port: v2Port, addresses: ['::1'], upstream: target, sendProxyProtocol: 'v2' },
        { port: chainPort, addresses: ['::1'], upstream: target, proxyProtocol: true, sendProxyProtocol: 'v2' },
      ],
      hosts: { 's.test': { tls: cert, routes: [{ path: '/', respond: { body: 'x' } }] } },
    },
    [() => nginx.stop()],
  );
  const v1 = await getThrough(v1Port, '::1');
  assert.equal(v1.body, `::1 ${v1.localPort}\n`, 'v1: nginx sees the client, not Portico');
  const v2 = await getThrough(v2Port, '::1');
  assert.equal(v2.body, `::1 ${v2.localPort}\n`, 'v2');
  // The balancer in front (this ::1 client) names its client ::1 port 1234 (below Linux's ephemeral ports, so not
  // the balancer's own): that, not the balancer, reaches nginx.
  assert.equal((await getThrough(chainPort, '::1', 'PROXY TCP6 ::1 ::1 1234 443\r\n')).body, '::1 1234\n', 'passed on from the balancer in front');
  // An IPv4 client named by the balancer, at this IPv6 listener: passed on as TCP6 with the address mapped.
  assert.equal((await getThrough(chainPort, '::1', 'PROXY TCP4 127.0.0.1 127.0.0.1 1235 443\r\n')).body, '::ffff:127.0.0.1 1235\n', 'an IPv4 client through an IPv6 listener');
  assert.equal((await getThrough(chainPort, '::1')).body, '', 'no header from the front: closed');
});
