/**
 * Content-Type by file extension, from `mime-types` (the mime-db table).
 * Built when a config first has a "files" route, into one flat Map of
 * extension → type, after which the library and its table are dropped from
 * the module cache: mime-db is about 0.5 MiB of small heap objects that every
 * full garbage collection marks, which cost about 1.1× the CPU per MiB of
 * large proxied responses while it stayed loaded (bench/optimisations.md §24).
 */
import { createRequire } from 'node:module';

/** Extension (".html") → Content-Type ("text/html; charset=utf-8"). */
let table: ReadonlyMap<string, string> | undefined;

/** Builds the table once; awaited when a config with a "files" route is compiled, before its Plan serves. */
export function loadContentTypes(): Promise<void> {
  if (table !== undefined) return Promise.resolve();
  const require = createRequire(import.meta.url);
  const mime = require('mime-types') as { types: Record<string, string>; contentType: (type: string) => string | false };
  const built = new Map<string, string>();
  for (const ext of Object.keys(mime.types)) {
    const type = mime.contentType(ext);
    if (type !== false) built.set(`.${ext}`, type);
  }
  table = built;
  // Let the garbage collector have mime-db: only the flat table is kept.
  for (const file of Object.keys(require.cache)) if (/[\\/]node_modules[\\/]mime-(types|db)[\\/]/.test(file)) delete require.cache[file];
  return Promise.resolve();
}

/** The Content-Type for a file name, by its extension (with a charset for text). Hot path for files: one Map lookup. */
export function fileContentType(name: string): string {
  const dot = name.lastIndexOf('.');
  if (dot <= name.lastIndexOf('/') + 1) return 'application/octet-stream';
  return table?.get(name.slice(dot).toLowerCase()) ?? 'application/octet-stream';
}
