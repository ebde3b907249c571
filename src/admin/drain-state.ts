/**
 * `admin.stateFile`: the upstream targets drained over the admin API, kept on disk so that they stay drained
 * after a restart (HAProxy's server-state-file, the `state` file of nginx's upstream API). Read once at start,
 * before the first Plan serves (by the one process, or by the primary before it forks its workers); written
 * whole after every change of the drained set (a drain, an enable, a reload that drops a drained target from
 * the config), each write to a temporary file renamed over the old one, so a crash leaves the old set or the
 * new one. Writes are serialised and the latest set wins. Not on the request path.
 */
import { randomBytes } from 'node:crypto';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import type { Logger } from 'pino';

/** What the file holds: `{"drained": [URL, …]}`. */
interface DrainStateJson {
  readonly drained: readonly string[];
}

/** The drained target URLs in `file`: none when it does not exist yet; throws with the reason when it cannot be used. */
export async function readDrainState(file: string): Promise<readonly string[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return [];
    throw new Error(`cannot read it (${code ?? 'error'})`, { cause: err });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new Error('it is not JSON');
  }
  const drained = typeof parsed === 'object' && parsed !== null ? (parsed as { drained?: unknown }).drained : undefined;
  if (!Array.isArray(drained) || !drained.every((u) => typeof u === 'string')) throw new Error('it does not hold {"drained": [target URLs]}, as Portico writes it');
  return drained as string[];
}

/** Writes the drained set to `file`, one write at a time, the latest set last. */
export class DrainStateWriter {
  readonly #log: Logger;
  readonly #file: string;
  #next: readonly string[] | undefined;
  #writing = false;

  constructor(file: string, log: Logger) {
    this.#file = file;
    this.#log = log;
  }

  /** Writes `urls` (after the write in progress, if any; a newer set replaces one still waiting). */
  save(urls: Iterable<string>): void {
    this.#next = [...urls].sort();
    if (!this.#writing) void this.#drain();
  }

  async #drain(): Promise<void> {
    this.#writing = true;
    while (this.#next !== undefined) {
      const urls = this.#next;
      this.#next = undefined;
      const file = this.#file;
      const tmp = `${file}.${randomBytes(4).toString('hex')}.tmp`;
      const body: DrainStateJson = { drained: urls };
      try {
        await writeFile(tmp, `${JSON.stringify(body, null, 2)}\n`, { mode: 0o640 });
        await rename(tmp, file);
      } catch (err) {
        await rm(tmp, { force: true }).catch(() => {});
        this.#log.error({ stateFile: file, err: (err as Error).message, drained: urls }, 'admin.stateFile not written: these drains hold until the process stops, but not after a restart');
      }
    }
    this.#writing = false;
  }
}

/**
 * At start: hands the drained URLs `file` holds to `take` (nothing when it does not exist; a file that cannot be used
 * is logged and left for the next write to replace), and returns the writer for every later change.
 */
export async function openDrainState(file: string, log: Logger, take: (urls: readonly string[]) => void): Promise<DrainStateWriter> {
  try {
    const urls = await readDrainState(file);
    take(urls);
    if (urls.length > 0) log.info({ stateFile: file, drained: urls }, 'upstream targets drained before the restart stay drained');
  } catch (err) {
    log.error({ stateFile: file, reason: (err as Error).message }, 'admin.stateFile not read, starting with no target drained');
  }
  return new DrainStateWriter(file, log);
}
