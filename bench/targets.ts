/**
 * The servers under test: the backend itself ("direct"), nginx, HAProxy,
 * Caddy, node-http-proxy and Portico, each configured here as a
 * TLS-terminating virtual-host proxy for bench.localhost with upstream
 * keep-alive, one worker, pinned to PROXY_CPU, access logs off; and two
 * reference rows: Node's own servers answering by themselves (forwarding
 * nothing), and the least a Node proxy built from Portico's parts does to
 * forward (bench/floor-proxy.ts).
 */
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  LOAD_CPU, PROXY_CPU, assertPortFree, hasExited, startPinned, stopProcess, waitForPort, type Started,
} from './procs.js';
import { BENCH_HOST, PORTS, subdir, type Workspace } from './workspace.js';

/** Identifiers of the rows in the results. */
export type TargetId = 'direct' | 'nginx' | 'haproxy' | 'caddy' | 'http-proxy' | 'node-alone' | 'floor' | 'portico' | 'portico-log' | 'portico-all' | 'portico-lts';

/** A started server under test. */
export interface RunningTarget {
  /** Root of the process tree whose CPU time and RSS are measured. */
  readonly cpuRoot: number;
  readonly httpsPort: number;
  /** Plain HTTP proxy port, or null when the server cannot proxy plain HTTP. */
  readonly httpPort: number | null;
  /** Whether the HTTPS port speaks HTTP/2. */
  readonly h2: boolean;
  /** The exact generated configuration, for the results file. */
  readonly configText: string;
  readonly notes: string[];
  /** Whether the server process is still running (a crash mid-run fails the row). */
  isAlive(): boolean;
  /** Where the server's output goes. */
  readonly logPath: string;
  /** Why S6 (a cached response) is n/a for this server, when it has no response cache; undefined when it caches /cached. */
  readonly noCache?: string;
  stop(): Promise<void>;
}

/** The two ports a server under test listens on (127.0.0.1): every server has its own, so that all can run side by side. */
export interface ProxyPorts {
  readonly https: number;
  readonly http: number;
}

/** One row of the benchmark. */
export interface TargetSpec {
  readonly id: TargetId;
  readonly label: string;
  start(ws: Workspace, ports: ProxyPorts): Promise<RunningTarget>;
}

const nginxTempPaths = (dir: string): string =>
  ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `  ${t}_temp_path ${dir}/tmp-${t};`).join('\n');

/**
 * Start the backend: nginx, one worker on LOAD_CPU, 100-byte body at / (and at /cached, for an hour's caching) and 1 MiB at /1m.
 * /upload (S7) reads the whole request body into memory and then answers the 100-byte body (by passing the request, body
 * and all, to its own /): nginx's `return` alone would answer before the body is read, and a proxy seeing that early
 * answer may close the client's connection (nginx did), which would measure that instead of the upload.
 */
export async function startBackend(ws: Workspace): Promise<{ proc: Started; configText: string }> {
  const dir = subdir(ws, 'backend');
  const conf = `daemon off;
master_process on;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 8192; }
http {
  access_log off;
${nginxTempPaths(dir)}
  sendfile on;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  ssl_protocols TLSv1.2 TLSv1.3;
  upstream self {
    server 127.0.0.1:${PORTS.backendHttp};
    keepalive 16;
  }
  server {
    listen 127.0.0.1:${PORTS.backendHttp};
    listen 127.0.0.1:${PORTS.backendHttps} ssl http2;
    server_name ${BENCH_HOST};
    ssl_certificate ${ws.certFile};
    ssl_certificate_key ${ws.keyFile};
    location = /1m { root ${ws.docRoot}; default_type application/octet-stream; }
    location = /cached { default_type text/plain; add_header Cache-Control "max-age=3600" always; return 200 "${ws.smallBody.trimEnd()}\\n"; }
    location = /upload {
      client_max_body_size 0;
      client_body_buffer_size 1m;
      proxy_pass http://self/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
    location / { default_type text/plain; return 200 "${ws.smallBody.trimEnd()}\\n"; }
  }
}
`;
  const confPath = join(dir, 'nginx.conf');
  writeFileSync(confPath, conf);
  await assertPortFree(PORTS.backendHttp);
  await assertPortFree(PORTS.backendHttps);
  const proc = startPinned('backend', 'nginx', ['-p', dir, '-c', confPath, '-e', join(dir, 'error.log')], {
    cpus: LOAD_CPU,
    logPath: join(dir, 'stdout.log'),
  });
  await waitForPort(PORTS.backendHttp, 5000, () => !hasExited(proc));
  await waitForPort(PORTS.backendHttps, 5000, () => !hasExited(proc));
  if (hasExited(proc)) throw new Error(`backend nginx exited; see ${join(dir, 'error.log')}`);
  return { proc, configText: conf };
}

async function startServer(
  name: string,
  cmd: string,
  args: readonly string[],
  dir: string,
  configText: string,
  ports: ProxyPorts,
  opts: { h2: boolean; http: boolean; env?: NodeJS.ProcessEnv; cpus?: string | null; notes?: string[]; noCache?: string },
): Promise<RunningTarget> {
  await assertPortFree(ports.https);
  await assertPortFree(ports.http);
  const proc = startPinned(name, cmd, args, {
    cpus: opts.cpus === undefined ? PROXY_CPU : opts.cpus,
    logPath: join(dir, 'stdout.log'),
    ...(opts.env ? { env: opts.env } : {}),
    cwd: dir,
  });
  try {
    await waitForPort(ports.https, 15_000, () => !hasExited(proc));
    if (opts.http) await waitForPort(ports.http, 5000, () => !hasExited(proc));
    if (hasExited(proc)) throw new Error('process exited after listening');
  } catch (err) {
    await stopProcess(proc);
    throw new Error(`${name} did not start (${(err as Error).message}); see ${proc.logPath}`);
  }
  return {
    cpuRoot: proc.pid,
    httpsPort: ports.https,
    httpPort: opts.http ? ports.http : null,
    h2: opts.h2,
    configText,
    notes: opts.notes ?? [],
    ...(opts.noCache === undefined ? {} : { noCache: opts.noCache }),
    isAlive: () => !hasExited(proc),
    logPath: proc.logPath,
    stop: () => stopProcess(proc),
  };
}

const upstream = `127.0.0.1:${PORTS.backendHttp}`;

const nginxTarget: TargetSpec = {
  id: 'nginx',
  label: 'nginx',
  async start(ws, ports) {
    const dir = subdir(ws, 'nginx');
    const conf = `daemon off;
master_process on;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 8192; }
http {
  access_log off;
${nginxTempPaths(dir)}
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  ssl_protocols TLSv1.2 TLSv1.3;
  upstream backend {
    server ${upstream};
    keepalive 64;
    keepalive_requests 1000000;
  }
  # S6's cache: one small response, so its zone is kept small (shared memory counts in the memory row).
  proxy_cache_path ${dir}/cache levels=1 keys_zone=bench:1m max_size=16m inactive=1h use_temp_path=off;
  server {
    listen 127.0.0.1:${ports.https} ssl http2;
    listen 127.0.0.1:${ports.http};
    server_name ${BENCH_HOST};
    ssl_certificate ${ws.certFile};
    ssl_certificate_key ${ws.keyFile};
    # S7: bodies of any size, streamed to the backend as they arrive, as Portico, HAProxy and Caddy do by default.
    client_max_body_size 0;
    proxy_request_buffering off;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_max_temp_file_size 0;
    }
    location = /cached {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_cache bench;
    }
  }
}
`;
    const confPath = join(dir, 'nginx.conf');
    writeFileSync(confPath, conf);
    return startServer('nginx', 'nginx', ['-p', dir, '-c', confPath, '-e', join(dir, 'error.log')], dir, conf, ports, {
      h2: true,
      http: true,
    });
  },
};

const haproxyTarget: TargetSpec = {
  id: 'haproxy',
  label: 'HAProxy',
  async start(ws, ports) {
    const dir = subdir(ws, 'haproxy');
    const conf = `global
  nbthread 1
  maxconn 9000
  ssl-default-bind-options ssl-min-ver TLSv1.2 prefer-client-ciphers
  tune.ssl.default-dh-param 2048

# S6's cache: one small response, so it is kept small (HAProxy allocates it whole at start, in the memory row's RSS).
cache bench
  total-max-size 1
  max-age 3600

defaults
  mode http
  option http-keep-alive
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s

frontend fe_https
  bind 127.0.0.1:${ports.https} ssl crt ${ws.pemFile} alpn h2,http/1.1
  bind 127.0.0.1:${ports.http}
  use_backend be if { req.hdr(host),field(1,:) -i ${BENCH_HOST} }
  default_backend be

backend be
  http-reuse always
  http-request set-var(txn.cached) bool(true) if { path /cached }
  http-request cache-use bench if { path /cached }
  http-response cache-store bench if { var(txn.cached) -m bool }
  server b1 ${upstream}
`;
    const confPath = join(dir, 'haproxy.cfg');
    writeFileSync(confPath, conf);
    // -db: stay in the foreground, one process (no master-worker).
    return startServer('haproxy', 'haproxy', ['-db', '-f', confPath], dir, conf, ports, { h2: true, http: true });
  },
};

const caddyTarget: TargetSpec = {
  id: 'caddy',
  label: 'Caddy',
  async start(ws, ports) {
    const dir = subdir(ws, 'caddy');
    const conf = `{
  admin off
  auto_https off
  storage file_system ${dir}/data
  http_port ${ports.http}
  https_port ${ports.https}
  servers {
    protocols h1 h2
  }
  log {
    level ERROR
  }
}

https://${BENCH_HOST}:${ports.https} {
  bind 127.0.0.1
  tls ${ws.certFile} ${ws.keyFile}
  reverse_proxy ${upstream} {
    transport http {
      keepalive 60s
      keepalive_idle_conns 64
      keepalive_idle_conns_per_host 64
    }
  }
}

http://${BENCH_HOST}:${ports.http} {
  bind 127.0.0.1
  reverse_proxy ${upstream} {
    transport http {
      keepalive 60s
      keepalive_idle_conns 64
      keepalive_idle_conns_per_host 64
    }
  }
}
`;
    const confPath = join(dir, 'Caddyfile');
    writeFileSync(confPath, conf);
    const env = { ...process.env, GOMAXPROCS: '1', HOME: dir, XDG_DATA_HOME: dir, XDG_CONFIG_HOME: dir };
    return startServer('caddy', 'caddy', ['run', '--config', confPath, '--adapter', 'caddyfile'], dir, conf, ports, {
      h2: true,
      http: true,
      env,
      noCache: 'no response cache in Caddy\'s standard build (cache-handler is a plugin)',
    });
  },
};

/** What every one of the bench's own Node servers is given: its ports, the certificate, the keep-alive timeout. */
function nodeServerSettings(ws: Workspace, ports: ProxyPorts): Record<string, unknown> {
  return { httpsPort: ports.https, httpPort: ports.http, certFile: ws.certFile, keyFile: ws.keyFile, keepAliveTimeoutMs: 60_000 };
}

/** Start one of the bench's own Node servers (dist/bench/<script>.js) with its settings as one JSON argument. */
function startNodeScript(
  ws: Workspace, ports: ProxyPorts, id: TargetId, script: string, settings: Record<string, unknown>, opts: { h2: boolean; notes: string[]; noCache?: string },
): Promise<RunningTarget> {
  const conf = JSON.stringify(settings, null, 2);
  const file = join(ws.repoRoot, 'dist', 'bench', `${script}.js`);
  return startServer(id, process.execPath, [file, conf], subdir(ws, id), `node ${script}.js '${conf}'`, ports, { http: true, ...opts });
}

const httpProxyTarget: TargetSpec = {
  id: 'http-proxy',
  label: 'node-http-proxy',
  start: (ws, ports) =>
    startNodeScript(ws, ports, 'http-proxy', 'http-proxy-server', {
      ...nodeServerSettings(ws, ports),
      upstream: `http://${upstream}`,
      maxFreeSockets: 64,
    }, { h2: false, notes: ['no HTTP/2 support (S2 n/a)'], noCache: 'no response cache' }),
};

const nodeAloneTarget: TargetSpec = {
  id: 'node-alone',
  label: 'Node alone (answers itself, no forwarding)',
  start: (ws, ports) =>
    startNodeScript(ws, ports, 'node-alone', 'node-alone-server', {
      ...nodeServerSettings(ws, ports),
      smallBody: ws.smallBody,
      largeFile: join(ws.docRoot, '1m'),
    }, {
      h2: true,
      notes: ['reference, not a proxy: node:http2 (HTTP/2) and node:http (HTTP/1.1) answering from memory, what a Node proxy costs before it forwards anything (in S6 too: what a Node cache hit could cost at best)'],
    }),
};

const floorTarget: TargetSpec = {
  id: 'floor',
  label: 'Node floor proxy (forwards, no features)',
  start: (ws, ports) =>
    startNodeScript(ws, ports, 'floor', 'floor-proxy', {
      ...nodeServerSettings(ws, ports),
      upstream,
    }, {
      h2: true,
      notes: ['reference, not a proxy to run: bench/floor-proxy.ts, Portico\'s parts (tls.Server handing h2 to node:http2\'s core stream API, llhttp consuming HTTP/1.1 client sockets and pooled upstream sockets) forwarding with no routing, header rules, checks or timeouts; Portico ÷ this row is what Portico\'s own work costs (S4 and S7 not measured: their cost is the data path both share)'],
      noCache: 'no response cache',
    }),
};

/** Options for the Portico rows. */
interface PorticoOptions {
  /** Value for the "workers" config key, or undefined to leave it out. */
  readonly workers?: number;
  /** CPU list to pin to, or null for unpinned. */
  readonly cpus: string | null;
  /**
   * The full feature set: log every request (an access line, formatted by pino and written in batches) and apply
   * header rules (a request header set, a response header set and one removed); off in the other rows, as for every server.
   */
  readonly accessLog?: boolean;
  /**
   * The node binary that runs dist/src/main.js (the same build), or undefined for the bench's own (process.execPath):
   * the "Portico on Node <major>" row runs Portico under the Docker image's Node (bench/lts-node.ts).
   */
  readonly node?: string;
}

/** The header rules of the full-feature row: what a site typically adds (nginx's proxy_set_header, add_header). */
const FULL_FEATURE_HEADER_RULES = {
  request: { set: { 'X-Request-Source': 'portico' } },
  response: { set: { 'Strict-Transport-Security': 'max-age=31536000' }, remove: ['Server'] },
};

/** Start Portico from dist/src/main.js with a generated config. */
export async function startPortico(ws: Workspace, ports: ProxyPorts, opts: PorticoOptions): Promise<RunningTarget> {
  // Each Portico row has its own folder (config, certsDir, log): Portico watches its certsDir.
  const dir = subdir(ws, opts.node !== undefined ? 'portico-lts' : opts.workers && opts.workers > 1 ? 'portico-all' : opts.accessLog === true ? 'portico-log' : 'portico');
  const main = join(ws.repoRoot, 'dist', 'src', 'main.js');
  if (!existsSync(main)) throw new Error(`${main} does not exist (Portico not built?)`);
  const config: Record<string, unknown> = {
    listen: {
      https: { port: ports.https, addresses: ['127.0.0.1'] },
      http: { port: ports.http, addresses: ['127.0.0.1'] },
    },
    certsDir: dir,
    hosts: {
      [BENCH_HOST]: {
        tls: { cert: ws.certFile, key: ws.keyFile },
        routes: [
          { path: '/', upstream: `http://${upstream}` },
          // S6: the backend says /cached may be kept for an hour; Portico's response cache keeps it.
          { path: '/cached', upstream: `http://${upstream}`, cache: true },
        ],
        // S5 proxies plain HTTP; by default Portico's plain listener only redirects to https.
        plainHttp: 'serve',
        ...(opts.accessLog === true ? { headers: FULL_FEATURE_HEADER_RULES } : {}),
      },
    },
    log: opts.accessLog === true ? { level: 'info', access: true } : { level: 'warn', access: false },
  };
  if (opts.workers !== undefined) config['workers'] = opts.workers;
  const conf = JSON.stringify(config, null, 2);
  const confPath = join(dir, 'portico.json');
  writeFileSync(confPath, conf);
  const t = await startServer(opts.node !== undefined ? 'portico-lts' : 'portico', opts.node ?? process.execPath, [main, '--config', confPath], dir, conf, ports, {
    h2: true,
    http: true,
    cpus: opts.cpus,
  });
  // Give a primary time to fork its workers before anything is measured.
  await sleep(500);
  return t;
}

const porticoTarget: TargetSpec = {
  id: 'portico',
  label: 'Portico',
  start: (ws, ports) => startPortico(ws, ports, { cpus: PROXY_CPU }),
};

/** The pinned single-worker rows, in table order (direct first, then the proxies, Node alone, Portico last). */
export const PROXY_TARGETS: readonly TargetSpec[] = [nginxTarget, haproxyTarget, caddyTarget, httpProxyTarget, nodeAloneTarget, floorTarget, porticoTarget];

/**
 * The rows of --quick: nginx, Node alone and Portico. Node alone is there because these shared machines
 * have spells in which every Node process runs up to twice as slowly while nginx does not
 * (optimisations.md §28, §38): Portico's ratio to nginx then moves with the machine, its ratio to Node
 * alone much less.
 */
export const QUICK_TARGETS: readonly TargetSpec[] = [nginxTarget, nodeAloneTarget, porticoTarget];
