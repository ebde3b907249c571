/**
 * The HTTPS listener: a `tls.Server` that owns the handshake (SNI callback,
 * ALPN choice, TLS 1.2+), handing each established connection by its
 * negotiated ALPN to a `node:http2` secure server (h2) or to Portico's own
 * HTTP/1.1 server (src/http1/). Owning the handshake is what lets ALPN
 * `acme-tls/1` (TLS-ALPN-01) pick a different certificate.
 */
import http2 from 'node:http2';
import net from 'node:net';
import tls, { type SecureContext, type TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import { lookupHost, type HostPlan, type Plan } from '../config/plan.js';
import type { CertStore } from '../tls/cert-store.js';
import { SERVER_TLS_OPTIONS } from '../tls/tls-settings.js';
import { hasServerName, HelloBytes, MAX_HELLO_BYTES, offersAlpn, offersSessionTicket, readServerName } from '../tls/client-hello.js';
import { clientCertValue, kClientCert, type WithClientCert } from '../tls/client-auth.js';
import type { ClientAuthPlan } from '../config/plan.js';
import { createRequestHandler, kConnName, type ProxyState, type Tagged } from '../proxy/handle-request.js';
import { createUpgradeHandler } from '../proxy/handle-upgrade.js';
import { createConnectHandler } from '../proxy/upgrade-client-h2.js';
import { H1Server } from '../http1/h1-server.js';
import { createStreamHandler } from '../http2/stream-handler.js';
import { StreamWatch } from '../http2/stream-watch.js';
import { sniName } from '../tls/sni-name.js';
import { clearSessionTimer, closeIdleSession, closeStuckSession } from '../http2/idle-close.js';
import { kRawSocket, kRemoteAddress, type SessionFacts } from '../http2/server-request.js';
import { allClosed, capConnections, closeServers, LAST_LINES_MS, listenOptions, SHUTDOWN } from './listen-options.js';
import { connectionKey, kClientAddress, peerAddress, PROXY_HEADER_TIMEOUT_MS, proxyRefusalLog, readProxyHeader, type ProxiedSocket } from './proxy-protocol.js';

/** Answers TLS-ALPN-01 challenges (RFC 8737): the challenge certificate for a name, if one is pending. */
export interface AlpnChallengeSource {
  contextFor(servername: string): SecureContext | undefined;
}

/**
 * Stapled OCSP responses (src/tls/ocsp-stapler.ts): the handler of each TLS server's 'OCSPRequest' event, given the
 * served certificate's DER; it calls back with the response held for it, or null.
 */
export interface StapleSource {
  readonly onOcspRequest: (certificate: Buffer, issuer: Buffer, callback: (err: Error | null, response: Buffer | null) => void) => void;
}

/** What the HTTPS listener needs. */
export interface HttpsListenerDeps {
  readonly state: ProxyState;
  readonly certs: CertStore;
  readonly log: Logger;
  /** Optional TLS-ALPN-01 responder (set by the ACME manager). */
  alpnChallenges?: AlpnChallengeSource;
  /** The session ticket key to start with (48 bytes); setTicketKeys() replaces it. */
  readonly ticketKey: Buffer;
  /** Every connection starts with a PROXY protocol header (listen.https.proxyProtocol). */
  readonly proxyProtocol?: boolean;
  /** OCSP responses to staple (listen.https.ocspStapling); none without it. */
  readonly staples?: StapleSource;
}

const kAcmeAlpn = Symbol('portico.acmeAlpn');
/** The host (HostPlan name) whose client-certificate server a connection's handshake went through. */
const kClientAuthHost = Symbol('portico.clientAuthHost');

interface ClientAuthTagged {
  [kClientAuthHost]?: string;
}

/**
 * The TLS server of one host with "clientAuth": the host's certificate as its own (no SNI callback), its CAs,
 * `requestCert`, and a session id context of its own, so that no session made elsewhere resumes here.
 */
interface ClientAuthServer {
  readonly server: tls.Server;
  /** What its secure context was last built from: rebuilt when the settings or the certificate change. */
  settings: ClientAuthPlan;
  pair: object | undefined;
}

interface AlpnTagged {
  [kAcmeAlpn]?: boolean;
}

/** Time a client has to send its ClientHello. */
const HELLO_TIMEOUT_MS = 10_000;


/** The HTTPS listener: TLS front plus the HTTP/2+HTTP/1.1 engine. */
export class HttpsListener {
  /** One TCP server per bound address; each hands connections to a TLS server below. */
  readonly netServers: net.Server[] = [];
  /**
   * Two TLS servers sharing every setting: `#sniServer` has no certificate of its own
   * (the SNI callback supplies it); `#defaultServer` serves the default host to
   * clients whose ClientHello has no server name. Kept apart because Node leaves a
   * server's own certificate in every connection next to the one the SNI callback
   * picks, and OpenSSL may then send the wrong one when their key types differ
   * (nodejs/node#54235: an RSA host behind an ECDSA default got the default certificate).
   */
  readonly #sniServer: tls.Server;
  readonly #defaultServer: tls.Server;
  #defaultContext: tls.SecureContextOptions | undefined;
  readonly h2Server: http2.Http2SecureServer;
  /** HTTP/2 streams in flight: sendTimeout, bodyTimeout, and the bound on streams a client resets (src/http2/stream-watch.ts). */
  readonly #streams: StreamWatch;
  /** HTTP/1.1 connections (ALPN http/1.1, or none). */
  readonly h1: H1Server;
  readonly #deps: HttpsListenerDeps;
  readonly #sessions = new Set<http2.ServerHttp2Session>();
  /** The current session ticket key (setTicketKeys()). */
  #ticketKey: Buffer;
  readonly #sockets = new Set<TLSSocket>();
  /** PROXY protocol: client addresses by connection (connectionKey), until the TCP connection closes. */
  readonly #proxied = new Map<string, string>();
  /**
   * The server name asked for by each connection whose ClientHello offered a TLS 1.2 session ticket, by connection
   * (connectionKey), until it closes: the connection's name if the session resumes, as OpenSSL then reports none
   * (#onSecureConnection).
   */
  readonly #helloNames = new Map<string, string>();
  /** The TLS servers of hosts with "clientAuth", by host name (setClientAuth()). */
  readonly #clientAuth = new Map<string, ClientAuthServer>();

  constructor(deps: HttpsListenerDeps) {
    this.#deps = deps;
    this.#ticketKey = deps.ticketKey;
    const plan = deps.state.plan;
    const limits = plan.limits;
    // The engine never listens; connections arrive through 'secureConnection'.
    this.h2Server = http2.createSecureServer({
      // HTTP/1.1 connections never reach it: #onSecureConnection hands them to this.h1.
      allowHTTP1: false,
      maxSessionMemory: 64,
      settings: { maxConcurrentStreams: limits.maxConcurrentStreams, maxHeaderListSize: limits.maxHeaderBytes, enableConnectProtocol: plan.websocketsOverHttp2 },
    } as http2.SecureServerOptions);
    const onRequest = createRequestHandler(deps.state);
    // The core stream API, not the compatibility layer's 'request' (src/http2/stream-handler.ts).
    this.#streams = new StreamWatch((what, session) => {
      const remote = (session as (http2.Http2Session & SessionFacts) | undefined)?.[kRemoteAddress];
      if (what === 'send-timeout') deps.log.debug({ remote }, 'http2 response not read within sendTimeout');
      else if (what === 'body-timeout') deps.log.debug({ remote }, 'http2 request body not received within bodyTimeout');
      else deps.log.warn({ remote }, 'http2 client reset too many streams, connection closed');
    });
    // WebSockets over HTTP/2 (RFC 8441) unless turned off: then CONNECT gets 405, as any CONNECT did before.
    this.h2Server.on('stream', createStreamHandler(onRequest, this.#streams, plan.websocketsOverHttp2 ? createConnectHandler(deps.state) : undefined));
    this.h2Server.on('session', (session: http2.ServerHttp2Session) => this.#onSession(session));
    this.h2Server.on('sessionError', (err: Error) => deps.log.debug({ err: err.message }, 'http2 session error'));
    this.h1 = new H1Server({ log: deps.log, onRequest, onUpgrade: createUpgradeHandler(deps.state) });
    this.applyLimits(plan);
    this.h2Server.emit('listening');

    this.#defaultContext = undefined;
    this.#sniServer = this.#createTlsServer();
    this.#defaultServer = this.#createTlsServer();
    this.setDefaultContext(plan);
    this.setClientAuth(plan);
  }

  #createTlsServer(): tls.Server {
    const self = this;
    const server = tls.createServer({
      ...SERVER_TLS_OPTIONS,
      // One key for both servers and every address, so a session resumes whichever of them the client reaches.
      ticketKeys: this.#ticketKey,
      // Regular functions: Node calls both with `this` set to the TLSSocket being negotiated.
      SNICallback(this: TLSSocket, servername: string, cb: (err: Error | null, ctx?: SecureContext) => void) {
        self.#sni(this, servername, cb);
      },
      ALPNCallback(this: TLSSocket, { servername, protocols }: { servername: string; protocols: string[] }) {
        return self.#alpn(this, servername, protocols);
      },
    });
    server.on('secureConnection', (socket: TLSSocket) => this.#onSecureConnection(socket));
    server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: TLSSocket) => {
      this.#deps.log.debug({ code: err.code, reason: err.message, remote: socket.remoteAddress }, 'tls handshake failed');
    });
    this.#listenForOcsp(server);
    return server;
  }

  /**
   * Staples OCSP responses on a TLS server. Node asks only while a server has an 'OCSPRequest' listener when a
   * connection starts (it then runs OpenSSL's certificate callback, after the SNI callback), and only for clients
   * that sent status_request; the certificate it passes is the one the SNI callback chose (or the server's own).
   */
  #listenForOcsp(server: tls.Server): void {
    const staples = this.#deps.staples;
    if (staples !== undefined) server.on('OCSPRequest', staples.onOcspRequest as (cert: Buffer, issuer: Buffer, cb: (err: Error | null, resp: Buffer) => void) => void);
  }

  /**
   * Reads every connection's ClientHello before TLS starts, far enough to pick the TLS server (the default host's,
   * a client-certificate host's: #engineFor) and, for a hello offering a TLS 1.2 session ticket, to keep the server
   * name it asks for (#helloNames), then hands the socket over with the bytes put back.
   *
   * Every connection, not only with a default host or client certificates: a resumed TLS 1.2 session has no server
   * name otherwise (#onSecureConnection), and each of its requests got 421. A socket handed over this way is read by
   * TLS in smaller pieces than one given to it directly (at most 16 KiB, with 1 KiB reads between, instead of up to
   * 64 KiB: its input buffer starts at the hello's size), which changes the timing of what arrives: an HTTP/2 request
   * body left paused when its upstream stopped it showed as a stream that never closed on Node 20
   * (onUpstreamRequestClose in src/proxy/handle-request.ts). The CPU it costs per new connection is in the CHANGELOG.
   */
  #dispatch(socket: net.Socket): void {
    const hello = new HelloBytes();
    const onData = (chunk: Buffer): void => {
      const buf = hello.push(chunk);
      if (buf === undefined) return;
      const name = readServerName(buf);
      if (name === undefined && buf.length < MAX_HELLO_BYTES) return;
      socket.off('data', onData);
      socket.off('error', onError);
      socket.setTimeout(0);
      socket.pause();
      socket.unshift(buf);
      if (name !== undefined && name !== '' && offersSessionTicket(buf)) {
        const key = connectionKey(socket);
        this.#helloNames.set(key, name);
        socket.once('close', () => this.#helloNames.delete(key));
      }
      this.#engineFor(buf, name ?? '').emit('connection', socket);
    };
    const onError = (): void => {
      socket.destroy();
    };
    socket.on('data', onData);
    socket.on('error', onError);
    socket.setTimeout(HELLO_TIMEOUT_MS, () => socket.destroy());
  }

  /**
   * The TLS server for a ClientHello (`buf`) naming `name` ('' for none or unreadable): the client-certificate
   * server of its host, if it has one (an ACME TLS-ALPN-01 validation for it aside); else the default host's
   * server for a hello without SNI; else the SNI server.
   */
  #engineFor(buf: Buffer, name: string): tls.Server {
    const sni = name === '' ? hasServerName(buf) : true;
    if (this.#clientAuth.size > 0) {
      const plan = this.#deps.state.plan;
      const host = (name === '' ? undefined : lookupHost(plan, sniName(name))) ?? plan.defaultHost;
      const own = host === undefined ? undefined : this.#clientAuth.get(host.name);
      if (own !== undefined) {
        const acme = name !== '' && offersAlpn(buf, 'acme-tls/1') && this.#deps.alpnChallenges?.contextFor(sniName(name)) !== undefined;
        if (!acme) return own.server;
      }
    }
    return sni === false && this.#defaultContext !== undefined ? this.#defaultServer : this.#sniServer;
  }

  /** Applies a Plan's limits to the engine; called at start and on every reload. */
  applyLimits(plan: Plan): void {
    this.h1.applyLimits(plan.limits);
    this.#streams.sendTimeoutMs = plan.limits.sendTimeoutMs;
    this.#streams.bodyTimeoutMs = plan.limits.bodyTimeoutMs;
    // New sessions take these; open ones keep what they were told.
    this.h2Server.updateSettings({ maxConcurrentStreams: plan.limits.maxConcurrentStreams, maxHeaderListSize: plan.limits.maxHeaderBytes });
    for (const s of this.netServers) s.maxConnections = plan.limits.maxConnections;
  }

  /** Serves the default host's certificate to clients without SNI (or refuses them). */
  setDefaultContext(plan: Plan): void {
    const def = plan.defaultHost;
    const pair = def === undefined ? undefined : this.#deps.certs.get(def.certId);
    this.#defaultContext = pair === undefined ? undefined : { ...SERVER_TLS_OPTIONS, cert: pair.certPem, key: pair.keyPem };
    // With the current ticket key: the server would otherwise go back to the one it was created with.
    if (this.#defaultContext !== undefined) this.#defaultServer.setSecureContext({ ...this.#defaultContext, ticketKeys: this.#ticketKey });
  }

  /**
   * Builds, updates or drops the TLS servers of hosts with "clientAuth": at start, at every reload, and when a
   * certificate changes. A server whose settings and certificate are the same is left as it is.
   */
  setClientAuth(plan: Plan): void {
    const seen = new Set<string>();
    for (const host of plan.hosts) {
      const settings = host.clientAuth;
      if (settings === undefined) continue;
      seen.add(host.name);
      const pair = this.#deps.certs.get(host.certId);
      const have = this.#clientAuth.get(host.name);
      // The session context hashes the name, the mode and the CAs: equal, nothing changed but the Plan object.
      if (have !== undefined && have.settings.sessionContext === settings.sessionContext && have.pair === pair) continue;
      const options: tls.TlsOptions = {
        ...SERVER_TLS_OPTIONS,
        ticketKeys: this.#ticketKey,
        ca: settings.caPem,
        requestCert: true,
        rejectUnauthorized: settings.required,
        sessionIdContext: settings.sessionContext,
        ...(pair === undefined ? {} : { cert: pair.certPem, key: pair.keyPem }),
      };
      if (have !== undefined) {
        have.server.setSecureContext(options);
        have.settings = settings;
        have.pair = pair;
        continue;
      }
      const self = this;
      const server = tls.createServer({
        ...options,
        ALPNCallback(this: TLSSocket, { servername, protocols }: { servername: string; protocols: string[] }) {
          return self.#alpn(this, servername, protocols);
        },
      });
      const name = host.name;
      this.#listenForOcsp(server);
      server.on('secureConnection', (socket: TLSSocket) => this.#onClientAuthConnection(socket, name));
      server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: TLSSocket) => {
        this.#deps.log.debug({ code: err.code, reason: err.message, remote: socket.remoteAddress, host: name }, 'tls handshake failed');
      });
      this.#clientAuth.set(name, { server, settings, pair });
    }
    // Servers of hosts that left, or no longer ask: their open connections go on, new ones take the SNI server.
    for (const name of this.#clientAuth.keys()) if (!seen.has(name)) this.#clientAuth.delete(name);
  }

  /**
   * A handshake through a host's client-certificate server: a certificate that did not verify ends the connection
   * (with "require", OpenSSL already refused one that is missing or unverified); a verified one is kept as the
   * connection's Client-Cert value.
   */
  #onClientAuthConnection(socket: TLSSocket, hostName: string): void {
    if (!socket.authorized && socket.getPeerX509Certificate() !== undefined) {
      this.#deps.log.debug({ remote: socket.remoteAddress, host: hostName, reason: socket.authorizationError }, 'client certificate refused');
      socket.destroy();
      return;
    }
    (socket as TLSSocket & ClientAuthTagged)[kClientAuthHost] = hostName;
    const cert = clientCertValue(socket);
    if (cert !== undefined) (socket as TLSSocket & WithClientCert)[kClientCert] = cert;
    this.#onSecureConnection(socket);
  }

  /** Replaces the session ticket key (48 bytes) of every TLS server: tickets issued with the previous one no longer resume. */
  setTicketKeys(key: Buffer): void {
    this.#ticketKey = key;
    this.#sniServer.setTicketKeys(key);
    this.#defaultServer.setTicketKeys(key);
    for (const c of this.#clientAuth.values()) c.server.setTicketKeys(key);
  }

  #hostFor(servername: string): HostPlan | undefined {
    const plan = this.#deps.state.plan;
    return lookupHost(plan, sniName(servername)) ?? plan.defaultHost;
  }

  #sni(socket: TLSSocket, servername: string, cb: (err: Error | null, ctx?: SecureContext) => void): void {
    if ((socket as TLSSocket & AlpnTagged)[kAcmeAlpn] === true) {
      // OpenSSL chooses ALPN before the certificate: a client that asked for acme-tls/1 gets the challenge certificate.
      const ctx = this.#deps.alpnChallenges?.contextFor(sniName(servername));
      if (ctx !== undefined) return cb(null, ctx);
    }
    const host = this.#hostFor(servername);
    const ctx = host === undefined ? undefined : this.#deps.certs.context(host.certId);
    if (ctx === undefined) {
      // No context: OpenSSL goes on with this server's, which has no certificate, and ends the handshake with a
      // handshake_failure alert, as for a client without SNI. (Failing the callback would only drop the connection,
      // which clients report as a network error rather than a TLS refusal.)
      this.#deps.log.debug({ servername, remote: socket.remoteAddress, reason: host === undefined ? 'unknown server name' : `no certificate yet for ${host.name}` }, 'tls handshake refused');
      return cb(null);
    }
    cb(null, ctx);
  }

  #alpn(socket: TLSSocket, servername: string, protocols: string[]): string | undefined {
    if (protocols.includes('acme-tls/1') && this.#deps.alpnChallenges?.contextFor(sniName(servername)) !== undefined) {
      (socket as TLSSocket & AlpnTagged)[kAcmeAlpn] = true;
      return 'acme-tls/1';
    }
    if (protocols.includes('h2')) return 'h2';
    if (protocols.includes('http/1.1')) return 'http/1.1';
    return undefined;
  }

  #onSecureConnection(socket: TLSSocket): void {
    if (socket.alpnProtocol === 'acme-tls/1') {
      // RFC 8737 §3: the handshake itself is the answer; close right after.
      socket.end();
      return;
    }
    const plan = this.#deps.state.plan;
    // OpenSSL reports no server name for a resumed TLS 1.2 session (it keeps the name in the session only when
    // the servername callback accepts it, which Node's does not): the name its ClientHello asked for is taken then
    // (#dispatch keeps it for every hello offering a ticket).
    const servername = typeof socket.servername === 'string' && socket.servername !== '' ? socket.servername : (this.#helloNames.get(connectionKey(socket)) ?? '');
    const sni = servername === '' ? '' : sniName(servername);
    const known = sni === '' ? undefined : lookupHost(plan, sni);
    const name = known !== undefined ? sni : (plan.defaultName ?? sni);
    // A host asking for client certificates takes only connections whose handshake asked for one (a reload in
    // between, or a hello read one way and finished another, must not get past it).
    const host = known ?? plan.defaultHost;
    if (host?.clientAuth !== undefined && (socket as TLSSocket & ClientAuthTagged)[kClientAuthHost] !== host.name) {
      this.#deps.log.debug({ remote: socket.remoteAddress, host: host.name }, 'connection without the client certificate check of its host, closed');
      socket.destroy();
      return;
    }
    (socket as TLSSocket & Tagged)[kConnName] = name;
    if (this.#proxied.size > 0) {
      const client = this.#proxied.get(connectionKey(socket));
      if (client !== undefined) (socket as TLSSocket & ProxiedSocket)[kClientAddress] = client;
    }
    socket.setNoDelay(true);
    this.#sockets.add(socket);
    socket.once('close', () => this.#sockets.delete(socket));
    if (socket.alpnProtocol !== 'h2') return this.h1.accept(socket);
    // The engine reads its settings from socket.server: point it at the engine, not the TLS front.
    (socket as TLSSocket & { server: unknown }).server = this.h2Server;
    // Read back in #onSession through the session's socket proxy, which refuses destroy() and end().
    (socket as TLSSocket & SessionFacts)[kRawSocket] = socket;
    this.h2Server.emit('secureConnection', socket);
  }

  #onSession(session: http2.ServerHttp2Session): void {
    const socket = session.socket as unknown as TLSSocket & Tagged;
    const name = socket[kConnName] ?? '';
    (session as http2.ServerHttp2Session & Tagged)[kConnName] = name;
    (session as http2.ServerHttp2Session & SessionFacts)[kRemoteAddress] = peerAddress(socket);
    const raw = (socket as TLSSocket & SessionFacts)[kRawSocket];
    (session as http2.ServerHttp2Session & SessionFacts)[kRawSocket] = raw;
    const cert = (socket as TLSSocket & WithClientCert)[kClientCert];
    if (cert !== undefined) (session as http2.ServerHttp2Session & WithClientCert)[kClientCert] = cert;
    this.#sessions.add(session);
    session.once('close', () => this.#sessions.delete(session));
    // node:http2 leaves a closed session's timeout armed, holding the session until it fires (idle-close.ts).
    session.once('close', clearSessionTimer);
    session.on('error', () => {});
    // keepAliveTimeout covers HTTP/2 too: an idle session gets GOAWAY; open streams may finish. A connection
    // whose client reads nothing cannot end gracefully: it goes sendTimeout later (keepAliveTimeout if that is off).
    // With keepAliveTimeout off, no session is closed for being idle, but one whose output has not moved for
    // sendTimeout is destroyed (src/http2/idle-close.ts); with both off, nothing bounds it.
    const limits = this.#deps.state.plan.limits;
    if (limits.keepAliveTimeoutMs > 0) {
      // once(): closeIdleSession sets the session's timeout again, for its own look.
      session.setTimeout(limits.keepAliveTimeoutMs);
      session.once('timeout', () => {
        const now = this.#deps.state.plan.limits;
        if (raw === undefined) session.close();
        else closeIdleSession(session, raw, now.sendTimeoutMs > 0 ? now.sendTimeoutMs : now.keepAliveTimeoutMs);
      });
    } else if (raw !== undefined && limits.sendTimeoutMs > 0) {
      closeStuckSession(session, limits.sendTimeoutMs);
    }
    // RFC 8336: announce the origins this connection serves, so clients coalesce only onto those.
    const plan = this.#deps.state.plan;
    const host = lookupHost(plan, name);
    const suffix = plan.httpsPortSuffix;
    const origins = [`https://${name}${suffix}`];
    if (host !== undefined) for (const n of host.sharedNames) if (n !== name) origins.push(`https://${n}${suffix}`);
    try {
      session.origin(...origins);
    } catch (err) {
      this.#deps.log.debug({ err: (err as Error).message }, 'origin frame not sent');
    }
  }

  /** Starts listening on one address; `reusePort`: a worker's own socket beside the other workers' (listen-options.ts). */
  listen(port: number, address: string, reusePort = false): Promise<void> {
    const refused = this.#deps.proxyProtocol === true ? proxyRefusalLog(this.#deps.log, port) : undefined;
    const server = net.createServer((socket) => {
      if (refused === undefined) return this.#dispatch(socket);
      readProxyHeader(
        socket,
        PROXY_HEADER_TIMEOUT_MS,
        (client) => {
          if (client !== undefined) {
            const key = connectionKey(socket);
            this.#proxied.set(key, client);
            socket.once('close', () => this.#proxied.delete(key));
          }
          this.#dispatch(socket);
          // #dispatch reads the ClientHello through 'data' events, which a paused socket does not emit.
          socket.resume();
        },
        (reason) => refused(reason, socket.remoteAddress),
      );
    });
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      server.once('error', onError);
      server.listen(listenOptions(port, address, reusePort), () => {
        server.off('error', onError);
        server.on('error', (err) => this.#deps.log.error({ err }, 'https listener error'));
        capConnections(server, this.#deps.state.plan.limits.maxConnections, this.#deps.log, port);
        this.netServers.push(server);
        resolve();
      });
    });
  }

  /** Stops accepting, lets in-flight requests finish, closes what remains after `deadlineMs`. */
  async close(deadlineMs: number): Promise<void> {
    const done = closeServers(this.netServers, deadlineMs, () => {
      this.#deps.state.closeReason = SHUTDOWN;
      for (const s of this.#sessions) s.destroy();
      this.h1.destroyAll();
      for (const s of this.#sockets) s.destroy();
    });
    for (const s of this.#sessions) s.close();
    this.h1.closeIdle();
    await done;
    // What the deadline destroyed writes its access lines as it closes, which may come after the listening sockets'.
    await allClosed([...this.#sockets, ...this.#sessions], LAST_LINES_MS);
    this.#streams.stop();
  }
}
