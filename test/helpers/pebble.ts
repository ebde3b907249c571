/**
 * Pebble (Let's Encrypt's test CA) on free loopback ports for a test, with a
 * throw-away TLS certificate for its own listeners and a tiny DNS responder
 * (every A question → 127.0.0.1, AAAA → no answer; TXT from files a test's
 * DNS-01 program writes) so it validates challenges against Portico on 127.0.0.1. Challenges are really validated
 * (no PEBBLE_VA_ALWAYS_VALID). Also starts Portico wired to it.
 *
 * A missing `pebble` binary fails under CI=true and skips locally.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { existsSync, readdirSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import https from 'node:https';
import { join } from 'node:path';
import tls from 'node:tls';
import type { TestContext } from 'node:test';
import dnsPacket from 'dns-packet';
import pino from 'pino';
import { Portico } from '../../src/server/portico.js';
import type { ConfigInput } from '../../src/config/schema.js';

type AcmeInput = NonNullable<ConfigInput['acme']>;
import { LocalCa } from '../../src/tls/local-ca.js';
import { freePort } from './net.js';

/** Where pebble is, or undefined. */
export function findPebble(): string | undefined {
  for (const dir of [...(process.env.PATH ?? '').split(':'), '/usr/bin', '/usr/local/bin']) {
    if (dir !== '' && existsSync(join(dir, 'pebble'))) return join(dir, 'pebble');
  }
  return undefined;
}

/** Returns the pebble binary; fails the test under CI=true when missing, else skips it and returns undefined. */
export function requirePebble(t: TestContext): string | undefined {
  const bin = findPebble();
  if (bin !== undefined) return bin;
  if (process.env.CI === 'true') throw new Error('pebble is not installed (CI=true: ACME tests must run); apt-get install -y pebble');
  t.skip('pebble is not installed (apt-get install -y pebble); skipped outside CI');
  return undefined;
}

/** The TXT values of `name`: the file names in `<txtDir>/<name>/` (a test's DNS-01 program adds and removes them). */
function txtValues(txtDir: string | undefined, name: string): string[] {
  if (txtDir === undefined || name.includes('/') || name.startsWith('.')) return [];
  try {
    return readdirSync(join(txtDir, name.toLowerCase()));
  } catch {
    return [];
  }
}

/** A tiny DNS server: A → 127.0.0.1, TXT → the values under `txtDir`, everything else → empty answer. */
async function startDns(txtDir: string | undefined): Promise<{ port: number; close: () => Promise<void> }> {
  const sock = dgram.createSocket('udp4');
  sock.on('message', (msg, rinfo) => {
    let q: dnsPacket.Packet;
    try {
      q = dnsPacket.decode(msg);
    } catch {
      return;
    }
    const question = q.questions?.[0];
    const answers: dnsPacket.Answer[] =
      question?.type === 'A'
        ? [{ type: 'A', name: question.name, ttl: 1, data: '127.0.0.1' }]
        : question?.type === 'TXT'
          ? txtValues(txtDir, question.name).map((v) => ({ type: 'TXT' as const, name: question.name, ttl: 1, data: v }))
          : [];
    const reply = dnsPacket.encode({ type: 'response', id: q.id ?? 0, flags: dnsPacket.AUTHORITATIVE_ANSWER | dnsPacket.RECURSION_DESIRED, questions: q.questions ?? [], answers });
    sock.send(reply, rinfo.port, rinfo.address);
  });
  sock.bind(0, '127.0.0.1');
  await once(sock, 'listening');
  return { port: sock.address().port, close: () => new Promise<void>((r) => sock.close(() => r())) };
}

/** Options of a Pebble run. */
export interface PebbleOptions {
  /** Port Pebble dials for HTTP-01 (Portico's http port). */
  readonly httpPort: number;
  /** Port Pebble dials for TLS-ALPN-01 (Portico's https port). */
  readonly tlsPort: number;
  /** Lifetime of issued certificates, seconds. */
  readonly validitySeconds?: number;
  /** Percentage of good nonces rejected as bad. @default 0 */
  readonly nonceReject?: number;
  readonly dir: string;
  /** Where the DNS responder reads TXT records: a directory per record name holding one empty file per value. */
  readonly txtDir?: string;
}

/** A running Pebble. */
export interface Pebble {
  readonly directoryUrl: string;
  readonly mgmtPort: number;
  /** CA of Pebble's own HTTPS listeners (trust it for the ACME API). */
  readonly apiCaPem: string;
  readonly caFile: string;
  /** Pebble's output, for failure messages. */
  readonly output: string[];
  /** The issuing root of this Pebble run (new at each start). */
  root(): Promise<string>;
  stop(): Promise<void>;
  /** Starts again on the same ports (Pebble forgets accounts and makes a new root). */
  restart(): Promise<void>;
  /** Portico's `acme` settings for this Pebble, with short polls and retries so tests run fast; `extra` overrides. */
  acme(extra?: Partial<AcmeInput>): AcmeInput;
}

function httpsGet(url: string, ca: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    https
      .get(url, { ca, agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

/** Starts Pebble and its DNS responder; `t.after` stops both. */
export async function startPebble(t: TestContext, bin: string, opts: PebbleOptions): Promise<Pebble> {
  const dns = await startDns(opts.txtDir);
  const ca = await LocalCa.create('Pebble API Test CA', 2);
  const leaf = await ca.issue(['localhost'], { ips: ['127.0.0.1', '::1'], days: 1 });
  const certFile = join(opts.dir, 'pebble-api.pem');
  const keyFile = join(opts.dir, 'pebble-api-key.pem');
  const caFile = join(opts.dir, 'pebble-api-ca.pem');
  await writeFile(certFile, leaf.chain);
  await writeFile(keyFile, leaf.key, { mode: 0o600 });
  await writeFile(caFile, ca.certPem);
  const apiPort = await freePort();
  const mgmtPort = await freePort();
  const configFile = join(opts.dir, 'pebble-config.json');
  await writeFile(
    configFile,
    JSON.stringify({
      pebble: {
        listenAddress: `127.0.0.1:${apiPort}`,
        managementListenAddress: `127.0.0.1:${mgmtPort}`,
        certificate: certFile,
        privateKey: keyFile,
        httpPort: opts.httpPort,
        tlsPort: opts.tlsPort,
        ocspResponderURL: '',
        externalAccountBindingRequired: false,
        ...(opts.validitySeconds === undefined ? {} : { certificateValidityPeriod: opts.validitySeconds }),
      },
    }),
  );
  const output: string[] = [];
  let child: ChildProcess | undefined;
  const directoryUrl = `https://127.0.0.1:${apiPort}/dir`;

  const start = async (): Promise<void> => {
    const c = spawn(bin, ['-config', configFile, '-dnsserver', `127.0.0.1:${dns.port}`, '-strict=false'], {
      env: {
        ...process.env,
        PEBBLE_VA_NOSLEEP: '1',
        PEBBLE_WFE_NONCEREJECT: String(opts.nonceReject ?? 0),
        PEBBLE_AUTHZREUSE: '0',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child = c;
    c.stdout?.setEncoding('utf8').on('data', (s: string) => output.push(s));
    c.stderr?.setEncoding('utf8').on('data', (s: string) => output.push(s));
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (c.exitCode !== null) throw new Error(`pebble exited with ${c.exitCode}:\n${output.join('')}`);
      try {
        const r = await httpsGet(directoryUrl, ca.certPem);
        if (r.status === 200) return;
      } catch {
        // not up yet
      }
      if (Date.now() > deadline) throw new Error(`pebble did not answer on ${directoryUrl} within 10 s:\n${output.join('')}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const stop = async (): Promise<void> => {
    const c = child;
    child = undefined;
    if (c === undefined || c.exitCode !== null || c.signalCode !== null) return;
    const exited = once(c, 'exit');
    c.kill('SIGTERM');
    const timer = setTimeout(() => c.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(timer);
  };
  t.after(async () => {
    await stop();
    await dns.close();
  });
  await start();
  return {
    directoryUrl,
    mgmtPort,
    apiCaPem: ca.certPem,
    caFile,
    output,
    async root() {
      const r = await httpsGet(`https://127.0.0.1:${mgmtPort}/roots/0`, ca.certPem);
      if (r.status !== 200) throw new Error(`pebble roots/0 answered ${r.status}`);
      return r.body;
    },
    stop,
    restart: async () => {
      await stop();
      await start();
    },
    acme: (extra = {}) => ({
      directory: directoryUrl,
      caFile,
      email: 'ops@portico.test',
      termsOfServiceAgreed: true,
      pollInterval: '100ms',
      retryDelay: '200ms',
      retryMaxDelay: '1s',
      ...extra,
    }),
  };
}

/** A Portico started on given ports with a config file in `dir`. */
export interface AcmeProxy {
  readonly portico: Portico;
  readonly logs: Record<string, unknown>[];
  readonly configFile: string;
  reconfigure(config: Omit<ConfigInput, 'listen'>): Promise<void>;
  stop(): Promise<void>;
}

/** The stop functions of the Porticos each test started, so its clean-up can stop them before removing their files. */
const startedIn = new WeakMap<TestContext, (() => Promise<void>)[]>();

/**
 * Stops every Portico `t` started with startPorticoOn. node:test runs `t.after` hooks in the order they were
 * added, so a hook added before the Porticos started (say, one removing their certs directory) calls this first.
 */
export async function stopPorticosOf(t: TestContext): Promise<void> {
  for (const stop of startedIn.get(t) ?? []) await stop();
}

/** Starts Portico on `httpsPort`/`httpPort` (the ports Pebble dials); `t.after` stops it. */
export async function startPorticoOn(
  t: TestContext,
  dir: string,
  ports: { httpsPort: number; httpPort: number },
  config: Omit<ConfigInput, 'listen'>,
): Promise<AcmeProxy> {
  const configFile = join(dir, 'portico.json');
  const full = (c: Omit<ConfigInput, 'listen'>): ConfigInput => ({
    listen: { https: { port: ports.httpsPort, addresses: ['127.0.0.1'] }, http: { port: ports.httpPort, addresses: ['127.0.0.1'] } },
    certsDir: dir,
    ...c,
  });
  await writeFile(configFile, JSON.stringify(full(config)));
  const logs: Record<string, unknown>[] = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) });
  const portico = new Portico(configFile, log);
  await portico.start();
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    await portico.stop();
  };
  t.after(stop);
  const stops = startedIn.get(t) ?? [];
  stops.push(stop);
  startedIn.set(t, stops);
  return {
    portico,
    logs,
    configFile,
    async reconfigure(c) {
      await writeFile(configFile, JSON.stringify(full(c)));
      const r = await portico.reload();
      if (!r.ok) throw new Error(`reload failed: ${JSON.stringify(r.issues)}`);
    },
    stop,
  };
}

/** The certificate a TLS client gets for `servername`, and whether it verifies against `ca`. */
export function handshake(port: number, servername: string | undefined, ca?: string): Promise<{ authorized: boolean; error: string | undefined; fingerprint256: string }> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ...(servername === undefined ? { checkServerIdentity: () => undefined } : { servername }), ...(ca === undefined ? {} : { ca }), rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] }, () => {
      const cert = socket.getPeerCertificate();
      resolve({ authorized: socket.authorized, error: socket.authorizationError?.toString(), fingerprint256: cert.fingerprint256 });
      socket.end();
    });
    socket.on('error', reject);
    // A handshake that never completes must fail the test, not hang it.
    socket.setTimeout(5000, () => socket.destroy(new Error(`no tls handshake with 127.0.0.1:${port} (${servername ?? 'no sni'}) within 5 s`)));
  });
}

/** Polls `fn` every 50 ms until it returns a value other than undefined, or fails after `timeoutMs`. */
export async function waitFor<T>(what: string, fn: () => T | undefined | Promise<T | undefined>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
