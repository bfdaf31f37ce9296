/**
 * Sticky weighted choice: a user key (header, cookie, claim or client IP, per the rule's hash_on)
 * always lands on the same entry of a weighted list, and a share of users, not of requests, sees
 * each entry. Every data plane computes the same answer with no shared state, because the hash is a
 * fixed algorithm over the key's bytes (MurmurHash3 over UTF-8, shared with the consistent-hash
 * balancer in ../balancer/hash.ts).
 *
 * The key's hash h is read as a point u = h / 2^32 in [0, 1); the entries own consecutive slices of
 * [0, 1) in listed order, each as wide as its share of the total weight.
 *
 * Why raising a canary only moves users INTO it: a user moves only when a slice boundary crosses
 * their point. Changing weights moves the boundaries between slices; a user leaves entry X only if
 * X's slice loses the part they sit in. So for a weight change to move users only into the canary
 * C, every other entry's new slice must lie inside its old one. With two entries (stable, canary)
 * there is one boundary and any increase of C's share moves it over stable users only, whichever of
 * the two is listed first: both orders are supported and tested. With more entries, the entries
 * that give weight up must be C's neighbours in the list (the entry right before C gives from its
 * end, the one right after from its start), and all other entries must keep their share exactly:
 * shrinking an entry that is not adjacent to C shifts every slice between the two and reshuffles
 * those users among the other entries. Listing the canary next to the stable entry it takes traffic
 * from (e.g. last, after stable) and scaling only stable down satisfies this.
 */
import { murmur3 } from "../balancer/hash.js";
import { ConfigError } from "../config/errors.js";

const TWO_POW_32 = 4294967296;

/**
 * The key's position in [0, total): where the user falls on a weight line of length `total`. The
 * same key and seed give the same position on every data plane.
 */
export function stickyPosition(key: string, total: number, seed = 0): number {
  return (murmur3(key, seed) / TWO_POW_32) * total;
}

/** A weighted list compiled for sticky picks; immutable, rebuilt when weights change. */
export class StickyBuckets {
  /** Sum of the weights. */
  readonly total: number;
  /**
   * Upper hash bound (exclusive) of each entry's slice, as integers in [0, 2^32]. Integer bounds
   * computed once make the pick exact and monotonic in the weights: floor(cum/W × 2^32) never
   * moves the wrong way when a share grows, where per-request floating products could round either way.
   */
  private readonly bounds: Float64Array;
  private readonly seed: number;

  /**
   * `weights` in listed order (weight 0: never picked). `seed` decorrelates rules: with the same
   * seed the same users would be the first to see every canary; a rule's id as seed spreads that.
   * Invalid weights are refused naming `${field}[i].weight`.
   */
  constructor(weights: readonly number[], seed: string | number = 0, field = "weighted_upstreams") {
    let total = 0;
    weights.forEach((w, i) => {
      if (typeof w !== "number" || !Number.isFinite(w) || w < 0) {
        throw new ConfigError(`${field}[${i}].weight`, `must be a non-negative number, got ${String(w)}`);
      }
      total += w;
    });
    this.total = total;
    this.seed = typeof seed === "number" ? seed | 0 : murmur3(seed);
    this.bounds = new Float64Array(weights.length);
    let cumulative = 0;
    for (let i = 0; i < weights.length; i++) {
      cumulative += weights[i];
      this.bounds[i] = total === 0 ? 0 : cumulative === total ? TWO_POW_32 : Math.floor((cumulative / total) * TWO_POW_32);
    }
  }

  /** Index of the entry `key` belongs to, or -1 when every weight is 0 (nothing may receive traffic). */
  pick(key: string): number {
    if (this.total === 0) return -1;
    const h = murmur3(key, this.seed);
    const bounds = this.bounds;
    // Lists are short (a handful of upstreams): a linear scan beats a binary search here.
    for (let i = 0; i < bounds.length; i++) if (h < bounds[i]) return i;
    return bounds.length - 1; // unreachable: the last non-empty bound is 2^32
  }
}
