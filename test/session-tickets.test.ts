/**
 * TLS session resumption (README, "Reloads and workers"): session tickets are encrypted with one key
 * derived from a secret and the hour (src/tls/session-tickets.ts); with `workers`, every worker gets
 * the primary's secret (src/cluster/ticket-secret.ts), so a session resumes on whichever worker the
 * next connection reaches. Real sockets: Node's TLS client and `openssl s_client`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import tls from 'node:tls';
import { makePki, startProxyFor } from './helpers/proxy.js';
import { spawnTwoWorkers } from './helpers/child-proxy.js';
import { startUpstream } from './helpers/net.js';
import { requireTool, runTool } from './helpers/real-peers.js';
import { SessionTicketKeys, ticketKeyFor } from '../src/tls/session-tickets.js';
import { clearOfTicketKeyChange } from './helpers/ticket-period.js';

interface Visit {
  /** Whether the handshake resumed the session offered. */
  reused: boolean;
  /** The session to offer next time (the last ticket the server sent), if it sent one. */
  session: Buffer | undefined;
  status: number;
}

/** One TLS connection with one request (`path`), offering `session`; resolves once the server has closed it. */
async function visit(port: number, ca: string, servername: string | undefined, path: string, session: Buffer | undefined, maxVersion: tls.SecureVersion = 'TLSv1.3'): Promise<Visit> {
  // Without SNI the certificate is still checked against the CA; only the name check (an IP here) is left out.
  const name = servername === undefined ? { checkServerIdentity: () => undefined } : { servername };
  const socket = tls.connect({ host: '127.0.0.1', port, ca, ...name, session, maxVersion, ALPNProtocols: ['http/1.1'] });
  let next: Buffer | undefined;
  let text = '';
  socket.on('session', (s: Buffer) => (next = s));
  socket.setEncoding('utf8').on('data', (d: string) => (text += d));
  await once(socket, 'secureConnect');
  const reused = socket.isSessionReused();
  socket.write(`GET ${path} HTTP/1.1\r\nHost: ${servername ?? 'site.test'}\r\nConnection: close\r\n\r\n`);
  await once(socket, 'close');
  return { reused, session: next, status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0) };
}

test('ticket keys: one secret gives one key per hour, the same in every process; another hour or secret gives another', () => {
  const secret = randomBytes(32);
  const hour = Math.floor(Date.now() / 3_600_000);
  assert.equal(ticketKeyFor(secret, hour).length, 48);
  assert.deepEqual(new SessionTicketKeys(secret).current(), ticketKeyFor(secret, hour));
  assert.deepEqual(new SessionTicketKeys(Buffer.from(secret)).current(), new SessionTicketKeys(secret).current());
  assert.notDeepEqual(ticketKeyFor(secret, hour + 1), ticketKeyFor(secret, hour));
  assert.notDeepEqual(ticketKeyFor(randomBytes(32), hour), ticketKeyFor(secret, hour));
  assert.notDeepEqual(new SessionTicketKeys().current(), new SessionTicketKeys().current());
  assert.throws(() => new SessionTicketKeys(Buffer.alloc(8)), /at least 16 bytes/);
});

test('ticket keys: start() applies the key at once and the next period\'s at the boundary', async () => {
  const keys = new SessionTicketKeys(randomBytes(32), 300);
  const applied: Buffer[] = [];
  keys.start((k) => applied.push(k));
  assert.equal(applied.length, 1);
  for (let i = 0; i < 40 && applied.length < 2; i++) await new Promise((r) => setTimeout(r, 25));
  keys.stop();
  assert.equal(applied.length, 2, 'a second key within one period');
  assert.notDeepEqual(applied[1], applied[0]);
  const count = applied.length;
  await new Promise((r) => setTimeout(r, 400));
  assert.equal(applied.length, count, 'nothing applied after stop()');
});

test('a session resumes (TLS 1.3 and 1.2, with and without SNI), survives a reload, and stops resuming once the ticket key changes', async (t) => {
  await clearOfTicketKeyChange();
  const pki = await makePki();
  const up = await startUpstream();
  const cert = await pki.issue('site', ['site.test']);
  const config = { defaultHost: 'site.test', hosts: { 'site.test': { tls: cert, routes: [{ path: '/', upstream: up.url }] } } };
  const proxy = await startProxyFor(t, pki, config, [() => up.close()]);
  for (const maxVersion of ['TLSv1.3', 'TLSv1.2'] as const) {
    for (const sni of ['site.test', undefined]) {
      const first = await visit(proxy.httpsPort, pki.caPem, sni, '/first', undefined, maxVersion);
      assert.equal(first.status, 200);
      assert.equal(first.reused, false);
      assert.ok(first.session !== undefined, `${maxVersion}, SNI ${sni}: the server sent a ticket`);
      const again = await visit(proxy.httpsPort, pki.caPem, sni, '/again', first.session, maxVersion);
      assert.equal(again.status, 200);
      assert.equal(again.reused, true, `${maxVersion}, SNI ${sni}: resumed`);
    }
  }
  // A reload re-creates the no-SNI server's context: it must keep the current key.
  const before = await visit(proxy.httpsPort, pki.caPem, undefined, '/a', undefined);
  const sniBefore = await visit(proxy.httpsPort, pki.caPem, 'site.test', '/a', undefined);
  await proxy.reconfigure({ ...config, hosts: { 'site.test': { ...config.hosts['site.test'], routes: [{ path: '/', upstream: up.url }, { path: '/x', upstream: up.url }] } } });
  assert.equal((await visit(proxy.httpsPort, pki.caPem, undefined, '/b', before.session)).reused, true, 'no SNI: resumed after a reload');
  assert.equal((await visit(proxy.httpsPort, pki.caPem, 'site.test', '/b', sniBefore.session)).reused, true, 'SNI: resumed after a reload');
  // A new key (what happens on the hour): earlier tickets no longer resume, new ones do.
  const old = await visit(proxy.httpsPort, pki.caPem, 'site.test', '/c', undefined);
  const oldNoSni = await visit(proxy.httpsPort, pki.caPem, undefined, '/c', undefined);
  proxy.portico.https!.setTicketKeys(randomBytes(48));
  const after = await visit(proxy.httpsPort, pki.caPem, 'site.test', '/d', old.session);
  assert.equal(after.status, 200);
  assert.equal(after.reused, false, 'a ticket from the previous key is not accepted');
  assert.equal((await visit(proxy.httpsPort, pki.caPem, undefined, '/d', oldNoSni.session)).reused, false, 'no SNI: neither');
  assert.equal((await visit(proxy.httpsPort, pki.caPem, 'site.test', '/e', after.session)).reused, true, 'a ticket from the new key resumes');
});

test('with two workers, a session resumes on the other worker (Node client and openssl s_client)', async (t) => {
  if (!requireTool(t, 'openssl')) return;
  await clearOfTicketKeyChange();
  const { proxy, pki } = await spawnTwoWorkers(t);

  // Each connection offers the session of the one before. The workers take connections in turn (the primary's
  // round-robin) or as the kernel spreads them (SO_REUSEPORT): either way many land on the other worker.
  const visits: Visit[] = [];
  let session: Buffer | undefined;
  for (let i = 0; i < 20; i++) {
    const v = await visit(proxy.httpsPort, pki.caPem, 'site.test', `/v${i}`, session);
    assert.equal(v.status, 200);
    visits.push(v);
    session = v.session ?? session;
  }
  // openssl s_client: a session saved from one connection, offered on the next ten (some of them on the other worker).
  const sessFile = join(pki.dir, 'openssl-session.pem');
  const caFile = join(pki.dir, 'ca.pem');
  await writeFile(caFile, pki.caPem);
  const base = ['s_client', '-connect', `127.0.0.1:${proxy.httpsPort}`, '-servername', 'site.test', '-CAfile', caFile, '-verify_return_error', '-ign_eof'];
  const request = (path: string): string => `GET ${path} HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n`;
  const saved = await runTool('openssl', [...base, '-sess_out', sessFile], request('/s0'));
  assert.match(saved.stdout, /^New, TLSv1\.3/m, saved.stdout + saved.stderr);
  const resumedBy: string[] = [];
  const resumePaths = Array.from({ length: 10 }, (_, i) => `/s${i + 1}`);
  for (const path of resumePaths) {
    const r = await runTool('openssl', [...base, '-sess_in', sessFile], request(path));
    assert.match(r.stdout, /HTTP\/1\.1 200/);
    resumedBy.push(/^(New|Reused), /m.exec(r.stdout)?.[1] ?? '?');
  }
  await proxy.kill(10_000);
  // Which worker served each request, from the access lines the workers flushed as they stopped.
  const pidOf = new Map(proxy.logs.filter((l) => l['msg'] === 'access').map((l) => [l['path'], l['pid']]));
  let crossWorker = 0;
  for (let i = 1; i < visits.length; i++) {
    assert.equal(visits[i]!.reused, true, `connection ${i} resumed the session of connection ${i - 1}`);
    if (pidOf.get(`/v${i}`) !== pidOf.get(`/v${i - 1}`)) crossWorker++;
  }
  assert.ok(crossWorker >= 3, `at least 3 of the resumptions were on the other worker (${crossWorker})`);
  assert.deepEqual(resumedBy, resumePaths.map(() => 'Reused'), 'openssl s_client resumed on every connection');
  assert.ok(resumePaths.some((p) => pidOf.get(p) !== pidOf.get('/s0')), 'some of the openssl resumptions were on the other worker');
});
