import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { validateConfig } from '../src/config/load.js';
import { LocalCa } from '../src/tls/local-ca.js';
import { freePort, h1Request, h2Connect, h2Request } from './helpers/net.js';
import { checkHosts, makePki, startProxyFor } from './helpers/proxy.js';
import { requireNginx, startNginx } from './helpers/nginx.js';

test('an upstream that requires a client certificate (nginx ssl_verify_client) gets Portico\'s, over HTTP/1.1 and HTTP/2 upstream connections', async (t) => {
  const bin = requireNginx(t);
  if (bin === undefined) return;
  const pki = await makePki();
  await writeFile(join(pki.dir, 'ca.pem'), pki.caPem);
  const upstreamCert = await pki.issue('upstream', ['up.test']);
  const client = await pki.issue('portico-client', ['portico.internal'], { usage: 'client' });
  const tlsPort = await freePort();
  const h2Port = await freePort();
  const answer = 'return 200 "client=$ssl_client_s_dn verify=$ssl_client_verify proto=$server_protocol\\n";';
  const nginx = await startNginx(
    bin,
    `location / { return 200 "plain\\n"; }`,
    `server {
      listen 127.0.0.1:${tlsPort} ssl;
      listen 127.0.0.1:${h2Port} ssl http2;
      server_name up.test;
      ssl_certificate ${join(pki.dir, upstreamCert.cert)};
      ssl_certificate_key ${join(pki.dir, upstreamCert.key)};
      ssl_client_certificate ${join(pki.dir, 'ca.pem')};
      ssl_verify_client on;
      location / { ${answer} }
    }`,
  );
  const tls = { ca: 'ca.pem', servername: 'up.test', cert: client.cert, key: client.key };
  const cert = await pki.issue('m', ['m.test']);
  const proxy = await startProxyFor(
    t,
    pki,
    {
      hosts: {
        'm.test': {
          tls: cert,
          routes: [
            { path: '/', upstream: { targets: [`https://127.0.0.1:${tlsPort}`], protocol: 'http1', tls } },
            { path: '/h2', upstream: { targets: [`https://127.0.0.1:${h2Port}`], protocol: 'h2', tls } },
            { path: '/auto', upstream: { targets: [`https://127.0.0.1:${h2Port}`], tls } },
            { path: '/without', upstream: { targets: [`https://127.0.0.1:${tlsPort}`], tls: { ca: 'ca.pem', servername: 'up.test' } } },
          ],
        },
      },
    },
    [nginx.stop],
  );
  const ca = pki.caPem;
  const port = proxy.httpsPort;
  let r = await h1Request({ port, sni: 'm.test', path: '/x', ca });
  assert.equal(r.status, 200);
  assert.equal(r.text, 'client=CN=portico.internal verify=SUCCESS proto=HTTP/1.1\n');
  const s = await h2Connect(port, 'm.test', ca);
  for (const path of ['/h2', '/auto']) {
    const h = await h2Request(s, { path });
    assert.equal(h.text, 'client=CN=portico.internal verify=SUCCESS proto=HTTP/2.0\n', path);
  }
  s.close();
  // Without a client certificate nginx refuses the request, and Portico passes its answer on.
  r = await h1Request({ port, sni: 'm.test', path: '/without', ca });
  assert.equal(r.status, 400);
  assert.match(r.text, /No required SSL certificate was sent/);
});

test('an upstream client certificate is checked when the config loads: both files, readable, a matching key, not expired', async () => {
  const r = validateConfig({ hosts: { 'a.test': { tls: { cert: 'c', key: 'k' }, routes: [{ upstream: { targets: ['https://127.0.0.1:1'], tls: { cert: 'client.pem' } } }] } } });
  assert.match(r.ok ? '' : `${r.issues[0]!.path}: ${r.issues[0]!.message}`, /upstream\.tls\.cert: a client certificate needs both "cert" and "key"/);

  const pki = await makePki();
  try {
    const host = await pki.issue('h', ['c.test']);
    const one = await pki.issue('one', ['one'], { usage: 'client' });
    const two = await pki.issue('two', ['two'], { usage: 'client' });
    const other = await LocalCa.create('Other');
    const old = await other.issue(['old'], { usage: 'client', notBefore: new Date(Date.now() - 10 * 86_400_000), days: 1 });
    await writeFile(join(pki.dir, 'old.pem'), old.chain);
    await writeFile(join(pki.dir, 'old-key.pem'), old.key);
    const route = (path: string, tls: Record<string, string>) => ({ path, upstream: { targets: ['https://127.0.0.1:1'], tls } });
    const lines = await checkHosts(pki, {
      'c.test': {
        tls: host,
        routes: [
          route('/a', { cert: one.cert, key: two.key }),
          route('/b', { cert: 'missing.pem', key: one.key }),
          route('/c', { cert: 'old.pem', key: 'old-key.pem' }),
          route('/d', { cert: one.cert, key: one.key }),
        ],
      },
    });
    assert.equal(lines.length, 3, lines.join('\n'));
    assert.match(lines[0]!, /^hosts\["c\.test"\]\.routes\[0\]\.upstream\.tls\.key: .*two-key\.pem is not the key of .*one\.pem$/);
    assert.match(lines[1]!, /^hosts\["c\.test"\]\.routes\[1\]\.upstream\.tls\.cert: cannot read .*missing\.pem \(ENOENT\)$/);
    assert.match(lines[2]!, /^hosts\["c\.test"\]\.routes\[2\]\.upstream\.tls\.cert: .*old\.pem expired on /);
  } finally {
    await pki.cleanup();
  }
});
