/**
 * Client certificates (mutual TLS) per host: hosts.*.clientAuth. A host with it takes only connections whose
 * handshake showed a certificate from its CAs, forwards that certificate as Client-Cert (RFC 9440), never
 * resumes a session made elsewhere, and other hosts on the same listener are not asked for certificates.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { IncomingMessage } from 'node:http';
import tls from 'node:tls';
import { WebSocket } from 'ws';
import acme from 'acme-client';
import { upgradeUpstream } from './helpers/upgrade-upstream.js';
import { LocalCa } from '../src/tls/local-ca.js';
import { startUpstream } from './helpers/net.js';
import { checkHosts, makePki, startProxyFor, type TestPki, type TestProxy } from './helpers/proxy.js';
import { curl, requireTool, runTool } from './helpers/real-peers.js';
import { clearOfTicketKeyChange } from './helpers/ticket-period.js';

interface Setup {
  pki: TestPki;
  proxy: TestProxy;
  up: Awaited<ReturnType<typeof startUpstream>>;
  /** Files (absolute) of a client certificate from the clients' CA, and of one from another CA. */
  good: { cert: string; key: string; der: Buffer };
  rogue: { cert: string; key: string };
  caFile: string;
}

/** secure.test asks for client certificates (clients' CA in clients-ca.pem); open.test does not. */
async function setup(
  t: TestContext,
  clientAuth: { ca: string; mode?: 'require' | 'optional' } = { ca: 'clients-ca.pem' },
  more: { defaultHost?: string } = {},
  secureRoute: Record<string, unknown> = {},
): Promise<Setup> {
  const pki = await makePki();
  const up = await startUpstream();
  const clients = await LocalCa.create('Portico Test Clients CA');
  await writeFile(join(pki.dir, 'clients-ca.pem'), clients.certPem);
  const leaf = await clients.issue(['alice.clients.test'], { usage: 'client' });
  await writeFile(join(pki.dir, 'alice.pem'), leaf.chain);
  await writeFile(join(pki.dir, 'alice-key.pem'), leaf.key, { mode: 0o600 });
  // Signed by the servers' CA, which the clients' CA setting does not name.
  const rogue = await pki.issue('mallory', ['mallory.clients.test'], { usage: 'client' });
  const caFile = join(pki.dir, 'ca.pem');
  await writeFile(caFile, pki.caPem);
  const secure = await pki.issue('secure', ['secure.test']);
  const open = await pki.issue('open', ['open.test']);
  const proxy = await startProxyFor(
    t,
    pki,
    {
      hosts: {
        'secure.test': { tls: secure, clientAuth, routes: [{ path: '/', upstream: up.url, ...secureRoute }] },
        'open.test': { tls: open, routes: [{ path: '/', upstream: up.url }] },
      },
      ...more,
    },
    [up.close],
  );
  return {
    pki,
    proxy,
    up,
    good: { cert: join(pki.dir, 'alice.pem'), key: join(pki.dir, 'alice-key.pem'), der: new X509Certificate(leaf.chain).raw },
    rogue: { cert: join(pki.dir, rogue.cert), key: join(pki.dir, rogue.key) },
    caFile,
  };
}

function readText(file: string): Promise<string> {
  return readFile(file, 'utf8');
}

function curlAs(s: Setup, host: string, who: { cert: string; key: string } | undefined, args: readonly string[] = []): ReturnType<typeof curl> {
  return curl({ host, port: s.proxy.httpsPort, caFile: s.caFile, args: [...(who === undefined ? [] : ['--cert', who.cert, '--key', who.key]), ...args] });
}

/** A TLS handshake with Node's client: whether it completed, and whether it resumed `session`. */
async function handshake(port: number, servername: string | undefined, ca: string, opts: { session?: Buffer; cert?: string; key?: string } = {}): Promise<{ ok: boolean; reused: boolean; session: Buffer | undefined }> {
  const socket = tls.connect({ host: '127.0.0.1', port, ca, ...(servername === undefined ? { checkServerIdentity: () => undefined } : { servername }), session: opts.session, cert: opts.cert, key: opts.key, ALPNProtocols: ['http/1.1'] });
  let session: Buffer | undefined;
  socket.on('session', (s: Buffer) => {
    session = s;
  });
  socket.on('error', () => {});
  try {
    await once(socket, 'secureConnect');
  } catch {
    return { ok: false, reused: false, session: undefined };
  }
  const reused = socket.isSessionReused();
  // TLS 1.3 refuses a missing certificate after the client's Finished: the alert, or the close, comes next.
  socket.write('GET / HTTP/1.1\r\nhost: ' + (servername ?? 'secure.test') + '\r\n\r\n');
  const answered = await new Promise<boolean>((resolve) => {
    socket.once('data', () => resolve(true));
    socket.once('close', () => resolve(false));
  });
  socket.destroy();
  return { ok: answered, reused, session };
}

test('a host with clientAuth serves only clients showing a certificate from its CAs and forwards it as Client-Cert (RFC 9440), over HTTP/1.1 and HTTP/2', async (t) => {
  if (!requireTool(t, 'curl')) return;
  const s = await setup(t);
  const without = await curlAs(s, 'secure.test', undefined);
  assert.notEqual(without.code, 0, `no certificate: ${without.stdout}`);
  const rogue = await curlAs(s, 'secure.test', s.rogue);
  assert.notEqual(rogue.code, 0, `certificate from another CA: ${rogue.stdout}`);
  assert.equal(s.up.seen.length, 0, 'nothing reached the upstream');

  const expected = `:${s.good.der.toString('base64')}:`;
  for (const proto of ['--http1.1', '--http2']) {
    // A forged Client-Cert (and its "_" spelling) from the client never reaches the upstream.
    const r = await curlAs(s, 'secure.test', s.good, [proto, '-H', 'Client-Cert: :Zm9yZ2Vk:', '-H', 'Client_Cert: :Zm9yZ2Vk:', '-H', 'Client-Cert-Chain: :Zm9yZ2Vk:']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^HTTP\/(1\.1|2) 200/);
    const seen = s.up.seen.at(-1)!;
    assert.equal(seen.headers['client-cert'], expected, proto);
    assert.equal(seen.headers['client-cert-chain'], undefined);
    assert.equal(seen.headers['client_cert'], undefined);
  }
});

test('other hosts on the listener are not asked for a certificate, and a client\'s Client-Cert never reaches their upstreams', async (t) => {
  if (!requireTool(t, 'curl') || !requireTool(t, 'openssl')) return;
  const s = await setup(t);
  const r = await curlAs(s, 'open.test', undefined, ['-H', 'Client-Cert: :Zm9yZ2Vk:']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^HTTP\/(1\.1|2) 200/);
  assert.equal(s.up.seen.at(-1)!.headers['client-cert'], undefined);
  // openssl s_client lists the CAs of a CertificateRequest: secure.test sends one naming the clients' CA, open.test none.
  const ask = async (name: string): Promise<string> => {
    const o = await runTool('openssl', ['s_client', '-connect', `127.0.0.1:${s.proxy.httpsPort}`, '-servername', name, '-CAfile', s.caFile], 'Q\n');
    return o.stdout + o.stderr;
  };
  assert.match(await ask('secure.test'), /Acceptable client certificate CA names\s+CN\s*=\s*Portico Test Clients CA/);
  assert.match(await ask('open.test'), /No client certificate CA names sent/);
});

test('a TLS session from another host never resumes on a host with clientAuth; its own sessions resume', async (t) => {
  await clearOfTicketKeyChange();
  const s = await setup(t);
  const port = s.proxy.httpsPort;
  const ca = s.pki.caPem;
  const fromOpen = await handshake(port, 'open.test', ca);
  assert.ok(fromOpen.ok && fromOpen.session !== undefined);
  // Resuming open.test's session at open.test works, so the ticket itself is good…
  assert.equal((await handshake(port, 'open.test', ca, { session: fromOpen.session })).reused, true);
  // …but at secure.test it is not taken: without a certificate the handshake fails.
  const bypass = await handshake(port, 'secure.test', ca, { session: fromOpen.session });
  assert.equal(bypass.reused, false);
  assert.equal(bypass.ok, false);
  assert.equal(s.up.seen.length, 2, 'only the two open.test requests reached the upstream');
  // A session of secure.test made with a certificate resumes there (the certificate goes with it).
  const first = await handshake(port, 'secure.test', ca, { cert: await readText(s.good.cert), key: await readText(s.good.key) });
  assert.ok(first.ok && first.session !== undefined);
  const again = await handshake(port, 'secure.test', ca, { session: first.session });
  assert.equal(again.reused, true);
  assert.equal(again.ok, true);
  assert.equal(s.up.seen.at(-1)!.headers['client-cert'], `:${s.good.der.toString('base64')}:`);
});

test('"optional" serves clients without a certificate (no Client-Cert) and refuses one that does not verify', async (t) => {
  if (!requireTool(t, 'curl')) return;
  const s = await setup(t, { ca: 'clients-ca.pem', mode: 'optional' });
  const none = await curlAs(s, 'secure.test', undefined);
  assert.equal(none.code, 0, none.stderr);
  assert.match(none.stdout, /^HTTP\/(1\.1|2) 200/);
  assert.equal(s.up.seen.at(-1)!.headers['client-cert'], undefined);
  const good = await curlAs(s, 'secure.test', s.good);
  assert.equal(good.code, 0, good.stderr);
  assert.equal(s.up.seen.at(-1)!.headers['client-cert'], `:${s.good.der.toString('base64')}:`);
  const count = s.up.seen.length;
  const rogue = await curlAs(s, 'secure.test', s.rogue);
  assert.notEqual(rogue.code, 0, rogue.stdout);
  assert.equal(s.up.seen.length, count);
});

// Regression: the response cache keyed nothing on the client certificate, so on a cache route the answer the
// upstream gave one client (which it may tailor to the Client-Cert it gets) was replayed to the next.
test('a client certificate is a credential for the response cache, as Authorization is: such requests are neither answered from it nor stored; clients without one are cached', async (t) => {
  if (!requireTool(t, 'curl')) return;
  const s = await setup(t, { ca: 'clients-ca.pem', mode: 'optional' }, {}, { cache: { defaultTtl: '1m' } });
  const statusOf = (r: { stdout: string }): string | undefined => /^cache-status: (.*)\r?$/im.exec(r.stdout)?.[1];
  for (const proto of ['--http1.1', '--http2']) {
    const path = `/page${proto}`;
    for (let i = 0; i < 2; i++) {
      const before = s.up.seen.length;
      const r = await curl({ host: 'secure.test', port: s.proxy.httpsPort, caFile: s.caFile, path, args: [proto, '--cert', s.good.cert, '--key', s.good.key] });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(s.up.seen.length, before + 1, `${proto}: request ${i + 1} with a certificate went upstream`);
      assert.equal(s.up.seen.at(-1)!.headers['client-cert'], `:${s.good.der.toString('base64')}:`);
      assert.equal(statusOf(r), 'Portico; fwd=bypass', proto);
    }
    // Without a certificate the route caches as usual: the second request is a hit.
    const first = await curl({ host: 'secure.test', port: s.proxy.httpsPort, caFile: s.caFile, path: `${path}-anon`, args: [proto] });
    assert.match(String(statusOf(first)), /stored/, first.stdout);
    const before = s.up.seen.length;
    const again = await curl({ host: 'secure.test', port: s.proxy.httpsPort, caFile: s.caFile, path: `${path}-anon`, args: [proto] });
    assert.match(String(statusOf(again)), /^Portico; hit/, again.stdout);
    assert.equal(s.up.seen.length, before, `${proto}: the anonymous repeat was answered from the cache`);
  }
});

test('a default host with clientAuth asks clients without SNI (or with an unknown name) for a certificate too', async (t) => {
  const s = await setup(t, { ca: 'clients-ca.pem' }, { defaultHost: 'secure.test' });
  const ca = s.pki.caPem;
  assert.equal((await handshake(s.proxy.httpsPort, undefined, ca)).ok, false);
  assert.equal((await handshake(s.proxy.httpsPort, 'unknown.test', ca)).ok, false);
  assert.equal(s.up.seen.length, 0);
  const withCert = await handshake(s.proxy.httpsPort, undefined, ca, { cert: await readText(s.good.cert), key: await readText(s.good.key) });
  assert.equal(withCert.ok, true);
  assert.equal(s.up.seen.length, 1);
  assert.equal(s.up.seen[0]!.headers['client-cert'], `:${s.good.der.toString('base64')}:`);
});

test('clientAuth added by a reload applies to new connections; removed, the host serves without certificates', async (t) => {
  const s = await setup(t);
  const ca = s.pki.caPem;
  const port = s.proxy.httpsPort;
  const hosts = (withAuth: boolean): Record<string, unknown> => ({
    'secure.test': { tls: { cert: 'secure.pem', key: 'secure-key.pem' }, ...(withAuth ? { clientAuth: { ca: 'clients-ca.pem' } } : {}), routes: [{ path: '/', upstream: s.up.url }] },
  });
  await s.proxy.reconfigure({ hosts: hosts(false) } as never);
  assert.equal((await handshake(port, 'secure.test', ca)).ok, true);
  await s.proxy.reconfigure({ hosts: hosts(true) } as never);
  assert.equal((await handshake(port, 'secure.test', ca)).ok, false);
  const alice = { cert: await readText(s.good.cert), key: await readText(s.good.key) };
  const mallory = { cert: await readText(s.rogue.cert), key: await readText(s.rogue.key) };
  const aliceSession = await handshake(port, 'secure.test', ca, alice);
  assert.equal(aliceSession.ok, true);
  assert.equal((await handshake(port, 'secure.test', ca, mallory)).ok, false);
  // Another CA file: its clients are let in, the old one's are not, and a session from before does not resume.
  await writeFile(join(s.pki.dir, 'other-ca.pem'), s.pki.caPem);
  const hostsWith = (caFile: string): Record<string, unknown> => ({
    'secure.test': { tls: { cert: 'secure.pem', key: 'secure-key.pem' }, clientAuth: { ca: caFile }, routes: [{ path: '/', upstream: s.up.url }] },
  });
  await s.proxy.reconfigure({ hosts: hostsWith('other-ca.pem') } as never);
  assert.equal((await handshake(port, 'secure.test', ca, mallory)).ok, true);
  assert.equal((await handshake(port, 'secure.test', ca, alice)).ok, false);
  const resumed = await handshake(port, 'secure.test', ca, { session: aliceSession.session });
  assert.equal(resumed.reused, false);
  assert.equal(resumed.ok, false);
});

test('clientAuth problems are config errors at their path', async () => {
  const pki = await makePki();
  try {
    const tlsFiles = await pki.issue('a', ['a.test']);
    await writeFile(join(pki.dir, 'not-a-ca.pem'), 'hello\n');
    await writeFile(join(pki.dir, 'broken-ca.pem'), '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n');
    await writeFile(join(pki.dir, 'ca.pem'), pki.caPem);
    const host = (extra: Record<string, unknown>): Record<string, unknown> => ({ 'a.test': { tls: tlsFiles, routes: [{ path: '/', upstream: 'http://127.0.0.1:9' }], ...extra } });
    assert.deepEqual(await checkHosts(pki, host({ clientAuth: { ca: 'missing.pem' } })), [`hosts["a.test"].clientAuth.ca: cannot read CA file ${join(pki.dir, 'missing.pem')} (ENOENT)`]);
    const none = await checkHosts(pki, host({ clientAuth: { ca: 'not-a-ca.pem' } }));
    assert.equal(none.length, 1);
    assert.match(none[0]!, /^hosts\["a\.test"\]\.clientAuth\.ca: .*not-a-ca\.pem holds no PEM certificate/);
    const broken = await checkHosts(pki, host({ clientAuth: { ca: 'broken-ca.pem' } }));
    assert.match(broken[0] ?? '', /^hosts\["a\.test"\]\.clientAuth\.ca: certificate 1 of 1 in .*broken-ca\.pem does not parse as X\.509/);
    assert.match((await checkHosts(pki, host({ clientAuth: { ca: 'ca.pem' }, plainHttp: 'serve' })))[0] ?? '', /^hosts\["a\.test"\]\.plainHttp: a host with "clientAuth" cannot be served over plain HTTP/);
    assert.match((await checkHosts(pki, host({ clientAuth: { ca: 'ca.pem' }, connectionSharing: 'same-certificate' })))[0] ?? '', /^hosts\["a\.test"\]\.connectionSharing: a host with "clientAuth" cannot take requests/);
    assert.match((await checkHosts(pki, host({ clientAuth: { ca: 'ca.pem', mode: 'sometimes' } })))[0] ?? '', /^hosts\["a\.test"\]\.clientAuth\.mode: /);
    assert.deepEqual(await checkHosts(pki, host({ clientAuth: { ca: 'ca.pem', mode: 'optional' } })), []);
  } finally {
    await pki.cleanup();
  }
});

test('a WebSocket upgrade on a host with clientAuth carries the client\'s certificate as Client-Cert', async (t) => {
  const s = await setup(t);
  const ws = await upgradeUpstream();
  t.after(ws.close);
  let seen: string | string[] | undefined = 'none';
  ws.wss.on('connection', (_socket, req: IncomingMessage) => {
    seen = req.headers['client-cert'];
  });
  await s.proxy.reconfigure({
    hosts: { 'secure.test': { tls: { cert: 'secure.pem', key: 'secure-key.pem' }, clientAuth: { ca: 'clients-ca.pem' }, routes: [{ path: '/', upstream: ws.url }] } },
  });
  // ws hands `servername` to tls.connect; its types do not list it.
  const options = {
    servername: 'secure.test',
    ca: s.pki.caPem,
    cert: await readText(s.good.cert),
    key: await readText(s.good.key),
    headers: { host: 'secure.test', 'client-cert': ':Zm9yZ2Vk:' },
  } as WebSocket.ClientOptions;
  const client = new WebSocket(`wss://127.0.0.1:${s.proxy.httpsPort}/ws`, options);
  await once(client, 'open');
  client.send('ping');
  const [echo] = (await once(client, 'message')) as [Buffer];
  assert.equal(echo.toString(), 'ping');
  client.close();
  assert.equal(seen, `:${s.good.der.toString('base64')}:`);
});

test('an ACME TLS-ALPN-01 validation of a host with clientAuth gets its challenge certificate without one; other handshakes still need one', async (t) => {
  const s = await setup(t);
  const keyAuthorization = 'token.thumbprint';
  const authz = { identifier: { type: 'dns', value: 'secure.test' }, status: 'pending', challenges: [], url: '', expires: '' } as unknown as acme.Authorization;
  await s.proxy.portico.alpn.add(authz, keyAuthorization);
  const connect = (alpn: string[]): Promise<tls.TLSSocket | undefined> =>
    new Promise((resolve) => {
      const c = tls.connect({ host: '127.0.0.1', port: s.proxy.httpsPort, servername: 'secure.test', rejectUnauthorized: false, ALPNProtocols: alpn }, () => {
        // TLS 1.3: a refused (missing) certificate is reported after the client's side completed.
        c.once('data', () => resolve(c));
        c.once('end', () => resolve(c.alpnProtocol === 'acme-tls/1' ? c : undefined));
        c.once('error', () => resolve(undefined));
        if (c.alpnProtocol !== 'acme-tls/1') c.write('GET / HTTP/1.1\r\nhost: secure.test\r\n\r\n');
      });
      c.once('error', () => resolve(undefined));
    });
  const challenge = await connect(['acme-tls/1']);
  assert.ok(challenge !== undefined, 'the validation handshake completes');
  const pem = `-----BEGIN CERTIFICATE-----\n${challenge.getPeerCertificate().raw.toString('base64')}\n-----END CERTIFICATE-----\n`;
  assert.equal(acme.crypto.isAlpnCertificateAuthorizationValid(pem, keyAuthorization), true);
  challenge.destroy();
  // A client that does not offer acme-tls/1 is not let past the certificate check by the pending challenge.
  assert.equal(await connect(['http/1.1']), undefined);
  assert.equal(s.up.seen.length, 0);
});
