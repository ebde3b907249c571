/**
 * A route's own answer instead of forwarding: a redirect, whose Location is a
 * template compiled once at config time, or a fixed response. Hot path for such
 * routes: the template is filled by concatenation, the body is a ready Buffer.
 */
import type { OutgoingHttpHeaders } from 'node:http';
import type { RedirectConfig, RespondConfig } from '../config/schema.js';
import { applyToObject, type HeaderChanges } from './header-rules.js';

/** A literal piece of a Location, or a placeholder: 0 {host}, 1 {uri}, 2 {path}, 3 {query}. */
export type LocationPart = string | 0 | 1 | 2 | 3;

/** What a "redirect" or "respond" route answers. */
export interface AnswerPlan {
  readonly status: number;
  /** Redirects: the Location template; undefined for fixed answers. */
  readonly location: readonly LocationPart[] | undefined;
  readonly body: Buffer;
  /** Fixed answers: the body's media type. */
  readonly contentType: string | undefined;
}

const PLACEHOLDER_INDEX: Readonly<Record<string, LocationPart>> = { '{host}': 0, '{uri}': 1, '{path}': 2, '{query}': 3 };

/** Splits a validated "to" into literals and placeholders. */
function compileLocation(to: string): LocationPart[] {
  const parts: LocationPart[] = [];
  let at = 0;
  for (const m of to.matchAll(/\{(?:host|uri|path|query)\}/g)) {
    if (m.index > at) parts.push(to.slice(at, m.index));
    parts.push(PLACEHOLDER_INDEX[m[0]] as LocationPart);
    at = m.index + m[0].length;
  }
  if (at < to.length) parts.push(to.slice(at));
  return parts;
}

const EMPTY = Buffer.alloc(0);

/** The answer of a route with "redirect" or "respond", or undefined for a route that forwards. */
export function compileAnswer(redirect: RedirectConfig | undefined, respond: RespondConfig | undefined): AnswerPlan | undefined {
  if (redirect !== undefined) {
    const spec = typeof redirect === 'string' ? { to: redirect, status: 302 } : redirect;
    return { status: spec.status, location: compileLocation(spec.to), body: EMPTY, contentType: undefined };
  }
  if (respond !== undefined) {
    return { status: respond.status, location: undefined, body: Buffer.from(respond.body, 'utf8'), contentType: respond.body === '' ? undefined : respond.contentType };
  }
  return undefined;
}

/** Fills a Location template for one request; `uri` is its path and query after the route's rewrite. Hot path. */
export function fillLocation(parts: readonly LocationPart[], host: string, uri: string): string {
  let out = '';
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i] as LocationPart;
    if (typeof p === 'string') out += p;
    else if (p === 0) out += host;
    else if (p === 1) out += uri;
    else {
      const q = uri.indexOf('?');
      if (p === 2) out += q === -1 ? uri : uri.slice(0, q);
      else if (q !== -1) out += uri.slice(q + 1);
    }
  }
  return out;
}

/** The head of an answer, as a header object with lower-case names, the route's response rules applied. */
export function answerHeaders(a: AnswerPlan, host: string, uri: string, rules: HeaderChanges | undefined): OutgoingHttpHeaders {
  const headers: OutgoingHttpHeaders = { 'content-length': a.body.length };
  if (a.location !== undefined) headers.location = fillLocation(a.location, host, uri);
  if (a.contentType !== undefined) headers['content-type'] = a.contentType;
  if (rules !== undefined) applyToObject(headers, rules);
  return headers;
}
