/** Small network helpers for tests: free ports, HTTP servers on 127.0.0.1, TLS/h2 clients with SNI and Host set apart. */
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { isProcessAlive } from '../../src/cluster/process-alive.js';

/** The kernel's ephemeral range [low, high]: where connect() picks its local ports, and listen(0) too. */
function ephemeralRange(): [number, number] {
  try {
    const [low, high] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    if (low !== undefined && high !== undefined && low > 0 && high >= low) return [low, high];
  } catch {
    // not Linux: the IANA dynamic range
  }
  return [49152, 65535];
}
const PICK_FROM = 20_000;
const [EPHEMERAL_LOW] = ephemeralRange();

function bindOnce(port: number): Promise<number | undefined> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(undefined));
    s.listen(port, '127.0.0.1', () => {
      const bound = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(bound));
    });
  });
}

/** Where test processes reserve the ports they pick: one file per port, holding the owner's pid. */
const RESERVED_DIR = join(tmpdir(), 'portico-test-ports');
const reservedHere: string[] = [];

/**
 * Claims `port` for this process among concurrently running test files (npm test runs four files at a time):
 * without it, two files could pick the same free port in the same moment and the second listen fails with
 * EADDRINUSE (seen once in CI). A reservation whose owner has exited is taken over; this process's own are
 * removed when it exits.
 */
function reserve(port: number): boolean {
  const file = join(RESERVED_DIR, String(port));
  try {
    mkdirSync(RESERVED_DIR, { recursive: true });
    writeFileSync(file, String(process.pid), { flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') return true; // no shared directory: the bind check alone
    // An empty file is one being written by its owner this very moment: taken.
    const owner = Number(readFileSync(file, 'utf8'));
    if (!Number.isInteger(owner) || owner <= 0 || owner === process.pid || isProcessAlive(owner)) return false;
    writeFileSync(file, String(process.pid));
  }
  if (reservedHere.length === 0) {
    process.once('exit', () => {
      for (const f of reservedHere) {
        try {
          unlinkSync(f);
        } catch {
          // already gone
        }
      }
    });
  }
  reservedHere.push(file);
  return true;
}

/**
 * A port that was free a moment ago on 127.0.0.1, for a server a test starts later (a child process, or a
 * port Pebble must know in advance). It is picked at random below the kernel's ephemeral range: a port taken
 * from that range (listen(0)) can be handed to some process's outgoing connection between the check and
 * the test's own listen, which then fails with EADDRINUSE (the likely cause of a CI run where a second
 * Portico's start failed, with two test files running). It is also reserved against the other test files
 * running at the same time (see reserve()).
 */
export async function freePort(): Promise<number> {
  if (EPHEMERAL_LOW - PICK_FROM >= 1000) {
    for (let attempt = 0; attempt < 50; attempt++) {
      const candidate = PICK_FROM + Math.floor(Math.random() * (EPHEMERAL_LOW - PICK_FROM));
      if (!reserve(candidate)) continue;
      const port = await bindOnce(candidate);
      if (port !== undefined) return port;
    }
  }
  const port = await bindOnce(0);
  if (port === undefined) throw new Error('no free port on 127.0.0.1');
  return port;
}

/** What an upstream saw. */
export interface SeenRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  rawHeaders: string[];
  body: Buffer;
  /** The connection closed before the upstream's response finished. */
  aborted: boolean;
}

/** An HTTP/1.1 upstream on 127.0.0.1 that records requests; `handler` may answer, else it echoes JSON. */
export async function startUpstream(
  handler?: (req: http.IncomingMessage, res: http.ServerResponse, seen: SeenRequest) => void,
): Promise<{ port: number; url: string; seen: SeenRequest[]; server: http.Server; close: () => Promise<void> }> {
  const seen: SeenRequest[] = [];
  const server = http.createServer((req, res) => {
    const entry: SeenRequest = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders, body: Buffer.alloc(0), aborted: false };
    seen.push(entry);
    // The response closing before it finished means the exchange was cut off (the proxy closed the
    // connection). The request's own 'close' can't tell: node:http emits it once the body is read,
    // before a late answer is sent.
    res.on('close', () => {
      entry.aborted = !res.writableFinished;
    });
    if (handler !== undefined) return handler(req, res, entry);
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      entry.body = Buffer.concat(chunks);
      const body = JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body: entry.body.toString() });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    seen,
    server,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** A response as a test sees it. */
export interface TestResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  text: string;
}

/** One HTTP/1.1 request over TLS with SNI and Host chosen separately, to 127.0.0.1 or `address`. */
export function h1Request(opts: {
  port: number;
  address?: '127.0.0.1' | '::1';
  sni: string;
  host?: string;
  path?: string;
  method?: string;
  headers?: http.OutgoingHttpHeaders;
  body?: string | Buffer;
  ca: string;
}): Promise<TestResponse> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: opts.address ?? '127.0.0.1',
        port: opts.port,
        path: opts.path ?? '/',
        method: opts.method ?? 'GET',
        headers: { host: opts.host ?? opts.sni, ...opts.headers },
        servername: opts.sni,
        ca: opts.ca,
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const body = Buffer.concat(chunks);
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body, text: body.toString() });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** An HTTP/2 session to the proxy with the given SNI. */
export async function h2Connect(port: number, sni: string, ca: string): Promise<http2.ClientHttp2Session> {
  const session = http2.connect(`https://${sni}:${port}`, {
    createConnection: () => tls.connect({ host: '127.0.0.1', port, servername: sni, ca, ALPNProtocols: ['h2'] }),
  });
  session.on('error', () => {});
  await once(session, 'connect');
  return session;
}

/** One HTTP/2 request on a session; `authority` defaults to the session's origin. */
export function h2Request(
  session: http2.ClientHttp2Session,
  opts: { authority?: string; path?: string; method?: string; headers?: http2.OutgoingHttpHeaders; body?: string | Buffer },
): Promise<TestResponse & { trailers: http2.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const headers: http2.OutgoingHttpHeaders = { ':path': opts.path ?? '/', ':method': opts.method ?? 'GET', ...opts.headers };
    if (opts.authority !== undefined) headers[':authority'] = opts.authority;
    const stream = session.request(headers);
    let status = 0;
    let resHeaders: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    stream.on('response', (h) => {
      status = Number(h[':status']);
      resHeaders = h;
    });
    stream.on('trailers', (t) => {
      trailers = t;
    });
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      const body = Buffer.concat(chunks);
      resolve({ status, headers: resHeaders as http.IncomingHttpHeaders, body, text: body.toString(), trailers });
    });
    stream.on('error', reject);
    stream.end(opts.body);
  });
}

/**
 * Waits until `port` on 127.0.0.1 accepts TCP connections: two, 50 ms apart. A Portico primary binds each
 * port for a moment before it forks its workers (src/cluster/probe-listeners.ts), and one connection
 * can land in that moment, before any worker listens; a second one 50 ms later finds the port closed
 * again unless a worker is listening. Fails at once if `proc` exits first, and kills it if the port stays
 * closed for `timeoutMs`; `stderr()` goes into either message.
 */
export async function waitForPort(port: number, proc: ChildProcess, what: string, timeoutMs: number, stderr: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`${what} exited (${proc.exitCode ?? proc.signalCode}) before listening on ${port}; stderr:\n${stderr()}`);
    if ((await canConnect(port)) && (await delay(50).then(() => canConnect(port)))) return;
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`${what} did not listen on ${port} within ${timeoutMs} ms; stderr:\n${stderr()}`);
    }
    await delay(20);
  }
}

/** Whether a TCP connection to `port` on `host` is accepted (false: refused or reset). */
export function canConnect(port: number, host: '127.0.0.1' | '::1' = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, host);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/**
 * A raw TCP upstream for framing tests: `answer(path, socket)` runs for each request head that
 * arrives (bodies are not read), and writes whatever bytes the test wants. Counts connections.
 */
export async function startRawUpstream(
  answer: (path: string, socket: net.Socket) => void,
): Promise<{ url: string; connections: () => number; closed: () => number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  let connections = 0;
  let closed = 0;
  const server = net.createServer((socket) => {
    connections++;
    sockets.add(socket);
    socket.on('error', () => {});
    socket.once('close', () => {
      closed++;
      sockets.delete(socket);
    });
    let buf = '';
    socket.on('data', (c: Buffer) => {
      buf += c.toString('latin1');
      let end: number;
      while ((end = buf.indexOf('\r\n\r\n')) >= 0) {
        const head = buf.slice(0, end);
        buf = buf.slice(end + 4);
        answer(head.split(' ')[1] ?? '/', socket);
      }
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    connections: () => connections,
    closed: () => closed,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}


/** A reader that takes at most `budget` bytes of `socket` every `everyMs`, pausing it between: bytes keep moving, slowly. */
export interface SlowReader {
  /** Bytes read so far. */
  readonly bytes: number;
  stop(): void;
}

/** Reads `socket` slowly (see SlowReader) until stop() or the end of the test. */
export function readSlowly(t: { after(fn: () => void): void }, socket: net.Socket, budget: number, everyMs = 100): SlowReader {
  let left = budget;
  const reader = {
    bytes: 0,
    stop: (): void => clearInterval(timer),
  };
  socket.on('data', (chunk: Buffer) => {
    reader.bytes += chunk.length;
    left -= chunk.length;
    if (left <= 0) socket.pause();
  });
  const timer = setInterval(() => {
    left = budget;
    socket.resume();
  }, everyMs);
  t.after(reader.stop);
  return reader;
}
