/**
 * Client certificates (mutual TLS) for hosts with "clientAuth": the CA file
 * checked when the config loads, and the Client-Cert header value (RFC 9440)
 * a verified certificate is forwarded as.
 */
import { createHash, X509Certificate } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import type { ClientAuthPlan } from '../config/plan.js';

const PEM_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/**
 * Compiles a host's clientAuth from its CA file's contents: every PEM certificate in it must parse
 * (node:crypto's X509Certificate), and there must be one. Throws an Error whose message says what is wrong.
 */
export function compileClientAuth(hostName: string, caFile: string, pem: Buffer, mode: 'require' | 'optional'): ClientAuthPlan {
  const text = pem.toString('latin1');
  const blocks = text.match(PEM_BLOCK) ?? [];
  if (blocks.length === 0) {
    throw new Error(`${caFile} holds no PEM certificate ("-----BEGIN CERTIFICATE-----"); put the CA certificates that sign your clients' certificates there`);
  }
  const hash = createHash('sha256').update(hostName).update('\0').update(mode);
  blocks.forEach((block, i) => {
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(block);
    } catch {
      throw new Error(`certificate ${i + 1} of ${blocks.length} in ${caFile} does not parse as X.509`);
    }
    hash.update(cert.raw);
  });
  return { caPem: pem, required: mode === 'require', sessionContext: hash.digest('hex').slice(0, 32) };
}

/** Symbol under which a TLS connection carries its verified client certificate as a Client-Cert value. */
export const kClientCert = Symbol('portico.clientCert');

/** A socket or session that may carry a verified client certificate. */
export interface WithClientCert {
  [kClientCert]?: string;
}

/**
 * The Client-Cert value (RFC 9440 §2.2: a structured-field byte sequence, the DER certificate in base64
 * between colons) of a connection's verified client certificate, or undefined when it showed none.
 * Once per connection.
 */
export function clientCertValue(socket: TLSSocket): string | undefined {
  if (!socket.authorized) return undefined;
  const cert = socket.getPeerX509Certificate();
  return cert === undefined ? undefined : `:${cert.raw.toString('base64')}:`;
}
