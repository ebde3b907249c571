/**
 * A test upstream for WebSocket upgrades (ws's server on a node:http server on 127.0.0.1:0), shared by the
 * tests of what an open tunnel counts against its target (maxRequests, least-connections).
 */
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { WebSocketServer } from 'ws';

/**
 * An upstream for upgrades: plain requests get 200; upgrades to /ws become WebSockets (echo), /decline gets
 * a 403, /hold is never answered (kept in `held`), /hangup has its connection closed before any answer.
 */
export async function upgradeUpstream(): Promise<{ url: string; wss: WebSocketServer; held: Socket[]; plain: string[]; close: () => Promise<void> }> {
  const plain: string[] = [];
  const held: Socket[] = [];
  const server = http.createServer((req, res) => {
    plain.push(req.url ?? '');
    req.resume();
    res.end('plain');
  });
  const wss = new WebSocketServer({ noServer: true });
  wss.on('connection', (ws) => ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary })));
  server.on('upgrade', (req: http.IncomingMessage, socket: Socket, head: Buffer) => {
    socket.on('error', () => {});
    if (req.url === '/ws') return wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
    if (req.url === '/decline') return void socket.end('HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\nnope');
    if (req.url === '/hold') {
      held.push(socket);
      // Read on, so that the proxy's close (its FIN) is seen: the socket is then destroyed.
      socket.once('end', () => socket.destroy());
      return void socket.resume();
    }
    socket.destroy();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    wss,
    held,
    plain,
    close: () =>
      new Promise<void>((r) => {
        for (const c of wss.clients) c.terminate();
        for (const c of held) c.destroy();
        wss.close();
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** What upgradeUpstream() returns. */
export type UpgradeUpstream = Awaited<ReturnType<typeof upgradeUpstream>>;
