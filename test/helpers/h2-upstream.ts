/**
 * HTTP/2 test upstreams (node:http2 servers, cleartext h2c or TLS) on 127.0.0.1:0: listening, with their
 * sessions tracked so that close() ends them at once rather than waiting for clients to go.
 */
import { once } from 'node:events';
import type http2 from 'node:http2';
import type { AddressInfo } from 'node:net';

/** Listens `server` on 127.0.0.1:0; `url` has the scheme given ("h2c" or "https"). */
export async function listenH2(server: http2.Http2Server | http2.Http2SecureServer, scheme: 'h2c' | 'https'): Promise<{ url: string; close(): Promise<void> }> {
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on('session', (s: http2.ServerHttp2Session) => {
    sessions.add(s);
    s.once('close', () => sessions.delete(s));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `${scheme}://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sessions) s.destroy();
        server.close(() => r());
      }),
  };
}
