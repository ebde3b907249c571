/**
 * The admin API: a small HTTP/1.1 server, on loopback unless the config says
 * otherwise, where every request must carry the bearer token.
 *
 *   GET  /status   JSON: each process's config generation, last reload, routes' counters, upstream health, certificates
 *   GET  /metrics  Prometheus text format
 *   GET  /config   the config being served (after ${ENV} substitution, defaults filled in), secrets redacted
 *   POST /reload   reload the config in every process; 200 with the generation, or 422 with every issue
 *   POST /targets/drain   {"target": URL}: every upstream target with that URL gets no new requests (those in
 *                         flight finish), in every process and across reloads; 200 with where it is, 422 when
 *                         the config has no such target (with the list of those it has), 400 for a bad body
 *   POST /targets/enable  the same body: puts it back
 *   POST /cache/purge     {"host", "path"} (both optional): drops stored responses (all, a host's, or a host's
 *                         under a path prefix) in every process; 200 with how many, 400 for a bad body
 *   GET  /healthz  liveness for Docker and Kubernetes probes, the one endpoint without a token: 200 "ok" while
 *                  a process serves, 503 while none does (it tells nothing an attacker could use)
 *
 * Not on the request path: node:http is fine here.
 */
import http from 'node:http';
import type { Logger } from 'pino';
import type { ConfigIssue } from '../config/load.js';
import { DRAIN_BODY_EXAMPLE, MAX_DRAIN_BODY_BYTES, parseDrainRequest, type ProcessDrain } from './drain.js';
import { MAX_PURGE_BODY_BYTES, parsePurgeRequest, type ProcessPurge, type PurgeRequest } from './cache-purge.js';
import { renderMetrics } from './metrics.js';
import type { Snapshot } from './snapshot.js';
import { isAuthorized } from './token.js';
import { throttledWarn } from '../log/throttled-warn.js';

/** One process's answer to a reload. */
export type ProcessReload = { readonly pid: number } & ({ readonly ok: true; readonly generation: number } | { readonly ok: false; readonly issues: readonly ConfigIssue[] });

/** Where the admin API gets its answers: this process, or the workers of a primary. */
export interface AdminBackend {
  snapshots(): Promise<Snapshot[]>;
  reload(): Promise<ProcessReload[]>;
  /** Drains every upstream target with this URL (normalised), or puts it back, in every process; each process's answer. */
  setTargetDrained(url: string, drained: boolean): Promise<ProcessDrain[]>;
  /** Drops stored responses from the response cache in every process; each process's answer. */
  purgeCache(r: PurgeRequest): Promise<ProcessPurge[]>;
  /** The config being served, secrets redacted (src/admin/effective-config.ts); undefined before any is. */
  effectiveConfig(): Promise<unknown>;
  /** SHA-256 of the current token (re-read on reload). */
  tokenDigest(): Buffer | undefined;
  /** How many processes serve requests now (this one, or the primary's ready workers). */
  serving(): number;
  /** The counters of workers that exited, as last seen (a primary's); undefined when none did. */
  retiredCounters?(): Snapshot | undefined;
}

const ROUTES: Record<string, string> = { '/status': 'GET', '/metrics': 'GET', '/config': 'GET', '/reload': 'POST', '/targets/drain': 'POST', '/targets/enable': 'POST', '/cache/purge': 'POST' };

/** The endpoints that read a request body. */
const BODY_PATHS: ReadonlySet<string> = new Set(['/targets/drain', '/targets/enable', '/cache/purge']);

/** A request body of up to `maxBytes` (a longer one is read to its end and dropped), or 'aborted' when the client left first. */
function readBody(req: http.IncomingMessage, maxBytes: number): Promise<{ text: string } | 'too-large' | 'aborted'> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= maxBytes) chunks.push(c);
    });
    req.on('end', () => resolve(size <= maxBytes ? { text: Buffer.concat(chunks).toString('utf8') } : 'too-large'));
    // After 'end' this settles nothing; before it, the client went away mid-body.
    req.on('close', () => resolve('aborted'));
    req.on('error', () => resolve('aborted'));
  });
}

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
  /** Requests refused for their token: a warn line for the first, then their count at most once a minute. */
  readonly #noteRefused: (facts: object) => void;

  constructor(backend: AdminBackend, log: Logger, version: string) {
    this.#backend = backend;
    this.#log = log;
    this.#noteRefused = throttledWarn(log, 'admin request refused: missing or wrong token', 'more admin requests refused in the last minute: missing or wrong token', 'count');
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
    const path = (req.url ?? '/').split('?')[0] as string;
    // Only a drain, an enable or a purge reads its body, and only once the token is checked; other bodies are dropped.
    const takesBody = req.method === 'POST' && BODY_PATHS.has(path);
    if (!takesBody) req.resume();
    if (req.url === '/healthz' && (req.method === 'GET' || req.method === 'HEAD')) return this.#health(res);
    if (!isAuthorized(req.headers.authorization, this.#backend.tokenDigest())) {
      req.resume();
      this.#noteRefused({ remote: req.socket.remoteAddress, path: req.url });
      return send(res, 401, { error: 'missing or wrong token: send "Authorization: Bearer <token>" with the token from admin.tokenFile' }, { 'www-authenticate': 'Bearer realm="portico-admin"' });
    }
    const method = ROUTES[path];
    if (method === undefined) return send(res, 404, { error: `no such admin endpoint: ${path}`, endpoints: Object.entries(ROUTES).map(([p, m]) => `${m} ${p}`) });
    if (req.method !== method) return send(res, 405, { error: `${path} takes ${method}, not ${req.method ?? ''}` }, { allow: method });
    if (path === '/reload') return this.#reload(res);
    if (path === '/cache/purge') return this.#purge(req, res);
    if (takesBody) return this.#drain(req, res, path === '/targets/drain');
    if (path === '/config') {
      const config = await this.#backend.effectiveConfig();
      return config === undefined ? noProcess(res) : send(res, 200, config);
    }
    const snapshots = await this.#backend.snapshots();
    if (snapshots.length === 0) return noProcess(res);
    if (path === '/metrics') return send(res, 200, renderMetrics(snapshots, this.#backend.retiredCounters?.()));
    send(res, 200, { version: this.#version, processes: snapshots });
  }

  #health(res: http.ServerResponse): void {
    const n = this.#backend.serving();
    const text = n > 0 ? 'ok\n' : 'starting: no process serves yet\n';
    res.writeHead(n > 0 ? 200 : 503, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', ...(n > 0 ? {} : { 'retry-after': '1' }) });
    res.end(text);
  }

  /** POST /targets/drain and /targets/enable. */
  async #drain(req: http.IncomingMessage, res: http.ServerResponse, drain: boolean): Promise<void> {
    const body = await readBody(req, MAX_DRAIN_BODY_BYTES);
    if (body === 'aborted') return;
    if (body === 'too-large') return send(res, 413, { error: `the request body is over ${MAX_DRAIN_BODY_BYTES} bytes; send JSON such as ${DRAIN_BODY_EXAMPLE}` });
    const parsed = parseDrainRequest(body.text);
    if (!parsed.ok) return send(res, 400, { error: parsed.error });
    const url = parsed.url;
    const results = await this.#backend.setTargetDrained(url, drain);
    if (results.length === 0) return noProcess(res);
    const where = results.find((r) => r.found);
    if (where === undefined) {
      const targets = [...new Set(results.flatMap((r) => r.known ?? []))].sort();
      return send(res, 422, {
        error: `no upstream target ${url} in the current config, so nothing was ${drain ? 'drained' : 'enabled'}; send one of "targets" (the config's target URLs), scheme, host and port as the config writes them`,
        target: url,
        targets,
      });
    }
    const changed = results.some((r) => r.changed > 0);
    this.#log.info(
      { upstream: url, remote: req.socket.remoteAddress, routes: where.routes, processes: results.length, changed },
      drain ? 'upstream target drained over the admin API' : 'upstream target enabled over the admin API',
    );
    send(res, 200, {
      target: url,
      drained: drain,
      changed,
      upstreams: where.upstreams,
      routes: where.routes,
      processes: results.map(({ known: _known, ...r }) => r),
    });
  }

  /** POST /cache/purge. */
  async #purge(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const body = await readBody(req, MAX_PURGE_BODY_BYTES);
    if (body === 'aborted') return;
    if (body === 'too-large') return send(res, 413, { error: `the request body is over ${MAX_PURGE_BODY_BYTES} bytes; send {"host", "path"}` });
    const parsed = parsePurgeRequest(body.text);
    if (!parsed.ok) return send(res, 400, { error: parsed.error });
    const request: PurgeRequest = { host: parsed.host, path: parsed.path };
    const results = await this.#backend.purgeCache(request);
    if (results.length === 0) return noProcess(res);
    const purged = results.reduce((n, r) => n + r.purged, 0);
    this.#log.info({ host: request.host, path: request.path, purged, remote: req.socket.remoteAddress }, 'response cache purged over the admin API');
    send(res, 200, { host: request.host ?? null, path: request.path ?? null, purged, processes: results });
  }

  async #reload(res: http.ServerResponse): Promise<void> {
    const results = await this.#backend.reload();
    if (results.length === 0) return noProcess(res);
    const ok = results.every((r) => r.ok);
    this.#log.info({ ok, processes: results.length }, 'config reload requested over the admin API');
    send(res, ok ? 200 : 422, { ok, processes: results });
  }
}
