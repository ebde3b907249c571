/**
 * Sticky sessions ("loadBalancing": "cookie"): the target a client's cookie
 * names, and the Set-Cookie that names the target a response came from when
 * the client's cookie did not already say so.
 */
import type { OutgoingHttpHeaders } from 'node:http';
import type { UpstreamPlan } from '../config/plan.js';
import type { Target } from '../upstream/target.js';

/** The value of cookie `name` in a Cookie header ("a=1; b=2"), or undefined. */
export function readCookie(header: string | string[] | undefined, name: string): string | undefined {
  if (header === undefined) return undefined;
  const text = Array.isArray(header) ? header.join('; ') : header;
  let at = 0;
  while (at < text.length) {
    let end = text.indexOf(';', at);
    if (end === -1) end = text.length;
    const eq = text.indexOf('=', at);
    if (eq !== -1 && eq < end && text.slice(at, eq).trim() === name) return text.slice(eq + 1, end).trim();
    at = end + 1;
  }
  return undefined;
}

/** The Set-Cookie for a response from `target`, or undefined when the client's cookie (`sent`) names it already. */
export function stickySetCookie(u: UpstreamPlan, target: Target, sent: string | undefined, secure: boolean): string | undefined {
  const sticky = u.sticky!;
  const value = sticky.values[u.targets.indexOf(target)];
  if (value === undefined || value === sent) return undefined;
  return `${sticky.cookie}=${value}; Path=/; HttpOnly; SameSite=Lax${secure ? '; Secure' : ''}`;
}

/** Adds a Set-Cookie to a header object, after the upstream's own. */
export function addSetCookie(headers: OutgoingHttpHeaders, cookie: string): void {
  const prev = headers['set-cookie'];
  headers['set-cookie'] = prev === undefined ? [cookie] : Array.isArray(prev) ? [...prev, cookie] : [String(prev), cookie];
}
