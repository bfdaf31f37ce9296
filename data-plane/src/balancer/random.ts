import type { Balancer, BalancerTarget } from "./balancer.js";

/** A source of uniform numbers in [0, 1), injectable so tests can seed it. */
export type RandomSource = () => number;

/**
 * Weighted sampling of indices in O(1) per draw (Vose's alias method), with an O(log n) draw that
 * leaves one index out (prefix sums and a binary search) for retries. Shared by weighted random and
 * by least-connections' power-of-two-choices, which both need weight-proportional draws.
 */
export class WeightedSampler {
  /** Number of indices. */
  readonly size: number;
  private readonly probability: Float64Array;
  private readonly alias: Uint32Array;
  /** cumulative[i] = weight of indices 0..i. */
  private readonly cumulative: Float64Array;

  constructor(weights: readonly number[]) {
    const n = weights.length;
    this.size = n;
    this.probability = new Float64Array(n);
    this.alias = new Uint32Array(n);
    this.cumulative = new Float64Array(n);
    let total = 0;
    for (let i = 0; i < n; i++) this.cumulative[i] = total += weights[i];
    if (n === 0) return;
    // Vose: split every weight into one column of height 1 shared by at most two indices.
    const scaled = new Float64Array(n);
    const small = new Uint32Array(n);
    const large = new Uint32Array(n);
    let smallCount = 0;
    let largeCount = 0;
    for (let i = 0; i < n; i++) {
      scaled[i] = (weights[i] * n) / total;
      if (scaled[i] < 1) small[smallCount++] = i;
      else large[largeCount++] = i;
    }
    while (smallCount > 0 && largeCount > 0) {
      const s = small[--smallCount];
      const l = large[--largeCount];
      this.probability[s] = scaled[s];
      this.alias[s] = l;
      scaled[l] = scaled[l] + scaled[s] - 1;
      if (scaled[l] < 1) small[smallCount++] = l;
      else large[largeCount++] = l;
    }
    // Leftovers are 1 up to rounding error.
    while (largeCount > 0) {
      const l = large[--largeCount];
      this.probability[l] = 1;
      this.alias[l] = l;
    }
    while (smallCount > 0) {
      const s = small[--smallCount];
      this.probability[s] = 1;
      this.alias[s] = s;
    }
  }

  /** An index drawn with probability weight/total, from one uniform number. */
  sample(random: RandomSource): number {
    const n = this.size;
    const u = random() * n;
    let i = Math.floor(u);
    if (i >= n) i = n - 1; // random() * n can round up to n
    return u - i < this.probability[i] ? i : this.alias[i];
  }

  /**
   * An index other than `excluded`, drawn with probability weight/(total − weight[excluded]): the
   * excluded weight's span is cut out of the cumulative line, so no rejection loop is needed.
   * Requires size > 1.
   */
  sampleExcluding(excluded: number, random: RandomSource): number {
    const n = this.size;
    const cumulative = this.cumulative;
    const before = excluded === 0 ? 0 : cumulative[excluded - 1];
    const span = cumulative[excluded] - before;
    let r = random() * (cumulative[n - 1] - span);
    if (r >= before) r += span;
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (cumulative[mid] > r) hi = mid;
      else lo = mid + 1;
    }
    // Only floating-point rounding at a boundary can land here.
    return lo === excluded ? (excluded + 1) % n : lo;
  }
}

/**
 * Weighted random choice: each pick goes to a target with probability weight/total, independently.
 * It needs no shared state, which is why it is the fallback when the fleet-wide counters (Redis)
 * are unreachable: data planes stay proportional in aggregate without coordinating. O(1) per pick.
 */
export class RandomBalancer<T extends BalancerTarget = BalancerTarget> implements Balancer<T> {
  /** Copied, so the caller mutating its array later cannot desynchronise the sampler from the list. */
  readonly targets: readonly T[];
  private readonly sampler: WeightedSampler;

  constructor(
    targets: readonly T[],
    private readonly random: RandomSource = Math.random,
  ) {
    this.targets = Array.from(targets);
    this.sampler = new WeightedSampler(this.targets.map((t) => t.weight));
  }

  /**
   * A weighted random target; when that is `exclude` (matched by key), a weighted draw among the
   * others instead, so retries keep the configured proportions.
   */
  pick(_hashKey?: string, exclude?: T): T | undefined {
    const n = this.targets.length;
    if (n === 0) return undefined;
    let i = this.sampler.sample(this.random);
    if (exclude !== undefined && n > 1 && this.targets[i].key === exclude.key) {
      i = this.sampler.sampleExcluding(i, this.random);
    }
    return this.targets[i];
  }
}
