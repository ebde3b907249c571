/**
 * Pre-flight checks of a server under test: one HTTPS and one plain request,
 * so a misconfigured server is reported as such instead of as a fast one.
 */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { TLSSocket } from 'node:tls';
import { CLIENT_CIPHERS } from './client-tls.js';
import { BENCH_HOST } from './workspace.js';

/** The outcome of one probe request. */
export interface ProbeResult {
  readonly status: number;
  readonly bodyBytes: number;
  /** e.g. "TLSv1.3 TLS_AES_256_GCM_SHA384" for HTTPS. */
  readonly tls?: string;
  readonly location?: string;
}

/** GET `path` from 127.0.0.1:port with Host (and SNI) bench.localhost; rejects after timeoutMs. */
export function probe(scheme: 'http' | 'https', port: number, path = '/', timeoutMs = 5000): Promise<ProbeResult> {
  return new Promise((resolve, reject) => {
    const opts = {
      host: '127.0.0.1',
      port,
      path,
      headers: { host: `${BENCH_HOST}:${port}` },
      agent: false as const,
      timeout: timeoutMs,
    };
    const req =
      scheme === 'https'
        ? httpsRequest({ ...opts, servername: BENCH_HOST, rejectUnauthorized: false, ciphers: CLIENT_CIPHERS })
        : httpRequest(opts);
    req.once('timeout', () => req.destroy(new Error(`no response within ${timeoutMs} ms`)));
    req.once('error', reject);
    req.once('response', (res) => {
      let bodyBytes = 0;
      const socket = res.socket as TLSSocket;
      const tls =
        scheme === 'https' && typeof socket.getProtocol === 'function'
          ? `${socket.getProtocol() ?? '?'} ${socket.getCipher()?.name ?? '?'}`
          : undefined;
      res.on('data', (d: Buffer) => (bodyBytes += d.length));
      res.once('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          bodyBytes,
          ...(tls ? { tls } : {}),
          ...(res.headers.location ? { location: res.headers.location } : {}),
        }),
      );
      res.once('error', reject);
    });
    req.end();
  });
}
