/**
 * Asking an OCSP responder: one HTTP POST of a DER OCSPRequest (RFC 6960 Appendix A.1), over node:http or
 * node:https, bounded in time and size. Background work of the stapler (ocsp-stapler.ts), never on a request's path.
 */
import http from 'node:http';
import https from 'node:https';

/** Largest response read: a basic response with a delegated responder certificate is a few KiB. */
const MAX_RESPONSE_BYTES = 64 * 1024;

/** POSTs `request` to `url` and resolves with the response body; rejects with the reason (status, network error, timeout, size). */
export function fetchOcspResponse(url: string, request: Buffer, timeoutMs: number, signal: AbortSignal): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const target = new URL(url);
    const client = target.protocol === 'https:' ? https : http;
    const req = client.request(target, {
      method: 'POST',
      headers: { 'content-type': 'application/ocsp-request', accept: 'application/ocsp-response', 'content-length': request.length },
      signal,
    });
    const timer = setTimeout(() => req.destroy(new Error(`no response within ${timeoutMs} ms`)), timeoutMs);
    timer.unref();
    const fail = (err: Error): void => {
      clearTimeout(timer);
      reject(err);
    };
    req.on('error', fail);
    req.on('response', (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        req.destroy();
        return fail(new Error(`the responder answered HTTP ${res.statusCode ?? '?'}`));
      }
      const chunks: Buffer[] = [];
      let bytes = 0;
      res.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
        if (bytes > MAX_RESPONSE_BYTES) return req.destroy(new Error(`the response exceeds ${MAX_RESPONSE_BYTES} bytes`));
        chunks.push(chunk);
      });
      res.on('error', fail);
      res.on('end', () => {
        clearTimeout(timer);
        resolve(Buffer.concat(chunks));
      });
    });
    req.end(request);
  });
}
