/** nginx as a real backend for tests: its own temp prefix and config, one process (no daemon, no master), killed by PID. */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { freePort, waitForPort } from './net.js';

const NGINX_CANDIDATES = ['/usr/sbin/nginx', '/usr/local/sbin/nginx', '/usr/bin/nginx'];

/** The nginx binary, or undefined. */
export function findNginx(): string | undefined {
  for (const file of NGINX_CANDIDATES) {
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // Try the next place.
    }
  }
  return undefined;
}

/**
 * The nginx binary a test may use. Missing: fails under CI (CI=true), where it
 * is part of the setup; elsewhere skips the test with the reason.
 */
export function requireNginx(t: TestContext): string | undefined {
  const bin = findNginx();
  if (bin !== undefined) return bin;
  if (process.env.CI === 'true') throw new Error('nginx is required under CI (Debian package nginx-light) but was not found');
  t.skip('nginx not found (install nginx-light)');
  return undefined;
}

/** A running nginx. */
export interface TestNginx {
  port: number;
  url: string;
  /** The prefix directory: `www/` under it is the document root. */
  dir: string;
  proc: ChildProcess;
  stop(): Promise<void>;
}

/**
 * Starts nginx on a free port of 127.0.0.1 with `serverBody` inside its
 * `server {}` block and `httpExtra` inside `http {}`. `{{www}}` in either is
 * replaced with the document root, `{{dir}}` with the prefix directory.
 */
export async function startNginx(bin: string, serverBody: string, httpExtra = ''): Promise<TestNginx> {
  const dir = await mkdtemp(join(tmpdir(), 'portico-nginx-'));
  const www = join(dir, 'www');
  await mkdir(www);
  await mkdir(join(dir, 'tmp'));
  const port = await freePort();
  const fill = (s: string): string => s.replaceAll('{{www}}', www).replaceAll('{{dir}}', dir);
  const conf = `daemon off;
master_process off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${dir}/tmp/body;
  proxy_temp_path ${dir}/tmp/proxy;
  fastcgi_temp_path ${dir}/tmp/fastcgi;
  uwsgi_temp_path ${dir}/tmp/uwsgi;
  scgi_temp_path ${dir}/tmp/scgi;
  default_type application/octet-stream;
  ${fill(httpExtra)}
  server {
    listen 127.0.0.1:${port};
    server_name _;
    keepalive_timeout 60s;
    keepalive_requests 1000;
    ${fill(serverBody)}
  }
}
`;
  await writeFile(join(dir, 'nginx.conf'), conf);
  const proc = spawn(bin, ['-p', dir, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr!.on('data', (c: Buffer) => {
    stderr += c.toString();
  });
  await waitForPort(port, proc, 'nginx', 5000, () => stderr);
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    dir,
    proc,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        const exited = new Promise((r) => proc.once('exit', r));
        proc.kill('SIGKILL');
        await exited;
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}
