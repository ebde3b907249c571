/**
 * The mime-db table behind "files" routes never stays loaded: loaded in every process, its 0.5 MiB
 * of heap objects cost about 1.1× the CPU per MiB of large proxied responses (bench/optimisations.md
 * §24). A config with a files route builds a flat table from it and drops the library. This file
 * runs in a process of its own (node --test), so nothing else has loaded it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { makePki, startProxyFor } from './helpers/proxy.js';
import { h1Request } from './helpers/net.js';

const mimeDbLoaded = (): boolean => Object.keys(createRequire(import.meta.url).cache).some((f) => f.includes(`${'/'}mime-db${'/'}`));

test('mime-db is not kept loaded, before or after a config has a files route; types still come from it', async (t) => {
  const pki = await makePki();
  const site = join(pki.dir, 'site');
  await mkdir(site);
  await writeFile(join(site, 'page.html'), '<p>hi</p>\n');
  const cert = await pki.issue('l', ['lazy.test']);
  const proxy = await startProxyFor(t, pki, { hosts: { 'lazy.test': { tls: cert, routes: [{ path: '/', respond: { body: 'x' } }] } } });
  assert.equal(mimeDbLoaded(), false, 'a config without files routes does not load the table');
  await proxy.reconfigure({ hosts: { 'lazy.test': { tls: cert, routes: [{ path: '/', files: site }] } } });
  assert.equal(mimeDbLoaded(), false, 'the table was built and the library dropped');
  const r = await h1Request({ port: proxy.httpsPort, sni: 'lazy.test', path: '/page.html', ca: pki.caPem });
  assert.equal(r.headers['content-type'], 'text/html; charset=utf-8', 'the first request after the reload has its type');
  const { fileContentType } = await import('../src/files/content-type.js');
  assert.equal(fileContentType('/x/app.JS').replace('application/javascript', 'text/javascript'), 'text/javascript; charset=utf-8');
  assert.equal(fileContentType('/x/photo.webp'), 'image/webp');
  assert.equal(fileContentType('/x/font.woff2'), 'font/woff2');
  assert.equal(fileContentType('/x/data.json'), 'application/json; charset=utf-8');
  assert.equal(fileContentType('/x/README'), 'application/octet-stream');
  assert.equal(fileContentType('/x.d/noext'), 'application/octet-stream', 'a dot in a directory name is no extension');
});
