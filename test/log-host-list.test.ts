/**
 * The start and reload lines of a config with many hosts: a count and the first names, then on each reload
 * the hosts added and removed, never the whole list (a SaaS config of thousands of hosts wrote a line of
 * hundreds of kilobytes at every reload).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { Portico } from '../src/server/portico.js';
import { listNames } from '../src/log/host-list.js';
import { makePki } from './helpers/proxy.js';
import { freePort, h1Request } from './helpers/net.js';

test('listNames keeps the first 20 names and counts the rest', () => {
  const names = Array.from({ length: 25 }, (_, i) => `h${i}.test`);
  assert.deepEqual(listNames(names.slice(0, 20)), names.slice(0, 20));
  assert.deepEqual(listNames(names), [...names.slice(0, 20), '… and 5 more']);
});

test('the listening line counts the hosts and names the first 20; a reload names the hosts added and removed', async (t) => {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of String(chunk).split('\n')) if (l !== '') lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  const pki = await makePki();
  const tls = await pki.issue('many', ['*.many.test']);
  const port = await freePort();
  const file = join(pki.dir, 'portico.json');
  const config = (from: number, to: number): string => {
    const hosts: Record<string, unknown> = {};
    for (let i = from; i < to; i++) hosts[`h${i}.many.test`] = { tls, routes: [{ respond: { body: `h${i}` } }] };
    return JSON.stringify({ listen: { https: { port, addresses: ['127.0.0.1'] }, http: null }, certsDir: pki.dir, hosts });
  };
  await writeFile(file, config(0, 300));
  const portico = new Portico(file, pino({ level: 'info' }, sink));
  t.after(async () => {
    await portico.stop();
    await pki.cleanup();
  });
  await portico.start();
  const listening = lines.find((l) => l['msg'] === 'listening');
  assert.equal(listening?.['hostCount'], 300);
  assert.deepEqual(listening?.['hosts'], [...Array.from({ length: 20 }, (_, i) => `h${i}.many.test`), '… and 280 more']);

  // Two hosts out, 32 in.
  await writeFile(file, config(2, 332));
  assert.equal((await portico.reload()).ok, true);
  const reloaded = lines.find((l) => l['msg'] === 'config reloaded');
  assert.equal(reloaded?.['hostCount'], 330);
  assert.deepEqual(reloaded?.['removed'], ['h0.many.test', 'h1.many.test']);
  assert.deepEqual(reloaded?.['added'], [...Array.from({ length: 20 }, (_, i) => `h${300 + i}.many.test`), '… and 12 more']);
  assert.equal(reloaded?.['hosts'], undefined, 'the whole list is not written again');
  assert.ok(JSON.stringify(reloaded).length < 2000, 'the line stays short');
  assert.equal((await h1Request({ port, sni: 'h331.many.test', path: '/', ca: pki.caPem })).text, 'h331');

  // The same hosts again: nothing added or removed.
  await writeFile(file, config(2, 332).replace('"h5"', '"h5 changed"'));
  assert.equal((await portico.reload()).ok, true);
  const again = lines.filter((l) => l['msg'] === 'config reloaded')[1];
  assert.deepEqual([again?.['hostCount'], again?.['added'], again?.['removed']], [330, undefined, undefined]);
});
