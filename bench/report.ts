/**
 * Turns measured runs into bench/RESULTS.md: medians with min–max, ratios
 * to nginx and to the direct backend, failures and errors shown in place.
 */
import type { TargetId } from './targets.js';

/** Identifiers of the scenarios. */
export type ScenarioId = 'S1' | 'S2' | 'S3' | 'S4' | 'S5' | 'S6' | 'S7';

/** How a scenario is labelled and what its unit is. */
export interface ScenarioInfo {
  readonly id: ScenarioId;
  readonly title: string;
  /** Rate unit, e.g. "req/s". */
  readonly rateUnit: string;
  /** What CPU time is divided by, e.g. "req". */
  readonly cpuUnit: string;
  readonly hasLatency: boolean;
}

/** One measured run: rate, latency, proxy CPU per unit, and what went wrong. */
export interface Measurement {
  readonly rate: number;
  readonly p50Ms?: number;
  readonly p99Ms?: number;
  readonly cpuUsPerUnit: number;
  /** Share of the proxy's CPU (0..1+) used by other processes during the run. */
  readonly foreignCpuShare: number;
  readonly errors: number;
  readonly non2xx: number;
  readonly resumed?: number;
  /** Which round of the run order (0-based): the runs of one round follow each other, every server in turn. */
  readonly round?: number;
  readonly notes: readonly string[];
}

/** All runs of one scenario against one server, or why there are none. */
export interface Cell {
  readonly runs: Measurement[];
  /** Scenario not applicable to this server (reason). */
  na?: string;
  /** Scenario failed to run at all (reason). */
  failure?: string;
  /** Reasons of individual runs that failed while others succeeded. */
  failedRuns?: string[];
  /** Exact command line of the last run. */
  command?: string;
}

/** Memory held by a server with N idle TLS keep-alive connections. */
export interface MemoryResult {
  readonly baselineRssBytes: number;
  readonly heldRssBytes: number;
  /** Of heldRssBytes, the anonymous (private) part: RssAnon, without file-backed pages such as the executable's. */
  readonly heldAnonRssBytes: number;
  readonly idle: number;
  readonly errors: number;
  readonly non2xx: number;
  readonly processes: number;
}

/** One row (server) of the results. */
export interface Row {
  readonly id: TargetId;
  readonly label: string;
  readonly cells: Map<ScenarioId, Cell>;
  memory?: MemoryResult | { failure: string };
  /** Whole-row failure (server did not start). */
  failure?: string;
  notes: string[];
  configText?: string;
}

/** Above this share of CPU 0 used by processes other than the proxy, a run is flagged. */
export const FOREIGN_CPU_WARN = 0.1;

/** Median, min and max of a list. */
export interface Spread {
  readonly median: number;
  readonly min: number;
  readonly max: number;
}

/** Median (mean of the middle two for even counts), min and max. */
export function spread(values: readonly number[]): Spread | null {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const mid = Math.floor(v.length / 2);
  const median = v.length % 2 === 1 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
  return { median, min: v[0]!, max: v[v.length - 1]! };
}

/** Format a number with 3 significant digits, thousands grouped. */
export function fmt(n: number): string {
  if (!Number.isFinite(n)) return '–';
  if (Math.abs(n) >= 1000) return Math.round(n).toLocaleString('en-US');
  if (Math.abs(n) >= 100) return n.toFixed(0);
  if (Math.abs(n) >= 10) return n.toFixed(1);
  return n.toFixed(2);
}

function fmtSpread(s: Spread | null): string {
  if (s === null) return '–';
  return `${fmt(s.median)} (${fmt(s.min)}–${fmt(s.max)})`;
}

function ratio(a: Spread | null, b: Spread | null): string {
  if (a === null || b === null || b.median === 0) return '–';
  return `${(a.median / b.median).toFixed(2)}×`;
}

/** A cell's rate over its runs (null when it has none). */
export function rateOf(cell: Cell | undefined): Spread | null {
  return cell && cell.runs.length > 0 ? spread(cell.runs.map((r) => r.rate)) : null;
}

/** A cell's CPU per unit over its runs (null when it has none). */
export function cpuOf(cell: Cell | undefined): Spread | null {
  return cell && cell.runs.length > 0 ? spread(cell.runs.map((r) => r.cpuUsPerUnit)) : null;
}

/**
 * Node alone's CPU per S1 request over nginx's above which a run is taken to have caught the machine in a spell
 * that slows Node processes (optimisations.md §28, §38): 0.96-1.38 in the full runs kept in RESULTS.md's history,
 * 1.55-2.1 in those that caught one. RESULTS.md's Machine state line and bench:quick's note both use it.
 */
export const SLOW_NODE_RATIO = 1.5;

/**
 * Per round, this server's CPU per unit over the reference's (nginx's, or Node alone's) in the same round.
 * The runs of a round follow each other, so a pair shares the machine's speed of the moment.
 */
export function pairedCpuSpread(cell: Cell | undefined, ref: Cell | undefined): Spread | null {
  if (cell === undefined || ref === undefined) return null;
  const byRound = new Map(ref.runs.map((r) => [r.round, r.cpuUsPerUnit]));
  const ratios = cell.runs.flatMap((r) => {
    const n = r.round === undefined ? undefined : byRound.get(r.round);
    return n !== undefined && n > 0 ? [r.cpuUsPerUnit / n] : [];
  });
  return spread(ratios);
}

function fmtRatioSpread(s: Spread | null): string {
  return s === null ? '–' : `${s.median.toFixed(2)}× (${s.min.toFixed(2)}–${s.max.toFixed(2)})`;
}

function pairedCpuRatio(cell: Cell, nginx: Cell | undefined): string {
  return fmtRatioSpread(pairedCpuSpread(cell, nginx));
}

/** A short marker and explanation for runs with errors, non-2xx or resumed sessions. */
function problems(cell: Cell): string[] {
  const out: string[] = [];
  if (cell.failedRuns?.length) out.push(`⚠ ${cell.failedRuns.length} run(s) failed and are not in the figures: ${cell.failedRuns.join('; ')}`);
  const bad = cell.runs.filter((r) => r.errors > 0 || r.non2xx > 0);
  if (bad.length > 0) {
    const errs = bad.map((r) => `${r.errors} err/${r.non2xx} non-2xx`).join(', ');
    out.push(`⚠ ${bad.length}/${cell.runs.length} runs had errors (${errs})`);
  }
  const busy = cell.runs.map((r) => r.foreignCpuShare).filter((f) => f > FOREIGN_CPU_WARN);
  if (busy.length > 0) {
    const pct = busy.map((f) => Math.round(f * 100));
    const range = Math.min(...pct) === Math.max(...pct) ? `${pct[0]}` : `${Math.min(...pct)}–${Math.max(...pct)}`;
    out.push(`⚠ other processes used ${range}% of the proxy CPU in ${busy.length}/${cell.runs.length} runs`);
  }
  const resumed = cell.runs.reduce((a, r) => a + (r.resumed ?? 0), 0);
  if (cell.runs.some((r) => r.resumed !== undefined)) {
    out.push(resumed > 0 ? `⚠ ${resumed} resumed handshakes (not counted)` : '0 resumed');
  }
  return out;
}

/** Markdown table for one scenario. */
export function renderScenario(info: ScenarioInfo, rows: readonly Row[]): string {
  const nginx = rows.find((r) => r.id === 'nginx')?.cells.get(info.id);
  const direct = rows.find((r) => r.id === 'direct')?.cells.get(info.id);
  const head = [
    'Server', `${info.rateUnit} median (min–max)`, '× nginx', '× direct',
    ...(info.hasLatency ? ['p50 ms', 'p99 ms'] : []),
    `proxy CPU µs/${info.cpuUnit} (min–max)`, 'CPU × nginx', 'CPU × nginx, same round (min–max)', 'Notes',
  ];
  const lines = [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`];
  for (const row of rows) {
    const cell = row.cells.get(info.id);
    const blank = head.length - 3; // all but Server, the status and Notes
    if (row.failure || !cell || cell.na || cell.failure) {
      const why = row.failure ? `failed: ${row.failure}` : cell?.na ? `n/a: ${cell.na}` : `failed: ${cell?.failure ?? 'not run'}`;
      lines.push(`| ${row.label} | ${row.failure || cell?.failure ? 'FAILED' : 'n/a'} |${' – |'.repeat(blank)} ${why.replace(/\|/g, '/').replace(/\n/g, ' ')} |`);
      continue;
    }
    const rate = rateOf(cell);
    const cpu = cpuOf(cell);
    const latency = info.hasLatency
      ? [fmtSpread(spread(cell.runs.map((r) => r.p50Ms ?? Number.NaN))), fmtSpread(spread(cell.runs.map((r) => r.p99Ms ?? Number.NaN)))]
      : [];
    const notes = [...problems(cell), ...new Set(cell.runs.flatMap((r) => r.notes))];
    const mark = cell.runs.some((r) => r.errors > 0 || r.non2xx > 0) || cell.failedRuns?.length ? ' ⚠' : '';
    lines.push(
      `| ${row.label} | ${fmtSpread(rate)}${mark} | ${ratio(rate, rateOf(nginx))} | ${ratio(rate, rateOf(direct))} | ${latency.join(' | ')}${latency.length ? ' | ' : ''}${row.id === 'direct' ? `${fmtSpread(cpu)} (backend itself)` : fmtSpread(cpu)} | ${row.id === 'direct' ? '–' : ratio(cpu, cpuOf(nginx))} | ${row.id === 'direct' ? '–' : pairedCpuRatio(cell, nginx)} | ${notes.join('; ').replace(/\|/g, '/')} |`,
    );
  }
  return lines.join('\n');
}

/** Markdown summary: one line per server, rate and CPU ratios to nginx for each scenario. */
export function renderSummary(infos: readonly ScenarioInfo[], rows: readonly Row[]): string {
  const head = ['Server', ...infos.map((i) => `${i.id} ${i.rateUnit} (× nginx) / CPU µs per ${i.cpuUnit} (× nginx)`), 'RSS, 1,000 idle TLS conns'];
  const lines = [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`];
  const nginx = rows.find((r) => r.id === 'nginx');
  for (const row of rows) {
    const cols = infos.map((info) => {
      const cell = row.cells.get(info.id);
      if (row.failure) return 'FAILED';
      if (!cell) return '–';
      if (cell.na) return 'n/a';
      if (cell.failure) return 'FAILED';
      const rate = rateOf(cell);
      const cpu = cpuOf(cell);
      const mark = cell.runs.some((r) => r.errors > 0 || r.non2xx > 0) || cell.failedRuns?.length ? ' ⚠' : '';
      const nCell = nginx?.cells.get(info.id);
      return `${fmt(rate?.median ?? Number.NaN)} (${ratio(rate, rateOf(nCell))}) / ${fmt(cpu?.median ?? Number.NaN)} (${row.id === 'direct' ? 'backend' : ratio(cpu, cpuOf(nCell))})${mark}`;
    });
    lines.push(`| ${row.label} | ${cols.join(' | ')} | ${renderMemoryShort(row)} |`);
  }
  return lines.join('\n');
}

function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

function renderMemoryShort(row: Row): string {
  const m = row.memory;
  if (!m) return row.failure ? 'FAILED' : '–';
  if ('failure' in m) return `FAILED: ${m.failure}`;
  return `${mib(m.heldRssBytes)}${m.errors > 0 || m.non2xx > 0 ? ' ⚠' : ''}`;
}

/** Markdown table for the memory test. */
export function renderMemory(rows: readonly Row[], count: number): string {
  const lines = [
    `| Server | RSS idle before | RSS holding ${count.toLocaleString('en-US')} idle TLS conns | of which anonymous | Δ per connection | processes | Notes |`,
    '|---|---|---|---|---|---|---|',
  ];
  for (const row of rows) {
    const m = row.memory;
    if (!m || 'failure' in m) {
      lines.push(`| ${row.label} | – | – | – | – | – | ${m ? `FAILED: ${m.failure}` : row.failure ? `FAILED: ${row.failure}` : 'not measured for this row'} |`);
      continue;
    }
    const per = m.idle > 0 ? `${((m.heldRssBytes - m.baselineRssBytes) / m.idle / 1024).toFixed(1)} KiB` : '–';
    const notes = m.errors > 0 || m.non2xx > 0 ? `⚠ ${m.idle} held, ${m.errors} errors, ${m.non2xx} non-2xx` : `${m.idle} held`;
    lines.push(`| ${row.label} | ${mib(m.baselineRssBytes)} | ${mib(m.heldRssBytes)} | ${mib(m.heldAnonRssBytes)} | ${per} | ${m.processes} | ${notes} |`);
  }
  return lines.join('\n');
}

/**
 * The speed targets of issue 4, each as a ratio to a reference measured in the same run. The issue states
 * them in µs on its own machine, next to what nginx and Node's own server (answering by itself) cost there;
 * on another machine only the ratios carry over, and the two references give different bounds, so both are
 * shown: S1 ≤ 25 µs is 1.45× Node alone (17.3) or 1.72× nginx (14.5); S2 ≤ 45 µs is 1.42× (31.6) or 3.60×
 * (12.5); S3 ≤ 450 µs is 1.10× (408) or 1.50× (300); S4 ≤ 670 µs/MiB is 1.19× (562) or 1.00× (670).
 */
const TARGETS: readonly { scenario: ScenarioId; what: string; nodeAlone: number; nginx: number }[] = [
  { scenario: 'S1', what: 'S1 ≤ 25 µs per request', nodeAlone: 25 / 17.3, nginx: 25 / 14.5 },
  { scenario: 'S2', what: 'S2 ≤ 45 µs per request', nodeAlone: 45 / 31.6, nginx: 45 / 12.5 },
  { scenario: 'S3', what: 'S3 ≤ 450 µs per connection', nodeAlone: 450 / 408, nginx: 450 / 300 },
  { scenario: 'S4', what: 'S4 ≤ 670 µs per MiB (ahead of nginx)', nodeAlone: 670 / 562, nginx: 1 },
];

function verdict(s: Spread | null, bound: number): string {
  if (s === null) return '–';
  return `${fmtRatioSpread(s)} ≤ ${bound.toFixed(2)}: ${s.median <= bound ? '**met**' : 'not met'}${s.median <= bound && s.max > bound ? ' (not in every round)' : ''}`;
}

/** Markdown: Portico (one pinned worker) against the targets and the first milestone, from this run's same-round ratios. */
export function renderTargets(scenarios: readonly ScenarioInfo[], rows: readonly Row[]): string {
  const cellOf = (id: TargetId, sc: ScenarioId): Cell | undefined => {
    const row = rows.find((r) => r.id === id);
    const cell = row?.cells.get(sc);
    return row?.failure || !cell || cell.na || cell.failure || cell.runs.length === 0 ? undefined : cell;
  };
  // The row on the Docker image's Node, when it is in this run: one more column, the same bound against nginx.
  const lts = rows.find((r) => r.id === 'portico-lts');
  const ltsHead = lts === undefined ? '' : ` ${lts.label}: CPU × nginx, same round (min–max) ≤ bound |`;
  const ltsCell = (sc: ScenarioId, bound: number): string => {
    if (lts === undefined) return '';
    if (lts.failure) return ' row failed |';
    return ` ${verdict(pairedCpuSpread(cellOf('portico-lts', sc), cellOf('nginx', sc)), bound)} |`;
  };
  const lines = [
    `| Target | Portico CPU × Node alone, same round (min–max) ≤ bound | Portico CPU × nginx, same round (min–max) ≤ bound |${ltsHead}`,
    `|---|---|---|${lts === undefined ? '' : '---|'}`,
  ];
  for (const t of TARGETS) {
    const p = cellOf('portico', t.scenario);
    lines.push(`| ${t.what} | ${verdict(pairedCpuSpread(p, cellOf('node-alone', t.scenario)), t.nodeAlone)} | ${verdict(pairedCpuSpread(p, cellOf('nginx', t.scenario)), t.nginx)} |${ltsCell(t.scenario, t.nginx)}`);
  }
  const mem = (id: TargetId): number | undefined => {
    const m = rows.find((r) => r.id === id)?.memory;
    return m !== undefined && 'heldRssBytes' in m ? m.heldRssBytes : undefined;
  };
  const pm = mem('portico');
  const nm = mem('nginx');
  const memVerdict = (m: number, n: number): string => `${(m / n).toFixed(2)}× (${mib(m)} against ${mib(n)}) ≤ 2.00: ${m / n <= 2 ? '**met**' : 'not met'}`;
  if (pm !== undefined && nm !== undefined) {
    // The row on the Docker image's Node is not measured for memory (run.ts), unless that is turned on there.
    const lm = mem('portico-lts');
    const ltsMem = lts === undefined ? '' : ` ${lm === undefined ? 'not measured' : memVerdict(lm, nm)} |`;
    lines.push(`| Memory with 1,000 idle TLS connections ≤ 2× nginx's | – | ${memVerdict(pm, nm)} |${ltsMem}`);
  }
  if (lts !== undefined) {
    lines.push(
      '',
      lts.failure
        ? `The last column would be the Portico row's build and config run by the Docker image's Node; that row failed: ${lts.failure.replace(/\|/g, '/')}`
        : "The last column is the Portico row's build and config run by the Node the Docker image is built on (the Dockerfile's `ARG NODE_MAJOR`), against nginx in the same round: the targets as the image meets them. The two Portico columns before it, on this machine's Node, are the figures of record.",
    );
    const vs = ['', `${lts.label} against Portico on this machine's Node, CPU, same round (min–max; below 1 is cheaper on the image's Node):`, ''];
    vs.push('| Scenario | CPU × Portico |', '|---|---|');
    let vsRows = 0;
    for (const sc of ['S1', 'S2', 'S3', 'S4', 'S5'] as const) {
      const r = pairedCpuSpread(cellOf('portico-lts', sc), cellOf('portico', sc));
      if (r === null) continue;
      vs.push(`| ${sc} | ${fmtRatioSpread(r)} |`);
      vsRows++;
    }
    if (vsRows > 0) lines.push(...vs);
  }
  const floor = ['', "Portico's own work: its CPU against the Node floor proxy's (the least a Node proxy built from Portico's parts does to forward), same round (min–max):", ''];
  floor.push('| Scenario | Portico CPU × floor proxy | floor proxy CPU × Node alone |', '|---|---|---|');
  let floorRows = 0;
  for (const sc of ['S1', 'S2', 'S3', 'S5'] as const) {
    const f = cellOf('floor', sc);
    if (f === undefined) continue;
    const pf = pairedCpuSpread(cellOf('portico', sc), f);
    const fa = pairedCpuSpread(f, cellOf('node-alone', sc));
    floor.push(`| ${sc} | ${pf === null ? '–' : fmtRatioSpread(pf)} | ${fa === null ? '–' : fmtRatioSpread(fa)} |`);
    floorRows++;
  }
  if (floorRows > 0) lines.push(...floor);
  const milestone = ['', 'First milestone, every scenario ahead of Caddy and node-http-proxy (CPU × nginx, same round, medians; lower is better):', ''];
  milestone.push('| Scenario | Portico | Caddy | node-http-proxy | Ahead of both |', '|---|---|---|---|---|');
  // S6 (a response cache) and S7 (uploads) are not among the issue's scenarios; neither Caddy nor node-http-proxy caches.
  for (const info of scenarios.filter((s) => s.id !== 'S6' && s.id !== 'S7')) {
    const med = (id: TargetId): number | undefined => pairedCpuSpread(cellOf(id, info.id), cellOf('nginx', info.id))?.median;
    const [p, c, h] = [med('portico'), med('caddy'), med('http-proxy')];
    const f = (x: number | undefined): string => (x === undefined ? 'n/a' : `${x.toFixed(2)}×`);
    const ahead = p !== undefined && (c === undefined || p < c) && (h === undefined || p < h);
    milestone.push(`| ${info.id} | ${f(p)} | ${f(c)} | ${f(h)} | ${p === undefined ? '–' : ahead ? 'yes' : 'no'} |`);
  }
  return [...lines, ...milestone].join('\n');
}
