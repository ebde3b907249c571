/**
 * One active health check of one target: a GET of the check path over a
 * connection of its own (never a pooled one, so a check also tests that new
 * connections succeed), in the target's protocol and with its TLS settings,
 * within the check's timeout. Not on the request path.
 */
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import type { HealthSpec } from './health.js';
import type { Target } from './target.js';

const USER_AGENT = 'portico-health-check';

/** Whether `status` is what a healthy target answers. */
export function isHealthyStatus(spec: HealthSpec, status: number): boolean {
  return spec.expectStatus === undefined ? status >= 200 && status < 400 : status === spec.expectStatus;
}

/** Checks `target` once: undefined when healthy, else why not (a short reason for the log). */
export function probeTarget(target: Target, spec: HealthSpec): Promise<string | undefined> {
  return target.kind === 'h2-tls' || target.kind === 'h2c' ? probeH2(target, spec) : probeH1(target, spec);
}

function probeH1(target: Target, spec: HealthSpec): Promise<string | undefined> {
  return new Promise((resolve) => {
    const options: https.RequestOptions = {
      ...(target.socketPath === undefined ? { host: target.hostname, port: target.port } : { socketPath: target.socketPath }),
      method: 'GET',
      path: spec.path,
      headers: { host: spec.host ?? target.authority, 'user-agent': USER_AGENT, connection: 'close' },
      agent: false,
      setHost: false,
    };
    const req = target.tls === undefined ? http.request(options) : https.request({ ...options, ...target.tlsOptions() });
    const timer = setTimeout(() => req.destroy(Object.assign(new Error('timeout'), { code: 'PORTICO_HEALTH_TIMEOUT' })), spec.timeoutMs);
    req.on('response', (res) => {
      clearTimeout(timer);
      const status = res.statusCode ?? 0;
      res.resume();
      res.on('error', noop);
      req.destroy();
      resolve(isHealthyStatus(spec, status) ? undefined : `status ${status}`);
    });
    req.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve(describe(err, spec));
    });
    req.end();
  });
}

function probeH2(target: Target, spec: HealthSpec): Promise<string | undefined> {
  return new Promise((resolve) => {
    let settled = false;
    const session =
      target.kind === 'h2c'
        ? http2.connect(`http://${target.authority}`)
        : http2.connect(`https://${target.authority}`, { ...target.tlsOptions(), ALPNProtocols: ['h2'] });
    const done = (reason: string | undefined): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      session.destroy();
      resolve(reason);
    };
    const timer = setTimeout(() => done(`no answer within ${spec.timeoutMs} ms`), spec.timeoutMs);
    session.on('error', (err: NodeJS.ErrnoException) => done(describe(err, spec)));
    const stream = session.request({
      ':method': 'GET',
      ':path': spec.path,
      ':authority': spec.host ?? target.authority,
      'user-agent': USER_AGENT,
    });
    stream.on('response', (headers) => {
      const status = Number(headers[':status']);
      done(isHealthyStatus(spec, status) ? undefined : `status ${status}`);
    });
    stream.on('error', (err: NodeJS.ErrnoException) => done(describe(err, spec)));
    stream.on('close', () => done(`stream closed without a response (code ${stream.rstCode})`));
    stream.resume();
    stream.end();
  });
}

function describe(err: NodeJS.ErrnoException, spec: HealthSpec): string {
  if (err.code === 'PORTICO_HEALTH_TIMEOUT') return `no answer within ${spec.timeoutMs} ms`;
  return err.code ?? err.message;
}

function noop(): void {}
