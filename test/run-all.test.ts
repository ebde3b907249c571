/**
 * `npm test`'s runner (test/run-all.ts): what CI reads from it is its exit code and its last lines, the
 * totals; a failed test, a file that dies before its summary and a hung file must all make it fail.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const runner = join(dirname(fileURLToPath(import.meta.url)), 'run-all.js');

async function run(files: Record<string, string>, env: Record<string, string> = {}): Promise<{ code: number | null; out: string; totals: Record<string, number> }> {
  const dir = await mkdtemp(join(tmpdir(), 'portico-run-all-'));
  try {
    for (const [name, body] of Object.entries(files)) await writeFile(join(dir, name), body);
    // A node flag (--no-warnings) also keeps this run's times out of the order of the next real one.
    const child = spawn(process.execPath, [runner, '--no-warnings', ...Object.keys(files).map((f) => join(dir, f))], {
      stdio: ['ignore', 'pipe', 'inherit'],
      // The default concurrency unless a test sets it, whatever the outer npm test was given.
      env: { ...process.env, PORTICO_TEST_CONCURRENCY: undefined, PORTICO_TEST_FILE_TIMEOUT: undefined, ...env },
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const code = await new Promise<number | null>((r) => child.on('close', r));
    // The totals are the lines after the "# files" line.
    const tail = out.slice(out.lastIndexOf('\n# files '));
    const totals = Object.fromEntries([...tail.matchAll(/^# (\w+) (\d+)$/gm)].map((m) => [m[1]!, Number(m[2])]));
    return { code, out, totals };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const header = "import { test } from 'node:test';\nimport assert from 'node:assert/strict';\n";

test('npm test\'s runner adds up every file\'s counts and exits 0 when all pass', async () => {
  const r = await run({
    'a.test.mjs': `${header}test('one', () => {});\ntest('two', () => {});\n`,
    'b.test.mjs': `${header}test('three', () => {});\ntest('skipped', { skip: true }, () => {});\n`,
  });
  assert.equal(r.code, 0, r.out);
  assert.deepEqual([r.totals['tests'], r.totals['pass'], r.totals['fail'], r.totals['skipped']], [4, 3, 0, 1], r.out);
  assert.match(r.out, /^# files 2 \(4 at a time, /m);
});

test('npm test\'s runner fails for a failed test, naming it, and for a file that dies before its summary', async () => {
  const r = await run({
    'good.test.mjs': `${header}test('fine', () => {});\n`,
    'bad.test.mjs': `${header}test('fine too', () => {});\ntest('wrong sum', () => assert.equal(1 + 1, 3));\n`,
    'crash.test.mjs': "throw new Error('broken at import');\n",
  });
  assert.equal(r.code, 1);
  assert.deepEqual([r.totals['tests'], r.totals['pass'], r.totals['fail']], [3, 2, 2], r.out);
  assert.match(r.out, /^# {3}.*bad\.test\.mjs: not ok 2 - wrong sum$/m);
  assert.match(r.out, /^# {3}.*crash\.test\.mjs: ended \(exit 1\) without its summary$/m);
  assert.match(r.out, /^# .*broken at import/m, 'the dead file\'s stderr is shown');
});

test('npm test\'s runner runs files side by side, PORTICO_TEST_CONCURRENCY at a time', async () => {
  // Each file waits until all three have started (a file of its own per test process): they can only
  // all pass when three run at once.
  const body = (me: string): string => `${header}import { writeFileSync, existsSync } from 'node:fs';
test('meets the others', async () => {
  writeFileSync(process.env.MEET_DIR + '/${me}', '');
  for (let i = 0; i < 40 && !['x', 'y', 'z'].every((f) => existsSync(process.env.MEET_DIR + '/' + f)); i++) await new Promise((r) => setTimeout(r, 50));
  assert.ok(['x', 'y', 'z'].every((f) => existsSync(process.env.MEET_DIR + '/' + f)));
});\n`;
  const meet = await mkdtemp(join(tmpdir(), 'portico-run-all-meet-'));
  try {
    const files = { 'x.test.mjs': body('x'), 'y.test.mjs': body('y'), 'z.test.mjs': body('z') };
    const three = await run(files, { MEET_DIR: meet, PORTICO_TEST_CONCURRENCY: '3' });
    assert.equal(three.code, 0, three.out);
    await rm(meet, { recursive: true, force: true });
    await mkdir(meet);
    const two = await run(files, { MEET_DIR: meet, PORTICO_TEST_CONCURRENCY: '2' });
    assert.equal(two.code, 1, 'with two at a time the third never meets the others');
  } finally {
    await rm(meet, { recursive: true, force: true });
  }
});

test('npm test\'s runner kills a file that is still running after PORTICO_TEST_FILE_TIMEOUT, and fails', async () => {
  const t0 = performance.now();
  const r = await run({
    'quick.test.mjs': `${header}test('quick', () => {});\n`,
    'hangs.test.mjs': `${header}test('never ends', () => new Promise(() => setInterval(() => {}, 1000)));\n`,
  }, { PORTICO_TEST_FILE_TIMEOUT: '2' });
  assert.equal(r.code, 1);
  assert.ok(performance.now() - t0 < 15_000, 'killed, not waited for');
  assert.match(r.out, /^# {3}.*hangs\.test\.mjs: still running after 2 s, killed/m);
  assert.equal(r.totals['pass'], 1, r.out);
});
