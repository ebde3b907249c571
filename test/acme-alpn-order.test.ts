/**
 * TLS-ALPN-01 relies on OpenSSL choosing the ALPN protocol before the
 * certificate (Node's SNICallback runs from the certificate callback): the
 * ALPN callback marks the socket, the SNI callback then returns the challenge
 * certificate. This checks that order on the running Node/OpenSSL, and that
 * Portico's HTTPS listener presents the challenge certificate only to
 * clients offering acme-tls/1 for a name with a pending challenge.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import tls from 'node:tls';
import { once } from 'node:events';
import acme from 'acme-client';
import { makePki, startProxyFor } from './helpers/proxy.js';
import { startUpstream } from './helpers/net.js';

test('node calls the ALPN callback before the SNI callback, on the same socket', async (t) => {
  const pki = await makePki();
  t.after(() => pki.cleanup());
  const leaf = await pki.ca.issue(['order.test']);
  const calls: string[] = [];
  const mark = Symbol('mark');
  const server = tls.createServer({
    SNICallback(this: tls.TLSSocket & { [mark]?: boolean }, name: string, cb: (err: Error | null, ctx?: tls.SecureContext) => void) {
      calls.push(`sni ${name} marked=${this[mark] === true}`);
      cb(null, tls.createSecureContext({ cert: leaf.chain, key: leaf.key }));
    },
    ALPNCallback(this: tls.TLSSocket & { [mark]?: boolean }, { protocols }: { servername: string; protocols: string[] }) {
      calls.push(`alpn ${protocols.join(',')}`);
      this[mark] = true;
      return protocols[0];
    },
  } as tls.TlsOptions);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => server.close());
  const port = (server.address() as { port: number }).port;
  const socket = tls.connect({ host: '127.0.0.1', port, servername: 'order.test', ca: pki.caPem, ALPNProtocols: ['acme-tls/1'] });
  await once(socket, 'secureConnect');
  socket.end();
  assert.deepEqual(calls, ['alpn acme-tls/1', 'sni order.test marked=true']);
});

test('the https listener presents the challenge certificate only with ALPN acme-tls/1 for a pending name, and closes after the handshake', async (t) => {
  const pki = await makePki();
  const up = await startUpstream();
  const site = await pki.issue('site', ['site.test']);
  const proxy = await startProxyFor(t, pki, { hosts: { 'site.test': { tls: site, routes: [{ upstream: up.url }] } } }, [() => up.close()]);
  const keyAuthorization = 'token.thumbprint';
  const authz = { identifier: { type: 'dns', value: 'site.test' }, status: 'pending', challenges: [], url: '', expires: '' } as unknown as acme.Authorization;
  await proxy.portico.alpn.add(authz, keyAuthorization);
  const connect = (alpn: string[]): Promise<tls.TLSSocket> =>
    new Promise((resolve, reject) => {
      const s = tls.connect({ host: '127.0.0.1', port: proxy.httpsPort, servername: 'site.test', rejectUnauthorized: false, ALPNProtocols: alpn }, () => resolve(s));
      s.on('error', reject);
    });
  const challenge = await connect(['acme-tls/1']);
  assert.equal(challenge.alpnProtocol, 'acme-tls/1');
  const pem = `-----BEGIN CERTIFICATE-----\n${challenge.getPeerCertificate().raw.toString('base64')}\n-----END CERTIFICATE-----\n`;
  assert.equal(acme.crypto.isAlpnCertificateAuthorizationValid(pem, keyAuthorization), true);
  await once(challenge, 'end');
  const normal = await connect(['h2', 'http/1.1']);
  assert.equal(normal.alpnProtocol, 'h2');
  assert.equal(normal.getPeerCertificate().subject.CN, 'site.test');
  normal.destroy();
  await proxy.portico.alpn.remove('site.test');
  // No pending challenge: acme-tls/1 is not chosen and the site certificate is served.
  const after = await connect(['acme-tls/1', 'http/1.1']);
  assert.equal(after.alpnProtocol, 'http/1.1');
  after.destroy();
});
