/**
 * OCSP (RFC 6960) for stapling: what to ask a certificate's responder, and the checks of its answer. The ASN.1 is
 * @peculiar/asn1-ocsp's and @peculiar/asn1-x509's, the signatures are checked by node:crypto with the algorithm
 * @peculiar/x509 reads from the response: nothing here encodes or verifies by hand. Cold path: once per fetch.
 */
import { createHash, verify, constants, X509Certificate as NodeX509, type KeyObject } from 'node:crypto';
import { AsnConvert, OctetString } from '@peculiar/asn1-schema';
import { AlgorithmIdentifier, Certificate } from '@peculiar/asn1-x509';
import { BasicOCSPResponse, CertID, OCSPRequest, OCSPResponse, OCSPResponseStatus, Request, TBSRequest, id_kp_OCSPSigning, id_pkix_ocsp_basic, type SingleResponse } from '@peculiar/asn1-ocsp';
import { AlgorithmProvider, AuthorityInfoAccessExtension, ExtendedKeyUsageExtension, X509Certificate } from '@peculiar/x509';
import { issuerInChain } from './cert-pair.js';

/** SHA-1 (RFC 3279 §2.2.1): the CertID hash every responder answers for (RFC 5019 §2.1.1). */
const ID_SHA1 = '1.3.14.3.2.26';
/** Hash OIDs a responder may use in the CertID of its answer (RFC 5754 §2), by node:crypto name. */
const CERT_ID_HASHES: Readonly<Record<string, string>> = {
  [ID_SHA1]: 'sha1',
  '2.16.840.1.101.3.4.2.1': 'sha256',
  '2.16.840.1.101.3.4.2.2': 'sha384',
  '2.16.840.1.101.3.4.2.3': 'sha512',
};
/** A DER NULL: the parameters of a hash AlgorithmIdentifier, as OpenSSL and the CAs write them. */
const DER_NULL = new Uint8Array([0x05, 0x00]).buffer;
/** Clock difference tolerated between Portico and the responder. */
const CLOCK_SKEW_MS = 5 * 60_000;

/** What a certificate's OCSP request needs, worked out once per certificate. */
export interface OcspTarget {
  /** The responder URL, from the leaf's Authority Information Access extension (RFC 5280 §4.2.2.1). */
  readonly url: string;
  /** The DER OCSPRequest, POSTed as is (RFC 6960 Appendix A.1). */
  readonly request: Buffer;
  readonly leaf: NodeX509;
  readonly issuer: NodeX509;
  /** The leaf's serial number, hex as Node prints it (for the logs). */
  readonly serial: string;
  /** The issuer's name (DER) and public key bits, which the response's CertID hashes. */
  readonly issuerNameDer: Buffer;
  readonly issuerKeyBits: Buffer;
  /** The leaf's serial as encoded (an INTEGER's bytes). */
  readonly serialBytes: Buffer;
}

/** Why a certificate gets no staple at all. */
export type NoOcspReason = 'no OCSP responder URL in the certificate' | 'the issuer certificate is not in the chain';

/** The verdict of a response that passed every check. */
export type OcspVerdict =
  | { readonly status: 'good'; readonly thisUpdate: Date; readonly nextUpdate: Date | undefined }
  | { readonly status: 'revoked'; readonly thisUpdate: Date; readonly nextUpdate: Date | undefined; readonly revokedAt: Date; readonly reason: string | undefined }
  | { readonly status: 'unknown'; readonly thisUpdate: Date; readonly nextUpdate: Date | undefined };

/** A response that cannot be trusted or used; `message` says why. */
export class OcspResponseError extends Error {}

/** The OCSP responder URL of a certificate (the first http(s) one), if it names one. */
export function ocspUrlOf(leaf: NodeX509): string | undefined {
  const aia = new X509Certificate(leaf.raw).getExtension(AuthorityInfoAccessExtension);
  return aia?.ocsp.find((n) => n.type === 'url' && /^https?:\/\//i.test(n.value))?.value;
}

/** The OCSP request of a served chain (leaf first), or why it has none. */
export function ocspTargetOf(certPem: Buffer, leaf: NodeX509): OcspTarget | NoOcspReason {
  const url = ocspUrlOf(leaf);
  if (url === undefined) return 'no OCSP responder URL in the certificate';
  const issuer = issuerInChain(certPem, leaf);
  if (issuer === undefined) return 'the issuer certificate is not in the chain';
  const issuerAsn = AsnConvert.parse(issuer.raw, Certificate);
  const leafAsn = AsnConvert.parse(leaf.raw, Certificate);
  const issuerNameDer = Buffer.from(AsnConvert.serialize(issuerAsn.tbsCertificate.subject));
  const issuerKeyBits = Buffer.from(issuerAsn.tbsCertificate.subjectPublicKeyInfo.subjectPublicKey);
  const serialBytes = Buffer.from(leafAsn.tbsCertificate.serialNumber);
  const certId = new CertID({
    hashAlgorithm: new AlgorithmIdentifier({ algorithm: ID_SHA1, parameters: DER_NULL }),
    issuerNameHash: new OctetString(createHash('sha1').update(issuerNameDer).digest()),
    issuerKeyHash: new OctetString(createHash('sha1').update(issuerKeyBits).digest()),
    serialNumber: leafAsn.tbsCertificate.serialNumber,
  });
  const request = Buffer.from(AsnConvert.serialize(new OCSPRequest({ tbsRequest: new TBSRequest({ requestList: [new Request({ reqCert: certId })] }) })));
  return { url, request, leaf, issuer, serial: leaf.serialNumber, issuerNameDer, issuerKeyBits, serialBytes };
}

/** An INTEGER's bytes without the sign padding, so that two encodings of one serial compare equal. */
function unpadded(bytes: Buffer): Buffer {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++;
  return bytes.subarray(i);
}

/** Whether a SingleResponse answers for `target`'s certificate (RFC 6960 §4.1.1 CertID). */
function answersFor(single: SingleResponse, target: OcspTarget): boolean {
  const hash = CERT_ID_HASHES[single.certID.hashAlgorithm.algorithm];
  if (hash === undefined) return false;
  const id = single.certID;
  return (
    unpadded(Buffer.from(id.serialNumber)).equals(unpadded(target.serialBytes)) &&
    Buffer.from(id.issuerNameHash.buffer).equals(createHash(hash).update(target.issuerNameDer).digest()) &&
    Buffer.from(id.issuerKeyHash.buffer).equals(createHash(hash).update(target.issuerKeyBits).digest())
  );
}

/** Whether `cert` is the one the response's ResponderID names (RFC 6960 §4.2.1: by name, or by the SHA-1 of its key). */
function isResponder(basic: BasicOCSPResponse, cert: NodeX509): boolean {
  const id = basic.tbsResponseData.responderID;
  const asn = AsnConvert.parse(cert.raw, Certificate);
  if (id.byKey !== undefined) {
    return Buffer.from(id.byKey.buffer).equals(createHash('sha1').update(Buffer.from(asn.tbsCertificate.subjectPublicKeyInfo.subjectPublicKey)).digest());
  }
  if (id.byName !== undefined) return Buffer.from(AsnConvert.serialize(id.byName)).equals(Buffer.from(AsnConvert.serialize(asn.tbsCertificate.subject)));
  return false;
}

/**
 * Whether a certificate the response carries may sign it (RFC 6960 §4.2.2.2): issued and signed by the certificate's
 * issuer, with the id-kp-OCSPSigning extended key usage. Its validity window is checked apart (responderValidityProblem).
 */
function isDelegatedResponder(cert: NodeX509, issuer: NodeX509): boolean {
  if (!cert.checkIssued(issuer) || !cert.verify(issuer.publicKey)) return false;
  const eku = new X509Certificate(cert.raw).getExtension(ExtendedKeyUsageExtension);
  return eku !== null && eku.usages.includes(id_kp_OCSPSigning);
}

/**
 * Why a delegated responder certificate is not valid at `now` (not yet valid, allowing the clock skew, or expired),
 * or undefined when it is. Said as such: a response signed by it is otherwise a good one, and "signed by no
 * responder" would send the operator looking at the CA instead of at a clock or an expired responder certificate.
 */
function responderValidityProblem(cert: NodeX509, now: number): string | undefined {
  const from = new Date(cert.validFrom);
  const to = new Date(cert.validTo);
  const window = `${from.toISOString()} to ${to.toISOString()}, and this machine's clock says ${new Date(now).toISOString()}`;
  if (from.getTime() > now + CLOCK_SKEW_MS) return `the OCSP responder certificate that signed the response ("${cert.subject.replace(/\n/g, ', ')}", serial ${cert.serialNumber}) is not valid yet: valid from ${window}`;
  if (to.getTime() <= now) return `the OCSP responder certificate that signed the response ("${cert.subject.replace(/\n/g, ', ')}", serial ${cert.serialNumber}) has expired: valid from ${window}`;
  return undefined;
}

/** Checks `signature` over `data` with `key`, by the response's signature algorithm (RSA PKCS#1 v1.5, RSA-PSS, ECDSA, EdDSA). */
function signatureValid(alg: AlgorithmIdentifier, data: Buffer, key: KeyObject, signature: Buffer): boolean {
  let web: { name: string; hash?: { name: string }; saltLength?: number };
  try {
    web = new AlgorithmProvider().toWebAlgorithm(alg) as typeof web;
  } catch {
    throw new OcspResponseError(`the response is signed with an unsupported algorithm (${alg.algorithm})`);
  }
  const hash = web.hash === undefined ? null : web.hash.name.replace('-', '').toLowerCase();
  switch (web.name) {
    case 'RSASSA-PKCS1-v1_5':
    case 'ECDSA':
      // node:crypto takes ECDSA signatures DER-encoded, as X.509 and OCSP carry them.
      return verify(hash, data, key, signature);
    case 'RSA-PSS':
      return verify(hash, data, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: web.saltLength ?? constants.RSA_PSS_SALTLEN_AUTO }, signature);
    case 'Ed25519':
    case 'Ed448':
      return verify(null, data, key, signature);
    default:
      throw new OcspResponseError(`the response is signed with an unsupported algorithm (${web.name})`);
  }
}

/**
 * Checks a DER OCSPResponse for `target` and returns its verdict; throws OcspResponseError when it cannot be used:
 * not "successful", not a basic response, no answer for this certificate, not signed by the issuer or a responder
 * it delegated to, issued in the future, or past its nextUpdate.
 */
export function checkOcspResponse(der: Buffer, target: OcspTarget, now = Date.now()): OcspVerdict {
  let response: OCSPResponse;
  let basic: BasicOCSPResponse;
  try {
    response = AsnConvert.parse(der, OCSPResponse);
  } catch {
    throw new OcspResponseError('the response is not a DER OCSPResponse');
  }
  if (response.responseStatus !== OCSPResponseStatus.successful) {
    throw new OcspResponseError(`the responder answered "${OCSPResponseStatus[response.responseStatus] ?? response.responseStatus}"`);
  }
  if (response.responseBytes === undefined || response.responseBytes.responseType !== id_pkix_ocsp_basic) throw new OcspResponseError('the response is not a basic OCSP response');
  try {
    basic = AsnConvert.parse(response.responseBytes.response.buffer, BasicOCSPResponse);
  } catch {
    throw new OcspResponseError('the basic OCSP response cannot be parsed');
  }
  const single = basic.tbsResponseData.responses.find((r) => answersFor(r, target));
  if (single === undefined) throw new OcspResponseError(`the response does not answer for this certificate (serial ${target.serial})`);
  const signers = [target.issuer];
  for (const c of basic.certs ?? []) {
    const cert = new NodeX509(Buffer.from(AsnConvert.serialize(c)));
    if (isDelegatedResponder(cert, target.issuer)) signers.push(cert);
  }
  const named = signers.filter((c) => isResponder(basic, c));
  // A delegated responder must be valid now (RFC 6960 §4.2.2.2): one that is, if the response carries several the
  // ResponderID names; when the only one named is out of its validity window, the error says so (rather than calling
  // it no responder at all, which sends the operator looking at the CA instead of at a clock or an expired certificate).
  const signer = named.find((c) => c === target.issuer || responderValidityProblem(c, now) === undefined);
  if (signer === undefined) {
    const outOfWindow = named[0];
    if (outOfWindow !== undefined) throw new OcspResponseError(responderValidityProblem(outOfWindow, now)!);
    throw new OcspResponseError('the response is signed neither by the issuer nor by a responder certificate the issuer signed for OCSP');
  }
  const tbs = basic.tbsResponseDataRaw;
  if (tbs === undefined || !signatureValid(basic.signatureAlgorithm, Buffer.from(tbs), signer.publicKey, Buffer.from(basic.signature))) {
    throw new OcspResponseError('the response signature does not verify');
  }
  const { thisUpdate, nextUpdate } = single;
  if (thisUpdate.getTime() > now + CLOCK_SKEW_MS) throw new OcspResponseError(`the response is not valid before ${thisUpdate.toISOString()} (thisUpdate)`);
  if (nextUpdate !== undefined && nextUpdate.getTime() <= now) throw new OcspResponseError(`the response expired at ${nextUpdate.toISOString()} (nextUpdate)`);
  const status = single.certStatus;
  if (status.revoked !== undefined) return { status: 'revoked', thisUpdate, nextUpdate, revokedAt: status.revoked.revocationTime, reason: status.revoked.revocationReason?.toString() };
  if (status.good !== undefined) return { status: 'good', thisUpdate, nextUpdate };
  return { status: 'unknown', thisUpdate, nextUpdate };
}
