/**
 * Configured header rules, compiled once per route (a host's rules merged with
 * the route's) and applied to each proxied request and response. A route
 * without rules has none (undefined) and pays nothing.
 */
import type { OutgoingHttpHeaders } from 'node:http';
import type { HeaderRulesConfig } from '../config/schema.js';

/** One direction's changes: names to remove (lower case, including the ones set), then pairs to set. */
export interface HeaderChanges {
  readonly remove: ReadonlySet<string>;
  /** [name as written, value] */
  readonly set: readonly (readonly [string, string])[];
}

export interface CompiledHeaderRules {
  readonly request: HeaderChanges | undefined;
  readonly response: HeaderChanges | undefined;
}

function mergeDirection(host: { set: Record<string, string>; remove: string[] } | undefined, route: { set: Record<string, string>; remove: string[] } | undefined): HeaderChanges | undefined {
  if (host === undefined && route === undefined) return undefined;
  const set = new Map<string, [string, string]>();
  const remove = new Set<string>();
  for (const part of [host, route]) {
    if (part === undefined) continue;
    for (const name of part.remove) remove.add(name.toLowerCase());
    for (const [name, value] of Object.entries(part.set)) set.set(name.toLowerCase(), [name, value]);
  }
  for (const lower of set.keys()) remove.add(lower);
  if (remove.size === 0) return undefined;
  return { remove, set: [...set.values()] };
}

/** A route's rules: its host's, then its own (a route's "set" wins for the same name); undefined when there are none. */
export function compileHeaderRules(host: HeaderRulesConfig | undefined, route: HeaderRulesConfig | undefined): CompiledHeaderRules | undefined {
  const request = mergeDirection(host?.request, route?.request);
  const response = mergeDirection(host?.response, route?.response);
  return request === undefined && response === undefined ? undefined : { request, response };
}

/** Applies changes to a header object whose names are lower case (requests, and responses to HTTP/2 clients). */
export function applyToObject(headers: OutgoingHttpHeaders, c: HeaderChanges): void {
  for (const name of c.remove) delete headers[name];
  for (const [name, value] of c.set) headers[name.toLowerCase()] = value;
}

/** Applies changes to flat [name, value, …] pairs (responses to HTTP/1.1 clients), keeping names as written. */
export function applyToPairs(pairs: string[], c: HeaderChanges): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < pairs.length; i += 2) {
    if (!c.remove.has((pairs[i] as string).toLowerCase())) out.push(pairs[i] as string, pairs[i + 1] as string);
  }
  for (const [name, value] of c.set) out.push(name, value);
  return out;
}
