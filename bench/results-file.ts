/**
 * Writes bench/RESULTS.md: when, where, with what versions and settings,
 * then the summary, one table per scenario, the memory table and the exact
 * generated configurations.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LOAD_CPU, PROXY_CPU } from './procs.js';
import { cpuOf, pairedCpuSpread, rateOf, renderMemory, renderTargets, renderScenario, renderSummary, SLOW_NODE_RATIO, type Cell, type Row, type ScenarioInfo } from './report.js';
import type { MachineInfo } from './tools.js';

/** Everything about the run that is not a measurement. */
export interface RunSettings {
  readonly durationSec: number;
  readonly repeats: number;
  readonly idleConnections: number;
  readonly started: Date;
  readonly finished: Date;
  readonly machine: MachineInfo;
  readonly versions: Record<string, string>;
  readonly backendConfig: string;
  /** /proc/loadavg at start and end: a busy machine makes every number worse. */
  readonly loadAvgStart: string;
  readonly loadAvgEnd: string;
  /** Portico's version and commit when the run started (the build it measured), from porticoVersion(). */
  readonly portico: string;
}

/** Portico's version and commit, marked when src/ has changes not committed: read when the run starts, as the build is. */
export function porticoVersion(repoRoot: string): string {
  const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string };
  let rev = 'no commit';
  try {
    rev = execFileSync('git', ['-C', repoRoot, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const dirty = execFileSync('git', ['-C', repoRoot, 'status', '--porcelain', '--', 'src'], { encoding: 'utf8' }).trim();
    if (dirty) rev += ' + uncommitted src changes';
  } catch {
    /* not a git checkout */
  }
  return `${pkg.version} (${rev})`;
}

/**
 * Node alone's CPU per S1 request over nginx's in the same round (median): about 1.0-1.4 on these machines
 * in their usual state. They have spells in which every Node process runs up to twice as slowly while nginx
 * does not (optimisations.md §28, §38); a run that caught one says so, since its ratios to nginx then
 * overstate every Node row's cost.
 */
function machineStateNote(rows: readonly Row[]): string {
  const cell = (id: string): Cell | undefined => rows.find((r) => r.id === id)?.cells.get('S1');
  const r = pairedCpuSpread(cell('node-alone'), cell('nginx'))?.median;
  if (r === undefined) return '';
  const head = `- **Machine state:** Node alone took ${r.toFixed(2)}× nginx's CPU per S1 request (same round, median). In the full runs kept in RESULTS.md's history up to 2026-12-07 it took 1.0–1.4× in the machine's usual state, and 1.55–2.1× in runs that caught a spell of slow Node processes.`;
  return r > SLOW_NODE_RATIO
    ? `${head} ⚠ This run caught the machine in a spell that slows every Node process while nginx runs as usual: each Node row's ratios to nginx are higher than usual, Portico's included. Ratios between Node rows move too, though less (Node alone's JavaScript-heavy server slows more than Portico: Portico took 0.98× Node alone per S1 request in one such run, 1.12× in the run of record before it). An instruction count (bench/scripts/ab-instructions.sh) does not move with the machine.`
    : head;
}

/** S1's connections per run (wrk -c64): the handshakes every S1 run's CPU includes. */
const S1_CONNECTIONS = 64;

/**
 * What opening S1's connections adds to an S1 run's CPU, for nginx and Portico: their S3 CPU per new
 * connection (a full handshake) times 64, over a median S1 run's CPU (CPU per request × requests per run).
 * Short runs carry more of it; the sentence says how much, from this run's own figures.
 */
function connectShareNote(rows: readonly Row[], durationSec: number): string {
  const share = (id: string): number | null => {
    const cells = rows.find((r) => r.id === id)?.cells;
    const perConn = cpuOf(cells?.get('S3'))?.median;
    const perReq = cpuOf(cells?.get('S1'))?.median;
    const rate = rateOf(cells?.get('S1'))?.median;
    if (perConn === undefined || perReq === undefined || rate === undefined) return null;
    return (S1_CONNECTIONS * perConn) / (perReq * rate * durationSec);
  };
  const n = share('nginx');
  const p = share('portico');
  if (n === null || p === null) return '';
  const pct = (x: number): string => `${(x * 100).toFixed(1)} %`;
  return ` A run's CPU includes the load tool opening its connections: in S1, ${S1_CONNECTIONS} full TLS handshakes, which in this run's ${durationSec} s runs came to about ${pct(n)} of nginx's CPU and ${pct(p)} of Portico's (their S3 CPU per connection × ${S1_CONNECTIONS}, over an S1 run's), so Portico's S1 ratio to nginx is about ${pct((1 - n) / (1 - p) - 1)} higher than runs long enough to hide the handshakes would give.`;
}

/** Render the results and write them to `path`. */
export function writeResults(path: string, repoRoot: string, s: RunSettings, scenarios: readonly ScenarioInfo[], rows: readonly Row[]): void {
  const v = s.versions;
  const minutes = ((s.finished.getTime() - s.started.getTime()) / 60000).toFixed(1);
  const out: string[] = [];
  out.push('# Portico benchmark results', '');
  out.push('Generated by `npm run bench` (see [README.md](README.md)); do not edit by hand.', '');
  out.push(`- **Date:** ${s.started.toISOString()} (run took ${minutes} min)`);
  out.push(`- **Machine:** ${s.machine.nproc} CPUs (nproc), ${s.machine.cpuModel}, ${s.machine.memTotal} RAM, Linux ${s.machine.kernel}`);
  out.push(`- **Load average** (1/5/15 min) at start: ${s.loadAvgStart}; at end: ${s.loadAvgEnd}. Runs during which other processes used over 10% of CPU ${PROXY_CPU} are flagged ⚠ in their Notes.`);
  out.push(`- **Versions:** Portico ${s.portico}; nginx ${v['nginx']}; HAProxy ${v['haproxy']}; Caddy ${v['caddy']}; node-http-proxy ${v['http-proxy']}; Node.js ${v['node']}${v['node-lts'] === undefined ? '' : `, and for the row on the Docker image's Node: ${v['node-lts']}`}; ${v['wrk']}; ${v['h2load']}; ${v['openssl']}`);
  const state = machineStateNote(rows);
  if (state !== '') out.push(state);
  out.push(`- **Pinning:** each proxy is one worker process (nginx \`worker_processes 1\`, HAProxy \`nbthread 1\`, Caddy \`GOMAXPROCS=1\`, Node single process) under \`taskset -c ${PROXY_CPU}\`; the load generator and the backend run under \`taskset -c ${LOAD_CPU}\`.`);
  out.push(`- **Runs:** every load run lasts ${s.durationSec} s and stops by itself; each scenario is run ${s.repeats}× per server; tables quote the median with (min–max). All servers run side by side on their own ports, and a scenario's runs go round them (run 1 on every server, then run 2, then run 3), so that the machine's slow spells fall on all of them alike; each server's first run of a scenario is preceded by 1 s of the same load, not measured (a warm-up for JIT-compiled servers and upstream pools).${connectShareNote(rows, s.durationSec)}`);
  out.push('- **TLS:** one ECDSA P-256 self-signed certificate for `bench.localhost`, made per run with openssl; TLS 1.2–1.3 enabled everywhere; clients send SNI = Host = `bench.localhost` and connect to 127.0.0.1, and offer TLS 1.3 suites in browsers\' order (`TLS_AES_128_GCM_SHA256` first; wrk through `OPENSSL_CONF`, h2load with `--tls13-ciphers`); servers that would pick by their own order (HAProxy, Node\'s servers) follow the client\'s, so every server negotiates `TLS_AES_128_GCM_SHA256` as a browser would get it (per-server notes show the cipher, and a server that negotiated another is marked ⚠).');
  out.push('- **Backend:** nginx (1 worker, CPU 1, access log off) returning a fixed 100-byte body at `/` and a 1 MiB file at `/1m`, and at `/upload` the 100-byte body once it has read the whole request body (S7), plain HTTP on 127.0.0.1:18081; every proxy keeps upstream connections alive.');
  out.push('- **CPU µs per unit** = utime+stime (from `/proc/PID/stat`, summed over the proxy\'s process tree, 10 ms ticks) during the run, divided by completed requests (or connections, or MiB). For the "backend direct" row it is the backend\'s own CPU.');
  out.push('- **Ratios:** "× nginx" and "× direct" divide the medians. For rates, higher is better; for CPU, lower is better. "CPU × nginx, same round" divides each run by nginx\'s run of the same round (under a minute apart, in the same stretch of the machine\'s speed) and quotes the median of those ratios with (min–max): the steadier comparison on a shared machine.');
  out.push('- **Errors:** a run with socket errors, failed requests or non-2xx responses is marked ⚠ and its counts shown; it is not dropped.');
  out.push('- **Caveat:** only 2 CPUs here, so the load generator shares its core with the backend; rates for the fastest servers (and the direct row) are bounded by that core, while CPU µs per unit is measured on the proxy\'s own core and stays comparable.');
  out.push('');
  out.push('## Summary (medians)', '', renderSummary(scenarios, rows), '');
  out.push(
    '## Portico and the targets of issue 4',
    '',
    'The issue states its targets in µs on its own machine, beside what nginx and Node\'s own server answering by itself cost there; here each becomes a bound on Portico\'s CPU over a reference measured in this run, in the same round. The two references give different bounds (Node alone costs more, relative to nginx, on this machine than on the issue\'s), so both are shown. "Met" means the median is within the bound.',
    '',
    renderTargets(scenarios, rows),
    '',
  );
  for (const info of scenarios) {
    out.push(`## ${info.title}`, '', renderScenario(info, rows), '');
    const cmd = rows.map((r) => r.cells.get(info.id)?.command).find((c) => c);
    if (cmd) out.push(`Command (port varies by server): \`${cmd}\``, '');
  }
  out.push(`## Memory — RSS holding ${s.idleConnections.toLocaleString('en-US')} idle TLS keep-alive connections`, '');
  out.push('Each connection completed a TLS handshake and one request, then stays open and idle; RSS is summed over the proxy\'s process tree (VmRSS) 1 s after the last one became idle. "Of which anonymous" is RssAnon: the process\'s own memory, without the resident pages of its executable and libraries (for a Node process, about 35–40 MiB of the `node` binary, shared by every Node process and worker on the machine). Summed over several processes (nginx\'s master and worker, Portico\'s primary and workers), RSS counts those shared pages once per process; the anonymous part counts nothing twice.', '');
  out.push(renderMemory(rows, s.idleConnections), '');
  // The hand-kept log of request-path optimisations and their measured effect travels with every table.
  const log = join(repoRoot, 'bench', 'optimisations.md');
  if (existsSync(log)) out.push(readFileSync(log, 'utf8').trimEnd(), '');
  out.push('## Notes per server', '');
  for (const row of rows) {
    const notes = [...(row.failure ? [`FAILED: ${row.failure}`] : []), ...row.notes];
    if (notes.length) out.push(`- **${row.label}:** ${notes.join('; ')}`);
  }
  out.push('', '## Exact configurations', '');
  out.push('<details><summary>backend (nginx)</summary>', '', '```nginx', s.backendConfig.trimEnd(), '```', '</details>', '');
  for (const row of rows) {
    if (!row.configText || row.id === 'direct') continue;
    out.push(`<details><summary>${row.label}</summary>`, '', '```', row.configText.trimEnd(), '```', '</details>', '');
  }
  writeFileSync(path, out.join('\n'));
}
