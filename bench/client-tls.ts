/**
 * What the bench's clients offer in their TLS handshakes: TLS 1.3 suites in the
 * order browsers send them (Chrome and Firefox put TLS_AES_128_GCM_SHA256
 * first). wrk and h2load, built on OpenSSL, otherwise offer OpenSSL's order,
 * TLS_AES_256_GCM_SHA384 first, which servers that follow the client's order
 * (nginx, Portico) take while Caddy picks AES-128-GCM by its own order: one
 * run compared different ciphers. With the browsers' order, and the reference
 * servers that follow their own order set to follow the client's, every
 * server negotiates the cipher a browser would get from it.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** TLS 1.3 suites, browsers' order. */
export const CLIENT_TLS13_SUITES = 'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256';

/** The `ciphers` option for the Node clients: the TLS 1.3 suites above, then Node's own TLS 1.2 list. */
export const CLIENT_CIPHERS = `${CLIENT_TLS13_SUITES}:HIGH:!aNULL:!MD5`;

/** The cipher every server is expected to negotiate with these clients. */
export const EXPECTED_CIPHER = 'TLS_AES_128_GCM_SHA256';

/**
 * Write the OpenSSL config that wrk (which has no cipher option) and h2load read through
 * OPENSSL_CONF: the system default for every TLS context they make. Returns its path.
 */
export function writeClientOpensslConf(dir: string): string {
  const file = join(dir, 'client-openssl.cnf');
  writeFileSync(
    file,
    [
      '# Read by wrk and h2load (OPENSSL_CONF): offer TLS 1.3 suites in browsers\' order (bench/client-tls.ts).',
      'openssl_conf = openssl_init',
      '[openssl_init]',
      'ssl_conf = ssl_sect',
      '[ssl_sect]',
      'system_default = system_default_sect',
      '[system_default_sect]',
      `Ciphersuites = ${CLIENT_TLS13_SUITES}`,
      '',
    ].join('\n'),
  );
  return file;
}
