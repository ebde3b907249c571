/**
 * The load generators (wrk, h2load and the raw TLS clients), each run pinned
 * to LOAD_CPU and bounded in time, and parsers for their output.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLIENT_TLS13_SUITES, EXPECTED_CIPHER } from './client-tls.js';
import { LOAD_CPU, runBounded } from './procs.js';
import { BENCH_HOST, type Workspace } from './workspace.js';
import type { HandshakeResult } from './handshake-client.js';

/** What one load run produced, before CPU accounting. */
export interface LoadResult {
  /** Completed units: requests (S1, S2, S5), connections (S3) or MiB (S4). */
  readonly units: number;
  readonly elapsedSec: number;
  readonly p50Ms?: number;
  readonly p99Ms?: number;
  /** Socket errors, failed or timed-out requests. */
  readonly errors: number;
  /** Responses outside 2xx. */
  readonly non2xx: number;
  /** Resumed TLS sessions (S3 only). */
  readonly resumed?: number;
  /** Anything odd worth printing next to the number. */
  readonly notes: string[];
  /** The exact command line, for the results file. */
  readonly command: string;
}

/** Slack added to every load run's own duration before it is killed. */
const KILL_SLACK_MS = 20_000;

/**
 * A wrk script that connects to 127.0.0.1 whatever the URL host is, so the
 * URL can carry bench.localhost for SNI and Host without /etc/hosts.
 */
export function writeWrkResolveScript(ws: Workspace): string {
  const path = join(ws.dir, 'resolve-127.lua');
  writeFileSync(
    path,
    'wrk.resolve = function(host, service)\n  wrk.addrs = wrk.lookup("127.0.0.1", service)\nend\n',
  );
  return path;
}

function toMs(value: string, unit: string): number {
  const n = Number(value);
  if (unit === 'us') return n / 1000;
  if (unit === 'ms') return n;
  if (unit === 's') return n * 1000;
  if (unit === 'm') return n * 60_000;
  return Number.NaN;
}

/**
 * wrk's script for S7: the resolve script's override, then every request a POST of the workspace's
 * 1 MiB file (read once when wrk starts; wrk sends it with a Content-Length).
 */
export function writeWrkUploadScript(ws: Workspace): string {
  const path = join(ws.dir, 'upload.lua');
  const body = join(ws.docRoot, '1m');
  writeFileSync(
    path,
    `wrk.resolve = function(host, service)\n  wrk.addrs = wrk.lookup("127.0.0.1", service)\nend\n` +
      `wrk.method = "POST"\nlocal f = assert(io.open(${JSON.stringify(body)}, "rb"))\nwrk.body = f:read("*a")\nf:close()\n`,
  );
  return path;
}

/** Parse wrk's summary (with --latency). */
export function parseWrk(out: string): Omit<LoadResult, 'command' | 'units'> & { requests: number } {
  const summary = /(\d+) requests in ([\d.]+)(us|ms|s|m),/.exec(out);
  if (!summary) throw new Error(`wrk gave no summary: ${out.trim().slice(-300)}`);
  const pct = (p: string): number | undefined => {
    const m = new RegExp(`^\\s+${p}%\\s+([\\d.]+)(us|ms|s|m)\\s*$`, 'm').exec(out);
    return m ? toMs(m[1]!, m[2]!) : undefined;
  };
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const errors = sock ? sock.slice(1).reduce((a, b) => a + Number(b), 0) : 0;
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0);
  const notes: string[] = [];
  if (sock) notes.push(`socket errors: connect ${sock[1]}, read ${sock[2]}, write ${sock[3]}, timeout ${sock[4]}`);
  const p50Ms = pct('50');
  const p99Ms = pct('99');
  return {
    requests: Number(summary[1]),
    elapsedSec: toMs(summary[2]!, summary[3]!) / 1000,
    ...(p50Ms !== undefined ? { p50Ms } : {}),
    ...(p99Ms !== undefined ? { p99Ms } : {}),
    errors,
    non2xx,
    notes,
  };
}

/** Options for one wrk run. */
export interface WrkRun {
  readonly scheme: 'http' | 'https';
  readonly port: number;
  readonly path: string;
  readonly connections: number;
  readonly durationSec: number;
  readonly script: string;
  /** OPENSSL_CONF for wrk, which has no cipher option: TLS 1.3 suites in browsers' order (client-tls.ts). */
  readonly opensslConf: string;
}

/** Run wrk with one thread on LOAD_CPU. Units are requests. */
export async function runWrk(run: WrkRun): Promise<LoadResult> {
  const url = `${run.scheme}://${BENCH_HOST}:${run.port}${run.path}`;
  const args = ['-t1', `-c${run.connections}`, `-d${run.durationSec}s`, '--latency', '-s', run.script, url];
  const r = await runBounded('wrk', args, LOAD_CPU, run.durationSec * 1000 + KILL_SLACK_MS, undefined, { OPENSSL_CONF: run.opensslConf });
  const command = `OPENSSL_CONF=${run.opensslConf} taskset -c ${LOAD_CPU} wrk ${args.join(' ')}`;
  if (r.timedOut) throw new Error('wrk did not stop in time and was killed');
  const parsed = parseWrk(r.stdout + r.stderr);
  return { ...parsed, units: parsed.requests, command };
}

/** Options for one h2load run. */
export interface H2loadRun {
  readonly port: number;
  readonly clients: number;
  readonly streams: number;
  readonly durationSec: number;
  readonly logFile: string;
}

/** p-th percentile (0..100) of a sorted array, nearest-rank. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

/**
 * Run h2load (HTTP/2 over TLS) with one thread on LOAD_CPU; latency
 * percentiles come from its per-request log. Units are requests.
 */
export async function runH2load(run: H2loadRun): Promise<LoadResult> {
  const url = `https://${BENCH_HOST}:${run.port}/`;
  const args = [
    // -N: close a connection silent for 3 s, so unanswered streams end as
    // counted errors instead of keeping h2load waiting past the run.
    '-t1', `-c${run.clients}`, `-m${run.streams}`, `-D${run.durationSec}`, '-N3s',
    `--connect-to=127.0.0.1:${run.port}`, `--log-file=${run.logFile}`, `--tls13-ciphers=${CLIENT_TLS13_SUITES}`, url,
  ];
  writeFileSync(run.logFile, '');
  const r = await runBounded('h2load', args, LOAD_CPU, run.durationSec * 1000 + KILL_SLACK_MS);
  const command = `taskset -c ${LOAD_CPU} h2load ${args.join(' ')}`;
  if (r.timedOut) throw new Error(`h2load did not stop by itself within ${KILL_SLACK_MS / 1000} s after the run (streams left unanswered?) and was killed`);
  const out = r.stdout + r.stderr;
  const fin = /finished in ([\d.]+)(us|ms|s|m), ([\d.]+) req\/s/.exec(out);
  const req = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(out);
  const codes = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(out);
  if (!fin || !req || !codes) {
    const how = r.code === null ? 'was killed by a signal' : `exited with code ${r.code}`;
    throw new Error(`h2load ${how} without a summary; last output: ${out.trim().split('\n').slice(-3).join(' / ').slice(0, 300)}`);
  }
  const notes: string[] = [];
  const proto = /Application protocol: (\S+)/.exec(out)?.[1];
  if (proto !== 'h2') notes.push(`application protocol ${proto ?? 'none'}`);
  const cipher = /Cipher: (\S+)/.exec(out)?.[1];
  if (cipher !== EXPECTED_CIPHER) notes.push(`cipher ${cipher ?? 'not reported'}, not ${EXPECTED_CIPHER}`);
  const latenciesMs: number[] = [];
  for (const line of readFileSync(run.logFile, 'utf8').split('\n')) {
    const f = line.split('\t');
    if (f.length >= 3) latenciesMs.push(Number(f[2]) / 1000);
  }
  latenciesMs.sort((a, b) => a - b);
  const failed = Number(req[5]) + Number(req[6]) + Number(req[7]);
  if (failed > 0) notes.push(`h2load: ${req[5]} failed, ${req[6]} errored, ${req[7]} timeout`);
  return {
    units: Number(codes[1]),
    elapsedSec: toMs(fin[1]!, fin[2]!) / 1000,
    p50Ms: percentile(latenciesMs, 50),
    p99Ms: percentile(latenciesMs, 99),
    errors: failed,
    non2xx: Number(codes[2]) + Number(codes[3]) + Number(codes[4]),
    notes,
    command,
  };
}

/** Options for one S3 run. */
export interface HandshakeRun {
  readonly port: number;
  readonly durationSec: number;
  readonly concurrency: number;
  readonly script: string;
}

/** Run the full-handshake client on LOAD_CPU. Units are connections with a full handshake. */
export async function runHandshakes(run: HandshakeRun): Promise<LoadResult> {
  const opts = JSON.stringify({
    port: run.port, host: BENCH_HOST, durationMs: run.durationSec * 1000, concurrency: run.concurrency,
  });
  const r = await runBounded(process.execPath, [run.script, opts], LOAD_CPU, run.durationSec * 1000 + KILL_SLACK_MS);
  const command = `taskset -c ${LOAD_CPU} node dist/bench/handshake-client.js '${opts}'`;
  if (r.timedOut) throw new Error('handshake client did not stop in time and was killed');
  const line = r.stdout.trim().split('\n').pop() ?? '';
  let res: HandshakeResult;
  try {
    res = JSON.parse(line) as HandshakeResult;
  } catch {
    throw new Error(`handshake client failed: ${r.stderr.slice(0, 400)}`);
  }
  const notes: string[] = [];
  if (res.protocol) notes.push(`${res.protocol} ${res.cipher ?? ''}`.trim());
  return {
    units: res.full,
    elapsedSec: res.elapsedMs / 1000,
    errors: res.errors,
    non2xx: res.non2xx,
    resumed: res.resumed,
    notes,
    command,
  };
}
