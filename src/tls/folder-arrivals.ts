/**
 * Waits for folders that do not exist yet. The certificate watcher needs the folders holding its pairs to
 * exist before it can watch them (an OS watch is set on an existing inode), but some appear later: an ACME
 * host's `<certsDir>/acme/<host>/` on a follower instance started before the orderer wrote its first
 * certificate, or a mounted pair's folder deleted and created again. Without this, such a folder was only
 * found by the once-a-minute poll, and its host served without its certificate meanwhile.
 *
 * For each awaited folder, the nearest parent that exists is watched (`fs.watch`, not recursive: one
 * inotify watch on Linux, shared by every folder awaited through that parent) for the next component of
 * the path. When that appears the wait moves down a level, and once the folder itself is there
 * `onArrival` is called and the parent's watch closed if no other wait uses it: nothing is left watched
 * for a folder that arrived or is no longer wanted.
 */
import { watch, type FSWatcher } from 'node:fs';
import { stat } from 'node:fs/promises';
import { basename, dirname, join, relative, sep } from 'node:path';

/** One awaited folder: the existing parent it is awaited through, undefined while that is being looked for. */
interface Wait {
  parent: string | undefined;
}

/** One watched parent: its OS watch and the folders awaited through it. */
interface WatchedParent {
  readonly watcher: FSWatcher;
  readonly waiting: Set<string>;
}

/** What is at a path: a folder, nothing (ENOENT, ENOTDIR), or something that cannot be waited through (a file, no permission). */
async function kindOf(path: string): Promise<'dir' | 'missing' | 'other'> {
  try {
    return (await stat(path)).isDirectory() ? 'dir' : 'other';
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'ENOENT' || code === 'ENOTDIR' ? 'missing' : 'other';
  }
}

/** Watches the nearest existing parents of folders that do not exist yet, and says when each appears. */
export class FolderArrivals {
  readonly #onArrival: (dir: string) => void;
  readonly #waits = new Map<string, Wait>();
  readonly #parents = new Map<string, WatchedParent>();
  #closed = false;

  /** `onArrival(dir)`: called once when an awaited folder exists (the wait is over then). */
  constructor(onArrival: (dir: string) => void) {
    this.#onArrival = onArrival;
  }

  /** Parent folders watched right now; for tests (0 once every awaited folder arrived or was dropped). */
  get watchedParents(): number {
    return this.#parents.size;
  }

  /** Starts waiting for `dir` (an absolute path); nothing if it is awaited already. */
  wait(dir: string): void {
    if (this.#closed || this.#waits.has(dir)) return;
    const w: Wait = { parent: undefined };
    this.#waits.set(dir, w);
    void this.#place(dir, w);
  }

  /** Stops waiting for `dir`. */
  drop(dir: string): void {
    const w = this.#waits.get(dir);
    if (w === undefined) return;
    this.#waits.delete(dir);
    this.#detach(dir, w);
  }

  /** Stops every wait. */
  close(): void {
    this.#closed = true;
    for (const p of this.#parents.values()) p.watcher.close();
    this.#parents.clear();
    this.#waits.clear();
  }

  /** Whether `w` is still the live wait for `dir` (not dropped, not replaced, not closed) after an await. */
  #isCurrent(dir: string, w: Wait): boolean {
    return !this.#closed && this.#waits.get(dir) === w;
  }

  /** Finds the nearest existing parent of `dir` and watches it; or reports `dir` arrived. */
  async #place(dir: string, w: Wait): Promise<void> {
    // Something there already (a file in the folder's place included): the watcher's check takes it from here.
    if ((await kindOf(dir)) !== 'missing') {
      if (this.#isCurrent(dir, w)) this.#arrived(dir);
      return;
    }
    let parent = dirname(dir);
    for (;;) {
      const kind = await kindOf(parent);
      if (!this.#isCurrent(dir, w)) return;
      if (kind === 'dir') break;
      if (kind === 'other' || dirname(parent) === parent) {
        // A file in the way, or a folder Portico may not read: nothing to watch. The wait ends, so that the
        // certificate watcher's next look (its poll) starts it again.
        this.#waits.delete(dir);
        return;
      }
      parent = dirname(parent);
    }
    if (!this.#attach(dir, w, parent)) return;
    // What was created between the look above and the watch being set up sent no event: look once more.
    if ((await kindOf(this.#nextStep(parent, dir))) !== 'missing' && this.#isCurrent(dir, w)) this.#placeAgain(dir, w);
  }

  /** The path one level below `parent` on the way to `dir`. */
  #nextStep(parent: string, dir: string): string {
    const first = relative(parent, dir).split(sep)[0] ?? '';
    return join(parent, first);
  }

  #attach(dir: string, w: Wait, parent: string): boolean {
    let p = this.#parents.get(parent);
    if (p === undefined) {
      let watcher: FSWatcher;
      try {
        watcher = watch(parent, { persistent: false }, (_event, name) => this.#onParentEvent(parent, name));
      } catch {
        // Gone since it was looked at, or out of watches (ENOSPC): look again from the start a little later.
        setTimeout(() => {
          if (this.#isCurrent(dir, w)) void this.#place(dir, w);
        }, 1000).unref();
        return false;
      }
      // The parent went away (or the OS watch failed): every wait through it looks again from the start.
      watcher.on('error', () => this.#recheck(parent, undefined));
      p = { watcher, waiting: new Set() };
      this.#parents.set(parent, p);
    }
    p.waiting.add(dir);
    w.parent = parent;
    return true;
  }

  #detach(dir: string, w: Wait): void {
    const key = w.parent;
    if (key === undefined) return;
    w.parent = undefined;
    const p = this.#parents.get(key);
    if (p === undefined) return;
    p.waiting.delete(dir);
    if (p.waiting.size === 0) {
      p.watcher.close();
      this.#parents.delete(key);
    }
  }

  /** An entry changed in a watched parent: the waits it is on the way to (all of them if the parent itself moved) look again. */
  #onParentEvent(parent: string, name: string | Buffer | null): void {
    const entry = name === null ? undefined : name.toString();
    this.#recheck(parent, entry === basename(parent) ? undefined : entry);
  }

  /** Moves the waits through `parent` whose next step is `entry` (every wait if undefined) on: down a level, to the folder, or up. */
  #recheck(parent: string, entry: string | undefined): void {
    const p = this.#parents.get(parent);
    if (p === undefined) return;
    for (const dir of [...p.waiting]) {
      const w = this.#waits.get(dir);
      if (w !== undefined && (entry === undefined || basename(this.#nextStep(parent, dir)) === entry)) this.#placeAgain(dir, w);
    }
  }

  #placeAgain(dir: string, w: Wait): void {
    this.#detach(dir, w);
    void this.#place(dir, w);
  }

  #arrived(dir: string): void {
    this.#waits.delete(dir);
    this.#onArrival(dir);
  }
}
