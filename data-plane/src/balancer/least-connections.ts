import type { Balancer, BalancerTarget } from "./balancer.js";
import { WeightedSampler, type RandomSource } from "./random.js";

/**
 * Up to this many targets every pick scans them all (exact, a few ns a target); above it a pick
 * compares two weighted random draws (power of two choices), which costs the same at any size.
 */
export const LEAST_CONNECTIONS_SCAN_LIMIT = 100;

/**
 * How loaded a target is per unit of weight: requests in flight here plus across the fleet, divided
 * by weight, so a weight-2 target is "as busy" as a weight-1 one with half its requests.
 *
 * `fleetInFlight` is the control plane's last aggregate and already contains this node's share as
 * last reported, so our own requests count about twice. That is accepted rather than corrected:
 * subtracting our reported share would need the report's exact snapshot of our counters, and the
 * local count is the only one that is current (the fleet's lags by a report interval). Counting it
 * twice only makes this node spread its own requests more evenly, which is what keeps a burst from
 * one node piling onto one target before the next report; other nodes' load still steers it.
 */
export function score(t: BalancerTarget): number {
  return (t.load.inFlight + t.load.fleetInFlight) / t.weight;
}

/** Options of a least-connections balancer. */
export interface LeastConnectionsOptions {
  /** Uniform [0, 1) source for power-of-two-choices draws; Math.random by default. */
  random?: RandomSource;
  /** Largest target count picked by a full scan; tests lower it to exercise the sampled path. */
  scanLimit?: number;
}

/**
 * Least connections: the target with the lowest score() (in-flight per weight, see there).
 *
 * Up to LEAST_CONNECTIONS_SCAN_LIMIT targets, a pick scans all of them starting just after the
 * previous pick and keeps the first strictly lowest, so targets with equal scores take turns (as
 * they would when the counters have not moved yet, e.g. between a burst's picks) instead of the
 * first one taking every tie.
 *
 * Above the limit a scan would cost O(n) per request, so it uses Envoy's power of two choices:
 * draw two targets with probability proportional to weight and take the lower score (the first
 * on a tie). It is O(1), stays within a small factor of the true minimum (Mitzenmacher), and drawing
 * by weight keeps an idle fleet's traffic weight-proportional, where uniform draws would not.
 */
export class LeastConnectionsBalancer<T extends BalancerTarget = BalancerTarget> implements Balancer<T> {
  /** Copied, so the caller mutating its array later cannot desynchronise the sampler from the list. */
  readonly targets: readonly T[];
  private readonly scanLimit: number;
  private readonly random: RandomSource;
  private readonly sampler: WeightedSampler | undefined;
  private start = 0;

  constructor(targets: readonly T[], options: LeastConnectionsOptions = {}) {
    this.targets = Array.from(targets);
    this.scanLimit = options.scanLimit ?? LEAST_CONNECTIONS_SCAN_LIMIT;
    this.random = options.random ?? Math.random;
    if (this.targets.length > this.scanLimit) this.sampler = new WeightedSampler(this.targets.map((t) => t.weight));
  }

  /** The least loaded target other than `exclude` (matched by key) when another exists. */
  pick(_hashKey?: string, exclude?: T): T | undefined {
    const n = this.targets.length;
    if (n <= 1) return this.targets[0];
    const avoid = exclude?.key;
    return this.sampler === undefined ? this.scan(n, avoid) : this.twoChoices(avoid);
  }

  private scan(n: number, avoid: string | undefined): T {
    const targets = this.targets;
    let best = -1;
    let bestScore = Infinity;
    let i = this.start;
    for (let k = 0; k < n; k++) {
      const t = targets[i];
      if (t.key !== avoid) {
        const s = score(t);
        if (s < bestScore) {
          best = i;
          bestScore = s;
        }
      }
      i = i + 1 === n ? 0 : i + 1;
    }
    // Scores are NaN or Infinity only from corrupt counters: keep serving in rotation.
    if (best < 0) best = targets[this.start].key !== avoid ? this.start : (this.start + 1) % n;
    this.start = best + 1 === n ? 0 : best + 1;
    return targets[best];
  }

  private twoChoices(avoid: string | undefined): T {
    const a = this.draw(avoid);
    let b = this.draw(avoid);
    if (b === a) b = this.draw(avoid); // one redraw: a heavy target may legitimately come twice
    const ta = this.targets[a];
    const tb = this.targets[b];
    return score(tb) < score(ta) ? tb : ta;
  }

  private draw(avoid: string | undefined): number {
    const sampler = this.sampler!;
    const i = sampler.sample(this.random);
    return avoid !== undefined && this.targets[i].key === avoid ? sampler.sampleExcluding(i, this.random) : i;
  }
}
