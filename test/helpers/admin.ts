/** Talking to the admin API in tests: requests with a token and a body, and reading metric values. */
import http from 'node:http';

/** An admin API answer. */
export interface AdminResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
}

/** One request to the admin API on 127.0.0.1; `body` is sent as it is (a string) or as JSON (anything else). */
export function adminRequest(port: number, method: string, path: string, opts: { token?: string; body?: unknown } = {}): Promise<AdminResponse> {
  const body = opts.body === undefined ? undefined : typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body);
  return new Promise((resolve, reject) => {
    const headers: http.OutgoingHttpHeaders = {};
    if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const req = http.request({ host: '127.0.0.1', port, method, path, headers, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** The value of one metric line (`name{labels} value`) of a metrics page, or undefined. */
export function metricValue(page: string, nameAndLabels: string): number | undefined {
  const line = page.split('\n').find((l) => l.startsWith(`${nameAndLabels} `));
  return line === undefined ? undefined : Number(line.slice(nameAndLabels.length + 1));
}
