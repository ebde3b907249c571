/**
 * `log.file` and `log.accessFile` (README, "Logs"): lines appended to files instead of stdout, the files
 * opened again on SIGUSR1 after logrotate renamed them (nginx's and Traefik's USR1), with workers too,
 * and switched (or refused) on reload. Run through the real CLI, with real files in the test's directory.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as delay } from 'node:timers/promises';
import { validateConfig } from '../src/config/load.js';
import { BatchedDestination } from '../src/log/batched-destination.js';
import { closeSync, constants, openSync, readSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { makePki, type TestPki } from './helpers/proxy.js';
import { spawnProxy, type ChildProxy } from './helpers/child-proxy.js';
import type { ConfigInput } from '../src/config/schema.js';
import { h1Request, startUpstream } from './helpers/net.js';

const MAIN = fileURLToPath(new URL('../src/main.js', import.meta.url));

type Line = Record<string, unknown>;

/** The JSON lines of a file (none if it does not exist); every line must be whole JSON. */
function readLines(file: string): Line[] {
  if (!existsSync(file)) return [];
  const text = readFileSync(file, 'utf8');
  assert.ok(text === '' || text.endsWith('\n'), `${file} ends with a whole line`);
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => {
      try {
        return JSON.parse(l) as Line;
      } catch {
        assert.fail(`${file} has a line that is not whole JSON: ${l.slice(0, 200)}`);
      }
    });
}

async function waitFor(what: string, check: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await delay(25);
  }
}

/** A Portico child serving site.test to a fresh upstream, with `log` settings; torn down after the test. */
async function spawnWithLog(t: import('node:test').TestContext, log: ConfigInput['log'], extra: Omit<ConfigInput, 'listen' | 'hosts'> = {}): Promise<{ proxy: ChildProxy; pki: TestPki; hosts: ConfigInput['hosts'] }> {
  const pki = await makePki();
  const up = await startUpstream();
  const cert = await pki.issue('site', ['site.test']);
  const hosts: ConfigInput['hosts'] = { 'site.test': { tls: cert, routes: [{ path: '/', upstream: up.url }] } };
  t.after(async () => {
    await up.close();
    await pki.cleanup();
  });
  const proxy = await spawnProxy(pki, { log, hosts, ...extra }, { startTimeoutMs: 20_000 });
  t.after(() => proxy.kill());
  return { proxy, pki, hosts };
}

/** `n` requests, `concurrency` at a time, each on a new TLS connection; all must get 200. */
async function requests(proxy: ChildProxy, pki: TestPki, n: number, from = 0, concurrency = 8): Promise<void> {
  for (let i = 0; i < n; i += concurrency) {
    const batch: Promise<void>[] = [];
    for (let j = i; j < Math.min(n, i + concurrency); j++) {
      batch.push(h1Request({ port: proxy.httpsPort, sni: 'site.test', path: `/r${from + j}`, ca: pki.caPem }).then((r) => assert.equal(r.status, 200)));
    }
    await Promise.all(batch);
  }
}

test('access lines are appended to log.accessFile and every other line to log.file (paths relative to the config file), none to stdout', async (t) => {
  const { proxy, pki } = await spawnWithLog(t, { file: 'portico.log', accessFile: 'access.log' });
  const main = join(pki.dir, 'portico.log');
  const access = join(pki.dir, 'access.log');
  const n = 20;
  await requests(proxy, pki, n);
  await proxy.kill();
  assert.equal(await proxy.exited, 0);
  const accessLines = readLines(access);
  assert.equal(accessLines.length, n);
  assert.ok(accessLines.every((l) => l['msg'] === 'access' && l['status'] === 200));
  const mainLines = readLines(main);
  assert.ok(mainLines.some((l) => l['msg'] === 'listening'), JSON.stringify(mainLines));
  assert.ok(mainLines.some((l) => l['msg'] === 'stopped'));
  assert.equal(mainLines.filter((l) => l['msg'] === 'access').length, 0, 'no access line in log.file');
  assert.deepEqual(proxy.logs, [], 'nothing on stdout');
  // Created 0640 (less the umask), as nginx's logs are readable by the adm group, not by everyone.
  const umask = process.umask();
  for (const file of [main, access]) assert.equal(statSync(file).mode & 0o777, 0o640 & ~umask, `${file} mode`);
});

test('with log.file alone, access lines go to log.file beside the others', async (t) => {
  const { proxy, pki } = await spawnWithLog(t, { file: join('.', 'all.log') });
  await requests(proxy, pki, 5);
  await proxy.kill();
  const lines = readLines(join(pki.dir, 'all.log'));
  assert.equal(lines.filter((l) => l['msg'] === 'access').length, 5);
  assert.ok(lines.some((l) => l['msg'] === 'listening'));
  assert.deepEqual(proxy.logs, []);
});

test('with log.accessFile alone, access lines go to the file and the other lines stay on stdout', async (t) => {
  const { proxy, pki } = await spawnWithLog(t, { accessFile: 'access.log' });
  await requests(proxy, pki, 5);
  await proxy.kill();
  assert.equal(readLines(join(pki.dir, 'access.log')).filter((l) => l['msg'] === 'access').length, 5);
  assert.ok(proxy.logs.some((l) => l['msg'] === 'listening'));
  assert.equal(proxy.logs.filter((l) => l['msg'] === 'access').length, 0);
});

/**
 * Requests before, during and after logrotate's move of both files and a SIGUSR1 to `pid`: every access
 * line is in the old file or the new one, whole, and the new files are the ones written at the end.
 */
async function rotateUnderLoad(proxy: ChildProxy, pki: TestPki, pid: number, reopenedBy: number): Promise<{ oldAccess: Line[]; newAccess: Line[]; newMain: Line[] }> {
  const main = join(pki.dir, 'portico.log');
  const access = join(pki.dir, 'access.log');
  const n = 240;
  // Lines wait up to 250 ms before they are written: those still waiting at the reopen go to the new file.
  await waitFor('"listening" written', () => readLines(main).some((l) => l['msg'] === 'listening'));
  const load = requests(proxy, pki, n);
  await waitFor('some access lines', () => readLines(access).length >= 40, 20_000);
  await rename(main, `${main}.1`);
  await rename(access, `${access}.1`);
  process.kill(pid, 'SIGUSR1');
  await waitFor('the reopened files', () => readLines(main).filter((l) => l['msg'] === 'log files reopened').length >= reopenedBy, 10_000);
  await load;
  await proxy.kill(10_000);
  assert.equal(await proxy.exited, 0);
  const oldAccess = readLines(`${access}.1`);
  const newAccess = readLines(access);
  assert.equal(oldAccess.length + newAccess.length, n, `old ${oldAccess.length} + new ${newAccess.length} access lines`);
  assert.ok(oldAccess.length > 0 && newAccess.length > 0, `old ${oldAccess.length}, new ${newAccess.length}`);
  const paths = new Set([...oldAccess, ...newAccess].map((l) => l['path']));
  assert.equal(paths.size, n, 'each request has its own line');
  const newMain = readLines(main);
  assert.ok(newMain.some((l) => l['msg'] === 'stopped' || l['msg'] === 'stopping workers'), 'lines after the reopen go to the new log.file');
  assert.ok(readLines(`${main}.1`).some((l) => l['msg'] === 'listening'), 'lines before it stay in the renamed one');
  return { oldAccess, newAccess, newMain };
}

test('after logrotate renames the files, SIGUSR1 opens new files at the paths and no line is lost or split', async (t) => {
  const { proxy, pki } = await spawnWithLog(t, { file: 'portico.log', accessFile: 'access.log' });
  const { newMain } = await rotateUnderLoad(proxy, pki, proxy.pid, 1);
  const reopened = newMain.find((l) => l['msg'] === 'log files reopened');
  assert.equal(reopened?.['accessFile'], join(pki.dir, 'access.log'));
});

test('with two workers, SIGUSR1 to the primary makes every process open its files again, losing no line', async (t) => {
  const { proxy, pki } = await spawnWithLog(t, { file: 'portico.log', accessFile: 'access.log' }, { workers: 2 });
  const main = join(pki.dir, 'portico.log');
  const listeningPids = (): Set<unknown> => new Set(readLines(main).filter((l) => l['msg'] === 'listening').map((l) => l['pid']));
  await waitFor('both workers listening', () => listeningPids().size === 2, 20_000);
  const workers = listeningPids();
  const { oldAccess, newAccess, newMain } = await rotateUnderLoad(proxy, pki, proxy.pid, 3);
  const reopenedBy = new Set(newMain.filter((l) => l['msg'] === 'log files reopened').map((l) => l['pid']));
  assert.deepEqual(reopenedBy, new Set([proxy.pid, ...workers]), 'the primary and both workers reopened');
  assert.equal(new Set([...oldAccess, ...newAccess].map((l) => l['pid'])).size, 2, 'both workers served');
  for (const l of newAccess) assert.ok(workers.has(l['pid']));
});

/** The files a process has open, from /proc/PID/fd. */
function openFiles(pid: number): string[] {
  return readdirSync(`/proc/${pid}/fd`).map((fd) => {
    try {
      return readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      return ''; // closed meanwhile
    }
  });
}

test('with two workers, log.accessFile is open in each worker and not in the primary, which writes no access line', async (t) => {
  const { proxy, pki } = await spawnWithLog(t, { file: 'portico.log', accessFile: 'access.log' }, { workers: 2 });
  const main = join(pki.dir, 'portico.log');
  const access = join(pki.dir, 'access.log');
  const listeningPids = (): Set<unknown> => new Set(readLines(main).filter((l) => l['msg'] === 'listening').map((l) => l['pid']));
  await waitFor('both workers listening', () => listeningPids().size === 2, 20_000);
  await requests(proxy, pki, 4);
  assert.ok(openFiles(proxy.pid).includes(main), 'the primary writes its own lines to log.file');
  assert.equal(openFiles(proxy.pid).filter((f) => f === access).length, 0, 'the primary has no descriptor for log.accessFile');
  for (const pid of listeningPids()) assert.equal(openFiles(pid as number).filter((f) => f === access).length, 1, `worker ${String(pid)} has log.accessFile open once`);
  // SIGUSR1 makes the primary reopen its files: still not the access file.
  proxy.proc.kill('SIGUSR1');
  await waitFor('the primary reopened', () => readLines(main).some((l) => l['msg'] === 'log files reopened' && l['pid'] === proxy.pid));
  assert.equal(openFiles(proxy.pid).filter((f) => f === access).length, 0, 'nor after SIGUSR1');
});

test('with two workers, a log.accessFile that cannot be opened still ends the start before any worker, naming it with the OS reason', async (t) => {
  const pki = await makePki();
  t.after(() => pki.cleanup());
  const cert = await pki.issue('site', ['site.test']);
  const file = join(pki.dir, 'bad-access.json');
  const missing = join(pki.dir, 'gone', 'access.log');
  await writeFile(file, JSON.stringify({ listen: { https: { port: 1, addresses: ['127.0.0.1'] }, http: null }, certsDir: pki.dir, workers: 2, log: { accessFile: 'gone/access.log' }, hosts: { 'site.test': { tls: cert, routes: [{ path: '/', upstream: 'http://127.0.0.1:1' }] } } }));
  const proc = spawn(process.execPath, [MAIN, '--config', file, '--no-watch'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  let stdout = '';
  proc.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  proc.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  const [code] = (await once(proc, 'exit')) as [number];
  assert.equal(code, 1);
  assert.match(stderr, /log\.accessFile: cannot open "[^"]+" for appending: ENOENT/);
  assert.ok(stderr.includes(missing), stderr);
  assert.doesNotMatch(stdout, /primary started workers/);
});

test('with two workers, a reload that changes log.file moves the workers\' lines and the primary\'s to the new file', async (t) => {
  const { proxy, pki, hosts } = await spawnWithLog(t, { file: 'portico.log' }, { workers: 2 });
  const main = join(pki.dir, 'portico.log');
  await waitFor('both workers listening', () => new Set(readLines(main).filter((l) => l['msg'] === 'listening').map((l) => l['pid'])).size === 2, 20_000);
  await proxy.writeConfig({ hosts, workers: 2, log: { file: 'second.log' } });
  proxy.proc.kill('SIGHUP');
  const second = join(pki.dir, 'second.log');
  await waitFor('both workers reloaded', () => new Set(readLines(second).filter((l) => l['msg'] === 'config reloaded').map((l) => l['pid'])).size === 2, 10_000);
  await requests(proxy, pki, 6);
  await proxy.kill(10_000);
  assert.equal(await proxy.exited, 0);
  const lines = readLines(second);
  assert.equal(lines.filter((l) => l['msg'] === 'access').length, 6);
  assert.ok(lines.some((l) => l['msg'] === 'stopping workers' && l['pid'] === proxy.pid), 'the primary\'s own lines follow');
  assert.ok(!readLines(main).some((l) => l['msg'] === 'stopping workers' || l['msg'] === 'access'), 'nothing more in the old file');
});

test('a reload to a log file that cannot be opened is refused naming log.file, and logging goes on in the old file; a good path is then switched to', async (t) => {
  const { proxy, pki, hosts } = await spawnWithLog(t, { file: 'portico.log', accessFile: 'access.log' });
  const main = join(pki.dir, 'portico.log');
  const access = join(pki.dir, 'access.log');
  const missing = join(pki.dir, 'no-such-dir', 'portico.log');
  // The start's line first, so that the lines below are the reload's.
  await waitFor('"listening" written', () => readLines(main).some((l) => l['msg'] === 'listening'));
  await proxy.writeConfig({ hosts, log: { file: missing, accessFile: 'access.log' } });
  proxy.proc.kill('SIGHUP');
  await waitFor('the failed reload', () => readLines(main).some((l) => l['msg'] === 'config reload failed, keeping the previous config'));
  const failed = readLines(main).find((l) => l['msg'] === 'config reload failed, keeping the previous config')!;
  const issues = failed['issues'] as { path: string; message: string }[];
  assert.equal(issues.length, 1, JSON.stringify(issues));
  assert.equal(issues[0]!.path, 'log.file');
  assert.ok(issues[0]!.message.includes(missing) && issues[0]!.message.includes('ENOENT'), issues[0]!.message);
  assert.equal(existsSync(missing), false);
  await requests(proxy, pki, 3);
  await waitFor('access lines in the old file', () => readLines(access).length === 3);

  // A path that can be opened is switched to: the reload's own line is the new file's first.
  await mkdir(join(pki.dir, 'logs'));
  await proxy.writeConfig({ hosts, log: { file: 'logs/portico.log', accessFile: 'logs/access.log' } });
  proxy.proc.kill('SIGHUP');
  const newMain = join(pki.dir, 'logs', 'portico.log');
  await waitFor('the reload in the new file', () => readLines(newMain).some((l) => l['msg'] === 'config reloaded, the problems of the last failed reload are fixed'));
  await requests(proxy, pki, 4, 100);
  await waitFor('access lines in the new file', () => readLines(join(pki.dir, 'logs', 'access.log')).length === 4);
  // Without accessFile, access lines go with the others again.
  await proxy.writeConfig({ hosts, log: { file: 'logs/portico.log' } });
  proxy.proc.kill('SIGHUP');
  await waitFor('the third reload', () => readLines(newMain).some((l) => l['msg'] === 'config reloaded'));
  await requests(proxy, pki, 2, 200);
  await proxy.kill();
  assert.equal(readLines(newMain).filter((l) => l['msg'] === 'access').length, 2);
  assert.equal(readLines(access).length, 3, 'the old access file got no more lines');
  assert.ok(!readLines(main).some((l) => l['msg'] === 'stopped'), 'the old log.file got no more lines');
  assert.ok(readLines(newMain).some((l) => l['msg'] === 'stopped'));
});

/** Runs the CLI; resolves with its exit code and output. */
function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [MAIN, ...args], { timeout: 20_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr });
    });
  });
}

test('portico check and a start name a log file that cannot be opened, with the OS reason', async (t) => {
  const pki = await makePki();
  t.after(() => pki.cleanup());
  const cert = await pki.issue('site', ['site.test']);
  const file = join(pki.dir, 'bad-log.json');
  const missing = join(pki.dir, 'gone', 'access.log');
  await writeFile(file, JSON.stringify({ listen: { https: { port: 1, addresses: ['127.0.0.1'] }, http: null }, certsDir: pki.dir, log: { accessFile: 'gone/access.log' }, hosts: { 'site.test': { tls: cert, routes: [{ path: '/', upstream: 'http://127.0.0.1:1' }] } } }));
  const checked = await cli(['check', file]);
  assert.equal(checked.code, 1);
  assert.match(checked.stderr, /^ {2}log\.accessFile: cannot open "[^"]+" for appending: ENOENT: no such file or directory/m);
  assert.ok(checked.stderr.includes(missing), checked.stderr);
  // A start exits with the same message before it opens a socket or writes anywhere.
  const proc = spawn(process.execPath, [MAIN, '--config', file, '--no-watch'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  proc.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const [code] = (await once(proc, 'exit')) as [number];
  assert.equal(code, 1);
  assert.match(stderr, /log\.accessFile: cannot open "[^"]+" for appending: ENOENT/);
  assert.ok(stderr.includes(missing), stderr);
});

test('log.file and log.accessFile are validated: a path, not a directory, and not with format "pretty"', () => {
  const base = { hosts: { 'a.test': { tls: { cert: 'a.pem', key: 'a-key.pem' }, routes: [{ path: '/', upstream: 'http://127.0.0.1:1' }] } } };
  const issues = (log: unknown): string[] => {
    const r = validateConfig({ ...base, log });
    return r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`);
  };
  assert.deepEqual(issues({ file: 'a.log', accessFile: '/var/log/portico/access.log' }), []);
  assert.match(issues({ file: '' })[0] ?? '', /^log\.file: expected a file path/);
  assert.match(issues({ accessFile: 'logs/' })[0] ?? '', /^log\.accessFile: expected a file, not a directory/);
  assert.match(issues({ file: 'a.log', format: 'pretty' })[0] ?? '', /^log\.format: "pretty" writes human-readable lines to a terminal/);
  assert.deepEqual(issues({ accessFile: 'a.log', format: 'pretty' }), [], 'access lines go to their file as JSON beside a pretty terminal');
});

test('a destination moved to another descriptor ends the write in progress on the old one and releases it only then', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'portico-logfd-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const [a, b] = [join(dir, 'a.log'), join(dir, 'b.log')];
  const fdA = openSync(a, 'a');
  const fdB = openSync(b, 'a');
  const dest = new BatchedDestination(fdA, { flushMs: 10_000 });
  for (let i = 0; i < 100; i++) dest.write(`{"n":${i}}\n`);
  const firstDone = new Promise<void>((r) => dest.flush(r)); // the write of lines 0-99 is now with the thread pool
  const released: number[] = [];
  dest.setFd(fdB, (fd) => {
    released.push(fd);
    closeSync(fd);
  });
  assert.equal(released.length, 0, 'the old descriptor is kept while a write to it is in progress');
  for (let i = 100; i < 150; i++) dest.write(`{"n":${i}}\n`);
  await firstDone;
  await new Promise<void>((r) => dest.flush(r));
  assert.deepEqual(released, [fdA]);
  assert.deepEqual(readLines(a).map((l) => l['n']), Array.from({ length: 100 }, (_, i) => i));
  assert.deepEqual(readLines(b).map((l) => l['n']), Array.from({ length: 50 }, (_, i) => 100 + i));
  // With no write in progress, the old descriptor is released at once.
  const fdC = openSync(a, 'a');
  dest.setFd(fdC, (fd) => released.push(fd));
  assert.deepEqual(released, [fdA, fdB]);
  closeSync(fdB);
  closeSync(fdC);
});

function noopRelease(): void {}

test('a write cut short by a full pipe ends on that pipe after the destination moved, so no line is split between two outputs', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'portico-logfifo-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const fifo = join(dir, 'out.fifo');
  execFileSync('mkfifo', [fifo]);
  // Read-write and non-blocking: the open does not wait for a reader, and a full pipe answers EAGAIN.
  const pipeFd = openSync(fifo, constants.O_RDWR | constants.O_NONBLOCK);
  const readFd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  const file = join(dir, 'new.log');
  const fileFd = openSync(file, 'a');
  const dest = new BatchedDestination(pipeFd, { flushMs: 10_000 });
  // 200 KB of lines in one write: more than the pipe holds (64 KiB), so it is written in part, then waits.
  const lines = Array.from({ length: 2000 }, (_, i) => `{"n":${i},"pad":"${'x'.repeat(90)}"}\n`);
  for (const l of lines) dest.write(l);
  const done = new Promise<void>((r) => dest.flush(r));
  await delay(50);
  dest.setFd(fileFd, noopRelease);
  for (let i = 2000; i < 2010; i++) dest.write(`{"n":${i}}\n`);
  // Drain the pipe until the destination has written everything.
  let fromPipe = '';
  const buf = Buffer.alloc(65536);
  let finished = false;
  void done.then(() => (finished = true));
  for (let rounds = 0; !finished && rounds < 500; rounds++) {
    try {
      const n = readSync(readFd, buf, 0, buf.length, null);
      fromPipe += buf.subarray(0, n).toString();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err;
    }
    await delay(10);
  }
  await done;
  await new Promise<void>((r) => dest.flush(r));
  // What the last writes left in the pipe.
  for (;;) {
    try {
      const n = readSync(readFd, buf, 0, buf.length, null);
      if (n === 0) break;
      fromPipe += buf.subarray(0, n).toString();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err;
      break;
    }
  }
  closeSync(readFd);
  closeSync(pipeFd);
  assert.equal(fromPipe, lines.join(''), 'the batch begun on the pipe ended there, whole');
  assert.deepEqual(readLines(file).map((l) => l['n']), Array.from({ length: 10 }, (_, i) => 2000 + i));
  closeSync(fileFd);
});
