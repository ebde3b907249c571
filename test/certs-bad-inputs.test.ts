/**
 * Bad certificate inputs: each one at start names its file and says what is wrong and how to fix it; the same
 * input arriving by rotation is refused, the old certificate serves on, and the admin API's /status and /metrics
 * show the refusal until good files arrive. Real files, a real Portico, real TLS handshakes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { checkHosts, makePki, startProxy, startProxyFor, type TestPki } from './helpers/proxy.js';
import { freePort, startUpstream } from './helpers/net.js';
import { handshake, waitFor } from './helpers/pebble.js';
import { adminRequest, metricValue } from './helpers/admin.js';

const TOKEN = 'certs-bad-inputs-token-0123456789abcdef';

/** The PEM blocks of a chain, each with its own line ending. */
function pemBlocks(chain: string): string[] {
  return chain.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----\n?/g)!.map((b) => (b.endsWith('\n') ? b : `${b}\n`));
}

interface BadInput {
  what: string;
  cert: string | Buffer;
  key: string | Buffer;
  /** The file the message must name. */
  blames: 'cert' | 'key';
  reason: RegExp;
}

/** One of each bad input, for `site.test`. */
async function badInputs(pki: TestPki): Promise<BadInput[]> {
  const good = await pki.ca.issue(['site.test']);
  const key = createPrivateKey(good.key);
  const [leaf, ca] = pemBlocks(good.chain);
  const notYet = await pki.ca.issue(['site.test'], { notBefore: new Date(Date.now() + 86_400_000) });
  const expired = await pki.ca.issue(['site.test'], { notBefore: new Date(Date.now() - 10 * 86_400_000), days: 2 });
  const other = await pki.ca.issue(['other.test']);
  return [
    { what: 'a key-only PEM as the certificate', cert: good.key, key: good.key, blames: 'cert', reason: /holds a private key, not a certificate; check that "cert" and "key" are not swapped/ },
    { what: 'a certificate as the key', cert: good.chain, key: good.chain, blames: 'key', reason: /holds a certificate, not a private key/ },
    { what: 'an encrypted key', cert: good.chain, key: key.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'secret' }), blames: 'key', reason: /encrypted with a passphrase.*openssl pkey -in / },
    { what: 'a DER certificate', cert: new X509Certificate(good.chain).raw, key: good.key, blames: 'cert', reason: /DER \(binary\), not PEM; convert it: openssl x509 -inform der/ },
    { what: 'a DER key', cert: good.chain, key: key.export({ type: 'pkcs8', format: 'der' }), blames: 'key', reason: /DER \(binary\), not PEM; convert it: openssl pkey -inform der/ },
    { what: 'an empty certificate', cert: '', key: good.key, blames: 'cert', reason: /the file is empty/ },
    { what: 'an empty key', cert: good.chain, key: '', blames: 'key', reason: /the file is empty/ },
    { what: 'a chain in the wrong order', cert: `${ca}${leaf}`, key: good.key, blames: 'cert', reason: /chain is in the wrong order: the key .* belongs to certificate 2 of the file, .*; put the leaf first/ },
    { what: 'two blocks on one line', cert: `${leaf!.trimEnd()}${ca}`, key: good.key, blames: 'cert', reason: /joined on one line/ },
    { what: 'a key of another certificate', cert: good.chain, key: other.key, blames: 'key', reason: /does not match the certificate/ },
    { what: 'a certificate not yet valid', cert: notYet.chain, key: notYet.key, blames: 'cert', reason: /not valid before/ },
    { what: 'an expired certificate', cert: expired.chain, key: expired.key, blames: 'cert', reason: /expired on/ },
    { what: 'a certificate for another name', cert: other.chain, key: other.key, blames: 'cert', reason: /does not cover "site.test"/ },
  ];
}

test('at start, each bad certificate input is a config error at its host that names the file, says what is wrong and how to fix it', async () => {
  const pki = await makePki();
  try {
    for (const [i, c] of (await badInputs(pki)).entries()) {
      await writeFile(join(pki.dir, `bad${i}.pem`), c.cert);
      await writeFile(join(pki.dir, `bad${i}-key.pem`), c.key);
      const issues = await checkHosts(pki, { 'site.test': { tls: { cert: `bad${i}.pem`, key: `bad${i}-key.pem` }, routes: [{ respond: {} }] } });
      assert.equal(issues.length, 1, `${c.what}: ${issues.join(' | ')}`);
      const file = join(pki.dir, c.blames === 'cert' ? `bad${i}.pem` : `bad${i}-key.pem`);
      assert.ok(issues[0]!.startsWith(`hosts["site.test"].tls: ${file}: `), `${c.what}: ${issues[0]}`);
      assert.match(issues[0]!, c.reason, c.what);
    }
    // The proxy itself refuses to start, with the same words.
    const enc = (await badInputs(pki)).find((c) => c.what === 'an encrypted key')!;
    await writeFile(join(pki.dir, 'enc.pem'), enc.cert);
    await writeFile(join(pki.dir, 'enc-key.pem'), enc.key);
    await assert.rejects(
      startProxy(pki, { hosts: { 'site.test': { tls: { cert: 'enc.pem', key: 'enc-key.pem' }, routes: [{ respond: {} }] } } }),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, 'PORTICO_CONFIG_INVALID');
        assert.ok(err.message.includes(`${join(pki.dir, 'enc-key.pem')}: the private key is encrypted with a passphrase`), err.message);
        return true;
      },
    );
  } finally {
    await pki.cleanup();
  }
});

test('a host with an IP address for its name is checked against the certificate\'s IP SANs and served to clients without SNI as the default host', async (t) => {
  const pki = await makePki();
  const leaf = await pki.ca.issue([], { ips: ['127.0.0.1'] });
  await writeFile(join(pki.dir, 'ip.pem'), leaf.chain);
  await writeFile(join(pki.dir, 'ip-key.pem'), leaf.key);
  const proxy = await startProxyFor(t, pki, { defaultHost: '127.0.0.1', hosts: { '127.0.0.1': { tls: { cert: 'ip.pem', key: 'ip-key.pem' }, routes: [{ respond: { body: 'by address' } }] } } });
  const served = await handshake(proxy.httpsPort, undefined, pki.caPem);
  assert.equal(served.fingerprint256, new X509Certificate(leaf.chain).fingerprint256);
  // A certificate without that IP is still refused.
  const dns = await pki.ca.issue(['site.test']);
  await writeFile(join(pki.dir, 'dns.pem'), dns.chain);
  await writeFile(join(pki.dir, 'dns-key.pem'), dns.key);
  const issues = await checkHosts(pki, { '127.0.0.1': { tls: { cert: 'dns.pem', key: 'dns-key.pem' }, routes: [{ respond: {} }] } });
  assert.match(issues.join('\n'), /does not cover "127\.0\.0\.1"/);
});

test('each bad replacement is refused with the old certificate serving on, and /status and /metrics show why until good files arrive', async (t) => {
  const pki = await makePki();
  const up = await startUpstream();
  await writeFile(join(pki.dir, 'admin.token'), `${TOKEN}\n`);
  const adminPort = await freePort();
  await pki.issue('site', ['site.test']);
  const proxy = await startProxyFor(t, pki, { admin: { port: adminPort, tokenFile: 'admin.token' }, hosts: { 'site.test': { tls: { cert: 'site.pem', key: 'site-key.pem' }, routes: [{ upstream: up.url }] } } }, [up.close]);
  const port = proxy.httpsPort;
  const certFile = join(pki.dir, 'site.pem');
  const keyFile = join(pki.dir, 'site-key.pem');
  const good = (await handshake(port, 'site.test', pki.caPem)).fingerprint256;
  const id = `file:${certFile}|${keyFile}`;
  type Cert = { id: string; refused?: { code: string; reason: string; at: string } };
  const certOf = async (): Promise<Cert | undefined> => {
    const r = await adminRequest(adminPort, 'GET', '/status', { token: TOKEN });
    return (JSON.parse(r.text) as { processes: { certificates: Cert[] }[] }).processes[0]!.certificates.find((c) => c.id === id);
  };
  assert.equal((await certOf())?.refused, undefined);
  for (const c of await badInputs(pki)) {
    const seen = proxy.logs.length;
    await writeFile(keyFile, c.key);
    await writeFile(certFile, c.cert);
    const line = await waitFor(`refusal of ${c.what}`, () => proxy.logs.slice(seen).find((l) => l.msg === 'certificate change refused, keeping the current certificate'), 5000);
    assert.match(String(line.reason), c.reason, c.what);
    assert.ok(String(line.reason).startsWith(`${c.blames === 'cert' ? certFile : keyFile}: `), `${c.what}: ${String(line.reason)}`);
    assert.equal((await handshake(port, 'site.test', pki.caPem)).fingerprint256, good, `${c.what}: the old certificate serves on`);
    const shown = await certOf();
    assert.equal(shown?.refused?.reason, line.reason, `${c.what}: /status shows the refusal`);
    assert.equal(shown?.refused?.code, 'PORTICO_CERT_INVALID');
  }
  const metrics = (await adminRequest(adminPort, 'GET', '/metrics', { token: TOKEN })).text;
  assert.equal(metricValue(metrics, `portico_certificate_replacement_refused{certificate="${id}"}`), 1);

  // Good files end it: served, and /status and /metrics are clear again.
  const next = await pki.ca.issue(['site.test']);
  await writeFile(keyFile, next.key);
  await writeFile(certFile, next.chain);
  await waitFor('the good pair', async () => ((await handshake(port, 'site.test', pki.caPem)).fingerprint256 !== good ? true : undefined), 5000);
  await waitFor('/status cleared', async () => ((await certOf())?.refused === undefined ? true : undefined), 5000);
  const after = (await adminRequest(adminPort, 'GET', '/metrics', { token: TOKEN })).text;
  assert.equal(metricValue(after, `portico_certificate_replacement_refused{certificate="${id}"}`), 0);

  // Files that cannot be read are shown the same way, with the file system's code.
  const kept = await readFile(keyFile);
  await writeFile(join(pki.dir, 'gone.pem'), kept);
  await import('node:fs/promises').then(({ rm }) => rm(keyFile));
  const gone = await waitFor('unreadable shown', async () => (await certOf())?.refused, 5000);
  assert.equal(gone.code, 'ENOENT');
  assert.ok(gone.reason.startsWith(`${keyFile}: cannot be read (ENOENT)`), gone.reason);
  await writeFile(keyFile, kept);
  await waitFor('/status cleared once the file is back', async () => ((await certOf())?.refused === undefined ? true : undefined), 5000);
});

test('a certificate whose host left the config is no longer listed in /status or /metrics', async (t) => {
  const pki = await makePki();
  await writeFile(join(pki.dir, 'admin.token'), `${TOKEN}\n`);
  const adminPort = await freePort();
  const a = await pki.issue('a', ['a.test']);
  const b = await pki.issue('b', ['b.test']);
  const admin = { port: adminPort, tokenFile: 'admin.token' };
  const proxy = await startProxyFor(t, pki, { admin, hosts: { 'a.test': { tls: a, routes: [{ respond: {} }] }, 'b.test': { tls: b, routes: [{ respond: {} }] } } });
  const listed = async (): Promise<string[]> => {
    const r = await adminRequest(adminPort, 'GET', '/status', { token: TOKEN });
    return (JSON.parse(r.text) as { processes: { certificates: { subjectAltName: string }[] }[] }).processes[0]!.certificates.map((c) => c.subjectAltName).sort();
  };
  assert.deepEqual(await listed(), ['DNS:a.test', 'DNS:b.test']);
  await proxy.reconfigure({ admin, hosts: { 'a.test': { tls: a, routes: [{ respond: {} }] } } });
  assert.deepEqual(await listed(), ['DNS:a.test']);
  const metrics = (await adminRequest(adminPort, 'GET', '/metrics', { token: TOKEN })).text;
  const certLines = metrics.split('\n').filter((l) => l.startsWith('portico_certificate_'));
  assert.ok(certLines.some((l) => l.includes('a.test')), certLines.join('\n'));
  assert.ok(!certLines.some((l) => l.includes('b.test') || l.includes('/b.pem')), certLines.join('\n'));
});
