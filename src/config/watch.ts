/**
 * Watching the config file: any change (write, atomic rename, symlink swap)
 * triggers a reload after a short debounce. A failed reload keeps the old Plan.
 */
import { watch } from 'chokidar';

/** Calls `onChange` (debounced) whenever `file` changes, until `signal` aborts. */
export function watchConfigFile(file: string, onChange: () => void, signal: AbortSignal, debounceMs = 150): void {
  const watcher = watch(file, { ignoreInitial: true, awaitWriteFinish: { stabilityThreshold: 50, pollInterval: 20 }, followSymlinks: true, atomic: true });
  let timer: NodeJS.Timeout | undefined;
  const fire = (): void => {
    clearTimeout(timer);
    timer = setTimeout(onChange, debounceMs);
  };
  watcher.on('add', fire).on('change', fire).on('unlink', fire);
  signal.addEventListener('abort', () => {
    clearTimeout(timer);
    void watcher.close();
  }, { once: true });
}
