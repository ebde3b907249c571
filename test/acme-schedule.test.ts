/** Renewal timing, retry backoff and ACME Renewal Information (RFC 9773) helpers. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { ariCertId, parseRenewalInfo, parseRenewBefore, pickInWindow, renewalAt } from '../src/acme/schedule.js';
import { backoffMs } from '../src/tls/backoff.js';
import { parseRetryAfterMs } from '../src/acme/transport.js';
import { parseDurationMs } from '../src/config/units.js';

const DAY = 86_400_000;

test('renewal is due when the configured share or duration of the lifetime remains, moved earlier by at most 2% (1 h) of jitter', () => {
  const nb = Date.UTC(2026, 0, 1);
  const na = nb + 90 * DAY;
  assert.equal(renewalAt(nb, na, parseRenewBefore('33%', parseDurationMs), () => 0), na - Math.round(90 * DAY * 0.33));
  assert.equal(renewalAt(nb, na, parseRenewBefore('30d', parseDurationMs), () => 0), na - 30 * DAY);
  assert.equal(renewalAt(nb, na, parseRenewBefore('30d', parseDurationMs), () => 1), na - 30 * DAY - 3_600_000);
  // A duration longer than half the lifetime is clamped to half (6-day certificates with "30d").
  assert.equal(renewalAt(nb, nb + 6 * DAY, parseRenewBefore('30d', parseDurationMs), () => 0), nb + 3 * DAY);
  // Short lifetimes: jitter is 2% of the lifetime.
  assert.equal(renewalAt(0, 10_000, { share: 0.5 }, () => 1), 5000 - 200);
});

test('retries back off exponentially from the base delay and stop growing at the cap', () => {
  const mid = (): number => 0.5;
  assert.deepEqual([1, 2, 3, 4, 10].map((n) => backoffMs(n, 60_000, 6 * 3_600_000, mid)), [60_000, 120_000, 240_000, 480_000, 6 * 3_600_000]);
  assert.equal(backoffMs(1, 1000, 10_000, () => 0), 750);
  assert.equal(backoffMs(1, 1000, 10_000, () => 1), 1250);
});

test('Retry-After is read as seconds or as an HTTP date', () => {
  const now = Date.parse('Sun, 22 Nov 2026 10:00:00 GMT');
  assert.equal(parseRetryAfterMs('120', now), 120_000);
  assert.equal(parseRetryAfterMs('Sun, 22 Nov 2026 10:01:00 GMT', now), 60_000);
  assert.equal(parseRetryAfterMs('soon', now), 0);
  assert.equal(parseRetryAfterMs(undefined, now), 0);
});

test('the ARI certificate identifier is the RFC 9773 §4.1 example for its AKI and serial', async () => {
  x509.cryptoProvider.set(webcrypto as unknown as Crypto);
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as unknown as CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '0087654321',
    name: 'CN=ari.test',
    notBefore: new Date(Date.now() - DAY),
    notAfter: new Date(Date.now() + DAY),
    keys,
    signingAlgorithm: alg,
    extensions: [new x509.AuthorityKeyIdentifierExtension('69885b6b87464041e1b37b847ba0ae2cde01c8d4')],
  });
  assert.equal(ariCertId(cert.toString('pem')), 'aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE');
});

test('a RenewalInfo window is parsed and a moment inside it is chosen; a past window means now', () => {
  const w = parseRenewalInfo({ suggestedWindow: { start: '2026-11-22T00:00:00Z', end: '2026-11-23T00:00:00Z' } }, 0);
  assert.ok(w !== undefined);
  assert.equal(w.recheckMs, 6 * 3_600_000);
  const now = Date.parse('2026-11-21T00:00:00Z');
  assert.equal(pickInWindow(w, now, () => 0), w.startMs);
  assert.equal(pickInWindow(w, now, () => 1), w.endMs);
  assert.equal(pickInWindow(w, Date.parse('2026-11-24T00:00:00Z')), Date.parse('2026-11-24T00:00:00Z'));
  assert.equal(parseRenewalInfo({ suggestedWindow: { start: 'x' } }, 0), undefined);
  assert.equal(parseRenewalInfo({ suggestedWindow: { start: '2026-11-23T00:00:00Z', end: '2026-11-22T00:00:00Z' } }, 0), undefined);
  assert.equal(parseRenewalInfo({ suggestedWindow: { start: '2026-11-22T00:00:00Z', end: '2026-11-23T00:00:00Z' } }, 3_600_000)?.recheckMs, 3_600_000);
});
