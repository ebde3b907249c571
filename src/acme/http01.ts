/**
 * The HTTP-01 responder (RFC 8555 §8.3): key authorizations of pending
 * challenges by token, read by the plain HTTP listener. Only tokens of
 * challenges in flight are answered; everything else gets 404 there.
 */
import type { Http01ChallengeSource } from '../listen/http-listener.js';

/** Pending HTTP-01 tokens. */
export class Http01Responder implements Http01ChallengeSource {
  readonly #tokens = new Map<string, string>();

  /** The key authorization for a pending token. Called per challenge request. */
  keyAuthorization(token: string): string | undefined {
    return this.#tokens.get(token);
  }

  add(token: string, keyAuthorization: string): void {
    this.#tokens.set(token, keyAuthorization);
  }

  remove(token: string): void {
    this.#tokens.delete(token);
  }
}
