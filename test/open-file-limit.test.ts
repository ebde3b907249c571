/**
 * A process that runs out of file descriptors has its new connections closed as they are accepted, with
 * nothing logged; so Portico warns at start, and at a reload that changes limits.maxConnections, when
 * that limit is above the open-file limit (nginx's "worker_connections exceed open file resource limit").
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { setTimeout as delay } from 'node:timers/promises';
import { parseOpenFileLimit } from '../src/server/open-file-limit.js';
import { spawnProxy } from './helpers/child-proxy.js';
import { makePki } from './helpers/proxy.js';
import { startUpstream } from './helpers/net.js';

const MSG = 'limits.maxConnections exceeds the open-file limit';

async function waitForLog(logs: Record<string, unknown>[], msg: string, ms = 3000): Promise<Record<string, unknown> | undefined> {
  const end = Date.now() + ms;
  for (;;) {
    const line = logs.find((l) => l['msg'] === msg);
    if (line !== undefined || Date.now() > end) return line;
    await delay(25);
  }
}

test('the open-file limit is read from /proc/PID/limits', () => {
  const text = 'Limit                     Soft Limit           Hard Limit           Units\nMax processes             95514                95514                processes\nMax open files            1024                 524288               files\n';
  assert.equal(parseOpenFileLimit(text), 1024);
  assert.equal(parseOpenFileLimit(text.replace('1024                 524288', 'unlimited            unlimited')), undefined);
  assert.equal(parseOpenFileLimit('Max processes 10 10 processes\n'), undefined);
});

test('a maxConnections above the open-file limit is warned about at start and at a reload that raises it; one within it is not', async (t) => {
  // prlimit must exist where the tests run (util-linux); without it this test fails rather than skipping.
  assert.match(execFileSync('prlimit', ['--version'], { encoding: 'utf8' }), /prlimit/);
  const pki = await makePki();
  const up = await startUpstream();
  t.after(async () => {
    await up.close();
    await pki.cleanup();
  });
  const tls = await pki.issue('fd', ['fd.test']);
  const hosts = { 'fd.test': { tls, routes: [{ path: '/', upstream: up.url }] } };
  const prefix = ['prlimit', '--nofile=512:512', '--'];

  const over = await spawnProxy(pki, { hosts, limits: { maxConnections: 1000 } }, { prefix });
  t.after(() => over.kill());
  const warned = await waitForLog(over.logs, MSG);
  assert.ok(warned !== undefined, `no warning; log: ${JSON.stringify(over.logs.map((l) => l['msg']))}`);
  assert.equal(warned['openFiles'], 512);
  assert.equal(warned['maxConnections'], 1000);
  assert.match(String(warned['hint']), /LimitNOFILE/);

  const within = await spawnProxy(pki, { hosts, limits: { maxConnections: 500 } }, { prefix });
  t.after(() => within.kill());
  assert.ok((await waitForLog(within.logs, 'listening')) !== undefined);
  await delay(300);
  assert.equal(within.logs.find((l) => l['msg'] === MSG), undefined, 'a limit within the open-file limit is not warned about');
  await within.writeConfig({ hosts, limits: { maxConnections: 2000 } });
  within.proc.kill('SIGHUP');
  const later = await waitForLog(within.logs, MSG);
  assert.ok(later !== undefined, 'a reload that raises maxConnections past the open-file limit is warned about');
  assert.equal(later['maxConnections'], 2000);
});
