import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import tls from 'node:tls';
import { makePki, startProxy, startProxyFor, type TestPki, type TestProxy } from './helpers/proxy.js';
import { h1Request, startUpstream } from './helpers/net.js';
import { requireTool, runTool } from './helpers/real-peers.js';

/** What a client learned from one handshake. */
interface Handshake {
  fingerprint256: string;
  subjectAltName: string;
  subjectCn: string;
  protocol: string | null;
  authorized: boolean;
  keyKind: 'ecdsa' | 'rsa';
}

/** Handshakes with the proxy (verifying against the test CA) and reports the certificate it served; rejects when the handshake fails. */
async function handshake(port: number, ca: string, servername: string | undefined, opts: tls.ConnectionOptions = {}): Promise<Handshake> {
  const socket = tls.connect({ host: '127.0.0.1', port, ca, rejectUnauthorized: false, ALPNProtocols: ['h2', 'http/1.1'], ...(servername === undefined ? {} : { servername }), ...opts });
  try {
    await once(socket, 'secureConnect');
    const cert = socket.getPeerCertificate();
    return {
      fingerprint256: cert.fingerprint256,
      subjectAltName: cert.subjectaltname ?? '',
      subjectCn: String(cert.subject.CN),
      protocol: socket.getProtocol(),
      authorized: socket.authorized,
      keyKind: (cert as { asn1Curve?: string }).asn1Curve !== undefined ? 'ecdsa' : 'rsa',
    };
  } finally {
    socket.destroy();
  }
}

function fingerprintOf(pki: TestPki, certFile: string): Promise<string> {
  return import('node:fs/promises').then(async ({ readFile }) => new X509Certificate(await readFile(join(pki.dir, certFile))).fingerprint256);
}

let pki: TestPki;
let strict: TestProxy;
let withDefault: TestProxy;
let caFile: string;
let closeUpstream: (() => Promise<void>) | undefined;
const fp: Record<string, string> = {};

before(async () => {
  pki = await makePki();
  caFile = join(pki.dir, 'ca.pem');
  await writeFile(caFile, pki.caPem);
  const up = await startUpstream();
  const certs = {
    exact: await pki.issue('exact', ['a.example.test']),
    wild: await pki.issue('wild', ['*.example.test']),
    deep: await pki.issue('deep', ['*.deep.example.test']),
    rsa: await pki.issue('rsa', ['rsa.test'], { kind: 'rsa' }),
  };
  for (const [k, c] of Object.entries(certs)) fp[k] = await fingerprintOf(pki, c.cert);
  const hosts = {
    'a.example.test': { tls: certs.exact, routes: [{ upstream: up.url }] },
    '*.example.test': { tls: certs.wild, routes: [{ upstream: up.url }] },
    '*.deep.example.test': { tls: certs.deep, routes: [{ upstream: up.url }] },
    'rsa.test': { tls: certs.rsa, routes: [{ upstream: up.url }] },
  };
  strict = await startProxy(pki, { hosts });
  withDefault = await startProxy(pki, { hosts, defaultHost: 'a.example.test' });
  closeUpstream = up.close;
});

after(async () => {
  await strict?.stop();
  await withDefault?.stop();
  await closeUpstream?.();
  await pki?.cleanup();
});


/** A handshake_failure alert as Node reports it: OpenSSL 3.0 (Node 20) names it SSLV3_ALERT_…, 3.5 (Node 26) SSL/TLS_ALERT_…. */
const HANDSHAKE_FAILURE = /^ERR_SSL_(SSLV3|SSL\/TLS)_ALERT_HANDSHAKE_FAILURE$/;
test('each server name gets the certificate of its host, checked by fingerprint and SAN', async () => {
  const a = await handshake(strict.httpsPort, pki.caPem, 'a.example.test');
  assert.equal(a.fingerprint256, fp.exact);
  assert.equal(a.subjectAltName, 'DNS:a.example.test');
  assert.equal(a.authorized, true);
  const r = await handshake(strict.httpsPort, pki.caPem, 'rsa.test');
  assert.equal(r.fingerprint256, fp.rsa);
  assert.equal(r.subjectCn, 'rsa.test');
  assert.equal(r.authorized, true);
});

test('a name under a wildcard host gets the wildcard certificate, and an exact host beats the wildcard', async () => {
  const b = await handshake(strict.httpsPort, pki.caPem, 'b.example.test');
  assert.equal(b.fingerprint256, fp.wild);
  assert.equal(b.subjectAltName, 'DNS:*.example.test');
  assert.equal(b.authorized, true);
  const a = await handshake(strict.httpsPort, pki.caPem, 'a.example.test');
  assert.equal(a.fingerprint256, fp.exact);
});

test("a name under a nested wildcard gets that wildcard's certificate, and a wildcard never covers two labels", async () => {
  const deep = await handshake(strict.httpsPort, pki.caPem, 'x.deep.example.test');
  assert.equal(deep.fingerprint256, fp.deep);
  assert.equal(deep.authorized, true);
  // "*.example.test" does not cover "x.y.example.test" (RFC 6125 §6.4.3): no host serves it.
  await assert.rejects(handshake(strict.httpsPort, pki.caPem, 'x.y.example.test'));
});

test('a server name is matched case-insensitively', async () => {
  const a = await handshake(strict.httpsPort, pki.caPem, 'A.Example.TEST');
  assert.equal(a.fingerprint256, fp.exact);
});

test('an unknown server name is refused in the handshake with a TLS alert, not a dropped connection', async () => {
  await assert.rejects(handshake(strict.httpsPort, pki.caPem, 'unknown.test'), (err: NodeJS.ErrnoException) => {
    // A fatal handshake_failure alert the client can report as a TLS refusal (before: a bare ECONNRESET).
    assert.match(String(err.code), HANDSHAKE_FAILURE);
    return true;
  });
  // The listener is still up for known names.
  assert.equal((await handshake(strict.httpsPort, pki.caPem, 'rsa.test')).fingerprint256, fp.rsa);
  // The debug line gives the reason under "reason": a "msg" field would be a second "msg" key beside pino's.
  const line = strict.logs.find((l) => l['msg'] === 'tls handshake failed');
  assert.equal(typeof line?.['reason'], 'string', JSON.stringify(line));
});

test('a server name with a trailing dot gets the certificate of the name without it, and its request is served', async () => {
  assert.equal((await handshake(strict.httpsPort, pki.caPem, 'a.example.test.')).fingerprint256, fp.exact);
  assert.equal((await handshake(strict.httpsPort, pki.caPem, 'Z.Example.Test.')).fingerprint256, fp.wild);
  // The Host check drops the dot from the request host: the connection name must be without it too, or this is a 421.
  for (const host of ['a.example.test.', 'a.example.test']) {
    const res = await h1Request({ port: strict.httpsPort, sni: 'a.example.test.', host, path: '/dot', ca: pki.caPem });
    assert.equal(res.status, 200, `Host ${host}: ${res.text}`);
  }
  // Two dots are no name of ours.
  await assert.rejects(handshake(strict.httpsPort, pki.caPem, 'a.example.test..'));
});

test('an IP address sent as the server name is an unknown name: refused, or the default host with defaultHost', async (t) => {
  // Node 26's client refuses to send an IP address as the server name (RFC 6066 §3 forbids it); openssl sends it.
  if (!requireTool(t, 'openssl')) return;
  const ask = (port: number) => runTool('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', '127.0.0.1']);
  const refused = await ask(strict.httpsPort);
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /alert handshake failure/);
  const served = await ask(withDefault.httpsPort);
  assert.equal(served.code, 0, served.stderr);
  const pem = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(served.stdout)?.[0];
  assert.ok(pem !== undefined, 'no certificate in the openssl output');
  assert.equal(new X509Certificate(pem).fingerprint256, fp.exact);
});

test('a client without SNI is refused when no defaultHost is configured', async () => {
  await assert.rejects(handshake(strict.httpsPort, pki.caPem, undefined));
});

test('with defaultHost, an unknown server name and a client without SNI get the default host certificate', async () => {
  const unknown = await handshake(withDefault.httpsPort, pki.caPem, 'unknown.test');
  assert.equal(unknown.fingerprint256, fp.exact);
  const none = await handshake(withDefault.httpsPort, pki.caPem, undefined);
  assert.equal(none.fingerprint256, fp.exact);
  // Known names with a key of the same kind still get their own certificate.
  assert.equal((await handshake(withDefault.httpsPort, pki.caPem, 'b.example.test')).fingerprint256, fp.wild);
});

test('with an ECDSA defaultHost, an RSA host still gets its own certificate (regression: nodejs/node#54235)', async () => {
  const r = await handshake(withDefault.httpsPort, pki.caPem, 'rsa.test');
  assert.equal(r.fingerprint256, fp.rsa);
  assert.equal(r.authorized, true);
});

test('with defaultHost, a request on a connection without SNI is served when its Host is the default host', async () => {
  const res = await new Promise<number>((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port: withDefault.httpsPort, ca: pki.caPem, checkServerIdentity: () => undefined, ALPNProtocols: ['http/1.1'] });
    socket.on('error', reject);
    socket.once('secureConnect', () => socket.write('GET / HTTP/1.1\r\nHost: a.example.test\r\nConnection: close\r\n\r\n'));
    let text = '';
    socket.on('data', (c: Buffer) => (text += c.toString()));
    socket.on('end', () => resolve(Number(text.slice(9, 12))));
  });
  assert.equal(res, 200);
});

/** One HTTP/1.1 request for `host` on a TLS connection without SNI; the status and the x-portico-error code. */
async function requestWithoutSni(port: number, ca: string, host: string): Promise<string> {
  const socket = tls.connect({ host: '127.0.0.1', port, ca, checkServerIdentity: () => undefined, ALPNProtocols: ['http/1.1'] });
  let text = '';
  socket.setEncoding('latin1').on('data', (d: string) => (text += d));
  await once(socket, 'secureConnect');
  socket.write(`GET / HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
  await once(socket, 'close');
  return `${text.slice(9, 12)} ${/x-portico-error: (\S+)/i.exec(text)?.[1] ?? ''}`.trim();
}

// Regression: the connection name of a client without SNI was the default host's key (its first name), so with
// "defaultHost" set to an alias, requests naming that alias got 421 while the other name was served.
test('with defaultHost naming an alias, a connection without SNI serves that alias, and its host\'s other name gets 421', async (t) => {
  const pki2 = await makePki();
  const up = await startUpstream();
  const cert = await pki2.issue('site', ['site.test', 'www.site.test']);
  const proxy = await startProxyFor(t, pki2, { defaultHost: 'www.site.test', hosts: { 'site.test': { tls: cert, aliases: ['www.site.test'], routes: [{ upstream: up.url }] } } }, [() => up.close()]);
  assert.equal(await requestWithoutSni(proxy.httpsPort, pki2.caPem, 'www.site.test'), '200');
  assert.equal(await requestWithoutSni(proxy.httpsPort, pki2.caPem, 'site.test'), '421 PORTICO_SNI_HOST_MISMATCH');
  assert.equal(up.seen.length, 1);
});

test('names under one wildcard host are names like any other: a request for one on a connection made for another gets 421', async () => {
  const own = await h1Request({ port: strict.httpsPort, sni: 'x.example.test', ca: pki.caPem });
  assert.equal(own.status, 200);
  const other = await h1Request({ port: strict.httpsPort, sni: 'x.example.test', host: 'y.example.test', ca: pki.caPem });
  assert.equal(other.status, 421);
  assert.equal(other.headers['x-portico-error'], 'PORTICO_SNI_HOST_MISMATCH');
});

test('ECDSA and RSA certificates are both served', async () => {
  assert.equal((await handshake(strict.httpsPort, pki.caPem, 'a.example.test')).keyKind, 'ecdsa');
  assert.equal((await handshake(strict.httpsPort, pki.caPem, 'rsa.test')).keyKind, 'rsa');
  // An RSA-only client cipher list for TLS 1.2 still completes against the RSA host.
  const r = await handshake(strict.httpsPort, pki.caPem, 'rsa.test', { maxVersion: 'TLSv1.2', ciphers: 'ECDHE-RSA-AES128-GCM-SHA256' });
  assert.equal(r.protocol, 'TLSv1.2');
  const e = await handshake(strict.httpsPort, pki.caPem, 'a.example.test', { maxVersion: 'TLSv1.2', ciphers: 'ECDHE-ECDSA-AES128-GCM-SHA256' });
  assert.equal(e.protocol, 'TLSv1.2');
});

test('TLS 1.1 is refused by the server and TLS 1.2 and 1.3 are accepted', async () => {
  await assert.rejects(
    handshake(strict.httpsPort, pki.caPem, 'a.example.test', { minVersion: 'TLSv1.1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' }),
    (err: NodeJS.ErrnoException) => {
      // The server's protocol_version alert, not a client-side refusal.
      assert.equal(err.code, 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION');
      return true;
    },
  );
  assert.equal((await handshake(strict.httpsPort, pki.caPem, 'a.example.test', { minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' })).protocol, 'TLSv1.2');
  assert.equal((await handshake(strict.httpsPort, pki.caPem, 'a.example.test')).protocol, 'TLSv1.3');
});

test('a plain TLS 1.2 request through the wildcard host is proxied', async () => {
  const res = await h1Request({ port: strict.httpsPort, sni: 'z.example.test', path: '/w', ca: pki.caPem });
  assert.equal(res.status, 200);
  assert.equal(JSON.parse(res.text).headers.host, 'z.example.test');
});

test('openssl s_client verifies the certificate for -servername and is refused TLS 1.1', async (t) => {
  if (!requireTool(t, 'openssl')) return;
  const base = ['s_client', '-connect', `127.0.0.1:${strict.httpsPort}`, '-CAfile', caFile, '-verify_return_error'];
  const ok = await runTool('openssl', [...base, '-servername', 'b.example.test', '-verify_hostname', 'b.example.test']);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /Verify return code: 0 \(ok\)/);
  assert.match(ok.stdout, /subject=CN\s?=\s?\*\.example\.test/);
  const old = await runTool('openssl', [...base, '-servername', 'a.example.test', '-tls1_1', '-cipher', 'DEFAULT@SECLEVEL=0']);
  assert.notEqual(old.code, 0);
  assert.match(old.stderr + old.stdout, /alert protocol version|unsupported protocol/i);
  const unknown = await runTool('openssl', [...base, '-servername', 'unknown.test']);
  assert.notEqual(unknown.code, 0);
  assert.match(unknown.stdout, /no peer certificate available/);
  assert.match(unknown.stderr, /alert handshake failure/);
  const dot = await runTool('openssl', [...base, '-servername', 'a.example.test.', '-verify_hostname', 'a.example.test']);
  assert.equal(dot.code, 0, dot.stderr);
  assert.match(dot.stdout, /subject=CN\s?=\s?a\.example\.test/);
});

/** The first bytes (the ClientHello) a Node TLS client sends, with or without SNI. */
async function captureHello(servername: string | undefined): Promise<Buffer> {
  const { createServer } = await import('node:net');
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  const got = new Promise<Buffer>((resolve) => server.once('connection', (s) => s.once('data', (b: Buffer) => { resolve(b); s.destroy(); })));
  const client = tls.connect({ host: '127.0.0.1', port, ...(servername === undefined ? {} : { servername }) });
  client.on('error', () => {});
  const hello = await got;
  client.destroy();
  server.close();
  return hello;
}

test('the ClientHello reader tells a hello with SNI from one without, and waits for an incomplete one', async () => {
  const { hasServerName } = await import('../src/tls/client-hello.js');
  const withSni = await captureHello('a.example.test');
  const without = await captureHello(undefined);
  assert.equal(hasServerName(withSni), true);
  assert.equal(hasServerName(without), false);
  assert.equal(hasServerName(without.subarray(0, 4)), undefined);
  assert.equal(hasServerName(without.subarray(0, without.length - 1)), undefined);
  assert.equal(hasServerName(Buffer.from('GET / HTTP/1.1\r\n\r\n')), true);
});

test('a client without SNI whose ClientHello arrives in pieces still gets the default host certificate', async () => {
  const { createConnection } = await import('node:net');
  const hello = await captureHello(undefined);
  const socket = createConnection({ host: '127.0.0.1', port: withDefault.httpsPort });
  await once(socket, 'connect');
  const first = once(socket, 'data');
  for (const [from, to] of [[0, 3], [3, 60], [60, hello.length]] as const) {
    socket.write(hello.subarray(from, to));
    await new Promise((r) => setTimeout(r, 20));
  }
  const [reply] = (await first) as [Buffer];
  socket.destroy();
  // 0x16: a handshake record (ServerHello), not an alert (0x15).
  assert.equal(reply[0], 0x16);
});
