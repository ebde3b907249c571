/**
 * OCSP stapling against OpenSSL's own responder, on loopback (test/helpers/ocsp.ts): the peers that check the staple
 * are `openssl s_client -status` and Node's tls.connect with requestOCSP; nothing is mocked.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { startProxyFor, waitForLog } from './helpers/proxy.js';
import { runTool } from './helpers/real-peers.js';
import { hostsOf, makeCa, nodeStaple, readStaple, sClientStatus, SERIAL, stapledFor, startResponder } from './helpers/ocsp.js';

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
