/**
 * The node binary of the "Portico on Node <major>" row: the Node LTS that the Docker image is built on. Its major
 * is the Dockerfile's `ARG NODE_MAJOR=` line (the one source of truth, as .ci/run reads it); the binary is
 * PORTICO_BENCH_LTS_NODE if set, else the one .ci/run keeps in its cache (the npm registry's
 * node-<platform>-<arch> package), installed there the same way when it is missing.
 */
import { execFile } from 'node:child_process';
import { accessSync, constants, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** The Docker image's Node, found and checked. */
export interface LtsNode {
  /** The major named in the Dockerfile. */
  readonly major: number;
  /** Absolute path of the node binary. */
  readonly path: string;
  /** Its `--version`, e.g. "v26.12.1". */
  readonly version: string;
  /** Where it came from, for the row's notes. */
  readonly source: string;
}

/** The major of the Dockerfile's `ARG NODE_MAJOR=<major>` line; throws when there is none. */
export function dockerNodeMajor(repoRoot: string): number {
  const file = join(repoRoot, 'Dockerfile');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`cannot read ${file}: ${(err as Error).message}`);
  }
  // The same line .ci/run reads: sed -n 's/^ARG NODE_MAJOR=\([0-9][0-9]*\)$/\1/p' Dockerfile
  const m = /^ARG NODE_MAJOR=(\d+)$/m.exec(text);
  if (m === null) throw new Error(`no 'ARG NODE_MAJOR=<major>' line in ${file}`);
  return Number(m[1]);
}

/** .ci/run's cache folder for Node `major`: ${PORTICO_NODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/portico-ci}/node-<major>. */
function ciCacheDir(major: number): string {
  const env = process.env;
  const base = env['PORTICO_NODE_CACHE'] || join(env['XDG_CACHE_HOME'] || join(env['HOME'] || homedir(), '.cache'), 'portico-ci');
  return join(base, `node-${major}`);
}

/** npm's error code and first message line ("code ECONNREFUSED: FetchError: request to … failed"), for a one-line note. */
function npmError(stderr: string): string {
  const lines = stderr.split('\n').map((l) => l.replace(/^npm (?:error|ERR!) ?/, '')).filter((l) => l.trim() !== '');
  const code = lines.find((l) => l.startsWith('code '));
  const message = lines.find((l) => !/^(code|syscall|errno) /.test(l) && !/^\s/.test(l));
  return [code, message].filter((l) => l !== undefined).join(': ');
}

/** Install node-<platform>-<arch>@<major> into `dir` as .ci/run does. */
async function installFromRegistry(dir: string, pkg: string, major: number, log: (msg: string) => void): Promise<void> {
  mkdirSync(dir, { recursive: true });
  log(`installing ${pkg}@${major} from the npm registry into ${dir} (once; .ci/run uses the same folder)`);
  try {
    await run('npm', ['install', '--no-save', '--no-audit', '--no-fund', '--no-package-lock', '--prefix', dir, `${pkg}@${major}`], {
      timeout: 240_000,
      maxBuffer: 16 * 1024 * 1024,
    });
  } catch (err) {
    const e = err as Error & { stderr?: string; killed?: boolean };
    const why = e.killed ? 'timed out after 240 s' : npmError(e.stderr ?? '') || e.message;
    throw new Error(`npm install ${pkg}@${major} into ${dir} failed: ${why}`);
  }
}

/**
 * Find (or install) the Docker image's Node and check that its `--version` is the Dockerfile's major.
 * Throws an Error whose message says what is missing or wrong, for the row's failure note.
 */
export async function findLtsNode(major: number, log: (msg: string) => void): Promise<LtsNode> {
  let path: string;
  let source: string;
  const given = process.env['PORTICO_BENCH_LTS_NODE'];
  if (given !== undefined && given !== '') {
    path = given;
    source = 'PORTICO_BENCH_LTS_NODE';
    if (!existsSync(path)) throw new Error(`PORTICO_BENCH_LTS_NODE=${given}: no such file`);
  } else {
    const pkg = `node-${process.platform}-${process.arch}`;
    const dir = ciCacheDir(major);
    path = join(dir, 'node_modules', pkg, 'bin', 'node');
    source = `npm package ${pkg}@${major}, in .ci/run's cache ${dir}`;
    if (!existsSync(path)) {
      await installFromRegistry(dir, pkg, major, log);
      if (!existsSync(path)) throw new Error(`${pkg}@${major} installed no node binary at ${path}`);
      source += ' (installed by this run)';
    }
  }
  try {
    accessSync(path, constants.X_OK);
  } catch {
    throw new Error(`${path} is not executable`);
  }
  let version: string;
  try {
    version = (await run(path, ['--version'], { timeout: 10_000 })).stdout.trim();
  } catch (err) {
    throw new Error(`${path} --version failed: ${(err as Error).message}`);
  }
  if (!version.startsWith(`v${major}.`)) {
    throw new Error(`${path} is Node ${version || '(no version printed)'}, not the Dockerfile's Node ${major} (ARG NODE_MAJOR=${major})`);
  }
  return { major, path, version, source };
}
