import { ConfigError } from "../config/errors.js";
import type { BalancerTarget, SequencedBalancer } from "./balancer.js";
import { checkPosition, indexArray, nextDistinct, type IndexArray } from "./schedule.js";

/**
 * Longest cycle precomputed into a table. Past it (after dividing weights by their GCD) the
 * schedule would cost megabytes per upstream, so picks are computed incrementally instead.
 */
export const MAX_SCHEDULE_LENGTH = 1_000_000;

/**
 * Most scheduler steps (cycle length × distinct weights) spent building a table: bounds the time a
 * snapshot takes to compile (a few tens of milliseconds) for adversarial configs such as 1,000 targets
 * with 1,000 distinct weights.
 */
export const MAX_SCHEDULE_BUILD_STEPS = 10_000_000;

function gcd(a: number, b: number): number {
  while (b !== 0) {
    const r = a % b;
    a = b;
    b = r;
  }
  return a;
}

/**
 * Refuses weights a weighted cycle cannot be built from, naming the field by the caller's index:
 * the factory runs it before weight-0 targets are filtered out (`allowZero`), so the index in the
 * error is the one in the configuration.
 */
export function checkIntegerWeights(targets: readonly BalancerTarget[], allowZero: boolean): void {
  targets.forEach((t, i) => {
    if (!Number.isSafeInteger(t.weight) || t.weight < 0 || (t.weight === 0 && !allowZero)) {
      throw new ConfigError(
        `targets[${i}].weight`,
        `weighted-round-robin needs ${allowZero ? "a non-negative" : "a positive"} integer weight, got ${t.weight}`,
      );
    }
  });
}

/**
 * nginx's smooth weighted round-robin (every step each target's `current` grows by its weight, the
 * largest is picked and loses the total), with targets of equal weight folded into one group.
 *
 * Within a group, members are always picked in list order, one per rotation: they gain the same
 * amount every step, so the one with the fewest picks, and among those the first listed, has the
 * largest `current`. A group therefore only tracks its next member's `current`, which drops by the
 * total only once the whole group has been picked. That makes a step O(distinct weights) rather
 * than O(targets) while producing exactly nginx's sequence, ties going to the earlier target.
 */
class SmoothWeightedScheduler {
  private readonly weight: Float64Array;
  private readonly current: Float64Array;
  private readonly start: Uint32Array;
  private readonly size: Uint32Array;
  private readonly cursor: Uint32Array;
  private readonly members: Uint32Array;

  constructor(
    weights: readonly number[],
    private readonly total: number,
  ) {
    const groupOf = new Map<number, number[]>();
    weights.forEach((w, i) => {
      const list = groupOf.get(w);
      if (list === undefined) groupOf.set(w, [i]);
      else list.push(i);
    });
    const groups = groupOf.size;
    this.weight = new Float64Array(groups);
    this.current = new Float64Array(groups);
    this.start = new Uint32Array(groups);
    this.size = new Uint32Array(groups);
    this.cursor = new Uint32Array(groups);
    this.members = new Uint32Array(weights.length);
    let g = 0;
    let offset = 0;
    for (const [w, list] of groupOf) {
      this.weight[g] = w;
      this.start[g] = offset;
      this.size[g] = list.length;
      for (const i of list) this.members[offset++] = i;
      g++;
    }
  }

  get groups(): number {
    return this.weight.length;
  }

  /** Advances one step and returns the index of the target picked. */
  step(): number {
    const weight = this.weight;
    const current = this.current;
    const start = this.start;
    const cursor = this.cursor;
    const members = this.members;
    const groups = weight.length;
    let best = 0;
    let bestCurrent = -Infinity;
    let bestTarget = 0xffffffff;
    for (let g = 0; g < groups; g++) {
      const c = (current[g] += weight[g]);
      if (c < bestCurrent) continue;
      const target = members[start[g] + cursor[g]];
      if (c > bestCurrent || target < bestTarget) {
        best = g;
        bestCurrent = c;
        bestTarget = target;
      }
    }
    if (++cursor[best] === this.size[best]) {
      cursor[best] = 0;
      current[best] -= this.total;
    }
    return bestTarget;
  }
}

/**
 * Smooth weighted round-robin (nginx's algorithm): over every cycle of W = Σweight/gcd picks each
 * target gets exactly weight/gcd of them, spread out rather than in bursts (weights 5,1,1 give
 * a a b a c a a). Exactness is what the seeds ask of weighted splits, and smoothness keeps a 90/10
 * canary from receiving its 10% as one burst.
 *
 * The cycle is precomputed once into a typed array, so `pick()` and `pickAt()` are one table read.
 * When the cycle is too long to precompute (see MAX_SCHEDULE_LENGTH, MAX_SCHEDULE_BUILD_STEPS),
 * `pick()` runs the scheduler live (O(distinct weights) per pick, same sequence) and `pickAt()`
 * throws, since a position could then only be resolved by replaying the cycle up to it;
 * `precomputed` says which mode a balancer is in.
 *
 * `pick()` walks the cycle from its start with a counter of its own: a balancer is rebuilt on every
 * eligibility change and restarts there, which keeps each cycle exact up to the change (SWRR's
 * prefixes are within a pick or so of proportional). For exactness across data planes, drive
 * `pickAt()` from a fleet-wide counter instead.
 *
 * Weights must be positive integers (a weighted cycle has no meaning for fractions).
 */
export class WeightedRoundRobinBalancer<T extends BalancerTarget = BalancerTarget> implements SequencedBalancer<T> {
  /** Copied, so the caller mutating its array later cannot desynchronise the schedule from the list. */
  readonly targets: readonly T[];
  /** Picks per cycle: the sum of weights divided by their greatest common divisor. */
  readonly cycle: number;
  /** Whether the cycle is a precomputed table (pickAt available) or computed live. */
  readonly precomputed: boolean;
  private readonly schedule: IndexArray | undefined;
  private readonly alternate: IndexArray | undefined;
  private readonly live: SmoothWeightedScheduler | undefined;
  private position = 0;
  private avoidCursor = 0;

  /** @throws ConfigError naming `targets[i].weight` when a weight is not a positive safe integer. */
  constructor(targets: readonly T[]) {
    this.targets = Array.from(targets);
    checkIntegerWeights(this.targets, false);
    let divisor = 0;
    let sum = 0;
    for (const t of this.targets) {
      divisor = gcd(t.weight, divisor);
      sum += t.weight;
    }
    if (!Number.isSafeInteger(sum)) {
      throw new ConfigError("targets", `weighted-round-robin: total weight ${sum} is too large`);
    }
    const weights = this.targets.map((t) => t.weight / divisor);
    const cycle = divisor === 0 ? 0 : sum / divisor;
    this.cycle = cycle;
    const scheduler = new SmoothWeightedScheduler(weights, cycle);
    this.precomputed = cycle <= MAX_SCHEDULE_LENGTH && cycle * scheduler.groups <= MAX_SCHEDULE_BUILD_STEPS;
    if (this.precomputed) {
      const schedule = indexArray(this.targets.length, cycle);
      for (let p = 0; p < cycle; p++) schedule[p] = scheduler.step();
      this.schedule = schedule;
      this.alternate = nextDistinct(schedule);
    } else {
      this.live = scheduler;
    }
  }

  /**
   * The next target of the cycle. When it is `exclude` (matched by key, so a target from a balancer
   * rebuilt between attempts still counts), the next different target of the cycle is returned
   * instead: retries follow the schedule's proportions without disturbing its position. In the
   * live (non-precomputed) mode a retry rotates over the other targets instead.
   */
  pick(_hashKey?: string, exclude?: T): T | undefined {
    const n = this.targets.length;
    if (n === 0) return undefined;
    let i: number;
    if (this.schedule !== undefined) {
      const p = this.position;
      this.position = p + 1 === this.cycle ? 0 : p + 1;
      i = this.schedule[p];
      if (exclude !== undefined && n > 1 && this.targets[i].key === exclude.key) i = this.alternate![p];
    } else {
      i = this.live!.step();
      if (exclude !== undefined && n > 1 && this.targets[i].key === exclude.key) {
        const skip = this.avoidCursor;
        this.avoidCursor = skip + 2 >= n ? 0 : skip + 1;
        i = (i + 1 + skip) % n;
      }
    }
    return this.targets[i];
  }

  /**
   * The target at a fleet-wide position (modulo `cycle`), for exact splits across data planes.
   * @throws RangeError when the cycle is not precomputed (see `precomputed`).
   */
  pickAt(position: number): T {
    checkPosition(position, this.cycle, "weighted-round-robin");
    if (this.schedule === undefined) {
      throw new RangeError(
        `weighted-round-robin: a cycle of ${this.cycle} picks over ${this.targets.length} targets is too long ` +
          `to precompute (limits: ${MAX_SCHEDULE_LENGTH} picks, ${MAX_SCHEDULE_BUILD_STEPS} build steps), ` +
          `so positions cannot be resolved; use pick() or weights with a common divisor`,
      );
    }
    return this.targets[this.schedule[position % this.cycle]];
  }
}
