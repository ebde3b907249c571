/**
 * How acme-client talks to the CA. acme-client uses one module-wide axios
 * instance; configured once here:
 *
 * - trust: an extra CA (`acme.caFile`) per directory origin, through an
 *   https.Agent chosen per request;
 * - no transport-level retries: acme-client would otherwise sleep through a
 *   CA's Retry-After (hours, for rate limits) inside one request, and after
 *   ~75 s of retries hide ECONNREFUSED behind "Cannot read properties of
 *   undefined (reading 'config')". Failed orders are retried by the manager
 *   with its own capped backoff; badNonce is still retried by acme-client;
 * - Retry-After (RFC 8555 §6.6, rate limits and 503s) is recorded per origin
 *   so the manager waits at least that long;
 * - `probeDirectory` fetches the directory with Node's https, to report the
 *   real cause (ECONNREFUSED, an untrusted certificate, a 5xx) and to read
 *   the `renewalInfo` URL (RFC 9773).
 */
import https from 'node:https';
import acme from 'acme-client';
import type { AxiosResponse, InternalAxiosRequestConfig } from 'axios';

const agents = new Map<string, https.Agent>();
/** The CA PEM each agent trusts, to keep the agent when a reload brings the same one. */
const agentPems = new Map<string, string>();
const retryAfterUntil = new Map<string, number>();
let installed = false;

function originOf(url: string | undefined): string {
  try {
    return new URL(url ?? '').origin;
  } catch {
    return '';
  }
}

/** Parses a Retry-After header (delta-seconds or HTTP-date) into ms from now; 0 when absent or invalid. */
export function parseRetryAfterMs(value: unknown, now = Date.now()): number {
  if (typeof value !== 'string' || value === '') return 0;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? 0 : Math.max(0, at - now);
}

/** Configures acme-client's shared axios instance (idempotent). */
export function installAcmeTransport(): void {
  if (installed) return;
  installed = true;
  const ax = acme.axios;
  const settings = (ax.defaults as unknown as { acmeSettings: { retryMaxAttempts: number; retryDefaultDelay: number } }).acmeSettings;
  settings.retryMaxAttempts = 0;
  settings.retryDefaultDelay = 1;
  ax.defaults.timeout = 30_000;
  ax.interceptors.request.use((config: InternalAxiosRequestConfig) => {
    const agent = agents.get(originOf(config.url));
    if (agent !== undefined) config.httpsAgent = agent;
    return config;
  });
  ax.interceptors.response.use((res: AxiosResponse) => {
    if (res.status === 429 || res.status === 503) {
      const ms = parseRetryAfterMs(res.headers['retry-after']);
      if (ms > 0) retryAfterUntil.set(originOf(res.config.url), Date.now() + ms);
    }
    return res;
  });
}

/**
 * Trusts `caPem` (in addition to nothing else: a private CA) for requests to `directoryUrl`'s origin.
 * Called on every reload: the same CA keeps its agent, and a replaced agent is not destroyed, so a
 * request to the CA in flight (an order takes seconds) finishes instead of failing with ECONNRESET.
 * The agents keep no idle sockets (keepAlive off), so a dropped one holds nothing once its requests end.
 */
export function trustCaFor(directoryUrl: string, caPem: string | Buffer | undefined): void {
  const origin = originOf(directoryUrl);
  const pem = caPem?.toString();
  if (pem === agentPems.get(origin)) return;
  if (pem === undefined) {
    agents.delete(origin);
    agentPems.delete(origin);
  } else {
    agents.set(origin, new https.Agent({ ca: pem, keepAlive: false }));
    agentPems.set(origin, pem);
  }
}

/** How long the CA at `directoryUrl` asked us to wait (Retry-After), in ms from now; 0 when it did not. */
export function retryAfterMs(directoryUrl: string): number {
  const until = retryAfterUntil.get(originOf(directoryUrl));
  return until === undefined ? 0 : Math.max(0, until - Date.now());
}

/** A JSON GET answer, or why there is none. */
export type JsonResult =
  | { ok: true; status: number; body: unknown; retryAfterMs: number }
  | { ok: false; cause: string };

/** GETs `url` with Node's https and the same trust as acme-client, within `timeoutMs`. */
export function getJson(url: string, timeoutMs = 10_000): Promise<JsonResult> {
  return new Promise((resolve) => {
    const agent = agents.get(originOf(url));
    const req = https.get(url, { agent: agent ?? https.globalAgent, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', (err) => resolve({ ok: false, cause: err.message }));
      res.on('end', () => {
        const status = res.statusCode ?? 0;
        const ra = parseRetryAfterMs(res.headers['retry-after']);
        if ((status === 429 || status === 503) && ra > 0) retryAfterUntil.set(originOf(url), Date.now() + ra);
        let body: unknown;
        try {
          body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        } catch {
          body = undefined;
        }
        resolve({ ok: true, status, body, retryAfterMs: ra });
      });
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error(`no answer within ${timeoutMs} ms`), { code: 'ETIMEDOUT' })));
    req.on('error', (err: NodeJS.ErrnoException) => {
      resolve({ ok: false, cause: err.code !== undefined && !err.message.includes(err.code) ? `${err.code}: ${err.message}` : err.message });
    });
  });
}

/** The directory object (RFC 8555 §7.1.1), or why it could not be fetched. */
export type ProbeResult = { ok: true; directory: Record<string, unknown> } | { ok: false; cause: string };

/** Fetches the directory: proves the CA is reachable and trusted, and gives its resource URLs. */
export async function probeDirectory(directoryUrl: string, timeoutMs = 10_000): Promise<ProbeResult> {
  const r = await getJson(directoryUrl, timeoutMs);
  if (!r.ok) return r;
  if (r.status !== 200) return { ok: false, cause: `HTTP ${r.status} from the directory` };
  if (typeof r.body !== 'object' || r.body === null) return { ok: false, cause: 'the directory is not a JSON object' };
  return { ok: true, directory: r.body as Record<string, unknown> };
}

/** Whether an error from acme-client is its mask for a network failure (acme-client 5.4 bug). */
export function isMaskedNetworkError(err: unknown): boolean {
  return err instanceof TypeError && /reading 'config'/.test(err.message);
}
