import { ConfigError } from "../config/errors.js";
import type { AlgorithmName, Balancer, BalancerTarget, SequencedBalancer } from "./balancer.js";
import { ConsistentHashBalancer } from "./consistent-hash.js";
import { LeastConnectionsBalancer } from "./least-connections.js";
import { RandomBalancer, type RandomSource } from "./random.js";
import { RoundRobinBalancer } from "./round-robin.js";
import { checkIntegerWeights, WeightedRoundRobinBalancer } from "./weighted-round-robin.js";

/** Every algorithm name, for validation messages and for listing what an upstream may configure. */
export const ALGORITHM_NAMES: readonly AlgorithmName[] = Object.freeze([
  "round-robin",
  "weighted-round-robin",
  "least-connections",
  "consistent-hash",
  "random",
]);

/** Narrows a configured string, so callers validate names at the edge with the same list. */
export function isAlgorithmName(name: string): name is AlgorithmName {
  return (ALGORITHM_NAMES as readonly string[]).includes(name);
}

/** Options shared by all algorithms; each uses what applies to it. */
export interface BalancerOptions {
  /** Uniform [0, 1) source for random and least-connections (sampled path); Math.random by default. */
  random?: RandomSource;
}

/**
 * Builds the balancer for an upstream's algorithm over its eligible targets (health, draining and
 * priority already decided by the caller).
 *
 * Targets of weight 0 are dropped here, for every algorithm including the weight-blind ones:
 * weight 0 means "receives no traffic" (blue/green), and no algorithm should have to know.
 * Weights are taken as valid otherwise (validated with the upstream), except that
 * weighted-round-robin refuses non-integer weights, naming the field by its index in `targets`.
 *
 * @throws ConfigError with field `algorithm` for an unknown algorithm name.
 */
export function createBalancer<T extends BalancerTarget>(
  algorithm: AlgorithmName,
  targets: readonly T[],
  opts: BalancerOptions = {},
): Balancer<T> {
  if (algorithm === "weighted-round-robin") checkIntegerWeights(targets, true);
  const eligible = targets.every((t) => t.weight > 0) ? targets : targets.filter((t) => t.weight > 0);
  switch (algorithm) {
    case "round-robin":
      return new RoundRobinBalancer(eligible);
    case "weighted-round-robin":
      return new WeightedRoundRobinBalancer(eligible);
    case "least-connections":
      return new LeastConnectionsBalancer(eligible, { random: opts.random });
    case "consistent-hash":
      return new ConsistentHashBalancer(eligible);
    case "random":
      return new RandomBalancer(eligible, opts.random);
    default: {
      const unknown: never = algorithm;
      throw new ConfigError(
        "algorithm",
        `unknown load-balancing algorithm ${JSON.stringify(unknown)}; expected one of ${ALGORITHM_NAMES.join(", ")}`,
      );
    }
  }
}

/**
 * Whether picks can be resolved from a sequence position, so the proxy drives the balancer from a
 * fleet-wide counter (exact splits across data planes) only when that works: round-robin always,
 * weighted-round-robin when its cycle is precomputed.
 */
export function isSequenced<T extends BalancerTarget>(balancer: Balancer<T>): balancer is SequencedBalancer<T> {
  if (balancer instanceof RoundRobinBalancer) return true;
  return balancer instanceof WeightedRoundRobinBalancer && balancer.precomputed;
}
