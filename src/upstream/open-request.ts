/**
 * Opening one request to a target with the transport its kind calls for:
 * node:http(s) keep-alive agents for HTTP/1.1, http2-wrapper for HTTP/2.
 * Both return an object with ClientRequest's shape ('response', 'error',
 * write/end, setTimeout, destroy).
 */
import http from 'node:http';
import https from 'node:https';
import type { OutgoingHttpHeaders } from 'node:http';
import http2wrapper from 'http2-wrapper';
import type { Target } from './target.js';

/** The parts of a client request Portico uses, common to both transports. */
export type UpstreamRequest = http.ClientRequest;

/** Opens a request to `target`. Throws synchronously on invalid header values (caller answers 400). Hot path. */
export function openUpstreamRequest(
  target: Target,
  method: string,
  path: string,
  headers: OutgoingHttpHeaders,
): UpstreamRequest {
  switch (target.kind) {
    case 'h1':
      return http.request({ agent: target.h1Agent, host: target.hostname, port: target.port, method, path, headers, setHost: false });
    case 'h1-tls':
    case 'auto-tls':
      return https.request({ agent: target.h1Agent, host: target.hostname, port: target.port, method, path, headers, setHost: false, ...target.tlsOptions() });
    case 'h2-tls': {
      headers[':authority'] = headers.host;
      delete headers.host;
      return http2wrapper.request({
        agent: target.h2Agent,
        hostname: target.hostname,
        port: target.port,
        method,
        path,
        headers,
        ...target.tlsOptions(),
      }) as unknown as UpstreamRequest;
    }
    case 'h2c': {
      headers[':authority'] = headers.host;
      delete headers.host;
      return http2wrapper.request({ h2session: target.h2cSession(), method, path, headers }) as unknown as UpstreamRequest;
    }
  }
}
