import type { Balancer, BalancerTarget } from "./balancer.js";
import { murmur3, murmur3Words } from "./hash.js";
import { RoundRobinBalancer } from "./round-robin.js";
import { nextDistinct } from "./schedule.js";

/**
 * Ring points given to a target of the smallest weight; others get proportionally more. With 512
 * points a target's share of the ring is typically within 5-10% (relative) of its weight's share;
 * balance improves only with the square root of the points, so more would mostly cost memory.
 */
export const POINTS_PER_MIN_WEIGHT = 512;

/**
 * Most points on one ring, whatever the weights (past it every count scales down): bounds memory
 * (about 6 bytes a point) and the rebuild that follows every eligibility change to some tens of
 * milliseconds, at the cost of balance beyond ~500 equal targets (fewer points each).
 */
export const MAX_RING_SIZE = 1 << 18;

/** Second seed for a target's key, so two keys collide only if both 32-bit hashes do. */
const KEY_SEED_2 = 0x9747b28c;

/** Ring positions are packed with the owner's rank below them into one float64 for a numeric sort. */
const RANK_SLOTS = 2 ** 21;

/**
 * Ring hash (Karger et al., as Envoy's and gRPC's ring_hash): each target owns points on a 32-bit
 * circle, in number proportional to its weight, replica r placed at
 * murmur3Words(murmur3(key), murmur3(key, KEY_SEED_2), r): a fixed definition (hash.ts), so every
 * data plane of every version places the same points. A request goes to the owner of the first
 * point at or after murmur3(hashKey), found by binary search over a sorted Uint32Array
 * (O(log points), narrowed first by the hash's top bits; no allocation).
 *
 * A target's points depend only on its own key and point count, so removing one of N targets moves
 * only the keys it owned (about 1/N) and adding one moves only what it takes over. Point counts
 * are scaled from the smallest weight, so removing the only target of the smallest weight rescales
 * the others and moves more. Points that collide are ordered by target key, so the ring is a function
 * of the set of (key, weight) alone, not of list order: every data plane builds the same ring.
 *
 * A request without a hash key (undefined or empty) has nothing to be consistent about, so it goes
 * round-robin over the targets rather than piling onto the one that owns hash("").
 */
export class ConsistentHashBalancer<T extends BalancerTarget = BalancerTarget> implements Balancer<T> {
  /** Copied, so the caller mutating its array later cannot desynchronise the ring from the list. */
  readonly targets: readonly T[];
  /** Sorted point positions. */
  private readonly points: Uint32Array;
  /**
   * buckets[b] = index of the first point at or above b << shift: the top bits of a hash select a
   * handful of points (about four) to binary-search instead of the whole ring, which turns ~18
   * unpredictable branches into ~2 for a large ring.
   */
  private readonly buckets: Uint32Array;
  private readonly shift: number;
  /**
   * owners[i] = index of the target owning points[i]. Always 32-bit: one element type for every
   * ring keeps the lookup's loads monomorphic, and the ring is small enough not to care.
   */
  private readonly owners: Uint32Array;
  /** alternates[i] = the next different owner clockwise from point i, for `exclude`. */
  private readonly alternates: Uint32Array;
  private readonly keyless: RoundRobinBalancer<T>;

  constructor(targets: readonly T[]) {
    this.targets = Array.from(targets);
    this.keyless = new RoundRobinBalancer(this.targets);
    const n = this.targets.length;
    if (n > RANK_SLOTS) throw new RangeError(`consistent-hash: at most ${RANK_SLOTS} targets, got ${n}`);
    let minWeight = Infinity;
    let total = 0;
    for (const t of this.targets) {
      minWeight = Math.min(minWeight, t.weight);
      total += t.weight;
    }
    let scale = POINTS_PER_MIN_WEIGHT / minWeight;
    if (total * scale > MAX_RING_SIZE - n) scale = (MAX_RING_SIZE - n) / total;
    const counts = this.targets.map((t) => Math.max(1, Math.round(t.weight * scale)));
    const size = counts.reduce((a, b) => a + b, 0);

    // Rank targets by key so collisions resolve the same way whatever the list order.
    const byKey = this.targets.map((_, i) => i).sort((a, b) => compareKeys(this.targets[a].key, this.targets[b].key));
    const packed = new Float64Array(size);
    let k = 0;
    byKey.forEach((index, rank) => {
      const key = this.targets[index].key;
      const h1 = murmur3(key);
      const h2 = murmur3(key, KEY_SEED_2);
      for (let replica = 0; replica < counts[index]; replica++) {
        packed[k++] = murmur3Words(h1, h2, replica) * RANK_SLOTS + rank;
      }
    });
    packed.sort();
    this.points = new Uint32Array(size);
    this.owners = new Uint32Array(size);
    for (let i = 0; i < size; i++) {
      const rank = packed[i] % RANK_SLOTS;
      this.points[i] = (packed[i] - rank) / RANK_SLOTS;
      this.owners[i] = byKey[rank];
    }
    this.alternates = nextDistinct(this.owners);

    const bits = Math.max(1, Math.ceil(Math.log2(Math.max(size, 1))) - 2);
    this.shift = 32 - bits;
    this.buckets = new Uint32Array((1 << bits) + 1);
    let i = 0;
    for (let b = 0; b <= 1 << bits; b++) {
      const floor = b * 2 ** this.shift; // b << shift, without 32-bit overflow
      while (i < size && this.points[i] < floor) i++;
      this.buckets[b] = i;
    }
  }

  /**
   * The owner of `hashKey`'s arc; with `exclude` (matched by key) owning it, the next distinct
   * target clockwise, which is where the key would go if `exclude` were removed, so a retry lands
   * where the key settles should the target stay down.
   */
  pick(hashKey?: string, exclude?: T): T | undefined {
    if (hashKey === undefined || hashKey === "") return this.keyless.pick(undefined, exclude);
    const n = this.targets.length;
    if (n === 0) return undefined;
    const i = this.lookup(murmur3(hashKey));
    let owner = this.owners[i];
    if (exclude !== undefined && n > 1 && this.targets[owner].key === exclude.key) owner = this.alternates[i];
    return this.targets[owner];
  }

  /** Index of the first point at or after `hash`, wrapping to the first point. */
  private lookup(hash: number): number {
    const points = this.points;
    const bucket = hash >>> this.shift;
    let lo = this.buckets[bucket];
    let hi = this.buckets[bucket + 1];
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (points[mid] < hash) lo = mid + 1;
      else hi = mid;
    }
    return lo === points.length ? 0 : lo;
  }
}

function compareKeys(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
