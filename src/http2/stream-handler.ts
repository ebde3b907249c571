/**
 * The HTTP/2 server's `stream` listener: each new stream becomes a request and
 * a response (src/http2/server-request.ts, server-response.ts) handed to the
 * proxy's request handler. What node:http2's compatibility layer did before the
 * handler ran, it does too: CONNECT streams go to their own handler (WebSockets
 * over HTTP/2, RFC 8441: src/proxy/upgrade-client-h2.ts; any other CONNECT is refused there),
 * `Expect: 100-continue` gets its interim response once the body is read, any other expectation 417.
 */
import type { IncomingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import { H2ServerRequest } from './server-request.js';
import { H2ServerResponse } from './server-response.js';
import type { StreamWatch } from './stream-watch.js';

export type H2RequestListener = (req: H2ServerRequest, res: H2ServerResponse) => void;

/** Takes a CONNECT stream: an extended CONNECT (RFC 8441) for a WebSocket, or a refusal. */
export type H2ConnectListener = (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => void;

/** A stream's errors (a reset by the client, a session torn down) end it; its 'close' tells the handler. */
function ignoreStreamError(): void {}

const END_NOW = { endStream: true } as const;

/** A stream's body is wanted: its client, waiting on `Expect: 100-continue`, may send it (unless answered already). */
function sendContinue(this: ServerHttp2Stream): void {
  if (!this.headersSent && !this.destroyed) this.additionalHeaders({ ':status': 100 });
}

/**
 * A CONNECT stream its client resets before it was answered (a WebSocket whose upstream was being asked, a
 * connection opened for it) counts against the session's reset budget as a request's does (CVE-2023-44487):
 * opening and resetting WebSockets cannot make Portico open upstream connections without bound. Resets of an
 * open WebSocket are how clients close one, and are not counted. Cold path: one closure per CONNECT stream.
 */
function watchConnectReset(watch: StreamWatch, stream: ServerHttp2Stream): void {
  // Kept: node:http2 forgets a stream's session once it is destroyed, before its 'close'.
  const session = stream.session;
  stream.once('close', () => {
    if (stream.aborted && !stream.headersSent && session !== undefined && !session.destroyed && !session.closed) watch.noteClientReset(session);
  });
}

/**
 * The 'stream' listener; `watch` applies sendTimeout to each stream and counts the streams its client resets.
 * CONNECT streams go to `onConnect` (without it, 405).
 */
export function createStreamHandler(
  onRequest: H2RequestListener,
  watch: StreamWatch,
  onConnect?: H2ConnectListener,
): (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number, rawHeaders: string[]) => void {
  return function onStream(stream, headers, _flags, rawHeaders) {
    stream.on('error', ignoreStreamError);
    if (headers[':method'] === 'CONNECT') {
      if (onConnect !== undefined) {
        watchConnectReset(watch, stream);
        return onConnect(stream, headers);
      }
      stream.respond({ ':status': 405 }, END_NOW);
      return;
    }
    const expect = headers.expect;
    if (expect !== undefined) {
      if (expect.toLowerCase() !== '100-continue') {
        stream.respond({ ':status': 417 }, END_NOW);
        return;
      }
      // The interim 100 once the body is read for the upstream, as over HTTP/1.1: a request refused
      // first (413 by content-length, 401, 403, no route) gets its answer and never sends the body.
      if (!stream.endAfterHeaders) stream.once('resume', sendContinue);
    }
    const res = new H2ServerResponse(stream);
    watch.add(res);
    onRequest(new H2ServerRequest(stream, headers, rawHeaders), res);
  };
}
