/**
 * Loading one certificate + key pair from PEM files into a validated
 * SecureContext. Validation uses Node's X509Certificate (no hand-written X.509).
 */
import { X509Certificate, createPrivateKey, createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createSecureContext, type SecureContext } from 'node:tls';
import { PorticoError } from '../errors.js';
import { SERVER_TLS_OPTIONS } from './tls-settings.js';

/** A validated certificate pair, ready to serve. */
export interface CertPair {
  readonly certFile: string;
  readonly keyFile: string;
  readonly context: SecureContext;
  readonly certPem: Buffer;
  readonly keyPem: Buffer;
  /** The leaf certificate. */
  readonly leaf: X509Certificate;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly issuer: string;
  /** SHA-256 fingerprint of the leaf, as `AA:BB:…`. */
  readonly fingerprint256: string;
  /** Hash of cert + key bytes: unchanged files give the same digest. */
  readonly digest: string;
}

function invalid(file: string, reason: string, fix: string, cause?: unknown): PorticoError {
  return new PorticoError('PORTICO_CERT_INVALID', `${file}: ${reason}; ${fix}`, { cause });
}

/** Checks a certificate covers a configured name; `*.x` names are checked with a sample label. */
export function certCovers(leaf: X509Certificate, name: string): boolean {
  const probe = name.startsWith('*.') ? `portico-probe${name.slice(1)}` : name;
  return leaf.checkHost(probe, { wildcards: true, singleLabelSubdomains: false }) !== undefined;
}

/** Builds a CertPair from PEM bytes; throws PORTICO_CERT_INVALID naming the file and the reason. */
export function buildCertPair(
  certFile: string,
  keyFile: string,
  certPem: Buffer,
  keyPem: Buffer,
  names: readonly string[],
  now = Date.now(),
): CertPair {
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(certPem);
  } catch (err) {
    throw invalid(certFile, 'not a PEM certificate', 'the file must hold "-----BEGIN CERTIFICATE-----" blocks, leaf first', err);
  }
  let key;
  try {
    key = createPrivateKey(keyPem);
  } catch (err) {
    throw invalid(keyFile, 'not a PEM private key', 'the file must hold an unencrypted RSA or ECDSA key ("-----BEGIN PRIVATE KEY-----")', err);
  }
  if (!leaf.checkPrivateKey(key)) {
    throw invalid(keyFile, `this key does not match the certificate ${certFile}`, 'install the key the certificate was issued for');
  }
  const notBefore = new Date(leaf.validFrom);
  const notAfter = new Date(leaf.validTo);
  if (notAfter.getTime() <= now) {
    throw invalid(certFile, `the certificate expired on ${notAfter.toISOString()}`, 'renew it');
  }
  if (notBefore.getTime() > now + 60_000) {
    throw invalid(certFile, `the certificate is not valid before ${notBefore.toISOString()}`, 'check the clock or the certificate');
  }
  for (const name of names) {
    if (!certCovers(leaf, name)) {
      throw invalid(certFile, `the certificate does not cover ${JSON.stringify(name)} (its names: ${leaf.subjectAltName ?? leaf.subject})`, 'issue a certificate whose SAN lists this name');
    }
  }
  let context: SecureContext;
  try {
    context = createSecureContext({ ...SERVER_TLS_OPTIONS, cert: certPem, key: keyPem });
  } catch (err) {
    throw invalid(certFile, `OpenSSL refused the pair (${(err as Error).message})`, 'check the files', err);
  }
  const digest = createHash('sha256').update(certPem).update(keyPem).digest('hex');
  return {
    certFile,
    keyFile,
    context,
    certPem,
    keyPem,
    leaf,
    notBefore,
    notAfter,
    issuer: leaf.issuer,
    fingerprint256: leaf.fingerprint256,
    digest,
  };
}

/** Reads and validates a pair of PEM files. */
export async function loadCertPair(certFile: string, keyFile: string, names: readonly string[]): Promise<CertPair> {
  let certPem: Buffer;
  let keyPem: Buffer;
  try {
    certPem = await readFile(certFile);
  } catch (err) {
    throw invalid(certFile, `cannot read the certificate (${(err as NodeJS.ErrnoException).code ?? 'error'})`, 'check the path (relative to certsDir) and permissions', err);
  }
  try {
    keyPem = await readFile(keyFile);
  } catch (err) {
    throw invalid(keyFile, `cannot read the key (${(err as NodeJS.ErrnoException).code ?? 'error'})`, 'check the path (relative to certsDir) and permissions', err);
  }
  return buildCertPair(certFile, keyFile, certPem, keyPem, names);
}
