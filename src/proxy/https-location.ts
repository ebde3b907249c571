/**
 * Where the plain HTTP listener sends a host that is not served over plain HTTP: the same host, path and
 * query on https, with the HTTPS listener's port when it is not 443.
 */
import type { Plan } from '../config/plan.js';

/** The https URL for `host` (normalised, no port) and the request target `url` (a non-origin-form target becomes "/"). */
export function httpsLocation(plan: Plan, host: string, url: string): string {
  const hostPart = host.includes(':') ? `[${host}]` : host;
  return `https://${hostPart}${plan.httpsPortSuffix}${url.startsWith('/') ? url : '/'}`;
}
