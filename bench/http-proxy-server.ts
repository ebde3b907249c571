/**
 * node-http-proxy (npm "http-proxy") as a TLS-terminating proxy for the
 * benchmark: HTTPS (HTTP/1.1 only) and plain HTTP in front of one upstream,
 * upstream keep-alive through one http.Agent.
 *
 * Usage: node dist/bench/http-proxy-server.js '<settings JSON>'
 */
import { Agent, createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { readFileSync } from 'node:fs';

interface Settings {
  readonly httpsPort: number;
  readonly httpPort: number;
  readonly upstream: string;
  readonly certFile: string;
  readonly keyFile: string;
  readonly maxFreeSockets: number;
  readonly keepAliveTimeoutMs: number;
}

/** The slice of the http-proxy API used here (the package ships no types). */
interface ProxyServer {
  web(req: IncomingMessage, res: ServerResponse, opts?: object, cb?: (err: Error) => void): void;
}
interface HttpProxyModule {
  createProxyServer(opts: object): ProxyServer;
}

const settings = JSON.parse(process.argv[2] ?? '{}') as Settings;
// A variable specifier keeps tsc from looking for type declarations.
const specifier = 'http-proxy';
const mod = (await import(specifier)) as { default: HttpProxyModule };
const agent = new Agent({ keepAlive: true, maxFreeSockets: settings.maxFreeSockets });
const proxy = mod.default.createProxyServer({ target: settings.upstream, agent, xfwd: false });

function onProxyError(this: ServerResponse, err: Error): void {
  if (!this.headersSent) this.writeHead(502);
  this.end(String(err.message));
}

function handle(req: IncomingMessage, res: ServerResponse): void {
  proxy.web(req, res, {}, onProxyError.bind(res));
}

const https = createHttpsServer(
  { cert: readFileSync(settings.certFile), key: readFileSync(settings.keyFile), minVersion: 'TLSv1.2', honorCipherOrder: false },
  handle,
);
https.keepAliveTimeout = settings.keepAliveTimeoutMs;
https.listen(settings.httpsPort, '127.0.0.1');

const http = createHttpServer(handle);
http.keepAliveTimeout = settings.keepAliveTimeoutMs;
http.listen(settings.httpPort, '127.0.0.1');

process.on('SIGTERM', () => process.exit(0));
