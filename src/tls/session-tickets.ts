/**
 * TLS session ticket keys: one key at a time, derived (HKDF-SHA256) from a secret and the current
 * period of the wall clock, and replaced at each period boundary.
 *
 * Every process that holds the same secret holds the same key at the same time. With `workers`, the
 * primary hands its secret to each worker (src/cluster/ticket-secret.ts), so a ticket issued by one
 * worker resumes on any other; with random keys per process, a client whose next connection lands on
 * another worker (round-robin: every other one) paid a full handshake every time. A new key each
 * period bounds how long one key protects tickets (TLS 1.2 tickets carry the session's master
 * secret). Node's servers take a single key, so tickets issued shortly before a boundary stop
 * resuming after it: at most the session lifetime's worth (`sessionTimeout`, 300 s) each period.
 */
import { hkdfSync, randomBytes } from 'node:crypto';

/** How long one ticket key is used: one hour. */
export const TICKET_KEY_PERIOD_MS = 3_600_000;
/** Bytes of the secret that the keys are derived from. */
export const TICKET_SECRET_BYTES = 32;

/** The 48-byte key (name, HMAC key, AES key) for `period`, as Node's `setTicketKeys()` takes it. */
export function ticketKeyFor(secret: Buffer, period: number): Buffer {
  return Buffer.from(hkdfSync('sha256', secret, Buffer.alloc(0), `portico tls session ticket key ${period}`, 48));
}

/** Keeps the current ticket key applied: `apply` runs once at start() and again at every period boundary. */
export class SessionTicketKeys {
  readonly #secret: Buffer;
  readonly #periodMs: number;
  #timer: NodeJS.Timeout | undefined;
  #apply: ((key: Buffer) => void) | undefined;

  /** `secret` defaults to fresh random bytes (a process of its own); workers pass the primary's. */
  constructor(secret: Buffer = randomBytes(TICKET_SECRET_BYTES), periodMs = TICKET_KEY_PERIOD_MS) {
    if (secret.length < 16) throw new Error(`a ticket key secret needs at least 16 bytes, got ${secret.length}`);
    this.#secret = secret;
    this.#periodMs = periodMs;
  }

  /** The key for the current period. */
  current(now = Date.now()): Buffer {
    return ticketKeyFor(this.#secret, Math.floor(now / this.#periodMs));
  }

  /** Applies the current key now and the next one at each period boundary, until stop(). */
  start(apply: (key: Buffer) => void): void {
    this.stop();
    this.#apply = apply;
    apply(this.current());
    this.#schedule();
  }

  stop(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#apply = undefined;
  }

  #schedule(): void {
    const now = Date.now();
    const next = (Math.floor(now / this.#periodMs) + 1) * this.#periodMs;
    // A few ms past the boundary, so the key computed then is the new period's even if the timer fires early.
    this.#timer = setTimeout(() => this.#rotate(), next - now + 5);
    this.#timer.unref();
  }

  #rotate(): void {
    const apply = this.#apply;
    if (apply === undefined) return;
    apply(this.current());
    this.#schedule();
  }
}
