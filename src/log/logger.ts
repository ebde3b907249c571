/**
 * The pino root logger. JSON lines by default; human-readable when writing to
 * a TTY (or when asked). The destination is asynchronous so that logging never
 * blocks the request path; it is flushed on shutdown.
 */
import pino, { type Logger } from 'pino';

export type { Logger };

/** Creates the root logger. */
export function createLogger(level: string, format: 'auto' | 'json' | 'pretty' = 'auto'): Logger {
  const pretty = format === 'pretty' || (format === 'auto' && process.stdout.isTTY === true);
  const options = {
    level,
    base: { pid: process.pid },
    redact: { paths: ['req.headers.authorization', 'req.headers.cookie', 'headers.authorization', 'headers.cookie'], censor: '[redacted]' },
  };
  if (pretty) {
    return pino({ ...options, transport: { target: 'pino-pretty', options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } } });
  }
  // Lines are written in batches of 4 KiB off the request path; sonic-boom's periodic flush writes
  // out a partial batch within 250 ms, so a quiet proxy's lines (startup, errors) are never held
  // back. (pino's logger.flush() would also fsync the output four times a second.)
  return pino(options, pino.destination({ dest: 1, sync: false, minLength: 4096, periodicFlush: 250 }));
}
