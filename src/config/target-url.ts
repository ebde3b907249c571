/**
 * What is wrong with an upstream target URL, without zod: the config schema (TargetUrl) and the admin
 * API's drain requests (src/admin/drain.ts) check targets by this one rule and word the answer each
 * for its reader. A URL names a server only: `http://`, `https://` or `h2c://` with a host, or
 * `unix:/absolute/path.sock`.
 */

const UPSTREAM_SCHEMES = new Set(['http:', 'https:', 'h2c:']);

/** `unix:/absolute/path.sock`: an HTTP/1.1 upstream on a Unix domain socket. */
const UNIX_TARGET = /^unix:(\/[^\x00]*[^/\x00])$/;

/** A target URL that passes, parsed; or the kind of problem it has. */
export type TargetUrlCheck =
  | { readonly ok: true; readonly url: URL }
  | { readonly ok: false; readonly problem: 'unix' | 'not-a-url' | 'scheme' | 'more-than-a-server' };

export function checkTargetUrl(s: string): TargetUrlCheck {
  if (s.startsWith('unix:')) {
    return UNIX_TARGET.test(s) && !s.startsWith('unix://') ? { ok: true, url: new URL(s) } : { ok: false, problem: 'unix' };
  }
  let url: URL;
  try {
    url = new URL(s);
  } catch {
    return { ok: false, problem: 'not-a-url' };
  }
  if (!UPSTREAM_SCHEMES.has(url.protocol) || url.hostname === '') return { ok: false, problem: 'scheme' };
  // h2c:// is not a WHATWG special scheme: "h2c://host:port" parses with an empty path, not "/".
  if ((url.pathname !== '/' && url.pathname !== '') || url.search !== '' || url.hash !== '' || url.username !== '' || url.password !== '') {
    return { ok: false, problem: 'more-than-a-server' };
  }
  return { ok: true, url };
}
