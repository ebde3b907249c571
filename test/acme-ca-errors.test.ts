/** What the operator sees when the ACME CA refuses service or cannot be trusted: the real cause, and Retry-After honoured. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type http from 'node:http';
import https from 'node:https';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { makePki, startProxyFor, type TestPki } from './helpers/proxy.js';
import { freePort, startUpstream } from './helpers/net.js';
import { adminRequest } from './helpers/admin.js';
import { waitFor } from './helpers/pebble.js';

/**
 * A stand-in ACME CA on 127.0.0.1 over HTTPS (a certificate from the test CA, which fake-ca.pem in the certs
 * directory trusts), answering every request with `answer`; its directory URL.
 */
async function fakeCa(pki: TestPki, answer: (res: http.ServerResponse) => void): Promise<{ ca: https.Server; directory: string }> {
  const leaf = await pki.ca.issue(['localhost'], { ips: ['127.0.0.1'] });
  const ca = https.createServer({ cert: leaf.chain, key: leaf.key }, (_req, res) => answer(res));
  // A port no other CA of this run had: the CA's Retry-After (answerMaintenance: 120 s) is kept per origin for the
  // process, and a later test's CA given the same port by listen(0) waited it out (a CI run timed out so).
  ca.listen(await freePort(), '127.0.0.1');
  await once(ca, 'listening');
  await writeFile(join(pki.dir, 'fake-ca.pem'), pki.caPem);
  return { ca, directory: `https://127.0.0.1:${(ca.address() as { port: number }).port}/dir` };
}

/** A CA's 503 for maintenance, asking to come back in two minutes. */
function answerMaintenance(res: http.ServerResponse): void {
  res.writeHead(503, { 'retry-after': '120', 'content-type': 'application/problem+json' });
  res.end('{"type":"urn:ietf:params:acme:error:serverInternal","detail":"maintenance"}');
}

test('a CA answering 503 with Retry-After is retried no earlier than it asked, and an untrusted CA is reported as such', async (t) => {
  const pki = await makePki();
  const up = await startUpstream();
  let hits = 0;
  const { ca, directory } = await fakeCa(pki, (res) => {
    hits++;
    answerMaintenance(res);
  });
  const proxy = await startProxyFor(t, pki, {
    acme: { directory, caFile: 'fake-ca.pem', termsOfServiceAgreed: true, retryDelay: '100ms', retryMaxDelay: '1s' },
    hosts: { 'a.portico.test': { tls: { acme: true }, routes: [{ upstream: up.url }] } },
  }, [() => ca.close(), () => up.close()]);
  const failed = await waitFor('the failed order', () => proxy.logs.find((l) => l.msg === 'acme order failed'));
  assert.equal(failed.code, 'PORTICO_ACME_FAILED');
  assert.match(String(failed.err), /cannot reach the ACME directory .*: HTTP 503 from the directory/);
  assert.ok(Number(failed.retryInMs) > 110_000, `waits for Retry-After, not retryMaxDelay: ${String(failed.retryInMs)}`);
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(hits, 1, 'no retry before Retry-After');

  // Without the caFile the CA's certificate is not trusted, and the log says so.
  await proxy.reconfigure({
    acme: { directory: directory.replace('/dir', '/other'), termsOfServiceAgreed: true, retryDelay: '100ms', retryMaxDelay: '1s' },
    hosts: { 'a.portico.test': { tls: { acme: true }, routes: [{ upstream: up.url }] } },
  });
  const untrusted = await waitFor('the untrusted failure', () => proxy.logs.find((l) => l.msg === 'acme order failed' && /other/.test(String(l.err))));
  assert.match(String(untrusted.err), /certificate/i);
  t.diagnostic(String(untrusted.err));
});

test('a reload while a request to the CA is in flight does not cut it: the order sees the CA\'s own answer', async (t) => {
  const pki = await makePki();
  const up = await startUpstream();
  let arrived: () => void = () => {};
  const requestArrived = new Promise<void>((r) => (arrived = r));
  let answer: () => void = () => {};
  const answerNow = new Promise<void>((r) => (answer = r));
  const { ca, directory } = await fakeCa(pki, (res) => {
    arrived();
    // The CA answers only after the reload: its connection must still be open by then.
    void answerNow.then(() => answerMaintenance(res));
  });
  const config = (path: string) => ({
    acme: { directory, caFile: 'fake-ca.pem', termsOfServiceAgreed: true, retryDelay: '100ms', retryMaxDelay: '1s' },
    hosts: { 'a.portico.test': { tls: { acme: true as const }, routes: [{ path, upstream: up.url }] } },
  });
  const proxy = await startProxyFor(t, pki, config('/'), [() => ca.closeAllConnections(), () => ca.close(), () => up.close()]);
  await requestArrived;
  // An unrelated change (a route's path): the ACME settings, and the CA's trust, are the same.
  await proxy.reconfigure(config('/app/'));
  await waitFor('the reload applied to acme', () => (proxy.portico.state?.plan.generation ?? 0) >= 2 ? true : undefined);
  await new Promise((r) => setTimeout(r, 200));
  answer();
  const failed = await waitFor('the failed order', () => proxy.logs.find((l) => l.msg === 'acme order failed'));
  assert.match(String(failed.err), /HTTP 503 from the directory/, 'the request to the CA was cut by the reload');
});

test('/status shows each ACME host: the orderer, its orders, its failures and the last error, while it has no certificate', async (t) => {
  const pki = await makePki();
  const up = await startUpstream();
  const leaf = await pki.ca.issue(['localhost'], { ips: ['127.0.0.1'] });
  const ca = https.createServer({ cert: leaf.chain, key: leaf.key }, (_req, res) => {
    res.writeHead(500, { 'content-type': 'text/plain' });
    res.end('down');
  });
  ca.listen(await freePort(), '127.0.0.1');
  await once(ca, 'listening');
  const directory = `https://127.0.0.1:${(ca.address() as { port: number }).port}/dir`;
  await writeFile(join(pki.dir, 'fake-ca.pem'), pki.caPem);
  const token = 'c'.repeat(40);
  await writeFile(join(pki.dir, 'admin.token'), token);
  const adminPort = await freePort();
  const proxy = await startProxyFor(t, pki, {
    admin: { port: adminPort, tokenFile: 'admin.token' },
    acme: { directory, caFile: 'fake-ca.pem', termsOfServiceAgreed: true, retryDelay: '100ms', retryMaxDelay: '200ms' },
    hosts: { 'a.portico.test': { aliases: ['www.a.portico.test'], tls: { acme: true }, routes: [{ upstream: up.url }] } },
  }, [() => ca.close(), () => up.close()]);
  await waitFor('two failed orders', () => (proxy.logs.filter((l) => l.msg === 'acme order failed').length >= 2 ? true : undefined));
  const r = await adminRequest(adminPort, 'GET', '/status', { token });
  assert.equal(r.status, 200);
  const body = JSON.parse(r.text) as { processes: { certificates: unknown[]; acme: { host: string; names: string[]; orderer: boolean; orders: number; failures: number; lastError: string | null; renewAt: string | null }[] }[] };
  const [entry] = body.processes[0]!.acme;
  assert.equal(entry?.host, 'a.portico.test');
  assert.deepEqual(entry.names, ['a.portico.test', 'www.a.portico.test']);
  assert.equal(entry.orderer, true);
  assert.ok(entry.failures >= 2, `failures: ${entry.failures}`);
  assert.equal(entry.orders, 0, 'the directory failed before any order');
  assert.match(String(entry.lastError), /cannot reach the ACME directory .*: HTTP 500 from the directory/);
  assert.equal(entry.renewAt, null);
  assert.deepEqual(body.processes[0]!.certificates, []);
});

test('a certs directory ACME cannot write to is reported in the host\'s status and retried with backoff', async (t) => {
  const pki = await makePki();
  const up = await startUpstream();
  // A file where <certsDir>/acme goes: the orderer lock cannot be created (as on a read-only volume).
  await writeFile(join(pki.dir, 'acme'), 'in the way');
  const proxy = await startProxyFor(t, pki, {
    acme: { directory: 'https://127.0.0.1:9/dir', termsOfServiceAgreed: true, retryDelay: '100ms', retryMaxDelay: '400ms' },
    hosts: { 'a.portico.test': { tls: { acme: true }, routes: [{ upstream: up.url }] } },
  }, [() => up.close()]);
  const checks = await waitFor('three failed checks', () => {
    const failed = proxy.logs.filter((l) => l.msg === 'acme check failed');
    return failed.length >= 3 ? failed : undefined;
  });
  assert.deepEqual(checks.map((l) => l.attempt), [1, 2, 3]);
  assert.ok(Number(checks[2]!.retryInMs) > Number(checks[0]!.retryInMs), `backs off: ${checks.map((l) => String(l.retryInMs)).join(', ')}`);
  const status = proxy.portico.acme?.status('a.portico.test');
  assert.ok((status?.failures ?? 0) >= 3);
  assert.match(String(status?.lastError), /checking the certificate failed: .*(EEXIST|ENOTDIR).*check that .*acme is a writable folder/);
});
