/**
 * `npm test`'s runner: every dist/test/*.test.js file in a Node process of its own, four at a time, each
 * reporting in TAP; prints each file's output whole once it ends, then the totals.
 *
 * Why not `node --test`: its parent process reads each file's results from the child's stdout in V8's
 * serialisation, and Node 20's reader can put bytes out of order when a chunk of that stream ends in 0xFF
 * after a partial frame; it then waits forever for a frame that never completes, at 100 % CPU, deaf to
 * SIGTERM (seen once, with eight files at a time; nodejs/node#62693 is the same loop). A file run directly
 * reports its own results, so nothing is parsed between processes but the summary lines below.
 *
 *   node dist/test/run-all.js [file.test.js ...] [--node-flag ...]
 *
 * Files default to every *.test.js beside this script; arguments starting with "--" go to every file's
 * Node (say `--test-name-pattern=cache`). PORTICO_TEST_CONCURRENCY sets how many files run at once
 * (default 4), PORTICO_TEST_FILE_TIMEOUT the seconds after which a file still running is killed and failed
 * (default 180). Files that took longest in the previous run start first (node_modules/.cache), so a long
 * file does not start last. The last lines are the totals, `# tests N`, `# pass N`, `# fail N`, …, as
 * `node --test` prints them; the exit code is 1 when a test failed or a file ended without its summary.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '..', '..');
const COUNTS = ['tests', 'suites', 'pass', 'fail', 'cancelled', 'skipped', 'todo'] as const;
type Counts = Record<(typeof COUNTS)[number], number>;
/**
 * A file still running after this long is killed and counted as failed. Node 20 applies `--test-timeout`
 * only under `node --test`, not to a file run directly, so this limit is what stops a hung test there;
 * the longest file takes about 50 s with four at a time and under 70 s with eight.
 */
const FILE_LIMIT_MS = Number(process.env['PORTICO_TEST_FILE_TIMEOUT'] ?? 180) * 1000;
const DURATIONS_FILE = join(repo, 'node_modules', '.cache', 'portico', 'test-durations.json');

interface FileResult {
  readonly file: string;
  readonly ms: number;
  readonly counts: Counts | undefined;
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly output: string;
  readonly killed: boolean;
}

const args = process.argv.slice(2);
const nodeFlags = args.filter((a) => a.startsWith('--'));
const named = args.filter((a) => !a.startsWith('--')).map((a) => resolve(a));
const files = named.length > 0 ? named : readdirSync(here).filter((f) => f.endsWith('.test.js')).sort().map((f) => join(here, f));
const concurrency = Number(process.env['PORTICO_TEST_CONCURRENCY'] ?? 4);
if (!(FILE_LIMIT_MS > 0)) {
  process.stderr.write(`run-all: PORTICO_TEST_FILE_TIMEOUT must be a number of seconds above 0, got ${process.env['PORTICO_TEST_FILE_TIMEOUT']}\n`);
  process.exit(2);
}
if (!Number.isInteger(concurrency) || concurrency < 1) {
  process.stderr.write(`run-all: PORTICO_TEST_CONCURRENCY must be a whole number from 1, got ${process.env['PORTICO_TEST_CONCURRENCY']}\n`);
  process.exit(2);
}

const previous = readDurations();
// Longest first; a file with no previous time (new, or a first run) counts as long.
const queue = [...files].sort((a, b) => (previous[basename(b)] ?? Infinity) - (previous[basename(a)] ?? Infinity) || a.localeCompare(b));
const running = new Set<ReturnType<typeof spawn>>();
const results: FileResult[] = [];
const started = performance.now();

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    for (const child of running) child.kill('SIGKILL');
    process.stderr.write(`run-all: ${signal}: stopped ${running.size} running test file(s)\n`);
    process.exit(signal === 'SIGINT' ? 130 : 143);
  });
}

await Promise.all(Array.from({ length: Math.min(concurrency, queue.length) }, async () => {
  for (let file = queue.shift(); file !== undefined; file = queue.shift()) {
    const r = await runFile(file);
    results.push(r);
    process.stdout.write(`# file ${relative(r.file)} (${(r.ms / 1000).toFixed(1)} s)\n${r.output}${r.output.endsWith('\n') ? '' : '\n'}`);
  }
}));

const total: Counts = { tests: 0, suites: 0, pass: 0, fail: 0, cancelled: 0, skipped: 0, todo: 0 };
const broken: string[] = [];
for (const r of results) {
  for (const k of COUNTS) total[k] += r.counts?.[k] ?? 0;
  const why = r.killed ? `still running after ${FILE_LIMIT_MS / 1000} s, killed: the test after the last one its output reports did not end`
    : r.counts === undefined ? `ended (exit ${r.code ?? r.signal}) without its summary`
    : r.code !== 0 && r.counts.fail === 0 && r.counts.cancelled === 0 ? `exited ${r.code ?? r.signal} with no test failed` : undefined;
  if (why !== undefined) {
    broken.push(`${relative(r.file)}: ${why}`);
    total.fail++;
  }
}
// A run with test filters (node flags) does not say how long a file takes.
if (nodeFlags.length === 0) writeDurations(results);

const failedTests = results.flatMap((r) => (r.counts !== undefined && r.counts.fail + r.counts.cancelled > 0
  ? r.output.split('\n').filter((l) => /^not ok \d+ /.test(l)).map((l) => `${relative(r.file)}: ${l}`)
  : []));
if (failedTests.length > 0 || broken.length > 0) {
  process.stdout.write(`\n# failed:\n${[...failedTests, ...broken].map((l) => `#   ${l}`).join('\n')}\n`);
}
process.stdout.write(`# files ${results.length} (${concurrency} at a time, ${((performance.now() - started) / 1000).toFixed(1)} s)\n`);
for (const k of COUNTS) process.stdout.write(`# ${k} ${total[k]}\n`);
process.exitCode = total.fail > 0 || total.cancelled > 0 || total.tests === 0 ? 1 : 0;

/** Runs one test file in a Node of its own, reporting in TAP; its output (stdout, then stderr) is kept for printing. */
function runFile(file: string): Promise<FileResult> {
  const t0 = performance.now();
  const child = spawn(process.execPath, ['--test-reporter=tap', '--test-timeout=120000', '--test-force-exit', ...nodeFlags, file], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(child);
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout.on('data', (d: Buffer) => out.push(d));
  child.stderr.on('data', (d: Buffer) => err.push(d));
  let killed = false;
  const limit = setTimeout(() => {
    killed = true;
    child.kill('SIGKILL');
  }, FILE_LIMIT_MS);
  return new Promise((done) => {
    child.on('close', (code, signal) => {
      clearTimeout(limit);
      running.delete(child);
      const stdout = Buffer.concat(out).toString();
      const stderr = Buffer.concat(err).toString();
      done({
        file,
        ms: performance.now() - t0,
        counts: summary(stdout),
        code,
        signal,
        killed,
        output: stderr === '' ? stdout : `${stdout}${stdout.endsWith('\n') ? '' : '\n'}# stderr of ${relative(file)}:\n${stderr.replace(/^/gm, '# ')}\n`,
      });
    });
  });
}

/** The counts of a file's TAP summary (its last `# tests N` … `# todo N` lines, not indented). */
function summary(tap: string): Counts | undefined {
  const counts: Partial<Counts> = {};
  for (const m of tap.matchAll(/^# (tests|suites|pass|fail|cancelled|skipped|todo) (\d+)$/gm)) counts[m[1] as keyof Counts] = Number(m[2]);
  if (counts.tests === undefined || counts.pass === undefined || counts.fail === undefined) return undefined;
  return { tests: counts.tests, suites: counts.suites ?? 0, pass: counts.pass, fail: counts.fail, cancelled: counts.cancelled ?? 0, skipped: counts.skipped ?? 0, todo: counts.todo ?? 0 };
}

function relative(file: string): string {
  return file.startsWith(`${repo}/`) ? file.slice(repo.length + 1) : file;
}

/** The previous run's times by file name; a damaged or hand-edited file gives up only the entries that are not times. */
function readDurations(): Record<string, number> {
  try {
    const parsed: unknown = JSON.parse(readFileSync(DURATIONS_FILE, 'utf8'));
    if (typeof parsed !== 'object' || parsed === null) return {};
    return Object.fromEntries(Object.entries(parsed).filter((e): e is [string, number] => typeof e[1] === 'number' && Number.isFinite(e[1])));
  } catch {
    return {};
  }
}

/** Keeps each file's time for the next run's order; a run of some files keeps the others' times. */
function writeDurations(rs: readonly FileResult[]): void {
  try {
    const next = { ...previous };
    for (const r of rs) next[basename(r.file)] = Math.round(r.ms);
    mkdirSync(dirname(DURATIONS_FILE), { recursive: true });
    writeFileSync(DURATIONS_FILE, `${JSON.stringify(next, null, 1)}\n`);
  } catch {
    // no writable node_modules: the next run goes in name order
  }
}
