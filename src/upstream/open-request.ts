/**
 * Opening one request to an HTTP/2 target through http2-wrapper, which gives
 * an object with node:http ClientRequest's shape ('response', 'error',
 * write/end, setTimeout, destroy), its stream noting how its response ends
 * (h2-end-stream.ts). HTTP/1.1 targets go through their H1Pool
 * (proxy/forward-h1.ts).
 */
import type http from 'node:http';
import type { OutgoingHttpHeaders } from 'node:http';
import { http2Client } from './http2-client.js';
import type { Target } from './target.js';
import { noteEndOfStream } from './h2-end-stream.js';

/** The parts of a client request Portico uses, common to both transports. */
export type UpstreamRequest = http.ClientRequest;

/**
 * Opens a request to an HTTP/2 `target`, which is ready (Target.resolveProtocol() returned
 * undefined or settled). Throws synchronously on invalid header values (caller answers 400). Hot path.
 */
export function openUpstreamRequest(
  target: Target,
  method: string,
  path: string,
  headers: OutgoingHttpHeaders,
): UpstreamRequest {
  switch (target.kind) {
    case 'h1':
    case 'h1-tls':
    case 'auto-tls':
      throw new Error(`openUpstreamRequest is for HTTP/2 targets; ${target.url} is served by its HTTP/1.1 pool`);
    case 'h2-tls': {
      headers[':authority'] = headers.host;
      delete headers.host;
      const req = http2Client().request({
        agent: target.h2Agent,
        hostname: target.hostname,
        port: target.port,
        method,
        path,
        headers,
        ...target.tlsOptions(),
      });
      req.once('socket', noteEndOfStream);
      return req as unknown as UpstreamRequest;
    }
    case 'h2c': {
      headers[':authority'] = headers.host;
      delete headers.host;
      const req = http2Client().request({ h2session: target.h2cSession(), method, path, headers });
      req.once('socket', noteEndOfStream);
      return req as unknown as UpstreamRequest;
    }
  }
}
