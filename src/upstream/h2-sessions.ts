/**
 * The lifecycle of HTTP/2 upstream sessions, for both ways Portico opens them: h2c sessions of its own
 * (node:http2's connect) and TLS sessions pooled by http2-wrapper's Agent (h2-tls, and auto-tls resolved to h2).
 *
 * - connectTimeout bounds the session's opening up to the upstream's SETTINGS (RFC 9113 §3.4: its connection
 *   preface), so a TLS handshake or a preface that never comes fails the requests waiting on it with
 *   PORTICO_CONNECT_TIMEOUT (504, or the next target) instead of holding them for good.
 * - A session that received a GOAWAY (RFC 9113 §6.8) takes no new streams: http2-wrapper's Agent is told so,
 *   since it would otherwise keep handing it requests, which node:http2 refuses (ERR_HTTP2_GOAWAY_SESSION, a
 *   502) until the session's last stream ends.
 * - A session with no stream for {@link H2_IDLE_TIMEOUT_MS} is closed, as HTTP/1.1 keep-alive connections are.
 * - A target leaving the config closes its sessions gracefully: idle ones at once, busy ones when their last
 *   stream ends, so requests in flight on the old config finish.
 *
 * Listeners are module-level functions with the session, socket or agent as `this`; what they need is kept
 * on it under a symbol. None of this runs per request: only when a session opens, idles or goes away.
 */
import http2 from 'node:http2';
import type { TLSSocket } from 'node:tls';
import type { Http2Client } from './http2-client.js';

/** How long an HTTP/2 upstream session may stay without streams before Portico closes it. @default 60 s */
export const H2_IDLE_TIMEOUT_MS = 60_000;

type H2Agent = InstanceType<Http2Client['Agent']>;
type AgentClass = Http2Client['Agent'] & { readonly kCurrentStreamCount: symbol; readonly kGracefullyClosing: symbol };

const kDeadline = Symbol('portico.h2ConnectDeadline');
const kConnectTimeoutMs = Symbol('portico.h2ConnectTimeoutMs');
const kIdleTimeoutMs = Symbol('portico.h2IdleTimeoutMs');
const kAgentClass = Symbol('portico.h2AgentClass');

interface WithDeadline {
  [kDeadline]?: NodeJS.Timeout | undefined;
}

interface PorticoAgent {
  [kConnectTimeoutMs]: number;
  [kIdleTimeoutMs]: number;
  [kAgentClass]: AgentClass;
}

/** An http2-wrapper session: the Agent keeps its stream count and "closing" mark on it. */
type AgentSession = http2.ClientHttp2Session & Record<symbol, unknown> & { [kAgentClass]?: AgentClass };

function connectTimeoutError(ms: number): Error {
  return Object.assign(new Error(`no HTTP/2 connection preface within ${ms} ms`), { code: 'PORTICO_CONNECT_TIMEOUT' });
}

/**
 * An http2-wrapper Agent for one target: sessions open within `connectTimeoutMs` (0: no bound), are closed after
 * `idleTimeoutMs` without streams, and take no new streams once a GOAWAY arrived.
 */
export function createH2Agent(client: Http2Client, connectTimeoutMs: number, idleTimeoutMs = H2_IDLE_TIMEOUT_MS): H2Agent {
  const agent = new client.Agent({ maxEmptySessions: 4 }) as H2Agent & PorticoAgent;
  agent[kConnectTimeoutMs] = connectTimeoutMs;
  agent[kIdleTimeoutMs] = idleTimeoutMs;
  agent[kAgentClass] = client.Agent as AgentClass;
  agent.createConnection = connectTls as unknown as H2Agent['createConnection'];
  agent.on('session', onAgentSession);
  return agent;
}

/** The Agent's createConnection (`this`: the agent): its own TLS connection, with the connect deadline armed on it. */
function connectTls(this: H2Agent & PorticoAgent, origin: URL, options: http2.SecureClientSessionOptions): TLSSocket {
  const socket = this[kAgentClass].connect(origin, options) as TLSSocket & WithDeadline;
  const ms = this[kConnectTimeoutMs];
  if (ms > 0) socket[kDeadline] = setTimeout(onTlsDeadline, ms, socket, ms).unref();
  return socket;
}

function onTlsDeadline(socket: TLSSocket & WithDeadline, ms: number): void {
  socket[kDeadline] = undefined;
  // The session on it fails with this error, and the Agent rejects the requests waiting for it.
  if (!socket.destroyed) socket.destroy(connectTimeoutError(ms));
}

/** The Agent's 'session' (`this`: the agent), once the upstream's SETTINGS arrived: the session is open. */
function onAgentSession(this: H2Agent & PorticoAgent, session: AgentSession): void {
  const socket = session.socket as unknown as WithDeadline;
  clearTimeout(socket[kDeadline]);
  socket[kDeadline] = undefined;
  session[kAgentClass] = this[kAgentClass];
  session.once('goaway', markClosing);
  // No callback given: one given to setTimeout() is a once-listener, and an idle session must be looked at every time.
  session.setTimeout(this[kIdleTimeoutMs]);
  session.on('timeout', onAgentSessionIdle);
}

/** A GOAWAY arrived (`this`: the session): the Agent must open another session for new requests. */
function markClosing(this: AgentSession): void {
  this[this[kAgentClass]!.kGracefullyClosing] = true;
}

/** No frame either way for the idle time (`this`: the session): closed if no stream is open on it. */
function onAgentSessionIdle(this: AgentSession): void {
  const A = this[kAgentClass]!;
  if ((this[A.kCurrentStreamCount] as number) !== 0 || this.closed) return;
  this[A.kGracefullyClosing] = true;
  this.close();
}

/**
 * Closes an Agent's sessions without cutting their streams (a target that left the config): no new streams on
 * any, idle ones closed now, busy ones by the Agent when their last stream ends.
 */
export function closeH2Agent(agent: H2Agent): void {
  const A = (agent as H2Agent & PorticoAgent)[kAgentClass];
  const sessions = (agent as unknown as { sessions: Record<string, AgentSession[]> }).sessions;
  for (const key in sessions) {
    for (const session of sessions[key] ?? []) {
      session[A.kGracefullyClosing] = true;
      if ((session[A.kCurrentStreamCount] as number) === 0) session.close();
    }
  }
}

/**
 * Opens an h2c session to `authority`: within `connectTimeoutMs` of opening it must have the upstream's
 * SETTINGS, else it is destroyed with PORTICO_CONNECT_TIMEOUT (its streams with it); it is closed gracefully
 * after `idleTimeoutMs` without a frame.
 */
export function openH2cSession(authority: string, connectTimeoutMs: number, idleTimeoutMs = H2_IDLE_TIMEOUT_MS): http2.ClientHttp2Session {
  const session = http2.connect(`http://${authority}`) as http2.ClientHttp2Session & WithDeadline;
  session.on('error', noop);
  if (connectTimeoutMs > 0) {
    session[kDeadline] = setTimeout(onH2cDeadline, connectTimeoutMs, session, connectTimeoutMs).unref();
    session.once('remoteSettings', clearH2cDeadline);
    session.once('close', clearH2cDeadline);
  }
  session.setTimeout(idleTimeoutMs, closeSession);
  session.unref();
  return session;
}

function onH2cDeadline(session: http2.ClientHttp2Session & WithDeadline, ms: number): void {
  session[kDeadline] = undefined;
  if (!session.destroyed) session.destroy(connectTimeoutError(ms));
}

function clearH2cDeadline(this: http2.ClientHttp2Session & WithDeadline): void {
  clearTimeout(this[kDeadline]);
  this[kDeadline] = undefined;
}

function closeSession(this: http2.ClientHttp2Session): void {
  this.close();
}

function noop(): void {}
