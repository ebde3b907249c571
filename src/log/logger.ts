/**
 * The pino root logger. JSON lines by default; human-readable when writing to
 * a TTY (or when asked). The destination is asynchronous so that logging never
 * blocks the request path; it is flushed on shutdown.
 */
import pino, { type Logger, type LoggerOptions } from 'pino';
import { BatchedDestination } from './batched-destination.js';

export type { Logger };

/** Whether lines go out human-readable (pino-pretty): asked for, or "auto" with stdout a TTY and no log.file. */
export function isPrettyLog(format: 'auto' | 'json' | 'pretty', toFile = false): boolean {
  return format === 'pretty' || (format === 'auto' && !toFile && process.stdout.isTTY === true);
}

function loggerOptions(level: string): LoggerOptions {
  return {
    level,
    base: { pid: process.pid },
    redact: { paths: ['req.headers.authorization', 'req.headers.cookie', 'headers.authorization', 'headers.cookie'], censor: '[redacted]' },
  };
}

/** A logger writing human-readable lines to stdout, through pino-pretty in a worker thread. */
export function createPrettyLogger(level: string): Logger {
  return pino({ ...loggerOptions(level), transport: { target: 'pino-pretty', options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } } });
}

/** A logger writing JSON lines to `destination`, whose remaining lines are written at exit. */
export function createLoggerTo(level: string, destination: BatchedDestination): Logger {
  process.once('exit', () => destination.flushSync());
  return pino(loggerOptions(level), destination);
}

/**
 * Creates the root logger, writing JSON lines to `fd` (standard output by default). `shared`: other
 * processes (cluster workers) write to the same output, so lines go out in writes a pipe keeps whole.
 */
export function createLogger(level: string, format: 'auto' | 'json' | 'pretty' = 'auto', fd = 1, shared = false): Logger {
  if (isPrettyLog(format)) return createPrettyLogger(level);
  // Lines are written in batches off the request path; a partial batch goes out within 250 ms, so a
  // quiet proxy's lines (startup, errors) are never held back, and whatever is left at exit is written.
  return createLoggerTo(level, new BatchedDestination(fd, { shared }));
}
