import { Pool } from "undici";

/** Per-origin connection settings, from the upstream's config (timeouts, TLS). */
export interface PoolOptions {
  /** TCP (and TLS) connect timeout in ms; a pool's connect timeout cannot vary per request. */
  readonly connectTimeoutMs: number;
  /**
   * Verify the target's TLS certificate (https origins only). Default true; turning it off is an
   * explicit per-upstream choice for targets with self-signed certificates.
   */
  readonly rejectUnauthorized?: boolean;
}

/** Tuning shared by every pool; exposed so operators and tests can see what a pool is built with. */
export interface PoolTuning {
  /**
   * Most connections kept to one origin. With pipelining off this caps concurrent requests per
   * target; requests beyond it queue inside undici rather than opening unbounded sockets.
   */
  readonly connections: number;
  /** Idle keep-alive time before we close a connection, when the target does not advertise one. */
  readonly keepAliveTimeoutMs: number;
  /** Upper bound on a keep-alive time the target advertises (Keep-Alive: timeout=N). */
  readonly keepAliveMaxTimeoutMs: number;
}

/**
 * Defaults for a proxy: pipelining 1 (a slow response must not hold up others queued behind it on
 * the same connection, and most targets mishandle pipelining), a generous connection cap, and a
 * keep-alive just under Node's 5 s server default so we close idle connections before the target
 * does (undici also subtracts a 2 s threshold from advertised timeouts).
 */
export const DEFAULT_POOL_TUNING: PoolTuning = {
  connections: 256,
  keepAliveTimeoutMs: 4_000,
  keepAliveMaxTimeoutMs: 60_000,
};

interface Entry {
  readonly origin: string;
  readonly pool: Pool;
}

/**
 * One keep-alive undici Pool per target origin, shared by every rule and upstream that forwards
 * there, so connections are reused across routes and survive config changes. Pools are created on
 * first use. Resolve pools when compiling a snapshot and keep the reference in the routing table:
 * get() is cheap but the request path should only read.
 */
export class PoolRegistry {
  // Keyed by origin plus the connect settings: two upstreams naming the same origin with different
  // timeouts or TLS checks must not silently share the first one's.
  private readonly entries = new Map<string, Entry>();
  private closed = false;

  constructor(private readonly tuning: PoolTuning = DEFAULT_POOL_TUNING) {}

  /**
   * The pool for `origin` ("http://host:port" or "https://host:port", no path) with these connect
   * settings, created on first use.
   */
  get(origin: string, opts: PoolOptions): Pool {
    if (this.closed) throw new Error("PoolRegistry is closed");
    const rejectUnauthorized = opts.rejectUnauthorized ?? true;
    const key = `${origin} ${opts.connectTimeoutMs}${rejectUnauthorized ? "" : " insecure"}`;
    let entry = this.entries.get(key);
    if (entry === undefined) {
      entry = { origin, pool: this.create(origin, opts.connectTimeoutMs, rejectUnauthorized) };
      this.entries.set(key, entry);
    }
    return entry.pool;
  }

  /**
   * Closes the pools of origins no longer in `origins`, after a config change. Closing is graceful:
   * requests in flight and queued finish, then the connections close. Call it after the new
   * routing table is in use, so no new request picks a pool being closed (one that does fails with
   * undici's UND_ERR_CLOSED before connecting, which is safe to retry).
   */
  retain(origins: Iterable<string>): Promise<void> {
    const keep = origins instanceof Set ? (origins as Set<string>) : new Set(origins);
    const closing: Promise<void>[] = [];
    for (const [key, entry] of this.entries) {
      if (!keep.has(entry.origin)) {
        this.entries.delete(key);
        closing.push(entry.pool.close());
      }
    }
    return Promise.all(closing).then(() => undefined);
  }

  /** Origins that currently have a pool, for tests and the fleet report. */
  origins(): string[] {
    const out = new Set<string>();
    for (const entry of this.entries.values()) out.add(entry.origin);
    return [...out];
  }

  /** Closes every pool gracefully (in-flight requests finish); get() fails afterwards. */
  close(): Promise<void> {
    this.closed = true;
    return this.retain([]);
  }

  private create(origin: string, connectTimeoutMs: number, rejectUnauthorized: boolean): Pool {
    const t = this.tuning;
    return new Pool(origin, {
      connections: t.connections,
      pipelining: 1,
      keepAliveTimeout: t.keepAliveTimeoutMs,
      keepAliveMaxTimeout: t.keepAliveMaxTimeoutMs,
      // forward() passes headers/body timeouts per request from the upstream's config.
      connect: {
        timeout: connectTimeoutMs,
        rejectUnauthorized,
        // Detect targets that vanish without a FIN (host down) on long idle connections.
        keepAlive: true,
        keepAliveInitialDelay: 30_000,
      },
    });
  }
}
