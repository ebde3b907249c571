/**
 * The upstream target URLs drained over the admin API, with `workers`: the primary holds the set (its
 * admin API changes it, src/admin/cluster-backend.ts) and every worker follows it, over the cluster's
 * IPC channel.
 *
 * - A worker asks for the set before it builds its first Plan, as it asks for the ticket secret, so
 *   one restarted after a crash never sends a drained target a request.
 * - The primary sends the set again once a worker answers admin requests: a drain made while that
 *   worker was starting reached the primary but not it.
 * - A worker tells the primary which drained URLs a reload removed from its config; the primary
 *   forgets them, as the worker does (a URL that comes back later starts in rotation).
 *
 * The worker asks, with its handler already in place: a message the primary sent unasked could arrive
 * before any handler and be lost.
 */
import cluster, { type Worker } from 'node:cluster';
import type { Logger } from 'pino';
import type { TargetRegistry } from '../upstream/target.js';

const ASK = 'portico:drained?';
const SET = 'portico:drained';
const FORGOTTEN = 'portico:drain-forgotten';

interface UrlsMessage {
  readonly type: typeof SET | typeof FORGOTTEN;
  readonly urls: readonly string[];
}

function typeOf(msg: unknown): unknown {
  return typeof msg === 'object' && msg !== null ? (msg as { type?: unknown }).type : undefined;
}

function isUrls(msg: unknown, type: UrlsMessage['type']): msg is UrlsMessage {
  if (typeOf(msg) !== type) return false;
  const urls = (msg as { urls?: unknown }).urls;
  return Array.isArray(urls) && urls.every((u) => typeof u === 'string');
}

let primarySet: Set<string> | undefined;
const primaryListeners: ((drained: ReadonlySet<string>) => void)[] = [];

/** Primary: calls `fn` with the whole drained set after each change of it (admin.stateFile keeps it on disk). */
export function onPrimaryDrainsChanged(fn: (drained: ReadonlySet<string>) => void): void {
  primaryListeners.push(fn);
}

/** Primary: tells the listeners of onPrimaryDrainsChanged that the set changed. */
export function primaryDrainsChanged(): void {
  const set = primaryDrainedTargets();
  for (const fn of primaryListeners) fn(set);
}

/**
 * Primary: the drained URLs. The first call starts answering workers that ask for them and forgetting
 * the URLs workers report gone; runPrimary calls it before it forks any worker.
 */
export function primaryDrainedTargets(): Set<string> {
  if (primarySet !== undefined) return primarySet;
  const set = new Set<string>();
  primarySet = set;
  cluster.on('message', (worker, msg: unknown) => {
    if (typeOf(msg) === ASK) sendDrainedTargets(worker);
    else if (isUrls(msg, FORGOTTEN)) {
      const before = set.size;
      for (const url of msg.urls) set.delete(url);
      if (set.size !== before) primaryDrainsChanged();
    }
  });
  return set;
}

/** Primary: sends a worker the whole drained set, which replaces its own. */
export function sendDrainedTargets(worker: Worker): void {
  const message: UrlsMessage = { type: SET, urls: [...primaryDrainedTargets()] };
  // With a callback, a worker that died meanwhile is an ignored error here, not an 'error' event that would end the primary.
  worker.send(message, undefined, () => {});
}

/**
 * Worker: makes `registry` follow the primary's drained set from now on, and tells the primary the drained
 * URLs a reload forgets. Resolves once the first set has arrived, or after `timeoutMs` (logged), so the
 * caller can build its first Plan with it. Does nothing outside a cluster worker.
 */
export function followPrimaryDrains(registry: TargetRegistry, log: Logger, timeoutMs = 5_000): Promise<void> {
  const send = process.send?.bind(process);
  if (send === undefined || !cluster.isWorker) return Promise.resolve();
  registry.onDrainForgotten((urls) => {
    const message: UrlsMessage = { type: FORGOTTEN, urls };
    send(message, undefined, {}, () => {});
  });
  return new Promise((resolve) => {
    let waiting = true;
    const timer = setTimeout(() => {
      waiting = false;
      log.warn({}, 'the primary did not send its drained upstream targets within 5 s; this worker starts with none drained until it does');
      resolve();
    }, timeoutMs);
    process.on('message', (msg: unknown) => {
      if (!isUrls(msg, SET)) return;
      registry.replaceDrained(msg.urls);
      if (!waiting) return;
      waiting = false;
      clearTimeout(timer);
      resolve();
    });
    send({ type: ASK }, undefined, {}, () => {});
  });
}
