/**
 * What the upstream transports load, for idle memory (bench/optimisations.md, section 5): the
 * proxy takes undici's Pool from its own file, not the whole package. The tests in this file run
 * in order in one process and look at the CommonJS module cache, so the test that loads undici's
 * index comes last.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/** Whether a file of `pkg` whose path ends with `file` has been loaded in this process. */
function loaded(pkg: string, file = ''): boolean {
  return Object.keys(require.cache).some((p) => p.includes(`/node_modules/${pkg}/`) && p.endsWith(file));
}

test('starting the server code loads undici\'s Pool but not the rest of undici', async () => {
  await import('../src/server/portico.js');
  assert.equal(loaded('undici', '/lib/dispatcher/pool.js'), true);
  assert.equal(loaded('undici', '/undici/index.js'), false, 'undici/index.js (fetch, WebSocket, caches…) was loaded');
});

test('the Pool required from undici/lib/dispatcher/pool.js is the Pool undici exports', () => {
  const deep = require('undici/lib/dispatcher/pool.js') as unknown;
  const { Pool } = require('undici') as typeof import('undici');
  assert.equal(deep, Pool);
});
