/**
 * Which external programs the benchmark needs, whether they are installed,
 * and their versions for the results file.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { createRequire } from 'node:module';

/** One external program and the Debian package that provides it. */
interface Tool {
  readonly bin: string;
  readonly pkg: string;
  readonly versionArgs: readonly string[];
  /** Which output line carries the version. */
  readonly pick: RegExp;
}

const TOOLS: readonly Tool[] = [
  { bin: 'nginx', pkg: 'nginx', versionArgs: ['-v'], pick: /nginx version: (.*)/ },
  { bin: 'haproxy', pkg: 'haproxy', versionArgs: ['-v'], pick: /HAProxy version (\S+)/ },
  { bin: 'caddy', pkg: 'caddy', versionArgs: ['version'], pick: /^(v?\d\S*)/m },
  { bin: 'wrk', pkg: 'wrk', versionArgs: ['-v'], pick: /^(wrk \S+)/m },
  { bin: 'h2load', pkg: 'nghttp2-client', versionArgs: ['--version'], pick: /(h2load \S+)/ },
  { bin: 'openssl', pkg: 'openssl', versionArgs: ['version'], pick: /^(OpenSSL \S+)/m },
  { bin: 'taskset', pkg: 'util-linux', versionArgs: ['--version'], pick: /(\d+\.\d+\S*)/ },
];

/** The one-line install command printed when something is missing. */
export const INSTALL_HINT = 'apt-get install -y nginx haproxy caddy wrk nghttp2-client';

function run(bin: string, args: readonly string[]): string | null {
  // Several of these print their version on stderr (nginx -v) or exit non-zero (wrk -v).
  const r = spawnSync(bin, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.error) return null;
  return `${r.stdout}${r.stderr}`;
}

/**
 * Versions of every required tool, keyed by binary; throws an error listing
 * every missing binary and the apt-get line that installs them.
 */
export function checkTools(): Record<string, string> {
  const versions: Record<string, string> = {};
  const missing: string[] = [];
  for (const t of TOOLS) {
    const out = run(t.bin, t.versionArgs);
    if (out === null) {
      missing.push(`${t.bin} (package ${t.pkg})`);
      continue;
    }
    versions[t.bin] = t.pick.exec(out)?.[1] ?? out.split('\n')[0]!.trim();
  }
  if (missing.length > 0) {
    throw new Error(`missing: ${missing.join(', ')}\ninstall with: sudo ${INSTALL_HINT}`);
  }
  versions['node'] = process.version;
  versions['http-proxy'] = readPackageVersion('http-proxy');
  return versions;
}

function readPackageVersion(name: string): string {
  try {
    const require = createRequire(import.meta.url);
    const pkgPath = require.resolve(`${name}/package.json`);
    return (JSON.parse(readFileSync(pkgPath, 'utf8')) as { version: string }).version;
  } catch {
    return 'not installed (run npm ci)';
  }
}

/** Machine facts for the results header. */
export interface MachineInfo {
  readonly nproc: number;
  readonly cpuModel: string;
  readonly kernel: string;
  readonly memTotal: string;
}

/** nproc, CPU model, kernel and memory of this machine. */
export function readMachine(): MachineInfo {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  const model = /model name\s*:\s*(.*)/.exec(cpuinfo)?.[1] ?? cpus()[0]?.model ?? 'unknown';
  const mem = /MemTotal:\s+(\d+) kB/.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1];
  return {
    nproc: Number(execFileSync('nproc', { encoding: 'utf8' }).trim()),
    cpuModel: model.trim(),
    kernel: readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(),
    memTotal: mem ? `${Math.round(Number(mem) / 1024 / 1024)} GiB` : 'unknown',
  };
}
