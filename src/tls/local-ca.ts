/**
 * A local certificate authority for the demo and the tests: an ECDSA P-256
 * (or RSA) root and leaf certificates it signs. X.509 is built by
 * @peculiar/x509 over WebCrypto; nothing here is hand-written ASN.1.
 */
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

/** A certificate and its private key, both PEM. */
export interface PemPair {
  readonly cert: string;
  readonly key: string;
}

/** Key algorithm for new certificates. */
export type KeyKind = 'ecdsa' | 'rsa';

const ALGS = {
  ecdsa: { gen: { name: 'ECDSA', namedCurve: 'P-256' }, sign: { name: 'ECDSA', hash: 'SHA-256' } },
  rsa: { gen: { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' }, sign: { name: 'RSASSA-PKCS1-v1_5' } },
} as const;

async function keyPem(key: CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key as webcrypto.CryptoKey));
  const b64 = der.toString('base64').replace(/(.{64})/g, '$1\n').trimEnd();
  return `-----BEGIN PRIVATE KEY-----\n${b64}\n-----END PRIVATE KEY-----\n`;
}

function serial(): string {
  return Buffer.from(webcrypto.getRandomValues(new Uint8Array(16))).toString('hex').replace(/^[89a-f]/, '1');
}

/** A root CA that can issue leaf certificates. */
export class LocalCa {
  readonly certPem: string;
  readonly #cert: x509.X509Certificate;
  readonly #keys: CryptoKeyPair;

  private constructor(cert: x509.X509Certificate, keys: CryptoKeyPair) {
    this.#cert = cert;
    this.#keys = keys;
    this.certPem = cert.toString('pem');
  }

  /** Creates a new root CA, valid from an hour ago for `days` days. */
  static async create(name = 'Portico Local CA', days = 3650): Promise<LocalCa> {
    const keys = (await webcrypto.subtle.generateKey(ALGS.ecdsa.gen, true, ['sign', 'verify'])) as unknown as CryptoKeyPair;
    const now = Date.now();
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: serial(),
      name: `CN=${name}`,
      notBefore: new Date(now - 3_600_000),
      notAfter: new Date(now + days * 86_400_000),
      keys,
      signingAlgorithm: ALGS.ecdsa.sign,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    return new LocalCa(cert, keys);
  }

  /** The CA's own certificate and key, for saving and later reuse. */
  async export(): Promise<PemPair> {
    return { cert: this.certPem, key: await keyPem(this.#keys.privateKey) };
  }

  /** Issues a leaf certificate for DNS names (and IPs), valid from `notBefore` for `days`; a server's, or with `usage: "client"` a client's (mutual TLS). */
  async issue(
    names: readonly string[],
    options: { kind?: KeyKind; days?: number; notBefore?: Date; ips?: readonly string[]; usage?: 'server' | 'client' } = {},
  ): Promise<PemPair & { chain: string }> {
    const kind = options.kind ?? 'ecdsa';
    const keys = (await webcrypto.subtle.generateKey(ALGS[kind].gen, true, ['sign', 'verify'])) as unknown as CryptoKeyPair;
    const notBefore = options.notBefore ?? new Date(Date.now() - 3_600_000);
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serial(),
      subject: `CN=${names[0] ?? 'localhost'}`,
      issuer: this.#cert.subject,
      notBefore,
      notAfter: new Date(notBefore.getTime() + (options.days ?? 825) * 86_400_000),
      publicKey: keys.publicKey,
      signingKey: this.#keys.privateKey,
      signingAlgorithm: ALGS.ecdsa.sign,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
        new x509.ExtendedKeyUsageExtension([options.usage === 'client' ? x509.ExtendedKeyUsage.clientAuth : x509.ExtendedKeyUsage.serverAuth]),
        new x509.SubjectAlternativeNameExtension([
          ...names.map((n) => ({ type: 'dns' as const, value: n })),
          ...(options.ips ?? []).map((ip) => ({ type: 'ip' as const, value: ip })),
        ]),
        await x509.AuthorityKeyIdentifierExtension.create(this.#cert),
      ],
    });
    const certPem = cert.toString('pem');
    return { cert: certPem, key: await keyPem(keys.privateKey), chain: `${certPem}\n${this.certPem}` };
  }
}
