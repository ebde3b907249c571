/**
 * The hot path's header-name tests (src/http1/header-name.ts) give what toLowerCase() would, for
 * every spelling: the usual two are compared first, anything else is lower-cased.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isName, lowerName } from '../src/http1/header-name.js';

const SPELLINGS = ['_X-A', '_x-a', '_X-a', '-X', '-x', 'Host', 'host', 'HOST', 'hOsT', 'Content-Length', 'content-length', 'CONTENT-length', 'TE', 'te', 'Te', 'tE', 'DNT', 'dnt', 'Dnt', 'X-Forwarded-For', 'x-forwarded-FOR', 'Sec-Fetch-Site', 'X-Custom', 'x-custom', 'Upgrade-Insecure-Requests', 'HTTP2-Settings', 'http2-settings', 'Http2-Settings', '-', 'a'];

test('lowerName gives toLowerCase() of every spelling, common names or not', () => {
  for (const n of SPELLINGS) assert.equal(lowerName(n), n.toLowerCase(), n);
});

test('isName matches a name in any case and nothing else, same length or not', () => {
  const names = ['content-length', 'http2-settings', 'transfer-encoding', 'connection', 'keep-alive', 'te', 'host', '_x-a', '-x'];
  const title = (l: string): string => l.replace(/(^|-)([a-z0-9])/g, (_m, d: string, c: string) => d + c.toUpperCase());
  for (const lower of names) {
    for (const n of SPELLINGS) assert.equal(isName(n, lower, title(lower)), n.toLowerCase() === lower, `${n} against ${lower}`);
    // A same-length name that differs after its first letter, or only in its first letter.
    const other = lower[0] + (lower[1] === 'x' ? 'y' : 'x') + lower.slice(2);
    assert.equal(isName(other, lower, title(lower)), false, other);
    assert.equal(isName(`X${lower.slice(1)}`, lower, title(lower)), lower[0] === 'x', `X${lower.slice(1)}`);
  }
});
