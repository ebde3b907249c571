/**
 * A reference row, not a proxy: Node's own servers answering every request by
 * themselves, with the backend's bodies held in memory. node:http2's secure
 * server with allowHTTP1 on the TLS port (so HTTP/1.1 goes to node:http's
 * server, HTTP/2 to node:http2's core stream API, the cheaper of its two APIs
 * and the one Portico uses), node:http on the plain port. What any Node proxy
 * costs at least: its CPU per request and its memory before a single byte is
 * forwarded.
 *
 * Usage: node dist/bench/node-alone-server.js '<settings JSON>'
 */
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createSecureServer, type IncomingHttpHeaders as H2Headers, type ServerHttp2Stream } from 'node:http2';
import { readFileSync } from 'node:fs';

interface Settings {
  readonly httpsPort: number;
  readonly httpPort: number;
  readonly certFile: string;
  readonly keyFile: string;
  /** The backend's 100-byte body, answered at every path but /1m. */
  readonly smallBody: string;
  /** File whose bytes are answered at /1m. */
  readonly largeFile: string;
  readonly keepAliveTimeoutMs: number;
}

const settings = JSON.parse(process.argv[2] ?? '{}') as Settings;
const small = Buffer.from(settings.smallBody);
const large = readFileSync(settings.largeFile);
const smallLength = String(small.length);
const largeLength = String(large.length);

// The same headers the backend nginx sends that matter to a client: type and length. An upload (S7's POST) is
// read to its end and dropped before the answer, as the backend does.
function handle(req: IncomingMessage, res: ServerResponse): void {
  if (req.method === 'POST') {
    req.on('end', () => answer(req, res));
    req.resume();
    return;
  }
  answer(req, res);
}

function answer(req: IncomingMessage, res: ServerResponse): void {
  const big = req.url === '/1m';
  res.writeHead(200, { 'content-type': big ? 'application/octet-stream' : 'text/plain', 'content-length': big ? largeLength : smallLength });
  res.end(big ? large : small);
}

function handleStream(stream: ServerHttp2Stream, headers: H2Headers): void {
  const big = headers[':path'] === '/1m';
  stream.respond({ ':status': 200, 'content-type': big ? 'application/octet-stream' : 'text/plain', 'content-length': big ? largeLength : smallLength });
  stream.end(big ? large : small);
}

const https = createSecureServer({ cert: readFileSync(settings.certFile), key: readFileSync(settings.keyFile), minVersion: 'TLSv1.2', allowHTTP1: true, honorCipherOrder: false });
// HTTP/1.1 (allowHTTP1) arrives as 'request'. Adding that listener also makes node:http2 answer HTTP/2
// streams through its compatibility layer; that listener is replaced by the core API's.
https.on('request', handle);
https.removeAllListeners('stream');
https.on('stream', handleStream);
// node:http2's secure server hands HTTP/1.1 to node:http's code, which reads keepAliveTimeout from it.
(https as unknown as { keepAliveTimeout: number }).keepAliveTimeout = settings.keepAliveTimeoutMs;
https.listen(settings.httpsPort, '127.0.0.1');

const http = createHttpServer(handle);
http.keepAliveTimeout = settings.keepAliveTimeoutMs;
http.listen(settings.httpPort, '127.0.0.1');

process.on('SIGTERM', () => process.exit(0));
