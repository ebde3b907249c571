/**
 * Certificate folders that appear after the watch was set up: an ACME host's folder written by another
 * instance (this one following), and a mounted pair's folder deleted and created again. Both must be
 * served within about a second, not at the once-a-minute poll.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdir, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { makePki, startProxyFor } from './helpers/proxy.js';
import { freePort } from './helpers/net.js';
import { handshake, waitFor } from './helpers/pebble.js';

/** Well below the watcher's once-a-minute poll and the ACME follower's 30 s re-read. */
const PROMPT_MS = 2000;

function fingerprintOf(chainPem: string): string {
  return new X509Certificate(chainPem).fingerprint256;
}

test('an ACME host\'s folder written by the orderer after this follower started is served within a second or two, with no error logged while the key waits for its certificate', async (t) => {
  const pki = await makePki();
  // Another instance holds the orderer lock (its process is alive: this test's parent), so this one follows.
  await mkdir(join(pki.dir, 'acme'), { recursive: true });
  await writeFile(join(pki.dir, 'acme', 'orderer.lock'), JSON.stringify({ pid: process.ppid, host: hostname(), token: 'the-orderer', since: new Date().toISOString() }));
  const caPort = await freePort();
  const proxy = await startProxyFor(t, pki, {
    acme: { directory: `https://127.0.0.1:${caPort}/directory`, termsOfServiceAgreed: true },
    hosts: { 'new.portico.test': { tls: { acme: true }, routes: [{ respond: {} }] } },
  });
  const watcher = proxy.portico.certWatcher;
  await waitFor('the first look at the missing folder', () => (watcher.awaitedThroughParents > 0 ? true : undefined), PROMPT_MS);
  await assert.rejects(handshake(proxy.httpsPort, 'new.portico.test', pki.caPem), 'no certificate yet: handshakes are refused');

  // As the orderer saves: the folder, the key, and a moment later the certificate.
  const leaf = await pki.ca.issue(['new.portico.test']);
  const dir = join(pki.dir, 'acme', 'new.portico.test');
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'key.pem'), leaf.key, { mode: 0o600 });
  await new Promise((r) => setTimeout(r, 300));
  await writeFile(join(dir, 'cert.pem'), leaf.chain);
  const written = Date.now();
  const served = await waitFor('the new certificate', async () => {
    const r = await handshake(proxy.httpsPort, 'new.portico.test', pki.caPem).catch(() => undefined);
    return r?.fingerprint256 === fingerprintOf(leaf.chain) ? r : undefined;
  }, PROMPT_MS);
  t.diagnostic(`served ${Date.now() - written} ms after the certificate was written`);
  assert.equal(served.authorized, true, served.error);
  assert.equal(proxy.portico.acme?.status('new.portico.test')?.orders, 0, 'the follower did not order');
  assert.deepEqual(proxy.logs.filter((l) => Number(l.level) >= 50), [], 'nothing logged as an error');
  assert.equal(watcher.awaitedThroughParents, 0, 'the parent watched while the folder was missing is no longer watched');
});

test('a Kubernetes-style secret folder deleted with its parent, created again empty and then filled is followed at once, its ..data swaps too', async (t) => {
  const pki = await makePki();
  const mount = join(pki.dir, 'mnt');
  const secret = join(mount, 'secret');
  /** As the kubelet does: a timestamped folder with the files, `..data` renamed onto a link to it, the old folder removed. */
  const publish = async (v: number, names: string[]): Promise<string> => {
    const leaf = await pki.ca.issue(names);
    const data = `..2026_12_06_21_0${v}_00.000000001`;
    await mkdir(join(secret, data), { recursive: true });
    await writeFile(join(secret, data, 'tls.key'), leaf.key);
    await writeFile(join(secret, data, 'tls.crt'), leaf.chain);
    await symlink(data, join(secret, '..data_tmp'));
    await rename(join(secret, '..data_tmp'), join(secret, '..data'));
    if (v > 1) await rm(join(secret, `..2026_12_06_21_0${v - 1}_00.000000001`), { recursive: true });
    else {
      await symlink('..data/tls.crt', join(secret, 'tls.crt'));
      await symlink('..data/tls.key', join(secret, 'tls.key'));
    }
    return fingerprintOf(leaf.chain);
  };
  await publish(1, ['k8s.test']);
  const proxy = await startProxyFor(t, pki, { hosts: { 'k8s.test': { tls: { cert: 'mnt/secret/tls.crt', key: 'mnt/secret/tls.key' }, routes: [{ respond: {} }] } } });
  const watcher = proxy.portico.certWatcher;
  const first = (await handshake(proxy.httpsPort, 'k8s.test', pki.caPem)).fingerprint256;
  // Once looked at: the secret folder, and the data folder its links point into.
  await watcher.checkNow();
  assert.equal(watcher.watchedFolders, 2);

  // The volume goes away, parent folder and all: that is reported, and the served certificate stays.
  await rm(mount, { recursive: true });
  await waitFor('the missing files reported', () => proxy.logs.find((l) => l.msg === 'certificate files unreadable, keeping the current certificate'), PROMPT_MS);
  assert.ok(watcher.awaitedThroughParents > 0, 'the missing folder is awaited through its parent');
  assert.equal((await handshake(proxy.httpsPort, 'k8s.test', pki.caPem)).fingerprint256, first);

  // It comes back, empty at first (an operator's mkdir, a volume mounted before it is filled), then with a new
  // certificate, then gets a secret update.
  const errorsBefore = proxy.logs.filter((l) => Number(l.level) >= 50).length;
  await mkdir(secret, { recursive: true });
  await new Promise((r) => setTimeout(r, 300));
  for (const v of [1, 2]) {
    const next = await publish(v, ['k8s.test']);
    const written = Date.now();
    await waitFor(`certificate ${v} of the new volume`, async () => ((await handshake(proxy.httpsPort, 'k8s.test', pki.caPem)).fingerprint256 === next ? true : undefined), PROMPT_MS);
    t.diagnostic(`certificate ${v} served ${Date.now() - written} ms after it was written`);
  }
  assert.deepEqual(proxy.logs.filter((l) => Number(l.level) >= 50).slice(errorsBefore), [], 'nothing refused once the folder is back');
  assert.equal(watcher.awaitedThroughParents, 0, 'no parent is watched any more');
  assert.equal(watcher.watchedFolders, 2, 'the secret folder and its current data folder, as before the volume went away');
});
