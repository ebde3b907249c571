/**
 * `GET /config`: the config a process serves, as it runs it: after `${ENV}` substitution and with every
 * default filled in (as Caddy's `GET /config/` shows its own), so an operator can see what a setting
 * came to. Secrets are replaced by "(redacted)": basicAuth password hashes and the ACME EAB HMAC key.
 */
import type { Config } from '../config/schema.js';

export const REDACTED = '(redacted)';

type BasicAuthLike = { readonly users: Readonly<Record<string, string>> } | false | undefined;

function redactUsers<T extends BasicAuthLike>(auth: T): T {
  if (auth === undefined || auth === false) return auth;
  return { ...auth, users: Object.fromEntries(Object.keys(auth.users).map((u) => [u, REDACTED])) };
}

/** A copy of `config` with its secrets replaced. */
export function redactConfig(config: Config): Config {
  const hosts: Config['hosts'] = {};
  for (const [name, host] of Object.entries(config.hosts)) {
    hosts[name] = { ...host, basicAuth: redactUsers(host.basicAuth), routes: host.routes.map((r) => ({ ...r, basicAuth: redactUsers(r.basicAuth) })) };
  }
  const acme = config.acme === undefined ? undefined : { ...config.acme, eab: config.acme.eab === undefined ? undefined : { ...config.acme.eab, hmacKey: REDACTED } };
  return { ...config, hosts, acme };
}
