import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import http2 from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseProxyHeader } from '../src/listen/proxy-protocol.js';
import { makePki, startProxyFor } from './helpers/proxy.js';
import { canConnect, freePort, startUpstream } from './helpers/net.js';
import { parseRawResponse, requireTool, runTool } from './helpers/real-peers.js';

const SIG = Buffer.from('0d0a0d0a000d0a515549540a', 'hex');

function v2(cmd: number, family: number, addrs: Buffer): Buffer {
  const head = Buffer.alloc(4);
  head[0] = 0x20 | cmd;
  head[1] = (family << 4) | 1;
  head.writeUInt16BE(addrs.length, 2);
  return Buffer.concat([SIG, head, addrs]);
}

/** A v2 PROXY header from ::1 port 40000 to ::ffff:127.0.0.1 port 443 (destination apart from source, so a mix-up shows). */
function v2Tcp6(src: string): Buffer {
  // The IPv6 loopback: the only IPv6 address a test names.
  const words = [0, 0, 0, 0, 0, 0, 0, 1];
  assert.equal(src, '::1');
  const b = Buffer.alloc(36);
  words.forEach((w, i) => b.writeUInt16BE(w, 2 * i));
  b.writeUInt16BE(0xffff, 16 + 10); // destination ::ffff:127.0.0.1
  b.writeUInt16BE(0x7f00, 16 + 12);
  b.writeUInt16BE(0x0001, 16 + 14);
  b.writeUInt16BE(40000, 32);
  b.writeUInt16BE(443, 34);
  return v2(1, 2, b);
}

test('parseProxyHeader reads v1 and v2 headers, waits for the rest of one, and names what is wrong', () => {
  // Loopback addresses only, as data: the source is told from the destination by the ports, and in TCP6 by ::1 against ::ffff:127.0.0.1.
  assert.deepEqual(parseProxyHeader(Buffer.from('PROXY TCP4 127.0.0.1 127.0.0.1 56324 443\r\nGET')), { source: '127.0.0.1', sourcePort: 56324, length: 42 });
  assert.deepEqual(parseProxyHeader(Buffer.from('PROXY TCP6 ::1 ::ffff:127.0.0.1 1 2\r\n')), { source: '::1', sourcePort: 1, length: 37 });
  assert.deepEqual(parseProxyHeader(Buffer.from('PROXY UNKNOWN\r\n')), { source: undefined, length: 15 });
  assert.equal(parseProxyHeader(Buffer.from('PROXY TCP4 127.0.0.1')), 'more');
  assert.equal(parseProxyHeader(Buffer.from('PRO')), 'more');
  assert.match((parseProxyHeader(Buffer.from('PROXY TCP4 300.0.0.1 127.0.0.1 1 2\r\n')) as { error: string }).error, /malformed PROXY v1 line/);
  assert.match((parseProxyHeader(Buffer.from('PROXY TCP4 127.0.0.1 127.0.0.1 1 99999\r\n')) as { error: string }).error, /malformed/);
  assert.match((parseProxyHeader(Buffer.from('PROXY TCP4 ::1 ::1 1 2\r\n')) as { error: string }).error, /malformed/, 'an IPv6 address in a TCP4 line');
  assert.match((parseProxyHeader(Buffer.from(`PROXY ${'x'.repeat(120)}`)) as { error: string }).error, /longer than 107 bytes/);
  assert.match((parseProxyHeader(Buffer.from('GET / HTTP/1.1\r\n')) as { error: string }).error, /did not start with a PROXY protocol header/);
  assert.match((parseProxyHeader(Buffer.from([0x16, 0x03, 0x01])) as { error: string }).error, /did not start with a PROXY/);
  const v4 = v2(1, 1, Buffer.from([127, 0, 0, 1, 127, 0, 0, 1, 0x9c, 0x40, 0x01, 0xbb]));
  assert.deepEqual(parseProxyHeader(v4), { source: '127.0.0.1', sourcePort: 40000, length: 28 });
  assert.equal(parseProxyHeader(v4.subarray(0, 20)), 'more');
  assert.deepEqual(parseProxyHeader(v2Tcp6('::1')), { source: '::1', sourcePort: 40000, length: 52 });
  assert.deepEqual(parseProxyHeader(v2(0, 0, Buffer.alloc(0))), { source: undefined, length: 16 }, 'LOCAL: the peer speaks for itself');
  const bad = v2(1, 1, Buffer.alloc(12));
  bad[12] = 0x31;
  assert.match((parseProxyHeader(bad) as { error: string }).error, /version 3/);
});

/** One HTTP/1.1 request over TLS to the proxy at `host`, the bytes in `prefix` sent first. */
async function tlsRequest(port: number, ca: string, prefix: Buffer | undefined, host: '127.0.0.1' | '::1' = '127.0.0.1'): Promise<string> {
  const raw = net.connect({ port, host });
  await once(raw, 'connect');
  if (prefix !== undefined) raw.write(prefix);
  const s = tls.connect({ socket: raw, servername: 'pp.test', ca, ALPNProtocols: ['http/1.1'] });
  s.on('error', () => {});
  const chunks: Buffer[] = [];
  s.on('data', (c: Buffer) => chunks.push(c));
  s.write('GET /who HTTP/1.1\r\nHost: pp.test\r\nConnection: close\r\n\r\n');
  // A refused connection ends in an error ('close' follows it): what arrived is the answer either way.
  await new Promise((resolve) => s.once('close', resolve));
  return Buffer.concat(chunks).toString();
}

test('proxyProtocol on the HTTPS and HTTP listeners: the header\'s client is the client, over HTTP/1.1, HTTP/2 and through HAProxy', async (t) => {
  const pki = await makePki();
  const up = await startUpstream((req, res, seen) => {
    req.resume();
    res.end(`client=${seen.headers['x-forwarded-for'] as string}`);
  });
  const cert = await pki.issue('pp', ['pp.test']);
  const proxy = await startProxyFor(
    t,
    pki,
    {
      hosts: {
        'pp.test': {
          tls: cert,
          plainHttp: 'serve',
          routes: [
            { path: '/', upstream: up.url },
            { path: '/office', upstream: up.url, allowFrom: ['127.0.0.1/32'] },
          ],
        },
      },
    },
    [up.close],
  );
  // startProxy listens without PROXY protocol; turn it on for both listeners (a listener change needs a restart),
  // and listen on ::1 too: a peer of ::1 names 127.0.0.1 in its header, a peer of 127.0.0.1 names ::1, so the
  // client the upstream is told of can only be the header's.
  await proxy.stop();
  const config = JSON.parse(await readFile(proxy.configFile, 'utf8')) as { listen: { https: Record<string, unknown>; http: Record<string, unknown> } };
  config.listen.https.proxyProtocol = true;
  config.listen.http.proxyProtocol = true;
  config.listen.https.addresses = ['127.0.0.1', '::1'];
  config.listen.http.addresses = ['127.0.0.1', '::1'];
  await writeFile(proxy.configFile, JSON.stringify(config));
  const { Portico } = await import('../src/server/portico.js');
  const { pino } = await import('pino');
  const logs: Record<string, unknown>[] = [];
  const portico = new Portico(proxy.configFile, pino({ level: 'debug' }, { write: (l: string) => void logs.push(JSON.parse(l) as Record<string, unknown>) }));
  await portico.start();
  t.after(() => portico.stop());
  const port = proxy.httpsPort;

  let out = await tlsRequest(port, pki.caPem, Buffer.from('PROXY TCP4 127.0.0.1 127.0.0.1 40000 443\r\n'), '::1');
  assert.match(out, /client=127\.0\.0\.1$/, 'v1 over TLS (the peer is ::1)');
  out = await tlsRequest(port, pki.caPem, v2Tcp6('::1'));
  assert.match(out, /client=::1$/, 'v2 with IPv6 (the peer is 127.0.0.1)');
  out = await tlsRequest(port, pki.caPem, v2(0, 0, Buffer.alloc(0)));
  assert.match(out, /client=127\.0\.0\.1$/, 'LOCAL: the peer');
  // HTTP/2 on a proxied connection.
  const raw = net.connect({ port, host: '127.0.0.1' });
  await once(raw, 'connect');
  raw.write('PROXY TCP6 ::1 ::1 40001 443\r\n');
  const session = http2.connect(`https://pp.test:${port}`, { createConnection: () => tls.connect({ socket: raw, servername: 'pp.test', ca: pki.caPem, ALPNProtocols: ['h2'] }) });
  session.on('error', () => {});
  const h2body = await new Promise<string>((resolve, reject) => {
    const st = session.request({ ':path': '/office' });
    let b = '';
    let status = 0;
    st.on('response', (h) => (status = Number(h[':status'])));
    st.on('data', (c: Buffer) => (b += c.toString()));
    st.on('end', () => resolve(`${status} ${b}`));
    st.on('error', reject);
    st.end();
  });
  assert.equal(h2body, '403 Forbidden: this client address may not use this site\n', 'allowFrom judges the header\'s client (::1), not the peer (127.0.0.1, allowed)');
  session.close();
  out = await tlsRequest(port, pki.caPem, Buffer.from('PROXY TCP4 127.0.0.1 127.0.0.1 40000 443\r\n'), '::1');
  assert.match(out, /client=127\.0\.0\.1$/);
  // With a default host, the ClientHello is read before TLS starts: after the header, from the bytes put back.
  const withDefault = JSON.parse(await readFile(proxy.configFile, 'utf8')) as Record<string, unknown>;
  await writeFile(proxy.configFile, JSON.stringify({ ...withDefault, defaultHost: 'pp.test' }));
  assert.equal((await portico.reload()).ok, true);
  out = await tlsRequest(port, pki.caPem, Buffer.from('PROXY TCP4 127.0.0.1 127.0.0.1 40000 443\r\n'), '::1');
  assert.match(out, /client=127\.0\.0\.1$/);

  // No header: the connection is closed, and the log says why (once).
  const before = logs.filter((l) => l.msg === 'connection closed: no valid PROXY protocol header (listen.*.proxyProtocol is on)').length;
  out = await tlsRequest(port, pki.caPem, undefined);
  assert.equal(out, '');
  await tlsRequest(port, pki.caPem, Buffer.from('HELLO\r\n'));
  const warned = logs.filter((l) => l.msg === 'connection closed: no valid PROXY protocol header (listen.*.proxyProtocol is on)');
  assert.equal(warned.length - before, 1, 'one warn line, then a count a minute later');
  assert.match(String(warned.at(-1)!.reason), /did not start with a PROXY protocol header/);

  // The plain HTTP listener, with the request in the same packet as the header.
  const plain = net.connect({ port: proxy.httpPort, host: '127.0.0.1' });
  await once(plain, 'connect');
  const got: Buffer[] = [];
  plain.on('data', (c: Buffer) => got.push(c));
  plain.write('PROXY TCP6 ::1 ::1 40000 80\r\nGET /x HTTP/1.1\r\nHost: pp.test\r\nConnection: close\r\n\r\n');
  await once(plain, 'close');
  const pr = parseRawResponse(Buffer.concat(got).toString('latin1'));
  assert.equal(pr.status, 200);
  assert.equal(pr.body, 'client=::1', 'the header\'s client, not the peer 127.0.0.1');

  // HAProxy as the load balancer in front (send-proxy-v2), the client connecting to it over ::1; HAProxy dials Portico from 127.0.0.1.
  if (requireTool(t, 'haproxy')) {
    const lbPort = await freePort();
    const cfg = join(pki.dir, 'haproxy.cfg');
    await writeFile(
      cfg,
      `global\n  maxconn 100\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 5s\n  timeout server 5s\nfrontend f\n  bind ::1:${lbPort}\n  default_backend b\nbackend b\n  server portico 127.0.0.1:${port} send-proxy-v2\n`,
    );
    const check = await runTool('haproxy', ['-c', '-f', cfg]);
    assert.equal(check.code, 0, check.stdout + check.stderr);
    const lb = spawn('haproxy', ['-db', '-f', cfg], { stdio: 'ignore' });
    t.after(() => lb.kill());
    for (let i = 0; i < 50 && !(await canConnect(lbPort, '::1')); i++) await new Promise((r) => setTimeout(r, 50));
    out = await tlsRequest(lbPort, pki.caPem, undefined, '::1');
    assert.match(out, /client=::1$/, 'the client behind HAProxy, not HAProxy itself');
  }
});
