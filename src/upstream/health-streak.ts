/**
 * The rise/fall rule of active health checks (HAProxy's "rise" and "fall"), shared by HTTP upstream
 * targets (health.ts) and stream targets (src/stream/stream-health.ts): a target changes state after
 * `unhealthyAfter` failed checks in a row, or `healthyAfter` passed ones in a row, and a check that
 * agrees with its current state starts the count again.
 */
export class HealthStreak {
  /** The state the checks have settled on; a target starts healthy. */
  healthy = true;
  #streak = 0;
  readonly #healthyAfter: number;
  readonly #unhealthyAfter: number;

  constructor(healthyAfter: number, unhealthyAfter: number) {
    this.#healthyAfter = healthyAfter;
    this.#unhealthyAfter = unhealthyAfter;
  }

  /** Counts one check; true when it changed the state. */
  record(passed: boolean): boolean {
    if (passed === this.healthy) {
      this.#streak = 0;
      return false;
    }
    if (++this.#streak < (passed ? this.#healthyAfter : this.#unhealthyAfter)) return false;
    this.#streak = 0;
    this.healthy = passed;
    return true;
  }
}
