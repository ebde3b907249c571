/**
 * Loading one certificate + key pair from PEM files into a validated
 * SecureContext. Validation uses Node's X509Certificate (no hand-written X.509).
 */
import { X509Certificate, createPrivateKey, createHash, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { createSecureContext, rootCertificates, type SecureContext } from 'node:tls';
import { PorticoError } from '../errors.js';
import { SERVER_TLS_OPTIONS } from './tls-settings.js';
import { isPermissionError, permissionHint } from '../config/permission-hint.js';

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
  /** The intermediate the file lacks, when clients would have to fetch it (incompleteChain); undefined when the chain is whole. */
  readonly missingIssuer?: MissingIssuer;
  /** The OCSP responder the leaf names (its first http(s) one), and whether the file holds the issuer an OCSP request must name. */
  readonly ocspResponder?: OcspResponder;
}

/** A leaf's OCSP responder, as Node reads its Authority Information Access extension. */
export interface OcspResponder {
  readonly url: string;
  /** The file holds the certificate that issued the leaf; without it no OCSP request can be made, so nothing is stapled. */
  readonly issuerInFile: boolean;
}

/** The certificate that issued a leaf, missing from its file: its subject, and where clients could fetch it (AIA). */
export interface MissingIssuer {
  readonly issuer: string;
  readonly url: string;
}

/** How to fix a certificate or key file that could not be read: its permissions, or its path. */
function readFix(err: unknown): string {
  return isPermissionError((err as NodeJS.ErrnoException).code) ? permissionHint() : 'check the path (relative to certsDir) and permissions';
}

function invalid(file: string, reason: string, fix: string, cause?: unknown): PorticoError {
  return new PorticoError('PORTICO_CERT_INVALID', `${file}: ${reason}; ${fix}`, { cause });
}

/** Checks a certificate covers a configured name; `*.x` names are checked with a sample label, IP addresses against its IP SANs. */
export function certCovers(leaf: X509Certificate, name: string): boolean {
  if (isIP(name) !== 0) return leaf.checkIP(name) !== undefined;
  const probe = name.startsWith('*.') ? `portico-probe${name.slice(1)}` : name;
  return leaf.checkHost(probe, { wildcards: true, singleLabelSubdomains: false }) !== undefined;
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;
const PEM_ANY_KEY = /-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----/;
const PEM_ENCRYPTED_KEY = /-----BEGIN ENCRYPTED PRIVATE KEY-----|^Proc-Type: 4,ENCRYPTED/m;

/** What a file holds that is not what it should be, in words, with the fix (never throws). */
function describeNotCert(file: string, pem: Buffer): { reason: string; fix: string } {
  const text = pem.toString('latin1');
  if (pem.length === 0 || text.trim() === '') return { reason: 'the file is empty', fix: 'write the certificate chain (PEM, leaf first) into it' };
  if (PEM_ANY_KEY.test(text)) return { reason: 'the file holds a private key, not a certificate', fix: 'check that "cert" and "key" are not swapped, or that the chain was written to this file' };
  if (!text.includes('-----BEGIN ')) {
    try {
      new X509Certificate(pem);
      return { reason: 'the certificate is DER (binary), not PEM', fix: `convert it: openssl x509 -inform der -in ${file} -out ${file}.pem` };
    } catch {
      // Neither PEM nor DER: the generic answer below.
    }
  }
  if (text.includes('-----BEGIN CERTIFICATE-----') && !text.includes('-----END CERTIFICATE-----')) {
    return { reason: 'the certificate is cut short (no "-----END CERTIFICATE-----")', fix: 'write the whole chain' };
  }
  if (/-----END CERTIFICATE-----[^\r\n]/.test(text)) {
    return { reason: 'two PEM blocks are joined on one line ("-----END CERTIFICATE----------BEGIN …"), as when a file without a final newline is concatenated', fix: 'put a line break after each "-----END CERTIFICATE-----"' };
  }
  return { reason: 'not a PEM certificate', fix: 'the file must hold "-----BEGIN CERTIFICATE-----" blocks, leaf first' };
}

/** What a key file holds that is not a usable key, in words, with the fix (never throws). */
function describeNotKey(file: string, pem: Buffer): { reason: string; fix: string } {
  const text = pem.toString('latin1');
  if (pem.length === 0 || text.trim() === '') return { reason: 'the file is empty', fix: 'write the private key (PEM) into it' };
  if (PEM_ENCRYPTED_KEY.test(text)) {
    return { reason: 'the private key is encrypted with a passphrase, which Portico cannot ask for', fix: `store it unencrypted, readable by Portico only: openssl pkey -in ${file} -out ${file}.plain (then chmod 600)` };
  }
  if (text.includes('-----BEGIN CERTIFICATE-----') && !PEM_ANY_KEY.test(text)) {
    return { reason: 'the file holds a certificate, not a private key', fix: 'check that "cert" and "key" are not swapped' };
  }
  if (!text.includes('-----BEGIN ')) {
    try {
      createPrivateKey({ key: pem, format: 'der', type: 'pkcs8' });
      return { reason: 'the private key is DER (binary), not PEM', fix: `convert it: openssl pkey -inform der -in ${file} -out ${file}.pem` };
    } catch {
      // Neither PEM nor DER PKCS#8: the generic answer below.
    }
  }
  return { reason: 'not a PEM private key', fix: 'the file must hold an unencrypted RSA or ECDSA key ("-----BEGIN PRIVATE KEY-----")' };
}

/** When the key belongs to a certificate of the file other than the first, the 1-based place of that certificate. */
function keyMatchesLaterCert(certPem: Buffer, key: KeyObject): number | undefined {
  const blocks = certPem.toString('latin1').match(PEM_CERT) ?? [];
  for (let i = 1; i < blocks.length; i++) {
    try {
      if (new X509Certificate(blocks[i]!).checkPrivateKey(key)) return i + 1;
    } catch {
      // An unparsable later block: not this one.
    }
  }
  return undefined;
}

/** What Portico says of a certificate file without the intermediate that issued its certificate (also `portico check`). */
export const CHAIN_WARNING =
  'certificate chain incomplete: the file lacks the intermediate certificate that issued it; browsers fetch that, but curl, Node, Java and most apps fail with "unable to verify the first certificate": serve the full chain (certbot\'s fullchain.pem, leaf first)';

/** What Portico says of a certificate that names an OCSP responder but whose file lacks its issuer (also `portico check`). */
export const OCSP_CHAIN_WARNING =
  'ocsp stapling not possible: the certificate names an OCSP responder, but its file lacks the certificate that issued it, which an OCSP request must name: serve the full chain (leaf first, then its issuer)';

/** The certificate of the chain (`certPem`, after the leaf) that issued `leaf` and whose key verifies its signature, if the file holds it. */
export function issuerInChain(certPem: Buffer, leaf: X509Certificate): X509Certificate | undefined {
  const blocks = certPem.toString('latin1').match(PEM_CERT) ?? [];
  for (let i = 1; i < blocks.length; i++) {
    try {
      const c = new X509Certificate(blocks[i]!);
      if (leaf.checkIssued(c) && leaf.verify(c.publicKey)) return c;
    } catch {
      // An unparsable block issued nothing.
    }
  }
  return undefined;
}

/** The OCSP responder the leaf names (RFC 5280 §4.2.2.1), read by Node, and whether stapling can ask it. Cold path: once per pair loaded. */
function ocspResponderOf(certPem: Buffer, leaf: X509Certificate): OcspResponder | undefined {
  const url = /OCSP - URI:(https?:\/\/\S+)/i.exec(leaf.infoAccess ?? '')?.[1];
  if (url === undefined) return undefined;
  return { url, issuerInFile: issuerInChain(certPem, leaf) !== undefined };
}

/** The system's trusted roots (Node's bundled store), parsed once when first needed. */
let roots: X509Certificate[] | undefined;

function isIssuedByRoot(leaf: X509Certificate): boolean {
  roots ??= rootCertificates.flatMap((pem) => {
    try {
      return [new X509Certificate(pem)];
    } catch {
      return [];
    }
  });
  return roots.some((root) => leaf.checkIssued(root));
}

/**
 * The certificate that issued the leaf, when the file lacks it and clients would have to fetch it: served without
 * its intermediate (certbot's cert.pem instead of fullchain.pem), a chain verifies in browsers, which fetch the
 * intermediate from the leaf's AIA URL, but fails in curl, Node, Java and most apps ("unable to verify the first
 * certificate"). Only a leaf that names such a URL counts: a leaf a private root signed directly (whose clients
 * hold that root) names none, and one a public root signed needs nothing more. Cold path: once per pair loaded.
 */
export function incompleteChain(certPem: Buffer, leaf: X509Certificate): MissingIssuer | undefined {
  if (leaf.checkIssued(leaf)) return undefined;
  const url = /CA Issuers - URI:(\S+)/.exec(leaf.infoAccess ?? '')?.[1];
  if (url === undefined) return undefined;
  const blocks = certPem.toString('latin1').match(PEM_CERT) ?? [];
  for (let i = 1; i < blocks.length; i++) {
    try {
      if (leaf.checkIssued(new X509Certificate(blocks[i]!))) return undefined;
    } catch {
      // An unparsable later block issued nothing.
    }
  }
  if (isIssuedByRoot(leaf)) return undefined;
  return { issuer: leaf.issuer.replace(/\n/g, ', '), url };
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
  // X509Certificate also takes DER, which OpenSSL's context would refuse later with a cryptic error: PEM only.
  let leaf: X509Certificate | undefined;
  if (certPem.includes('-----BEGIN CERTIFICATE-----') && certPem.includes('-----END CERTIFICATE-----')) {
    try {
      leaf = new X509Certificate(certPem);
    } catch {
      leaf = undefined;
    }
  }
  if (leaf === undefined) {
    const { reason, fix } = describeNotCert(certFile, certPem);
    throw invalid(certFile, reason, fix);
  }
  let key: KeyObject;
  try {
    key = createPrivateKey(keyPem);
  } catch (err) {
    const { reason, fix } = describeNotKey(keyFile, keyPem);
    throw invalid(keyFile, reason, fix, err);
  }
  if (!leaf.checkPrivateKey(key)) {
    const at = keyMatchesLaterCert(certPem, key);
    if (at !== undefined) {
      throw invalid(certFile, `the chain is in the wrong order: the key ${keyFile} belongs to certificate ${at} of the file, but the first must be the server's own (leaf) certificate`, 'put the leaf first, then its intermediates (as fullchain.pem is)');
    }
    throw invalid(keyFile, `this key does not match the certificate ${certFile}`, 'install the key the certificate was issued for');
  }
  const notBefore = new Date(leaf.validFrom);
  const notAfter = new Date(leaf.validTo);
  checkServes(certFile, leaf, notBefore, notAfter, names, now);
  let context: SecureContext;
  try {
    context = createSecureContext({ ...SERVER_TLS_OPTIONS, cert: certPem, key: keyPem });
  } catch (err) {
    throw invalid(certFile, `OpenSSL refused the pair (${(err as Error).message})`, 'check the files', err);
  }
  const digest = createHash('sha256').update(certPem).update(keyPem).digest('hex');
  const missingIssuer = incompleteChain(certPem, leaf);
  const ocspResponder = ocspResponderOf(certPem, leaf);
  return {
    ...(missingIssuer === undefined ? {} : { missingIssuer }),
    ...(ocspResponder === undefined ? {} : { ocspResponder }),
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

/** Throws PORTICO_CERT_INVALID when a certificate is out of its validity period now, or does not cover one of `names`. */
function checkServes(certFile: string, leaf: X509Certificate, notBefore: Date, notAfter: Date, names: readonly string[], now: number): void {
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
}

/**
 * Reads and validates a pair of PEM files. When `loaded` (the pair serving under the same files) holds the
 * same bytes, it is reused after the checks that depend on the time and the names: a reload of a config with
 * a thousand certificates parses none of the unchanged ones again (key, X.509 and OpenSSL context: about
 * 2 ms of CPU each) and keeps their contexts.
 */
export async function loadCertPair(certFile: string, keyFile: string, names: readonly string[], loaded?: CertPair): Promise<CertPair> {
  let certPem: Buffer;
  let keyPem: Buffer;
  try {
    certPem = await readFile(certFile);
  } catch (err) {
    throw invalid(certFile, `cannot read the certificate (${(err as NodeJS.ErrnoException).code ?? 'error'})`, readFix(err), err);
  }
  try {
    keyPem = await readFile(keyFile);
  } catch (err) {
    throw invalid(keyFile, `cannot read the key (${(err as NodeJS.ErrnoException).code ?? 'error'})`, readFix(err), err);
  }
  if (loaded !== undefined && loaded.certPem.equals(certPem) && loaded.keyPem.equals(keyPem)) {
    checkServes(certFile, loaded.leaf, loaded.notBefore, loaded.notAfter, names, Date.now());
    return loaded;
  }
  return buildCertPair(certFile, keyFile, certPem, keyPem, names);
}
