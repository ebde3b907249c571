/**
 * What the operator sees of OCSP stapling: the admin API's /status and /metrics, `portico check` and the log at load,
 * against OpenSSL's own responder on loopback (test/helpers/ocsp.ts).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { checkConfigFile } from '../src/cli/check-config.js';
import { renderMetrics } from '../src/admin/metrics.js';
import type { Snapshot } from '../src/admin/snapshot.js';
import { OCSP_CHAIN_WARNING } from '../src/tls/cert-pair.js';
import type { OcspStatus } from '../src/tls/ocsp-stapler.js';
import { adminRequest, metricValue } from './helpers/admin.js';
import { freePort } from './helpers/net.js';
import { hostsOf, makeCa, stapledFor, startResponder } from './helpers/ocsp.js';
import { startProxyFor, waitForLog } from './helpers/proxy.js';

const TOKEN = 'c'.repeat(40);

/** other.test served from other-leaf.pem: the leaf alone, without the CA that issued it. */
const LONE_LEAF = { 'other.test': { tls: { cert: 'other-leaf.pem', key: 'other-key.pem' }, routes: [{ path: '/', respond: { body: 'other' } }] } };

test('/status shows each certificate\'s OCSP stapling state, and /metrics whether it is stapled and its nextUpdate', async (t) => {
  const ca = await makeCa(t);
  if (ca === undefined) return;
  await startResponder(t, ca);
  await writeFile(ca.file('admin.token'), TOKEN);
  const adminPort = await freePort();
  const proxy = await startProxyFor(t, ca.pki, { admin: { port: adminPort, tokenFile: 'admin.token' }, hosts: { ...hostsOf(['good', 'revoked']), ...LONE_LEAF } });
  const line = await waitForLog(proxy, 'stapling good.test', stapledFor('good.test'), 0, 10_000);
  await waitForLog(proxy, 'of the revoked certificate', (l) => String(l['msg']).startsWith('certificate revoked'), 0, 10_000);

  const status = await adminRequest(adminPort, 'GET', '/status', { token: TOKEN });
  assert.equal(status.status, 200);
  const p = (JSON.parse(status.text) as { processes: { ocsp: OcspStatus[]; certificates: { id: string; subjectAltName: string }[] }[] }).processes[0]!;
  assert.equal(p.ocsp.length, 3, 'the three certificates that name a responder');
  const of = (host: string): OcspStatus => p.ocsp.find((o) => o.hosts.includes(host))!;
  const url = `http://127.0.0.1:${ca.port}`;
  const good = of('good.test');
  assert.deepEqual({ ...good, nextFetchAt: null }, { certificate: good.certificate, hosts: ['good.test'], url, status: 'good', thisUpdate: line['thisUpdate'], nextUpdate: line['nextUpdate'], nextFetchAt: null, lastError: null, failures: 0 });
  const refreshAt = (line['time'] as number) + (line['refreshInMs'] as number);
  assert.ok(Math.abs(Date.parse(good.nextFetchAt!) - refreshAt) < 1_000, `fetched next at half its validity (${good.nextFetchAt}, about ${new Date(refreshAt).toISOString()})`);
  const revoked = of('revoked.test');
  assert.equal(revoked.status, 'revoked');
  assert.equal(typeof revoked.nextUpdate, 'string');
  assert.equal(revoked.lastError, null);
  const lone = of('other.test');
  assert.deepEqual({ ...lone, certificate: '' }, { certificate: '', hosts: ['other.test'], url, status: 'none', thisUpdate: null, nextUpdate: null, nextFetchAt: null, lastError: 'the issuer certificate is not in the chain', failures: 0 });

  const page = (await adminRequest(adminPort, 'GET', '/metrics', { token: TOKEN })).text;
  assert.match(page, /# TYPE portico_certificate_ocsp_stapled gauge/);
  assert.match(page, /# TYPE portico_certificate_ocsp_next_update_timestamp_seconds gauge/);
  const labels = (o: OcspStatus): string => `{certificate="${o.certificate}",names="${p.certificates.find((c) => c.id === o.certificate)!.subjectAltName}"}`;
  assert.equal(metricValue(page, `portico_certificate_ocsp_stapled${labels(good)}`), 1);
  assert.equal(metricValue(page, `portico_certificate_ocsp_stapled${labels(revoked)}`), 0);
  assert.equal(metricValue(page, `portico_certificate_ocsp_stapled${labels(lone)}`), 0);
  assert.equal(metricValue(page, `portico_certificate_ocsp_next_update_timestamp_seconds${labels(good)}`), Math.floor(Date.parse(line['nextUpdate'] as string) / 1000));
  assert.equal(metricValue(page, `portico_certificate_ocsp_next_update_timestamp_seconds${labels(revoked)}`), undefined, 'nothing stapled, no nextUpdate');
  assert.equal(page.split('\n').filter((l) => l.startsWith('portico_certificate_ocsp_stapled{')).length, 3, 'certificates without a responder have no line');
});

test('with workers, /metrics counts a certificate stapled only when every process staples it, and gives the earliest nextUpdate', () => {
  const snapshotOf = (pid: number, ocsp: OcspStatus[]): Snapshot => ({
    pid,
    startedAt: '2026-01-01T00:00:00.000Z',
    generation: 1,
    lastReload: { ok: true, at: undefined, issues: undefined },
    routes: [],
    upstreams: [],
    certificates: [{ id: 'a', subjectAltName: 'DNS:a.test', issuer: 'CN=CA', notAfter: '2030-01-01T00:00:00.000Z' }],
    ocsp,
    acme: [],
    streams: [],
    streamTargets: [],
    cache: { entries: 0, bytes: 0, maxBytes: 0, hits: 0, misses: 0, stores: 0, evictions: 0 },
    rssBytes: 0,
    cpuSeconds: 0,
  });
  const state = (status: OcspStatus['status'], nextUpdate: string | null): OcspStatus => ({ certificate: 'a', hosts: ['a.test'], url: 'http://ocsp.test', status, thisUpdate: null, nextUpdate, nextFetchAt: null, lastError: null, failures: 0 });
  const stapled = 'portico_certificate_ocsp_stapled{certificate="a",names="DNS:a.test"}';
  const next = 'portico_certificate_ocsp_next_update_timestamp_seconds{certificate="a",names="DNS:a.test"}';
  const both = renderMetrics([snapshotOf(1, [state('good', '2030-01-02T00:00:00.000Z')]), snapshotOf(2, [state('good', '2030-01-01T00:00:00.000Z')])]);
  assert.equal(metricValue(both, stapled), 1);
  assert.equal(metricValue(both, next), Date.parse('2030-01-01T00:00:00.000Z') / 1000);
  const one = renderMetrics([snapshotOf(1, [state('good', '2030-01-02T00:00:00.000Z')]), snapshotOf(2, [state('none', null)])]);
  assert.equal(metricValue(one, stapled), 0, 'a worker whose fetch failed serves without a staple');
  assert.equal(metricValue(one, next), Date.parse('2030-01-02T00:00:00.000Z') / 1000);
});

test('a certificate naming an OCSP responder whose file lacks its issuer gets a warning from portico check and at load, and none with stapling off', async (t) => {
  const ca = await makeCa(t);
  if (ca === undefined) return;
  const file = ca.file('portico.json');
  const config = { certsDir: ca.pki.dir, hosts: { ...hostsOf(['good']), ...LONE_LEAF } };
  await writeFile(file, JSON.stringify(config));
  const checked = await checkConfigFile(file);
  assert.deepEqual(checked.issues, []);
  assert.deepEqual(checked.warnings, [`${ca.file('other-leaf.pem')}: ${OCSP_CHAIN_WARNING} (responder: http://127.0.0.1:${ca.port}, issuer: CN=OCSP Test CA)`], 'good.pem holds its issuer: no warning');
  // The CLI prints it as a warning line and passes.
  const main = fileURLToPath(new URL('../src/main.js', import.meta.url));
  const cli = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, [main, 'check', file], (err, stdout, stderr) => resolve({ code: err === null ? 0 : Number(err.code), stdout, stderr }));
  });
  assert.equal(cli.code, 0, cli.stderr);
  assert.equal(cli.stderr, `warning: ${checked.warnings[0]!}\n`);
  await writeFile(file, JSON.stringify({ ...config, listen: { https: { port: 8443, ocspStapling: false } } }));
  const off = await checkConfigFile(file);
  assert.deepEqual(off.issues, []);
  assert.deepEqual(off.warnings, [], 'nothing to warn of with stapling off');
  // At load, once, with the host and the file.
  const proxy = await startProxyFor(t, ca.pki, { hosts: config.hosts });
  const warn = await waitForLog(proxy, 'of the missing issuer', (l) => l['msg'] === OCSP_CHAIN_WARNING, 0, 10_000);
  assert.equal(warn['level'], 40);
  assert.equal(warn['host'], 'other.test');
  assert.equal(warn['certFile'], ca.file('other-leaf.pem'));
  assert.equal(warn['url'], `http://127.0.0.1:${ca.port}`);
  await proxy.portico.reload();
  assert.equal(proxy.logs.filter((l) => l['msg'] === OCSP_CHAIN_WARNING).length, 1, 'said once per certificate, not at every reload');
});
