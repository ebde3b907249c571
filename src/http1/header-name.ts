/**
 * Case-insensitive header-name tests for the HTTP/1.1 hot path. Names arrive as
 * llhttp read them, each a new string; `toLowerCase()` on every one (allocating
 * a string and, as a lookup key, hashing it) was the largest single builtin of
 * an S1 request (bench/optimisations.md §33). These compare against the two
 * spellings servers and clients send (`Content-Length`, `content-length`) first,
 * and lower-case only a name of the right length spelled some other way.
 */

/**
 * Whether `name` is the header `lower` (lower-case), any case. `title` is its usual spelling
 * (`Content-Length`), tried before lower-casing.
 */
export function isName(name: string, lower: string, title: string): boolean {
  if (name === title || name === lower) return true;
  // Another name of the same length (Content-Length against http2-settings) mostly differs in its first
  // letter: only a name that starts alike, in either case, is lower-cased and compared.
  if (name.length !== lower.length) return false;
  const c = name.charCodeAt(0);
  const l = lower.charCodeAt(0);
  return (c === l || (c | 0x20) === l) && name.toLowerCase() === lower;
}

/** Header names clients and servers send most, lower case. */
const COMMON_NAMES = [
  'host', 'accept', 'accept-encoding', 'accept-language', 'user-agent', 'connection', 'cookie', 'referer', 'origin',
  'cache-control', 'pragma', 'content-type', 'content-length', 'authorization', 'if-none-match', 'if-modified-since',
  'upgrade-insecure-requests', 'sec-fetch-site', 'sec-fetch-mode', 'sec-fetch-dest', 'sec-fetch-user', 'priority',
  'range', 'dnt', 'te', 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-real-ip', 'x-request-id',
  'x-requested-with', 'upgrade', 'sec-websocket-key', 'sec-websocket-version', 'sec-websocket-extensions',
  'transfer-encoding', 'expect', 'keep-alive', 'date', 'server', 'etag', 'last-modified', 'vary', 'location',
  'set-cookie', 'content-encoding', 'accept-ranges', 'expires', 'age', 'via',
];

/** Each common name in its usual spelling (`User-Agent`, `TE`, `DNT`). */
function titleOf(lower: string): string {
  if (lower === 'te' || lower === 'dnt') return lower.toUpperCase();
  return lower.replace(/(^|-)([a-z])/g, (_m, dash: string, c: string) => dash + c.toUpperCase());
}

/** COMMON_NAMES by length: lower, title, lower, title, … */
const BY_LENGTH: (string[] | undefined)[] = [];
for (const lower of COMMON_NAMES) (BY_LENGTH[lower.length] ??= []).push(lower, titleOf(lower));

/**
 * A header name in lower case. A common name in one of its two usual spellings comes back as the
 * (internalized) constant, without allocating or hashing a new string; any other is lower-cased.
 */
export function lowerName(name: string): string {
  const list = BY_LENGTH[name.length];
  if (list !== undefined) {
    for (let i = 0; i < list.length; i += 2) {
      const lower = list[i] as string;
      if (name === lower || name === list[i + 1]) return lower;
    }
  }
  return name.toLowerCase();
}
