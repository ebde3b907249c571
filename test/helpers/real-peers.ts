/** Real peers for tests (curl, openssl s_client) and a raw HTTP/1.1-over-TLS client for requests Node's client refuses to send. */
import { execFile, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import tls from 'node:tls';
import type { TestContext } from 'node:test';
import { parseHead } from './raw-http1.js';

const found = new Map<string, boolean>();

/** Whether `tool` runs here (checked once). */
function hasTool(tool: string): boolean {
  let ok = found.get(tool);
  if (ok === undefined) {
    ok = spawnSync(tool, [tool === 'openssl' ? 'version' : tool === 'haproxy' ? '-v' : '--version'], { stdio: 'ignore' }).status === 0;
    found.set(tool, ok);
  }
  return ok;
}

/**
 * Whether a test may use `tool`: true when it is installed; otherwise the test
 * is skipped with a reason, or fails under CI (CI=true), where a missing peer
 * is a broken setup, not a reason to test less.
 */
export function requireTool(t: TestContext, tool: 'curl' | 'openssl' | 'haproxy'): boolean {
  if (hasTool(tool)) return true;
  if (process.env.CI === 'true') throw new Error(`${tool} is required under CI but was not found on PATH`);
  t.skip(`${tool} not found on PATH`);
  return false;
}

/** The result of running a peer tool. */
export interface ToolResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a tool with arguments and optional stdin; never rejects on a non-zero exit. */
export function runTool(tool: string, args: readonly string[], input?: string, timeoutMs = 10_000): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(tool, args, { timeout: timeoutMs, maxBuffer: 4 << 20 }, (err, stdout, stderr) => {
      if (err !== null && typeof (err as NodeJS.ErrnoException).code === 'string') return reject(err);
      resolve({ code: err === null ? 0 : ((err as { code?: number }).code ?? 1), stdout, stderr });
    });
    // A tool that exits without reading its input (openssl x509, curl) closes the pipe first: EPIPE, not a failure.
    child.stdin?.on('error', () => {});
    child.stdin?.end(input ?? '');
  });
}

/** Runs curl against the proxy for `host`, resolved to 127.0.0.1, trusting `caFile`; `-sS -i` so headers come back. */
export function curl(opts: { host: string; port: number; caFile: string; path?: string; args?: readonly string[] }): Promise<ToolResult> {
  return runTool('curl', [
    '-sS',
    '-i',
    '--max-time',
    '5',
    '--resolve',
    `${opts.host}:${opts.port}:127.0.0.1`,
    '--cacert',
    opts.caFile,
    ...(opts.args ?? []),
    `https://${opts.host}:${opts.port}${opts.path ?? '/'}`,
  ]);
}

/** A raw HTTP/1.1 response: status line, headers (lower-case names, repeated joined with ", "), body. */
export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
  raw: string;
}

/** Parses the first HTTP/1.1 response in `raw` (Content-Length bodies only; enough for error answers). */
export function parseRawResponse(raw: string): RawResponse {
  const end = raw.indexOf('\r\n\r\n');
  const { status, headers } = parseHead(end === -1 ? raw : raw.slice(0, end));
  let body = end === -1 ? '' : raw.slice(end + 4);
  const len = headers['content-length'];
  if (len !== undefined) body = body.slice(0, Number(len));
  return { status, headers, body, raw };
}

/**
 * Sends `text` as-is over a TLS connection (ALPN http/1.1) and returns what
 * came back once the server closes (or after `idleMs` of silence).
 */
export async function rawTlsExchange(opts: { port: number; sni: string; ca: string; text: string | Buffer; idleMs?: number }): Promise<RawResponse> {
  const socket = tls.connect({ host: '127.0.0.1', port: opts.port, servername: opts.sni, ca: opts.ca, ALPNProtocols: ['http/1.1'] });
  await once(socket, 'secureConnect');
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  socket.setTimeout(opts.idleMs ?? 1500, () => socket.end());
  socket.write(opts.text);
  await new Promise<void>((resolve) => {
    socket.on('close', () => resolve());
    socket.on('error', () => resolve());
  });
  return parseRawResponse(Buffer.concat(chunks).toString('latin1'));
}
