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
  return name.length === lower.length && (name.charCodeAt(0) | 0x20) === lower.charCodeAt(0) && name.toLowerCase() === lower;
}
