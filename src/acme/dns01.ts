/**
 * DNS-01 (RFC 8555 §8.4): the TXT record "_acme-challenge.<domain>" is set and
 * removed by the operator's own program ("acme.dns01.command"), which talks to
 * their DNS provider. Portico runs it with a time limit, waits the configured
 * propagation delay, and reports a failure with the program's own words.
 */
import { execFile } from 'node:child_process';
import { isAbsolute, resolve } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import type { Logger } from 'pino';

/** The compiled "acme.dns01" settings. */
export interface Dns01Settings {
  /** Program and its first arguments; a program path with a "/" is resolved against `baseDir`. */
  readonly command: readonly string[];
  readonly propagationDelayMs: number;
  readonly timeoutMs: number;
  /** The config file's directory. */
  readonly baseDir: string;
}

/** The TXT record name a CA looks up for `domain` (a wildcard's authorization names its base domain). */
export function dns01RecordName(domain: string): string {
  return `_acme-challenge.${domain}`;
}

/** The most of a failing program's standard error quoted in its error. */
const STDERR_QUOTE = 500;

/** Runs the operator's DNS-01 program. */
export class Dns01Hook {
  readonly #s: Dns01Settings;
  readonly #log: Logger;

  constructor(settings: Dns01Settings, log: Logger) {
    this.#s = settings;
    this.#log = log;
  }

  /** Sets the TXT record for `domain`'s authorization, then waits the propagation delay. Throws what went wrong. */
  async present(domain: string, value: string): Promise<void> {
    const name = dns01RecordName(domain);
    await this.#run('present', name, value);
    this.#log.info({ record: name, propagationDelayMs: this.#s.propagationDelayMs }, 'acme dns-01 record set');
    if (this.#s.propagationDelayMs > 0) await delay(this.#s.propagationDelayMs);
  }

  /** Removes it again; a failure is logged, not thrown (the certificate is unaffected). */
  async cleanup(domain: string, value: string): Promise<void> {
    const name = dns01RecordName(domain);
    try {
      await this.#run('cleanup', name, value);
    } catch (err) {
      this.#log.warn({ record: name, err: (err as Error).message }, 'acme dns-01 cleanup failed; remove the TXT record by hand');
    }
  }

  #run(action: 'present' | 'cleanup', name: string, value: string): Promise<void> {
    const [program = '', ...first] = this.#s.command;
    const file = program.includes('/') && !isAbsolute(program) ? resolve(this.#s.baseDir, program) : program;
    return new Promise((done, fail) => {
      execFile(file, [...first, action, name, value], { timeout: this.#s.timeoutMs, killSignal: 'SIGKILL', maxBuffer: 1 << 20 }, (err, _stdout, stderr) => {
        if (err === null) return done();
        const said = stderr.trim().slice(-STDERR_QUOTE);
        const e = err as Error & { killed?: boolean; code?: number | string | null; signal?: string | null };
        let why: string;
        if (typeof e.code === 'string') why = `cannot run ${file} (${e.code}); check acme.dns01.command`;
        else if (e.killed === true) why = `${file} did not finish within ${this.#s.timeoutMs} ms (acme.dns01.timeout) and was killed`;
        else why = `${file} exited with ${e.code ?? e.signal ?? 'an error'}`;
        fail(new Error(`dns-01 ${action} of ${name}: ${why}${said === '' ? '' : `: ${said}`}`));
      });
    });
  }
}
