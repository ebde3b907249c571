/**
 * The Exchange an emitter belongs to (a request's body, a response, an encoder, an HTTP/2 upstream's request and
 * response), kept on the emitter under one symbol so that listeners are module-level functions reading it, not a
 * bound function per request and event. Each of these emitters serves one exchange in its life.
 */
import type { Exchange } from './exchange.js';

const kExchange = Symbol('portico.exchange');

interface WithExchange {
  [kExchange]?: Exchange;
}

/** Notes the exchange `emitter` serves. */
export function tagExchange(emitter: object, ex: Exchange): void {
  (emitter as WithExchange)[kExchange] = ex;
}

/** The exchange `emitter` was tagged with (tagExchange), in one of its listeners. */
export function exchangeOf(emitter: object): Exchange {
  return (emitter as WithExchange)[kExchange]!;
}
