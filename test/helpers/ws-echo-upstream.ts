/**
 * A `ws` echo server on 127.0.0.1:0 for the WebSocket tests (HTTP/1.1 upgrades and RFC 8441 over HTTP/2):
 * every message comes back as it was sent; plain requests get "plain"; the upgrade requests it received
 * are kept in `upgrades`.
 */
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';

export interface WsEchoUpstream {
  url: string;
  wss: WebSocketServer;
  upgrades: http.IncomingMessage[];
  close(): Promise<void>;
}

/**
 * `greeting`: a message sent to each client first; `subprotocol`: taken when a client offers it; `serve`:
 * what each WebSocket does instead of echoing (by its request, say its path).
 */
export async function wsEchoUpstream(opts: { greeting?: string; subprotocol?: string; serve?: (ws: WebSocket, req: http.IncomingMessage) => void } = {}): Promise<WsEchoUpstream> {
  const server = http.createServer((_req, res) => res.end('plain'));
  const { greeting, subprotocol } = opts;
  const wss = new WebSocketServer({ server, ...(subprotocol === undefined ? {} : { handleProtocols: (offered: Set<string>) => (offered.has(subprotocol) ? subprotocol : false) }) });
  const upgrades: http.IncomingMessage[] = [];
  server.on('upgrade', (req: http.IncomingMessage) => upgrades.push(req));
  wss.on('connection', (ws, req) => {
    if (opts.serve !== undefined) return opts.serve(ws, req);
    if (greeting !== undefined) ws.send(greeting);
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    wss,
    upgrades,
    close: () =>
      new Promise<void>((r) => {
        for (const c of wss.clients) c.terminate();
        wss.close();
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
