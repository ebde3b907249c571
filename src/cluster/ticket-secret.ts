/**
 * Hands the primary's session ticket secret to its workers over the cluster's IPC channel, so that
 * every worker derives the same ticket keys (src/tls/session-tickets.ts) and a client resumes its TLS
 * session whichever worker its next connection reaches. The worker asks, with its handler for the
 * answer already in place (a message the primary sent unasked could arrive before any handler); the
 * secret never goes through the environment or the command line, where other tools could read it.
 */
import cluster from 'node:cluster';

const REQUEST = 'portico:ticket-secret?';
const ANSWER = 'portico:ticket-secret';

interface SecretAnswer {
  readonly type: typeof ANSWER;
  readonly secret: string;
}

function isAnswer(msg: unknown): msg is SecretAnswer {
  return typeof msg === 'object' && msg !== null && (msg as { type?: unknown }).type === ANSWER && typeof (msg as { secret?: unknown }).secret === 'string';
}

/** Primary: answers every worker that asks for the secret. */
export function answerTicketSecretRequests(secret: Buffer): void {
  const encoded = secret.toString('base64');
  cluster.on('message', (worker, msg: unknown) => {
    if (typeof msg === 'object' && msg !== null && (msg as { type?: unknown }).type === REQUEST) {
      const answer: SecretAnswer = { type: ANSWER, secret: encoded };
      // With a callback, a worker that died meanwhile is an ignored error here, not an 'error' event that would end the primary.
      worker.send(answer, undefined, () => {});
    }
  });
}

/** Worker: asks the primary for the secret; undefined if there is no primary to ask or no answer within `timeoutMs`. */
export function requestTicketSecret(timeoutMs = 5_000): Promise<Buffer | undefined> {
  const send = process.send?.bind(process);
  if (send === undefined || !cluster.isWorker) return Promise.resolve(undefined);
  return new Promise((resolve) => {
    const done = (secret: Buffer | undefined): void => {
      clearTimeout(timer);
      process.off('message', onMessage);
      resolve(secret);
    };
    const onMessage = (msg: unknown): void => {
      if (isAnswer(msg)) done(Buffer.from(msg.secret, 'base64'));
    };
    const timer = setTimeout(() => done(undefined), timeoutMs);
    process.on('message', onMessage);
    send({ type: REQUEST });
  });
}
