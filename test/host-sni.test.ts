import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import http2 from 'node:http2';
import { join } from 'node:path';
import tls from 'node:tls';
import { ERRORS } from '../src/errors.js';
import { makePki, startProxy, startProxyFor, type TestPki, type TestProxy } from './helpers/proxy.js';
import { h1Request, h2Connect, h2Request, startUpstream } from './helpers/net.js';
import { curl, rawTlsExchange, requireTool, runTool } from './helpers/real-peers.js';
import { clearOfTicketKeyChange } from './helpers/ticket-period.js';

const MISDIRECTED = `${ERRORS.PORTICO_SNI_HOST_MISMATCH.message}\n`;

type Upstream = Awaited<ReturnType<typeof startUpstream>>;
let pki: TestPki;
let proxy: TestProxy;
let caFile: string;
const up: Record<'a' | 'b' | 's1' | 's2' | 's3', Upstream> = {} as never;

before(async () => {
  pki = await makePki();
  caFile = join(pki.dir, 'ca.pem');
  await writeFile(caFile, pki.caPem);
  for (const k of ['a', 'b', 's1', 's2', 's3'] as const) up[k] = await startUpstream();
  const a = await pki.issue('a', ['a.test']);
  const b = await pki.issue('b', ['b.test']);
  // One certificate for three names: s1 and s2 opt in to sharing, s3 stays strict.
  const shared = await pki.issue('shared', ['s1.test', 's2.test', 's3.test']);
  proxy = await startProxy(pki, {
    hosts: {
      'a.test': { tls: a, routes: [{ upstream: up.a.url }] },
      'b.test': { tls: b, routes: [{ upstream: up.b.url }] },
      's1.test': { tls: shared, connectionSharing: 'same-certificate', routes: [{ upstream: up.s1.url }] },
      's2.test': { tls: shared, connectionSharing: 'same-certificate', routes: [{ upstream: up.s2.url }] },
      's3.test': { tls: shared, routes: [{ upstream: up.s3.url }] },
    },
  });
});

after(async () => {
  await proxy?.stop();
  for (const u of Object.values(up)) await u.close();
  await pki?.cleanup();
});

function seenCount(): number {
  return Object.values(up).reduce((n, u) => n + u.seen.length, 0);
}

test('over HTTP/1.1 a Host that differs from the SNI gets 421 with a body and connection: close, and no upstream sees it', async () => {
  const before = seenCount();
  const res = await h1Request({ port: proxy.httpsPort, sni: 'a.test', host: 'b.test', path: '/x', ca: pki.caPem });
  assert.equal(res.status, 421);
  assert.equal(res.text, MISDIRECTED);
  assert.equal(res.headers.connection, 'close');
  assert.equal(res.headers['x-portico-error'], 'PORTICO_SNI_HOST_MISMATCH');
  assert.equal(seenCount(), before);
});

test('over HTTP/1.1 the server closes the connection after a 421, even when the client asked for keep-alive', async () => {
  const res = await rawTlsExchange({
    port: proxy.httpsPort,
    sni: 'a.test',
    ca: pki.caPem,
    text: 'GET / HTTP/1.1\r\nHost: b.test\r\n\r\nGET / HTTP/1.1\r\nHost: a.test\r\n\r\n',
    idleMs: 3000,
  });
  assert.equal(res.status, 421);
  // Only one response: the pipelined second request was not served on the misdirected connection.
  assert.equal(res.raw.match(/HTTP\/1\.1 /g)?.length, 1);
  assert.equal(up.a.seen.length, 0);
});

test('over HTTP/2 an :authority that differs from the SNI gets 421 with a body, and the session keeps serving its own host', async () => {
  const before = up.b.seen.length;
  const s = await h2Connect(proxy.httpsPort, 'a.test', pki.caPem);
  const bad = await h2Request(s, { authority: 'b.test', path: '/x' });
  assert.equal(bad.status, 421);
  assert.equal(bad.text, MISDIRECTED);
  assert.equal(bad.headers.connection, undefined);
  const good = await h2Request(s, { path: '/y' });
  assert.equal(good.status, 200);
  assert.equal(JSON.parse(good.text).url, '/y');
  s.close();
  assert.equal(up.b.seen.length, before);
});

test('over HTTP/2 a Host header naming another host than the :authority is a malformed request (RFC 9113 §8.3.1): 400, and no upstream sees it; one naming the same host passes', async () => {
  const before = seenCount();
  const s = await h2Connect(proxy.httpsPort, 'a.test', pki.caPem);
  // A route matching on the Host header, or anything else reading it, would otherwise see b.test on a's connection.
  const bad = await h2Request(s, { authority: 'a.test', path: '/x', headers: { host: 'b.test' } });
  assert.equal(bad.status, 400);
  assert.equal(bad.headers['x-portico-error'], 'PORTICO_BAD_HOST');
  assert.equal(seenCount(), before);
  // The same host in another spelling (case, port, trailing dot) is no conflict.
  const same = await h2Request(s, { authority: 'a.test', path: '/y', headers: { host: `A.Test.:${proxy.httpsPort}` } });
  assert.equal(same.status, 200);
  assert.equal(JSON.parse(same.text).url, '/y');
  s.close();
});

test('a Host in upper case, with a port or with a trailing dot matches its SNI', async () => {
  for (const host of ['A.TEST', `a.test:${proxy.httpsPort}`, 'a.test.', `A.Test.:${proxy.httpsPort}`]) {
    const res = await h1Request({ port: proxy.httpsPort, sni: 'a.test', host, ca: pki.caPem });
    assert.equal(res.status, 200, host);
    // The upstream gets the Host as the client sent it.
    assert.equal(JSON.parse(res.text).headers.host, host);
  }
  const s = await h2Connect(proxy.httpsPort, 'a.test', pki.caPem);
  const res = await h2Request(s, { authority: `A.TEST:${proxy.httpsPort}` });
  s.close();
  assert.equal(res.status, 200);
});

test('an IPv6 literal Host is parsed (421 on a named connection) while a malformed one is a bad request', async () => {
  const v6 = await h1Request({ port: proxy.httpsPort, sni: 'a.test', host: `[::1]:${proxy.httpsPort}`, ca: pki.caPem });
  assert.equal(v6.status, 421);
  assert.equal(v6.headers['x-portico-error'], 'PORTICO_SNI_HOST_MISMATCH');
  for (const host of ['[::1', 'a.test:http', 'a_b.test']) {
    const bad = await h1Request({ port: proxy.httpsPort, sni: 'a.test', host, ca: pki.caPem });
    assert.equal(bad.status, 400, host);
    assert.equal(bad.headers['x-portico-error'], 'PORTICO_BAD_HOST', host);
  }
});

test('an HTTP/1.1 request without Host is refused with 400', async () => {
  const res = await rawTlsExchange({ port: proxy.httpsPort, sni: 'a.test', ca: pki.caPem, text: 'GET / HTTP/1.1\r\nConnection: close\r\n\r\n' });
  assert.equal(res.status, 400);
  assert.equal(up.a.seen.filter((r) => r.headers.host === undefined).length, 0);
});

test('with same-certificate sharing, one HTTP/2 connection serves a second name on the certificate, but not a strict host on it', async () => {
  const s = await h2Connect(proxy.httpsPort, 's1.test', pki.caPem);
  const own = await h2Request(s, { path: '/own' });
  const other = await h2Request(s, { authority: 's2.test', path: '/shared' });
  const strict = await h2Request(s, { authority: 's3.test', path: '/strict' });
  const foreign = await h2Request(s, { authority: 'a.test', path: '/foreign' });
  s.close();
  assert.equal(own.status, 200);
  assert.equal(other.status, 200);
  assert.equal(up.s2.seen.at(-1)?.url, '/shared');
  assert.equal(up.s2.seen.at(-1)?.headers.host, 's2.test');
  assert.equal(strict.status, 421);
  assert.equal(foreign.status, 421);
  assert.equal(up.s3.seen.length, 0);
});

test('a strict host on a shared certificate does not lend its connection to the sharing hosts', async () => {
  const s = await h2Connect(proxy.httpsPort, 's3.test', pki.caPem);
  const res = await h2Request(s, { authority: 's1.test', path: '/via-strict' });
  s.close();
  assert.equal(res.status, 421);
  assert.equal(up.s1.seen.some((r) => r.url === '/via-strict'), false);
});

/** Connects over h2 and collects the ORIGIN frame (RFC 8336), if any, within the first round trip. */
async function originsFor(sni: string): Promise<string[]> {
  const session = http2.connect(`https://${sni}:${proxy.httpsPort}`, {
    createConnection: () => tls.connect({ host: '127.0.0.1', port: proxy.httpsPort, servername: sni, ca: pki.caPem, ALPNProtocols: ['h2'] }),
  });
  session.on('error', () => {});
  const origins: string[] = [];
  session.on('origin', (list: string[]) => origins.push(...list));
  await once(session, 'connect');
  // A request round trip guarantees frames sent before its response have been read.
  await h2Request(session, { path: '/' });
  session.close();
  return origins;
}

test('an HTTP/2 connection announces in an ORIGIN frame the names it may serve: the shared names for sharing hosts, its own for strict ones', async () => {
  const port = proxy.httpsPort;
  assert.deepEqual((await originsFor('s1.test')).sort(), [`https://s1.test:${port}`, `https://s2.test:${port}`]);
  assert.deepEqual(await originsFor('s3.test'), [`https://s3.test:${port}`]);
  assert.deepEqual(await originsFor('a.test'), [`https://a.test:${port}`]);
});

test('curl over HTTP/1.1 and HTTP/2 gets 421 for a Host that is not its SNI, and 200 for its own', async (t) => {
  if (!requireTool(t, 'curl')) return;
  for (const proto of ['--http1.1', '--http2']) {
    const bad = await curl({ host: 'a.test', port: proxy.httpsPort, caFile, args: [proto, '-H', 'Host: b.test'] });
    assert.equal(bad.code, 0, bad.stderr);
    assert.match(bad.stdout, /^HTTP\/(1\.1|2) 421/);
    assert.ok(bad.stdout.endsWith(MISDIRECTED), bad.stdout);
    const ok = await curl({ host: 'a.test', port: proxy.httpsPort, caFile, args: [proto] });
    assert.match(ok.stdout, proto === '--http2' ? /^HTTP\/2 200/ : /^HTTP\/1\.1 200/);
  }
  assert.equal(up.b.seen.length, 0);
});

/** One TLS connection with one HTTP/1.1 request for `host`, offering `session`: whether it resumed, the status and error code, the next ticket. */
async function resumeVisit(port: number, ca: string, sni: string, host: string, session: Buffer | undefined, maxVersion: tls.SecureVersion) {
  const socket = tls.connect({ host: '127.0.0.1', port, ca, servername: sni, session, maxVersion, ALPNProtocols: ['http/1.1'] });
  let ticket: Buffer | undefined;
  let text = '';
  socket.on('session', (s: Buffer) => (ticket = s));
  socket.setEncoding('latin1').on('data', (d: string) => (text += d));
  await once(socket, 'secureConnect');
  const reused = socket.isSessionReused();
  socket.write(`GET / HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
  await once(socket, 'close');
  return { reused, status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0), error: /x-portico-error: (\S+)/i.exec(text)?.[1], ticket };
}

// Regression: OpenSSL reports no server name for a resumed TLS 1.2 session, so with a defaultHost such a connection
// was taken for the default host's: a request for its own host got 421, and the default host was served on a
// connection made (SNI, certificate) for another host.
test('with a defaultHost, a resumed TLS 1.2 or 1.3 session keeps the server name its ClientHello sent: its own host is served, the default host gets 421 (Node client and openssl s_client)', async (t) => {
  await clearOfTicketKeyChange();
  const pki2 = await makePki();
  const own = await pki2.issue('own', ['own.test']);
  const dflt = await pki2.issue('dflt', ['dflt.test']);
  const caFile2 = join(pki2.dir, 'ca.pem');
  await writeFile(caFile2, pki2.caPem);
  const withDefault = await startProxyFor(t, pki2, {
    defaultHost: 'dflt.test',
    hosts: { 'own.test': { tls: own, routes: [{ upstream: up.a.url }] }, 'dflt.test': { tls: dflt, routes: [{ upstream: up.b.url }] } },
  });
  const port = withDefault.httpsPort;
  for (const maxVersion of ['TLSv1.2', 'TLSv1.3'] as const) await resumesOnlyForItsHost(port, pki2.caPem, 'own.test', 'dflt.test', maxVersion);
  if (!requireTool(t, 'openssl')) return;
  await opensslResumesTls12(port, pki2.dir, caFile2, 'own.test');
});

/** Over TLS `maxVersion`, a session made for `own` resumes for it (200), and resumed refuses `other` (421); its ticket. */
async function resumesOnlyForItsHost(port: number, ca: string, own: string, other: string, maxVersion: tls.SecureVersion): Promise<Buffer | undefined> {
  const first = await resumeVisit(port, ca, own, own, undefined, maxVersion);
  assert.equal(first.status, 200, maxVersion);
  const again = await resumeVisit(port, ca, own, own, first.ticket, maxVersion);
  assert.equal(again.reused, true, `${maxVersion}: resumed`);
  assert.equal(again.status, 200, `${maxVersion}: its own host on the resumed session`);
  const refused = await resumeVisit(port, ca, own, other, first.ticket, maxVersion);
  assert.equal(refused.reused, true, `${maxVersion}: resumed`);
  assert.equal(refused.status, 421, `${maxVersion}: ${other} on a resumed session for ${own}`);
  assert.equal(refused.error, 'PORTICO_SNI_HOST_MISMATCH', maxVersion);
  return first.ticket;
}

/** openssl s_client over TLS 1.2: a new session for `host`, then one resumed from it; both served (200). */
async function opensslResumesTls12(port: number, dir: string, caFile: string, host: string): Promise<void> {
  const sessFile = join(dir, `${host}-tls12-session.pem`);
  const args = ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', host, '-CAfile', caFile, '-tls1_2', '-alpn', 'http/1.1', '-ign_eof'];
  const request = `GET / HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`;
  const newSession = await runTool('openssl', [...args, '-sess_out', sessFile], request);
  assert.match(newSession.stdout, /^New, TLSv1\.2/m, newSession.stdout);
  assert.match(newSession.stdout, /^HTTP\/1\.1 200 /m);
  const resumed = await runTool('openssl', [...args, '-sess_in', sessFile], request);
  assert.match(resumed.stdout, /^Reused, TLSv1\.2/m, resumed.stdout);
  assert.match(resumed.stdout, /^HTTP\/1\.1 200 /m, resumed.stdout);
}

// Regression: without a defaultHost (or clientAuth) the ClientHello was not read, so a resumed TLS 1.2 session had
// no name at all and every request on it got 421: clients limited to TLS 1.2 failed on every resumed connection.
test('without a defaultHost, a resumed TLS 1.2 session is named by its ClientHello\'s SNI on HTTP/1.1 and HTTP/2: its own host is served, another gets 421 (Node client and openssl s_client)', async (t) => {
  await clearOfTicketKeyChange();
  const port = proxy.httpsPort;
  for (const maxVersion of ['TLSv1.2', 'TLSv1.3'] as const) {
    const ticket = await resumesOnlyForItsHost(port, pki.caPem, 'a.test', 'b.test', maxVersion);
    // HTTP/2 on a session resumed from that ticket.
    const session = http2.connect(`https://a.test:${port}`, { host: '127.0.0.1', servername: 'a.test', ca: pki.caPem, maxVersion, session: ticket });
    try {
      await once(session, 'connect');
      assert.equal((session.socket as tls.TLSSocket).isSessionReused(), true, `${maxVersion}: HTTP/2 resumed`);
      assert.equal((await h2Request(session, { path: '/resumed-h2', authority: 'a.test' })).status, 200, `${maxVersion}: HTTP/2, its own host`);
      assert.equal((await h2Request(session, { path: '/resumed-h2', authority: 'b.test' })).status, 421, `${maxVersion}: HTTP/2, another host`);
    } finally {
      session.destroy();
    }
  }
  if (!requireTool(t, 'openssl')) return;
  await opensslResumesTls12(port, pki.dir, caFile, 'a.test');
});

// Regression: an upgrade refused at the Host/SNI check wrote no access line, so attempts to reach a host
// through another's connection with a WebSocket left no trace, while the same request without Upgrade did.
test('a WebSocket upgrade whose Host differs from the SNI gets 421, reaches no upstream, and has an access line naming host, sni and the error', async () => {
  const before = seenCount();
  const res = await rawTlsExchange({
    port: proxy.httpsPort,
    sni: 'a.test',
    ca: pki.caPem,
    text: 'GET /ws-misdirected HTTP/1.1\r\nHost: b.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
  });
  assert.equal(res.status, 421);
  assert.equal(res.headers['x-portico-error'], 'PORTICO_SNI_HOST_MISMATCH');
  assert.equal(seenCount(), before);
  const line = proxy.logs.find((l) => l.msg === 'access' && l.path === '/ws-misdirected');
  assert.ok(line !== undefined, 'an access line for the refused upgrade');
  assert.equal(line.host, 'b.test');
  assert.equal(line.sni, 'a.test');
  assert.equal(line.status, 421);
  assert.equal(line.error, 'PORTICO_SNI_HOST_MISMATCH');
  assert.equal(line.upgrade, 'websocket');
});

test("one connection's requests are judged each on its own Host: a kept verdict never lets another host through, and a reload that drops the host applies to the next request on an open connection", async () => {
  // Portico keeps the last Host's verdict on the connection (src/proxy/handle-request.ts, kHostVerdict).
  const pkiR = await makePki();
  const aR = await pkiR.issue('a', ['a.test', 'c.test']);
  const upR = await startUpstream();
  const routes = [{ upstream: upR.url }];
  const p = await startProxy(pkiR, { hosts: { 'a.test': { tls: aR, routes }, 'c.test': { tls: aR, routes } } });
  try {
    const s = await h2Connect(p.httpsPort, 'a.test', pkiR.caPem);
    const statuses: number[] = [];
    for (const authority of ['a.test', 'a.test', 'c.test', 'A.TEST', 'c.test', 'a.test', 'a_b.test', 'a.test']) statuses.push((await h2Request(s, { authority, path: '/h2' })).status);
    // c.test is on the same certificate but does not opt in to sharing: 421 each time, whatever came before.
    assert.deepEqual(statuses, [200, 200, 421, 200, 421, 200, 400, 200]);
    // One HTTP/1.1 connection: its own host twice, then another host (421 closes it).
    const socket = tls.connect({ port: p.httpsPort, host: '127.0.0.1', servername: 'a.test', ca: pkiR.caPem, ALPNProtocols: ['http/1.1'] });
    await once(socket, 'secureConnect');
    let text = '';
    socket.setEncoding('latin1').on('data', (d: string) => (text += d));
    socket.write('GET /1 HTTP/1.1\r\nHost: a.test\r\n\r\nGET /2 HTTP/1.1\r\nHost: a.test\r\n\r\nGET /3 HTTP/1.1\r\nHost: c.test\r\n\r\n');
    await once(socket, 'end');
    assert.deepEqual([...text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1])), [200, 200, 421], text);
    // A reload that drops a.test: the open HTTP/2 connection's next request for it is no longer served.
    await p.reconfigure({ hosts: { 'c.test': { tls: aR, routes } } });
    const after = await h2Request(s, { authority: 'a.test', path: '/after' });
    assert.notEqual(after.status, 200);
    assert.equal(upR.seen.some((r) => r.url === '/after'), false);
    s.close();
  } finally {
    await p.stop();
    await upR.close();
    await pkiR.cleanup();
  }
});
