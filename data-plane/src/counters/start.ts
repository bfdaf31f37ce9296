import type { Logger } from "pino";
import { RedisSequenceSource } from "./redis.js";

/** How long a starting data plane waits for Redis before serving in fallback. */
export const REDIS_READY_WAIT_MS = 2_000;

/** Options of {@link startRedisCounters}. */
export interface RedisCountersOptions {
  /** redis:// or rediss:// URL. */
  readonly url: string;
  /** Lease block size; 0 for exact coalesced picks. */
  readonly lease?: number;
  readonly log: Logger;
}

/**
 * Opens the data plane's fleet-wide counters and hangs its logs on the source's callbacks: one line
 * per state change (the "fallback" ones at warn level), so operators see when splits stop being
 * exact and when they are again. Waits up to REDIS_READY_WAIT_MS for a first answer, so the first
 * requests are counted; a data plane started while Redis is down serves in fallback meanwhile.
 */
export async function startRedisCounters(opts: RedisCountersOptions): Promise<RedisSequenceSource> {
  const log = opts.log;
  const redis = redactUrl(opts.url);
  const lease = opts.lease ?? 0;
  let counted = false;
  const source = new RedisSequenceSource({
    url: opts.url,
    lease,
    onState: (state, reason) => {
      if (state === "counting") {
        log.info({ redis, lease, reason }, counted ? "redis counters recovered" : "redis counters active");
        counted = true;
      } else if (state === "fallback") {
        log.warn({ redis, reason }, "redis counters unavailable; selecting by random weight");
      }
    },
    onError: (during, err) => log.warn({ redis, err: err.message }, `redis counters: ${during} failed`),
    onSweep: (result) => log.debug({ redis, ...result }, "swept sequence keys"),
  });
  if (!(await source.ready(REDIS_READY_WAIT_MS))) {
    log.warn({ redis, waitedMs: REDIS_READY_WAIT_MS }, "redis counters not reachable yet; selecting by random weight until they answer");
  }
  return source;
}

/** The URL without its password, for logs. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password !== "") u.password = "***";
    return u.toString().replace(/\/$/, "");
  } catch {
    return "(invalid url)";
  }
}
