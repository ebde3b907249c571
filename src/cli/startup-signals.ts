/**
 * The CLI's signal handlers, installed before any socket is bound: a SIGHUP, SIGUSR1, SIGTERM or SIGINT
 * that arrives while Portico starts is held and acted on once the part that handles it is ready, instead
 * of Node's default action (SIGHUP and SIGTERM end the process; SIGUSR1 opens the inspector's port).
 * Repeats of a held signal are coalesced: several SIGHUPs during the start give one reload after it.
 */

/** The signals the CLI handles. */
export type HandledSignal = 'SIGHUP' | 'SIGUSR1' | 'SIGTERM' | 'SIGINT';

const SIGNALS: readonly HandledSignal[] = ['SIGHUP', 'SIGUSR1', 'SIGTERM', 'SIGINT'];

/** Where the primary and main.ts register what a signal does, once they can do it. */
export interface SignalRouter {
  /** From now on `signal` calls `fn` too (after the handlers registered before it); a `signal` held until now calls it at once. */
  handle(signal: HandledSignal, fn: (signal: HandledSignal) => void): void;
}

/** Holds the handled signals that arrive before their handler is registered, and hands them over then. */
export class StartupSignals implements SignalRouter {
  readonly #handlers = new Map<HandledSignal, ((signal: HandledSignal) => void)[]>();
  readonly #held = new Set<HandledSignal>();
  /** Called when a signal is held: `repeat` when it was held already (a second SIGTERM during the start, say). */
  onHeld: ((signal: HandledSignal, repeat: boolean) => void) | undefined;

  /** Installs the process's handlers for every handled signal; call it before binding any socket. */
  constructor() {
    for (const signal of SIGNALS) process.on(signal, () => this.#receive(signal));
  }

  #receive(signal: HandledSignal): void {
    const fns = this.#handlers.get(signal);
    if (fns !== undefined) {
      for (const fn of fns) fn(signal);
      return;
    }
    const repeat = this.#held.has(signal);
    this.#held.add(signal);
    this.onHeld?.(signal, repeat);
  }

  /** Whether `signal` arrived and waits for its handler. */
  isHeld(signal: HandledSignal): boolean {
    return this.#held.has(signal);
  }

  handle(signal: HandledSignal, fn: (signal: HandledSignal) => void): void {
    const fns = this.#handlers.get(signal);
    if (fns === undefined) this.#handlers.set(signal, [fn]);
    else fns.push(fn);
    if (this.#held.delete(signal)) fn(signal);
  }
}
