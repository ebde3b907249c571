/**
 * Certificate files without the intermediate that issued their certificate (certbot's cert.pem served instead of
 * fullchain.pem): browsers fetch the intermediate from the certificate's AIA URL, but curl, Node, Java and most apps
 * fail to verify. Portico serves such a file (a browser would be fine) and says so, at start, at reload and in
 * `portico check`. The chain is built with openssl: a root, an intermediate, and leaves that name the
 * intermediate's URL (as public CAs' leaves do) or, signed by the root directly, none (as a private CA's may).
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makePki, startProxyFor, waitForLog, type TestPki } from './helpers/proxy.js';
import { startUpstream } from './helpers/net.js';
import { curl, requireTool, runTool } from './helpers/real-peers.js';

const MAIN = fileURLToPath(new URL('../src/main.js', import.meta.url));

async function openssl(args: readonly string[]): Promise<void> {
  const r = await runTool('openssl', args);
  if (r.code !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
}

/** root.pem; int.pem (the intermediate); leaf.pem (issued by it, with an AIA CA Issuers URL), its fullchain.pem; direct.pem (issued by the root, no AIA). */
async function makeChain(dir: string): Promise<void> {
  const f = (name: string): string => join(dir, name);
  await writeFile(f('ca.ext'), 'basicConstraints=critical,CA:true\nkeyUsage=critical,keyCertSign,cRLSign\n');
  await writeFile(f('leaf.ext'), 'basicConstraints=critical,CA:false\nsubjectAltName=DNS:chain.test\nauthorityInfoAccess=caIssuers;URI:http://127.0.0.1:9/int.der\n');
  await writeFile(f('direct.ext'), 'basicConstraints=critical,CA:false\nsubjectAltName=DNS:direct.test\n');
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  await openssl(['req', '-x509', ...ec, '-keyout', f('root-key.pem'), '-out', f('root.pem'), '-subj', '/CN=Chain Test Root', '-days', '3', '-addext', 'basicConstraints=critical,CA:true', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  await openssl(['req', ...ec, '-keyout', f('int-key.pem'), '-out', f('int.csr'), '-subj', '/CN=Chain Test Intermediate']);
  await openssl(['x509', '-req', '-in', f('int.csr'), '-CA', f('root.pem'), '-CAkey', f('root-key.pem'), '-CAcreateserial', '-out', f('int.pem'), '-days', '2', '-extfile', f('ca.ext')]);
  await openssl(['req', ...ec, '-keyout', f('leaf-key.pem'), '-out', f('leaf.csr'), '-subj', '/CN=chain.test']);
  await openssl(['x509', '-req', '-in', f('leaf.csr'), '-CA', f('int.pem'), '-CAkey', f('int-key.pem'), '-CAcreateserial', '-out', f('leaf.pem'), '-days', '1', '-extfile', f('leaf.ext')]);
  await openssl(['req', ...ec, '-keyout', f('direct-key.pem'), '-out', f('direct.csr'), '-subj', '/CN=direct.test']);
  await openssl(['x509', '-req', '-in', f('direct.csr'), '-CA', f('root.pem'), '-CAkey', f('root-key.pem'), '-CAcreateserial', '-out', f('direct.pem'), '-days', '1', '-extfile', f('direct.ext')]);
  await writeFile(f('fullchain.pem'), Buffer.concat([await readFile(f('leaf.pem')), await readFile(f('int.pem'))]));
}

interface Cli {
  code: number;
  stdout: string;
  stderr: string;
}

function check(file: string): Promise<Cli> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [MAIN, 'check', file], { timeout: 20_000 }, (err, stdout, stderr) => {
      if (err !== null && typeof err.code !== 'number') return reject(err);
      resolve({ code: err === null ? 0 : (err.code as number), stdout, stderr });
    });
  });
}

async function setup(t: TestContext): Promise<TestPki | undefined> {
  if (!requireTool(t, 'openssl')) return undefined;
  const pki = await makePki();
  await makeChain(pki.dir);
  return pki;
}

const hostsWith = (leafCert: string) => ({
  'chain.test': { tls: { cert: leafCert, key: 'leaf-key.pem' }, routes: [{ path: '/', upstream: 'http://127.0.0.1:9' }] },
  'direct.test': { tls: { cert: 'direct.pem', key: 'direct-key.pem' }, routes: [{ path: '/', upstream: 'http://127.0.0.1:9' }] },
});

test('portico check warns of a certificate file without the intermediate that issued it, naming the file, the intermediate and its URL, and still passes; a full chain, or a leaf a root signed directly, gets no warning', async (t) => {
  const pki = await setup(t);
  if (pki === undefined) return;
  t.after(() => pki.cleanup());
  for (const [name, leafCert] of [['leaf-only', 'leaf.pem'], ['full', 'fullchain.pem']] as const) {
    const file = join(pki.dir, `${name}.json`);
    await writeFile(file, JSON.stringify({ certsDir: '.', hosts: hostsWith(leafCert) }));
    const r = await check(file);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /: ok \(2 hosts\)/);
    const warnings = r.stderr.split('\n').filter((l) => l.startsWith('warning: '));
    if (name === 'full') {
      assert.deepEqual(warnings, [], 'the full chain is whole');
      continue;
    }
    assert.equal(warnings.length, 1, r.stderr);
    const w = warnings[0]!;
    assert.ok(w.startsWith(`warning: ${join(pki.dir, 'leaf.pem')}: certificate chain incomplete`), w);
    assert.match(w, /fullchain\.pem/);
    assert.match(w, /missing: CN=Chain Test Intermediate, at http:\/\/127\.0\.0\.1:9\/int\.der/);
  }
});

test('Portico logs the incomplete chain at start and serves it; curl, which does not fetch intermediates, fails on it and succeeds once the full chain is served', async (t) => {
  const pki = await setup(t);
  if (pki === undefined || !requireTool(t, 'curl')) return;
  const up = await startUpstream();
  const proxy = await startProxyFor(t, pki, { hosts: { ...hostsWith('leaf.pem'), 'chain.test': { tls: { cert: 'leaf.pem', key: 'leaf-key.pem' }, routes: [{ path: '/', upstream: up.url }] } } }, [up.close]);
  const chainLines = (): Record<string, unknown>[] => proxy.logs.filter((l) => String(l['msg']).startsWith('certificate chain incomplete'));
  await waitForLog(proxy, 'of the incomplete chain', (l) => String(l['msg']).startsWith('certificate chain incomplete'), 0, 2000);
  const warned = chainLines();
  assert.equal(warned.length, 1, JSON.stringify(warned));
  assert.equal(warned[0]!['certFile'], join(pki.dir, 'leaf.pem'));
  assert.equal(warned[0]!['issuer'], 'CN=Chain Test Intermediate');
  assert.equal(warned[0]!['issuerUrl'], 'http://127.0.0.1:9/int.der');
  assert.equal(warned[0]!['level'], 40);
  const rootFile = join(pki.dir, 'root.pem');
  const broken = await curl({ host: 'chain.test', port: proxy.httpsPort, caFile: rootFile });
  assert.notEqual(broken.code, 0, 'curl cannot verify a leaf whose intermediate is not sent');
  assert.match(broken.stderr, /unable to get local issuer certificate|unable to verify the first certificate/);
  // The fix the warning names: the full chain (the watcher picks the new file up).
  await writeFile(join(pki.dir, 'leaf.pem'), await readFile(join(pki.dir, 'fullchain.pem')));
  let ok = broken;
  for (let i = 0; i < 50 && ok.code !== 0; i++) {
    await new Promise((r) => setTimeout(r, 100));
    ok = await curl({ host: 'chain.test', port: proxy.httpsPort, caFile: rootFile });
  }
  assert.equal(ok.code, 0, `${ok.stderr} | ${JSON.stringify(proxy.logs.filter((l) => (l['level'] as number) >= 40))}`);
  assert.match(ok.stdout, /^HTTP\/2 200/);
  assert.equal(chainLines().length, 1, 'the full chain is not warned of');
});
