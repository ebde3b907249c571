/**
 * The HTTP-01 responder (RFC 8555 §8.3): key authorizations of pending
 * challenges by token, read by the plain HTTP listener. Only tokens of
 * challenges in flight are answered; everything else gets 404 there.
 *
 * Workers share the listening socket, so the CA's request may reach a worker
 * that is not the orderer: pending tokens are also written to a shared
 * folder (`<certsDir>/acme/challenges/http-01/<token>`), which a worker reads
 * when the token is not its own. Challenge requests are rare; the read is
 * synchronous and small.
 */
import { readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Http01ChallengeSource } from '../listen/http-listener.js';
import { writeFileAtomic } from './storage.js';

/** RFC 8555 §8.3: a token is base64url. Anything else is never looked up on disk. */
const TOKEN_RE = /^[A-Za-z0-9_-]{1,256}$/;

/** Pending HTTP-01 tokens. */
export class Http01Responder implements Http01ChallengeSource {
  readonly #tokens = new Map<string, string>();
  #dir: string | undefined;

  /** Sets the folder shared with other processes (undefined: memory only). */
  setSharedDir(dir: string | undefined): void {
    this.#dir = dir;
  }

  /** The key authorization for a pending token. Called per challenge request. */
  keyAuthorization(token: string): string | undefined {
    const own = this.#tokens.get(token);
    if (own !== undefined || this.#dir === undefined || !TOKEN_RE.test(token)) return own;
    try {
      return readFileSync(join(this.#dir, token), 'utf8');
    } catch {
      return undefined;
    }
  }

  async add(token: string, keyAuthorization: string): Promise<void> {
    this.#tokens.set(token, keyAuthorization);
    if (this.#dir !== undefined && TOKEN_RE.test(token)) await writeFileAtomic(join(this.#dir, token), keyAuthorization, 0o600);
  }

  async remove(token: string): Promise<void> {
    this.#tokens.delete(token);
    if (this.#dir !== undefined && TOKEN_RE.test(token)) await rm(join(this.#dir, token), { force: true });
  }
}
