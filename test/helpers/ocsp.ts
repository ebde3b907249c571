/**
 * OCSP test fixtures: a CA made with openssl, a delegated responder certificate (id-kp-OCSPSigning) and leaves whose
 * Authority Information Access names the responder, and OpenSSL's own responder behind a Node HTTP server on
 * 127.0.0.1. OpenSSL 3.0's `openssl ocsp -port` binds every address (it takes a port number only), so a Node HTTP
 * server on 127.0.0.1 takes each POST and has `openssl ocsp -index … -reqin … -respout …` answer it: OpenSSL's
 * responder logic, signature and all, one run per request. Also the peers that check a staple: `openssl s_client
 * -status` and Node's tls.connect with requestOCSP.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFile, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { join } from 'node:path';
import tls from 'node:tls';
import type { TestContext } from 'node:test';
import { AsnConvert } from '@peculiar/asn1-schema';
import { BasicOCSPResponse, OCSPResponse } from '@peculiar/asn1-ocsp';
import { makePki, type TestPki, type TestProxy } from './proxy.js';
import { freePort } from './net.js';
import { requireTool, runTool } from './real-peers.js';
import type { ConfigInput } from '../../src/config/schema.js';

export async function openssl(args: readonly string[]): Promise<void> {
  const r = await runTool('openssl', args);
  if (r.code !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
}

/** The serial numbers (hex) of the leaves makeCa() issues, as index.txt and s_client print them. */
export const SERIAL = { good: '1001', other: '1002', revoked: '1003', renewed: '1004', plainSigner: '1005' } as const;

export interface OcspCa {
  pki: TestPki;
  /** The responder's port (nothing listens there until startResponder()). */
  port: number;
  file(name: string): string;
}

/**
 * ca.pem (the CA); responder.pem (a delegated OCSP responder, id-kp-OCSPSigning); plain-signer.pem (a certificate
 * of the same CA without that usage); impostor-leaf.pem (a self-signed CA named as the real one, another key); leaves <name>.pem (leaf + CA, so the issuer is in the chain) for good.test,
 * other.test, revoked.test, and renewed.pem (good.test again, a new serial), each naming the responder in its AIA;
 * index.txt lists them all valid but revoked.test.
 */
export async function makeCa(t: TestContext): Promise<OcspCa | undefined> {
  if (!requireTool(t, 'openssl')) return undefined;
  const pki = await makePki();
  const port = await freePort();
  const f = (name: string): string => join(pki.dir, name);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  await openssl(['req', '-x509', ...ec, '-keyout', f('ca-key.pem'), '-out', f('ca.pem'), '-subj', '/CN=OCSP Test CA', '-days', '3', '-addext', 'basicConstraints=critical,CA:true', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  const issue = async (name: string, subject: string, serial: string, ext: string): Promise<void> => {
    await writeFile(f(`${name}.ext`), ext);
    await openssl(['req', ...ec, '-keyout', f(`${name}-key.pem`), '-out', f(`${name}.csr`), '-subj', subject]);
    await openssl(['x509', '-req', '-in', f(`${name}.csr`), '-CA', f('ca.pem'), '-CAkey', f('ca-key.pem'), '-set_serial', `0x${serial}`, '-out', f(`${name}-leaf.pem`), '-days', '2', '-extfile', f(`${name}.ext`)]);
    await writeFile(f(`${name}.pem`), Buffer.concat([await readFile(f(`${name}-leaf.pem`)), await readFile(f('ca.pem'))]));
  };
  // An impostor: a CA of the same name as the real one, with a key of its own.
  await openssl(['req', '-x509', ...ec, '-keyout', f('impostor-key.pem'), '-out', f('impostor-leaf.pem'), '-subj', '/CN=OCSP Test CA', '-days', '3']);
  await issue('responder', '/CN=OCSP Test Responder', '2001', 'basicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=OCSPSigning\n');
  await issue('plain-signer', '/CN=Not An OCSP Responder', '2002', 'basicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n');
  const leafExt = (name: string): string => `basicConstraints=critical,CA:false\nsubjectAltName=DNS:${name}\nextendedKeyUsage=serverAuth\nauthorityInfoAccess=OCSP;URI:http://127.0.0.1:${port}\n`;
  await issue('good', '/CN=good.test', SERIAL.good, leafExt('good.test'));
  await issue('other', '/CN=other.test', SERIAL.other, leafExt('other.test'));
  await issue('revoked', '/CN=revoked.test', SERIAL.revoked, leafExt('revoked.test'));
  await issue('renewed', '/CN=good.test', SERIAL.renewed, leafExt('good.test'));
  const line = (status: 'V' | 'R', serial: string, cn: string): string => `${status}\t301231235959Z\t${status === 'R' ? '260101000000Z' : ''}\t${serial}\tunknown\t/CN=${cn}\n`;
  // Two lines name /CN=good.test (good and renewed): openssl refuses such an index unless told subjects repeat.
  await writeFile(f('index.txt.attr'), 'unique_subject = no\n');
  await writeFile(
    f('index.txt'),
    line('V', SERIAL.good, 'good.test') + line('V', SERIAL.other, 'other.test') + line('R', SERIAL.revoked, 'revoked.test') + line('V', SERIAL.renewed, 'good.test'),
  );
  return { pki, port, file: f };
}

/** A running responder: the requests it answered. */
export interface Responder {
  requests: number;
  /** Stops answering (closes the server: the port refuses connections); resolves once closed. */
  close(): Promise<void>;
}

/**
 * Answers OCSP POSTs on 127.0.0.1:<ca.port> with `openssl ocsp -index index.txt`, signing with `signer` (the
 * delegated responder by default) and a nextUpdate `validMinutes` (10) on; closed after the test. `answerFor`: a leaf whose
 * request (made by `openssl ocsp -reqout`) is answered in place of every request received, as a confused or
 * hostile responder would.
 */
export async function startResponder(t: TestContext, ca: OcspCa, signer = 'responder', answerFor?: string, validMinutes = 10): Promise<Responder> {
  let closed: Promise<void> | undefined;
  const state: Responder = {
    requests: 0,
    close: () => (closed ??= new Promise<void>((r) => {
      server.close(() => r());
      server.closeAllConnections();
    })),
  };
  const substitute = answerFor === undefined ? undefined : ca.file(`${answerFor}-request.der`);
  if (answerFor !== undefined) await openssl(['ocsp', '-issuer', ca.file('ca.pem'), '-cert', ca.file(`${answerFor}-leaf.pem`), '-no_nonce', '-reqout', substitute!]);
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const n = ++state.requests;
      const reqFile = ca.file(`req-${n}.der`);
      const respFile = ca.file(`resp-${n}.der`);
      const args = ['ocsp', '-index', ca.file('index.txt'), '-CA', ca.file('ca.pem'), '-rsigner', ca.file(`${signer}-leaf.pem`), '-rkey', ca.file(`${signer}-key.pem`), '-reqin', substitute ?? reqFile, '-respout', respFile, '-nmin', String(validMinutes)];
      writeFile(reqFile, Buffer.concat(chunks))
        .then(() => openssl(args))
        .then(() => readFile(respFile))
        .then(
          (der) => res.writeHead(200, { 'content-type': 'application/ocsp-response' }).end(der),
          (err: Error) => res.writeHead(500).end(err.message),
        );
    });
  });
  server.listen(ca.port, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => state.close());
  return state;
}

export const hostsOf = (names: readonly string[]): NonNullable<ConfigInput['hosts']> =>
  Object.fromEntries(names.map((n) => [`${n}.test`, { tls: { cert: `${n}.pem`, key: `${n}-key.pem` }, routes: [{ path: '/', respond: { body: n } }] }]));

/** What `openssl s_client -status` says of the staple it got for `servername`. */
export async function sClientStatus(proxy: TestProxy, ca: OcspCa, servername: string): Promise<string> {
  const r = await runTool('openssl', ['s_client', '-connect', `127.0.0.1:${proxy.httpsPort}`, '-servername', servername, '-status', '-CAfile', ca.file('ca.pem'), '-verify_return_error']);
  assert.equal(r.code, 0, `s_client for ${servername} failed: ${r.stderr}`);
  assert.match(r.stdout, /Verify return code: 0 \(ok\)/, 'the handshake itself verified');
  return r.stdout;
}

/** The staple Node's client receives for `servername` (tls.connect with requestOCSP), or null for none. */
export async function nodeStaple(proxy: TestProxy, ca: OcspCa, servername: string): Promise<Buffer | null> {
  // requestOCSP is a Node option @types/node leaves out.
  const options = { host: '127.0.0.1', port: proxy.httpsPort, servername, requestOCSP: true, ca: await readFile(ca.file('ca.pem')), ALPNProtocols: ['h2'] };
  const socket = tls.connect(options as tls.ConnectionOptions);
  let staple: Buffer | null | undefined;
  socket.on('OCSPResponse', (r: Buffer) => (staple = r));
  try {
    await once(socket, 'secureConnect');
  } finally {
    socket.destroy();
  }
  return staple ?? null;
}

/** The certificate serial (hex) and status a DER OCSPResponse states. */
export function readStaple(der: Buffer): { serial: string; status: string } {
  const response = AsnConvert.parse(der, OCSPResponse);
  const basic = AsnConvert.parse(response.responseBytes!.response.buffer, BasicOCSPResponse);
  const single = basic.tbsResponseData.responses[0]!;
  const status = single.certStatus.good !== undefined ? 'good' : single.certStatus.revoked !== undefined ? 'revoked' : 'unknown';
  return { serial: Buffer.from(single.certID.serialNumber).toString('hex').toUpperCase(), status };
}

export const stapledFor = (host: string) => (l: Record<string, unknown>): boolean => l['msg'] === 'ocsp response stapled' && l['host'] === host;

