/**
 * An upstream's "maxRequests" (HAProxy's maxconn, nginx's max_conns, Caddy's max_requests) and the
 * queue requests wait in while every available target is at it (HAProxy's queue and `timeout queue`).
 *
 * A request to a target of such an upstream holds one of the target's slots (`Target.limitedInFlight`,
 * on the Target, so routes that share a server share its count and a reload keeps it) from the moment
 * it is sent until its exchange ends; a retry moves it. When a slot frees, the oldest request waiting in
 * an upstream that has this target is sent to it (Target.waiting lists those upstreams). Upstreams
 * without a limit pay one number comparison per request.
 *
 * A WebSocket (or other) upgrade holds a slot too, from when it is sent until its tunnel has closed, as
 * a tunnelled connection counts against HAProxy's maxconn for its whole life (src/proxy/handle-upgrade.ts
 * takes and frees it with takeTargetSlot and freeTargetSlot). Upgrades do not wait in the queue: one that
 * finds every available target full gets 503 at once.
 */
import type { UpstreamPlan } from '../config/plan.js';
import { onAvailabilityChange, type Target } from '../upstream/target.js';
import type { Exchange } from './exchange.js';
import { fail, forward, pickTarget } from './handle-request.js';

/** Retry-After, in seconds, of a 503 for a full upstream: a moment, as the queue's own wait has passed. */
const BUSY_RETRY_AFTER: readonly [string, string] = ['retry-after', '1'];

/** The request now holds a slot of `target` (and no longer the one it held before a retry). */
export function takeSlot(ex: Exchange, target: Target): void {
  // Sent again to the same target (a kept-alive connection closed under it): it keeps its slot.
  if (ex.slot === target) return;
  if (ex.slot !== undefined) releaseSlot(ex);
  if (ex.upstream!.maxRequests === 0) return;
  takeTargetSlot(target);
  ex.slot = target;
}

/** The request's exchange ended (or it moves to another target): its slot goes to the oldest waiting request. */
export function releaseSlot(ex: Exchange): void {
  const t = ex.slot;
  if (t === undefined) return;
  ex.slot = undefined;
  freeTargetSlot(t);
}

/** One more request or tunnel holds a slot of `t`; the caller frees it once, with freeTargetSlot. */
export function takeTargetSlot(t: Target): void {
  t.limitedInFlight++;
}

/** A slot of `t` is free again: the oldest request waiting for one of its upstreams goes out. */
export function freeTargetSlot(t: Target): void {
  t.limitedInFlight--;
  if (t.waiting !== undefined) wake(t);
}

/** Whether some target of the upstream is available, at its limit or not: what tells "busy" from "none healthy". */
export function anyAvailable(u: UpstreamPlan): boolean {
  for (const t of u.targets) if (t.available) return true;
  return false;
}

/** Every available target is at its limit: the request waits for a slot, or gets 503 when the upstream has no queue. */
export function waitForSlot(ex: Exchange, affinity: number): void {
  const u = ex.upstream!;
  if (u.queueTimeoutMs === 0) return fail(ex, 'PORTICO_UPSTREAM_BUSY', `every target is at maxRequests ${u.maxRequests}`, BUSY_RETRY_AFTER);
  ex.affinity = affinity;
  ex.queueTimer = setTimeout(queueExpired, u.queueTimeoutMs, ex);
  u.queue.push(ex);
  for (const t of u.targets) (t.waiting ??= new Set()).add(u);
}

/** The client went away (or the request was answered) while it waited: it leaves the queue. */
export function leaveQueue(ex: Exchange): void {
  if (ex.queueTimer === undefined) return;
  clearTimeout(ex.queueTimer);
  ex.queueTimer = undefined;
  const u = ex.upstream!;
  const i = u.queue.indexOf(ex);
  if (i >= 0) u.queue.splice(i, 1);
  if (u.queue.length === 0) stopWaiting(u);
}

function queueExpired(ex: Exchange): void {
  leaveQueue(ex);
  const u = ex.upstream!;
  fail(ex, 'PORTICO_UPSTREAM_BUSY', `no target below maxRequests ${u.maxRequests} within queueTimeout ${u.queueTimeoutMs} ms`, BUSY_RETRY_AFTER);
}

/**
 * A target of upstreams with queued requests came into rotation (it may take them now, instead of
 * when a slot frees) or went out of it: an upstream with no available target left answers its queue
 * with 503 PORTICO_NO_HEALTHY_UPSTREAM at once, instead of after queueTimeout.
 */
function onTargetAvailability(t: Target): void {
  if (t.available) return wake(t);
  for (const u of [...t.waiting!]) {
    if (anyAvailable(u)) continue;
    for (const ex of [...u.queue]) {
      leaveQueue(ex);
      fail(ex, 'PORTICO_NO_HEALTHY_UPSTREAM', 'no target left in rotation while the request waited for a slot');
    }
  }
}

onAvailabilityChange(onTargetAvailability);

function stopWaiting(u: UpstreamPlan): void {
  for (const t of u.targets) {
    t.waiting?.delete(u);
    if (t.waiting?.size === 0) t.waiting = undefined;
  }
}

/** A slot of `t` freed: the oldest requests waiting in its upstreams go out while targets have room. */
function wake(t: Target): void {
  for (const u of [...t.waiting!]) {
    while (u.queue.length > 0) {
      const ex = u.queue[0]!;
      const target = pickTarget(u, ex.client ?? ex.req.remoteAddress, ex.affinity);
      if (target === undefined) break;
      // Leaving the queue, the last one also takes the upstream off its targets' waiting lists.
      leaveQueue(ex);
      forward(ex, target);
    }
  }
}
