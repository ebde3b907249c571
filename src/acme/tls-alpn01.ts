/**
 * The TLS-ALPN-01 responder (RFC 8737): a self-signed certificate carrying
 * the acmeIdentifier extension, per name with a pending challenge. The HTTPS
 * listener presents it to a client that offers ALPN "acme-tls/1" for that
 * name: its ALPN callback runs before the certificate (SNI) callback
 * (OpenSSL ≥ 1.1.0; checked by test/acme-alpn-order.test.ts).
 *
 * As with HTTP-01, the CA's handshake may reach a worker that is not the
 * orderer: pending challenge certificates are also written to a shared
 * folder (`<certsDir>/acme/challenges/tls-alpn-01/<name>.pem`), read
 * synchronously only for handshakes offering acme-tls/1.
 */
import { readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createSecureContext, type SecureContext } from 'node:tls';
import type { Authorization } from 'acme-client';
import type { AlpnChallengeSource } from '../listen/https-listener.js';
import { writeFileAtomic } from './storage.js';

/** A DNS name as the SNI carries it; anything else is never looked up on disk. */
const NAME_RE = /^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/;

/** Pending TLS-ALPN-01 challenge certificates by name. */
export class AlpnResponder implements AlpnChallengeSource {
  readonly #contexts = new Map<string, SecureContext>();
  #dir: string | undefined;

  /** Sets the folder shared with other processes (undefined: memory only). */
  setSharedDir(dir: string | undefined): void {
    this.#dir = dir;
  }

  /** The challenge context for `servername`, if one is pending. Called per handshake offering acme-tls/1. */
  contextFor(servername: string): SecureContext | undefined {
    const own = this.#contexts.get(servername);
    if (own !== undefined || this.#dir === undefined || !NAME_RE.test(servername)) return own;
    try {
      const pem = readFileSync(join(this.#dir, `${servername}.pem`));
      return createSecureContext({ key: pem, cert: pem, minVersion: 'TLSv1.2' });
    } catch {
      return undefined;
    }
  }

  /** Builds the challenge certificate for `authz` and serves it until `remove`. */
  async add(authz: Authorization, keyAuthorization: string): Promise<void> {
    const name = authz.identifier.value.toLowerCase();
    // acme-client is loaded only when a challenge is actually answered (about 30 MiB of RSS otherwise saved).
    const { default: acme } = await import('acme-client');
    const [key, cert] = await acme.crypto.createAlpnCertificate(authz, keyAuthorization);
    // RFC 8737 §3: TLS 1.2 or later.
    this.#contexts.set(name, createSecureContext({ key, cert, minVersion: 'TLSv1.2' }));
    if (this.#dir !== undefined && NAME_RE.test(name)) await writeFileAtomic(join(this.#dir, `${name}.pem`), Buffer.concat([key, Buffer.from('\n'), cert]), 0o600);
  }

  async remove(name: string): Promise<void> {
    const lower = name.toLowerCase();
    this.#contexts.delete(lower);
    if (this.#dir !== undefined && NAME_RE.test(lower)) await rm(join(this.#dir, `${lower}.pem`), { force: true });
  }
}
