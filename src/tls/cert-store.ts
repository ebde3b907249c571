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

/** Why the files of a served certificate were last refused (the previous pair serving on). */
export interface CertProblem {
  /** A stable code: PORTICO_CERT_INVALID, or the file system's (ENOENT, EACCES, …) when the files could not be read. */
  readonly code: string;
  /** What is wrong and where, with the fix. */
  readonly reason: string;
  readonly certFile: string;
  readonly keyFile: string;
  /** When the refusal happened. */
  readonly at: Date;
}

/** Current certificate pairs by id. */
export class CertStore {
  readonly #pairs = new Map<string, CertPair>();
  readonly #problems = new Map<string, CertProblem>();

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
    this.#problems.delete(id);
  }

  /** Keeps only the certificates a published Plan names, so /status and the metrics list the ones in use. */
  retain(ids: ReadonlySet<string>): void {
    for (const id of this.#pairs.keys()) if (!ids.has(id)) this.#pairs.delete(id);
    for (const id of this.#problems.keys()) if (!ids.has(id)) this.#problems.delete(id);
  }

  /** Records why the current files of `id` were refused (shown by the admin API until they are fixed). */
  setProblem(id: string, problem: CertProblem): void {
    this.#problems.set(id, problem);
  }

  /** Forgets the refusal of `id`: its files were accepted, or are back to the pair being served. */
  clearProblem(id: string): void {
    this.#problems.delete(id);
  }

  /** Why the files of `id` were last refused, while they still are. */
  problem(id: string): CertProblem | undefined {
    return this.#problems.get(id);
  }

  /** Every loaded pair, for the admin API, metrics and expiry warnings. */
  entries(): IterableIterator<[string, CertPair]> {
    return this.#pairs.entries();
  }
}
