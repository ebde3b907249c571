/**
 * Whether the process may open as many files as its connection limit needs. Every client connection
 * holds a file descriptor (and a forwarded one usually a second, for its upstream connection). A process
 * out of descriptors has each new connection closed by libuv as it is accepted, with no event Portico
 * could log, so the limit is checked up front, as nginx does ("worker_connections exceed open file
 * resource limit"). Node raises its soft limit to the hard one as it starts, so the limit read here is
 * the one that counts.
 */
import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';

/** The "Max open files" soft limit in a /proc/PID/limits text; undefined when unlimited or absent. */
export function parseOpenFileLimit(limits: string): number | undefined {
  const m = /^Max open files\s+(\d+|unlimited)\s/m.exec(limits);
  if (m === null || m[1] === 'unlimited') return undefined;
  return Number(m[1]);
}

/** This process's open-file limit, or undefined where /proc has none (not Linux). */
export function readOpenFileLimit(): number | undefined {
  try {
    return parseOpenFileLimit(readFileSync('/proc/self/limits', 'utf8'));
  } catch {
    return undefined;
  }
}

/**
 * Logs a warning when `limits.maxConnections` is above the open-file limit: connections past the limit
 * would be closed at accept without a word, before Portico's own cap (and its log line) is reached.
 */
export function checkOpenFileLimit(log: Logger, maxConnections: number, openFiles = readOpenFileLimit()): boolean {
  if (openFiles === undefined || maxConnections <= openFiles) return true;
  log.warn(
    {
      openFiles,
      maxConnections,
      hint: 'raise the limit (ulimit -n, systemd LimitNOFILE=, docker run --ulimit nofile=) to at least twice limits.maxConnections, or lower limits.maxConnections; past the limit new connections are closed as they are accepted, and nothing is logged for them',
    },
    'limits.maxConnections exceeds the open-file limit',
  );
  return false;
}
