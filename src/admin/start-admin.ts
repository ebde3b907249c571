/**
 * Starting the admin API: for one process (the Portico itself answers), or for
 * a primary (its workers answer over IPC, src/admin/cluster-backend.ts).
 */
import { purgeInProcess } from './cache-purge.js';
import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import { PorticoError } from '../errors.js';
import type { Portico } from '../server/portico.js';
import { AdminServer, type AdminBackend } from './admin-server.js';
import { takeSnapshot } from './snapshot.js';
import { setDrainedInProcess } from './drain.js';
import { redactConfig } from './effective-config.js';

function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

/** Opens the admin listener; PORTICO_LISTEN_FAILED with the reason when it cannot. */
export async function startAdminServer(backend: AdminBackend, admin: NonNullable<Config['admin']>, log: Logger): Promise<AdminServer> {
  const server = new AdminServer(backend, log, packageVersion());
  try {
    await server.listen(admin.port, admin.address);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new PorticoError('PORTICO_LISTEN_FAILED', `the admin API cannot listen on ${admin.address}:${admin.port} (${code}); change admin.port or stop what holds it`);
  }
  log.info({ admin: `http://${admin.address.includes(':') ? `[${admin.address}]` : admin.address}:${server.port}` }, 'admin API listening');
  return server;
}

/** The admin API's answers from this one process. */
export function localBackend(p: Portico): AdminBackend {
  return {
    snapshots: () => Promise.resolve([takeSnapshot(p)]),
    reload: async () => {
      const r = await p.reload();
      return [r.ok ? { pid: process.pid, ok: true, generation: r.generation } : { pid: process.pid, ok: false, issues: r.issues }];
    },
    setTargetDrained: (url, drained) => Promise.resolve([setDrainedInProcess(p, url, drained)]),
    purgeCache: (r) => Promise.resolve([purgeInProcess(r)]),
    effectiveConfig: () => Promise.resolve(p.config === undefined ? undefined : redactConfig(p.config)),
    tokenDigest: () => p.state?.plan.adminTokenDigest,
    serving: () => (p.state === undefined ? 0 : 1),
  };
}
