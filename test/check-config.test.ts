import { before, after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { chmod, copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makePki, type TestPki } from './helpers/proxy.js';

/** dist/src/main.js, next to this file's compiled copy in dist/test. */
const MAIN = fileURLToPath(new URL('../src/main.js', import.meta.url));
const ROOT = fileURLToPath(new URL('../../', import.meta.url));

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the real CLI: `node dist/src/main.js ...args`. */
function cli(...args: string[]): Promise<CliResult> {
  return cliWithEnv({}, ...args);
}

/** Runs the real CLI with these variables added to its environment. */
function cliWithEnv(env: Record<string, string>, ...args: string[]): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [MAIN, ...args], { cwd: ROOT, timeout: 20_000, env: { ...process.env, ...env } }, (err, stdout, stderr) => {
      if (err !== null && typeof err.code !== 'number') return reject(err);
      resolve({ code: err === null ? 0 : (err.code as number), stdout, stderr });
    });
  });
}

/** The issue lines (`  path: message`) of a failed check, in order. */
function issueLines(r: CliResult): string[] {
  return r.stderr.split('\n').filter((l) => l.startsWith('  ')).map((l) => l.slice(2));
}

let pki: TestPki;
const runs: Record<string, Promise<CliResult>> = {};
const files: Record<string, string> = {};
let expiredAt = '';

before(async () => {
  pki = await makePki();
  const dir = pki.dir;
  const good = await pki.issue('good', ['app.example.com', 'ok.example.com']);
  const other = await pki.issue('other', ['other.example.com']);
  const notBefore = new Date(Math.floor((Date.now() - 10 * 86_400_000) / 1000) * 1000);
  expiredAt = new Date(notBefore.getTime() + 86_400_000).toISOString();
  const expired = await pki.issue('expired', ['expired.example.com'], { notBefore, days: 1 });
  const write = async (name: string, content: unknown): Promise<void> => {
    files[name] = join(dir, `${name}.json`);
    await writeFile(files[name], typeof content === 'string' ? content : JSON.stringify(content, null, 2));
  };
  const route = [{ path: '/', upstream: 'http://127.0.0.1:3000' }];
  await write('valid', {
    certsDir: '.',
    hosts: { 'app.example.com': { tls: good, routes: [{ path: '/', upstream: 'http://127.0.0.1:3000' }, { path: '/api', upstream: ['http://127.0.0.1:3001', 'h2c://127.0.0.1:3002'], stripPrefix: true }] } },
  });
  await write('schema', {
    listen: { https: { port: 70000 }, htpp: { port: 80 } },
    limits: { headersTimeout: '30 seconds', maxHeaderSize: '16 kilobytes' },
    workers: 'many',
    acme: { email: 'ops.example.com', termsOfServiceAgreed: true },
    hosts: {
      'app.example.com': {
        tls: good,
        routes: [
          { path: '/', upstream: 'http://127.0.0.1:3000' },
          { path: '/api', upstream: 'localhost:3000' },
          { path: '/x', upstrem: 'http://127.0.0.1:3001' },
          { path: 'nested', upstream: 'http://127.0.0.1:3000/base' },
        ],
      },
      'app.*.example.com': { tls: good, routes: route },
      'noroutes.example.com': { tls: good },
      // tls is one of two shapes: each mistake is reported against the shape its keys belong to
      'nokey.example.com': { tls: { cert: good.cert }, routes: route },
      'badcert.example.com': { tls: { cert: 5, key: good.key }, routes: route },
      'notls.example.com': { tls: {}, routes: route },
    },
  });
  await write('typos', {
    certsDir: '.',
    lgo: { level: 'info' },
    hosts: {
      'app.example.com': {
        tls: good,
        routes: [{ path: '/', stripprefix: true, upstream: { targets: ['http://127.0.0.1:3000'], zzz: 1 }, rateLimit: { requests: 1, pre: '1s' } }],
      },
      // tls has two shapes: the keys allowed are those of the one the object uses ("acme"), not cert/key's
      'acme.example.com': { tls: { acme: true, kye: 'k.pem' }, routes: route },
    },
  });
  await write('cross', {
    certsDir: '.',
    defaultHost: 'missing.example.com',
    hosts: {
      'app.example.com': { tls: good, aliases: ['ok.example.com'], routes: route },
      'ok.example.com': { tls: { acme: true }, routes: route },
    },
  });
  await write('certs', {
    certsDir: '.',
    hosts: {
      'ok.example.com': { tls: good, routes: route },
      'missing.example.com': { tls: { cert: 'nope.pem', key: 'nope-key.pem' }, routes: route },
      'mismatch.example.com': { tls: { cert: good.cert, key: other.key }, routes: route },
      'expired.example.com': { tls: expired, routes: route },
      'uncovered.example.com': { tls: other, routes: route },
    },
  });
  // Saved by Windows Notepad: a byte order mark, then the JSON.
  files.bom = join(dir, 'bom.json');
  await writeFile(files.bom, `\uFEFF${JSON.stringify({ certsDir: '.', hosts: { 'app.example.com': { tls: good, routes: route } } })}`);
  await write('empty', '\n');
  await write('json', '{\n  "hosts": {\n    "a.example.com": { "tls": { "acme": true }, }\n  }\n}\n');
  // Every run at once: each is a Node start-up, and the tests only read the results.
  for (const name of Object.keys(files)) runs[name] = cli('check', files[name] as string);
  runs.directory = cli('check', dir);
  runs.missing = cli('check', join(dir, 'nope.json'));
  runs.help = cli('--help');
  runs.version = cli('--version');
  runs.nofile = cli('check');
  runs.schemaOut = cli('schema');
  runs.unknownOption = cli('--frobnicate', 'check', files.valid as string);
  runs.unknownShort = cli('-x');
  runs.missingValue = cli('--config');
  runs.badLevel = cli('--log-level', 'verbose', '--config', files.valid as string);
  runs.badLevelEnv = cliWithEnv({ PORTICO_LOG_LEVEL: 'loud' }, 'check', files.valid as string);
  runs.twoFiles = cli('check', files.valid as string, files.json as string);
  await Promise.all(Object.values(runs));
});

after(() => pki?.cleanup());

test('portico check accepts a valid config with exit code 0', async () => {
  const r = await runs.valid!;
  assert.equal(r.stderr, '');
  assert.equal(r.stdout, `${files.valid}: ok (1 host)\n`);
  assert.equal(r.code, 0);
});

test('portico check lists every schema problem at once, each with its JSON path, and exits 1', async () => {
  const r = await runs.schema!;
  assert.equal(r.code, 1);
  assert.equal(r.stderr.split('\n')[0], `${files.schema}: 16 problems`);
  assert.deepEqual(issueLines(r).sort(), [
    // bad port
    'listen.https.port: Too big: expected number to be <=65535, got 70000',
    // unknown key (a typo)
    'listen.htpp: unknown key, did you mean "http"?',
    // an upstream that is not a URL
    'hosts["app.example.com"].routes[1].upstream: expected a URL with scheme http://, https:// or h2c://, or a Unix socket "unix:/path.sock", got "localhost:3000"',
    // a missing required field beside its misspelt key
    'hosts["app.example.com"].routes[2].upstrem: unknown key, did you mean "upstream"?',
    'hosts["app.example.com"].routes[2]: a route needs one of "upstream" (forward), "redirect", "respond" or "files", got {"path":"/x","upstrem":"http://127.0.0.1:3001"}',
    // a route path without its slash, and an upstream URL with a path
    'hosts["app.example.com"].routes[3].path: a route path must start with "/", got "nested"',
    'hosts["app.example.com"].routes[3].upstream: an upstream URL names a server only (scheme, host, port), got "http://127.0.0.1:3000/base"; use the route\'s "stripPrefix"/"addPrefix" to change paths',
    // a wildcard that is not the first label
    'hosts["app.*.example.com"]: expected a lower-case DNS name such as "app.example.com" or "*.example.com", got "app.*.example.com"',
    // a missing required field
    'hosts["noroutes.example.com"].routes: required: expected array',
    // the cert/key shape of tls: its missing key, its cert of the wrong type; and neither shape
    'hosts["nokey.example.com"].tls.key: required: expected string',
    'hosts["badcert.example.com"].tls.cert: expected string, got 5',
    'hosts["notls.example.com"].tls: required: set "cert" and "key", or "acme"',
    // a value of neither type a choice allows: both are named
    'workers: expected number or "auto", got "many"',
    // an ACME contact that is not an email address: what one looks like, not the library's "Invalid email address"
    'acme.email: expected an email address such as "ops@example.com" (the CA sends expiry notices there), got "ops.example.com"',
    // bad duration and size
    'limits.headersTimeout: expected a duration such as "500ms", "30s", "5m", "1h" or "90d", got "30 seconds"',
    'limits.maxHeaderSize: expected a size such as "16kb", "10mb" or "1gb", got "16 kilobytes"',
  ].sort());
});

test('portico check answers an unknown key with the key it most likely misspells, or else with the keys allowed where it stands', async () => {
  const r = await runs.typos!;
  assert.equal(r.code, 1);
  assert.deepEqual(issueLines(r).sort(), [
    // two letters swapped
    'lgo: unknown key, did you mean "log"?',
    // the case alone differs
    'hosts["app.example.com"].routes[0].stripprefix: unknown key, did you mean "stripPrefix"?',
    // one letter wrong, in an object nested in a route
    'hosts["app.example.com"].routes[0].rateLimit.pre: unknown key, did you mean "per"?',
    'hosts["acme.example.com"].tls.kye: unknown key; allowed here: "acme" (see docs/config-reference.md)',
    // nothing close: the keys an upstream takes
    'hosts["app.example.com"].routes[0].upstream.zzz: unknown key; allowed here: "targets", "hostHeader", "protocol", "connectTimeout", "responseTimeout", "tunnelIdleTimeout", "tls", "loadBalancing", "stickyCookie", "healthCheck", "passiveHealth", "maxRequests", "queueTimeout", "requestBuffer" (see docs/config-reference.md)',
  ].sort());
});

test('portico check reports a name served twice, an undeclared defaultHost and ACME hosts without an acme section', async () => {
  const r = await runs.cross!;
  assert.equal(r.code, 1);
  assert.deepEqual(issueLines(r), [
    'hosts["ok.example.com"]: the name "ok.example.com" is already served by hosts["app.example.com"]',
    'defaultHost: "missing.example.com" is not a name of any host in "hosts"',
    'acme: a host uses {"acme": true} but there is no "acme" section; add one with at least "email" and "termsOfServiceAgreed": true',
  ]);
});

test('portico check reports a missing certificate file, a key that does not match, an expired certificate and one that does not cover its host', async () => {
  const r = await runs.certs!;
  const d = pki.dir;
  assert.equal(r.code, 1);
  assert.equal(r.stderr.split('\n')[0], `${files.certs}: 4 problems`);
  assert.deepEqual(issueLines(r).sort(), [
    `hosts["missing.example.com"].tls: ${d}/nope.pem: cannot read the certificate (ENOENT); check the path (relative to certsDir) and permissions`,
    `hosts["mismatch.example.com"].tls: ${d}/other-key.pem: this key does not match the certificate ${d}/good.pem; install the key the certificate was issued for`,
    `hosts["expired.example.com"].tls: ${d}/expired.pem: the certificate expired on ${expiredAt}; renew it`,
    `hosts["uncovered.example.com"].tls: ${d}/other.pem: the certificate does not cover "uncovered.example.com" (its names: DNS:other.example.com); issue a certificate whose SAN lists this name`,
  ].sort());
});

test('portico check points at the line and column of invalid JSON', async () => {
  const r = await runs.json!;
  assert.equal(r.code, 1);
  const lines = issueLines(r);
  assert.equal(lines.length, 1);
  assert.match(lines[0] as string, /^\(line 3, column 49\): invalid JSON: /);
});

test('portico check accepts a config that starts with a byte order mark, and says plainly that a file is empty, a directory or missing', async () => {
  const bom = await runs.bom!;
  assert.deepEqual([bom.code, bom.stdout, bom.stderr], [0, `${files.bom}: ok (1 host)\n`, '']);
  const expected: Record<string, string> = {
    empty: `${files.empty}: 1 problem\n  (file): the file is empty; a config is a JSON object with at least "hosts" (see the config reference in README.md)\n`,
    directory: `${pki.dir}: 1 problem\n  (file): cannot read ${pki.dir} (EISDIR): it is a directory; name the config file in it\n`,
    missing: `${join(pki.dir, 'nope.json')}: 1 problem\n  (file): cannot read ${join(pki.dir, 'nope.json')} (ENOENT): there is no such file; check the path (a relative one is taken from the working directory)\n`,
  };
  for (const [name, stderr] of Object.entries(expected)) {
    const r = await runs[name]!;
    assert.deepEqual({ name, code: r.code, stderr: r.stderr }, { name, code: 1, stderr });
  }
});

test('portico check without a file explains its usage and exits 2', async () => {
  const r = await runs.nofile!;
  assert.equal(r.code, 2);
  assert.match(r.stderr, /usage: portico check FILE/);
});

test('portico --help prints the usage and --version the package version', async () => {
  const help = await runs.help!;
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^Usage:\n/);
  assert.match(help.stdout, /portico check FILE/);
  const version = await runs.version!;
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
  assert.equal(version.code, 0);
  assert.equal(version.stdout, `portico ${pkg.version}\n`);
});

test('an unknown option, an option without its value, a log level that does not exist and a second file to check each get one line saying so, and exit 2 without a stack trace', async () => {
  const expected: Record<string, string> = {
    unknownOption: 'portico: unknown option --frobnicate; see portico --help\n',
    unknownShort: 'portico: unknown option -x; see portico --help\n',
    missingValue: 'portico: option --config needs a value; see portico --help\n',
    badLevel: 'portico: --log-level must be one of trace, debug, info, warn, error, fatal, silent, got "verbose"; see portico --help\n',
    badLevelEnv: 'portico: PORTICO_LOG_LEVEL must be one of trace, debug, info, warn, error, fatal, silent, got "loud"; see portico --help\n',
    twoFiles: `portico: check takes one file, got 2 (${files.valid} ${files.json}); see portico --help\n`,
  };
  for (const [name, stderr] of Object.entries(expected)) {
    const r = await runs[name]!;
    assert.deepEqual({ name, code: r.code, stderr: r.stderr, stdout: r.stdout }, { name, code: 2, stderr, stdout: '' });
  }
});

test('the committed config/portico.schema.json is what `portico schema` prints (run `npm run schema` after changing the config schema)', async () => {
  const printed = await runs.schemaOut!;
  const committed = readFileSync(join(ROOT, 'config/portico.schema.json'), 'utf8');
  assert.equal(printed.code, 0);
  assert.equal(committed, printed.stdout);
});

// Regression: a duration past Node's timer limit (2^31-1 ms, 24.8 days) was taken, and Node then fires such a timer
// after 1 ms (a healthCheck interval of "30d" checked every millisecond) or cuts a socket timeout with a warning.
test('durations that set timers are refused past "24d" with their path; cache lifetimes may be longer', async () => {
  const { validateConfig } = await import('../src/config/load.js');
  const tls = { cert: 'c', key: 'k' };
  const issues = (config: Record<string, unknown>): string[] => {
    const r = validateConfig({ hosts: { 'b.test': { tls, routes: [{ upstream: 'http://127.0.0.1:1' }] } }, ...config });
    return r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`);
  };
  const tooLong: [Record<string, unknown>, RegExp][] = [
    [{ limits: { keepAliveTimeout: '30d' } }, /^limits\.keepAliveTimeout: expected a duration of at most "24d"/],
    [{ limits: { shutdownTimeout: '25d' } }, /^limits\.shutdownTimeout: expected a duration of at most "24d"/],
    [{ streams: [{ port: 7000, upstream: 'tcp://127.0.0.1:1', idleTimeout: '25d' }] }, /^streams\[0\]\.idleTimeout: expected a duration of at most "24d"/],
    [{ hosts: { 'b.test': { tls, routes: [{ upstream: { targets: ['http://127.0.0.1:1'], responseTimeout: '800h' } }] } } }, /^hosts\["?b\.test"?\]\.routes\[0\]\.upstream\.responseTimeout: expected a duration of at most "24d"/],
    [{ hosts: { 'b.test': { tls, routes: [{ upstream: { targets: ['http://127.0.0.1:1'], healthCheck: { path: '/health', interval: '30d' } } }] } } }, /healthCheck\.interval: expected a duration of at most "24d"/],
  ];
  for (const [config, want] of tooLong) {
    const got = issues(config);
    assert.equal(got.length, 1, `${JSON.stringify(config)}: ${got.join(' | ')}`);
    assert.match(got[0]!, want);
  }
  assert.deepEqual(issues({ limits: { keepAliveTimeout: '24d' }, streams: [{ port: 7000, upstream: 'tcp://127.0.0.1:1', idleTimeout: '24d' }] }), []);
  assert.deepEqual(issues({ hosts: { 'b.test': { tls, routes: [{ upstream: 'http://127.0.0.1:1', cache: { defaultTtl: '90d' } }] } } }), [], 'a cache lifetime is not a timer');
});

test('portico check run as another user (uid 1000, as in the Docker image) names that uid for a root-owned 0600 key and admin token, instead of telling to create the token', async (t) => {
  if (process.getuid?.() !== 0) return t.skip('needs root, to make root-owned files and run the CLI as uid 1000');
  // The CLI as uid 1000 must be able to run at all: a Node under /root (CI's LTS binary) is not reachable by it, so
  // the system's Node runs it then (the messages do not depend on the Node version); a checkout uid 1000 cannot
  // read is the one case left out.
  const runsAs1000 = (node: string): Promise<boolean> =>
    new Promise((done) => execFile(node, [MAIN, '--version'], { uid: 1000, gid: 1000, cwd: '/' }, (err) => done(err === null)));
  const node = (await runsAs1000(process.execPath)) ? process.execPath : (await runsAs1000('/usr/bin/node')) ? '/usr/bin/node' : undefined;
  if (node === undefined) return t.skip(`uid 1000 can run neither ${process.execPath} nor /usr/bin/node on ${MAIN}`);
  const dir = await mkdtemp(join(tmpdir(), 'portico-perm-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await chmod(dir, 0o755);
  await copyFile(join(pki.dir, 'good.pem'), join(dir, 'good.pem'));
  await copyFile(join(pki.dir, 'good-key.pem'), join(dir, 'good-key.pem'));
  await writeFile(join(dir, 'admin.token'), 'a'.repeat(64));
  await chmod(join(dir, 'good.pem'), 0o644);
  await chmod(join(dir, 'good-key.pem'), 0o600);
  await chmod(join(dir, 'admin.token'), 0o600);
  const config = join(dir, 'portico.json');
  await writeFile(config, JSON.stringify({
    certsDir: '.',
    admin: { port: 9, tokenFile: 'admin.token' },
    hosts: { 'app.example.com': { tls: { cert: 'good.pem', key: 'good-key.pem' }, routes: [{ path: '/', upstream: 'http://127.0.0.1:3000' }] } },
  }));
  await chmod(config, 0o644);
  const r = await new Promise<CliResult>((done, reject) => {
    execFile(node, [MAIN, 'check', config], { uid: 1000, gid: 1000, cwd: ROOT, timeout: 20_000 }, (err, stdout, stderr) => {
      if (err !== null && typeof err.code !== 'number') return reject(err);
      done({ code: err === null ? 0 : (err.code as number), stdout, stderr });
    });
  });
  assert.equal(r.code, 1, r.stderr);
  const fix = 'let the user Portico runs as (uid 1000) read it: chown it to that uid, or give it a group the process has (docker run --group-add) and mode 0640';
  assert.deepEqual(issueLines(r).sort(), [
    `admin.tokenFile: cannot read the admin token file ${dir}/admin.token (EACCES); ${fix}`,
    `hosts["app.example.com"].tls: ${dir}/good-key.pem: cannot read the key (EACCES); ${fix}`,
  ]);
});

test('portico check refuses a key named __proto__ wherever it stands, naming its path: zod would drop it and a route matching on that header would match every request', async () => {
  const good = await pki.issue('proto', ['app.example.com']);
  const file = join(pki.dir, 'proto.json');
  // Written as text: JSON.stringify of an object literal cannot hold an own "__proto__" key.
  const host = JSON.stringify({ tls: good, routes: [{ path: '/', upstream: 'http://127.0.0.1:3000' }] });
  await writeFile(
    file,
    `{"certsDir": ".", "hosts": {"app.example.com": {"headers": {"request": {"set": {"__proto__": "x"}}}, "routes": [` +
      `{"path": "/a", "match": {"headers": {"__proto__": "*"}}, "upstream": "http://127.0.0.1:3000"}, ${JSON.stringify(JSON.parse(host).routes[0])}], "tls": ${JSON.stringify(good)}}}}`,
  );
  const r = await cli('check', file);
  assert.equal(r.code, 1, r.stderr);
  assert.deepEqual(issueLines(r).sort(), [
    'hosts["app.example.com"].headers.request.set.__proto__: "__proto__" cannot be a name here (no host, header, cookie or query name can be __proto__); remove or rename this key',
    'hosts["app.example.com"].routes[0].match.headers.__proto__: "__proto__" cannot be a name here (no host, header, cookie or query name can be __proto__); remove or rename this key',
  ]);
});
