/** Starting Portico in-process for a test, with a per-run CA and certificates on disk. */
import { mkdtemp, writeFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import pino from 'pino';
import { LocalCa } from '../../src/tls/local-ca.js';
import { Portico } from '../../src/server/portico.js';
import { checkConfigFile } from '../../src/cli/check-config.js';
import type { ConfigInput } from '../../src/config/schema.js';
import { freePort } from './net.js';

/** A per-run CA; certificates it issues are written under `dir`. */
export interface TestPki {
  ca: LocalCa;
  caPem: string;
  dir: string;
  /** Issues a certificate for `names` and writes `<file>.pem` and `<file>-key.pem`; returns the two file names. */
  issue(file: string, names: string[], opts?: Parameters<LocalCa['issue']>[1]): Promise<{ cert: string; key: string }>;
  cleanup(): Promise<void>;
}

/** Makes a temp dir with a fresh CA. */
export async function makePki(): Promise<TestPki> {
  const dir = await mkdtemp(join(tmpdir(), 'portico-test-'));
  const ca = await LocalCa.create('Portico Test CA');
  return {
    ca,
    caPem: ca.certPem,
    dir,
    async issue(file, names, opts) {
      const leaf = await ca.issue(names, opts);
      await writeFile(join(dir, `${file}.pem`), leaf.chain);
      await writeFile(join(dir, `${file}-key.pem`), leaf.key, { mode: 0o600 });
      return { cert: `${file}.pem`, key: `${file}-key.pem` };
    },
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}

/** A running in-process Portico. */
export interface TestProxy {
  portico: Portico;
  httpsPort: number;
  httpPort: number;
  configFile: string;
  /** Rewrites the config file and reloads. */
  reconfigure(config: Omit<ConfigInput, 'listen'>): Promise<void>;
  stop(): Promise<void>;
  logs: Record<string, unknown>[];
}

/** Writes a config (listen ports filled in, certsDir = pki.dir) and starts Portico. */
export async function startProxy(pki: TestPki, config: Omit<ConfigInput, 'listen'>): Promise<TestProxy> {
  const httpsPort = await freePort();
  const httpPort = await freePort();
  const configFile = join(pki.dir, `portico-${httpsPort}.json`);
  const full = (c: Omit<ConfigInput, 'listen'>): ConfigInput => ({
    listen: { https: { port: httpsPort, addresses: ['127.0.0.1'] }, http: { port: httpPort, addresses: ['127.0.0.1'] } },
    certsDir: pki.dir,
    ...c,
  });
  await writeFile(configFile, JSON.stringify(full(config)));
  const logs: Record<string, unknown>[] = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) });
  const portico = new Portico(configFile, log);
  await portico.start();
  return {
    portico,
    httpsPort,
    httpPort,
    configFile,
    logs,
    async reconfigure(c) {
      await writeFile(configFile, JSON.stringify(full(c)));
      const r = await portico.reload();
      if (!r.ok) throw new Error(`reload failed: ${JSON.stringify(r.issues)}`);
    },
    stop: () => portico.stop(),
  };
}

/** The first log line after index `from` that `pred` accepts, waiting up to `timeoutMs` for it; throws naming `what`. */
export async function waitForLog(
  proxy: { readonly logs: readonly Record<string, unknown>[] },
  what: string,
  pred: (line: Record<string, unknown>) => boolean,
  from = 0,
  timeoutMs = 4000,
): Promise<Record<string, unknown>> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const line = proxy.logs.slice(from).find(pred);
    if (line !== undefined) return line;
    if (Date.now() > end) throw new Error(`no log line ${what} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Something a test tears down once the proxy has stopped: an upstream, an nginx, a client. */
export type Closer = () => unknown;

/** startProxy(), stopped after the test; then each of `also` is closed in order and the PKI's directory removed. */
export async function startProxyFor(t: TestContext, pki: TestPki, config: Omit<ConfigInput, 'listen'>, also: readonly Closer[] = []): Promise<TestProxy> {
  const proxy = await startProxy(pki, config);
  t.after(async () => {
    await proxy.stop();
    for (const close of also) await close();
    await pki.cleanup();
  });
  return proxy;
}

/** Portico serving one host (a certificate issued for it) with every path routed to `upstream`; cleaned up as startProxyFor. */
export async function proxyOneHost(
  t: TestContext,
  pki: TestPki,
  host: string,
  upstream: string,
  opts: { readonly also?: readonly Closer[]; readonly config?: Omit<ConfigInput, 'listen' | 'hosts'> } = {},
): Promise<TestProxy> {
  const tls = await pki.issue(host, [host]);
  return startProxyFor(t, pki, { ...opts.config, hosts: { [host]: { tls, routes: [{ path: '/', upstream }] } } }, opts.also);
}

/** `portico check` of a config with these hosts (certsDir = pki.dir), written to `<pki.dir>/portico.json`: each problem as "path: message". */
export async function checkHosts(pki: TestPki, hosts: Record<string, unknown>): Promise<string[]> {
  const file = join(pki.dir, 'portico.json');
  await writeFile(file, JSON.stringify({ certsDir: pki.dir, hosts }));
  return (await checkConfigFile(file)).issues.map((i) => `${i.path}: ${i.message}`);
}
