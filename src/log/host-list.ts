/**
 * The hosts a config serves, as the start and reload lines give them: at most LISTED names, so that a config
 * of thousands of hosts (a SaaS with a name per customer) does not write a line of hundreds of kilobytes
 * each time it loads, and a reload says what changed rather than the whole list again.
 */

/** Names listed in one field at most; the rest are counted in a last entry. */
const LISTED = 20;

/** `names`, at most LISTED of them, then "… and N more". */
export function listNames(names: readonly string[]): string[] {
  if (names.length <= LISTED) return [...names];
  return [...names.slice(0, LISTED), `… and ${names.length - LISTED} more`];
}

/** The log fields of a config's hosts at start: their count and the first names. */
export function hostFields(names: readonly string[]): { hostCount: number; hosts: string[] } {
  return { hostCount: names.length, hosts: listNames(names) };
}

/** The log fields of a reload: the count, and the hosts added and removed (listed as above; absent when none). */
export function hostChangeFields(before: readonly string[], after: readonly string[]): { hostCount: number; added?: string[]; removed?: string[] } {
  const was = new Set(before);
  const now = new Set(after);
  const added = after.filter((n) => !was.has(n));
  const removed = before.filter((n) => !now.has(n));
  return {
    hostCount: after.length,
    ...(added.length > 0 ? { added: listNames(added) } : {}),
    ...(removed.length > 0 ? { removed: listNames(removed) } : {}),
  };
}
