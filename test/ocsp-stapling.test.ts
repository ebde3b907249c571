/**
 * OCSP stapling against OpenSSL's own responder, on loopback: a CA made with openssl, a delegated responder
 * certificate (id-kp-OCSPSigning) and leaves whose Authority Information Access names the responder. OpenSSL 3.0's
 * `openssl ocsp -port` binds every address (it takes a port number only), so a Node HTTP server on 127.0.0.1 takes
 * each POST and has `openssl ocsp -index … -reqin … -respout …` answer it: OpenSSL's responder logic, signature and
 * all, one run per request. The peers that check the staple are `openssl s_client -status` and Node's tls.connect
 * with requestOCSP; nothing is mocked.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFile, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { join } from 'node:path';
import tls from 'node:tls';
import { AsnConvert } from '@peculiar/asn1-schema';
import { BasicOCSPResponse, OCSPResponse } from '@peculiar/asn1-ocsp';
import { makePki, startProxyFor, waitForLog, type TestPki, type TestProxy } from './helpers/proxy.js';
import { freePort } from './helpers/net.js';
import { requireTool, runTool } from './helpers/real-peers.js';
import type { ConfigInput } from '../src/config/schema.js';

async function openssl(args: readonly string[]): Promise<void> {
  const r = await runTool('openssl', args);
  if (r.code !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
}

/** The serial numbers (hex) of the leaves makeCa() issues, as index.txt and s_client print them. */
const SERIAL = { good: '1001', other: '1002', revoked: '1003', renewed: '1004', plainSigner: '1005' } as const;

interface OcspCa {
  pki: TestPki;
  /** The responder's port (nothing listens there until startResponder()). */
  port: number;
  file(name: string): string;
}

/**
 * ca.pem (the CA); responder.pem (a delegated OCSP responder, id-kp-OCSPSigning); plain-signer.pem (a certificate
 * of the same CA without that usage); impostor-leaf.pem (a self-signed CA named as the real one, another key); leaves <name>.pem (leaf + CA, so the issuer is in the chain) for good.test,
 * other.test, revoked.test, and renewed.pem (good.test again, a new serial), each naming the responder in its AIA;
 * index.txt lists them all valid but revoked.test.
 */
async function makeCa(t: TestContext): Promise<OcspCa | undefined> {
  if (!requireTool(t, 'openssl')) return undefined;
  const pki = await makePki();
  const port = await freePort();
  const f = (name: string): string => join(pki.dir, name);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  await openssl(['req', '-x509', ...ec, '-keyout', f('ca-key.pem'), '-out', f('ca.pem'), '-subj', '/CN=OCSP Test CA', '-days', '3', '-addext', 'basicConstraints=critical,CA:true', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  const issue = async (name: string, subject: string, serial: string, ext: string): Promise<void> => {
    await writeFile(f(`${name}.ext`), ext);
    await openssl(['req', ...ec, '-keyout', f(`${name}-key.pem`), '-out', f(`${name}.csr`), '-subj', subject]);
    await openssl(['x509', '-req', '-in', f(`${name}.csr`), '-CA', f('ca.pem'), '-CAkey', f('ca-key.pem'), '-set_serial', `0x${serial}`, '-out', f(`${name}-leaf.pem`), '-days', '2', '-extfile', f(`${name}.ext`)]);
    await writeFile(f(`${name}.pem`), Buffer.concat([await readFile(f(`${name}-leaf.pem`)), await readFile(f('ca.pem'))]));
  };
  // An impostor: a CA of the same name as the real one, with a key of its own.
  await openssl(['req', '-x509', ...ec, '-keyout', f('impostor-key.pem'), '-out', f('impostor-leaf.pem'), '-subj', '/CN=OCSP Test CA', '-days', '3']);
  await issue('responder', '/CN=OCSP Test Responder', '2001', 'basicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=OCSPSigning\n');
  await issue('plain-signer', '/CN=Not An OCSP Responder', '2002', 'basicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n');
  const leafExt = (name: string): string => `basicConstraints=critical,CA:false\nsubjectAltName=DNS:${name}\nextendedKeyUsage=serverAuth\nauthorityInfoAccess=OCSP;URI:http://127.0.0.1:${port}\n`;
  await issue('good', '/CN=good.test', SERIAL.good, leafExt('good.test'));
  await issue('other', '/CN=other.test', SERIAL.other, leafExt('other.test'));
  await issue('revoked', '/CN=revoked.test', SERIAL.revoked, leafExt('revoked.test'));
  await issue('renewed', '/CN=good.test', SERIAL.renewed, leafExt('good.test'));
  const line = (status: 'V' | 'R', serial: string, cn: string): string => `${status}\t301231235959Z\t${status === 'R' ? '260101000000Z' : ''}\t${serial}\tunknown\t/CN=${cn}\n`;
  // Two lines name /CN=good.test (good and renewed): openssl refuses such an index unless told subjects repeat.
  await writeFile(f('index.txt.attr'), 'unique_subject = no\n');
  await writeFile(
    f('index.txt'),
    line('V', SERIAL.good, 'good.test') + line('V', SERIAL.other, 'other.test') + line('R', SERIAL.revoked, 'revoked.test') + line('V', SERIAL.renewed, 'good.test'),
  );
  return { pki, port, file: f };
}

/** A running responder: the requests it answered. */
interface Responder {
  requests: number;
}

/**
 * Answers OCSP POSTs on 127.0.0.1:<ca.port> with `openssl ocsp -index index.txt`, signing with `signer` (the
 * delegated responder by default) and a nextUpdate 10 minutes on; closed after the test. `answerFor`: a leaf whose
 * request (made by `openssl ocsp -reqout`) is answered in place of every request received, as a confused or
 * hostile responder would.
 */
async function startResponder(t: TestContext, ca: OcspCa, signer = 'responder', answerFor?: string): Promise<Responder> {
  const state: Responder = { requests: 0 };
  const substitute = answerFor === undefined ? undefined : ca.file(`${answerFor}-request.der`);
  if (answerFor !== undefined) await openssl(['ocsp', '-issuer', ca.file('ca.pem'), '-cert', ca.file(`${answerFor}-leaf.pem`), '-no_nonce', '-reqout', substitute!]);
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const n = ++state.requests;
      const reqFile = ca.file(`req-${n}.der`);
      const respFile = ca.file(`resp-${n}.der`);
      const args = ['ocsp', '-index', ca.file('index.txt'), '-CA', ca.file('ca.pem'), '-rsigner', ca.file(`${signer}-leaf.pem`), '-rkey', ca.file(`${signer}-key.pem`), '-reqin', substitute ?? reqFile, '-respout', respFile, '-nmin', '10'];
      writeFile(reqFile, Buffer.concat(chunks))
        .then(() => openssl(args))
        .then(() => readFile(respFile))
        .then(
          (der) => res.writeHead(200, { 'content-type': 'application/ocsp-response' }).end(der),
          (err: Error) => res.writeHead(500).end(err.message),
        );
    });
  });
  server.listen(ca.port, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => new Promise((r) => server.close(r)));
  return state;
}

const hostsOf = (names: readonly string[]): NonNullable<ConfigInput['hosts']> =>
  Object.fromEntries(names.map((n) => [`${n}.test`, { tls: { cert: `${n}.pem`, key: `${n}-key.pem` }, routes: [{ path: '/', respond: { body: n } }] }]));

/** What `openssl s_client -status` says of the staple it got for `servername`. */
async function sClientStatus(proxy: TestProxy, ca: OcspCa, servername: string): Promise<string> {
  const r = await runTool('openssl', ['s_client', '-connect', `127.0.0.1:${proxy.httpsPort}`, '-servername', servername, '-status', '-CAfile', ca.file('ca.pem'), '-verify_return_error']);
  assert.equal(r.code, 0, `s_client for ${servername} failed: ${r.stderr}`);
  assert.match(r.stdout, /Verify return code: 0 \(ok\)/, 'the handshake itself verified');
  return r.stdout;
}

/** The staple Node's client receives for `servername` (tls.connect with requestOCSP), or null for none. */
async function nodeStaple(proxy: TestProxy, ca: OcspCa, servername: string): Promise<Buffer | null> {
  // requestOCSP is a Node option @types/node leaves out.
  const options = { host: '127.0.0.1', port: proxy.httpsPort, servername, requestOCSP: true, ca: await readFile(ca.file('ca.pem')), ALPNProtocols: ['h2'] };
  const socket = tls.connect(options as tls.ConnectionOptions);
  let staple: Buffer | null | undefined;
  socket.on('OCSPResponse', (r: Buffer) => (staple = r));
  try {
    await once(socket, 'secureConnect');
  } finally {
    socket.destroy();
  }
  return staple ?? null;
}

/** The certificate serial (hex) and status a DER OCSPResponse states. */
function readStaple(der: Buffer): { serial: string; status: string } {
  const response = AsnConvert.parse(der, OCSPResponse);
  const basic = AsnConvert.parse(response.responseBytes!.response.buffer, BasicOCSPResponse);
  const single = basic.tbsResponseData.responses[0]!;
  const status = single.certStatus.good !== undefined ? 'good' : single.certStatus.revoked !== undefined ? 'revoked' : 'unknown';
  return { serial: Buffer.from(single.certID.serialNumber).toString('hex').toUpperCase(), status };
}

const stapledFor = (host: string) => (l: Record<string, unknown>): boolean => l['msg'] === 'ocsp response stapled' && l['host'] === host;

test('each SNI name gets the good OCSP response of its own certificate stapled, as openssl s_client -status and Node\'s requestOCSP see it', async (t) => {
  const ca = await makeCa(t);
  if (ca === undefined) return;
  await startResponder(t, ca);
  const proxy = await startProxyFor(t, ca.pki, { hosts: hostsOf(['good', 'other']), defaultHost: 'other.test' });
  await waitForLog(proxy, 'stapling good.test', stapledFor('good.test'), 0, 10_000);
  await waitForLog(proxy, 'stapling other.test', stapledFor('other.test'), 0, 10_000);
  // A client without SNI reaches the default host's own TLS server, which staples too.
  const noSni = await runTool('openssl', ['s_client', '-connect', `127.0.0.1:${proxy.httpsPort}`, '-noservername', '-status', '-CAfile', ca.file('ca.pem'), '-verify_return_error']);
  assert.equal(noSni.code, 0, noSni.stderr);
  assert.match(noSni.stdout, /Cert Status: good/, noSni.stdout);
  assert.match(noSni.stdout, new RegExp(`Serial Number: ${SERIAL.other}\\b`), 'the default host\'s response');
  for (const [host, serial] of [['good.test', SERIAL.good], ['other.test', SERIAL.other]] as const) {
    const out = await sClientStatus(proxy, ca, host);
    assert.match(out, /OCSP Response Status: successful \(0x0\)/, out);
    assert.match(out, /Cert Status: good/, out);
    assert.match(out, new RegExp(`Serial Number: ${serial}\\b`), `the response for ${host} is about its own certificate`);
    const staple = await nodeStaple(proxy, ca, host);
    assert.ok(staple !== null, `Node's client got a staple for ${host}`);
    assert.deepEqual(readStaple(staple), { serial, status: 'good' });
  }
  const line = proxy.logs.find(stapledFor('good.test'))!;
  assert.equal(line['url'], `http://127.0.0.1:${ca.port}`);
  assert.equal(typeof line['nextUpdate'], 'string', 'openssl ocsp -nmin gives a nextUpdate');
});

test('a certificate its responder reports revoked gets no staple, and an error names the host and the certificate', async (t) => {
  const ca = await makeCa(t);
  if (ca === undefined) return;
  await startResponder(t, ca);
  const proxy = await startProxyFor(t, ca.pki, { hosts: hostsOf(['good', 'revoked']) });
  const error = await waitForLog(proxy, 'of the revoked certificate', (l) => String(l['msg']).startsWith('certificate revoked'), 0, 10_000);
  assert.equal(error['level'], 50);
  assert.equal(error['host'], 'revoked.test');
  assert.equal(error['certFile'], ca.file('revoked.pem'));
  assert.equal(error['serial'], SERIAL.revoked);
  assert.equal(error['revokedAt'], '2026-01-01T00:00:00.000Z');
  await waitForLog(proxy, 'stapling good.test', stapledFor('good.test'), 0, 10_000);
  const out = await sClientStatus(proxy, ca, 'revoked.test');
  assert.match(out, /OCSP response: no response sent/, out);
  assert.equal(await nodeStaple(proxy, ca, 'revoked.test'), null);
  // Served all the same: the handshake completed and the other host is stapled.
  assert.match(await sClientStatus(proxy, ca, 'good.test'), /Cert Status: good/);
});

test('with the OCSP responder down, the site is served without a staple and a warning names the host, the responder URL and the reason', async (t) => {
  const ca = await makeCa(t);
  if (ca === undefined) return;
  const proxy = await startProxyFor(t, ca.pki, { hosts: hostsOf(['good']) });
  const warn = await waitForLog(proxy, 'of the failed fetch', (l) => l['msg'] === 'ocsp response not fetched, serving on', 0, 10_000);
  assert.equal(warn['level'], 40);
  assert.equal(warn['host'], 'good.test');
  assert.equal(warn['url'], `http://127.0.0.1:${ca.port}`);
  assert.match(String(warn['reason']), /ECONNREFUSED/);
  const out = await sClientStatus(proxy, ca, 'good.test');
  assert.match(out, /OCSP response: no response sent/, out);
  assert.equal(await nodeStaple(proxy, ca, 'good.test'), null);
});

/** Serves good.test from a responder started with `signer` and `answerFor`; asserts the warning's reason matches and nothing is stapled. */
async function assertRefused(t: TestContext, signer: string, answerFor: string | undefined, reason: RegExp): Promise<void> {
  const ca = await makeCa(t);
  if (ca === undefined) return;
  const responder = await startResponder(t, ca, signer, answerFor);
  const proxy = await startProxyFor(t, ca.pki, { hosts: hostsOf(['good']) });
  const warn = await waitForLog(proxy, 'of the refused response', (l) => l['msg'] === 'ocsp response not fetched, serving on', 0, 10_000);
  assert.equal(responder.requests, 1, 'the responder was asked, and answered');
  assert.match(String(warn['reason']), reason);
  assert.match(await sClientStatus(proxy, ca, 'good.test'), /OCSP response: no response sent/);
  assert.equal(await nodeStaple(proxy, ca, 'good.test'), null);
}

test('a response signed by a certificate of the CA without the OCSP-signing usage is refused: not stapled, and a warning says why', async (t) => {
  await assertRefused(t, 'plain-signer', undefined, /signed neither by the issuer nor by a responder certificate the issuer signed for OCSP/);
});

test('a response signed by an impostor bearing the issuer\'s name but another key is refused: not stapled, and a warning says why', async (t) => {
  await assertRefused(t, 'impostor', undefined, /the response signature does not verify/);
});

test('a good response about another certificate of the same CA is refused: not stapled, and a warning says why', async (t) => {
  await assertRefused(t, 'responder', 'other', new RegExp(`does not answer for this certificate \\(serial ${SERIAL.good}\\)`));
});

test('with listen.https.ocspStapling false nothing is fetched or stapled, and a reload that turns it on staples', async (t) => {
  const ca = await makeCa(t);
  if (ca === undefined) return;
  const responder = await startResponder(t, ca);
  const proxy = await startProxyFor(t, ca.pki, { hosts: hostsOf(['good']) });
  await waitForLog(proxy, 'stapling good.test', stapledFor('good.test'), 0, 10_000);
  // Off by a reload: the held response is dropped at once.
  const raw = JSON.parse(await readFile(proxy.configFile, 'utf8')) as { listen: { https: Record<string, unknown> } };
  raw.listen.https['ocspStapling'] = false;
  await writeFile(proxy.configFile, JSON.stringify(raw));
  const r = await proxy.portico.reload();
  assert.ok(r.ok);
  assert.equal(proxy.portico.ocsp.stapledCount, 0);
  assert.match(await sClientStatus(proxy, ca, 'good.test'), /OCSP response: no response sent/);
  assert.equal(await nodeStaple(proxy, ca, 'good.test'), null);
  assert.equal(proxy.logs.some((l) => l['msg'] === 'listener changes take effect after a restart'), false, 'a reload applies ocspStapling');
  assert.equal(responder.requests, 1, 'nothing is fetched while it is off');
  // And on again.
  const from = proxy.logs.length;
  raw.listen.https['ocspStapling'] = true;
  await writeFile(proxy.configFile, JSON.stringify(raw));
  assert.ok((await proxy.portico.reload()).ok);
  await waitForLog(proxy, 'stapling good.test again', stapledFor('good.test'), from, 10_000);
  assert.match(await sClientStatus(proxy, ca, 'good.test'), /Cert Status: good/);
});

test('a certificate replaced on disk gets a response for its own serial, and the old certificate\'s is no longer stapled', async (t) => {
  const ca = await makeCa(t);
  if (ca === undefined) return;
  await startResponder(t, ca);
  const proxy = await startProxyFor(t, ca.pki, { hosts: hostsOf(['good']) });
  await waitForLog(proxy, 'stapling good.test', stapledFor('good.test'), 0, 10_000);
  assert.match(await sClientStatus(proxy, ca, 'good.test'), new RegExp(`Serial Number: ${SERIAL.good}\\b`));
  const from = proxy.logs.length;
  await writeFile(ca.file('good-key.pem'), await readFile(ca.file('renewed-key.pem')));
  await writeFile(ca.file('good.pem'), await readFile(ca.file('renewed.pem')));
  const line = await waitForLog(proxy, 'stapling the renewed certificate', (l) => stapledFor('good.test')(l) && l['serial'] === SERIAL.renewed, from, 15_000);
  assert.equal(line['certFile'], ca.file('good.pem'));
  const staple = await nodeStaple(proxy, ca, 'good.test');
  assert.ok(staple !== null);
  assert.deepEqual(readStaple(staple), { serial: SERIAL.renewed, status: 'good' });
});

test('a host asking for client certificates, which has a TLS server of its own, staples its response too', async (t) => {
  const ca = await makeCa(t);
  if (ca === undefined) return;
  await startResponder(t, ca);
  const hosts = hostsOf(['good']);
  const proxy = await startProxyFor(t, ca.pki, { hosts: { 'good.test': { ...hosts['good.test']!, clientAuth: { ca: 'ca.pem', mode: 'optional' } } } });
  await waitForLog(proxy, 'stapling good.test', stapledFor('good.test'), 0, 10_000);
  const out = await sClientStatus(proxy, ca, 'good.test');
  assert.match(out, /Acceptable client certificate CA names/, 'the handshake went through the client-certificate server');
  assert.match(out, /Cert Status: good/, out);
  const staple = await nodeStaple(proxy, ca, 'good.test');
  assert.ok(staple !== null);
  assert.deepEqual(readStaple(staple), { serial: SERIAL.good, status: 'good' });
});
