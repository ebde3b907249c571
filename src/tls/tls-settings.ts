/**
 * TLS settings shared by every certificate Portico serves: TLS 1.2 minimum and
 * AEAD cipher suites with forward secrecy only (Mozilla "intermediate").
 */
import type { SecureContextOptions } from 'node:tls';

/** TLS 1.2 suites allowed (TLS 1.3 suites are all AEAD and left at OpenSSL's defaults). */
export const TLS12_CIPHERS = [
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

/** Options applied to every server SecureContext. */
export const SERVER_TLS_OPTIONS: SecureContextOptions = {
  minVersion: 'TLSv1.2',
  ciphers: TLS12_CIPHERS,
  ecdhCurve: 'X25519:P-256:P-384',
  honorCipherOrder: false,
  sessionTimeout: 300,
};
