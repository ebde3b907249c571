/**
 * The server validates its config in a short-lived child process (src/config/load-in-child.ts), so that
 * zod and the schema never stay in a serving process's memory (bench/optimisations.md, sections 12 and 35).
 * zod marks the global object of every realm that loads it (globalThis.__zod_globalConfig); these tests
 * look for that mark. They run in order in one process: the last one loads zod here on purpose.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { makePki, startProxyFor } from './helpers/proxy.js';
import { h1Request, startUpstream } from './helpers/net.js';
import { loadConfigFileInChild } from '../src/config/load-in-child.js';

/** This process's children that run the config validator (load-worker.js), by their command lines, once any exiting one is gone. */
async function validatorChildren(): Promise<string[]> {
  const find = async (): Promise<string[]> => {
    const kids = (await readFile(`/proc/${process.pid}/task/${process.pid}/children`, 'utf8').catch(() => '')).trim().split(/\s+/).filter((p) => p !== '');
    const lines = await Promise.all(kids.map((pid) => readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')));
    return lines.map((l) => l.replace(/\0/g, ' ').trim()).filter((l) => l.includes('load-worker.js'));
  };
  for (let i = 0; i < 20; i++) {
    const found = await find();
    if (found.length === 0) return found;
    await new Promise((r) => setTimeout(r, 100));
  }
  return find();
}

const zodLoadedHere = (): boolean => (globalThis as { __zod_globalConfig?: unknown }).__zod_globalConfig !== undefined;

test('start, a reload and a rejected reload validate in a child process: zod is never loaded in the serving one', async (t) => {
  const pki = await makePki();
  const up = await startUpstream();
  const cert = await pki.issue('site', ['site.test']);
  const proxy = await startProxyFor(t, pki, { hosts: { 'site.test': { tls: cert, routes: [{ path: '/', upstream: up.url }] } } }, [() => up.close()]);
  const get = () => h1Request({ port: proxy.httpsPort, sni: 'site.test', path: '/', ca: pki.caPem });
  assert.equal((await get()).status, 200);
  await proxy.reconfigure({ hosts: { 'site.test': { tls: cert, routes: [{ path: '/', upstream: up.url, stripPrefix: true }] } } });
  // A bad reload: every issue comes back from the child with its path, and the old config keeps serving.
  await writeFile(proxy.configFile, JSON.stringify({ listen: { https: { port: proxy.httpsPort } }, hosts: { 'site.test': { tls: cert, routes: [{ path: 'no-slash', upstream: 'ftp://x' }] } } }));
  const r = await proxy.portico.reload();
  assert.equal(r.ok, false);
  const paths = r.ok ? [] : r.issues.map((i) => i.path);
  assert.ok(paths.includes('hosts["site.test"].routes[0].path'), paths.join(', '));
  assert.ok(paths.includes('hosts["site.test"].routes[0].upstream'), paths.join(', '));
  assert.equal((await get()).status, 200);
  assert.equal(zodLoadedHere(), false);
  // Each validation's process has exited: none is left behind holding memory.
  assert.deepEqual(await validatorChildren(), []);
});

test('the child gives the same result as loading in-process, for a good file, a bad one and a missing one', async (t) => {
  const pki = await makePki();
  t.after(() => pki.cleanup());
  const good = join(pki.dir, 'good.json');
  const bad = join(pki.dir, 'bad.json');
  const cert = await pki.issue('site', ['site.test']);
  await writeFile(good, JSON.stringify({ hosts: { 'site.test': { tls: cert, routes: [{ path: '/', upstream: 'http://127.0.0.1:1' }] } } }));
  await writeFile(bad, '{"hosts": {"site.test": {"tls": 5, "routes": []}}, "workers": "many"}');
  const inChild = await Promise.all([good, bad, join(pki.dir, 'missing.json')].map((f) => loadConfigFileInChild(f)));
  assert.equal(inChild[0]?.ok, true);
  assert.equal(inChild[1]?.ok, false);
  assert.equal(inChild[2]?.ok, false);
  assert.equal(zodLoadedHere(), false);
  const { loadConfigFile } = await import('../src/config/load.js');
  const inProcess = await Promise.all([good, bad, join(pki.dir, 'missing.json')].map((f) => loadConfigFile(f)));
  assert.deepEqual(inChild, inProcess);
  // The mark this file relies on is real: loading zod here sets it.
  assert.equal(zodLoadedHere(), true);
});
