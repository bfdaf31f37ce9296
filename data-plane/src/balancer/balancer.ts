/**
 * The balancer contract: one algorithm per file (round-robin.ts, weighted-round-robin.ts,
 * least-connections.ts, consistent-hash.ts, random.ts), all of this shape. An algorithm is built
 * from an immutable list of eligible targets and is replaced (not mutated) whenever eligibility
 * changes; health, priority and draining are decided before a list reaches an algorithm.
 */

/** Live load counters of a target, shared with the proxy (which increments them) and the fleet view. */
export interface LoadCounters {
  /** Requests this data plane has in flight to the target. */
  inFlight: number;
  /** Requests in flight across the fleet, as last pushed by the control plane (includes ours as reported). */
  fleetInFlight: number;
}

/** What an algorithm knows about a target. */
export interface BalancerTarget {
  /** "host:port" (or any stable key); consistent hashing places targets by it. */
  readonly key: string;
  /** Effective weight, > 0 (weight-0 targets never reach an algorithm). */
  readonly weight: number;
  readonly load: LoadCounters;
}

/** Algorithm names as configured on an upstream. */
export type AlgorithmName =
  | "round-robin"
  | "weighted-round-robin"
  | "least-connections"
  | "consistent-hash"
  | "random";

export interface Balancer<T extends BalancerTarget = BalancerTarget> {
  /**
   * Picks a target. `hashKey` is the request's key for consistent hashing (ignored by others);
   * `exclude` is a target to avoid when another exists (retries go elsewhere).
   * Returns undefined only when the balancer has no targets.
   */
  pick(hashKey?: string, exclude?: T): T | undefined;
}

/**
 * A balancer whose choice is a pure function of a sequence position, so the position can come from
 * a fleet-wide counter (Redis) and distribution is exact across data planes.
 */
export interface SequencedBalancer<T extends BalancerTarget = BalancerTarget> extends Balancer<T> {
  /** Length of one full cycle; each target appears weight times in every cycle. */
  readonly cycle: number;
  /** The target at this position (any non-negative integer; taken modulo cycle). */
  pickAt(position: number): T;
}
