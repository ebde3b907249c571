/**
 * S3 load client: one new TLS connection per request, every handshake full.
 *
 * Load tools (wrk, h2load) resume TLS sessions when they reconnect, so S3
 * uses this client instead: Node only resumes when given a `session`, and
 * none is ever given; `isSessionReused()` is still checked and counted, so a
 * resumed handshake is reported apart rather than hidden.
 *
 * With `"resume": true` it measures the other case, a returning client: each
 * of the concurrent connections offers the session ticket of the one before
 * it in its slot (bench/optimisations.md §17).
 *
 * Usage: node dist/bench/handshake-client.js '{"port":19443,"host":"bench.localhost","durationMs":4000,"concurrency":16}'
 * (`"count": n` stops after n connections: a fixed amount of work, for instruction counts under callgrind.)
 * Prints one JSON line: HandshakeResult.
 */
import { connect, createSecureContext, type ConnectionOptions, type TLSSocket } from 'node:tls';
import { CLIENT_CIPHERS } from './client-tls.js';
import { createResponseReader, formatRequest } from './http1-response.js';

interface Options {
  readonly port: number;
  readonly host: string;
  readonly durationMs: number;
  readonly concurrency: number;
  /** Offer each slot's last session ticket on its next connection (default false: every handshake full). */
  readonly resume?: boolean;
  /** Stop opening connections after this many (durationMs still bounds the run): a fixed amount of work, for instruction counts. */
  readonly count?: number;
  /** Ask for a stapled OCSP response (status_request), as browsers do: the server's 'OCSPRequest' path runs. */
  readonly requestOCSP?: boolean;
}

/** What one S3 run measured. */
export interface HandshakeResult {
  readonly elapsedMs: number;
  /** Connections that completed a full handshake and a response. */
  readonly full: number;
  /** Connections whose session was resumed (0 unless `resume`). */
  readonly resumed: number;
  readonly errors: number;
  readonly non2xx: number;
  readonly protocol: string | null;
  readonly cipher: string | null;
}

const opts = JSON.parse(process.argv[2] ?? '{}') as Options;
// TLS 1.3 suites in browsers' order, as every bench client offers them (client-tls.ts).
const context = createSecureContext({ minVersion: 'TLSv1.2', ciphers: CLIENT_CIPHERS });
const request = formatRequest(opts.host, true);
const started = performance.now();
const deadline = started + opts.durationMs;
let full = 0;
let resumed = 0;
let errors = 0;
let non2xx = 0;
let protocol: string | null = null;
let cipher: string | null = null;
let active = 0;
/** Connections opened so far (bounded by `count`). */
let opened = 0;
const count = opts.count ?? Infinity;

/** The last session ticket each slot received (used with `resume`). */
const sessions: (Buffer | undefined)[] = [];

function openOne(slot: number): void {
  if (performance.now() >= deadline || opened >= count) {
    if (--active === 0) finish();
    return;
  }
  opened++;
  const reader = createResponseReader();
  let settled = false;
  const socket: TLSSocket = connect({
    host: '127.0.0.1',
    port: opts.port,
    servername: opts.host,
    secureContext: context,
    rejectUnauthorized: false,
    ALPNProtocols: ['http/1.1'],
    session: opts.resume === true ? sessions[slot] : undefined,
    // requestOCSP is a Node option @types/node leaves out.
    ...(opts.requestOCSP === true ? { requestOCSP: true } : {}),
  } as ConnectionOptions);
  if (opts.resume === true) socket.on('session', (ticket: Buffer) => (sessions[slot] = ticket));
  const settle = (ok: boolean): void => {
    if (settled) return;
    settled = true;
    if (ok) {
      if (socket.isSessionReused()) resumed++;
      else full++;
      if (reader.status < 200 || reader.status > 299) non2xx++;
    } else {
      errors++;
    }
    socket.destroy();
    setImmediate(openOne, slot);
  };
  socket.once('secureConnect', () => {
    if (protocol === null) {
      protocol = socket.getProtocol();
      cipher = socket.getCipher()?.name ?? null;
    }
    socket.write(request);
  });
  socket.on('data', (chunk: Buffer) => {
    if (reader.push(chunk)) settle(true);
  });
  socket.once('error', () => settle(false));
  socket.once('close', () => settle(reader.status !== 0));
}

function finish(): void {
  const result: HandshakeResult = {
    elapsedMs: performance.now() - started,
    full, resumed, errors, non2xx, protocol, cipher,
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exit(0);
}

for (let i = 0; i < opts.concurrency; i++) {
  active++;
  openOne(i);
}
