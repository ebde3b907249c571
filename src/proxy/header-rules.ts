/**
 * Configured header rules, compiled once per route (a host's rules merged with
 * the route's) and applied to each proxied request and response. A route
 * without rules has none (undefined) and pays nothing.
 */
import type { OutgoingHttpHeaders } from 'node:http';
import type { HeaderRulesConfig } from '../config/schema.js';
import { lowerName } from '../http1/header-name.js';

/** One direction's changes: names to remove (lower case, including the ones set), then pairs to set. */
export interface HeaderChanges {
  readonly remove: ReadonlySet<string>;
  /** [name as written, value] */
  readonly set: readonly (readonly [string, string])[];
  /** `remove` without the names set: [lower-case name] (a name set is replaced in place of its removal). */
  readonly removeOnly: readonly string[];
  /** `set` with lower-case names, for header objects. */
  readonly setLower: readonly (readonly [string, string])[];
  /**
   * Bit n is set when a name in `remove` has a length of n modulo 32: a header name whose length has no bit
   * set is none of them, and is not lower-cased to be looked up.
   */
  readonly lengthMask: number;
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
  const removeOnly = [...remove];
  for (const lower of set.keys()) remove.add(lower);
  if (remove.size === 0) return undefined;
  let lengthMask = 0;
  for (const name of remove) lengthMask |= 1 << (name.length & 31);
  return { remove, set: [...set.values()], removeOnly: removeOnly.filter((n) => !set.has(n)), setLower: [...set].map(([lower, [, value]]) => [lower, value] as const), lengthMask };
}

/** A route's rules: its host's, then its own (a route's "set" wins for the same name); undefined when there are none. */
export function compileHeaderRules(host: HeaderRulesConfig | undefined, route: HeaderRulesConfig | undefined): CompiledHeaderRules | undefined {
  const request = mergeDirection(host?.request, route?.request);
  const response = mergeDirection(host?.response, route?.response);
  return request === undefined && response === undefined ? undefined : { request, response };
}

/**
 * Applies changes to a header object whose names are lower case (requests, and responses to HTTP/2 clients).
 * A header set goes last, as a new one, whether or not the message had it. Only names present are deleted:
 * deleting an absent one takes V8's slow path.
 */
export function applyToObject(headers: OutgoingHttpHeaders, c: HeaderChanges): void {
  const { removeOnly, setLower } = c;
  for (let i = 0; i < removeOnly.length; i++) {
    const name = removeOnly[i] as string;
    if (headers[name] !== undefined) delete headers[name];
  }
  for (let i = 0; i < setLower.length; i++) {
    const [name, value] = setLower[i] as readonly [string, string];
    if (headers[name] !== undefined) delete headers[name];
    headers[name] = value;
  }
}

/**
 * Applies changes to flat [name, value, …] pairs (responses to HTTP/1.1 clients), keeping names as written.
 * What comes out is as valid as what went in: the names and values set were checked with the config.
 */
export function applyToPairs(pairs: string[], c: HeaderChanges): string[] {
  const out: string[] = [];
  const { remove, lengthMask } = c;
  for (let i = 0; i + 1 < pairs.length; i += 2) {
    const name = pairs[i] as string;
    if (((lengthMask >>> (name.length & 31)) & 1) === 1 && remove.has(lowerName(name))) continue;
    out.push(name, pairs[i + 1] as string);
  }
  for (const [name, value] of c.set) out.push(name, value);
  return out;
}
