/** ACME: who needs a certificate, the order/renew schedule, and the HTTP-01 and TLS-ALPN-01 responders. */
export { AcmeManager, acmeCertTargets, type AcmeHostStatus, type AcmeManagerOptions } from './manager.js';
export { Http01Responder } from './http01.js';
export { AlpnResponder } from './tls-alpn01.js';
export { OrdererLock, type OrdererLockOptions } from './lock.js';
export { storedPaths, accountKeyPath } from './storage.js';
