/**
 * The config file changing under a running Portico as editors, scripts and Kubernetes change it: written in two
 * steps, in a burst with invalid JSON between, removed and re-created, a configMap's `..data` link swapped. The
 * file watcher is wired to reload() as the CLI wires it; the old config serves until a valid one arrives, and the
 * last valid one wins.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, open, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino, { type Logger } from 'pino';
import { Portico } from '../src/server/portico.js';
import { watchConfigFile } from '../src/config/watch.js';
import { makePki, type TestPki } from './helpers/proxy.js';
import { freePort, h1Request } from './helpers/net.js';
import { waitFor } from './helpers/pebble.js';

interface Running {
  portico: Portico;
  port: number;
  /** The whole config text with the one host answering `body`. */
  text(body: string): string;
  /** The body the host answers now. */
  body(): Promise<string>;
}

/** Starts Portico on `file` (written by `place`) and watches it as main.ts does; stopped after the test. */
async function startWatched(t: TestContext, pki: TestPki, file: string, place: (text: string) => Promise<void>, log: Logger = pino({ level: 'silent' })): Promise<Running> {
  const tls = await pki.issue('site', ['site.test']);
  const port = await freePort();
  const text = (body: string): string => JSON.stringify({ listen: { https: { port, addresses: ['127.0.0.1'] }, http: null }, certsDir: pki.dir, hosts: { 'site.test': { tls, routes: [{ respond: { body } }] } } });
  await place(text('v1'));
  const portico = new Portico(file, log);
  await portico.start();
  const abort = new AbortController();
  watchConfigFile(file, () => void portico.reload(), abort.signal);
  t.after(async () => {
    abort.abort();
    await portico.stop();
    await pki.cleanup();
  });
  // chokidar needs a moment before its first event can be seen.
  await new Promise((r) => setTimeout(r, 300));
  return { portico, port, text, body: async () => (await h1Request({ port, sni: 'site.test', path: '/', ca: pki.caPem })).text };
}

test('a config written in two steps, then in a burst with invalid JSON between, serves the old config meanwhile and the last valid one in the end', async (t) => {
  const pki = await makePki();
  const file = join(pki.dir, 'portico.json');
  const p = await startWatched(t, pki, file, (text) => writeFile(file, text));
  assert.equal(await p.body(), 'v1');

  // Truncated, and left empty past the watcher's debounce, then written.
  const fh = await open(file, 'r+');
  await fh.truncate(0);
  await new Promise((r) => setTimeout(r, 400));
  assert.equal(await p.body(), 'v1', 'an empty file changes nothing');
  await fh.write(p.text('v2'), 0);
  await fh.close();
  await waitFor('v2', async () => ((await p.body()) === 'v2' ? true : undefined), 5000);

  // A burst: valid and half-written versions in turn, ending with a valid one.
  for (let i = 0; i < 20; i++) {
    await writeFile(file, i % 2 === 0 ? p.text(`burst${i}`).slice(0, 40) : p.text(`burst${i}`));
    await new Promise((r) => setTimeout(r, (i % 4) * 30));
  }
  await writeFile(file, `${p.text('v3').slice(0, -1)},`);
  // However long the validator takes on a loaded machine (it runs in a child process).
  await waitFor('the invalid file recorded as the last reload problem', () => (p.portico.lastReloadError !== undefined ? true : undefined), 5000);
  const during = await p.body();
  assert.match(during, /^(v2|burst\d+)$/, 'a valid earlier version serves while the file is invalid');
  await writeFile(file, p.text('final'));
  await waitFor('the final config', async () => ((await p.body()) === 'final' ? true : undefined), 5000);
  assert.equal(p.portico.lastReloadError, undefined);
});

test('a config file removed and re-created serves the old config while it is gone and the new one after', async (t) => {
  const pki = await makePki();
  const file = join(pki.dir, 'portico.json');
  const p = await startWatched(t, pki, file, (text) => writeFile(file, text));
  await rm(file);
  await waitFor('the failed reload', () => (p.portico.lastReloadError !== undefined ? true : undefined), 5000);
  assert.match(p.portico.lastReloadError![0]!.message, /cannot read .*portico\.json \(ENOENT\): there is no such file/);
  assert.equal(await p.body(), 'v1');
  await writeFile(file, p.text('recreated'));
  await waitFor('the re-created config', async () => ((await p.body()) === 'recreated' ? true : undefined), 5000);
  // Still watched after that: a plain write later is seen too.
  await writeFile(file, p.text('later'));
  await waitFor('a later write', async () => ((await p.body()) === 'later' ? true : undefined), 5000);
});

test("a config mounted from a Kubernetes configMap is reloaded at each swap of its '..data' link", async (t) => {
  const pki = await makePki();
  const dir = join(pki.dir, 'config');
  const file = join(dir, 'portico.json');
  let version = 1;
  const p = await startWatched(t, pki, file, async (text) => {
    await mkdir(join(dir, '..v1'), { recursive: true });
    await writeFile(join(dir, '..v1', 'portico.json'), text);
    await symlink('..v1', join(dir, '..data'));
    await symlink('..data/portico.json', file);
  });
  for (const body of ['swap2', 'swap3', 'swap4']) {
    version++;
    await mkdir(join(dir, `..v${version}`));
    await writeFile(join(dir, `..v${version}`, 'portico.json'), p.text(body));
    await symlink(`..v${version}`, join(dir, '..data_tmp'));
    await rename(join(dir, '..data_tmp'), join(dir, '..data'));
    await rm(join(dir, `..v${version - 1}`), { recursive: true });
    await waitFor(body, async () => ((await p.body()) === body ? true : undefined), 5000);
  }
});

test('a failed reload says why once: a retry that finds the same problems gets a short line, and the reload that fixes them says so', async (t) => {
  const lines: { msg: string; issues?: unknown[]; problems?: number; fixedProblems?: number }[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of String(chunk).split('\n')) if (l !== '') lines.push(JSON.parse(l) as (typeof lines)[number]);
      done();
    },
  });
  const pki = await makePki();
  const file = join(pki.dir, 'portico.json');
  const p = await startWatched(t, pki, file, (text) => writeFile(file, text), pino({ level: 'info' }, sink));
  const reloads = (): typeof lines => lines.filter((l) => l.msg.startsWith('config reload'));
  const until = (n: number): Promise<boolean> => waitFor(`${n} reload lines`, () => (reloads().length >= n ? true : undefined), 5000);

  // Half a file, seen by the watcher; then SIGHUP twice (main.ts calls reload()) with the file as it is.
  await writeFile(file, p.text('v2').slice(0, 40));
  await until(1);
  await p.portico.reload();
  await p.portico.reload();
  // Other problems are new: their list is given.
  await writeFile(file, p.text('v3').replace('"respond"', '"respnd"'));
  await until(4);
  await writeFile(file, p.text('v4'));
  await until(5);
  await p.portico.reload();
  assert.equal(await p.body(), 'v4');
  const got = reloads();
  assert.deepEqual(
    got.map((l) => [l.msg, l.issues?.length, l.problems, l.fixedProblems]),
    [
      ['config reload failed, keeping the previous config', 1, undefined, undefined],
      ['config reload failed again with the same problems, keeping the previous config', undefined, 1, undefined],
      ['config reload failed again with the same problems, keeping the previous config', undefined, 1, undefined],
      ['config reload failed, keeping the previous config', got[3]?.issues?.length, undefined, undefined],
      ['config reloaded, the problems of the last failed reload are fixed', undefined, undefined, got[3]?.issues?.length],
      ['config reloaded', undefined, undefined, undefined],
    ],
  );
  assert.match(JSON.stringify(got[3]?.issues), /respnd/);
});
