/**
 * The built-in demo: a local CA and certificates in a demo folder (never the
 * user's certs/), a small static site, and a config for users.localhost,
 * orders.localhost and localhost. Existing demo files are reused, so the CA
 * stays trusted.
 */
import { mkdir, readFile, writeFile, access } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { LocalCa } from '../tls/local-ca.js';

/** Where the demo keeps its files, relative to the working directory. */
export const DEMO_DIR = 'demo-data';

const NAMES = ['localhost', 'users.localhost', 'orders.localhost'];

/** The demo site's page, served by a "files" route on localhost. */
const DEMO_PAGE = `<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>Portico demo</title>
<h1>Portico demo</h1>
<p>This page is a static file (<code>demo-data/site/index.html</code>), served by a "files" route.
<a href="/users">/users</a> and <a href="/orders">/orders</a> go to two demo APIs.</p>
</html>
`;

async function exists(file: string): Promise<boolean> {
  try {
    await access(file);
    return true;
  } catch {
    return false;
  }
}

/** Writes (or reuses) the demo CA, certificate and config; returns the config path and CA path. */
export async function prepareDemo(dir = DEMO_DIR, httpsPort = 8443, httpPort = 8080): Promise<{ configFile: string; caFile: string }> {
  const root = resolve(dir);
  const certs = join(root, 'certs');
  await mkdir(certs, { recursive: true, mode: 0o700 });
  const caFile = join(certs, 'demo-ca.pem');
  const certFile = join(certs, 'demo.pem');
  const keyFile = join(certs, 'demo-key.pem');
  if (!(await exists(caFile)) || !(await exists(certFile)) || !(await exists(keyFile))) {
    const ca = await LocalCa.create('Portico Demo CA');
    const leaf = await ca.issue(NAMES, { ips: ['127.0.0.1', '::1'] });
    await writeFile(caFile, ca.certPem);
    await writeFile(certFile, leaf.chain);
    await writeFile(keyFile, leaf.key, { mode: 0o600 });
  }
  const site = join(root, 'site');
  await mkdir(site, { recursive: true });
  const page = join(site, 'index.html');
  if (!(await exists(page))) await writeFile(page, DEMO_PAGE);
  const tls = { cert: 'demo.pem', key: 'demo-key.pem' };
  const config = {
    $schema: '../config/portico.schema.json',
    listen: {
      https: { port: httpsPort, addresses: ['127.0.0.1', '::1'] },
      http: { port: httpPort, addresses: ['127.0.0.1', '::1'] },
    },
    certsDir: 'certs',
    hosts: {
      'users.localhost': { tls, routes: [{ path: '/', upstream: 'http://127.0.0.1:3001' }] },
      'orders.localhost': { tls, routes: [{ path: '/', upstream: 'http://127.0.0.1:3002' }] },
      localhost: {
        tls,
        routes: [
          { path: '/users', upstream: 'http://127.0.0.1:3001' },
          { path: '/orders', upstream: 'http://127.0.0.1:3002' },
          { path: '/', files: 'site', compress: true },
        ],
      },
    },
  };
  const configFile = join(root, 'portico.json');
  const text = `${JSON.stringify(config, null, 2)}\n`;
  const current = (await exists(configFile)) ? await readFile(configFile, 'utf8') : '';
  if (current !== text) await writeFile(configFile, text);
  return { configFile, caFile };
}

/** The lines printed for the user to try. */
export function demoInstructions(caFile: string, httpsPort = 8443, httpPort = 8080): string {
  const ca = caFile.startsWith(process.cwd()) ? caFile.slice(process.cwd().length + 1) : caFile;
  return [
    '',
    'Portico demo is running. Try:',
    `  curl --cacert ${ca} https://users.localhost:${httpsPort}/users`,
    `  curl --cacert ${ca} --http1.1 https://users.localhost:${httpsPort}/users`,
    `  curl --cacert ${ca} https://orders.localhost:${httpsPort}/orders`,
    `  curl --cacert ${ca} https://localhost:${httpsPort}/users`,
    `  curl --cacert ${ca} https://localhost:${httpsPort}/orders`,
    `  curl --cacert ${ca} https://localhost:${httpsPort}/                  # a static file`,
    `  curl --cacert ${ca} -d '{"name":"Carol"}' https://users.localhost:${httpsPort}/users`,
    `  curl -i http://users.localhost:${httpPort}/users                      # 308 to https`,
    `  curl --cacert ${ca} -H 'Host: orders.localhost' https://users.localhost:${httpsPort}/orders   # 421`,
    'Press Ctrl-C to stop.',
    '',
  ].join('\n');
}
