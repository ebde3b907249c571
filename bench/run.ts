/**
 * `npm run bench`: the same scenarios against the backend directly, nginx,
 * HAProxy, Caddy, node-http-proxy and Portico; writes bench/RESULTS.md.
 * `npm run bench:quick`: S1 against nginx, Node alone and Portico only, printed.
 *
 * Environment: BENCH_DURATION (whole seconds per run, default 1; quick 2),
 * BENCH_REPEATS (default 3; quick 1), BENCH_ONLY (comma-separated row ids,
 * e.g. "nginx,portico", to run a subset while working on the bench),
 * BENCH_SCENARIOS (comma-separated scenario ids and/or "memory", e.g. "S4",
 * to measure one scenario while working on it).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { checkTools, readMachine } from './tools.js';
import { LOAD_CPU, PROXY_CPU, hasExited, readCpuBusyUs, readTreeCpuUs, stopProcess, waitCpuQuiet } from './procs.js';
import { prepareWorkspace, PORTS, subdir, type Workspace } from './workspace.js';
import { startBackend, startPortico, PROXY_TARGETS, QUICK_TARGETS, type ProxyPorts, type RunningTarget, type TargetSpec } from './targets.js';
import { runH2load, runHandshakes, runWrk, writeWrkResolveScript, writeWrkUploadScript, type LoadResult } from './load.js';
import { EXPECTED_CIPHER } from './client-tls.js';
import { probe } from './probe.js';
import { measureIdleMemory } from './memory.js';
import { cpuOf, FOREIGN_CPU_WARN, fmt, SLOW_NODE_RATIO, type Cell, type Measurement, type Row, type ScenarioId, type ScenarioInfo } from './report.js';
import { porticoVersion, writeResults, type RunSettings } from './results-file.js';
import { dockerNodeMajor, findLtsNode, type LtsNode } from './lts-node.js';

const quick = process.argv.includes('--quick');
// Whole seconds (wrk takes no fractions). A full run (11 rows, 7 scenarios, 3 runs each, the memory test) takes
// about 5.5 minutes with 1 s per run, 8.5 with 2 s and 10.5 with 3: the measured runs are most of it. 1 s is the
// default since the run-to-run spread on these shared machines is the machine's (tens of percent over minutes),
// not the run length's (optimisations.md §39). The quick run is a single run, so it keeps 2 s.
const durationSec = Number(process.env['BENCH_DURATION'] ?? (quick ? 2 : 1));
if (!Number.isInteger(durationSec) || durationSec < 1 || durationSec > 10) {
  process.stderr.write(`bench: BENCH_DURATION must be a whole number of seconds from 1 to 10 (wrk takes no fractions), got ${process.env['BENCH_DURATION']}\n`);
  process.exit(2);
}
const repeats = Number(process.env['BENCH_REPEATS'] ?? (quick ? 1 : 3));
const only = process.env['BENCH_ONLY']?.split(',').map((s) => s.trim()) ?? null;
const pickedScenarios = process.env['BENCH_SCENARIOS']?.split(',').map((s) => s.trim()) ?? null;
const IDLE_CONNECTIONS = 1000;

/** The scenarios, in order. */
export const SCENARIOS: readonly ScenarioInfo[] = [
  { id: 'S1', title: 'S1 — HTTPS HTTP/1.1 keep-alive, 100-byte response, 64 connections (wrk)', rateUnit: 'req/s', cpuUnit: 'req', hasLatency: true },
  { id: 'S2', title: 'S2 — HTTP/2 over TLS, 32 connections × 10 streams (h2load)', rateUnit: 'req/s', cpuUnit: 'req', hasLatency: true },
  { id: 'S3', title: 'S3 — new TLS connection per request, full handshake (16 concurrent, Node client)', rateUnit: 'conn/s', cpuUnit: 'conn', hasLatency: false },
  { id: 'S4', title: 'S4 — 1 MiB responses over HTTPS, 16 connections (wrk)', rateUnit: 'MiB/s', cpuUnit: 'MiB', hasLatency: false },
  { id: 'S5', title: 'S5 — plain HTTP/1.1 keep-alive, 100-byte response, 64 connections (wrk)', rateUnit: 'req/s', cpuUnit: 'req', hasLatency: true },
  { id: 'S6', title: 'S6 — a cached 100-byte response, HTTPS HTTP/1.1 keep-alive, 64 connections (wrk)', rateUnit: 'req/s', cpuUnit: 'req', hasLatency: true },
  { id: 'S7', title: 'S7 — 1 MiB uploads over HTTPS, 16 connections (wrk POST)', rateUnit: 'MiB/s', cpuUnit: 'MiB', hasLatency: false },
];

interface Context {
  readonly ws: Workspace;
  readonly backendPid: number;
  readonly wrkScript: string;
  /** wrk's script for S7: the resolve script's override, and a POST of the 1 MiB body. */
  readonly uploadScript: string;
  readonly distBench: string;
}

/** Run one scenario once against a started target; CPU is the target tree's utime+stime over the run. */
async function runOnce(ctx: Context, t: RunningTarget, id: ScenarioId, seconds: number): Promise<LoadResult> {
  switch (id) {
    case 'S1':
      return runWrk({ scheme: 'https', port: t.httpsPort, path: '/', connections: 64, durationSec: seconds, script: ctx.wrkScript, opensslConf: ctx.ws.clientOpensslConf });
    case 'S2':
      // h2load's per-request log goes in a folder of its own: Portico watches the certificates' folder.
      return runH2load({ port: t.httpsPort, clients: 32, streams: 10, durationSec: seconds, logFile: join(subdir(ctx.ws, 'load'), 'h2load.log') });
    case 'S3':
      return runHandshakes({ port: t.httpsPort, durationSec: seconds, concurrency: 16, script: join(ctx.distBench, 'handshake-client.js') });
    case 'S4':
      return runWrk({ scheme: 'https', port: t.httpsPort, path: '/1m', connections: 16, durationSec: seconds, script: ctx.wrkScript, opensslConf: ctx.ws.clientOpensslConf });
    case 'S5':
      return runWrk({ scheme: 'http', port: t.httpPort!, path: '/', connections: 64, durationSec: seconds, script: ctx.wrkScript, opensslConf: ctx.ws.clientOpensslConf });
    case 'S6':
      return runWrk({ scheme: 'https', port: t.httpsPort, path: '/cached', connections: 64, durationSec: seconds, script: ctx.wrkScript, opensslConf: ctx.ws.clientOpensslConf });
    case 'S7':
      // Every request POSTs the 1 MiB body; the backend reads all of it before it answers (targets.ts).
      return runWrk({ scheme: 'https', port: t.httpsPort, path: '/upload', connections: 16, durationSec: seconds, script: ctx.uploadScript, opensslConf: ctx.ws.clientOpensslConf });
  }
}


async function measure(ctx: Context, t: RunningTarget, id: ScenarioId, pinned: boolean, round: number): Promise<{ m: Measurement; command: string }> {
  const before = readTreeCpuUs(t.cpuRoot);
  const busyBefore = readCpuBusyUs(PROXY_CPU);
  const load = await runOnce(ctx, t, id, durationSec);
  // Negative when a process of the tree exited during the run; that run is then discarded.
  const cpuUs = readTreeCpuUs(t.cpuRoot) - before;
  // With the proxy pinned to CPU 0, any other busy time there is another process.
  const foreign = pinned && t.cpuRoot !== ctx.backendPid ? (readCpuBusyUs(PROXY_CPU) - busyBefore - cpuUs) / (load.elapsedSec * 1e6) : 0;
  const notes = load.errors > 0 || load.non2xx > 0 || id === 'S3' || id === 'S2' ? [...load.notes] : [];
  const m: Measurement = {
    rate: load.units / load.elapsedSec,
    ...(load.p50Ms !== undefined ? { p50Ms: load.p50Ms } : {}),
    ...(load.p99Ms !== undefined ? { p99Ms: load.p99Ms } : {}),
    cpuUsPerUnit: load.units > 0 && cpuUs >= 0 ? cpuUs / load.units : Number.NaN,
    foreignCpuShare: foreign,
    errors: load.errors,
    non2xx: load.non2xx,
    ...(load.resumed !== undefined ? { resumed: load.resumed } : {}),
    round,
    notes,
  };
  return { m, command: load.command };
}

/** Check a started target answers 200 with the right body; mark S2/S5 n/a where it cannot serve them. */
async function preflight(t: RunningTarget, row: Row): Promise<void> {
  const https = await probe('https', t.httpsPort);
  if (https.status !== 200 || https.bodyBytes !== 100) {
    throw new Error(`HTTPS probe got status ${https.status}, ${https.bodyBytes} body bytes (want 200, 100)`);
  }
  const big = await probe('https', t.httpsPort, '/1m');
  if (big.status !== 200 || big.bodyBytes !== 1024 * 1024) throw new Error(`HTTPS /1m probe got ${big.status}, ${big.bodyBytes} bytes`);
  // Every server should take the cipher browsers put first (client-tls.ts); one that does not is marked.
  const tls = https.tls ?? '?';
  row.notes.push(`TLS: ${tls}${tls.endsWith(` ${EXPECTED_CIPHER}`) ? '' : ` ⚠ not ${EXPECTED_CIPHER}, the cipher the other servers negotiate`}`);
  if (t.noCache !== undefined) row.cells.set('S6', { runs: [], na: t.noCache });
  else {
    const cached = await probe('https', t.httpsPort, '/cached');
    if (cached.status !== 200 || cached.bodyBytes !== 100) throw new Error(`HTTPS /cached probe got ${cached.status}, ${cached.bodyBytes} bytes (want 200, 100)`);
  }
  if (!t.h2) row.cells.set('S2', { runs: [], na: 'no HTTP/2 on the TLS port' });
  if (t.httpPort === null) {
    row.cells.set('S5', { runs: [], na: 'no plain HTTP listener' });
  } else {
    const plain = await probe('http', t.httpPort).catch((e: Error) => ({ status: 0, bodyBytes: 0, error: e.message }));
    if (plain.status !== 200) {
      const why = plain.status >= 300 && plain.status < 400 ? `plain HTTP listener only redirects (${plain.status})` : `plain HTTP probe got ${plain.status}`;
      row.cells.set('S5', { runs: [], na: why });
    }
  }
}

/**
 * One row under measurement: its server (started once, kept running for the whole bench), the
 * scenarios it runs, and how its CPU is judged.
 */
interface Entry {
  readonly row: Row;
  readonly start: () => Promise<RunningTarget>;
  readonly scenarios: readonly ScenarioId[];
  readonly memory: boolean;
  readonly pinned: boolean;
  t?: RunningTarget;
  exitedDuring?: ScenarioId;
  /** Wall time spent on this entry (start, memory, warm-ups, measured runs and the quiet waits before them), in ms. */
  spentMs: number;
}

/** Starts an entry's server, checks it answers, and measures its memory; a failure is recorded on the row. */
async function startEntry(ctx: Context, e: Entry): Promise<void> {
  const row = e.row;
  let t: RunningTarget;
  try {
    t = await e.start();
  } catch (err) {
    row.failure = (err as Error).message;
    log(`${row.label}: FAILED to start: ${row.failure}`);
    return;
  }
  e.t = t;
  row.configText = t.configText;
  row.notes.push(...t.notes);
  try {
    await preflight(t, row);
  } catch (err) {
    row.failure = (err as Error).message;
    log(`${row.label}: FAILED: ${row.failure}`);
    return;
  }
  if (e.memory) {
    try {
      row.memory = await measureIdleMemory({ cpuRoot: t.cpuRoot, port: t.httpsPort, count: IDLE_CONNECTIONS, script: join(ctx.distBench, 'idle-client.js'), settleMs: 1000 });
      log(`${row.label}: memory ${(row.memory.heldRssBytes / 1048576).toFixed(1)} MiB with ${row.memory.idle} idle connections`);
    } catch (err) {
      row.memory = { failure: (err as Error).message };
    }
  }
}

/**
 * Whether an entry runs scenario `id` (started, answering, not n/a there, alive); makes its cell for the
 * scenario, and records there why a server that exited earlier does not run it.
 */
function prepareScenario(e: Entry, id: ScenarioId): boolean {
  if (e.t === undefined || e.row.failure !== undefined || !e.scenarios.includes(id)) return false;
  const cell: Cell = e.row.cells.get(id) ?? { runs: [] };
  e.row.cells.set(id, cell);
  if (cell.na) return false;
  if (e.exitedDuring !== undefined) {
    cell.failure = `not run: the server exited during ${e.exitedDuring}`;
    return false;
  }
  return true;
}

/** One measured run of scenario `id` on an entry, recorded in its cell (a failed run is recorded too). */
async function measureInto(ctx: Context, e: Entry, id: ScenarioId, i: number): Promise<void> {
  const t = e.t!;
  const row = e.row;
  const cell = row.cells.get(id)!;
  try {
    // Every run starts on a quiet CPU: the previous run's server may still be winding down (closing
    // the load's connections, collecting garbage), which would count as another process's CPU here.
    const quiet = await waitCpuQuiet(PROXY_CPU);
    if (quiet > 500 || quiet < 0) log(`${row.label} ${id} #${i + 1}: CPU ${PROXY_CPU} ${quiet < 0 ? 'still busy after 5 s' : `quiet after ${quiet} ms`}`);
    const { m, command } = await measure(ctx, t, id, e.pinned, i);
    // A server that died mid-run: the run's numbers mean nothing.
    if (!t.isAlive()) throw new Error(`the server exited during this run; see ${t.logPath}`);
    cell.runs.push(m);
    cell.command = command;
    const lat = m.p99Ms !== undefined ? ` p99 ${fmt(m.p99Ms)} ms` : '';
    const bad = (m.errors || m.non2xx ? ` ⚠ ${m.errors} errors, ${m.non2xx} non-2xx` : '') +
      (m.foreignCpuShare > FOREIGN_CPU_WARN ? ` ⚠ other processes used ${Math.round(m.foreignCpuShare * 100)}% of CPU ${PROXY_CPU}` : '');
    log(`${row.label} ${id} #${i + 1}: ${fmt(m.rate)}/s${lat}, ${fmt(m.cpuUsPerUnit)} µs CPU/unit${bad}`);
  } catch (err) {
    // One failed run is recorded and the other repeats still run.
    const why = (err as Error).message;
    cell.failedRuns = [...(cell.failedRuns ?? []), why];
    log(`${row.label} ${id} #${i + 1}: FAILED: ${why}`);
    if (!t.isAlive()) {
      e.exitedDuring = id;
      row.notes.push(`⚠ the server exited during ${id}; later scenarios were not run (see ${t.logPath})`);
    }
  }
}

/**
 * Every server runs side by side, each on its own ports (idle while another is measured), and the
 * measured runs go round the servers: run 1 of every server, then run 2 of every server, and so on.
 * A shared machine's slow minutes then fall on every server alike, instead of on whichever server's
 * runs happened to be under way; before its first run, each server gets 1 s of the scenario's load.
 */
async function benchAll(ctx: Context, entries: readonly Entry[], scenarios: readonly ScenarioId[]): Promise<void> {
  try {
    // What each row adds to the bench's time, logged at the end (a row adds one server to every round).
    const timed = async (e: Entry, f: () => Promise<unknown>): Promise<void> => {
      const t0 = performance.now();
      try {
        await f();
      } finally {
        e.spentMs += performance.now() - t0;
      }
    };
    for (const e of entries) {
      log(e.row.label);
      await timed(e, () => startEntry(ctx, e));
    }
    for (const id of scenarios) {
      const active = entries.filter((e) => prepareScenario(e, id));
      // Warm-up, not measured: 1 s of the scenario's own load, so that a JIT-compiled server has compiled
      // this scenario's code paths (HTTP/2, large bodies, plain HTTP) and opened its upstream connections.
      for (const e of active) await timed(e, () => runOnce(ctx, e.t!, id, 1).catch(() => undefined));
      for (let i = 0; i < repeats; i++) {
        for (const e of active) if (e.exitedDuring === undefined) await timed(e, () => measureInto(ctx, e, id, i));
      }
      for (const e of active) {
        const cell = e.row.cells.get(id)!;
        if (cell.runs.length === 0 && cell.failedRuns) cell.failure = cell.failedRuns.join('; ');
      }
    }
  } finally {
    for (const e of entries) await e.t?.stop();
    log(`time per row: ${entries.map((e) => `${e.row.id} ${(e.spentMs / 1000).toFixed(1)} s`).join(', ')}`);
  }
}

function log(msg: string): void {
  process.stderr.write(`[bench] ${msg}\n`);
}

function newRow(spec: Pick<TargetSpec, 'id' | 'label'>): Row {
  return { id: spec.id, label: spec.label, cells: new Map(), notes: [] };
}

/** Whether the built Portico config schema knows a "workers" key. */
function porticoSupportsWorkers(ws: Workspace): boolean {
  try {
    return /\bworkers\b/.test(readFileSync(join(ws.repoRoot, 'dist', 'src', 'config', 'schema.js'), 'utf8'));
  } catch {
    return false;
  }
}

async function main(): Promise<void> {
  let versions: Record<string, string>;
  try {
    versions = checkTools();
  } catch (err) {
    process.stderr.write(`bench: ${(err as Error).message}\n`);
    process.exit(2);
  }
  const machine = readMachine();
  if (machine.nproc < 2) {
    process.stderr.write(`bench: needs at least 2 CPUs (proxy on CPU ${PROXY_CPU}, load on CPU ${LOAD_CPU}); this machine has ${machine.nproc}\n`);
    process.exit(2);
  }
  // Keep this orchestrating process (all its threads) off the proxy's CPU too.
  execFileSync('taskset', ['-a', '-p', '-c', LOAD_CPU, String(process.pid)], { stdio: 'ignore' });
  const ws = prepareWorkspace();
  const backend = await startBackend(ws);
  const ctx: Context = { ws, backendPid: backend.proc.pid, wrkScript: writeWrkResolveScript(ws), uploadScript: writeWrkUploadScript(ws), distBench: join(ws.repoRoot, 'dist', 'bench') };
  const onSignal = (): void => {
    void stopProcess(backend.proc).finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const load1 = Number(readLoadAvg().split(' ')[0]);
  if (load1 > machine.nproc / 2) log(`warning: load average ${load1} on ${machine.nproc} CPUs; other work on this machine will distort the numbers`);
  const started = new Date();
  const portico = porticoVersion(ws.repoRoot);
  const loadAvgStart = readLoadAvg();
  const workers = porticoSupportsWorkers(ws);
  const rows: Row[] = [];
  const scenarios: ScenarioId[] = pickedScenarios !== null
    ? SCENARIOS.map((s) => s.id).filter((id) => pickedScenarios.includes(id))
    : quick ? ['S1'] : SCENARIOS.map((s) => s.id);
  const memory = !quick && (pickedScenarios === null || pickedScenarios.includes('memory'));
  try {
    const direct: RunningTarget = {
      cpuRoot: backend.proc.pid, httpsPort: PORTS.backendHttps, httpPort: PORTS.backendHttp, h2: true,
      configText: backend.configText, notes: ['the backend nginx serving the client itself (TLS on 18443, plain on 18081), sharing CPU 1 with the load generator'],
      isAlive: () => !hasExited(backend.proc), logPath: backend.proc.logPath,
      stop: async () => {},
    };
    const all = (quick ? QUICK_TARGETS : PROXY_TARGETS).filter((t) => only === null || only.includes(t.id));
    const entries: Entry[] = [];
    // Each server under test listens on its own two ports, 10 apart, so that all can run at once.
    const nextPorts = (): ProxyPorts => ({ https: PORTS.proxyHttps + 10 * entries.length, http: PORTS.proxyHttp + 10 * entries.length });
    const add = (row: Row, start: () => Promise<RunningTarget>, opts: { memory: boolean; pinned: boolean }): void => {
      rows.push(row);
      entries.push({ row, start, scenarios, ...opts, spentMs: 0 });
    };
    if (!quick && (only === null || only.includes('direct'))) {
      const row = newRow({ id: 'direct', label: 'backend direct (limit)' });
      // The backend answers /cached as it answers / (S1): no cache between, nothing S1 does not already measure.
      row.cells.set('S6', { runs: [], na: 'the backend answers /cached as / (S1)' });
      add(row, async () => direct, { memory, pinned: true });
    }
    for (const spec of all) {
      const ports = nextPorts();
      const start = spec.id === 'portico' && workers ? () => startPortico(ws, ports, { cpus: PROXY_CPU, workers: 1 }) : () => spec.start(ws, ports);
      const row = newRow(spec);
      // The floor row is there for Portico's own overhead on small requests (and a connection's); large bodies
      // go the same native way through both, and its memory is Node's own (the Node alone row's).
      if (spec.id === 'floor') for (const id of ['S4', 'S7'] as const) row.cells.set(id, { runs: [], na: 'the floor row measures S1, S2, S3 and S5' });
      add(row, start, { memory: memory && spec.id !== 'floor', pinned: true });
    }
    if (!quick && (only === null || only.includes('portico-lts'))) {
      // The Portico row again (same dist/ build, same config, one process on the proxy's CPU), run by the Node the
      // Docker image is built on (its major from the Dockerfile) instead of this machine's: what the image's users get.
      let major: number | undefined;
      let lts: LtsNode | undefined;
      let failure = '';
      try {
        major = dockerNodeMajor(ws.repoRoot);
        lts = await findLtsNode(major, log);
      } catch (err) {
        failure = (err as Error).message;
      }
      const name = major === undefined ? "the Docker image's Node" : `Node ${major}`;
      const label = major === undefined ? `Portico on ${name}` : `Portico on ${name} (${lts === undefined ? '' : `${lts.version}, `}the Docker image's Node)`;
      const row = newRow({ id: 'portico-lts', label });
      // Memory too (about 2 s): what the image holds with 1,000 idle TLS connections. The Node 20 row stays the figure of record.
      const ltsMemory = true;
      for (const id of ['S6', 'S7'] as const) row.cells.set(id, { runs: [], na: "the Docker image's Node row measures S1–S5" });
      if (lts === undefined) {
        row.failure = `no ${name} to run Portico with: ${failure}`;
        versions['node-lts'] = `${name} not found (see its row)`;
        log(`${row.label}: FAILED: ${row.failure}`);
        rows.push(row);
      } else {
        const node = lts.path;
        versions['node-lts'] = lts.version;
        row.notes.push(`the Portico row's build (dist/) and generated config, run by Node ${lts.version} (${node}; ${lts.source}), the Node of the Docker image (Dockerfile: ARG NODE_MAJOR=${lts.major}), where every other Node row runs on this machine's ${process.version}${ltsMemory ? '' : '; not measured for memory'}`);
        const ports = nextPorts();
        add(row, () => startPortico(ws, ports, { cpus: PROXY_CPU, node, ...(workers ? { workers: 1 } : {}) }), { memory: memory && ltsMemory, pinned: true });
      }
    }
    if (!quick && (only === null || only.includes('portico-log'))) {
      // The issue's targets hold "with the full feature set on": the same Portico, logging every request.
      const row = newRow({ id: 'portico-log', label: 'Portico, access log and header rules on' });
      row.notes.push(
        'as the Portico row, with "log": {"level": "info", "access": true} (one JSON access line per request: host, route, upstream, status, duration, formatted by pino and written in batches into a file) and header rules on the host (a request header set; a response header set and "Server" removed)',
      );
      for (const id of ['S3', 'S4', 'S6', 'S7'] as const) row.cells.set(id, { runs: [], na: 'the access-log row measures S1, S2 and S5' });
      const ports = nextPorts();
      add(row, () => startPortico(ws, ports, { cpus: PROXY_CPU, accessLog: true, ...(workers ? { workers: 1 } : {}) }), { memory: false, pinned: true });
    }
    if (!quick && (only === null || only.includes('portico-all'))) {
      const row = newRow({ id: 'portico-all', label: `Portico, ${machine.nproc} workers, unpinned` });
      if (workers) {
        row.notes.push(`all cores: workers = ${machine.nproc}, not pinned; the load generator and backend still run on CPU ${LOAD_CPU}, so they compete with Portico for it; "× nginx" compares with the single-worker nginx row`);
        for (const id of ['S4', 'S5', 'S6', 'S7'] as const) row.cells.set(id, { runs: [], na: 'the all-cores row measures S1–S3 only' });
        const ports = nextPorts();
        add(row, () => startPortico(ws, ports, { cpus: null, workers: machine.nproc }), { memory, pinned: false });
      } else {
        row.failure = 'skipped: Portico\'s config has no "workers" setting yet';
        rows.push(row);
      }
    }
    await benchAll(ctx, entries, scenarios);
  } finally {
    await stopProcess(backend.proc);
  }
  if (quick) {
    for (const id of scenarios) printQuick(rows, id);
    return;
  }
  const settings: RunSettings = { durationSec, repeats, idleConnections: IDLE_CONNECTIONS, started, finished: new Date(), machine, versions, backendConfig: backend.configText, loadAvgStart, loadAvgEnd: readLoadAvg(), portico };
  // Only a complete run with the default settings replaces the committed results.
  const partial = only !== null || pickedScenarios !== null || process.env['BENCH_DURATION'] !== undefined || process.env['BENCH_REPEATS'] !== undefined;
  const path = partial ? join(ws.dir, 'RESULTS.md') : join(ws.repoRoot, 'bench', 'RESULTS.md');
  writeResults(path, ws.repoRoot, settings, SCENARIOS, rows);
  log(`wrote ${path}${partial ? ' (BENCH_ONLY/BENCH_SCENARIOS/BENCH_DURATION/BENCH_REPEATS set: bench/RESULTS.md left alone)' : ''}`);
}

function readLoadAvg(): string {
  return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
}

function printQuick(rows: readonly Row[], id: ScenarioId): void {
  const info = SCENARIOS.find((s) => s.id === id)!;
  const get = (row: string): Cell | undefined => rows.find((r) => r.id === row)?.cells.get(id);
  const p = get('portico');
  const n = get('nginx');
  const line = (label: string, row: Row | undefined, c: Cell | undefined): string => {
    if (row?.failure) return `${label}: FAILED: ${row.failure}`;
    const m = c?.runs[0];
    if (!m) return `${label}: no result${c?.failure ? ` (${c.failure})` : c?.na ? ` (${c.na})` : ''}`;
    const bad = [
      ...(m.errors || m.non2xx ? [`⚠ ${m.errors} errors, ${m.non2xx} non-2xx`] : []),
      ...(m.foreignCpuShare > FOREIGN_CPU_WARN ? [`⚠ other processes used ${Math.round(m.foreignCpuShare * 100)}% of CPU ${PROXY_CPU}`] : []),
    ].map((n) => `  ${n}`).join('');
    const p99 = m.p99Ms !== undefined ? `, p99 ${fmt(m.p99Ms)} ms` : '';
    return `${label}: ${fmt(m.rate)} ${info.rateUnit}${p99}, ${fmt(m.cpuUsPerUnit)} µs CPU/${info.cpuUnit}${bad}`;
  };
  const a = get('node-alone');
  const pr = rows.find((r) => r.id === 'portico');
  const nr = rows.find((r) => r.id === 'nginx');
  const ar = rows.find((r) => r.id === 'node-alone');
  console.log(`${info.title}, ${durationSec} s, proxy pinned to CPU ${PROXY_CPU}`);
  console.log(line('  nginx     ', nr, n));
  console.log(line('  Node alone', ar, a));
  console.log(line('  Portico   ', pr, p));
  const pc = cpuOf(p);
  const nc = cpuOf(n);
  const ac = cpuOf(a);
  if (!pc) return;
  const ratios = [
    ...(nc ? [`${(pc.median / nc.median).toFixed(2)}× nginx`] : []),
    ...(ac ? [`${(pc.median / ac.median).toFixed(2)}× Node alone`] : []),
  ];
  if (ratios.length > 0) console.log(`Portico CPU/${info.cpuUnit}: ${fmt(pc.median)} µs = ${ratios.join(', ')}`);
  // Node alone costs about 1.0-1.4x nginx per S1 request here in the machine's usual state; far above that, the
  // machine is in a spell that slows Node processes (Node alone's JavaScript-heavy server more than Portico), and
  // both ratios say more about the machine than about a change.
  if (id === 'S1' && nc && ac && ac.median / nc.median > SLOW_NODE_RATIO) {
    console.log(`note: Node alone took ${(ac.median / nc.median).toFixed(2)}× nginx's CPU (about 1.0-1.4× usually): this machine is running Node slowly just now (bench/optimisations.md §28, §38), which moves both ratios; judge a change by bench/scripts/ab-instructions.sh (instruction counts) or ab-cpu.sh (alternated pairs) instead`);
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
