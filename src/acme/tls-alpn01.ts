/**
 * The TLS-ALPN-01 responder (RFC 8737): a self-signed certificate carrying
 * the acmeIdentifier extension, per name with a pending challenge. The HTTPS
 * listener presents it to a client that offers ALPN "acme-tls/1" for that
 * name: its ALPN callback runs before the certificate (SNI) callback
 * (OpenSSL ≥ 1.1.0; checked by test/acme-alpn-order.test.ts).
 */
import { createSecureContext, type SecureContext } from 'node:tls';
import acme from 'acme-client';
import type { AlpnChallengeSource } from '../listen/https-listener.js';

/** Pending TLS-ALPN-01 challenge certificates by name. */
export class AlpnResponder implements AlpnChallengeSource {
  readonly #contexts = new Map<string, SecureContext>();

  /** The challenge context for `servername`, if one is pending. Called per handshake offering acme-tls/1. */
  contextFor(servername: string): SecureContext | undefined {
    return this.#contexts.get(servername);
  }

  /** Builds the challenge certificate for `authz` and serves it until `remove`. */
  async add(authz: acme.Authorization, keyAuthorization: string): Promise<void> {
    const [key, cert] = await acme.crypto.createAlpnCertificate(authz, keyAuthorization);
    // RFC 8737 §3: the protocol is fixed, TLS 1.2 or later.
    this.#contexts.set(authz.identifier.value.toLowerCase(), createSecureContext({ key, cert, minVersion: 'TLSv1.2' }));
  }

  remove(name: string): void {
    this.#contexts.delete(name.toLowerCase());
  }
}
