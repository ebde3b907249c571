/** ACME against a real Pebble on loopback: issuance over HTTP-01 and TLS-ALPN-01, renewal, CA outages, nonce rejection, restart reuse. */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { accountKeyPath, storedPaths } from '../src/acme/index.js';
import type { ConfigInput } from '../src/config/schema.js';
import { freePort, startUpstream } from './helpers/net.js';
import { handshake, requirePebble, startPebble, startPorticoOn, stopPorticosOf, waitFor, type Pebble, type PebbleOptions } from './helpers/pebble.js';

interface Setup {
  dir: string;
  pebble: Pebble;
  ports: { httpsPort: number; httpPort: number };
  config: (acme?: Partial<NonNullable<ConfigInput['acme']>>, hosts?: string[]) => Omit<ConfigInput, 'listen'>;
}

async function setup(t: TestContext, pebbleOpts: Omit<PebbleOptions, 'dir' | 'httpPort' | 'tlsPort'> = {}): Promise<Setup | undefined> {
  const bin = requirePebble(t);
  if (bin === undefined) return undefined;
  const dir = await mkdtemp(join(tmpdir(), 'portico-acme-'));
  // Runs before the Porticos' own stop hooks (added later): stop them first, or one may still be writing here.
  t.after(async () => {
    await stopPorticosOf(t);
    await rm(dir, { recursive: true, force: true });
  });
  const up = await startUpstream();
  t.after(() => up.close());
  const ports = { httpsPort: await freePort(), httpPort: await freePort() };
  const pebble = await startPebble(t, bin, { dir, httpPort: ports.httpPort, tlsPort: ports.httpsPort, ...pebbleOpts });
  const config: Setup['config'] = (acme = {}, hosts = ['a.portico.test']) => ({
    acme: pebble.acme(acme),
    hosts: Object.fromEntries(hosts.map((h) => [h, { tls: { acme: true as const }, routes: [{ path: '/', upstream: up.url }] }])),
  });
  return { dir, pebble, ports, config };
}

function logged(logs: Record<string, unknown>[], msg: string, host?: string): Record<string, unknown> | undefined {
  return logs.find((l) => l.msg === msg && (host === undefined || l.host === host));
}

test('a host with tls.acme gets a certificate over http-01 that verifies against the CA root, and a restart reuses it without ordering', async (t) => {
  const s = await setup(t);
  if (s === undefined) return;
  const proxy = await startPorticoOn(t, s.dir, s.ports, s.config());
  // Until the first certificate arrives, handshakes for the name are refused.
  await assert.rejects(handshake(s.ports.httpsPort, 'a.portico.test'));
  await waitFor('issuance', () => logged(proxy.logs, 'acme certificate issued', 'a.portico.test'), 15_000);
  const root = await s.pebble.root();
  const served = await handshake(s.ports.httpsPort, 'a.portico.test', root);
  assert.equal(served.authorized, true, served.error);
  assert.ok(logged(proxy.logs, 'acme http-01 challenge answered'), 'the CA fetched the token from the http listener');
  const paths = storedPaths(s.dir, 'a.portico.test');
  // Served first, written after (so a full disk cannot keep a new certificate from serving): wait for the files.
  const keyStat = await waitFor('the saved key', () => stat(paths.keyFile).catch(() => undefined), 5000);
  assert.equal(keyStat.mode & 0o777, 0o600);
  assert.equal((await stat(accountKeyPath(s.dir, s.pebble.directoryUrl))).mode & 0o777, 0o600);
  await proxy.stop();

  const again = await startPorticoOn(t, s.dir, s.ports, s.config());
  await waitFor('the stored certificate', () => logged(again.logs, 'acme certificate valid, renewal scheduled', 'a.portico.test'));
  const reused = await handshake(s.ports.httpsPort, 'a.portico.test', root);
  assert.equal(reused.fingerprint256, served.fingerprint256);
  assert.equal(reused.authorized, true);
  assert.equal(again.portico.acme?.status('a.portico.test')?.orders, 0);
  assert.equal(logged(again.logs, 'acme order started'), undefined);
});

test('a host gets its certificate over tls-alpn-01 on the https listener', async (t) => {
  const s = await setup(t);
  if (s === undefined) return;
  const proxy = await startPorticoOn(t, s.dir, s.ports, s.config({ challenge: 'tls-alpn-01' }, ['b.portico.test']));
  await waitFor('issuance', () => logged(proxy.logs, 'acme certificate issued', 'b.portico.test'), 15_000);
  const served = await handshake(s.ports.httpsPort, 'b.portico.test', await s.pebble.root());
  assert.equal(served.authorized, true, served.error);
  assert.equal(logged(proxy.logs, 'acme http-01 challenge answered'), undefined);
});

test('a certificate is renewed when its renewal time comes and the served fingerprint changes', async (t) => {
  const s = await setup(t, { validitySeconds: 12 });
  if (s === undefined) return;
  const proxy = await startPorticoOn(t, s.dir, s.ports, s.config({ renewBefore: '75%' }));
  await waitFor('issuance', () => logged(proxy.logs, 'acme certificate issued', 'a.portico.test'), 15_000);
  const root = await s.pebble.root();
  const first = await handshake(s.ports.httpsPort, 'a.portico.test', root);
  assert.equal(first.authorized, true, first.error);
  const renewed = await waitFor('renewal', () => proxy.logs.find((l) => l.msg === 'acme certificate issued' && l.renewal === true), 15_000);
  assert.equal(renewed.host, 'a.portico.test');
  const second = await handshake(s.ports.httpsPort, 'a.portico.test', root);
  assert.equal(second.authorized, true, second.error);
  assert.notEqual(second.fingerprint256, first.fingerprint256);
  assert.equal(second.fingerprint256, renewed.fingerprint256);
});

test('while the CA is down the old certificate keeps serving, the log names the real cause, and renewal succeeds once the CA is back', async (t) => {
  const s = await setup(t, { validitySeconds: 20 });
  if (s === undefined) return;
  const proxy = await startPorticoOn(t, s.dir, s.ports, s.config({ renewBefore: '75%' }));
  await waitFor('issuance', () => logged(proxy.logs, 'acme certificate issued', 'a.portico.test'), 15_000);
  const oldRoot = await s.pebble.root();
  const first = await handshake(s.ports.httpsPort, 'a.portico.test', oldRoot);
  await s.pebble.stop();
  const failed = await waitFor('a failed renewal', () => logged(proxy.logs, 'acme renewal failed, keeping the current certificate'), 15_000);
  assert.equal(failed.code, 'PORTICO_ACME_FAILED');
  assert.match(String(failed.err), /cannot reach the ACME directory https:\/\/127\.0\.0\.1:\d+\/dir: .*ECONNREFUSED/);
  const during = await handshake(s.ports.httpsPort, 'a.portico.test', oldRoot);
  assert.equal(during.fingerprint256, first.fingerprint256);
  assert.equal(during.authorized, true, during.error);
  await s.pebble.restart();
  const renewed = await waitFor('renewal after the CA came back', () => proxy.logs.find((l) => l.msg === 'acme certificate issued' && l.renewal === true), 10_000);
  const after = await handshake(s.ports.httpsPort, 'a.portico.test', await s.pebble.root());
  assert.equal(after.authorized, true, after.error);
  assert.equal(after.fingerprint256, renewed.fingerprint256);
  assert.notEqual(after.fingerprint256, first.fingerprint256);
});

test('issuance survives a CA that rejects half of the nonces', async (t) => {
  const s = await setup(t, { nonceReject: 50 });
  if (s === undefined) return;
  const proxy = await startPorticoOn(t, s.dir, s.ports, s.config());
  await waitFor('issuance', () => logged(proxy.logs, 'acme certificate issued', 'a.portico.test'), 20_000);
  const served = await handshake(s.ports.httpsPort, 'a.portico.test', await s.pebble.root());
  assert.equal(served.authorized, true, served.error);
});

test('a host added to the config is ordered without a restart and a removed one is no longer renewed', async (t) => {
  const s = await setup(t);
  if (s === undefined) return;
  const proxy = await startPorticoOn(t, s.dir, s.ports, s.config());
  await waitFor('issuance', () => logged(proxy.logs, 'acme certificate issued', 'a.portico.test'), 15_000);
  await proxy.reconfigure(s.config({}, ['a.portico.test', 'c.portico.test']));
  await waitFor('issuance for the new host', () => logged(proxy.logs, 'acme certificate issued', 'c.portico.test'), 15_000);
  const served = await handshake(s.ports.httpsPort, 'c.portico.test', await s.pebble.root());
  assert.equal(served.authorized, true, served.error);
  assert.equal(proxy.logs.filter((l) => l.msg === 'acme order started' && l.host === 'a.portico.test').length, 1);
  await proxy.reconfigure(s.config({}, ['c.portico.test']));
  await waitFor('removal', () => logged(proxy.logs, 'acme host removed, no longer renewed', 'a.portico.test'));
  assert.equal(proxy.portico.acme?.status('a.portico.test'), undefined);
});

test('two instances sharing a certs directory: one orders, the other serves what it wrote without ordering', async (t) => {
  const s = await setup(t);
  if (s === undefined) return;
  const orderer = await startPorticoOn(t, s.dir, s.ports, s.config());
  await waitFor('the order', () => logged(orderer.logs, 'acme order started', 'a.portico.test'), 10_000);
  const otherDir = join(s.dir, 'second');
  await mkdir(otherDir);
  const otherPorts = { httpsPort: await freePort(), httpPort: await freePort() };
  // Same certsDir, its own config file and ports.
  const follower = await startPorticoOn(t, otherDir, otherPorts, { ...s.config(), certsDir: s.dir });
  const issued = await waitFor('issuance', () => logged(orderer.logs, 'acme certificate issued', 'a.portico.test'), 15_000);
  const root = await s.pebble.root();
  // The follower sees the files through its certificate watcher, which waits for the host's folder to appear
  // (then looks again 500 ms after watching it). 15 s: one CI run with four test files at a time took over 5 s;
  // if it ever times out, its lines about certificates say how far it got.
  const served = await waitFor('the follower serving it', async () => {
    const r = await handshake(otherPorts.httpsPort, 'a.portico.test', root).catch(() => undefined);
    return r?.fingerprint256 === issued.fingerprint256 ? r : undefined;
  }, 15_000).catch((err: Error) => {
    const lines = follower.logs.filter((l) => /certificate|acme/.test(String(l.msg)));
    throw new Error(`${err.message}; the follower's lines about certificates: ${JSON.stringify(lines)}`);
  });
  assert.equal(served.authorized, true, served.error);
  assert.equal(logged(follower.logs, 'acme order started'), undefined);
  assert.equal(follower.portico.acme?.status('a.portico.test')?.orders, 0);
});

test('a certificate the disk refuses is served from memory and its save retried, without ordering it again', async (t) => {
  const s = await setup(t);
  if (s === undefined) return;
  const paths = storedPaths(s.dir, 'a.portico.test');
  // A file where the host's folder goes: every write there fails (as on a full or read-only disk).
  await mkdir(join(s.dir, 'acme'), { recursive: true });
  await writeFile(paths.dir, 'in the way');
  const proxy = await startPorticoOn(t, s.dir, s.ports, s.config());
  const unsaved = await waitFor('the failed save', () => logged(proxy.logs, 'acme certificate issued but not saved, serving it from memory; retrying the save'), 15_000);
  assert.equal(unsaved.dir, paths.dir);
  const issued = logged(proxy.logs, 'acme certificate issued', 'a.portico.test');
  const root = await s.pebble.root();
  const served = await handshake(s.ports.httpsPort, 'a.portico.test', root);
  assert.equal(served.authorized, true, served.error);
  assert.equal(served.fingerprint256, issued?.fingerprint256);
  assert.match(String(proxy.portico.acme?.status('a.portico.test')?.lastError), /issued but cannot be written to .*a\.portico\.test.*make that folder writable/);
  // A few retries later, the obstacle goes away.
  await waitFor('a second failed save', () => (proxy.logs.filter((l) => l.msg === unsaved.msg).length >= 2 ? true : undefined), 5000);
  await rm(paths.dir);
  await waitFor('the save', () => logged(proxy.logs, 'acme certificate saved', 'a.portico.test'), 5000);
  assert.equal((await stat(paths.keyFile)).mode & 0o777, 0o600);
  assert.equal(new X509Certificate(await readFile(paths.certFile)).fingerprint256, served.fingerprint256);
  const status = proxy.portico.acme?.status('a.portico.test');
  assert.equal(status?.orders, 1, 'ordered once');
  assert.equal(status?.lastError, undefined);
  assert.equal(proxy.logs.filter((l) => l.msg === 'acme order started').length, 1);
});

test('a damaged stored certificate is reported with its reason at start, and a new one is ordered and served', async (t) => {
  const s = await setup(t);
  if (s === undefined) return;
  const proxy = await startPorticoOn(t, s.dir, s.ports, s.config());
  await waitFor('issuance', () => logged(proxy.logs, 'acme certificate issued', 'a.portico.test'), 15_000);
  await proxy.stop();
  const paths = storedPaths(s.dir, 'a.portico.test');
  // A crash or a bad copy left half of the certificate.
  const pem = await readFile(paths.certFile, 'utf8');
  await writeFile(paths.certFile, pem.slice(0, 40));
  const again = await startPorticoOn(t, s.dir, s.ports, s.config());
  const warned = await waitFor('the warning', () => logged(again.logs, 'stored acme certificate not usable, a new one will be ordered', 'a.portico.test'));
  assert.equal(warned.level, 40);
  assert.match(String(warned.reason), /cert\.pem: the certificate is cut short/);
  const issued = await waitFor('the new certificate', () => logged(again.logs, 'acme certificate issued', 'a.portico.test'), 15_000);
  const served = await handshake(s.ports.httpsPort, 'a.portico.test', await s.pebble.root());
  assert.equal(served.authorized, true, served.error);
  assert.equal(served.fingerprint256, issued.fingerprint256);
});
