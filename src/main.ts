#!/usr/bin/env node
/**
 * The command line: argv → check, schema, demo or a running proxy. Nothing else.
 */
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { checkConfigFile } from './cli/check-config.js';
import { watchConfigFile } from './config/watch.js';
import { createLoggerTo, createPrettyLogger, isPrettyLog, type Logger } from './log/logger.js';
import { LogFiles, LogFilesError, resolveLogFilePaths } from './log/log-files.js';
import { Portico, formatIssues } from './server/portico.js';
import { hasCode } from './errors.js';
import cluster from 'node:cluster';
import { availableParallelism } from 'node:os';
import { loadConfigFileInChild } from './config/load-in-child.js';
import { runPrimary } from './cluster/primary.js';
import { requestTicketSecret } from './cluster/ticket-secret.js';
import { probeListeners } from './cluster/probe-listeners.js';
import { nodeHasReusePort } from './listen/listen-options.js';
import { parseDurationMs } from './config/units.js';
import { StartupSignals } from './cli/startup-signals.js';
import { WORKER_SIGNALS_READY } from './cluster/worker-messages.js';

const HELP = `Usage:
  portico [--config FILE]      run the proxy (default: $PORTICO_CONFIG, else config/portico.json;
                               with neither, the built-in demo starts)
  portico --demo               run the built-in demo (users.localhost, orders.localhost, localhost)
  portico check FILE           validate a config file and its certificates; exit 1 listing every problem
  portico schema [--markdown]  print the config's JSON Schema (or the Markdown config reference)
  portico hash-password        hash a password for "basicAuth" (typed, or the first line of stdin)
  portico --help | --version

Options:
  -c, --config FILE            config file (JSON)
      --log-level LEVEL        override log.level (trace, debug, info, warn, error, fatal, silent)
      --no-watch               do not reload the config when it changes (SIGHUP still reloads)
`;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

/** A start that cannot go on (invalid config, a listener that cannot open): the reason in the log and on stderr. */
async function reportStartFailure(log: Logger, err: Error & { code?: string }): Promise<void> {
  log.fatal({ code: err.code }, err.message);
  await new Promise<void>((r) => log.flush(() => r()));
  process.stderr.write(`${err.message}\n`);
}

/** SIGUSR1: each log file's path opened again (logrotate renamed the file); one that cannot be keeps its old file, with an error line. */
function reopenLogFiles(logFiles: LogFiles, log: Logger): void {
  const { file, accessFile } = logFiles.paths;
  if (file === undefined && accessFile === undefined) return;
  for (const issue of logFiles.reopen()) log.error({ path: issue.path, code: 'PORTICO_LOG_FILE_FAILED', err: issue.message }, 'log file not reopened, writing on to the file open before');
  log.info({ file, accessFile }, 'log files reopened');
}

const OPTIONS = {
  config: { type: 'string', short: 'c' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'v' },
  demo: { type: 'boolean' },
  'log-level': { type: 'string' },
  'no-watch': { type: 'boolean' },
  markdown: { type: 'boolean' },
} as const;

/** The levels --log-level and PORTICO_LOG_LEVEL take: log.level's in the schema. */
const LOG_LEVELS: readonly string[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

/** A command line that cannot run (an unknown option, an option without its value): the reason, on one line. */
function usageError(message: string): number {
  process.stderr.write(`portico: ${message}; see portico --help\n`);
  return 2;
}

/** What parseArgs refused, said as the operator typed it, not as a stack trace. */
function describeArgsError(err: Error & { code?: string }): string {
  const option = /'(-[^']*)'/.exec(err.message)?.[1];
  if (err.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && option !== undefined) return `unknown option ${option}`;
  if (err.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
    const long = /--[\w-]+/.exec(err.message)?.[0];
    if (long !== undefined && err.message.includes('argument missing')) return `option ${long} needs a value`;
    if (long !== undefined) return `option ${long} takes no value`;
  }
  return err.message;
}

function parseCommandLine(argv: string[]) {
  return parseArgs({ args: argv, allowPositionals: true, options: OPTIONS });
}

async function main(argv: string[]): Promise<number> {
  let parsed: ReturnType<typeof parseCommandLine>;
  try {
    parsed = parseCommandLine(argv);
  } catch (err) {
    const e = err as Error & { code?: string };
    if (e.code?.startsWith('ERR_PARSE_ARGS_') !== true) throw err;
    return usageError(describeArgsError(e));
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (values.version) {
    process.stdout.write(`portico ${version()}\n`);
    return 0;
  }
  const levelFlag = values['log-level'] ?? (process.env.PORTICO_LOG_LEVEL || undefined);
  if (levelFlag !== undefined && !LOG_LEVELS.includes(levelFlag)) {
    const from = values['log-level'] !== undefined ? '--log-level' : 'PORTICO_LOG_LEVEL';
    return usageError(`${from} must be one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(levelFlag)}`);
  }
  const command = positionals[0];
  if (command === 'check') {
    if (positionals.length > 2) return usageError(`check takes one file, got ${positionals.length - 1} (${positionals.slice(1).join(' ')})`);
    const file = positionals[1] ?? values.config;
    if (file === undefined) {
      process.stderr.write('portico check: which file? usage: portico check FILE\n');
      return 2;
    }
    const result = await checkConfigFile(file);
    if (result.issues.length > 0) {
      process.stderr.write(`${formatIssues(result.file, result.issues)}\n`);
      return 1;
    }
    for (const w of result.warnings) process.stderr.write(`warning: ${w}\n`);
    process.stdout.write(`${result.file}: ok (${result.hosts} host${result.hosts === 1 ? '' : 's'})\n`);
    return 0;
  }
  if (command === 'schema') {
    // The schema (and zod) are loaded only for this command; the server validates in a child process.
    if (values.markdown === true) process.stdout.write((await import('./cli/config-reference.js')).configReferenceMarkdown());
    else process.stdout.write((await import('./cli/json-schema.js')).configJsonSchema());
    return 0;
  }
  if (command === 'hash-password') return (await import('./cli/hash-password.js')).runHashPassword();
  if (command !== undefined) {
    process.stderr.write(`portico: unknown command ${JSON.stringify(command)}\n\n${HELP}`);
    return 2;
  }

  // Before any socket is bound (the primary's probe, the admin port, the demo's backends, the listeners):
  // a signal from now on is held until what handles it is ready, never Node's default action.
  const signals = new StartupSignals();
  signals.onHeld = (signal, repeat) => {
    const stopHeld = (signal === 'SIGTERM' && (repeat || signals.isHeld('SIGINT'))) || (signal === 'SIGINT' && (repeat || signals.isHeld('SIGTERM')));
    if (!stopHeld) return;
    process.stderr.write(`portico: second signal (${signal}) while starting: exiting now\n`);
    process.exit(1);
  };
  // A worker's primary holds the signals it forwards until the worker says it can take them.
  if (cluster.isWorker) process.send?.({ type: WORKER_SIGNALS_READY }, undefined, {}, () => {});
  let configFile = values.config ?? (process.env.PORTICO_CONFIG || undefined);
  let demo = values.demo === true;
  if (configFile === undefined && !demo) {
    if (existsSync('config/portico.json')) configFile = 'config/portico.json';
    else demo = true;
  }
  // Log settings come from the config when it is readable; problems are reported by start() below.
  const pre = configFile === undefined ? undefined : await loadConfigFileInChild(configFile);
  const logConfig = pre?.ok === true ? pre.config.log : undefined;
  const workersSetting = pre?.ok === true ? pre.config.workers : 1;
  const workers = workersSetting === 'auto' ? availableParallelism() : workersSetting;
  // With workers, every process writes to the same stdout (or appends to the same files): lines go out in writes a pipe keeps whole.
  const logPaths = pre?.ok === true ? resolveLogFilePaths(pre.config.log, pre.baseDir) : { file: undefined, accessFile: undefined };
  const logFiles = new LogFiles({ pretty: isPrettyLog(logConfig?.format ?? 'auto', logPaths.file !== undefined), shared: workers > 1 || cluster.isWorker });
  const runsWorkers = workers > 1 && cluster.isPrimary && !demo;
  try {
    // A primary writes no access line (its workers do): it leaves log.accessFile to them. Its checkConfigFile
    // below still opens the file once (as portico check does), so a path that cannot be used ends the start, named.
    logFiles.apply(logFiles.open(runsWorkers ? { file: logPaths.file, accessFile: undefined } : logPaths));
  } catch (err) {
    if (!(err instanceof LogFilesError)) throw err;
    // Every problem of the config at once, as for any invalid config (the log file's among them).
    const checked = await checkConfigFile(configFile as string, pre);
    process.stderr.write(`${formatIssues(checked.file, checked.issues.length > 0 ? checked.issues : err.issues)}\n`);
    return 1;
  }
  const level = levelFlag ?? logConfig?.level ?? 'info';
  const log = logFiles.main === undefined ? createPrettyLogger(level) : createLoggerTo(level, logFiles.main);
  // SIGUSR1 opens the log files again, as nginx and Traefik do (logrotate's postrotate), in every process;
  // one that came earlier in the start is acted on now (StartupSignals holds it, not Node's inspector).
  signals.handle('SIGUSR1', () => reopenLogFiles(logFiles, log));
  if (runsWorkers) {
    // Validate once here, so a bad config exits with its issues instead of a crash loop of workers.
    const checked = await checkConfigFile(configFile as string, pre);
    if (checked.issues.length > 0) {
      process.stderr.write(`${formatIssues(checked.file, checked.issues)}\n`);
      return 1;
    }
    if (pre?.ok === true) {
      try {
        await probeListeners(pre.config.listen, pre.config.streams);
      } catch (err) {
        await reportStartFailure(log, err as Error);
        return 1;
      }
    }
    let admin: { close(): Promise<void> } | undefined;
    let onReload: (() => void) | undefined;
    if (pre?.ok === true && pre.config.admin !== undefined) {
      const { clusterBackend } = await import('./admin/cluster-backend.js');
      const { startAdminServer } = await import('./admin/start-admin.js');
      try {
        const backend = await clusterBackend(resolve(configFile as string), pre.config.admin.tokenFile, log);
        onReload = () => void backend.refreshToken();
        admin = await startAdminServer(backend, pre.config.admin, log);
      } catch (err) {
        await reportStartFailure(log, err as Error);
        return 1;
      }
    }
    // admin.stateFile: the primary holds the drained set, so it reads the file before its workers ask for the set.
    if (pre?.ok === true && pre.config.admin?.stateFile !== undefined) {
      const { openDrainState } = await import('./admin/drain-state.js');
      const { onPrimaryDrainsChanged, primaryDrainedTargets } = await import('./cluster/drained-targets.js');
      const set = primaryDrainedTargets();
      const writer = await openDrainState(resolve(pre.baseDir, pre.config.admin.stateFile), log, (urls) => urls.forEach((u) => set.add(u)));
      onPrimaryDrainsChanged((drained) => writer.save(drained));
    }
    const shutdownTimeoutMs = pre?.ok === true ? parseDurationMs(pre.config.limits.shutdownTimeout) : 10_000;
    const code = await runPrimary(workers, log, { reusePort: nodeHasReusePort(), onReload, shutdownTimeoutMs, logFiles, signals });
    await admin?.close();
    // The primary's last line, as a single process ends with 'stopped': `docker logs` shows that the stop
    // completed and how (1: a worker was killed at the deadline, or none could start), not just the workers'.
    if (code === 0) log.info({ exitCode: code }, 'stopped');
    else log.error({ exitCode: code }, 'stopped');
    await new Promise<void>((r) => log.flush(() => r()));
    return code;
  }
  let stopDemo: (() => Promise<void>) | undefined;
  let printDemo: (() => void) | undefined;
  if (demo) {
    log.info({}, 'no config given and no config/portico.json: starting the built-in demo');
    // The demo (and its X.509 stack) is loaded only when it runs.
    const { prepareDemo, demoInstructions } = await import('./demo/demo-setup.js');
    const { startDemoBackends } = await import('./demo/demo-backends.js');
    const prepared = await prepareDemo();
    printDemo = () => process.stdout.write(demoInstructions(prepared.caFile));
    configFile = prepared.configFile;
    stopDemo = await startDemoBackends();
  }
  // A worker derives its session ticket keys from the primary's secret, as every other worker does.
  let ticketSecret: Buffer | undefined;
  if (cluster.isWorker) {
    ticketSecret = await requestTicketSecret();
    if (ticketSecret === undefined) log.warn({ code: 'PORTICO_TICKET_SECRET_MISSING' }, 'the primary did not send the session ticket secret within 5 s; this worker uses keys of its own, so sessions it issues resume only on it');
  }
  // A worker binds its own listeners with SO_REUSEPORT when its primary says this Node can (listen-options.ts).
  const reusePort = cluster.isWorker && process.env.PORTICO_REUSE_PORT === '1';
  const portico = new Portico(resolve(configFile as string), log, { ticketSecret, reusePort, serveAdmin: !cluster.isWorker, logFiles });
  try {
    await portico.start(pre); // used only when it is this file (not with --demo)
  } catch (err) {
    if (hasCode(err, 'PORTICO_CONFIG_INVALID') || hasCode(err, 'PORTICO_LISTEN_FAILED')) {
      await reportStartFailure(log, err as Error);
      await stopDemo?.();
      return 1;
    }
    throw err;
  }
  // Once serving, a worker answers its primary's admin API (it says so, and only then is it asked).
  if (cluster.isWorker) (await import('./admin/cluster-backend.js')).answerAdminRequests(portico);
  printDemo?.();

  const abort = new AbortController();
  if (values['no-watch'] !== true) watchConfigFile(portico.configFile, () => void portico.reload(), abort.signal);
  // A SIGHUP held during the start reloads now: the file may have changed after the start read it.
  signals.handle('SIGHUP', () => void portico.reload());
  await new Promise<void>((resolveStop) => {
    let stopping = false;
    const stop = (signal: string): void => {
      if (stopping) {
        log.warn({ signal }, 'second signal: exiting now');
        log.flush();
        process.exit(1);
      }
      stopping = true;
      log.info({ signal }, 'shutting down: no new connections, finishing in-flight requests');
      abort.abort();
      void portico.stop().then(async () => {
        await stopDemo?.();
        log.info({}, 'stopped');
        resolveStop();
      });
    };
    // A SIGTERM held during the start stops the proxy now, as gracefully as one sent later.
    signals.handle('SIGTERM', stop);
    signals.handle('SIGINT', stop);
  });
  await new Promise<void>((r) => log.flush(() => r()));
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    // Timers of closed keep-alive pools and watchers must not hold a stopped proxy: exit once stdout drains.
    process.stdout.write('', () => process.exit(code));
  },
  (err: unknown) => {
    process.stderr.write(`portico: ${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = 1;
  },
);
