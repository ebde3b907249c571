/**
 * A "files" route compiled: its root resolved and checked once when the config
 * loads, so a missing directory or fallback is a config error with its path,
 * not a 404 at request time.
 */
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { FilesConfig } from '../config/schema.js';
import { loadContentTypes } from './content-type.js';

/** What a "files" route serves. */
export interface FilesPlan {
  /** The directory, absolute, without a trailing slash. */
  readonly root: string;
  /** Index file names tried in order for a directory. */
  readonly index: readonly string[];
  /** A path under the root ("/index.html") served for paths that name no file, or undefined for 404. */
  readonly fallback: string | undefined;
  /** Serve "<file>.br" / "<file>.gz" beside a file to clients that accept them. */
  readonly precompressed: boolean;
}

/** A problem with a "files" route, by the key it belongs to ("root" or "fallback"). */
export interface FilesProblem {
  readonly key: 'root' | 'fallback';
  readonly message: string;
}

/** Resolves and checks a route's "files" against `baseDir` (the config file's directory). */
export async function compileFiles(config: FilesConfig, baseDir: string): Promise<{ plan: FilesPlan | undefined; problems: FilesProblem[] }> {
  const spec = typeof config === 'string' ? { root: config, index: ['index.html'], fallback: undefined, precompressed: false } : config;
  const root = resolve(baseDir, spec.root).replace(/\/+$/, '') || '/';
  const problems: FilesProblem[] = [];
  try {
    if (!(await stat(root)).isDirectory()) problems.push({ key: 'root', message: `${root} is not a directory; "files" serves a directory` });
  } catch (err) {
    problems.push({ key: 'root', message: `cannot open the directory ${root} (${(err as NodeJS.ErrnoException).code ?? 'error'}); create it, or fix the path (relative to the config file)` });
  }
  if (problems.length === 0 && spec.fallback !== undefined) {
    const file = root + spec.fallback;
    try {
      if (!(await stat(file)).isFile()) problems.push({ key: 'fallback', message: `${file} is not a file` });
    } catch (err) {
      problems.push({ key: 'fallback', message: `cannot find the fallback file ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'}); it is a path under "root"` });
    }
  }
  if (problems.length > 0) return { plan: undefined, problems };
  await loadContentTypes();
  return { plan: { root: root === '/' ? '' : root, index: spec.index, fallback: spec.fallback, precompressed: spec.precompressed }, problems };
}
