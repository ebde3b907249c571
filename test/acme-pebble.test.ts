/** ACME against a real Pebble on loopback: issuance over HTTP-01 and TLS-ALPN-01, renewal, CA outages, nonce rejection, restart reuse. */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { accountKeyPath, storedPaths } from '../src/acme/index.js';
import type { ConfigInput } from '../src/config/schema.js';
import { freePort, startUpstream } from './helpers/net.js';
import { handshake, requirePebble, startPebble, startPorticoOn, waitFor, type Pebble, type PebbleOptions } from './helpers/pebble.js';

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
  t.after(() => rm(dir, { recursive: true, force: true }));
  const up = await startUpstream();
  t.after(() => up.close());
  const ports = { httpsPort: await freePort(), httpPort: await freePort() };
  const pebble = await startPebble(t, bin, { dir, httpPort: ports.httpPort, tlsPort: ports.httpsPort, ...pebbleOpts });
  const config: Setup['config'] = (acme = {}, hosts = ['a.portico.test']) => ({
    acme: {
      directory: pebble.directoryUrl,
      caFile: pebble.caFile,
      email: 'ops@portico.test',
      termsOfServiceAgreed: true,
      pollInterval: '100ms',
      retryDelay: '200ms',
      retryMaxDelay: '1s',
      ...acme,
    },
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
  assert.equal((await stat(paths.keyFile)).mode & 0o777, 0o600);
  assert.equal((await stat(accountKeyPath(s.dir, s.pebble.directoryUrl))).mode & 0o777, 0o600);
  await proxy.stop();

  const again = await startPorticoOn(t, s.dir, s.ports, s.config());
  await waitFor('the stored certificate', () => logged(again.logs, 'acme certificate valid, renewal scheduled', 'a.portico.test'));
  const reused = await handshake(s.ports.httpsPort, 'a.portico.test', root);
  assert.equal(reused.fingerprint256, served.fingerprint256);
  assert.equal(reused.authorized, true);
  assert.equal(again.portico.acme.status('a.portico.test')?.orders, 0);
  assert.equal(logged(again.logs, 'acme order started'), undefined);
});
