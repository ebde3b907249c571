/**
 * The ACME account: one key per CA directory, created once under
 * `<certsDir>/acme/<directory host>/account.key` (0600), and the acme-client
 * Client that signs with it. Registration itself (contact, terms of service,
 * External Account Binding) happens at the start of each order, which also
 * finds the existing account for the key (RFC 8555 §7.3.1).
 */
import { link, readFile, rm } from 'node:fs/promises';
import acme from 'acme-client';
import { writeFileAtomic } from './storage.js';

/** Reads the account key, creating it (ECDSA P-256) if there is none yet. Safe against two processes creating it at once. */
export async function loadAccountKey(file: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const key = await acme.crypto.createPrivateEcdsaKey();
  const tmp = `${file}.new-${process.pid}`;
  await writeFileAtomic(tmp, key, 0o600);
  try {
    // link() fails with EEXIST if another process won the race: then its key is the account key.
    await link(tmp, file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  } finally {
    await rm(tmp, { force: true });
  }
  return readFile(file);
}

/** What a client needs to know about the account. */
export interface AccountOptions {
  readonly directoryUrl: string;
  readonly accountKey: Buffer;
  readonly eab?: { readonly kid: string; readonly hmacKey: string } | undefined;
  /** First delay between polls of challenges and orders. */
  readonly pollIntervalMs: number;
}

/** A fresh acme-client Client for one order (a fresh one re-finds the account, e.g. after the CA forgot it). */
export function createAcmeClient(opts: AccountOptions): acme.Client {
  return new acme.Client({
    directoryUrl: opts.directoryUrl,
    accountKey: opts.accountKey,
    ...(opts.eab === undefined ? {} : { externalAccountBinding: { kid: opts.eab.kid, hmacKey: opts.eab.hmacKey } }),
    backoffAttempts: 12,
    backoffMin: opts.pollIntervalMs,
    backoffMax: 30_000,
  });
}
