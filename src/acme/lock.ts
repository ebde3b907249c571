/**
 * One orderer across processes: a lock file under `<certsDir>/acme` created
 * with O_EXCL, holding the owner's pid, host name and a random token. Only the
 * holder orders and renews; other processes load what it writes (certificate
 * watcher) and try again now and then, so a dead holder's lock is taken over.
 *
 * A lock is stale when its owner is on this host and its pid is gone (or is
 * our own pid but no lock of this process holds it: a restarted container
 * reusing pid 1), or
 * when its heartbeat (mtime) is older than `staleMs`, whichever host the
 * owner is on (another host sharing the volume, or a pid of this host now
 * reused by another process). Takeover is best effort: the holder re-reads the file
 * at each heartbeat and steps down if the token is no longer its own.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { dirname } from 'node:path';
import { mkdir, open, readFile, rename, rm, stat, utimes } from 'node:fs/promises';
import { isProcessAlive } from '../cluster/process-alive.js';

interface LockContent {
  readonly pid: number;
  readonly host: string;
  readonly token: string;
  readonly since: string;
}

/** Options of an OrdererLock. */
export interface OrdererLockOptions {
  /** A lock whose heartbeat is older than this is stale. @default 300_000 */
  readonly staleMs?: number;
  /** How often the holder refreshes the heartbeat and checks it still owns the lock. @default 60_000 */
  readonly heartbeatMs?: number;
  /** Called when the holder finds its lock taken over. */
  readonly onLost?: () => void;
}

/** Tokens of the locks this process holds: a lock with our pid but another token of ours is not stale. */
const liveTokens = new Set<string>();

/** A lock file that makes one process the ACME orderer. */
export class OrdererLock {
  readonly file: string;
  readonly #token = randomBytes(12).toString('hex');
  readonly #staleMs: number;
  readonly #heartbeatMs: number;
  readonly #onLost: (() => void) | undefined;
  #timer: NodeJS.Timeout | undefined;
  #held = false;
  /** The acquisition in progress, which release() waits for. */
  #acquiring: Promise<boolean> | undefined;
  /** Released for good: tryAcquire() no longer takes the lock. */
  #released = false;

  constructor(file: string, options: OrdererLockOptions = {}) {
    this.file = file;
    this.#staleMs = options.staleMs ?? 300_000;
    this.#heartbeatMs = options.heartbeatMs ?? 60_000;
    this.#onLost = options.onLost;
  }

  /** Whether this instance holds the lock. */
  get held(): boolean {
    return this.#held;
  }

  /** Takes the lock if it is free or stale; true when held afterwards. Never after release(). */
  async tryAcquire(): Promise<boolean> {
    if (this.#held) return true;
    if (this.#released) return false;
    this.#acquiring ??= this.#acquire().finally(() => {
      this.#acquiring = undefined;
    });
    return this.#acquiring;
  }

  async #acquire(): Promise<boolean> {
    await mkdir(dirname(this.file), { recursive: true, mode: 0o700 });
    for (let attempt = 0; attempt < 2; attempt++) {
      // Live before the file exists: another instance in this process reading the file while it is being
      // written (our pid, our token) must not take it for the leftover of a restarted process.
      liveTokens.add(this.#token);
      try {
        const fh = await open(this.file, 'wx', 0o600);
        const content: LockContent = { pid: process.pid, host: hostname(), token: this.#token, since: new Date().toISOString() };
        await fh.writeFile(JSON.stringify(content));
        await fh.close();
        this.#held = true;
        this.#timer = setInterval(() => void this.#heartbeat(), this.#heartbeatMs);
        this.#timer.unref();
        return true;
      } catch (err) {
        liveTokens.delete(this.#token);
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      if (!(await this.#isStale())) return false;
      // Move the stale lock aside rather than unlinking: of two processes racing, only one rename succeeds.
      try {
        await rename(this.file, `${this.file}.stale-${process.pid}-${this.#token}`);
        await rm(`${this.file}.stale-${process.pid}-${this.#token}`, { force: true });
      } catch {
        return false;
      }
    }
    return false;
  }

  async #read(): Promise<LockContent | undefined> {
    try {
      return JSON.parse(await readFile(this.file, 'utf8')) as LockContent;
    } catch {
      return undefined;
    }
  }

  async #isStale(): Promise<boolean> {
    let mtimeMs: number;
    try {
      mtimeMs = (await stat(this.file)).mtimeMs;
    } catch {
      return true;
    }
    const old = Date.now() - mtimeMs > this.#staleMs;
    const owner = await this.#read();
    if (owner === undefined || typeof owner.pid !== 'number') return old;
    if (owner.host === hostname()) {
      if (owner.pid === process.pid) return !liveTokens.has(owner.token);
      // A live pid is not proof enough: after a container restart the dead holder's pid may belong to
      // another process (pids are small and reused there). A holder refreshes the heartbeat, so an old one is stale.
      return old || !isProcessAlive(owner.pid);
    }
    return old;
  }

  async #heartbeat(): Promise<void> {
    const owner = await this.#read();
    if (owner?.token !== this.#token) {
      this.#stopTimer();
      this.#held = false;
      liveTokens.delete(this.#token);
      this.#onLost?.();
      return;
    }
    const now = new Date();
    await utimes(this.file, now, now).catch(() => {});
  }

  #stopTimer(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /**
   * Releases the lock for good (at shutdown, or when the certs directory changes). An acquisition still
   * in progress is waited for first, so that it cannot leave a lock file behind that nobody renews.
   */
  async release(): Promise<void> {
    this.#released = true;
    await this.#acquiring?.catch(() => false);
    this.#stopTimer();
    if (!this.#held) return;
    this.#held = false;
    liveTokens.delete(this.#token);
    const owner = await this.#read();
    if (owner?.token === this.#token) await rm(this.file, { force: true });
  }
}
