/**
 * The pino root logger. JSON lines by default; human-readable when writing to
 * a TTY (or when asked). The destination is asynchronous so that logging never
 * blocks the request path; it is flushed on shutdown.
 */
import pino, { type Logger } from 'pino';
import { BatchedDestination } from './batched-destination.js';

export type { Logger };

/**
 * Creates the root logger, writing JSON lines to `fd` (standard output by default). `shared`: other
 * processes (cluster workers) write to the same output, so lines go out in writes a pipe keeps whole.
 */
export function createLogger(level: string, format: 'auto' | 'json' | 'pretty' = 'auto', fd = 1, shared = false): Logger {
  const pretty = format === 'pretty' || (format === 'auto' && process.stdout.isTTY === true);
  const options = {
    level,
    base: { pid: process.pid },
    redact: { paths: ['req.headers.authorization', 'req.headers.cookie', 'headers.authorization', 'headers.cookie'], censor: '[redacted]' },
  };
  if (pretty) {
    return pino({ ...options, transport: { target: 'pino-pretty', options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } } });
  }
  // Lines are written in batches off the request path; a partial batch goes out within 250 ms, so a
  // quiet proxy's lines (startup, errors) are never held back, and whatever is left at exit is written.
  const destination = new BatchedDestination(fd, { shared });
  process.once('exit', () => destination.flushSync());
  return pino(options, destination);
}
