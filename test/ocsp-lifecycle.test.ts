/**
 * OCSP stapling over time: refresh at half validity, backoff and recovery, expiry of a held response, and the
 * thisUpdate/nextUpdate checks, against OpenSSL's own responder on loopback (test/helpers/ocsp.ts). Waiting is the
 * point here, so the stapler's timers and clock are faked (t.mock.timers: setTimeout and Date only); the responder,
 * its signatures and the HTTP exchange are real. The stapler is driven on its own, as Portico drives it (update()
 * with a Plan, a certificate store that holds the loaded pair).
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { loadCertPair, type CertPair } from '../src/tls/cert-pair.js';
import type { CertStore } from '../src/tls/cert-store.js';
import type { Plan } from '../src/config/plan.js';
import { OcspStapler, refreshDelayMs, type OcspStatus } from '../src/tls/ocsp-stapler.js';
import { makeCa, startResponder, type OcspCa } from './helpers/ocsp.js';

type Line = Record<string, unknown>;

/** A stapler serving good.test (good.pem, leaf + CA) from `ca`, with its log lines awaitable. */
interface Harness {
  readonly stapler: OcspStapler;
  readonly pair: CertPair;
  readonly logs: Line[];
  /** The first line from index `from` on that `pred` accepts; rejects after 10 s of real time. */
  line(what: string, pred: (l: Line) => boolean, from?: number): Promise<Line>;
  /** good.test's stapling state. */
  state(): OcspStatus;
  /** What a handshake for good.test would get. */
  staple(): Buffer | undefined;
}

/**
 * Fakes setTimeout and Date from `clockOffsetMs` away from now, then starts a stapler for good.test and fires its
 * first fetch. The pair is loaded before the clock is moved (the certificate's own validity is not under test).
 */
async function startStapler(t: TestContext, ca: OcspCa, clockOffsetMs = 0, random?: () => number): Promise<Harness> {
  const pair = await loadCertPair(ca.file('good.pem'), ca.file('good-key.pem'), ['good.test']);
  // ocsp.ts loaded up front, so that the stapler's own import of it settles within a turn of the event loop.
  await import('../src/tls/ocsp.js');
  const logs: Line[] = [];
  const waiters = new Set<() => void>();
  const log = pino({ level: 'debug' }, {
    write: (s: string) => {
      logs.push(JSON.parse(s) as Line);
      for (const w of waiters) w();
    },
  });
  const stop = new AbortController();
  t.after(() => stop.abort());
  t.mock.timers.enable({ apis: ['setTimeout', 'Date'], now: Date.now() + clockOffsetMs });
  const certs = { get: (id: string) => (id === 'good' ? pair : undefined) } as unknown as CertStore;
  const stapler = new OcspStapler({ certs, log, signal: stop.signal, ...(random === undefined ? {} : { random }) });
  stapler.update({ ocspStapling: true, hosts: [{ certId: 'good', names: ['good.test'] }] } as unknown as Plan);
  for (let i = 0; stapler.statuses().length === 0; i++) {
    assert.ok(i < 1000, 'the stapler took up the certificate');
    await new Promise((r) => setImmediate(r));
  }
  // The first fetch, scheduled at once.
  t.mock.timers.tick(0);
  return {
    stapler,
    pair,
    logs,
    line: (what, pred, from = 0) =>
      new Promise((resolve, reject) => {
        // setInterval is real (only setTimeout is faked): a guard in real time.
        const started = performance.now();
        const check = (): void => {
          const found = logs.slice(from).find(pred);
          if (found !== undefined) {
            waiters.delete(check);
            clearInterval(guard);
            resolve(found);
          } else if (performance.now() - started > 10_000) {
            waiters.delete(check);
            clearInterval(guard);
            reject(new Error(`no log line ${what} within 10 s`));
          }
        };
        const guard = setInterval(check, 100);
        waiters.add(check);
        check();
      }),
    state: () => stapler.statuses()[0]!,
    staple: () => stapler.responseFor(pair.leaf.raw),
  };
}

const stapled = (l: Line): boolean => l['msg'] === 'ocsp response stapled';
const notFetched = (l: Line): boolean => l['msg'] === 'ocsp response not fetched, serving on';

test('a stapled response is fetched again at half its validity, and the new response is stapled in its place', async (t) => {
  const ca = await makeCa(t);
  if (ca === undefined) return;
  const responder = await startResponder(t, ca);
  const h = await startStapler(t, ca);
  const first = await h.line('of the first response', stapled);
  const firstDer = h.staple();
  assert.ok(firstDer !== undefined);
  // openssl ocsp -nmin 10: valid 10 minutes from thisUpdate, so fetched again about 5 minutes on.
  const refreshInMs = first['refreshInMs'] as number;
  const half = (Date.parse(first['nextUpdate'] as string) - Date.parse(first['thisUpdate'] as string)) / 2;
  assert.ok(Math.abs(refreshInMs - half) < 5_000, `refresh in ${refreshInMs} ms, half the validity is ${half} ms`);
  assert.ok(Math.abs(Date.parse(h.state().nextFetchAt!) - (Date.now() + refreshInMs)) <= 1, '/status shows when it is fetched next');
  t.mock.timers.tick(refreshInMs - 1_000);
  assert.notEqual(h.state().nextFetchAt, null, 'not fetched before half its validity');
  // refreshInMs is rounded in the log: a millisecond more.
  t.mock.timers.tick(1_001);
  assert.equal(h.state().nextFetchAt, null, 'a fetch is in flight');
  const from = h.logs.indexOf(first) + 1;
  const second = await h.line('of the refreshed response', stapled, from);
  assert.equal(responder.requests, 2);
  const secondDer = h.staple();
  assert.ok(secondDer !== undefined && !secondDer.equals(firstDer), 'the new response is the one stapled');
  assert.equal(h.state().thisUpdate, second['thisUpdate']);
  assert.equal(h.state().status, 'good');
});

test('with the responder down, a held response is stapled until its nextUpdate and then dropped, with a warning', async (t) => {
  const ca = await makeCa(t);
  if (ca === undefined) return;
  const responder = await startResponder(t, ca);
  const h = await startStapler(t, ca);
  const first = await h.line('of the first response', stapled);
  await responder.close();
  t.mock.timers.tick((first['refreshInMs'] as number) + 1);
  const warn = await h.line('of the failed refresh', notFetched);
  // Refused, or the kept-alive connection to it reset.
  assert.match(String(warn['reason']), /ECONNREFUSED|ECONNRESET|socket hang up/);
  assert.equal(warn['stapling'], `the last good response, until ${first['nextUpdate'] as string}`);
  assert.ok(h.staple() !== undefined, 'the last good response is still stapled');
  assert.equal(h.state().status, 'good');
  assert.equal(h.state().lastError, warn['reason'], '/status shows why the refresh failed');
  const leftMs = Date.parse(first['nextUpdate'] as string) - Date.now();
  t.mock.timers.tick(leftMs - 1);
  assert.ok(h.staple() !== undefined, 'stapled until its nextUpdate');
  t.mock.timers.tick(1);
  assert.equal(h.staple(), undefined, 'no longer stapled at its nextUpdate');
  const expired = await h.line('of the expiry', (l) => l['msg'] === 'ocsp response expired before a new one could be fetched, no longer stapled');
  assert.equal(expired['level'], 40);
  assert.equal(expired['host'], 'good.test');
  assert.equal(h.state().status, 'none');
  assert.equal(h.state().nextUpdate, null);
  assert.equal(h.stapler.stapledCount, 0);
});

test('a failed fetch is retried after 1 minute, then 2, each ±25 % at random, and the response is stapled once the responder answers again', async (t) => {
  const ca = await makeCa(t);
  if (ca === undefined) return;
  // The jitter's two extremes, from the stapler's random source: 0.75 × 1 minute, then 1.25 × 2 minutes.
  const draws = [0, 0.999_999];
  const h = await startStapler(t, ca, 0, () => draws.shift() ?? assert.fail('one draw per failure'));
  const first = await h.line('of the first failure', notFetched);
  assert.equal(first['failures'], 1);
  assert.equal(first['retryInMs'], 45_000, '1 minute less 25 %');
  assert.equal(first['stapling'], 'nothing');
  assert.equal(h.state().failures, 1);
  assert.equal(Date.parse(h.state().nextFetchAt!), Date.now() + 45_000);
  t.mock.timers.tick(45_000);
  const second = await h.line('of the second failure', (l) => notFetched(l) && l['failures'] === 2);
  assert.equal(second['retryInMs'], 150_000, 'the delay doubles: 2 minutes and 25 %');
  const responder = await startResponder(t, ca);
  t.mock.timers.tick(149_000);
  assert.notEqual(h.state().nextFetchAt, null, 'not asked again before the delay');
  assert.equal(responder.requests, 0);
  t.mock.timers.tick(1_000);
  await h.line('once the responder is back', stapled);
  assert.equal(responder.requests, 1);
  assert.ok(h.staple() !== undefined);
  const state = h.state();
  assert.equal(state.status, 'good');
  assert.equal(state.failures, 0);
  assert.equal(state.lastError, null);
});

test('with the default random source, failed fetches are retried within 45–75 s, then 90–150 s, and at the time the warning names', async (t) => {
  const ca = await makeCa(t);
  if (ca === undefined) return;
  const h = await startStapler(t, ca);
  let from = 0;
  for (const [failures, lowMs, highMs] of [[1, 45_000, 75_000], [2, 90_000, 150_000], [3, 180_000, 300_000]] as const) {
    const line = await h.line(`of failure ${failures}`, (l) => notFetched(l) && l['failures'] === failures, from);
    from = h.logs.indexOf(line) + 1;
    const retryInMs = line['retryInMs'] as number;
    assert.ok(retryInMs >= lowMs && retryInMs <= highMs, `failure ${failures}: ${retryInMs} ms in [${lowMs}, ${highMs}]`);
    assert.equal(Date.parse(h.state().nextFetchAt!), Date.now() + retryInMs, 'nextFetchAt is the delay logged');
    // Whatever the draw: not asked before the delay, asked at it.
    t.mock.timers.tick(retryInMs - 1);
    assert.notEqual(h.state().nextFetchAt, null, `failure ${failures}: not asked again before the delay`);
    t.mock.timers.tick(1);
    assert.equal(h.state().nextFetchAt, null, `failure ${failures}: asked again at it`);
  }
});

test('a response whose nextUpdate has passed is refused: not stapled, and a warning says it expired', async (t) => {
  const ca = await makeCa(t);
  if (ca === undefined) return;
  await startResponder(t, ca);
  // Portico's clock 11 minutes ahead of the responder's, whose answers are valid for 10.
  const h = await startStapler(t, ca, 11 * 60_000);
  const warn = await h.line('of the refused response', notFetched);
  assert.match(String(warn['reason']), /^the response expired at .* \(nextUpdate\)$/);
  assert.equal(h.staple(), undefined);
  assert.equal(h.state().status, 'none');
  assert.match(String(h.state().lastError), /expired/);
});

test('a response whose thisUpdate lies more than 5 minutes ahead is refused, and one 4 minutes ahead is stapled', async (t) => {
  const ca = await makeCa(t);
  if (ca === undefined) return;
  // Signed by the CA itself: a delegated responder certificate, issued now, would not be valid yet on a clock 6 minutes behind.
  await copyFile(ca.file('ca.pem'), ca.file('ca-signer-leaf.pem'));
  await copyFile(ca.file('ca-key.pem'), ca.file('ca-signer-key.pem'));
  await startResponder(t, ca, 'ca-signer');
  await t.test('6 minutes ahead: refused', async (t) => {
    const h = await startStapler(t, ca, -6 * 60_000);
    const warn = await h.line('of the refused response', notFetched);
    assert.match(String(warn['reason']), /^the response is not valid before .* \(thisUpdate\)$/);
    assert.equal(h.staple(), undefined);
  });
  await t.test('4 minutes ahead: within the allowed clock skew', async (t) => {
    const h = await startStapler(t, ca, -4 * 60_000);
    await h.line('of the response', stapled);
    assert.ok(h.staple() !== undefined);
  });
});

test('a response valid for one minute is fetched again at half of it, before it expires, and stapled without a gap', async (t) => {
  const ca = await makeCa(t);
  if (ca === undefined) return;
  // openssl ocsp -nmin 1: nextUpdate one minute after thisUpdate (the old one-minute floor put the refresh at its expiry).
  const responder = await startResponder(t, ca, 'responder', undefined, 1);
  const h = await startStapler(t, ca);
  const first = await h.line('of the first response', stapled);
  const firstDer = h.staple();
  assert.ok(firstDer !== undefined);
  const refreshInMs = first['refreshInMs'] as number;
  const leftMs = Date.parse(first['nextUpdate'] as string) - Date.now();
  assert.ok(refreshInMs >= 1_000 && refreshInMs <= leftMs / 2 + 1_000, `refresh in ${refreshInMs} ms, with ${leftMs} ms of validity left`);
  t.mock.timers.tick(refreshInMs + 1);
  const second = await h.line('of the refreshed response', stapled, h.logs.indexOf(first) + 1);
  assert.equal(responder.requests, 2);
  assert.ok(Date.now() < Date.parse(first['nextUpdate'] as string), 'refreshed while the first response was still valid');
  const secondDer = h.staple();
  assert.ok(secondDer !== undefined && !secondDer.equals(firstDer), 'the new response is the one stapled');
  assert.equal(h.state().thisUpdate, second['thisUpdate']);
  assert.equal(h.logs.filter((l) => l['msg'] === 'ocsp response expired before a new one could be fetched, no longer stapled').length, 0);
});

test('the refresh delay is half the validity, at least a minute for long ones, half what is left for short ones, and never under a second', () => {
  const now = 1_000_000_000;
  // Ten minutes from now: at half, five minutes.
  assert.equal(refreshDelayMs(now, now + 600_000, now), 300_000);
  // A day-old response valid for a day and a minute more: half is long past; a minute later.
  assert.equal(refreshDelayMs(now - 86_400_000, now + 60_000 + 120_000, now), 60_000);
  // Thirty seconds of validity left, issued long ago: half of what is left.
  assert.equal(refreshDelayMs(now - 3_600_000, now + 30_000, now), 15_000);
  // Ten seconds from now, from now: five.
  assert.equal(refreshDelayMs(now, now + 10_000, now), 5_000);
  // Almost nothing left, or nothing at all: one second, never a busy loop.
  assert.equal(refreshDelayMs(now - 60_000, now + 400, now), 1_000);
  assert.equal(refreshDelayMs(now - 60_000, now, now), 1_000);
});

test('a response signed by a delegated responder certificate not yet valid, or expired, on this clock is refused with a reason naming its validity window', async (t) => {
  const ca = await makeCa(t);
  if (ca === undefined) return;
  // The responder certificate is valid from now for 2 days (openssl x509 -days 2).
  await startResponder(t, ca);
  await t.test('10 minutes behind: not valid yet', async (t) => {
    const h = await startStapler(t, ca, -10 * 60_000);
    const warn = await h.line('of the refused response', notFetched);
    assert.match(String(warn['reason']), /^the OCSP responder certificate that signed the response \("CN=OCSP Test Responder", serial 2001\) is not valid yet: valid from .+ to .+, and this machine's clock says .+$/);
    assert.doesNotMatch(String(warn['reason']), /signed neither/);
    assert.equal(h.staple(), undefined);
  });
  await t.test('3 days ahead: expired', async (t) => {
    const h = await startStapler(t, ca, 3 * 86_400_000);
    const warn = await h.line('of the refused response', notFetched);
    assert.match(String(warn['reason']), /^the OCSP responder certificate that signed the response \("CN=OCSP Test Responder", serial 2001\) has expired: valid from .+ to .+, and this machine's clock says .+$/);
    assert.equal(h.staple(), undefined);
  });
});

test('the stapler\'s static imports reach neither the ACME modules nor @peculiar\'s ASN.1 stack, which stay lazily loaded (the shared backoff included)', async () => {
  // The compiled modules this one imports, followed through relative imports (type imports are gone from them).
  const start = fileURLToPath(new URL('../src/tls/ocsp-stapler.js', import.meta.url));
  const seen = new Set<string>();
  const packages = new Set<string>();
  const queue = [start];
  for (let file = queue.pop(); file !== undefined; file = queue.pop()) {
    if (seen.has(file)) continue;
    seen.add(file);
    const text = await readFile(file, 'utf8');
    for (const m of text.matchAll(/^\s*(?:import|export)\b[^'"]*?from\s*['"]([^'"]+)['"]|^\s*import\s*['"]([^'"]+)['"]/gm)) {
      const spec = (m[1] ?? m[2])!;
      if (spec.startsWith('.')) queue.push(resolve(dirname(file), spec));
      else packages.add(spec);
    }
  }
  assert.ok([...seen].some((f) => f.endsWith('/tls/backoff.js')), 'the walk sees the backoff module');
  assert.deepEqual([...seen].filter((f) => f.includes('/acme/') || f.endsWith('/tls/ocsp.js')), []);
  assert.deepEqual([...packages].filter((p) => p.startsWith('@peculiar/') || p === 'asn1js' || p === 'pkijs'), []);
});
