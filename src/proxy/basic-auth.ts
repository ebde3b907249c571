/**
 * HTTP Basic authentication (RFC 7617) for hosts and routes with "basicAuth".
 * Passwords are stored as scrypt hashes in PHC string form
 * (`$scrypt$ln=15,r=8,p=1$<salt>$<hash>`, base64 without padding), made by
 * `portico hash-password`. A hash costs tens of milliseconds on purpose, so a
 * verified Authorization value is remembered (per Plan, at most MAX_REMEMBERED)
 * and the same credentials are checked once, not on every request; checks run
 * on libuv's thread pool, never on the thread that serves requests. That pool
 * (4 threads by default) also reads files and resolves host names, so at most
 * MAX_RUNNING checks run at once in a process and MAX_WAITING wait their turn;
 * past that a new check is refused (AUTH_BUSY, a 503), and a flood of made-up
 * passwords cannot stall every other host's file reads and lookups.
 */
import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';

/** One user's password hash, decoded. */
interface UserHash {
  readonly salt: Buffer;
  readonly hash: Buffer;
  readonly options: ScryptOptions;
}

/** Decoded `$scrypt$…` strings checked by the config schema before they get here. */
const PHC_RE = /^\$scrypt\$ln=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$/;

/** Why a hash string is not usable, or undefined when it is. Used by the config schema. */
export function hashProblem(s: string): string | undefined {
  const m = PHC_RE.exec(s);
  if (m === null) return 'expected a password hash made by "portico hash-password", such as "$scrypt$ln=15,r=8,p=1$<salt>$<hash>"';
  const [ln, r, p] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (ln < 10 || ln > 20 || r < 1 || r > 32 || p < 1 || p > 16) return 'scrypt parameters out of range (ln 10–20, r 1–32, p 1–16); make a new hash with "portico hash-password"';
  if (Buffer.from(m[4] as string, 'base64').length < 8 || Buffer.from(m[5] as string, 'base64').length < 16) return 'salt or hash too short; make a new hash with "portico hash-password"';
  return undefined;
}

function decodeHash(s: string): UserHash {
  const m = PHC_RE.exec(s);
  if (m === null) throw new Error('invalid password hash');
  const N = 2 ** Number(m[1]);
  const r = Number(m[2]);
  return {
    salt: Buffer.from(m[4] as string, 'base64'),
    hash: Buffer.from(m[5] as string, 'base64'),
    options: { N, r, p: Number(m[3]), maxmem: 256 * N * r },
  };
}

function derive(password: string | Buffer, salt: Buffer, length: number, options: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => scrypt(password, salt, length, options, (err, key) => (err === null ? resolve(key) : reject(err))));
}

/** Hashes a password for the config (`portico hash-password`): scrypt with N = 2^15, r = 8, p = 1, a 16-byte salt. */
export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await derive(password, salt, 32, { N: 2 ** 15, r: 8, p: 1, maxmem: 256 * 2 ** 15 * 8 });
  const b64 = (b: Buffer): string => b.toString('base64').replace(/=+$/, '');
  return `$scrypt$ln=15,r=8,p=1$${b64(salt)}$${b64(key)}`;
}

/** Password checks (scrypt) running at once in the process: half of libuv's default thread pool. */
const MAX_RUNNING = 2;
/** Checks waiting for a free turn, oldest first; at tens of milliseconds each, under a couple of seconds of waiting. */
const MAX_WAITING = 32;
let running = 0;
const waiting: (() => void)[] = [];

/** What check() returns when MAX_WAITING checks already wait: the request gets 503 PORTICO_AUTH_BUSY. */
export const AUTH_BUSY: unique symbol = Symbol('portico basicAuth busy');

/** A check's turn ended: the oldest waiting one starts. */
function finishedCheck(): void {
  const next = waiting.shift();
  if (next === undefined) running--;
  else next();
}

/** derive() within MAX_RUNNING and MAX_WAITING; undefined when the queue is full. */
function deriveInTurn(password: string, salt: Buffer, length: number, options: ScryptOptions): Promise<Buffer> | undefined {
  if (running >= MAX_RUNNING && waiting.length >= MAX_WAITING) return undefined;
  return new Promise((resolve, reject) => {
    const run = (): void =>
      scrypt(password, salt, length, options, (err, key) => {
        finishedCheck();
        if (err === null) resolve(key);
        else reject(err);
      });
    if (running < MAX_RUNNING) {
      running++;
      run();
    } else waiting.push(run);
  });
}

/** Verified Authorization values a Plan remembers; past it the memory starts over. */
const MAX_REMEMBERED = 1024;

/** A compiled "basicAuth": its users and the challenge sent with 401. */
export class BasicAuth {
  /** The WWW-Authenticate value of a 401. */
  readonly challenge: string;
  readonly #users: Map<string, UserHash>;
  /** Authorization value → the user it proved, or the check still running for it. */
  readonly #verified = new Map<string, string | Promise<string | undefined>>();
  /** Checked against when the user is unknown, so the answer takes as long as for a known one. */
  readonly #decoy: UserHash;

  constructor(realm: string, users: Record<string, string>) {
    this.challenge = `Basic realm="${realm}", charset="UTF-8"`;
    this.#users = new Map(Object.entries(users).map(([name, h]) => [name, decodeHash(h)]));
    const first = this.#users.values().next().value as UserHash;
    this.#decoy = { salt: Buffer.alloc(first.salt.length, 1), hash: Buffer.alloc(first.hash.length), options: first.options };
  }

  /**
   * The user an Authorization header proves: a string when known at once (remembered), undefined
   * when it proves nobody (missing, malformed), a promise while its hash is computed, or AUTH_BUSY
   * when too many checks already wait. Hot path for remembered values: one Map lookup.
   */
  check(header: string | undefined): string | undefined | typeof AUTH_BUSY | Promise<string | undefined> {
    if (header === undefined) return undefined;
    const known = this.#verified.get(header);
    if (known !== undefined) return known;
    if (header.length < 7 || header.slice(0, 6).toLowerCase() !== 'basic ') return undefined;
    const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon <= 0) return undefined;
    const name = decoded.slice(0, colon);
    const user = this.#users.get(name);
    const spec = user ?? this.#decoy;
    const derived = deriveInTurn(decoded.slice(colon + 1), spec.salt, spec.hash.length, spec.options);
    if (derived === undefined) return AUTH_BUSY;
    const pending = derived.then(
      (key) => {
        const ok = user !== undefined && timingSafeEqual(key, spec.hash);
        if (ok) {
          if (this.#verified.size >= MAX_REMEMBERED) this.#verified.clear();
          this.#verified.set(header, name);
          return name;
        }
        this.#verified.delete(header);
        return undefined;
      },
      () => {
        this.#verified.delete(header);
        return undefined;
      },
    );
    // Concurrent requests with the same new credentials (a browser's parallel connections) share one check.
    this.#verified.set(header, pending);
    return pending;
  }
}
