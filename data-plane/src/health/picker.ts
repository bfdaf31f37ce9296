import type { AlgorithmName, Balancer, BalancerTarget, LoadCounters } from "../balancer/balancer.js";
import { createBalancer } from "../balancer/factory.js";
import type { PickerPlan } from "./plan.js";

/**
 * Builds a backend's picker from a plan (plan.ts). Like grpc-js's outlier detection, health wraps
 * the algorithm and never changes it: the algorithm only ever sees a list of targets (with
 * slow-start weights when some ramp), and half-open gating happens around its picks.
 *
 * In the common case (no target ramping, none half-open) the result is the plain algorithm over the
 * plan's targets, so a sequenced balancer (round-robin, weighted round-robin) stays sequenced and the
 * fleet-wide counters can drive it. While a target ramps or is on trial the picker is a wrapper,
 * picks are local, and splits are exact again once it is rebuilt plain.
 */

/** Admission of half-open targets: PassiveHealth.tryAcquire. */
export interface HalfOpenGate {
  tryAcquire(key: string): boolean;
}

/** What the picker needs of a target. */
export interface PickableTarget extends BalancerTarget {
  readonly key: string;
  readonly weight: number;
  readonly load: LoadCounters;
}

/** A target as the wrapped algorithm sees it: its slow-start weight, its own load cells. */
interface View<T> extends BalancerTarget {
  readonly target: T;
}

/**
 * Integer scale of slow-start weights for weighted round-robin: with the default 10% steps every
 * step is a whole number (a ramping weight-1 target goes 1, 2, ... 10 against its peers' 10).
 */
const WEIGHT_SCALE = 10;

/** The picker for a plan; `algorithm` is the backend's. */
export function buildPicker<T extends PickableTarget>(
  algorithm: AlgorithmName,
  plan: PickerPlan<T>,
  gate: HalfOpenGate,
): Balancer<T> {
  if (plan.fractions === undefined && plan.halfOpen.size === 0) return createBalancer(algorithm, plan.targets);
  let inner: Balancer<View<T>>;
  if (plan.fractions === undefined) {
    inner = createBalancer(
      algorithm,
      plan.targets.map((t) => ({ key: t.key, weight: t.weight, load: t.load, target: t })),
    );
  } else {
    const fractions = plan.fractions;
    // Round-robin ignores configured weights, so its targets ramp against a base of 1; it needs a
    // weighted algorithm for the ramp to mean anything. Weighted round-robin needs integers.
    const weighted = algorithm === "round-robin" || algorithm === "weighted-round-robin";
    const views = plan.targets.map((t, i) => {
      const base = algorithm === "round-robin" ? 1 : t.weight;
      const weight = weighted ? Math.max(1, Math.round(base * WEIGHT_SCALE * fractions[i])) : base * fractions[i];
      return { key: t.key, weight, load: t.load, target: t };
    });
    inner = createBalancer(weighted ? "weighted-round-robin" : algorithm, views);
  }
  return new HealthPicker(inner, plan.targets, plan.halfOpen, gate);
}

/**
 * Wraps an algorithm built over views: maps picks back to the targets and admits at most the
 * configured number of requests to half-open targets at a time (PassiveHealth.tryAcquire; the
 * proxy's outcome, reported through the health manager, releases the slot).
 */
export class HealthPicker<T extends PickableTarget> implements Balancer<T> {
  private cursor = 0;

  constructor(
    private readonly inner: Balancer<View<T>>,
    /** The targets of the plan, in order (fallback when every pick lands on a gated target). */
    readonly targets: readonly T[],
    private readonly halfOpen: ReadonlySet<string>,
    private readonly gate: HalfOpenGate,
  ) {}

  pick(hashKey?: string, exclude?: T): T | undefined {
    const halfOpen = this.halfOpen;
    // Views are matched by key, like every algorithm matches `exclude`.
    const avoid = exclude === undefined ? undefined : (exclude as unknown as View<T>);
    const n = this.targets.length;
    for (let i = 0; i < n; i++) {
      const v = this.inner.pick(hashKey, avoid);
      if (v === undefined) return undefined;
      const t = v.target;
      if (halfOpen.size === 0 || !halfOpen.has(t.key) || this.gate.tryAcquire(t.key)) return t;
    }
    return this.fallback(exclude?.key);
  }

  /**
   * Every pick landed on a half-open target whose trial slots are taken (consistent hashing keeps
   * landing on the same one): take a trusted target in rotation, else over-admit a half-open one
   * rather than fail a request that a target could serve.
   */
  private fallback(avoid: string | undefined): T | undefined {
    const n = this.targets.length;
    let spare: T | undefined;
    for (let k = 0; k < n; k++) {
      const i = (this.cursor + k) % n;
      const t = this.targets[i];
      if (this.halfOpen.has(t.key)) continue;
      if (t.key === avoid) {
        spare ??= t;
        continue;
      }
      this.cursor = i + 1;
      return t;
    }
    return spare ?? this.targets[0];
  }
}
