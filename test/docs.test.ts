import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { configReferenceMarkdown } from '../src/cli/config-reference.js';
import { ERRORS } from '../src/errors.js';
import { validateConfig } from '../src/config/load.js';

const root = new URL('../../', import.meta.url);

test('docs/config-reference.md is the reference generated from the current schema', async () => {
  const committed = await readFile(new URL('docs/config-reference.md', root), 'utf8');
  assert.equal(committed, configReferenceMarkdown(), 'run: node dist/src/main.js schema --markdown > docs/config-reference.md');
});

test('the README status table lists every request error code with its status', async () => {
  const readme = await readFile(new URL('README.md', root), 'utf8');
  for (const [code, spec] of Object.entries(ERRORS)) {
    if (spec.status === 500 || code === 'PORTICO_SHUTTING_DOWN') continue;
    const row = readme.split('\n').find((line) => line.startsWith('| ') && line.includes(`\`${code}\``));
    assert.ok(row !== undefined, `README has no row for ${code}`);
    assert.ok(row.startsWith(`| ${spec.status} |`), `README row for ${code} should start with status ${spec.status}: ${row}`);
  }
});

test("the README's minimal config is a valid config", async () => {
  const readme = await readFile(new URL('README.md', root), 'utf8');
  const block = /A minimal config[\s\S]*?```json\n([\s\S]*?)```/.exec(readme);
  assert.ok(block !== null, 'README has a minimal config block');
  const r = validateConfig(JSON.parse(block[1]!));
  assert.deepEqual(r.ok ? [] : r.issues, []);
});
