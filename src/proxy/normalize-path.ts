/**
 * The request path as routes see it and as it goes upstream, normalised the
 * way RFC 3986 §6.2.2 makes equivalent URIs equal: percent-escapes of
 * unreserved characters decoded ("/%61dmin" is "/admin"), other escapes in
 * upper case, runs of slashes merged ("//admin" is "/admin"), and dot segments
 * resolved (§5.2.4: "/a/./b/../c" is "/a/c"). Without this a route's allowFrom
 * or basicAuth could be walked around: "/public/../admin" would match the
 * route "/public" and reach an upstream that resolves it to "/admin" (nginx and
 * Caddy match on a normalised path for the same reason). A path that climbs
 * above the root, or hides a dot segment behind an escaped slash or a
 * backslash ("/public%2F..%2Fadmin"), or behind a path parameter ("/public/..;/admin",
 * which Tomcat and Spring resolve to "/admin"), or that carries a "#" fragment, is
 * refused: no browser sends one.
 * The query string is left as it is.
 */

/** Anything that may need work: a percent sign, two slashes, a slash and a dot, a backslash, a "#". Hot path: most paths have none. */
const NEEDS_WORK = /%|\/\/|\/\.|\\|#/;
const ESCAPE = /%([0-9A-Fa-f]{2})/g;
const HIDDEN_SEPARATOR = /\\|%2F|%5C/;
/** A dot segment followed by a path parameter (RFC 3986 §3.3's ";"). */
const PARAMETER_DOT_SEGMENT = /^\.\.?;/;

function unescapeUnreserved(_m: string, hex: string): string {
  const c = parseInt(hex, 16);
  // ALPHA / DIGIT / "-" / "." / "_" / "~" (RFC 3986 §2.3)
  if ((c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x2e || c === 0x5f || c === 0x7e) return String.fromCharCode(c);
  return `%${hex.toUpperCase()}`;
}

/** The normalised request target (path normalised, query kept), or undefined when it must be refused. Hot path. */
export function normalizePath(url: string): string | undefined {
  const q = url.indexOf('?');
  const path = q === -1 ? url : url.slice(0, q);
  // A fragment is no part of a request target (RFC 9112 §3.2), yet llhttp passes one on: routes would
  // see "/admin#x" (not the route "/admin") while an upstream that drops the fragment serves "/admin".
  if (q !== -1 && url.indexOf('#', q) !== -1) return undefined;
  if (!NEEDS_WORK.test(path)) return url;
  if (path.includes('#')) return undefined;
  const decoded = path.includes('%') ? path.replace(ESCAPE, unescapeUnreserved) : path;
  const out: string[] = [];
  const segments = decoded.split('/');
  // segments[0] is "" (the path starts with "/"); empty ones in between are merged slashes.
  for (let i = 1; i < segments.length; i++) {
    const seg = segments[i] as string;
    const last = i === segments.length - 1;
    if (seg === '..') {
      if (out.length === 0) return undefined;
      out.pop();
      if (last) out.push('');
    } else if (seg === '.') {
      if (last) out.push('');
    } else if (seg === '' && !last) {
      continue;
    } else if (seg.charCodeAt(0) === 46 /* '.' */ && PARAMETER_DOT_SEGMENT.test(seg)) {
      // "..;x" or ".;x": a dot segment with a path parameter, which Tomcat and Spring resolve as ".."
      // or "." ("/public/..;/admin" is their "/admin") while routing here saw "/public".
      return undefined;
    } else {
      if (HIDDEN_SEPARATOR.test(seg)) {
        for (const part of seg.split(/\\|%2F|%5C/)) if (part === '.' || part === '..' || PARAMETER_DOT_SEGMENT.test(part)) return undefined;
      }
      out.push(seg);
    }
  }
  const normal = `/${out.join('/')}`;
  return q === -1 ? normal : normal + url.slice(q);
}
