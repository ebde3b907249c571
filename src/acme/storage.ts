/**
 * Where ACME state lives on disk and how it is written: the account key per
 * directory, and one cert.pem + key.pem (+ meta.json) per host under
 * `<certsDir>/acme/`. Every write is a temp file + rename, so a reader (a
 * restart, another worker's certificate watcher) never sees half a file.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { buildCertPair, type CertPair } from '../tls/cert-pair.js';

/** The ACME state directory: `<certsDir>/acme`. */
export function acmeDir(certsDir: string): string {
  return join(certsDir, 'acme');
}

/** A file-system-safe folder name for a host or a directory's `host:port`. */
function safeName(name: string): string {
  return name.replace(/^\*\./, '_wildcard.').replace(/[^a-z0-9._-]/gi, '_');
}

/** Where pending challenges are shared between processes: `<certsDir>/acme/challenges/{http-01,tls-alpn-01}`. */
export function challengeDirs(certsDir: string): { http01: string; alpn: string } {
  const base = join(acmeDir(certsDir), 'challenges');
  return { http01: join(base, 'http-01'), alpn: join(base, 'tls-alpn-01') };
}

/** `<certsDir>/acme/<directory host>/account.key`: one account per CA. */
export function accountKeyPath(certsDir: string, directoryUrl: string): string {
  return join(acmeDir(certsDir), safeName(new URL(directoryUrl).host), 'account.key');
}

/** The stored files of one ACME host. */
export interface StoredPaths {
  readonly dir: string;
  readonly certFile: string;
  readonly keyFile: string;
  readonly metaFile: string;
}

/** `<certsDir>/acme/<primary name>/{cert.pem,key.pem,meta.json}`. */
export function storedPaths(certsDir: string, primaryName: string): StoredPaths {
  const dir = join(acmeDir(certsDir), safeName(primaryName));
  return { dir, certFile: join(dir, 'cert.pem'), keyFile: join(dir, 'key.pem'), metaFile: join(dir, 'meta.json') };
}

/** Writes `data` to `file` atomically (temp file in the same folder, then rename) with `mode`. */
export async function writeFileAtomic(file: string, data: string | Buffer, mode = 0o644): Promise<void> {
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    await writeFile(tmp, data, { mode, flush: true });
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

/** What meta.json records: which CA issued the stored pair. */
interface StoredMeta {
  readonly directory: string;
  readonly names: readonly string[];
  readonly issuedAt: string;
}

/** Saves an issued pair: key first (0600), then the certificate, then meta.json. */
export async function saveIssued(paths: StoredPaths, directory: string, names: readonly string[], certPem: string, keyPem: string): Promise<void> {
  await writeFileAtomic(paths.keyFile, keyPem, 0o600);
  await writeFileAtomic(paths.certFile, certPem, 0o644);
  const meta: StoredMeta = { directory, names, issuedAt: new Date().toISOString() };
  await writeFileAtomic(paths.metaFile, `${JSON.stringify(meta, null, 2)}\n`, 0o644);
}

/**
 * Loads the stored pair if it exists, came from `directory`, and is valid for
 * `names`. Returns undefined when there is nothing usable (missing files, a
 * different CA, expired, names changed); `reason` says why, for the log.
 */
export async function loadStored(
  paths: StoredPaths,
  directory: string,
  names: readonly string[],
): Promise<{ pair: CertPair; reason?: undefined; otherDirectory?: undefined; missing?: undefined } | { pair?: undefined; reason: string; otherDirectory?: boolean; missing?: boolean }> {
  let certPem: Buffer;
  let keyPem: Buffer;
  let meta: StoredMeta | undefined;
  try {
    [certPem, keyPem] = await Promise.all([readFile(paths.certFile), readFile(paths.keyFile)]);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { reason: 'no stored certificate', missing: true };
    return { reason: `the stored certificate or key cannot be read (${code ?? (err as Error).message})` };
  }
  try {
    meta = JSON.parse(await readFile(paths.metaFile, 'utf8')) as StoredMeta;
  } catch {
    meta = undefined;
  }
  if (meta !== undefined && meta.directory !== directory) return { reason: `stored certificate came from ${meta.directory}`, otherDirectory: true };
  try {
    return { pair: buildCertPair(paths.certFile, paths.keyFile, certPem, keyPem, names) };
  } catch (err) {
    return { reason: (err as Error).message };
  }
}
