/**
 * Request counters per route, for the admin API's metrics. One object per
 * route, kept in a registry by route id so counts survive reloads (Prometheus
 * counters must not go back); the Plan's routes point at theirs, so counting
 * a request is two additions on fixed fields, no lookup.
 */

/** Upper bounds of the duration histogram's buckets, in ms: Prometheus's default buckets (5 ms … 10 s). */
export const DURATION_BOUNDS_MS: readonly number[] = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

/** The requests one route answered (or, under the id "", those no route took). */
export class RequestStats {
  readonly host: string;
  readonly path: string;
  /** By status class: [0] no response (the client went away first), [1]…[5] 1xx…5xx. */
  readonly byClass: number[] = [0, 0, 0, 0, 0, 0];
  durationSumMs = 0;
  /** Requests per duration bucket (not cumulative): [i] up to DURATION_BOUNDS_MS[i], the last one above them all. */
  readonly durationBuckets: number[] = new Array<number>(DURATION_BOUNDS_MS.length + 1).fill(0);
  /** Upgraded connections (WebSockets) open now, bytes flowing both ways. */
  openUpgrades = 0;
  /** Response cache: GET and HEAD requests answered from it, and those it could not answer (routes with "cache"). */
  cacheHits = 0;
  cacheMisses = 0;

  constructor(host: string, path: string) {
    this.host = host;
    this.path = path;
  }

  /** Counts one request. Hot path. */
  record(status: number, durationMs: number): void {
    const c = status >= 100 && status < 600 ? (status / 100) | 0 : 0;
    this.byClass[c]!++;
    this.durationSumMs += durationMs;
    let b = 0;
    while (b < DURATION_BOUNDS_MS.length && durationMs > (DURATION_BOUNDS_MS[b] as number)) b++;
    this.durationBuckets[b]!++;
  }
}

/** Stats by route id, shared by successive Plans. */
export class RequestStatsRegistry {
  readonly #byId = new Map<string, RequestStats>();

  /** The stats of a route (`host`, `path`; both "" for requests no route took), made once. */
  get(host: string, path: string): RequestStats {
    const id = host === '' ? '' : `${host} ${path}`;
    let s = this.#byId.get(id);
    if (s === undefined) {
      s = new RequestStats(host, path);
      this.#byId.set(id, s);
    }
    return s;
  }

  all(): IterableIterator<RequestStats> {
    return this.#byId.values();
  }
}
