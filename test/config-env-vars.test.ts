/**
 * `${NAME}` and `${NAME:-default}` in the config file: replaced from Portico's environment in values
 * and keys when the config is loaded (start and reload), `$${` for a literal, and every problem (a
 * variable not set, a bad name, an unclosed `${`, two keys that become one) reported at its path,
 * the old config serving on.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { loadConfigFileInChild } from '../src/config/load-in-child.js';
import { makePki, startProxyFor } from './helpers/proxy.js';
import { h1Request, startUpstream } from './helpers/net.js';

test('a config with ${VARS} is served as the environment says, in values and keys, with defaults and literal $${', async (t) => {
  const pki = await makePki();
  const up = await startUpstream();
  const cert = await pki.issue('env', ['env.test']);
  process.env.PORTICO_TEST_SITE = 'env.test';
  process.env.PORTICO_TEST_UPSTREAM = up.url;
  process.env.PORTICO_TEST_EMPTY = '';
  t.after(() => {
    delete process.env.PORTICO_TEST_SITE;
    delete process.env.PORTICO_TEST_UPSTREAM;
    delete process.env.PORTICO_TEST_EMPTY;
  });
  const proxy = await startProxyFor(
    t,
    pki,
    {
      hosts: {
        '${PORTICO_TEST_SITE}': {
          tls: { cert: '${PORTICO_TEST_CERT:-' + cert.cert + '}', key: cert.key },
          routes: [
            { path: '/', upstream: '${PORTICO_TEST_UPSTREAM}' },
            { path: '/price', respond: { body: 'costs $5, not $${PORTICO_TEST_SITE}; ${PORTICO_TEST_EMPTY:-empty means the default}|${PORTICO_TEST_EMPTY}|' } },
          ],
        },
      },
    },
    [() => up.close()],
  );
  const r = await h1Request({ port: proxy.httpsPort, sni: 'env.test', path: '/app', ca: pki.caPem });
  assert.equal(r.status, 200);
  assert.equal(up.seen[0]?.url, '/app', 'the upstream from the environment got it');
  const price = await h1Request({ port: proxy.httpsPort, sni: 'env.test', path: '/price', ca: pki.caPem });
  assert.equal(price.text, 'costs $5, not ${PORTICO_TEST_SITE}; empty means the default||');

  // A reload that needs a variable that is not set is refused with the path, and the old config serves on.
  await writeFile(
    proxy.configFile,
    JSON.stringify({
      listen: { https: { port: proxy.httpsPort, addresses: ['127.0.0.1'] }, http: { port: proxy.httpPort, addresses: ['127.0.0.1'] } },
      certsDir: pki.dir,
      hosts: { 'env.test': { tls: cert, routes: [{ upstream: 'http://${PORTICO_TEST_NOT_SET}:3000' }] } },
    }),
  );
  const reload = await proxy.portico.reload();
  assert.equal(reload.ok, false);
  assert.deepEqual(
    reload.ok ? [] : reload.issues.map((i) => `${i.path}: ${i.message}`),
    ['hosts["env.test"].routes[0].upstream: the environment variable PORTICO_TEST_NOT_SET is not set; set it, or give a default with ${PORTICO_TEST_NOT_SET:-value}'],
  );
  assert.equal((await h1Request({ port: proxy.httpsPort, sni: 'env.test', path: '/still', ca: pki.caPem })).status, 200);
});

test('problems with ${...} are reported at their paths: bad names, no closing brace, keys that become one', async (t) => {
  const pki = await makePki();
  t.after(() => pki.cleanup());
  process.env.PORTICO_TEST_A = 'same.test';
  t.after(() => delete process.env.PORTICO_TEST_A);
  const file = join(pki.dir, 'portico.json');
  await writeFile(
    file,
    JSON.stringify({
      hosts: {
        '${PORTICO_TEST_A}': { tls: { cert: 'c.pem', key: '${1BAD}' }, routes: [{ upstream: 'http://${PORTICO_TEST_A:3000' }] },
        'same.test': { tls: { cert: 'c.pem', key: 'k.pem' }, routes: [{ upstream: 'http://127.0.0.1:1' }] },
      },
    }),
  );
  const r = await loadConfigFileInChild(file);
  assert.equal(r.ok, false);
  const lines = r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`);
  assert.deepEqual(lines, [
    'hosts["same.test"].tls.key: ${1BAD} does not name an environment variable (letters, digits and _, not starting with a digit); write $${ for a literal "${"',
    'hosts["same.test"].routes[0].upstream: "${" at character 8 has no closing "}": write ${NAME}, or $${ for a literal "${"',
    'hosts["same.test"]: this key becomes "same.test", as "${PORTICO_TEST_A}" does; each key must differ once variables are replaced',
  ]);
});
