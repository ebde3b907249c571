/**
 * A reference row, not a proxy anyone should run: the least an HTTP/1.1 reverse proxy on Node does, built from
 * the same parts as Portico and nothing else. A `tls.Server` (Portico's TLS settings), one llhttp parser per
 * client connection reading it in C++ (`consume`), kept upstream connections read the same way and pooled
 * (a free list, as Portico keeps them), the request passed on with a fixed head (method, path and Host, nothing
 * copied), and the response's status, length and body passed back as they arrive. No routing, no header rules,
 * no Host check, no timeouts, no limits, one request at a time per connection, errors answered by closing: what
 * forwarding costs in Node before any feature. Portico ÷ this row is what Portico's own work costs, and a target
 * below this row is below what a Node proxy can do. Plain HTTP on `httpPort` works the same way (net.Server).
 * HTTP/2 clients (ALPN h2) are handed to a node:http2 server, as Portico hands them, and answered through its
 * core stream API: `respond()` with the status, length and type, then the body.
 *
 * Usage: node dist/bench/floor-proxy.js '<settings JSON>'
 */
import net from 'node:net';
import tls from 'node:tls';
import http2 from 'node:http2';
import { readFileSync } from 'node:fs';
import {
  HTTPParser,
  METHODS,
  closeParser,
  kOnBody,
  kOnHeadersComplete,
  kOnMessageComplete,
  kOnExecute,
  type ConsumableSocket,
  type NodeHttpParser,
} from '../src/http1/llhttp.js';
import { SERVER_TLS_OPTIONS } from '../src/tls/tls-settings.js';

interface Settings {
  readonly httpsPort: number;
  readonly httpPort: number;
  readonly certFile: string;
  readonly keyFile: string;
  /** host:port of the backend. */
  readonly upstream: string;
}

const settings = JSON.parse(process.argv[2] ?? '{}') as Settings;
const [upHost, upPortText] = settings.upstream.split(':') as [string, string];
const upPort = Number(upPortText);
const hostLine = ` HTTP/1.1\r\nHost: ${settings.upstream}\r\n`;

/** Idle upstream connections. */
const free: Upstream[] = [];

/** Where an upstream response goes: an HTTP/1.1 client connection, or an HTTP/2 stream. */
interface Sink {
  head(status: number, length: string): void;
  body(chunk: Buffer): void;
  /** The response is whole; `up` goes back to the free list. */
  done(): void;
  /** The end of one upstream read. */
  flush(): void;
  close(): void;
}

/** A parser with the object its callbacks work for. */
type Owned<T> = NodeHttpParser & { owner: T };

/** A parser of `type` (HTTPParser.REQUEST or RESPONSE) for `owner`, with its four callbacks. */
function newParser<T>(type: number, owner: T, onHead: unknown, onBody: unknown, onDone: unknown, onExecuted: unknown): Owned<T> {
  const parser = new HTTPParser() as Owned<T>;
  parser.initialize(type, {}, 0, 0);
  parser.owner = owner;
  const slots = parser as unknown as Record<number, unknown>;
  slots[kOnHeadersComplete] = onHead;
  slots[kOnBody] = onBody;
  slots[kOnMessageComplete] = onDone;
  slots[kOnExecute] = onExecuted;
  return parser;
}

/** One kept upstream connection. */
class Upstream {
  readonly socket: net.Socket;
  readonly parser: Owned<Upstream>;
  /** Where the response in flight here goes. */
  client: Sink | null = null;
  closed = false;

  constructor() {
    this.socket = net.connect({ host: upHost, port: upPort, noDelay: true });
    (this.socket as net.Socket & { up: Upstream }).up = this;
    this.parser = newParser(HTTPParser.RESPONSE, this, upstreamHead, upstreamBody, upstreamDone, upstreamExecuted);
    this.socket.once('connect', onUpstreamConnect);
    this.socket.on('close', onUpstreamClose).on('error', onUpstreamClose);
  }
}

function onUpstreamConnect(this: net.Socket): void {
  const up = (this as net.Socket & { up: Upstream }).up;
  const handle = (this as unknown as ConsumableSocket)._handle;
  if (handle !== null) up.parser.consume(handle);
}

function onUpstreamClose(this: net.Socket): void {
  const up = (this as net.Socket & { up: Upstream }).up;
  if (up.closed) return;
  up.closed = true;
  const i = free.indexOf(up);
  if (i >= 0) free.splice(i, 1);
  up.client?.close();
  up.client = null;
  setImmediate(closeParser, up.parser);
}

function upstreamHead(this: Owned<Upstream>, _v: number, _m: number, headers: string[] | undefined, _method: number, _url: string, status: number): number {
  const c = this.owner.client;
  if (c === null) return 0;
  let length = '';
  const h = headers ?? [];
  for (let i = 0; i < h.length; i += 2) {
    const name = h[i] as string;
    if (name.length === 14 && name.toLowerCase() === 'content-length') length = h[i + 1] as string;
  }
  c.head(status, length);
  return 0;
}

function upstreamBody(this: Owned<Upstream>, chunk: Buffer): void {
  this.owner.client?.body(chunk);
}

function upstreamDone(this: Owned<Upstream>): void {
  const up = this.owner;
  const c = up.client;
  up.client = null;
  if (c === null) return;
  c.done();
  free.push(up);
}

function upstreamExecuted(this: Owned<Upstream>, ret: number | Error): void {
  if (typeof ret !== 'number') this.owner.socket.destroy();
  else this.owner.client?.flush();
}

/** One HTTP/1.1 client connection. */
class Client implements Sink {
  readonly socket: net.Socket;
  readonly parser: Owned<Client>;
  upstream: Upstream | null = null;
  corked = false;
  closed = false;
  /** The request in flight is a POST, its body sent chunked. */
  posting = false;

  constructor(socket: net.Socket) {
    this.socket = socket;
    socket.setNoDelay(true);
    this.parser = newParser(HTTPParser.REQUEST, this, clientHead, clientBody, clientDone, clientExecuted);
    const handle = (socket as unknown as ConsumableSocket)._handle;
    if (handle !== null) this.parser.consume(handle);
    (socket as net.Socket & { client: Client }).client = this;
    socket.on('close', onClientClose).on('error', onClientClose);
  }

  head(status: number, length: string): void {
    if (!this.corked) {
      this.socket.cork();
      this.corked = true;
    }
    this.socket.write(`HTTP/1.1 ${status} OK\r\nContent-Length: ${length}\r\nContent-Type: text/plain\r\n\r\n`, 'latin1');
  }

  body(chunk: Buffer): void {
    this.socket.write(chunk);
  }

  done(): void {
    this.flush();
    this.upstream = null;
  }

  flush(): void {
    if (!this.corked) return;
    this.corked = false;
    this.socket.uncork();
  }

  close(): void {
    this.socket.destroy();
  }
}

/** The end of a request: a POST's chunked body ends here. */
function clientDone(this: Owned<Client>): void {
  const up = this.owner.upstream;
  if (up !== null && this.owner.posting) up.socket.write('0\r\n\r\n', 'latin1');
}

/** An upstream connection for a request: a free one, or a new one. */
function takeUpstream(sink: Sink): Upstream {
  const up = free.pop() ?? new Upstream();
  up.client = sink;
  return up;
}

function clientHead(this: Owned<Client>, _v: number, _m: number, _h: unknown, method: number, url: string): number {
  const c = this.owner;
  const up = takeUpstream(c);
  c.upstream = up;
  c.posting = method === 3; // llhttp's POST
  up.socket.write(`${METHODS[method]} ${url}${hostLine}${c.posting ? 'Transfer-Encoding: chunked\r\n' : ''}\r\n`, 'latin1');
  return 0;
}

function clientBody(this: Owned<Client>, chunk: Buffer): void {
  const up = this.owner.upstream;
  if (up === null) return;
  up.socket.write(`${chunk.length.toString(16)}\r\n`, 'latin1');
  up.socket.write(chunk);
  up.socket.write('\r\n', 'latin1');
}

function clientExecuted(this: Owned<Client>, ret: number | Error): void {
  if (typeof ret !== 'number') this.owner.close();
}

function onClientClose(this: net.Socket): void {
  const c = (this as net.Socket & { client: Client }).client;
  if (c.closed) return;
  c.closed = true;
  // An exchange cut short leaves its upstream connection in an unknown state: not reused.
  c.upstream?.socket.destroy();
  setImmediate(closeParser, c.parser);
}

/** One HTTP/2 stream's exchange. */
class StreamSink implements Sink {
  readonly stream: http2.ServerHttp2Stream;
  readonly up: Upstream;

  constructor(stream: http2.ServerHttp2Stream, path: string) {
    this.stream = stream;
    this.up = takeUpstream(this);
    this.up.socket.write(`GET ${path}${hostLine}\r\n`, 'latin1');
    stream.on('close', onStreamClose);
    (stream as http2.ServerHttp2Stream & { sink: StreamSink }).sink = this;
  }

  head(status: number, length: string): void {
    this.stream.respond({ ':status': status, 'content-length': length, 'content-type': 'text/plain' });
  }

  body(chunk: Buffer): void {
    this.stream.write(chunk);
  }

  done(): void {
    this.stream.end();
  }

  flush(): void {}

  close(): void {
    this.stream.close(http2.constants.NGHTTP2_CANCEL);
  }
}

/** A stream that closed with its response in flight leaves its upstream connection in an unknown state: not reused. */
function onStreamClose(this: http2.ServerHttp2Stream): void {
  const sink = (this as http2.ServerHttp2Stream & { sink: StreamSink }).sink;
  if (sink.up.client === sink) sink.up.socket.destroy();
}

const h2server = http2.createSecureServer({ maxSessionMemory: 64 });
h2server.on('stream', (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => {
  new StreamSink(stream, headers[':path'] ?? '/');
});
h2server.on('sessionError', () => {});

tls
  .createServer({ ...SERVER_TLS_OPTIONS, cert: readFileSync(settings.certFile), key: readFileSync(settings.keyFile), ALPNProtocols: ['h2', 'http/1.1'] })
  .on('secureConnection', (socket: tls.TLSSocket) => {
    if (socket.alpnProtocol !== 'h2') return void new Client(socket);
    // As Portico does: the HTTP/2 server reads its settings from socket.server.
    (socket as tls.TLSSocket & { server: unknown }).server = h2server;
    h2server.emit('secureConnection', socket);
  })
  .listen(settings.httpsPort, '127.0.0.1');
net.createServer((socket) => new Client(socket)).listen(settings.httpPort, '127.0.0.1');
