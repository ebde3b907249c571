/**
 * What to do about a file Portico may not read (EACCES, EPERM): name the user it runs as, since that is
 * what differs between a shell on the host and a container, where the image runs as uid 1000 and a key
 * left 0600 by root is unreadable (README, Docker).
 */

/** True for the error codes of a file that exists but may not be read by this process. */
export function isPermissionError(code: string | undefined): boolean {
  return code === 'EACCES' || code === 'EPERM';
}

/** `let the user Portico runs as (uid 1000) read it (…)`: the fix for a file this process may not read. */
export function permissionHint(): string {
  const uid = process.getuid?.();
  if (uid === undefined) return 'let the user Portico runs as read it';
  return `let the user Portico runs as (uid ${uid}) read it: chown it to that uid, or give it a group the process has (docker run --group-add) and mode 0640`;
}
