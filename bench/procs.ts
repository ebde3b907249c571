/**
 * Process helpers for the benchmark: start pinned processes, stop exactly the
 * PIDs we started, and read CPU time and RSS of a process tree from /proc.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync, openSync, closeSync } from 'node:fs';
import { connect } from 'node:net';
import { cpus } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';

/** CPU that the proxy under test is pinned to. */
export const PROXY_CPU = '0';
/** CPU that the load generator and the backend are pinned to. */
export const LOAD_CPU = '1';

/** Every CPU: the bench itself runs pinned to LOAD_CPU, and children inherit that unless told otherwise. */
export const ALL_CPUS = `0-${cpus().length - 1}`;

/** Microseconds per clock tick; `getconf CLK_TCK` is 100 on Linux. */
const TICK_US = 10_000;

/** A process we started, with where its output goes. */
export interface Started {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly name: string;
  readonly logPath: string;
}

/** Options for {@link startPinned}. */
export interface StartOptions {
  /** CPU list for taskset (e.g. "0"), or null to run on every CPU. */
  readonly cpus: string | null;
  readonly env?: NodeJS.ProcessEnv;
  readonly cwd?: string;
  /** File that receives stdout and stderr. */
  readonly logPath: string;
}

/**
 * Start `cmd args` under `taskset -c cpus` (taskset execs, so the PID is the
 * command's own), output appended to a log file.
 */
export function startPinned(name: string, cmd: string, args: readonly string[], opts: StartOptions): Started {
  const fd = openSync(opts.logPath, 'a');
  const argv = ['taskset', '-c', opts.cpus ?? ALL_CPUS, cmd, ...args];
  const child = spawn(argv[0]!, argv.slice(1), {
    stdio: ['ignore', fd, fd],
    env: opts.env ?? process.env,
    cwd: opts.cwd,
  });
  closeSync(fd);
  if (child.pid === undefined) throw new Error(`could not start ${name}`);
  return { child, pid: child.pid, name, logPath: opts.logPath };
}

/** Whether the process has exited (or never started). */
export function hasExited(p: Started): boolean {
  return p.child.exitCode !== null || p.child.signalCode !== null;
}

/**
 * Stop a process we started: SIGTERM to its PID, then SIGKILL to that PID and
 * to any descendants still alive after `graceMs`. Never signals by name.
 */
export async function stopProcess(p: Started, graceMs = 3000): Promise<void> {
  if (hasExited(p)) return;
  const descendants = listDescendants(p.pid);
  const exited = new Promise<void>((resolve) => p.child.once('exit', () => resolve()));
  try {
    process.kill(p.pid, 'SIGTERM');
  } catch {
    return;
  }
  const done = await Promise.race([exited.then(() => true), sleep(graceMs).then(() => false)]);
  for (const pid of done ? descendants : [p.pid, ...descendants]) {
    if (isAlive(pid)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
  }
  if (!done) await Promise.race([exited, sleep(1000)]);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

interface StatFields {
  readonly ppid: number;
  readonly ticks: number;
}

function readStat(pid: number): StatFields | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // comm may contain spaces and parentheses: fields start after the last ')'.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state); ppid is field 4, utime 14, stime 15.
  const ppid = Number(rest[1]);
  const ticks = Number(rest[11]) + Number(rest[12]);
  return { ppid, ticks };
}

/** PIDs of all live descendants of `root` (not including root). */
export function listDescendants(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid)) continue;
    const st = readStat(pid);
    if (st === null) continue;
    const list = children.get(st.ppid);
    if (list) list.push(pid);
    else children.set(st.ppid, [pid]);
  }
  const out: number[] = [];
  const queue = [root];
  for (let i = 0; i < queue.length; i++) {
    for (const c of children.get(queue[i]!) ?? []) {
      out.push(c);
      queue.push(c);
    }
  }
  return out;
}

/**
 * utime+stime in microseconds of `root` and its live descendants
 * (from /proc/PID/stat, all threads included).
 */
export function readTreeCpuUs(root: number): number {
  let ticks = 0;
  for (const pid of [root, ...listDescendants(root)]) ticks += readStat(pid)?.ticks ?? 0;
  return ticks * TICK_US;
}

/**
 * Busy time (all but idle and iowait) of one CPU in microseconds, from
 * /proc/stat; used to notice other processes on the proxy's CPU.
 */
export function readCpuBusyUs(cpu: string): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n').find((l) => l.startsWith(`cpu${cpu} `));
  if (!line) return Number.NaN;
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
  return (total - (f[3] ?? 0) - (f[4] ?? 0)) * TICK_US;
}

/**
 * Waits until CPU `cpu` is quiet: busy under `maxShare` of a 250 ms window, for at most `timeoutMs`.
 * Returns how long it waited, or -1 when the CPU stayed busy (say, a server still winding down).
 */
export async function waitCpuQuiet(cpu: string, timeoutMs = 5000, maxShare = 0.1): Promise<number> {
  const started = performance.now();
  for (;;) {
    const before = readCpuBusyUs(cpu);
    await sleep(250);
    if ((readCpuBusyUs(cpu) - before) / 250_000 < maxShare) return Math.round(performance.now() - started);
    if (performance.now() - started > timeoutMs) return -1;
  }
}

/** Sum of VmRSS in bytes over `root` and its live descendants (those of memoryPids). */
export function readTreeRssBytes(root: number): number {
  return readTreeStatusKb(root, 'VmRSS') * 1024;
}

/**
 * Sum of RssAnon in bytes over `root` and its live descendants: the resident
 * memory that is the process's own (heap, stacks, buffers), without the
 * executable's and libraries' file pages, which worker processes share.
 */
export function readTreeAnonRssBytes(root: number): number {
  return readTreeStatusKb(root, 'RssAnon') * 1024;
}

/**
 * The processes whose memory counts for a server: its tree, without nginx's cache manager and cache
 * loader, which exist only because S6 gives nginx a proxy_cache_path; the memory row compares servers
 * configured as plain TLS-terminating proxies, as issue 4 sets it.
 */
export function memoryPids(root: number): number[] {
  return [root, ...listDescendants(root)].filter((pid) => {
    try {
      return !/^nginx: cache (manager|loader) process/.test(readFileSync(`/proc/${pid}/cmdline`, 'latin1'));
    } catch {
      return false;
    }
  });
}

function readTreeStatusKb(root: number, field: string): number {
  const re = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm');
  let kb = 0;
  for (const pid of memoryPids(root)) {
    try {
      const m = re.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (m) kb += Number(m[1]);
    } catch {
      /* exited */
    }
  }
  return kb;
}

/** Number of processes in the tree rooted at `root` whose memory counts (memoryPids). */
export function countTree(root: number): number {
  return memoryPids(root).length;
}

/** Resolve once 127.0.0.1:port accepts a TCP connection; throws after timeoutMs. */
export async function waitForPort(port: number, timeoutMs: number, alive?: () => boolean): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (alive && !alive()) throw new Error('process exited before listening');
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect({ host: '127.0.0.1', port });
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await sleep(100);
  }
  throw new Error(`port ${port} not listening after ${timeoutMs} ms`);
}

/** Throw if anything already accepts connections on 127.0.0.1:port (a stale server would be measured instead of ours). */
export async function assertPortFree(port: number): Promise<void> {
  const inUse = await new Promise<boolean>((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
  if (inUse) throw new Error(`127.0.0.1:${port} is already in use by another process; stop it first`);
}

/** Result of a bounded command run. */
export interface CommandResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly timedOut: boolean;
}

/**
 * Run a command to completion, pinned to `cpus`, killed (by its PID) if it
 * outlives `timeoutMs`.
 */
export async function runBounded(
  cmd: string,
  args: readonly string[],
  cpus: string | null,
  timeoutMs: number,
  input?: string,
  env?: Readonly<Record<string, string>>,
): Promise<CommandResult> {
  const argv = ['taskset', '-c', cpus ?? ALL_CPUS, cmd, ...args];
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'], env: env === undefined ? process.env : { ...process.env, ...env } });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  child.stdin.on('error', () => {});
  child.stdin.end(input ?? '');
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    if (child.pid !== undefined) {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }, timeoutMs);
  const code = await new Promise<number | null>((resolve) => {
    child.once('close', (c) => resolve(c));
    child.once('error', () => resolve(null));
  });
  clearTimeout(timer);
  return { code, stdout, stderr, timedOut };
}
