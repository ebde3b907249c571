/**
 * The primary's check, before it forks any worker, that every configured listener can be bound: a port
 * another process holds, or one below 1024 without the privilege, then ends the start with the reason
 * (as a single process reports it) instead of a crash loop of workers. It also keeps a second Portico
 * from joining the first's port: workers that bind with SO_REUSEPORT would otherwise share it silently,
 * while a bind without SO_REUSEPORT, as here, fails on it.
 */
import net from 'node:net';
import type { Config } from '../config/schema.js';
import { isIpv6Unavailable, listenFailed, listenOptions } from '../listen/listen-options.js';

function tryBind(port: number, address: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(listenOptions(port, address, false), () => server.close(() => resolve()));
  });
}

/** Binds and releases each listener address in turn; rejects with PORTICO_LISTEN_FAILED for the first that fails. */
export async function probeListeners(listen: Config['listen'], streams: Config['streams'] = []): Promise<void> {
  const all: [number, string][] = listen.https.addresses.map((a) => [listen.https.port, a]);
  if (listen.http !== null) for (const a of listen.http.addresses) all.push([listen.http.port, a]);
  for (const st of streams) for (const a of st.addresses) all.push([st.port, a]);
  for (const [port, address] of all) {
    try {
      await tryBind(port, address);
    } catch (err) {
      if (isIpv6Unavailable(address, err)) continue;
      throw listenFailed(address, port, err);
    }
  }
}
