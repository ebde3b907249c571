/**
 * A warn line for something that can repeat many times a second (connections dropped at a limit, PROXY
 * headers refused, admin tokens guessed): the first at once with its facts, then at most one line a
 * minute with how many more came, so the log says what happens without being flooded by it.
 */

/** What a throttled warn line writes to. */
export interface WarnLog {
  warn(obj: object, msg: string): void;
}

/** How often at most the count of the repeats is written. */
const INTERVAL_MS = 60_000;

/**
 * Returns the function to call at each occurrence, with its facts: the first of a minute is logged at once
 * as `first`; the others of that minute are counted, and logged when it ends as one `more` line with the
 * last one's facts and their number under `countKey`. The timer is unref'd and needs no stopping.
 */
export function throttledWarn(log: WarnLog, first: string, more: string, countKey: string): (facts: object) => void {
  let count = 0;
  let last: object = {};
  let timer: NodeJS.Timeout | undefined;
  const flush = (): void => {
    timer = undefined;
    if (count > 0) log.warn({ ...last, [countKey]: count }, more);
    count = 0;
  };
  return (facts) => {
    if (timer !== undefined) {
      count++;
      last = facts;
      return;
    }
    log.warn(facts, first);
    timer = setTimeout(flush, INTERVAL_MS);
    timer.unref();
  };
}
