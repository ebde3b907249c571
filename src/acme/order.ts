/**
 * Ordering one certificate (RFC 8555 §7.4): a new ECDSA P-256 key and CSR,
 * then acme-client's order flow with our challenge responders. The pre-check
 * acme-client can do from this machine is skipped: the CA's own validation is
 * the one that counts, and the local resolver often cannot see the public
 * name (NAT, split DNS).
 */
import acme from 'acme-client';
import type { Dns01Hook } from './dns01.js';
import type { Http01Responder } from './http01.js';
import type { AlpnResponder } from './tls-alpn01.js';

/** The challenge types Portico answers. */
export type ChallengeType = 'http-01' | 'tls-alpn-01' | 'dns-01';

/** What one order needs. */
export interface OrderRequest {
  readonly client: acme.Client;
  readonly names: readonly string[];
  readonly challenge: ChallengeType;
  readonly email: string | undefined;
  readonly termsOfServiceAgreed: boolean;
  readonly http01: Http01Responder;
  readonly alpn: AlpnResponder;
  /** The operator's DNS-01 program; required when `challenge` is "dns-01". */
  readonly dns01: Dns01Hook | undefined;
}

/** An issued certificate chain and its key, PEM. */
export interface IssuedPair {
  readonly certPem: string;
  readonly keyPem: string;
}

/** Orders a certificate for `names` and waits for it. Throws acme-client's error on failure. */
export async function orderCertificate(req: OrderRequest): Promise<IssuedPair> {
  const key = await acme.crypto.createPrivateEcdsaKey();
  const first = req.names[0] ?? '';
  const [, csr] = await acme.crypto.createCsr({ ...(first.length <= 64 ? { commonName: first } : {}), altNames: [...req.names] }, key);
  const certPem = await req.client.auto({
    csr,
    ...(req.email === undefined ? {} : { email: req.email }),
    termsOfServiceAgreed: req.termsOfServiceAgreed,
    challengePriority: [req.challenge],
    skipChallengeVerification: true,
    async challengeCreateFn(authz, challenge, keyAuthorization) {
      if (challenge.type !== req.challenge) {
        throw new Error(`the CA offers no ${req.challenge} challenge for ${authz.identifier.value} (offered: ${authz.challenges.map((c) => c.type).join(', ')})`);
      }
      if (challenge.type === 'http-01') await req.http01.add(challenge.token, keyAuthorization);
      // For dns-01, acme-client hands over the TXT value (the key authorization's SHA-256, base64url).
      else if (challenge.type === 'dns-01') await req.dns01!.present(authz.identifier.value, keyAuthorization);
      else await req.alpn.add(authz, keyAuthorization);
    },
    async challengeRemoveFn(authz, challenge, keyAuthorization) {
      if (challenge.type === 'http-01') await req.http01.remove(challenge.token);
      else if ((challenge.type as string) === 'dns-01') await req.dns01!.cleanup(authz.identifier.value, keyAuthorization);
      else if ((challenge.type as string) === 'tls-alpn-01') await req.alpn.remove(authz.identifier.value);
    },
  });
  return { certPem, keyPem: key.toString() };
}
