/**
 * The admin API's bearer token: read from the file the config names, kept only
 * as its SHA-256 digest, and compared in constant time.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { isPermissionError, permissionHint } from '../config/permission-hint.js';

/** Shortest token accepted: 32 characters (`openssl rand -hex 32` makes 64). */
export const MIN_TOKEN_LENGTH = 32;

/** Reads the token file (relative to the config's directory); throws with what is wrong and how to fix it. */
export async function readAdminTokenDigest(baseDir: string, tokenFile: string): Promise<Buffer> {
  const file = resolve(baseDir, tokenFile);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // A file that is there but unreadable needs its permissions fixed, not a new token.
    const fix = isPermissionError(code) ? permissionHint() : `create it, e.g. with: openssl rand -hex 32 > ${file}`;
    throw new Error(`cannot read the admin token file ${file} (${code ?? 'error'}); ${fix}`);
  }
  const token = text.trim();
  if (/\s/.test(token)) {
    throw new Error(`the admin token in ${file} has whitespace inside it, which an "Authorization: Bearer" header cannot carry; use one word, e.g. from: openssl rand -hex 32 > ${file}`);
  }
  if (token.length < MIN_TOKEN_LENGTH) {
    throw new Error(`the admin token in ${file} has ${token.length} characters, fewer than ${MIN_TOKEN_LENGTH}; make a longer one, e.g. with: openssl rand -hex 32 > ${file}`);
  }
  return digest(token);
}

function digest(token: string): Buffer {
  return createHash('sha256').update(token).digest();
}

/** Whether an Authorization header carries the token whose digest is `expected`. */
export function isAuthorized(header: string | undefined, expected: Buffer | undefined): boolean {
  if (expected === undefined || header === undefined) return false;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  if (m === null) return false;
  return timingSafeEqual(digest(m[1] as string), expected);
}
