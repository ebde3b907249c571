/** Mounted certificates: rotation under a running proxy (plain write, atomic rename, symlink swap) and refusal of broken replacements. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ConfigInput } from '../src/config/schema.js';
import { makePki, startProxyFor, type TestPki } from './helpers/proxy.js';
import { startUpstream } from './helpers/net.js';
import { handshake, waitFor } from './helpers/pebble.js';

async function served(port: number, sni: string | undefined, ca: string): Promise<string> {
  const r = await handshake(port, sni, ca);
  assert.equal(r.authorized, true, r.error);
  return r.fingerprint256;
}

/** Issues a fresh pair for `names`, returning its PEMs and fingerprint-to-be (read back from a handshake later). */
async function freshPair(pki: TestPki, names: string[], opts?: { days?: number; notBefore?: Date }): Promise<{ cert: string; key: string }> {
  const leaf = await pki.ca.issue(names, opts);
  return { cert: leaf.chain, key: leaf.key };
}

test('a mounted pair replaced by plain write, atomic rename or symlink swap is served on the next handshake, default host included', async (t) => {
  const pki = await makePki();
  const up = await startUpstream();
  await pki.issue('plain', ['plain.test']);
  await pki.issue('atomic', ['atomic.test']);
  // Kubernetes secret volume layout: tls.crt -> ..data/tls.crt, ..data -> ..<timestamp>.
  const k8s = join(pki.dir, 'k8s');
  const first = await freshPair(pki, ['k8s.test']);
  await mkdir(join(k8s, '..v1'), { recursive: true });
  await writeFile(join(k8s, '..v1', 'tls.crt'), first.cert);
  await writeFile(join(k8s, '..v1', 'tls.key'), first.key);
  await symlink('..v1', join(k8s, '..data'));
  await symlink('..data/tls.crt', join(k8s, 'tls.crt'));
  await symlink('..data/tls.key', join(k8s, 'tls.key'));
  const proxy = await startProxyFor(t, pki, {
    defaultHost: 'plain.test',
    hosts: {
      'plain.test': { tls: { cert: 'plain.pem', key: 'plain-key.pem' }, routes: [{ upstream: up.url }] },
      'atomic.test': { tls: { cert: 'atomic.pem', key: 'atomic-key.pem' }, routes: [{ upstream: up.url }] },
      'k8s.test': { tls: { cert: 'k8s/tls.crt', key: 'k8s/tls.key' }, routes: [{ upstream: up.url }] },
    },
  }, [() => up.close()]);
  const port = proxy.httpsPort;
  const ca = pki.caPem;

  // A kept-open connection goes on with the old certificate.
  const before = await served(port, 'plain.test', ca);
  const noSni = await served(port, undefined, ca);
  assert.equal(noSni, before);
  const next = await freshPair(pki, ['plain.test']);
  await writeFile(join(pki.dir, 'plain.pem'), next.cert);
  await writeFile(join(pki.dir, 'plain-key.pem'), next.key);
  const afterPlain = await waitFor('plain write', async () => {
    const fp = await served(port, 'plain.test', ca);
    return fp !== before ? fp : undefined;
  }, 5000);
  // Clients without SNI get the default host's new certificate too.
  assert.equal(await served(port, undefined, ca), afterPlain);

  const atomicBefore = await served(port, 'atomic.test', ca);
  const a2 = await freshPair(pki, ['atomic.test']);
  await writeFile(join(pki.dir, '.atomic-key.tmp'), a2.key);
  await writeFile(join(pki.dir, '.atomic.tmp'), a2.cert);
  await rename(join(pki.dir, '.atomic-key.tmp'), join(pki.dir, 'atomic-key.pem'));
  await rename(join(pki.dir, '.atomic.tmp'), join(pki.dir, 'atomic.pem'));
  await waitFor('atomic rename', async () => ((await served(port, 'atomic.test', ca)) !== atomicBefore ? true : undefined), 5000);

  const k8sBefore = await served(port, 'k8s.test', ca);
  const second = await freshPair(pki, ['k8s.test']);
  await mkdir(join(k8s, '..v2'));
  await writeFile(join(k8s, '..v2', 'tls.crt'), second.cert);
  await writeFile(join(k8s, '..v2', 'tls.key'), second.key);
  await symlink('..v2', join(k8s, '..data_tmp'));
  await rename(join(k8s, '..data_tmp'), join(k8s, '..data'));
  await rm(join(k8s, '..v1'), { recursive: true });
  await waitFor('symlink swap', async () => ((await served(port, 'k8s.test', ca)) !== k8sBefore ? true : undefined), 5000);
  assert.ok(proxy.logs.some((l) => l.msg === 'certificate reloaded' && String(l.certFile).endsWith('k8s/tls.crt')));
  // Each update leaves its old folder unwatched: the count stays, however many updates come.
  const watched = proxy.portico.certWatcher.watchedFolders;
  for (let v = 3; v <= 6; v++) {
    const was = await served(port, 'k8s.test', ca);
    const pair = await freshPair(pki, ['k8s.test']);
    await mkdir(join(k8s, `..v${v}`));
    await writeFile(join(k8s, `..v${v}`, 'tls.crt'), pair.cert);
    await writeFile(join(k8s, `..v${v}`, 'tls.key'), pair.key);
    await symlink(`..v${v}`, join(k8s, '..data_tmp'));
    await rename(join(k8s, '..data_tmp'), join(k8s, '..data'));
    await rm(join(k8s, `..v${v - 1}`), { recursive: true });
    await waitFor(`symlink swap ${v}`, async () => ((await served(port, 'k8s.test', ca)) !== was ? true : undefined), 5000);
  }
  assert.equal(proxy.portico.certWatcher.watchedFolders, watched);
});

test('a broken replacement (garbage, mismatched key, expired, wrong name) is refused with a log line naming the file and the old certificate keeps serving', async (t) => {
  const pki = await makePki();
  const up = await startUpstream();
  await pki.issue('site', ['site.test']);
  const proxy = await startProxyFor(t, pki, { hosts: { 'site.test': { tls: { cert: 'site.pem', key: 'site-key.pem' }, routes: [{ upstream: up.url }] } } }, [() => up.close()]);
  const port = proxy.httpsPort;
  const certFile = join(pki.dir, 'site.pem');
  const keyFile = join(pki.dir, 'site-key.pem');
  const good = await served(port, 'site.test', pki.caPem);
  const goodKey = await readFile(keyFile);
  const other = await freshPair(pki, ['site.test']);
  const expired = await freshPair(pki, ['site.test'], { notBefore: new Date(Date.now() - 10 * 86_400_000), days: 2 });
  const wrongName = await freshPair(pki, ['other.test']);
  const cases: { what: string; cert: string; key: string | Buffer; file: string; reason: RegExp }[] = [
    { what: 'garbage', cert: 'not a certificate\n', key: goodKey, file: certFile, reason: /not a PEM certificate/ },
    { what: 'mismatched key', cert: other.cert, key: goodKey, file: keyFile, reason: /does not match the certificate/ },
    { what: 'expired', cert: expired.cert, key: expired.key, file: certFile, reason: /expired/ },
    { what: 'wrong name', cert: wrongName.cert, key: wrongName.key, file: certFile, reason: /does not cover "site.test"/ },
  ];
  for (const c of cases) {
    const seen = proxy.logs.length;
    await writeFile(keyFile, c.key);
    await writeFile(certFile, c.cert);
    const line = await waitFor(`refusal of ${c.what}`, () =>
      proxy.logs.slice(seen).find((l) => l.msg === 'certificate change refused, keeping the current certificate'), 5000);
    assert.equal(line.level, 50);
    assert.match(String(line.reason), c.reason, c.what);
    assert.ok(String(line.reason).includes(c.file), `${c.what}: the log names ${c.file}: ${String(line.reason)}`);
    assert.equal(await served(port, 'site.test', pki.caPem), good, `${c.what}: the old certificate still serves`);
  }
});

test('a mounted certificate close to expiry is served with a warning in the log', async (t) => {
  const pki = await makePki();
  const up = await startUpstream();
  await pki.issue('soon', ['soon.test'], { days: 5 });
  const proxy = await startProxyFor(t, pki, { hosts: { 'soon.test': { tls: { cert: 'soon.pem', key: 'soon-key.pem' }, routes: [{ upstream: up.url }] } } }, [() => up.close()]);
  const line = await waitFor('expiry warning', () => proxy.logs.find((l) => l.msg === 'certificate expires soon, replace it'), 2000);
  assert.equal(line.level, 40);
  assert.equal(line.daysLeft, 4);
  assert.ok(String(line.certFile).endsWith('soon.pem'));
});

test('files changing next to a certificate (a busy log, say) cost no certificate reads; the pair\'s own files still do', async (t) => {
  const pki = await makePki();
  const up = await startUpstream();
  await pki.issue('site', ['site.test']);
  const proxy = await startProxyFor(t, pki, { hosts: { 'site.test': { tls: { cert: 'site.pem', key: 'site-key.pem' }, routes: [{ upstream: up.url }] } } }, [() => up.close()]);
  const watcher = proxy.portico.certWatcher;
  await waitFor('the initial check', () => (watcher.checks > 0 ? true : undefined), 2000);
  await new Promise((r) => setTimeout(r, 300));
  const before = watcher.checks;
  // 200 writes over about a second to a file in the certificates' folder, then quiet past the debounce.
  const busy = join(pki.dir, 'access.log');
  for (let i = 0; i < 200; i++) {
    await writeFile(busy, `line ${i}\n`, { flag: 'a' });
    await new Promise((r) => setTimeout(r, 5));
  }
  await writeFile(join(pki.dir, 'notes.txt'), 'unrelated');
  await new Promise((r) => setTimeout(r, 400));
  assert.equal(watcher.checks, before, 'no pair was re-read for unrelated files');
  // A new pair written over the served one is still picked up.
  const next = await freshPair(pki, ['site.test']);
  const old = await served(proxy.httpsPort, 'site.test', pki.caPem);
  await writeFile(join(pki.dir, 'site-key.pem'), next.key);
  await writeFile(join(pki.dir, 'site.pem'), next.cert);
  await waitFor('the new pair', async () => ((await served(proxy.httpsPort, 'site.test', pki.caPem)) !== old ? true : undefined), 5000);
  assert.ok(watcher.checks > before);
});

test('a certificate copied in place and seen half-written, or deleted and then re-created, is served once complete with no refusal logged', async (t) => {
  const pki = await makePki();
  await pki.issue('site', ['site.test']);
  const proxy = await startProxyFor(t, pki, { hosts: { 'site.test': { tls: { cert: 'site.pem', key: 'site-key.pem' }, routes: [{ respond: {} }] } } });
  const port = proxy.httpsPort;
  const certFile = join(pki.dir, 'site.pem');
  const keyFile = join(pki.dir, 'site-key.pem');
  const refusals = (): Record<string, unknown>[] => proxy.logs.filter((l) => l.level === 50 && /refused|unreadable/.test(String(l.msg)));

  // A slow copy: the key, then half the chain, a pause past the watcher's debounce, then the rest.
  const before = await served(port, 'site.test', pki.caPem);
  const next = await freshPair(pki, ['site.test']);
  await writeFile(keyFile, next.key);
  await writeFile(certFile, next.cert.slice(0, 300));
  await new Promise((r) => setTimeout(r, 250));
  await writeFile(certFile, next.cert);
  const copied = await waitFor('the copied pair', async () => {
    const fp = await served(port, 'site.test', pki.caPem);
    return fp !== before ? fp : undefined;
  }, 5000);
  // Past the settle re-read of the half-written file: still nothing refused.
  await new Promise((r) => setTimeout(r, 700));
  assert.deepEqual(refusals(), []);

  // Deleted, then re-created a moment later (rm; cp): the old pair serves meanwhile, the new one after.
  const third = await freshPair(pki, ['site.test']);
  await rm(certFile);
  await rm(keyFile);
  await new Promise((r) => setTimeout(r, 250));
  assert.equal(await served(port, 'site.test', pki.caPem), copied, 'the served pair stays while its files are gone');
  await writeFile(keyFile, third.key);
  await writeFile(certFile, third.cert);
  await waitFor('the re-created pair', async () => ((await served(port, 'site.test', pki.caPem)) !== copied ? true : undefined), 5000);
  await new Promise((r) => setTimeout(r, 700));
  assert.deepEqual(refusals(), []);
});

test('a Kubernetes secret volume swapped again and again is followed each time, its old data folders gone', async (t) => {
  const pki = await makePki();
  const k8s = join(pki.dir, 'secret');
  const write = async (v: number): Promise<void> => {
    const pair = await freshPair(pki, ['k8s.test']);
    await mkdir(join(k8s, `..2026_12_06_17_0${v}_00.000000001`), { recursive: true });
    await writeFile(join(k8s, `..2026_12_06_17_0${v}_00.000000001`, 'tls.key'), pair.key);
    await writeFile(join(k8s, `..2026_12_06_17_0${v}_00.000000001`, 'tls.crt'), pair.cert);
  };
  await write(1);
  await symlink('..2026_12_06_17_01_00.000000001', join(k8s, '..data'));
  await symlink('..data/tls.crt', join(k8s, 'tls.crt'));
  await symlink('..data/tls.key', join(k8s, 'tls.key'));
  const proxy = await startProxyFor(t, pki, { hosts: { 'k8s.test': { tls: { cert: 'secret/tls.crt', key: 'secret/tls.key' }, routes: [{ respond: {} }] } } });
  let current = await served(proxy.httpsPort, 'k8s.test', pki.caPem);
  for (let v = 2; v <= 4; v++) {
    // As the kubelet does: a new timestamped folder, a ..data_tmp link renamed over ..data, the old folder removed.
    await write(v);
    await symlink(`..2026_12_06_17_0${v}_00.000000001`, join(k8s, '..data_tmp'));
    await rename(join(k8s, '..data_tmp'), join(k8s, '..data'));
    await rm(join(k8s, `..2026_12_06_17_0${v - 1}_00.000000001`), { recursive: true });
    const was = current;
    current = await waitFor(`swap ${v}`, async () => {
      const fp = await served(proxy.httpsPort, 'k8s.test', pki.caPem);
      return fp !== was ? fp : undefined;
    }, 5000);
  }
  assert.equal(proxy.logs.filter((l) => l.level === 50).length, 0, JSON.stringify(proxy.logs.filter((l) => l.level === 50)));
});

test('a certificate folder replaced whole (the new folder renamed over the old) is served, and later writes in it are seen at once', async (t) => {
  const pki = await makePki();
  const dir = join(pki.dir, 'app');
  const fill = async (where: string): Promise<void> => {
    const pair = await freshPair(pki, ['app.test']);
    await mkdir(where, { recursive: true });
    await writeFile(join(where, 'privkey.pem'), pair.key);
    await writeFile(join(where, 'fullchain.pem'), pair.cert);
  };
  await fill(dir);
  const proxy = await startProxyFor(t, pki, { hosts: { 'app.test': { tls: { cert: 'app/fullchain.pem', key: 'app/privkey.pem' }, routes: [{ respond: {} }] } } });
  const first = await served(proxy.httpsPort, 'app.test', pki.caPem);
  await fill(`${dir}.new`);
  await rm(dir, { recursive: true });
  await rename(`${dir}.new`, dir);
  const second = await waitFor('the replaced folder', async () => {
    const fp = await served(proxy.httpsPort, 'app.test', pki.caPem);
    return fp !== first ? fp : undefined;
  }, 5000);
  // The watch follows the new folder: a plain write in it is seen well before the once-a-minute poll.
  await fill(dir);
  await waitFor('a write in the new folder', async () => ((await served(proxy.httpsPort, 'app.test', pki.caPem)) !== second ? true : undefined), 5000);
});

test('one pair replaced in a folder of many is the only one read again', async (t) => {
  const pki = await makePki();
  const up = await startUpstream();
  const hosts: NonNullable<ConfigInput['hosts']> = {};
  for (let i = 0; i < 30; i++) {
    await pki.issue(`s${i}`, [`s${i}.test`]);
    hosts[`s${i}.test`] = { tls: { cert: `s${i}.pem`, key: `s${i}-key.pem` }, routes: [{ upstream: up.url }] };
  }
  const proxy = await startProxyFor(t, pki, { hosts }, [() => up.close()]);
  const watcher = proxy.portico.certWatcher;
  await waitFor('the initial checks', () => (watcher.checks >= 30 ? true : undefined), 5000);
  await new Promise((r) => setTimeout(r, 700));
  const before = watcher.checks;
  const next = await freshPair(pki, ['s7.test']);
  const old = await served(proxy.httpsPort, 's7.test', pki.caPem);
  await writeFile(join(pki.dir, 's7-key.pem'), next.key);
  await writeFile(join(pki.dir, 's7.pem'), next.cert);
  await waitFor('the new pair', async () => ((await served(proxy.httpsPort, 's7.test', pki.caPem)) !== old ? true : undefined), 5000);
  await new Promise((r) => setTimeout(r, 700));
  // Its two files may each be seen on their own (and a half-written pair looked at again): a few checks, not 30.
  assert.ok(watcher.checks - before <= 4, `${watcher.checks - before} pair checks for one replaced pair`);
});
