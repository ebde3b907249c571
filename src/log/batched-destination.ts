/**
 * The logger's output: lines collected in memory and written to a file descriptor in batches, off the
 * request path. It replaces pino's own asynchronous destination (sonic-boom): an access line through
 * pino cost 6.7–7.3 µs of CPU with it and 3.0–3.2 µs with this (bench/optimisations.md §13), as
 * sonic-boom measures the UTF-8 length of its whole growing batch on every line, flattening it each time.
 *
 * - Lines are written once `batchChars` characters wait, or within `flushMs` of the first one: all that
 *   waits in one write, or, for an output shared with other processes (cluster workers on one stdout
 *   pipe), in writes of whole lines of at most 4096 bytes (PIPE_BUF): a pipe takes such a write in one
 *   piece, so the workers' lines never interleave mid-line, even when the pipe is full.
 * - Writes run on libuv's thread pool (`fs.write`), one at a time and in order; a short write continues
 *   from where it stopped, and EAGAIN (a non-blocking pipe that is full) is retried after a pause.
 * - Memory is bounded: while the reader does not keep up, lines beyond `maxPendingChars` are dropped
 *   and counted, and once output resumes a warning line says how many were lost.
 * - `flushSync()` writes whatever is left, synchronously; it runs on process exit.
 * - `setFd()` moves the output to another file descriptor (a log file reopened after logrotate renamed it,
 *   or a reload naming another file): a write in progress ends on the old one, every line after it goes to
 *   the new one, so each line lands whole in one file or the other, and the old descriptor is released
 *   only once nothing is being written to it.
 */
import { write, writeSync } from 'node:fs';

export interface BatchedDestinationOptions {
  /** Characters collected before writing starts (default 16 KiB). */
  readonly batchChars?: number;
  /** Other processes write to the same output: each write is at most 4096 bytes of whole lines. */
  readonly shared?: boolean;
  /** Most characters held while the output is slow; further lines are dropped (default 8 Mi). */
  readonly maxPendingChars?: number;
  /** A partial batch is written this long after its first line (default 250 ms). */
  readonly flushMs?: number;
}

const RETRY_MS = 20;
/** Most bytes in one write: PIPE_BUF on Linux, the size up to which a pipe write is atomic. */
const ATOMIC_BYTES = 4096;

export class BatchedDestination {
  #fd: number;
  /** The descriptor the write in progress goes to: a write started before setFd() ends where it began. */
  #writeFd: number;
  /** Descriptors replaced by setFd() while a write to them was in progress, released once it ends. */
  #retired: { readonly fd: number; readonly release: (fd: number) => void }[] = [];
  readonly #batchChars: number;
  readonly #maxWriteBytes: number;
  readonly #maxPendingChars: number;
  readonly #flushMs: number;
  /** Lines waiting, from index #head on. */
  #parts: string[] = [];
  #head = 0;
  #pendingChars = 0;
  /** The bytes of the write in progress (the part not yet written), or undefined. */
  #writing: Buffer | undefined;
  /** Whether `#writing` is with the thread pool now (false while it waits to retry after EAGAIN). */
  #submitted = false;
  #timer: NodeJS.Timeout | undefined;
  #dropped = 0;
  #failed = false;
  #waiters: (() => void)[] = [];
  readonly #onWritten = this.#written.bind(this);
  readonly #onTimer = this.#timerFired.bind(this);
  readonly #onRetry = (): void => {
    if (this.#writing !== undefined && !this.#submitted) this.#submit();
  };

  constructor(fd: number, options: BatchedDestinationOptions = {}) {
    this.#fd = fd;
    this.#writeFd = fd;
    this.#batchChars = options.batchChars ?? 16 * 1024;
    this.#maxWriteBytes = options.shared === true ? ATOMIC_BYTES : Number.POSITIVE_INFINITY;
    this.#maxPendingChars = options.maxPendingChars ?? 8 * 1024 * 1024;
    this.#flushMs = options.flushMs ?? 250;
  }

  /** The file descriptor lines go to. */
  get fd(): number {
    return this.#fd;
  }

  /**
   * Sends the lines from now on to `fd`; `release(old)` is called once the old descriptor is no longer
   * written to (at once when no write is in progress), to close it. An output that had failed is tried again.
   */
  setFd(fd: number, release?: (oldFd: number) => void): void {
    const old = this.#fd;
    this.#fd = fd;
    this.#failed = false;
    if (old === fd || release === undefined) return;
    if (this.#writing !== undefined && this.#writeFd === old) this.#retired.push({ fd: old, release });
    else release(old);
  }

  /** Lines dropped so far because the output did not keep up (or failed). */
  get dropped(): number {
    return this.#dropped;
  }

  /** Takes one line (pino passes each line whole, with its newline). */
  write(line: string): boolean {
    if (this.#failed || this.#pendingChars + line.length > this.#maxPendingChars) {
      this.#dropped++;
      return false;
    }
    this.#parts.push(line);
    this.#pendingChars += line.length;
    if (this.#writing === undefined) {
      if (this.#pendingChars >= this.#batchChars) this.#startWrite();
      else this.#timer ??= setTimeout(this.#onTimer, this.#flushMs).unref();
    }
    return true;
  }

  /** Calls back once every line taken so far has been written (or dropped, if the output failed). */
  flush(callback: () => void = noop): void {
    if (this.#writing === undefined && this.#head === this.#parts.length) {
      callback();
      return;
    }
    this.#waiters.push(callback);
    if (this.#writing === undefined) this.#startWrite();
  }

  /** Writes everything left, blocking; for process exit. A write already with the thread pool is left to finish. */
  flushSync(): void {
    this.#clearTimer();
    if (this.#failed) return;
    // A write waiting to retry after EAGAIN goes first; one with the thread pool will land by itself.
    const waiting = this.#submitted ? undefined : this.#writing;
    if (waiting !== undefined) {
      this.#writing = undefined;
      const ok = writeAllSync(this.#writeFd, waiting);
      this.#releaseRetired();
      if (!ok) return;
    }
    for (let data = this.#take(); data !== undefined; data = this.#take()) {
      if (!writeAllSync(this.#fd, Buffer.from(data))) return;
    }
  }

  /** The next write: every line waiting, or for a shared output whole lines up to ATOMIC_BYTES (a longer line alone). */
  #take(): string | undefined {
    if (this.#dropped > 0 && !this.#failed) {
      this.#parts.splice(this.#head, 0, droppedLine(this.#dropped));
      this.#pendingChars += this.#parts[this.#head]!.length;
      this.#dropped = 0;
    }
    const parts = this.#parts;
    const start = this.#head;
    if (start === parts.length) return undefined;
    let end = parts.length;
    let chars = this.#pendingChars;
    if (this.#maxWriteBytes !== Number.POSITIVE_INFINITY) {
      // Whole lines up to the limit, at least one.
      let bytes = Buffer.byteLength(parts[start]!);
      chars = parts[start]!.length;
      for (end = start + 1; end < parts.length; end++) {
        const b = Buffer.byteLength(parts[end]!);
        if (bytes + b > this.#maxWriteBytes) break;
        bytes += b;
        chars += parts[end]!.length;
      }
    }
    const data = end - start === 1 ? parts[start]! : parts.slice(start, end).join('');
    this.#pendingChars -= chars;
    if (end === parts.length) {
      this.#parts = [];
      this.#head = 0;
    } else if (end > 1024 && end * 2 > parts.length) {
      this.#parts = parts.slice(end);
      this.#head = 0;
    } else {
      this.#head = end;
    }
    return data;
  }

  #startWrite(): void {
    this.#clearTimer();
    const data = this.#take();
    if (data === undefined) return this.#settle();
    this.#writing = Buffer.from(data);
    this.#writeFd = this.#fd;
    this.#submit();
  }

  #submit(): void {
    const buf = this.#writing!;
    this.#submitted = true;
    write(this.#writeFd, buf, 0, buf.length, null, this.#onWritten);
  }

  #written(err: NodeJS.ErrnoException | null, bytes: number): void {
    this.#submitted = false;
    const buf = this.#writing;
    if (buf === undefined) return; // flushSync() wrote it at exit
    if (err !== null) {
      if (err.code === 'EAGAIN') {
        // A full non-blocking pipe: try again shortly (the timer keeps a process that waits for its log alive).
        setTimeout(this.#onRetry, RETRY_MS);
        return;
      }
      this.#writing = undefined;
      this.#releaseRetired();
      // The output that was replaced failed: the lines go on to the new one.
      if (this.#writeFd !== this.#fd) return this.#continue();
      // The output is gone (EPIPE, EBADF…): nothing more can be logged (until setFd()); keep the process serving.
      this.#failed = true;
      this.#dropped += this.#parts.length - this.#head;
      this.#parts = [];
      this.#head = 0;
      this.#pendingChars = 0;
      return this.#settle();
    }
    if (bytes < buf.length) {
      this.#writing = buf.subarray(bytes);
      return this.#submit();
    }
    this.#writing = undefined;
    if (this.#retired.length > 0) this.#releaseRetired();
    this.#continue();
  }

  /** After a write: the next one, a timer for a partial batch, or release of flush() callers. */
  #continue(): void {
    const waiting = this.#parts.length - this.#head;
    if (this.#pendingChars >= this.#batchChars || (this.#waiters.length > 0 && waiting > 0)) this.#startWrite();
    else if (waiting > 0) this.#timer ??= setTimeout(this.#onTimer, this.#flushMs).unref();
    else this.#settle();
  }

  #releaseRetired(): void {
    const retired = this.#retired;
    this.#retired = [];
    for (const r of retired) r.release(r.fd);
  }

  #timerFired(): void {
    this.#timer = undefined;
    if (this.#writing === undefined) this.#startWrite();
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
  }

  /** Nothing is being written and nothing waits: release flush() callers. */
  #settle(): void {
    if (this.#waiters.length === 0) return;
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const callback of waiters) callback();
  }
}

function noop(): void {}

/** Writes all of `buf` synchronously (retrying EAGAIN briefly); false when the output has failed. */
function writeAllSync(fd: number, buf: Buffer): boolean {
  for (let attempts = 0; buf.length > 0 && attempts < 1000; attempts++) {
    try {
      buf = buf.subarray(writeSync(fd, buf));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') return false;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5);
    }
  }
  return buf.length === 0;
}

/** A warning in pino's JSON shape (level 40), so log shippers see it like any other line. */
function droppedLine(count: number): string {
  return `{"level":40,"time":${Date.now()},"pid":${process.pid},"code":"PORTICO_LOG_DROPPED","dropped":${count},"msg":"the log output did not keep up: ${count} lines were dropped"}\n`;
}
