/** ACME DNS-01 against a real Pebble: wildcard certificates through the operator's program, and that program's failures. */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { Dns01Hook } from '../src/acme/dns01.js';
import { validateConfig } from '../src/config/load.js';
import { freePort, startUpstream } from './helpers/net.js';
import { handshake, requirePebble, startPebble, startPorticoOn, stopPorticosOf, waitFor } from './helpers/pebble.js';

/**
 * A DNS-01 program as an operator would write one, whose "DNS provider" is the directory the test's
 * DNS responder reads: `present` adds the value to the record, `cleanup` removes only that value.
 */
const HOOK = `#!/bin/sh
set -e
here="$(dirname "$0")"
echo "$1 $2 $3" >> "$here/hook.log"
case "$1" in
  present) mkdir -p "$here/txt/$2" && : > "$here/txt/$2/$3" ;;
  cleanup) rm -f "$here/txt/$2/$3" ;;
  *) echo "unknown action $1" >&2; exit 2 ;;
esac
`;

async function tempDir(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'portico-dns01-'));
  t.after(async () => {
    await stopPorticosOf(t);
    await rm(dir, { recursive: true, force: true });
  });
  return dir;
}

function logged(logs: Record<string, unknown>[], msg: string, host?: string): Record<string, unknown> | undefined {
  return logs.find((l) => l.msg === msg && (host === undefined || l.host === host));
}

test('a wildcard host gets its certificate over dns-01 from the operator\'s program, which sets and removes each TXT value', async (t) => {
  const bin = requirePebble(t);
  if (bin === undefined) return;
  const dir = await tempDir(t);
  await mkdir(join(dir, 'txt'));
  await writeFile(join(dir, 'dns-hook.sh'), HOOK);
  await chmod(join(dir, 'dns-hook.sh'), 0o755);
  const up = await startUpstream((req, res) => {
    req.resume();
    res.end(`wild ${req.headers.host}`);
  });
  t.after(() => up.close());
  const ports = { httpsPort: await freePort(), httpPort: await freePort() };
  const pebble = await startPebble(t, bin, { dir, httpPort: ports.httpPort, tlsPort: ports.httpsPort, txtDir: join(dir, 'txt') });
  const proxy = await startPorticoOn(t, dir, ports, {
    // The command is relative to the config file's directory.
    acme: pebble.acme({ dns01: { command: ['./dns-hook.sh'] } }),
    hosts: { '*.wild.test': { aliases: ['wild.test'], tls: { acme: true }, routes: [{ path: '/', upstream: up.url }] } },
  });
  await waitFor('issuance', () => logged(proxy.logs, 'acme certificate issued', '*.wild.test'), 20_000);
  assert.equal(logged(proxy.logs, 'acme order started', '*.wild.test')?.challenge, 'dns-01');
  const root = await pebble.root();
  for (const name of ['a.wild.test', 'b.wild.test', 'wild.test']) {
    const served = await handshake(ports.httpsPort, name, root);
    assert.equal(served.authorized, true, `${name}: ${served.error}`);
  }
  // Both authorizations (wild.test and *.wild.test) use the same record name with two values, both removed after.
  const lines = (await readFile(join(dir, 'hook.log'), 'utf8')).trim().split('\n').map((l) => l.split(' '));
  const presented = lines.filter((l) => l[0] === 'present');
  assert.equal(presented.length, 2, lines.join('\n'));
  for (const l of presented) assert.equal(l[1], '_acme-challenge.wild.test');
  assert.notEqual(presented[0]![2], presented[1]![2], 'one value per authorization');
  assert.match(presented[0]![2]!, /^[A-Za-z0-9_-]{43}$/, 'the value is the key authorization\'s SHA-256, base64url');
  const cleaned = lines.filter((l) => l[0] === 'cleanup').map((l) => l[2]).sort();
  assert.deepEqual(cleaned, presented.map((l) => l[2]).sort());
  assert.deepEqual(await readdir(join(dir, 'txt', '_acme-challenge.wild.test')), [], 'no TXT value is left behind');
});

test('a failing dns-01 program fails the order with its own words, and the order is retried', async (t) => {
  const bin = requirePebble(t);
  if (bin === undefined) return;
  const dir = await tempDir(t);
  const ports = { httpsPort: await freePort(), httpPort: await freePort() };
  const pebble = await startPebble(t, bin, { dir, httpPort: ports.httpPort, tlsPort: ports.httpsPort });
  const proxy = await startPorticoOn(t, dir, ports, {
    acme: pebble.acme({ dns01: { command: ['/bin/sh', '-c', 'echo "no API token for the DNS provider" >&2; exit 3', 'hook'] } }),
    hosts: { '*.bad.test': { tls: { acme: true }, routes: [{ path: '/', respond: { body: 'x' } }] } },
  });
  const failed = await waitFor('the failed order', () => logged(proxy.logs, 'acme order failed', '*.bad.test'), 15_000);
  assert.match(String(failed.err), /dns-01 present of _acme-challenge\.bad\.test: \/bin\/sh exited with 3: no API token for the DNS provider/);
  assert.equal(failed.code, 'PORTICO_ACME_FAILED');
  await waitFor('a second attempt', () => (proxy.logs.filter((l) => l.msg === 'acme order failed').length >= 2 ? true : undefined), 10_000);
  await assert.rejects(handshake(ports.httpsPort, 'x.bad.test'), 'no certificate, so the handshake is refused');
});

test('the dns-01 program: relative paths, time limit, a missing program, and a cleanup failure that is only logged', async (t) => {
  const dir = await tempDir(t);
  const logs: Record<string, unknown>[] = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) });
  const hook = (command: string[], timeoutMs = 5000): Dns01Hook => new Dns01Hook({ command, propagationDelayMs: 0, timeoutMs, baseDir: dir }, log);
  await writeFile(join(dir, 'record.sh'), '#!/bin/sh\necho "$@" > "$(dirname "$0")/args"\n');
  await chmod(join(dir, 'record.sh'), 0o755);
  await hook(['./record.sh', '--zone', 'example.test']).present('example.test', 'v4lue');
  assert.equal(await readFile(join(dir, 'args'), 'utf8'), '--zone example.test present _acme-challenge.example.test v4lue\n');
  assert.equal(logs.at(-1)?.msg, 'acme dns-01 record set');
  await assert.rejects(hook(['/bin/sh', '-c', 'sleep 5'], 200).present('slow.test', 'v'), /dns-01 present of _acme-challenge\.slow\.test: \/bin\/sh did not finish within 200 ms \(acme\.dns01\.timeout\) and was killed/);
  await assert.rejects(hook(['./missing-hook']).present('m.test', 'v'), /cannot run .*missing-hook \(ENOENT\); check acme\.dns01\.command/);
  await hook(['/bin/sh', '-c', 'echo "zone locked" >&2; exit 1']).cleanup('c.test', 'v');
  const warn = logs.find((l) => l.msg === 'acme dns-01 cleanup failed; remove the TXT record by hand');
  assert.match(String(warn?.err), /cleanup of _acme-challenge\.c\.test: \/bin\/sh exited with 1: zone locked/);
});

test('wildcard names with acme need dns01, and challenge "dns-01" needs its program; each problem with its path', () => {
  const acme = { email: 'ops@x.test', termsOfServiceAgreed: true };
  const hosts = { '*.w.test': { tls: { acme: true }, routes: [{ respond: { body: 'x' } }] } };
  let r = validateConfig({ acme, hosts });
  assert.equal(r.ok, false);
  assert.match(r.ok ? '' : `${r.issues[0]!.path}: ${r.issues[0]!.message}`, /^hosts\["\*\.w\.test"\]\.tls\.acme: "\*\.w\.test" is a wildcard name, which a CA only validates over DNS-01: set acme\.dns01\.command/);
  r = validateConfig({ acme: { ...acme, challenge: 'dns-01' }, hosts: { 'w.test': hosts['*.w.test'] } });
  assert.match(r.ok ? '' : `${r.issues[0]!.path}: ${r.issues[0]!.message}`, /^acme\.dns01: acme\.challenge is "dns-01": set acme\.dns01\.command/);
  r = validateConfig({ acme: { ...acme, dns01: { command: [] } }, hosts });
  assert.match(r.ok ? '' : `${r.issues[0]!.path}: ${r.issues[0]!.message}`, /^acme\.dns01\.command: name the program/);
  assert.equal(validateConfig({ acme: { ...acme, dns01: { command: ['/usr/local/bin/dns-hook'] } }, hosts }).ok, true);
});
