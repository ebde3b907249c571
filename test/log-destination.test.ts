/**
 * The logger's batched output, through real pipes to a child process: lines arrive whole and in order
 * when the reader is slow (also from a non-blocking pipe, where writes meet EAGAIN), lines left at exit
 * are written, and a reader that falls behind costs dropped lines that are counted and reported, not
 * unbounded memory.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const distLog = fileURLToPath(new URL('../src/log/', import.meta.url));

interface ChildOutput {
  readonly lines: Record<string, unknown>[];
  readonly code: number | null;
  readonly stderr: string;
}

/** Runs `body` (an ES module script) in a child whose stdout is a pipe that is not read for `stallMs`. */
function runChild(body: string, stallMs: number): Promise<ChildOutput> {
  const script = `import { createLogger } from ${JSON.stringify(`${distLog}logger.js`)};\nimport { BatchedDestination } from ${JSON.stringify(`${distLog}batched-destination.js`)};\n${body}`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  const chunks: Buffer[] = [];
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  // A 'readable' listener (not pause()) holds the output back: Node resumes, and so discards, the
  // output of an exited child whose stdout has no reader.
  let reading = false;
  const drain = (): void => {
    if (!reading) return;
    for (let d: Buffer | null; (d = child.stdout.read() as Buffer | null) !== null; ) chunks.push(d);
  };
  child.stdout.on('readable', drain);
  setTimeout(() => {
    reading = true;
    drain();
  }, stallMs);
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.stdout.on('end', () => {
      const finish = (code: number | null): void => {
        const text = Buffer.concat(chunks).toString();
        const lines = text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
        resolve({ lines, code, stderr });
      };
      if (child.exitCode !== null) finish(child.exitCode);
      else child.once('exit', finish);
    });
  });
}

function assertInOrder(lines: Record<string, unknown>[], count: number): void {
  const numbered = lines.filter((l) => typeof l.i === 'number');
  assert.equal(numbered.length, count);
  numbered.forEach((l, i) => assert.equal(l.i, i, `line ${i} out of order`));
}

test('lines reach a slow reader whole and in order, and flush() waits for them', async () => {
  const out = await runChild(
    `const log = createLogger('info', 'json');
     for (let i = 0; i < 20000; i++) { log.info({ i, path: '/a/' + 'x'.repeat(i % 50) }, 'access'); if (i % 500 === 0) await new Promise(setImmediate); }
     log.flush(() => { process.stderr.write('flushed'); });`,
    500,
  );
  assert.equal(out.code, 0, out.stderr);
  assert.match(out.stderr, /flushed/);
  assertInOrder(out.lines, 20000);
  assert.equal(out.lines[0]!.msg, 'access');
  assert.equal(out.lines[0]!.level, 30);
});

test('a non-blocking pipe that fills up (EAGAIN) is retried until every line is written', async () => {
  const out = await runChild(
    `process.stdout._handle.setBlocking(false); // fd 1 becomes O_NONBLOCK: a full pipe answers EAGAIN
     const log = createLogger('info', 'json');
     for (let i = 0; i < 20000; i++) log.info({ i, pad: 'y'.repeat(40) }, 'line');
     log.flush(() => process.stderr.write('flushed'));`,
    700,
  );
  assert.equal(out.code, 0, out.stderr);
  assert.match(out.stderr, /flushed/);
  assertInOrder(out.lines, 20000);
});

test('lines still held at exit are written by the exit hook', async () => {
  const out = await runChild(
    `const log = createLogger('info', 'json');
     for (let i = 0; i < 50; i++) log.info({ i }, 'before exit');
     process.exit(3);`,
    0,
  );
  assert.equal(out.code, 3);
  assertInOrder(out.lines, 50);
});

test('a reader that falls behind costs counted dropped lines, reported once output resumes', async () => {
  const out = await runChild(
    `const dest = new BatchedDestination(1, { batchChars: 4096, maxPendingChars: 64 * 1024 });
     let taken = 0;
     for (let i = 0; i < 100000; i++) if (dest.write(JSON.stringify({ i, level: 30 }) + '\\n')) taken++;
     await new Promise((r) => dest.flush(r));
     dest.write(JSON.stringify({ after: true }) + '\\n');
     await new Promise((r) => dest.flush(r));
     process.stderr.write(JSON.stringify({ taken, dropped: dest.dropped }));`,
    300,
  );
  assert.equal(out.code, 0, out.stderr);
  const report = JSON.parse(out.stderr) as { taken: number; dropped: number };
  const numbered = out.lines.filter((l) => typeof l.i === 'number');
  const warnings = out.lines.filter((l) => l.code === 'PORTICO_LOG_DROPPED');
  assert.equal(warnings.length, 1, 'one warning line for the dropped run');
  assert.equal(warnings[0]!.level, 40);
  assert.equal(numbered.length, report.taken, 'every line taken was written');
  assert.ok(report.taken < 100000 && report.taken > 0, `some lines were dropped (taken ${report.taken})`);
  assert.equal((warnings[0]!.dropped as number) + numbered.length, 100000, 'written + reported dropped = all lines');
  assert.equal(report.dropped, 0, 'the count restarts once reported');
  assert.equal(out.lines.at(-1)?.after, true, 'the warning comes before later lines');
  for (let k = 1; k < numbered.length; k++) assert.ok((numbered[k]!.i as number) > (numbered[k - 1]!.i as number));
});

test('two processes sharing one stdout pipe (workers) never split each other\'s lines, even when the pipe is full', async () => {
  // The child starts a second writer on the same stdout, as cluster workers share the primary's.
  const writer = `const log = createLogger('info', 'json', 1, true);
     const who = process.argv[1] ?? 'a';
     for (let i = 0; i < 15000; i++) { log.info({ who, i, pad: 'z'.repeat(100 + (i % 60)) }, 'line'); if (i % 100 === 0) await new Promise(setImmediate); }
     log.flush(() => {});`;
  const out = await runChild(
    `import { spawn } from 'node:child_process';
     const body = ${JSON.stringify(`import { createLogger } from ${JSON.stringify(`${distLog}logger.js`)};\n`)} + ${JSON.stringify(writer)};
     const other = spawn(process.execPath, ['--input-type=module', '-e', body, 'b'], { stdio: ['ignore', 'inherit', 'inherit'] });
     ${writer.replace("process.argv[1] ?? 'a'", "'a'")}
     await new Promise((r) => other.on('exit', r));`,
    700,
  );
  assert.equal(out.code, 0, out.stderr);
  for (const who of ['a', 'b']) {
    const mine = out.lines.filter((l) => l.who === who);
    assert.equal(mine.length, 15000, `all of ${who}'s lines arrived whole`);
    mine.forEach((l, i) => assert.equal(l.i, i, `${who}'s line ${i} in order`));
  }
});
