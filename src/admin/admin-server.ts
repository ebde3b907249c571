/**
 * The admin API: a small HTTP/1.1 server, on loopback unless the config says
 * otherwise, where every request must carry the bearer token.
 *
 *   GET  /status   JSON: each process's config generation, last reload, routes' counters, upstream health, certificates
 *   GET  /metrics  Prometheus text format
 *   POST /reload   reload the config in every process; 200 with the generation, or 422 with every issue
 *   GET  /healthz  liveness for Docker and Kubernetes probes, the one endpoint without a token: 200 "ok" while
 *                  a process serves, 503 while none does (it tells nothing an attacker could use)
 *
 * Not on the request path: node:http is fine here.
 */
import http from 'node:http';
import type { Logger } from 'pino';
import type { ConfigIssue } from '../config/load.js';
import { renderMetrics } from './metrics.js';
import type { Snapshot } from './snapshot.js';
import { isAuthorized } from './token.js';

/** One process's answer to a reload. */
export type ProcessReload = { readonly pid: number } & ({ readonly ok: true; readonly generation: number } | { readonly ok: false; readonly issues: readonly ConfigIssue[] });

/** Where the admin API gets its answers: this process, or the workers of a primary. */
export interface AdminBackend {
  snapshots(): Promise<Snapshot[]>;
  reload(): Promise<ProcessReload[]>;
  /** SHA-256 of the current token (re-read on reload). */
  tokenDigest(): Buffer | undefined;
  /** How many processes serve requests now (this one, or the primary's ready workers). */
  serving(): number;
}

const ROUTES: Record<string, string> = { '/status': 'GET', '/metrics': 'GET', '/reload': 'POST' };

function send(res: http.ServerResponse, status: number, body: unknown, headers: http.OutgoingHttpHeaders = {}): void {
  const text = typeof body === 'string' ? body : `${JSON.stringify(body, null, 2)}\n`;
  res.writeHead(status, {
    'content-type': typeof body === 'string' ? 'text/plain; version=0.0.4; charset=utf-8' : 'application/json',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(text);
}

/** No worker serves yet (a primary whose workers are starting or restarting): nothing to report or reload. */
function noProcess(res: http.ServerResponse): void {
  send(res, 503, { error: 'no worker process is serving yet (starting or restarting); try again in a moment' }, { 'retry-after': '1' });
}

export class AdminServer {
  readonly #server: http.Server;
  readonly #backend: AdminBackend;
  readonly #log: Logger;
  readonly #version: string;

  constructor(backend: AdminBackend, log: Logger, version: string) {
    this.#backend = backend;
    this.#log = log;
    this.#version = version;
    this.#server = http.createServer({ headersTimeout: 5_000, requestTimeout: 30_000, maxHeaderSize: 8192 }, (req, res) => {
      this.#handle(req, res).catch((err: unknown) => {
        this.#log.error({ err: (err as Error).message, path: req.url }, 'admin request failed');
        if (!res.headersSent) send(res, 500, { error: 'internal error; see the log' });
        else res.destroy();
      });
    });
    this.#server.on('clientError', (_err, socket) => socket.destroy());
  }

  /** Listens; rejects with the reason when the port cannot be bound. */
  listen(port: number, address: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      this.#server.once('error', onError);
      this.#server.listen(port, address, () => {
        this.#server.off('error', onError);
        resolve();
      });
    });
  }

  get port(): number {
    const a = this.#server.address();
    return a !== null && typeof a === 'object' ? a.port : 0;
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.#server.closeAllConnections();
      this.#server.close(() => resolve());
    });
  }

  async #handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    req.resume();
    if (req.url === '/healthz' && (req.method === 'GET' || req.method === 'HEAD')) return this.#health(res);
    if (!isAuthorized(req.headers.authorization, this.#backend.tokenDigest())) {
      this.#log.warn({ remote: req.socket.remoteAddress, path: req.url }, 'admin request refused: missing or wrong token');
      return send(res, 401, { error: 'missing or wrong token: send "Authorization: Bearer <token>" with the token from admin.tokenFile' }, { 'www-authenticate': 'Bearer realm="portico-admin"' });
    }
    const path = (req.url ?? '/').split('?')[0] as string;
    const method = ROUTES[path];
    if (method === undefined) return send(res, 404, { error: `no such admin endpoint: ${path}`, endpoints: Object.entries(ROUTES).map(([p, m]) => `${m} ${p}`) });
    if (req.method !== method) return send(res, 405, { error: `${path} takes ${method}, not ${req.method ?? ''}` }, { allow: method });
    if (path === '/reload') return this.#reload(res);
    const snapshots = await this.#backend.snapshots();
    if (snapshots.length === 0) return noProcess(res);
    if (path === '/metrics') return send(res, 200, renderMetrics(snapshots));
    send(res, 200, { version: this.#version, processes: snapshots });
  }

  #health(res: http.ServerResponse): void {
    const n = this.#backend.serving();
    const text = n > 0 ? 'ok\n' : 'starting: no process serves yet\n';
    res.writeHead(n > 0 ? 200 : 503, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', ...(n > 0 ? {} : { 'retry-after': '1' }) });
    res.end(text);
  }

  async #reload(res: http.ServerResponse): Promise<void> {
    const results = await this.#backend.reload();
    if (results.length === 0) return noProcess(res);
    const ok = results.every((r) => r.ok);
    this.#log.info({ ok, processes: results.length }, 'config reload requested over the admin API');
    send(res, ok ? 200 : 422, { ok, processes: results });
  }
}
