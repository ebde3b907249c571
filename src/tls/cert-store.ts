/**
 * The certificates being served, by certificate id. A Plan names certificate
 * ids; the store maps them to the current pair, so a certificate can be
 * replaced (file rotation, ACME renewal) without rebuilding the Plan and a
 * Plan swap keeps certificates that did not change.
 */
import type { SecureContext } from 'node:tls';
import type { CertPair } from './cert-pair.js';

/** Certificate id of a mounted pair: its two absolute paths. */
export function fileCertId(certFile: string, keyFile: string): string {
  return `file:${certFile}|${keyFile}`;
}

/** Certificate id of an ACME-managed host. */
export function acmeCertId(primaryName: string): string {
  return `acme:${primaryName}`;
}

/** Current certificate pairs by id. */
export class CertStore {
  readonly #pairs = new Map<string, CertPair>();

  /** The SecureContext for an id, or undefined when none is loaded yet. Hot path (handshakes). */
  context(id: string): SecureContext | undefined {
    return this.#pairs.get(id)?.context;
  }

  get(id: string): CertPair | undefined {
    return this.#pairs.get(id);
  }

  set(id: string, pair: CertPair): void {
    this.#pairs.set(id, pair);
  }

  delete(id: string): void {
    this.#pairs.delete(id);
  }

  /** Every loaded pair, for the admin API, metrics and expiry warnings. */
  entries(): IterableIterator<[string, CertPair]> {
    return this.#pairs.entries();
  }
}
