/**
 * Memory-test client: opens N TLS keep-alive connections, sends one request
 * on each, reads the response, then holds them idle until stdin closes (or
 * a hard limit passes), so the proxy's RSS can be read meanwhile.
 *
 * Usage: node dist/bench/idle-client.js '{"port":19443,"host":"bench.localhost","count":1000,"concurrency":50,"holdLimitMs":30000}'
 * Prints one JSON line when all connections are idle: IdleResult.
 */
import { connect, createSecureContext, type TLSSocket } from 'node:tls';
import { CLIENT_CIPHERS } from './client-tls.js';
import { createResponseReader, formatRequest } from './http1-response.js';

interface Options {
  readonly port: number;
  readonly host: string;
  readonly count: number;
  readonly concurrency: number;
  readonly holdLimitMs: number;
}

/** How many connections are being held. */
export interface IdleResult {
  readonly idle: number;
  readonly errors: number;
  readonly non2xx: number;
}

const opts = JSON.parse(process.argv[2] ?? '{}') as Options;
// TLS 1.3 suites in browsers' order, as every bench client offers them (client-tls.ts).
const context = createSecureContext({ minVersion: 'TLSv1.2', ciphers: CLIENT_CIPHERS });
const request = formatRequest(opts.host, false);
const sockets: TLSSocket[] = [];
let launched = 0;
let idle = 0;
let errors = 0;
let non2xx = 0;
let reported = false;

function openOne(): void {
  if (launched >= opts.count) return;
  launched++;
  const reader = createResponseReader();
  let done = false;
  const socket = connect({
    host: '127.0.0.1',
    port: opts.port,
    servername: opts.host,
    secureContext: context,
    rejectUnauthorized: false,
    ALPNProtocols: ['http/1.1'],
  });
  sockets.push(socket);
  const settle = (ok: boolean): void => {
    if (done) return;
    done = true;
    if (ok) {
      idle++;
      if (reader.status < 200 || reader.status > 299) non2xx++;
    } else {
      errors++;
    }
    openOne();
    maybeReport();
  };
  socket.once('secureConnect', () => socket.write(request));
  socket.on('data', (chunk: Buffer) => {
    if (!done && reader.push(chunk)) settle(true);
  });
  socket.on('error', () => settle(false));
  socket.once('close', () => {
    if (done && !reported) idle--, errors++;
    settle(false);
  });
}

function maybeReport(): void {
  if (reported || idle + errors < opts.count) return;
  reported = true;
  const result: IdleResult = { idle, errors, non2xx };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

function closeAll(): void {
  for (const s of sockets) s.destroy();
  process.exit(0);
}

process.stdin.on('data', () => {});
process.stdin.on('end', closeAll);
setTimeout(closeAll, opts.holdLimitMs).unref();
for (let i = 0; i < opts.concurrency; i++) openOne();
