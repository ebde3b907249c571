/**
 * Hot reload of certificate files. Watches the folders holding the pairs the
 * current Plan uses (and the folders their symlinks point into), so a plain
 * write, an atomic rename and a symlink swap (Kubernetes secret volumes'
 * `..data` link, certbot's `live/` links) are all seen. On a change, after a
 * debounce, the pair is read and validated off the request path; a valid pair
 * replaces the served one for new handshakes (open connections keep theirs).
 * A broken pair (unparsable, key not matching, expired, not yet valid, names
 * not covered) is refused with one log line naming the file and the reason,
 * and the old pair keeps serving. A pair that fails is re-read once after
 * `settleMs` before it is refused: the two files of a pair are rarely
 * replaced at the same instant, and a copy may be seen half-written. A folder
 * that does not exist yet (an ACME host's folder on a follower instance
 * started before the orderer wrote it, a mounted pair's folder deleted and
 * created again) is awaited through its nearest existing parent and watched
 * as soon as it appears. A slow poll backs up the file events.
 */
import { createHash } from 'node:crypto';
import { readFile, realpath, stat } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { watch, type FSWatcher } from 'chokidar';
import type { Logger } from 'pino';
import { certPath } from '../config/compile.js';
import type { Plan } from '../config/plan.js';
import type { Config } from '../config/schema.js';
import { buildCertPair, CHAIN_WARNING, type CertPair } from './cert-pair.js';
import { fileCertId, type CertStore } from './cert-store.js';
import { FolderArrivals } from './folder-arrivals.js';
import { isPermissionError, permissionHint } from '../config/permission-hint.js';

/** One watched pair. */
export interface CertTarget {
  readonly id: string;
  readonly certFile: string;
  readonly keyFile: string;
  /** Names the certificate must cover. */
  readonly names: readonly string[];
  /** "file": mounted by the operator (expiry warnings, missing files warned); "acme": written by the ACME orderer. */
  readonly kind: 'file' | 'acme';
}

/** What the watcher needs. */
export interface CertWatcherOptions {
  readonly certs: CertStore;
  readonly log: Logger;
  /** Called after a certificate id got a new pair. */
  readonly onChange?: (id: string) => void;
  /** Quiet time after the last file event before reading. @default 100 */
  readonly debounceMs?: number;
  /** Wait before re-reading a pair that failed its checks (half-way through a rotation, perhaps). @default 500 */
  readonly settleMs?: number;
  /** Safety-net re-read of every pair, and expiry check. @default 60_000 */
  readonly pollMs?: number;
}

const DAY_MS = 86_400_000;
/** In #dirIds: the folder did not exist when last looked at (it is awaited through its parent). */
const MISSING = 'missing';

/** The mounted pairs a Plan uses, with the names each must cover. */
export function fileCertTargets(plan: Plan, config: Config): CertTarget[] {
  const byId = new Map<string, { certFile: string; keyFile: string; names: string[] }>();
  for (const [name, host] of Object.entries(config.hosts)) {
    if (!('cert' in host.tls)) continue;
    const certFile = certPath(plan.certsDir, host.tls.cert);
    const keyFile = certPath(plan.certsDir, host.tls.key);
    const id = fileCertId(certFile, keyFile);
    const entry = byId.get(id) ?? { certFile, keyFile, names: [] };
    entry.names.push(name, ...host.aliases);
    byId.set(id, entry);
  }
  return [...byId].map(([id, t]) => ({ id, ...t, kind: 'file' as const }));
}

/** Whether a pair is near expiry: under 14 days or under a third of its lifetime left. */
export function isNearExpiry(pair: CertPair, now = Date.now()): boolean {
  const left = pair.notAfter.getTime() - now;
  const lifetime = pair.notAfter.getTime() - pair.notBefore.getTime();
  return left < 14 * DAY_MS || left < lifetime / 3;
}

/** Watches certificate files and swaps changed pairs into the store. */
export class CertWatcher {
  readonly #o: CertWatcherOptions;
  #targets = new Map<string, CertTarget>();
  #watcher: FSWatcher | undefined;
  /** The folders the pairs need watched; each is watched once a check has found it on disk, else awaited. */
  readonly #watched = new Set<string>();
  /**
   * Per needed folder, the identity (device:inode) it had when last checked, or MISSING: a folder replaced whole
   * gets a new one. A folder without an entry has not been looked at yet, and is not watched.
   */
  readonly #dirIds = new Map<string, string>();
  /** Needed folders that do not exist yet, each awaited through its nearest existing parent. */
  readonly #arrivals = new FolderArrivals((dir) => this.#onEvent(dir));
  #debounce: NodeJS.Timeout | undefined;
  #poll: NodeJS.Timeout | undefined;
  readonly #dirty = new Set<string>();
  /** Digest last refused per id, so a broken file is logged once, not at every event. */
  readonly #refused = new Map<string, string>();
  /** Digest that got its one settle re-read per id. */
  readonly #settling = new Map<string, string>();
  readonly #warnedAt = new Map<string, number>();
  /** Pairs whose incomplete chain was logged: once per pair loaded. */
  readonly #chainWarned = new WeakSet<CertPair>();
  #running: Promise<void> = Promise.resolve();
  #stopped = true;
  /** Per pair id, where its two files really are once symlinks are resolved (learnt at each check). */
  readonly #realFiles = new Map<string, readonly string[]>();
  /**
   * Per watched folder, the entry names that can be a pair's file or a link to one; events about
   * anything else there (a log file written next to the certificates, say) are ignored, so no pair is
   * re-read for them (chokidar itself still rescans the folder). Kubernetes' `..data`-style entries
   * are always relevant.
   */
  readonly #relevant = new Map<string, Set<string>>();
  /** Pair checks run so far (each reads and hashes a pair's files); for tests. */
  checks = 0;

  constructor(options: CertWatcherOptions) {
    this.#o = options;
  }

  /** Starts watching; stops when `signal` aborts. */
  start(signal: AbortSignal): void {
    this.#stopped = false;
    this.#watcher = watch([], { ignoreInitial: true, depth: 0, followSymlinks: false, persistent: true, ignored: (path: string) => this.#isIgnored(path) });
    this.#watcher.on('all', (_event: string, path: string) => this.#onEvent(path));
    this.#watcher.on('error', (err: unknown) => this.#o.log.warn({ err: (err as Error).message }, 'certificate watcher error'));
    const pollMs = this.#o.pollMs ?? 60_000;
    this.#poll = setInterval(() => {
      this.#queueCheck([...this.#targets.keys()]);
      for (const t of this.#targets.values()) {
        const pair = this.#o.certs.get(t.id);
        if (t.kind === 'file' && pair !== undefined) this.#warnExpiry(t, pair);
      }
    }, pollMs);
    this.#poll.unref();
    signal.addEventListener('abort', () => this.#stop(), { once: true });
    // The check of each pair looks at its folders and watches (or awaits) them.
    this.#dirIds.clear();
    this.#queueCheck([...this.#targets.keys()]);
  }

  #stop(): void {
    this.#stopped = true;
    clearTimeout(this.#debounce);
    clearInterval(this.#poll);
    void this.#watcher?.close();
    this.#watcher = undefined;
    this.#arrivals.close();
  }

  /** Replaces the set of watched pairs (called on each Plan). */
  setTargets(targets: readonly CertTarget[]): void {
    this.#targets = new Map(targets.map((t) => [t.id, t]));
    for (const id of this.#refused.keys()) if (!this.#targets.has(id)) this.#refused.delete(id);
    for (const id of this.#realFiles.keys()) if (!this.#targets.has(id)) this.#realFiles.delete(id);
    this.#indexRelevant();
    this.#watchDirs(this.#unwatchUnused());
    for (const t of targets) {
      const pair = this.#o.certs.get(t.id);
      if (t.kind === 'file' && pair !== undefined) {
        this.#warnExpiry(t, pair);
        this.#warnChain(t, pair);
      }
    }
    // Catch changes made between the Plan's load and now, and learn where the symlinks point.
    this.#queueCheck([...this.#targets.keys()]);
  }

  #isIgnored(path: string): boolean {
    if (this.#watched.has(path)) return false;
    const names = this.#relevant.get(dirname(path));
    if (names === undefined) return false;
    const name = basename(path);
    return !names.has(name) && !name.startsWith('..');
  }

  /** Rebuilds #relevant from the targets and the real locations of their files. */
  #indexRelevant(): void {
    this.#relevant.clear();
    for (const t of this.#targets.values()) {
      this.#addRelevant(t.certFile);
      this.#addRelevant(t.keyFile);
      for (const f of this.#realFiles.get(t.id) ?? []) this.#addRelevant(f);
    }
  }

  #addRelevant(file: string): void {
    const dir = dirname(file);
    const names = this.#relevant.get(dir) ?? new Set<string>();
    names.add(basename(file));
    this.#relevant.set(dir, names);
  }

  /**
   * Stops watching folders no pair needs any more (a removed pair's, or the folder a symlink pointed into
   * before it moved: each Kubernetes secret update leaves its old `..<timestamp>` folder behind), and
   * returns the folders that are needed.
   */
  #unwatchUnused(): Set<string> {
    const dirs = new Set<string>();
    for (const t of this.#targets.values()) {
      dirs.add(dirname(t.certFile));
      dirs.add(dirname(t.keyFile));
      for (const d of this.#linkDirs(t)) dirs.add(d);
    }
    for (const d of this.#watched) {
      if (!dirs.has(d)) {
        const id = this.#dirIds.get(d);
        if (id !== undefined && id !== MISSING) this.#watcher?.unwatch(d);
        this.#arrivals.drop(d);
        this.#watched.delete(d);
        this.#dirIds.delete(d);
      }
    }
    return dirs;
  }

  /** How many folders the pairs need watched (whether they exist yet or not); for tests. */
  get watchedFolders(): number {
    return this.#watched.size;
  }

  /** How many parent folders are watched for needed folders that do not exist yet; for tests (0 once they all exist). */
  get awaitedThroughParents(): number {
    return this.#arrivals.watchedParents;
  }

  /** Adds needed folders; the next check of their pair watches them (or awaits them if they are not there yet). */
  #watchDirs(dirs: Iterable<string>): void {
    for (const d of dirs) this.#watched.add(d);
  }

  #onEvent(path: string): void {
    // A pair's own file (or the real file behind its link) changed: that pair alone is read again, so one
    // renewed certificate in a folder of a thousand costs one check, not a thousand.
    const name = basename(path);
    let own = false;
    if (!name.startsWith('..') && this.#relevant.get(dirname(path))?.has(name) === true) {
      for (const t of this.#targets.values()) {
        if (path === t.certFile || path === t.keyFile || this.#realFiles.get(t.id)?.includes(path) === true) {
          this.#dirty.add(t.id);
          own = true;
        }
      }
    }
    // Anything else changing in a watched folder (a `..data` link swapped, the folder itself replaced) may
    // concern every pair in it: each is read again.
    if (!own) {
      for (const t of this.#targets.values()) {
        if (path.startsWith(dirname(t.certFile)) || path.startsWith(dirname(t.keyFile)) || this.#linkDirs(t).some((d) => path.startsWith(d))) this.#dirty.add(t.id);
      }
    }
    if (this.#dirty.size === 0) return;
    clearTimeout(this.#debounce);
    this.#debounce = setTimeout(() => {
      const ids = [...this.#dirty];
      this.#dirty.clear();
      this.#queueCheck(ids);
    }, this.#o.debounceMs ?? 100);
    this.#debounce.unref();
  }

  /** The folders a symlinked pair's files really live in, besides the folders named in the config. */
  #linkDirs(t: CertTarget): string[] {
    const own = [dirname(t.certFile), dirname(t.keyFile)];
    return [...new Set((this.#realFiles.get(t.id) ?? []).map((f) => dirname(f)))].filter((d) => !own.includes(d));
  }

  #queueCheck(ids: readonly string[]): void {
    this.#running = this.#running.then(async () => {
      for (const id of ids) {
        const t = this.#targets.get(id);
        if (t !== undefined && !this.#stopped) await this.#check(t);
      }
    }).catch((err: unknown) => this.#o.log.error({ err: (err as Error).message }, 'certificate check failed'));
  }

  /** Re-reads every watched pair now; resolves when done (for tests and SIGHUP). */
  checkNow(): Promise<void> {
    this.#queueCheck([...this.#targets.keys()]);
    return this.#running;
  }

  async #check(t: CertTarget): Promise<void> {
    this.checks++;
    // Where the files really live: a symlinked pair is also watched in its target folders.
    const real = await Promise.all([realpath(t.certFile).catch(() => t.certFile), realpath(t.keyFile).catch(() => t.keyFile)]);
    const known = this.#realFiles.get(t.id);
    if (known === undefined || known[0] !== real[0] || known[1] !== real[1]) {
      this.#realFiles.set(t.id, real);
      // Learnt for the first time (every pair, after a start or reload): added, not the whole index rebuilt,
      // which made a start with 1,000 pairs rebuild it 1,000 times. A pair whose files moved drops its old ones.
      if (known === undefined) for (const f of real) this.#addRelevant(f);
      else this.#indexRelevant();
      this.#watchDirs(this.#linkDirs(t));
      if (known !== undefined) this.#unwatchUnused();
    }

    if (await this.#armDirs([dirname(t.certFile), dirname(t.keyFile), ...this.#linkDirs(t)])) {
      // What lands between the swap (or the folder's creation) and the new watch being set up sends no event: look once more a little later.
      const timer = setTimeout(() => this.#queueCheck([t.id]), this.#o.settleMs ?? 500);
      timer.unref();
    }

    let certPem: Buffer;
    let keyPem: Buffer;
    try {
      [certPem, keyPem] = await Promise.all([readFile(t.certFile), readFile(t.keyFile)]);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (t.kind === 'acme' && code === 'ENOENT') return;
      const key = `unreadable:${code ?? ''}`;
      if (this.#refused.get(t.id) !== key && !this.#settleOnce(t, key)) {
        this.#refused.set(t.id, key);
        const file = (err as NodeJS.ErrnoException).path ?? t.certFile;
        const reason = `${file}: cannot be read (${code ?? 'error'}); ${isPermissionError(code) ? permissionHint() : 'check that it exists and that Portico may read it'}`;
        this.#o.certs.setProblem(t.id, { code: code ?? 'error', reason, certFile: t.certFile, keyFile: t.keyFile, at: new Date() });
        this.#o.log.error({ certFile: t.certFile, keyFile: t.keyFile, code, reason }, 'certificate files unreadable, keeping the current certificate');
      }
      return;
    }
    const digest = createHash('sha256').update(certPem).update(keyPem).digest('hex');
    const current = this.#o.certs.get(t.id);
    if (current?.digest === digest) {
      // Back to the files being served (a refused change undone): nothing is wrong any more.
      this.#refused.delete(t.id);
      this.#settling.delete(t.id);
      this.#o.certs.clearProblem(t.id);
      return;
    }
    if (this.#refused.get(t.id) === digest) return;
    let pair: CertPair;
    try {
      pair = buildCertPair(t.certFile, t.keyFile, certPem, keyPem, t.names);
    } catch (err) {
      const reason = (err as Error).message;
      if (this.#settleOnce(t, digest)) return;
      this.#refused.set(t.id, digest);
      const code = (err as { code?: string }).code ?? 'PORTICO_CERT_INVALID';
      this.#o.certs.setProblem(t.id, { code, reason, certFile: t.certFile, keyFile: t.keyFile, at: new Date() });
      this.#o.log.error({ certFile: t.certFile, keyFile: t.keyFile, reason, code }, 'certificate change refused, keeping the current certificate');
      return;
    }
    this.#refused.delete(t.id);
    this.#settling.delete(t.id);
    this.#o.certs.clearProblem(t.id);
    if (current !== undefined && t.kind === 'acme' && pair.notAfter < current.notAfter) return;
    this.#o.certs.set(t.id, pair);
    this.#o.log.info({ certFile: t.certFile, notAfter: pair.notAfter.toISOString(), issuer: pair.issuer, fingerprint256: pair.fingerprint256 }, 'certificate reloaded');
    if (t.kind === 'file') {
      this.#warnExpiry(t, pair, true);
      this.#warnChain(t, pair);
    }
    this.#o.onChange?.(t.id);
  }

  /**
   * Brings the watches of these folders in step with the disk. A folder looked at for the first time is watched. One
   * replaced whole since the last look (`mv app.new app`, a deploy tool swapping the folder) is watched again: the OS
   * watch follows the old folder, so later changes in the new one would only be seen by the slow poll. One that does
   * not exist (not yet created, or deleted) is awaited through its nearest existing parent, and watched once it
   * appears (the arrival runs a check of its pairs, which comes here). Says whether a folder was watched again or
   * appeared, so the caller looks once more a little later.
   */
  async #armDirs(dirs: readonly string[]): Promise<boolean> {
    let rearmed = false;
    for (const d of new Set(dirs)) {
      if (!this.#watched.has(d)) continue;
      const id = await stat(d).then(
        (st) => `${st.dev}:${st.ino}`,
        (err: NodeJS.ErrnoException) => (err.code === 'ENOENT' || err.code === 'ENOTDIR' ? MISSING : undefined),
      );
      // Unreadable for another reason (permissions): left as it is; reading the pair says what is wrong.
      if (id === undefined || this.#watcher === undefined || !this.#watched.has(d)) continue;
      const known = this.#dirIds.get(d);
      this.#dirIds.set(d, id);
      // Awaited again at each look (nothing if it is already): a wait that found a file in the way has ended.
      if (id === MISSING) this.#arrivals.wait(d);
      if (known === id) continue;
      if (known !== undefined && known !== MISSING) this.#watcher.unwatch(d);
      if (id === MISSING) continue;
      this.#arrivals.drop(d);
      this.#watcher.add(d);
      if (known !== undefined) rearmed = true;
    }
    return rearmed;
  }

  /**
   * Schedules one more look at a pair whose files failed, unless these very contents (or this read error) already had
   * it; says whether it did. A rotation is often caught half-way: the key written but not yet the certificate, a file
   * deleted before its new copy lands, a slow copy seen half-written. Only what still fails then is refused.
   */
  #settleOnce(t: CertTarget, what: string): boolean {
    if (this.#settling.get(t.id) === what) return false;
    this.#settling.set(t.id, what);
    const timer = setTimeout(() => this.#queueCheck([t.id]), this.#o.settleMs ?? 500);
    timer.unref();
    return true;
  }

  /** Logs, once per pair loaded, that its file lacks the intermediate clients need (cert-pair.ts incompleteChain). */
  #warnChain(t: CertTarget, pair: CertPair): void {
    const missing = pair.missingIssuer;
    if (missing === undefined || this.#chainWarned.has(pair)) return;
    this.#chainWarned.add(pair);
    this.#o.log.warn({ certFile: t.certFile, issuer: missing.issuer, issuerUrl: missing.url }, CHAIN_WARNING);
  }

  #warnExpiry(t: CertTarget, pair: CertPair, force = false): void {
    const now = Date.now();
    if (!isNearExpiry(pair, now)) return;
    const last = this.#warnedAt.get(t.id);
    if (!force && last !== undefined && now - last < DAY_MS) return;
    this.#warnedAt.set(t.id, now);
    this.#o.log.warn(
      { certFile: t.certFile, notAfter: pair.notAfter.toISOString(), daysLeft: Math.floor((pair.notAfter.getTime() - now) / DAY_MS), issuer: pair.issuer },
      'certificate expires soon, replace it',
    );
  }
}
