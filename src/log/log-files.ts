/**
 * Where the log lines go: standard output, or `log.file`; and the access lines to `log.accessFile`
 * when it is set (nginx's `error_log` and `access_log`, Traefik's `accessLog.filePath`). Files are
 * opened for appending (created 0640), so that logrotate can rename them and Portico, on SIGUSR1,
 * open the path again (`reopen()`): as nginx and Traefik do on USR1. Every process (each cluster worker
 * too) opens the files itself and writes whole lines with O_APPEND, so processes sharing a file never
 * split each other's lines; a reopen moves each BatchedDestination to the new descriptor between two
 * writes, so every line lands whole in the old file or the new one.
 */
import { close, openSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { BatchedDestination } from './batched-destination.js';

/** The log files of a config, as absolute paths; undefined: standard output (the access lines: with the others). */
export interface LogFilePaths {
  readonly file: string | undefined;
  readonly accessFile: string | undefined;
}

/** The config paths of the log files, for error messages. */
export type LogFileKey = 'file' | 'accessFile';

/** A log file that cannot be opened: `configPath` names the setting (`log.file`), the message the path and the OS reason. */
export interface LogFileIssue {
  readonly path: `log.${LogFileKey}`;
  readonly message: string;
}

/** `log.file` and `log.accessFile` resolved as other config paths are: absolute, or from the config file's directory. */
export function resolveLogFilePaths(log: { readonly file?: string | undefined; readonly accessFile?: string | undefined }, baseDir: string): LogFilePaths {
  const abs = (p: string | undefined): string | undefined => (p === undefined ? undefined : isAbsolute(p) ? p : resolve(baseDir, p));
  return { file: abs(log.file), accessFile: abs(log.accessFile) };
}

/** Opens `file` for appending, creating it (mode 0640, less the umask) if it is missing; throws the OS error. */
export function openLogFile(file: string): number {
  return openSync(file, 'a', 0o640);
}

/** "cannot open FILE for appending: ENOENT: no such file or directory, open 'FILE'". */
export function describeOpenFailure(file: string, err: unknown): string {
  return `cannot open ${JSON.stringify(file)} for appending: ${(err as Error).message}`;
}

/**
 * Checks that each log file can be opened for appending, by opening it (creating it, as nginx -t does)
 * and closing it again; returns an issue per file that cannot be. For `portico check` and config builds.
 */
export function checkLogFiles(paths: LogFilePaths): LogFileIssue[] {
  const issues: LogFileIssue[] = [];
  for (const key of ['file', 'accessFile'] as const) {
    const file = paths[key];
    if (file === undefined) continue;
    try {
      close(openLogFile(file), noop);
    } catch (err) {
      issues.push({ path: `log.${key}`, message: describeOpenFailure(file, err) });
    }
  }
  return issues;
}

/** Descriptors opened for a change of paths, applied with LogFiles.apply() or given back with LogFiles.discard(). */
export interface OpenedLogFiles {
  readonly paths: LogFilePaths;
  /** New descriptors by key; a path that did not change keeps its descriptor and has none here. */
  readonly fds: Partial<Record<LogFileKey, number>>;
}

/** Thrown by LogFiles.open(): the files that cannot be opened. */
export class LogFilesError extends Error {
  readonly code = 'PORTICO_LOG_FILE_FAILED';
  constructor(readonly issues: readonly LogFileIssue[]) {
    super(issues.map((i) => `${i.path}: ${i.message}`).join('\n'));
  }
}

function noop(): void {}

/** Closes a log file's descriptor; never standard output or error. */
function closeFd(fd: number): void {
  if (fd > 2) close(fd, noop);
}

/** The process's log outputs: the main destination (stdout or log.file) and the access file's, and their paths. */
export class LogFiles {
  /** The destination of every line but the access lines when accessFile is set; undefined when pino-pretty writes to stdout itself. */
  readonly main: BatchedDestination | undefined;
  readonly #shared: boolean;
  #access: BatchedDestination | undefined;
  /** Access destinations a reload left, writing their last lines before their file is closed. */
  readonly #closing = new Set<BatchedDestination>();
  #paths: LogFilePaths = { file: undefined, accessFile: undefined };
  /** Called when the access lines' destination changes (AccessLog.setStream). */
  onAccessChange: ((destination: BatchedDestination | undefined) => void) | undefined;

  /** `pretty`: pino-pretty writes the lines to stdout (log.file cannot be set then). `shared`: other processes write to the same outputs. */
  constructor(options: { readonly pretty: boolean; readonly shared: boolean }) {
    this.#shared = options.shared;
    this.main = options.pretty ? undefined : new BatchedDestination(1, { shared: options.shared });
    // The access file's lines still waiting at exit are written then (the main destination's by its logger).
    process.once('exit', () => {
      this.#access?.flushSync();
      for (const d of this.#closing) d.flushSync();
    });
  }

  /** The paths in use. */
  get paths(): LogFilePaths {
    return this.#paths;
  }

  /** The access lines' own destination (log.accessFile), or undefined: they go with the other lines. */
  get access(): BatchedDestination | undefined {
    return this.#access;
  }

  /**
   * Opens the files of `paths` that are not the ones in use; throws LogFilesError naming each that
   * cannot be opened (having closed those it opened). Nothing changes until apply().
   */
  open(paths: LogFilePaths): OpenedLogFiles {
    const fds: Partial<Record<LogFileKey, number>> = {};
    const issues: LogFileIssue[] = [];
    for (const key of ['file', 'accessFile'] as const) {
      const file = paths[key];
      if (file === undefined || file === this.#paths[key]) continue;
      try {
        fds[key] = openLogFile(file);
      } catch (err) {
        issues.push({ path: `log.${key}`, message: describeOpenFailure(file, err) });
      }
    }
    if (issues.length > 0) {
      this.discard({ paths, fds });
      throw new LogFilesError(issues);
    }
    return { paths, fds };
  }

  /** Gives back the descriptors of an open() that is not applied. */
  discard(opened: OpenedLogFiles): void {
    for (const fd of Object.values(opened.fds)) closeFd(fd);
  }

  /**
   * Switches to the files open() opened: lines from now on go to them, lines already taken end where
   * they were going. A main destination that pino-pretty replaces keeps writing to stdout (a restart applies log.file).
   */
  apply(opened: OpenedLogFiles): void {
    const { paths, fds } = opened;
    if (this.main !== undefined && paths.file !== this.#paths.file) this.main.setFd(fds.file ?? 1, closeFd);
    if (this.main === undefined && fds.file !== undefined) closeFd(fds.file);
    const fileApplied = this.main === undefined ? this.#paths.file : paths.file;
    if (paths.accessFile !== this.#paths.accessFile) {
      if (fds.accessFile === undefined) {
        // Access lines go with the others again: the old file's lines are written, then it is closed.
        const old = this.#access;
        this.#access = undefined;
        this.onAccessChange?.(undefined);
        if (old !== undefined) {
          this.#closing.add(old);
          old.flush(() => {
            this.#closing.delete(old);
            closeFd(old.fd);
          });
        }
      } else if (this.#access === undefined) {
        const access = new BatchedDestination(fds.accessFile, { shared: this.#shared });
        this.#access = access;
        this.onAccessChange?.(access);
      } else {
        this.#access.setFd(fds.accessFile, closeFd);
      }
    }
    this.#paths = { file: fileApplied, accessFile: paths.accessFile };
  }

  /**
   * Opens each log file's path again (after logrotate renamed the file, a new one is created) and moves
   * its destination there; a file that cannot be opened keeps the old descriptor. Returns those.
   */
  reopen(): LogFileIssue[] {
    const issues: LogFileIssue[] = [];
    const targets: [LogFileKey, BatchedDestination | undefined][] = [
      ['file', this.main],
      ['accessFile', this.#access],
    ];
    for (const [key, destination] of targets) {
      const file = this.#paths[key];
      if (file === undefined || destination === undefined) continue;
      try {
        destination.setFd(openLogFile(file), closeFd);
      } catch (err) {
        issues.push({ path: `log.${key}`, message: describeOpenFailure(file, err) });
      }
    }
    return issues;
  }
}
