/**
 * The per-run working directory bench/.work/ (gitignored): certificate,
 * backend document root, generated configs and logs.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { writeClientOpensslConf } from './client-tls.js';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The host name every client sends as SNI and Host. */
export const BENCH_HOST = 'bench.localhost';

/** Ports, all on 127.0.0.1. */
export const PORTS = {
  backendHttp: 18081,
  backendHttps: 18443,
  /** The first server under test's; the next ones add 10 each (all servers run side by side). */
  proxyHttps: 19443,
  proxyHttp: 19080,
} as const;

/** Size of the small response body in S1, S2, S3 and S5. */
export const SMALL_BODY_BYTES = 100;
/** Size of the large response in S4. */
export const LARGE_BODY_BYTES = 1024 * 1024;

/** Paths of everything the run creates. */
export interface Workspace {
  readonly repoRoot: string;
  readonly dir: string;
  readonly certFile: string;
  readonly keyFile: string;
  /** Certificate and key in one file, for HAProxy. */
  readonly pemFile: string;
  readonly docRoot: string;
  readonly smallBody: string;
  /** OpenSSL config for wrk and h2load (OPENSSL_CONF): TLS 1.3 suites in browsers' order (client-tls.ts). */
  readonly clientOpensslConf: string;
}

/** Repository root, from dist/bench/workspace.js or bench/workspace.ts alike. */
export function findRepoRoot(): string {
  const here = fileURLToPath(new URL('.', import.meta.url));
  return join(here, here.includes(join('dist', 'bench')) ? '../..' : '..');
}

/**
 * Create a fresh bench/.work/: one ECDSA P-256 certificate for
 * bench.localhost shared by every server, and the backend's files.
 */
export function prepareWorkspace(): Workspace {
  const repoRoot = findRepoRoot();
  const dir = join(repoRoot, 'bench', '.work');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const certFile = join(dir, 'bench.crt');
  const keyFile = join(dir, 'bench.key');
  execFileSync(
    'openssl',
    [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
      '-keyout', keyFile, '-out', certFile, '-days', '2', '-subj', `/CN=${BENCH_HOST}`,
      '-addext', `subjectAltName=DNS:${BENCH_HOST}`,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  const pemFile = join(dir, 'bench.pem');
  writeFileSync(pemFile, readFileSync(certFile, 'utf8') + readFileSync(keyFile, 'utf8'));
  const docRoot = join(dir, 'www');
  mkdirSync(docRoot);
  writeFileSync(join(docRoot, '1m'), Buffer.alloc(LARGE_BODY_BYTES, 0x61));
  // Exactly SMALL_BODY_BYTES, no characters nginx would need escaped.
  const smallBody = 'portico-bench-'.padEnd(SMALL_BODY_BYTES - 1, 'x') + '\n';
  const clientOpensslConf = writeClientOpensslConf(dir);
  return { repoRoot, dir, certFile, keyFile, pemFile, docRoot, smallBody, clientOpensslConf };
}

/** Make (if needed) and return a subdirectory of the workspace. */
export function subdir(ws: Workspace, name: string): string {
  const d = join(ws.dir, name);
  mkdirSync(d, { recursive: true });
  return d;
}
