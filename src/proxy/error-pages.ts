/**
 * A host's own pages for the errors Portico answers ("errorPages"; nginx's
 * error_page, Caddy's handle_errors): read when the config is loaded, chosen
 * per status (an exact status before its class), and sent in place of the
 * plain-text body. Upstream error responses are replaced only on routes with
 * "interceptErrors" (intercept-errors.ts).
 */
import { readFile, stat } from 'node:fs/promises';
import { extname, resolve } from 'node:path';
import { ERRORS, STARTUP_ERRORS, type ErrorCode } from '../errors.js';

/** A page ready to send. */
export interface ErrorPage {
  readonly body: Buffer;
  readonly contentType: string;
}

/** Largest page file: an error page is a page, not a download. */
const MAX_PAGE_BYTES = 1024 * 1024;

const TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.htm': 'text/html; charset=utf-8',
  '.json': 'application/json',
  '.txt': 'text/plain; charset=utf-8',
  '.xml': 'application/xml',
};

/** The statuses Portico answers requests with (the error table's), for which pages can be given. */
export const ERROR_STATUSES: ReadonlySet<number> = new Set(
  (Object.keys(ERRORS) as ErrorCode[]).filter((c) => !STARTUP_ERRORS.has(c)).map((c) => ERRORS[c].status),
);

/** A host's pages, by status: for the errors Portico answers, and for upstream errors ("interceptErrors"). */
export interface LoadedErrorPages {
  /** For Portico's own answers: the statuses of the error table that have a page. */
  readonly pages: ReadonlyMap<number, ErrorPage>;
  /** For upstream responses: every status from 400 to 599 that has a page; empty unless `forUpstream`. */
  readonly upstreamPages: ReadonlyMap<number, ErrorPage>;
  readonly problems: { key: string; message: string }[];
}

/**
 * Reads a host's pages: by status, each from its exact key ("502") or else its class ("5xx").
 * `forUpstream`: the host or one of its routes sets "interceptErrors", so a page may also be for a
 * status only upstreams answer ("418", "451"). Problems (unreadable, too large, an unknown type, a
 * status nothing would answer) come back with the key they belong to.
 */
export async function loadErrorPages(baseDir: string, pages: Record<string, string>, forUpstream: boolean): Promise<LoadedErrorPages> {
  const loaded = new Map<string, ErrorPage>();
  const problems: { key: string; message: string }[] = [];
  for (const [key, file] of Object.entries(pages)) {
    if (!forUpstream && /^\d+$/.test(key) && !ERROR_STATUSES.has(Number(key))) {
      // A page for a status Portico never answers itself would never be sent (upstream answers are replaced only with interceptErrors).
      problems.push({
        key,
        message: `Portico never answers ${key} itself, so this page would never be sent; pages apply to ${[...ERROR_STATUSES].sort((a, b) => a - b).join(', ')} (and "4xx", "5xx"), or to upstream responses with "interceptErrors": true`,
      });
      continue;
    }
    const abs = resolve(baseDir, file);
    const type = TYPES[extname(abs).toLowerCase()];
    if (type === undefined) {
      problems.push({ key, message: `${file}: an error page must be .html, .htm, .json, .txt or .xml (its Content-Type comes from that)` });
      continue;
    }
    try {
      const size = (await stat(abs)).size;
      if (size > MAX_PAGE_BYTES) {
        problems.push({ key, message: `${abs} is ${size} bytes; an error page may have at most 1 MiB` });
        continue;
      }
      loaded.set(key, { body: await readFile(abs), contentType: type });
    } catch (err) {
      problems.push({ key, message: `cannot read the error page ${abs} (${(err as NodeJS.ErrnoException).code ?? 'error'})` });
    }
  }
  const pageFor = (status: number): ErrorPage | undefined => loaded.get(String(status)) ?? loaded.get(`${Math.floor(status / 100)}xx`);
  const byStatus = new Map<number, ErrorPage>();
  for (const status of ERROR_STATUSES) {
    const page = pageFor(status);
    if (page !== undefined) byStatus.set(status, page);
  }
  const upstreamPages = new Map<number, ErrorPage>();
  if (forUpstream) {
    for (let status = 400; status < 600; status++) {
      const page = pageFor(status);
      if (page !== undefined) upstreamPages.set(status, page);
    }
  }
  return { pages: byStatus, upstreamPages, problems };
}
