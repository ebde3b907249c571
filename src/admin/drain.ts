/**
 * Draining upstream targets over the admin API (`POST /targets/drain`, `POST /targets/enable`), as
 * HAProxy's `set server … state drain` does: a drained target gets no new requests or upgrades, while
 * those already on it run to their end, and its health checks go on. The state lives in the process's
 * TargetRegistry (src/upstream/target.ts), keyed by URL, so it holds across reloads; with workers the
 * primary holds the set too and every worker follows it (src/cluster/drained-targets.ts).
 *
 * Not on the request path: drain state is folded into `Target.available` when it changes.
 */
import type { RoutePlan, UpstreamPlan } from '../config/plan.js';
import type { Portico } from '../server/portico.js';
import { targetUrlOf } from '../upstream/target.js';
import { checkTargetUrl } from '../config/target-url.js';
import { describeJson, parseJsonObject } from './json-body.js';

/** What the drain endpoints take, as shown in their error messages. */
export const DRAIN_BODY_EXAMPLE = '{"target": "http://10.0.0.5:8080"}';

/** Largest body the drain endpoints read: a URL needs far less. */
export const MAX_DRAIN_BODY_BYTES = 16 * 1024;

/** One process's answer to a drain or an enable. */
export interface ProcessDrain {
  readonly pid: number;
  /** Some route's upstream in this process's config has the target; when not, nothing changed. */
  readonly found: boolean;
  /** Targets whose state this request changed (0 when they already were so; one URL can be several targets with other settings). */
  readonly changed: number;
  /** How many upstreams have the target (each route that forwards has its own). */
  readonly upstreams: number;
  /** The routes ("host path") whose upstream has the target. */
  readonly routes: readonly string[];
  /** Every target URL in this process's config, when the target was not found: what the caller could have meant. */
  readonly known?: readonly string[];
}

/** A drain request's target, normalised as the config's target URLs are, or what is wrong with the request. */
export type ParsedDrainRequest = { readonly ok: true; readonly url: string } | { readonly ok: false; readonly error: string };

/** The target URL in the form Portico names targets (targetUrlOf), or why `s` is not an upstream target URL. */
function normaliseTargetUrl(s: string): ParsedDrainRequest {
  const shown = JSON.stringify(s.length > 200 ? `${s.slice(0, 200)}…` : s);
  // Said apart from "not a URL": "10.0.0.5:8080" is the usual slip.
  if (!s.startsWith('unix:') && !/^[a-z][a-z0-9+.-]*:\/\//i.test(s)) {
    return { ok: false, error: `"target" ${shown} has no scheme; write the target URL as the config does, with http://, https:// or h2c:// (such as "http://10.0.0.5:8080"), or "unix:/path.sock"` };
  }
  // The config's own rule (src/config/target-url.ts), worded for the admin API.
  const c = checkTargetUrl(s);
  if (c.ok) return { ok: true, url: targetUrlOf(c.url) };
  const error = {
    unix: `"target" ${shown} is not a Unix socket target; write it as the config does, such as "unix:/run/app.sock"`,
    'not-a-url': `"target" ${shown} is not a URL; write the target as the config does, such as ${DRAIN_BODY_EXAMPLE}`,
    scheme: `"target" ${shown} is not an upstream target URL: expected scheme http://, https:// or h2c://, or "unix:/path.sock", as in the config`,
    'more-than-a-server': `"target" ${shown} has more than a server: a target URL is scheme, host and port only (such as "http://10.0.0.5:8080"), as in the config`,
  }[c.problem];
  return { ok: false, error };
}

/** Reads a drain request's body: exactly `{"target": "<URL>"}`. Every error says what was wrong and what to send. */
export function parseDrainRequest(text: string): ParsedDrainRequest {
  if (text.trim() === '') return { ok: false, error: `the request has no body; send JSON such as ${DRAIN_BODY_EXAMPLE}` };
  const parsed = parseJsonObject(text, ['target'], 'one key, "target"', DRAIN_BODY_EXAMPLE);
  if (!parsed.ok) return parsed;
  const body = parsed.body;
  if (!('target' in body)) return { ok: false, error: `the request body has no "target"; send the target's URL as the config writes it: ${DRAIN_BODY_EXAMPLE}` };
  const target = body['target'];
  if (typeof target !== 'string') return { ok: false, error: `"target" must be a string, the target's URL as the config writes it, not ${describeJson(target)}: ${DRAIN_BODY_EXAMPLE}` };
  return normaliseTargetUrl(target);
}

/** Every route of the Plan (routes sharing a path included), once each. */
function* allRoutes(p: Portico): Generator<RoutePlan> {
  const plan = p.state?.plan;
  if (plan === undefined) return;
  const seen = new Set<RoutePlan>();
  for (const host of plan.hosts) {
    for (const first of host.routes.values()) {
      for (let r: RoutePlan | undefined = first; r !== undefined && !seen.has(r); r = r.orElse) {
        seen.add(r);
        yield r;
      }
    }
  }
}

/**
 * Drains (or re-enables) every upstream target with this URL in this process, when the current Plan has
 * it; a URL it lacks changes nothing and the answer lists the targets it has.
 */
export function setDrainedInProcess(p: Portico, url: string, drained: boolean): ProcessDrain {
  const routes: string[] = [];
  const upstreams = new Set<UpstreamPlan>();
  for (const r of allRoutes(p)) {
    const u = r.upstream;
    if (u === undefined || !u.targets.some((t) => t.url === url)) continue;
    routes.push(r.id);
    upstreams.add(u);
  }
  if (upstreams.size === 0) {
    // An enable always clears the URL, so nothing stale stays in the registry.
    if (!drained) p.targets.setDrained(url, false);
    const known = [...new Set([...p.targets.all()].map((t) => t.url))].sort();
    return { pid: process.pid, found: false, changed: 0, upstreams: 0, routes: [], known };
  }
  const changed = p.targets.setDrained(url, drained).length;
  return { pid: process.pid, found: true, changed, upstreams: upstreams.size, routes };
}
