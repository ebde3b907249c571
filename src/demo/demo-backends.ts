/**
 * The demo's two backends: a users API and an orders API. GET lists the
 * records; POST stores a JSON record and echoes it back with an id.
 */
import http from 'node:http';

interface DemoApi {
  readonly path: string;
  readonly records: Record<string, unknown>[];
  nextId: number;
}

function serveApi(api: DemoApi): http.RequestListener {
  return (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const send = (status: number, body: unknown): void => {
      const text = JSON.stringify(body);
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    };
    if (path !== api.path && path !== `${api.path}/`) return send(404, { error: `not found: try ${api.path}` });
    if (req.method === 'GET' || req.method === 'HEAD') return send(200, api.records);
    if (req.method !== 'POST') return send(405, { error: 'use GET or POST' });
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > 64 * 1024) req.destroy();
      else chunks.push(c);
    });
    req.on('end', () => {
      let body: unknown;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch {
        return send(400, { error: 'expected a JSON object' });
      }
      if (body === null || typeof body !== 'object' || Array.isArray(body)) return send(400, { error: 'expected a JSON object' });
      const record = { id: api.nextId++, ...(body as Record<string, unknown>) };
      api.records.push(record);
      send(201, record);
    });
  };
}

/** Starts the users (3001) and orders (3002) APIs on 127.0.0.1; returns a function that stops them. */
export async function startDemoBackends(usersPort = 3001, ordersPort = 3002): Promise<() => Promise<void>> {
  const users: DemoApi = { path: '/users', records: [{ id: 1, name: 'Alice' }, { id: 2, name: 'Bob' }], nextId: 3 };
  const orders: DemoApi = { path: '/orders', records: [{ id: 101, item: 'Book' }, { id: 102, item: 'Laptop' }], nextId: 103 };
  const servers = [http.createServer(serveApi(users)), http.createServer(serveApi(orders))];
  await Promise.all(
    servers.map(
      (s, i) =>
        new Promise<void>((resolve, reject) => {
          s.once('error', reject);
          s.listen(i === 0 ? usersPort : ordersPort, '127.0.0.1', () => resolve());
        }),
    ),
  );
  return async () => {
    await Promise.all(servers.map((s) => new Promise<void>((r) => { s.close(() => r()); s.closeAllConnections(); })));
  };
}
