/**
 * A request's header pairs (name, value, …, as llhttp gives them) to the
 * header object node:http builds, with the same rules for repeated names
 * (`IncomingMessage#headers`): a repeat of a single-value header is dropped,
 * `set-cookie` is a list, `cookie` lines join with "; ", others with ", ".
 * A name Object.prototype also has (`constructor`, `valueOf`) is a header like
 * any other; `__proto__` cannot be one and is left out, as node:http does.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { lowerName } from './header-name.js';

/** Headers whose repeats node:http drops (the first one counts). */
const FIRST_WINS = new Set([
  'content-type',
  'content-length',
  'user-agent',
  'referer',
  'host',
  'authorization',
  'proxy-authorization',
  'if-modified-since',
  'if-unmodified-since',
  'from',
  'location',
  'max-forwards',
  'retry-after',
  'etag',
  'last-modified',
  'server',
  'age',
  'expires',
]);

export function requestHeaders(pairs: readonly string[]): IncomingHttpHeaders {
  const h: IncomingHttpHeaders = {};
  for (let i = 0; i + 1 < pairs.length; i += 2) {
    const name = lowerName(pairs[i] as string);
    const value = pairs[i + 1] as string;
    const prev = h[name];
    // A name Object.prototype has (`constructor`, `toString`) reads a function before it is set: it is a first.
    if (prev === undefined || typeof prev === 'function') {
      h[name] = name === 'set-cookie' ? [value] : value;
    } else if (Array.isArray(prev)) {
      prev.push(value);
    } else if (typeof prev === 'string' && !FIRST_WINS.has(name)) {
      h[name] = name === 'cookie' ? `${prev}; ${value}` : `${prev}, ${value}`;
    }
    // `__proto__` (reads Object.prototype) is left out, as node:http leaves it out.
  }
  return h;
}
