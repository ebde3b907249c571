/**
 * http2-wrapper, the client of HTTP/2 upstreams, loaded only when a Plan has
 * one: a proxy whose upstreams all speak HTTP/1.1 never pays its RSS
 * (bench/optimisations.md, section 5). Targets load it before they take
 * requests ({@link Target.prepare}, awaited before a Plan is published); the
 * request path then reads it synchronously through {@link http2Client}.
 */
import type http2wrapper from 'http2-wrapper';

export type Http2Client = typeof http2wrapper;

let client: Http2Client | undefined;
let loading: Promise<Http2Client> | undefined;

/** Loads http2-wrapper once; later calls return the same promise. A failed load is retried on the next call. */
export function loadHttp2Client(): Promise<Http2Client> {
  loading ??= import('http2-wrapper').then(
    (m) => (client = m.default),
    (err: unknown) => {
      loading = undefined;
      throw new Error(`cannot load the HTTP/2 upstream client (http2-wrapper): ${(err as Error).message}`, { cause: err });
    },
  );
  return loading;
}

/** The loaded module. Hot path. Throws only if a caller skipped {@link loadHttp2Client}, which is a bug. */
export function http2Client(): Http2Client {
  if (client === undefined) throw new Error('http2-wrapper used before loadHttp2Client() resolved');
  return client;
}
