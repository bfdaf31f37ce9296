import type { BalancerTarget, SequencedBalancer } from "./balancer.js";
import { checkPosition } from "./schedule.js";

/**
 * Plain rotation over the targets, ignoring weights: the seeds' default when a rule's targets carry
 * no weights. Sequenced (cycle = number of targets) so a fleet-wide counter can drive it and every
 * target gets exactly one request per cycle across all data planes.
 *
 * Each balancer starts its rotation at the first target; since a balancer is rebuilt whenever
 * eligibility changes, that restart costs at most one extra request to the first target.
 */
export class RoundRobinBalancer<T extends BalancerTarget = BalancerTarget> implements SequencedBalancer<T> {
  /** Copied, so the caller mutating its array later cannot desynchronise `cycle` from the list. */
  readonly targets: readonly T[];
  readonly cycle: number;
  private next = 0;

  constructor(targets: readonly T[]) {
    this.targets = Array.from(targets);
    this.cycle = this.targets.length;
  }

  /**
   * The next target in rotation. `exclude` is matched by key (so a target object from an earlier
   * balancer, rebuilt between a request's attempts, is still recognised) and skipped by moving one
   * step further, which keeps the rotation going from the target actually returned.
   */
  pick(_hashKey?: string, exclude?: T): T | undefined {
    const n = this.cycle;
    if (n === 0) return undefined;
    let i = this.next;
    if (exclude !== undefined && n > 1 && this.targets[i].key === exclude.key) {
      i = i + 1 === n ? 0 : i + 1;
    }
    this.next = i + 1 === n ? 0 : i + 1;
    return this.targets[i];
  }

  /** The target at a fleet-wide position: position modulo the number of targets. */
  pickAt(position: number): T {
    checkPosition(position, this.cycle, "round-robin");
    return this.targets[position % this.cycle];
  }
}
