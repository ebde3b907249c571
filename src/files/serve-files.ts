/**
 * Serving a "files" route: the request path names a file under the route's
 * root. GET and HEAD; Content-Type by extension; a strong ETag and
 * Last-Modified; conditional requests (412 for If-Match and If-Unmodified-Since, 304 via `fresh`) and one byte range
 * (206, via `range-parser`); the body streamed from the file with
 * back-pressure, through the route's compression when it has one.
 */
import { constants as fsConstants, type ReadStream, type Stats } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import type { OutgoingHttpHeaders } from 'node:http';
import fresh from 'fresh';
import rangeParser from 'range-parser';
import type { H2ServerResponse } from '../http2/server-response.js';
import type { Exchange } from '../proxy/exchange.js';
import { fail } from '../proxy/handle-request.js';
import { applyToObject } from '../proxy/header-rules.js';
import { isEncodedVariantValidated, markEncodedObject, markVaryObject, markWeakObject, negotiateEncoding, objectGetter, type CompressPlan, type Encoding } from '../proxy/compress.js';
import { decideEncoding, startEncoder } from '../proxy/encode-response.js';
import { normalizePath } from '../proxy/normalize-path.js';
import { resetResponse } from '../proxy/respond-error.js';
import type { FilesPlan } from './files-plan.js';
import { fileContentType } from './content-type.js';

/** Read size for file bodies. */
const READ_CHUNK = 64 * 1024;

/** Non-blocking, so a FIFO under the root cannot hang the open (it is then refused as not a regular file). */
const OPEN_FLAGS = fsConstants.O_RDONLY | fsConstants.O_NONBLOCK;

/** A "." or ".." segment (left by a decoded escape; normalizePath resolved the literal ones). */
const DOT_SEGMENT = /(^|\/)\.\.?(\/|$)/;

/** A segment starting with "." other than ".well-known": dotfiles (.git, .env) are not served. */
const HIDDEN = /\/\.(?!well-known(\/|$))/;

/** Errors that mean "no such file" (not a server fault). */
const NOT_FOUND = new Set(['ENOENT', 'ENOTDIR', 'ENAMETOOLONG', 'ELOOP', 'EISDIR']);

/** A file and its metadata, or the errno code that stopped it. */
type Opened = { readonly fh: FileHandle; readonly st: Stats } | string;

async function openFile(path: string): Promise<Opened> {
  let fh: FileHandle | undefined;
  try {
    fh = await open(path, OPEN_FLAGS);
    return { fh, st: await fh.stat() };
  } catch (err) {
    await fh?.close().catch(() => undefined);
    return (err as NodeJS.ErrnoException).code ?? 'EIO';
  }
}

/** Answers a request on a "files" route. */
export function serveFiles(ex: Exchange, fp: FilesPlan): void {
  if (!ex.req.complete) ex.req.body.resume();
  if (ex.method !== 'GET' && ex.method !== 'HEAD') return fail(ex, 'PORTICO_METHOD_NOT_ALLOWED', undefined, ['allow', 'GET, HEAD']);
  const q = ex.path.indexOf('?');
  let path: string;
  try {
    path = decodeURIComponent(q === -1 ? ex.path : ex.path.slice(0, q));
  } catch {
    return fail(ex, 'PORTICO_BAD_REQUEST', 'the path holds an invalid percent-encoding');
  }
  if (path.includes('\0') || DOT_SEGMENT.test(path)) return fail(ex, 'PORTICO_BAD_REQUEST', 'the path holds a NUL byte or an encoded dot segment');
  if (HIDDEN.test(path)) return fail(ex, 'PORTICO_FILE_NOT_FOUND', 'hidden name');
  void find(ex, fp, path);
}

/** Opens the file a path names (a directory's index file), or the fallback; then sends it. */
async function find(ex: Exchange, fp: FilesPlan, path: string): Promise<void> {
  let name = fp.root + path;
  let opened = await openFile(name);
  if (typeof opened !== 'string' && opened.st.isDirectory()) {
    await opened.fh.close().catch(() => undefined);
    if (!path.endsWith('/')) return redirectToDirectory(ex);
    opened = 'ENOENT';
    for (const index of fp.index) {
      name = `${fp.root}${path}${index}`;
      opened = await openFile(name);
      if (typeof opened !== 'string') break;
    }
  }
  if (typeof opened !== 'string' && !opened.st.isFile()) {
    await opened.fh.close().catch(() => undefined);
    opened = 'ENOENT';
  }
  if (typeof opened === 'string' && NOT_FOUND.has(opened) && fp.fallback !== undefined) {
    name = fp.root + fp.fallback;
    opened = await openFile(name);
  }
  if (typeof opened === 'string') {
    if (NOT_FOUND.has(opened)) return fail(ex, 'PORTICO_FILE_NOT_FOUND');
    if (opened === 'EACCES' || opened === 'EPERM') return fail(ex, 'PORTICO_FILE_FORBIDDEN', opened);
    return fail(ex, 'PORTICO_FILE_FAILED', opened);
  }
  const sidecar = fp.precompressed ? await openPrecompressed(ex, name) : undefined;
  if (sidecar !== undefined) {
    await opened.fh.close().catch(() => undefined);
    if (ex.res.destroyed) return void sidecar.fh.close().catch(() => undefined);
    return send(ex, sidecar.fh, sidecar.st, name, sidecar.encoding);
  }
  if (ex.res.destroyed) {
    await opened.fh.close().catch(() => undefined);
    return;
  }
  send(ex, opened.fh, opened.st, name, fp.precompressed ? 'vary' : undefined);
}

const PRECOMPRESSED: readonly [CompressPlan, Encoding, string][] = [
  [{ encodings: ['br', 'gzip'], minBytes: 0 }, 'br', '.br'],
  [{ encodings: ['gzip'], minBytes: 0 }, 'gzip', '.gz'],
];

/** The "<file>.br" or "<file>.gz" beside `name` that the client accepts (brotli first), if there is one. */
async function openPrecompressed(ex: Exchange, name: string): Promise<{ fh: FileHandle; st: Stats; encoding: Encoding } | undefined> {
  const accept = ex.req.headers['accept-encoding'];
  if (accept === undefined) return undefined;
  for (const [plan, encoding, ext] of PRECOMPRESSED) {
    if (negotiateEncoding(plan, accept) !== encoding) continue;
    const opened = await openFile(name + ext);
    if (typeof opened !== 'string') {
      if (opened.st.isFile()) return { fh: opened.fh, st: opened.st, encoding };
      await opened.fh.close().catch(() => undefined);
    }
  }
  return undefined;
}

/** A directory named without its trailing slash: 308 to the name with it, so relative links in its index resolve. */
function redirectToDirectory(ex: Exchange): void {
  if (ex.res.destroyed) return;
  const url = normalizePath(ex.req.url ?? '/') ?? '/';
  const q = url.indexOf('?');
  const location = q === -1 ? `${url}/` : `${url.slice(0, q)}/${url.slice(q)}`;
  ex.status = 308;
  ex.res.writeHead(308, { location, 'content-length': 0 });
  ex.res.end();
}

/** An entity tag in an If-Match list, with its weakness prefix. */
const ENTITY_TAG = /(W\/)?"[^"]*"/g;

/**
 * Whether a request's If-Match and If-Unmodified-Since hold for the file (RFC 9110 §13.2.2, steps 1 and 2,
 * before If-None-Match, If-Modified-Since and If-Range): If-Match when it is "*" or lists the file's ETag
 * (strong comparison, §8.8.3.2: a weak tag never matches); otherwise If-Unmodified-Since when the file was
 * not modified after that date (one that does not parse is ignored, §13.1.4). A client resuming a download
 * with Range and If-Match gets 412, not the bytes of a file that has changed since.
 */
function preconditionsHold(h: Exchange['req']['headers'], etag: string, mtimeMs: number): boolean {
  const ifMatch = h['if-match'];
  if (ifMatch !== undefined) {
    const list = Array.isArray(ifMatch) ? ifMatch.join(',') : ifMatch;
    if (list.trim() === '*') return true;
    for (const m of list.matchAll(ENTITY_TAG)) if (m[1] === undefined && m[0] === etag) return true;
    return false;
  }
  const since = h['if-unmodified-since'];
  if (typeof since !== 'string') return true;
  const at = Date.parse(since);
  // Last-Modified has whole seconds: the file's time is compared as it was sent.
  return Number.isNaN(at) || Math.floor(mtimeMs / 1000) * 1000 <= at;
}

/** Whether an If-Range (RFC 9110 §13.1.5) lets a Range apply: absent, or the file's strong ETag or exact date. */
function ifRangeHolds(ifRange: string | string[] | undefined, etag: string, lastModified: string): boolean {
  if (ifRange === undefined) return true;
  if (typeof ifRange !== 'string') return false;
  return ifRange.startsWith('"') ? ifRange === etag : ifRange === lastModified;
}

/**
 * Sends an open file. `stored`: the encoding the file itself is in (a precompressed sidecar of `name`),
 * "vary" for the plain file where sidecars could have been chosen, or undefined.
 */
function send(ex: Exchange, fh: FileHandle, st: Stats, name: string, stored?: Encoding | 'vary'): void {
  const { req, res } = ex;
  const size = st.size;
  const etag = `"${Math.floor(st.mtimeMs).toString(16)}-${size.toString(16)}"`;
  const lastModified = st.mtime.toUTCString();
  const headers: OutgoingHttpHeaders = { 'content-type': fileContentType(name), etag, 'last-modified': lastModified, 'accept-ranges': 'bytes' };
  if (stored !== undefined) {
    markVaryObject(headers);
    if (stored !== 'vary') {
      // An encoded representation: its own validator (the sidecar's), and no ranges.
      headers['content-encoding'] = stored;
      delete headers['accept-ranges'];
    }
  }
  const rules = ex.route!.headerRules?.response;
  if ((req.headers['if-match'] !== undefined || req.headers['if-unmodified-since'] !== undefined) && !preconditionsHold(req.headers, etag, st.mtimeMs)) {
    void fh.close().catch(() => undefined);
    return fail(ex, 'PORTICO_PRECONDITION_FAILED');
  }
  if (fresh(req.headers, { etag, 'last-modified': lastModified })) {
    void fh.close().catch(() => undefined);
    delete headers['content-type'];
    delete headers['accept-ranges'];
    // The client holds the copy this route encoded (weak ETag): the 304 says so (RFC 9110 §15.4.5).
    if (ex.route!.compress !== undefined && (stored === undefined || stored === 'vary') && isEncodedVariantValidated(req.headers['if-none-match'], etag)) markWeakObject(headers);
    if (rules !== undefined) applyToObject(headers, rules);
    ex.status = 304;
    res.writeHead(304, headers);
    res.end();
    return;
  }
  let status = 200;
  let start = 0;
  let end = size - 1;
  const range = req.headers.range;
  if (range !== undefined && ex.method === 'GET' && (stored === undefined || stored === 'vary') && ifRangeHolds(req.headers['if-range'], etag, lastModified)) {
    const ranges = rangeParser(size, range, { combine: true });
    if (ranges === -1) {
      void fh.close().catch(() => undefined);
      return fail(ex, 'PORTICO_RANGE_NOT_SATISFIABLE', undefined, ['content-range', `bytes */${size}`]);
    }
    // A malformed Range, another unit, or several ranges (no multipart answers): the whole file, as RFC 9110 §14.2 allows.
    if (ranges !== -2 && ranges.type === 'bytes' && ranges.length === 1) {
      status = 206;
      start = ranges[0]!.start;
      end = ranges[0]!.end;
      headers['content-range'] = `bytes ${start}-${end}/${size}`;
    }
  }
  const length = end - start + 1;
  headers['content-length'] = length;
  if (rules !== undefined) applyToObject(headers, rules);
  const cp = ex.route!.compress;
  let enc: Encoding | undefined;
  if (cp !== undefined && status === 200 && (stored === undefined || stored === 'vary')) {
    // A 200: never "weak" (that is for 304s, answered above).
    const d = decideEncoding(ex, cp, status, objectGetter(headers));
    if (d === 'vary') markVaryObject(headers);
    else if (d !== undefined && d !== 'weak') markEncodedObject(headers, (enc = d));
  }
  ex.status = status;
  res.writeHead(status, headers);
  if (ex.method === 'HEAD' || length === 0) {
    void fh.close().catch(() => undefined);
    res.end();
    return;
  }
  const body = fh.createReadStream({ start, end, highWaterMark: READ_CHUNK });
  ex.fileBody = body;
  body.on('error', onFileError.bind(ex));
  // Through an encoder, its output is counted (startEncoder): `bytes` is what the client is sent.
  if (enc === undefined && ex.plan.accessLog) body.on('data', countBytes.bind(ex));
  // Before the pipe's own 'end' listener, so that a short file is caught before an encoder is ended.
  body.on('end', endResponse.bind(ex, length));
  if (enc !== undefined) {
    startEncoder(ex, enc, String(length));
    body.pipe(ex.encoder!);
    return;
  }
  body.pipe(ex.h2 ? (res as H2ServerResponse).stream : (res as unknown as NodeJS.WritableStream), { end: false });
}

function countBytes(this: Exchange, chunk: Buffer | string): void {
  this.bytes += chunk.length;
}

/**
 * The file's body has been read: the response ends (an encoder's, when its last bytes are out). A file
 * that shrank while it was sent (truncated, or rewritten in place by a deploy) ends its read early: the
 * response is then cut short visibly, never ended, since a body shorter than its Content-Length would
 * leave an HTTP/1.1 client reading the next response on the connection as the rest of this one.
 */
function endResponse(this: Exchange, length: number): void {
  if ((this.fileBody as ReadStream).bytesRead < length) return onFileError.call(this, new Error('the file shrank while it was sent'));
  if (this.encoder === undefined && !this.res.destroyed) this.res.end();
}

/** A read failed after the head went out: the response is cut short visibly. */
function onFileError(this: Exchange, err: NodeJS.ErrnoException): void {
  this.error = 'PORTICO_FILE_FAILED';
  this.errorDetail = err.code ?? err.message;
  this.state.log.warn({ code: this.error, route: this.route?.id, detail: this.errorDetail }, 'file read failed');
  resetResponse(this.res);
}
