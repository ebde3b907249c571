import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { configReferenceMarkdown } from '../src/cli/config-reference.js';
import { ERRORS } from '../src/errors.js';
import { loadConfigFile, validateConfig } from '../src/config/load.js';
import { ConfigSchema } from '../src/config/schema.js';

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

/**
 * Every ```json block of README.md and docs/certificates.md, made into a whole config and validated by
 * the real loader (JSON parse, ${ENV} substitution, schema and cross-references), so that no example rots.
 * How a block becomes a config, with no markup needed:
 * - a JSON object with "hosts" is a whole config, validated as it is;
 * - a log line, or several (a JSON object with "level" and "msg", on one line each or printed whole), is not a
 *   config, and is skipped;
 * - anything else is a fragment, members as they stand in an object (`"key": value, …`): wrapped in braces
 *   and placed by its first key: a top-level key of the config (`"acme"`, `"log"`, `"hosts"`, …) at the top,
 *   `"upstream"` as the one route's upstream, a host name (it has a dot, `"app.example.com": {…}`) under
 *   `"hosts"`, any other key (`"routes"`, `"headers"`, …) in a host. What the fragment leaves out comes from
 *   BASE_HOST, and an `"acme"` section is added when a host asks for ACME and the fragment gives none.
 * - a block right after a line `<!-- not a config -->` is skipped (for JSON that is neither).
 */
const BASE_HOST = { tls: { cert: 'example.com/fullchain.pem', key: 'example.com/privkey.pem' }, routes: [{ path: '/', upstream: 'http://127.0.0.1:3000' }] };
const TOP_LEVEL_KEYS = new Set(Object.keys(ConfigSchema.shape));

/** The json blocks of a Markdown text: their line, and their text with the list indentation removed. */
function jsonBlocks(markdown: string): { line: number; text: string; skipped: boolean }[] {
  const blocks: { line: number; text: string; skipped: boolean }[] = [];
  const lines = markdown.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const open = /^( *)```json\s*$/.exec(lines[i]!);
    if (open === null) continue;
    const indent = open[1]!;
    const body: string[] = [];
    let j = i + 1;
    for (; j < lines.length && lines[j] !== `${indent}\`\`\``; j++) body.push(lines[j]!.slice(indent.length));
    blocks.push({ line: i + 1, text: body.join('\n'), skipped: lines[i - 1]?.trim() === '<!-- not a config -->' });
    i = j;
  }
  return blocks;
}

/** Whether a line of a block is a JSON log line (an object with "level" and "msg"). */
function isLogLine(line: string): boolean {
  try {
    const o = JSON.parse(line) as unknown;
    return typeof o === 'object' && o !== null && 'level' in o && 'msg' in o;
  } catch {
    return false;
  }
}

/** A block as a whole config, or undefined for log lines. */
function blockAsConfig(text: string): Record<string, unknown> | undefined {
  const trimmed = text.trim();
  if (trimmed.split('\n').every(isLogLine)) return undefined;
  if (trimmed.startsWith('{')) {
    const whole = JSON.parse(trimmed) as Record<string, unknown>;
    if ('level' in whole && 'msg' in whole) return undefined;
    if ('hosts' in whole) return whole;
  }
  const fragment = JSON.parse(`{${trimmed.replace(/,\s*$/, '')}}`) as Record<string, unknown>;
  const first = Object.keys(fragment)[0] ?? '';
  let config: Record<string, unknown>;
  if (TOP_LEVEL_KEYS.has(first)) config = { hosts: { 'example.com': BASE_HOST }, ...fragment };
  else if (first === 'upstream') config = { hosts: { 'example.com': { ...BASE_HOST, routes: [{ path: '/', ...fragment }] } } };
  else if (first.includes('.')) config = { hosts: fragment };
  else config = { hosts: { 'example.com': { ...BASE_HOST, ...fragment } } };
  const hosts = Object.values(config['hosts'] as Record<string, { tls?: { acme?: unknown } }>);
  if (config['acme'] === undefined && hosts.some((h) => h.tls?.acme !== undefined)) config['acme'] = { email: 'ops@example.com', termsOfServiceAgreed: true };
  return config;
}

for (const doc of ['README.md', 'docs/certificates.md']) {
  test(`every JSON config example in ${doc} is valid, whole or as the fragment of a config it shows`, async (t) => {
    const markdown = await readFile(new URL(doc, root), 'utf8');
    const blocks = jsonBlocks(markdown);
    assert.ok(blocks.length >= 5, `${doc} has json blocks`);
    const dir = await mkdtemp(join(tmpdir(), 'portico-doc-examples-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    // The README's ${ENV} example names variables with no default: the loader needs them set.
    for (const name of ['APP_URL', 'ACME_EMAIL', 'EAB_KID', 'EAB_HMAC_KEY']) process.env[name] ??= name === 'APP_URL' ? 'http://127.0.0.1:3000' : name === 'ACME_EMAIL' ? 'ops@example.com' : 'x';
    const problems: string[] = [];
    let validated = 0;
    for (const block of blocks) {
      if (block.skipped) continue;
      let config: Record<string, unknown> | undefined;
      try {
        config = blockAsConfig(block.text);
      } catch (err) {
        problems.push(`${doc}:${block.line}: not JSON (${(err as Error).message})`);
        continue;
      }
      if (config === undefined) continue;
      const file = join(dir, `line-${block.line}.json`);
      await writeFile(file, JSON.stringify(config));
      const loaded = await loadConfigFile(file);
      validated++;
      if (!loaded.ok) problems.push(...loaded.issues.map((i) => `${doc}:${block.line}: ${i.path}: ${i.message}`));
    }
    assert.deepEqual(problems, []);
    assert.ok(validated >= 4, `${validated} examples validated`);
  });
}
