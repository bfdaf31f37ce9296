import type { Redis } from "ioredis";
import { parseSequenceKey, SEQUENCE_KEY_PREFIX } from "./keys.js";

/**
 * Periodic cleanup of the fleet's sequence keys, run by each data plane that uses Redis counters.
 *
 * Many data planes share these keys and may briefly serve different snapshot versions, so a node
 * deletes only what it knows is dead, and leaves the rest to the keys' TTL:
 * - a key without a TTL (a node created it with INCRBY and died before its PEXPIRE) gets one, so
 *   nothing can outlive its inactivity period;
 * - a key whose id this node serves at a higher numeric revision is an older revision of the same
 *   rule or upstream: store revisions only grow, so no node at or past this node's snapshot uses
 *   it. (Split keys carry fingerprints, not ordered revisions: they are left to their TTL.)
 * Keys of ids this node does not know are never deleted: they may belong to a newer snapshot it has
 * not received yet, or to a rule another node is still serving; their TTL removes them once idle.
 */

/** What one sweep did. */
export interface SweepResult {
  /** Keys looked at. */
  readonly scanned: number;
  /** Keys that had no TTL and were given one. */
  readonly expired: number;
  /** Older revisions deleted. */
  readonly deleted: number;
}

/** Options of a sweep. */
export interface SweepOptions {
  /** TTL given to keys without one. */
  readonly ttlMs: number;
  /** SCAN COUNT hint per page (default 500). */
  readonly pageSize?: number;
}

/** Scans `gw:seq:*` once (every page) and applies the policy above. */
export async function sweepSequenceKeys(redis: Redis, liveKeys: ReadonlySet<string>, opts: SweepOptions): Promise<SweepResult> {
  const liveRevision = new Map<string, bigint>();
  for (const k of liveKeys) {
    const parsed = parseSequenceKey(k);
    const rev = parsed === undefined ? undefined : numericRevision(parsed.revision);
    if (parsed !== undefined && rev !== undefined) liveRevision.set(parsed.id, rev);
  }
  let scanned = 0;
  let expired = 0;
  let deleted = 0;
  let cursor = "0";
  do {
    const [next, keys] = await redis.scan(cursor, "MATCH", `${SEQUENCE_KEY_PREFIX}*`, "COUNT", opts.pageSize ?? 500);
    cursor = next;
    if (keys.length === 0) continue;
    scanned += keys.length;
    const stale: string[] = [];
    const fresh: string[] = [];
    for (const key of keys) {
      if (liveKeys.has(key)) {
        fresh.push(key);
        continue;
      }
      const parsed = parseSequenceKey(key);
      const rev = parsed === undefined ? undefined : numericRevision(parsed.revision);
      const current = parsed === undefined ? undefined : liveRevision.get(parsed.id);
      if (rev !== undefined && current !== undefined && rev < current) stale.push(key);
      else fresh.push(key);
    }
    const pipeline = redis.pipeline();
    for (const key of stale) pipeline.unlink(key);
    for (const key of fresh) pipeline.pttl(key);
    const results = (await pipeline.exec()) ?? [];
    results.forEach(([err, value], i) => {
      if (err !== null) return;
      if (i < stale.length) deleted += Number(value);
    });
    // PTTL -1: exists without expiry. (-2: gone meanwhile.)
    const noTtl = fresh.filter((_, j) => {
      const [err, value] = results[stale.length + j] ?? [null, undefined];
      return err === null && value === -1;
    });
    if (noTtl.length > 0) {
      const fix = redis.pipeline();
      // Without NX (Redis 7 only): a TTL another node set meanwhile is the same TTL.
      for (const key of noTtl) fix.pexpire(key, opts.ttlMs);
      for (const [err, value] of (await fix.exec()) ?? []) if (err === null && value === 1) expired++;
    }
  } while (cursor !== "0");
  return { scanned, expired, deleted };
}

function numericRevision(revision: string): bigint | undefined {
  return /^\d{1,20}$/.test(revision) ? BigInt(revision) : undefined;
}
