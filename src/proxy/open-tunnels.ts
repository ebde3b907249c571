/**
 * The open tunnels (WebSockets and other upgrades, over HTTP/1.1 or HTTP/2) of one Portico, so that a reload can
 * close those the new config no longer serves: a tunnel whose host is gone, or whose request the new config routes
 * to another route or to none (the route removed, its path changed, a route that answers itself in its place).
 * Without this such a tunnel went on for as long as its client and upstream kept it, past a config that had taken
 * its route away, with the gates (allowFrom, basicAuth) of a route that no longer exists. Caddy closes a removed
 * route's WebSockets when its config is unloaded (after `stream_close_delay`, none by default); nginx's old workers
 * keep them until `worker_shutdown_timeout`. Portico has no old process to bound them, so it closes them at once.
 * A tunnel whose route is kept stays open, its target removed or not (as a request in flight finishes where it
 * started; the target closing its side ends the tunnel); the admin API's drain moves new tunnels off a target.
 * Cold path: once per tunnel opened and closed, and once per reload.
 */
import { lookupHost, lookupRoute, type Plan } from '../config/plan.js';
import type { UpgradeRequest } from './upgrade-client.js';

/** The `reason` on the access line of a tunnel a reload closed. */
export const CONFIG_RELOAD = 'config reload';

/** One open tunnel: the request it was routed by, its route, and how to close it. */
export interface OpenTunnel {
  /** The host name it was routed by (normalised, without port). */
  readonly host: string;
  /** The path it was routed by (normalised). */
  readonly url: string;
  readonly req: UpgradeRequest;
  /** Its route's id (`host path`). */
  readonly routeId: string;
  /** Closes both sides; `reason` goes on its access line. */
  close(reason: string): void;
}

/**
 * Closes the tunnels of `tunnels` that `plan` no longer routes to the route they were opened on; returns how many.
 * Each closes with `reason` "config reload" on its access line.
 */
export function closeUnservedTunnels(tunnels: ReadonlySet<OpenTunnel>, plan: Plan): number {
  let closed = 0;
  for (const t of [...tunnels]) {
    const host = lookupHost(plan, t.host);
    const route = host === undefined ? undefined : lookupRoute(host, t.url, t.req);
    if (route !== undefined && route.id === t.routeId && route.upstream !== undefined) continue;
    t.close(CONFIG_RELOAD);
    closed++;
  }
  return closed;
}
