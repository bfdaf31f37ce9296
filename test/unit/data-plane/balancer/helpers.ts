import type { BalancerTarget } from "../../../../data-plane/src/balancer/balancer.js";

/** A target as the algorithms see it, with a priority for failover tests. */
export interface TestTarget extends BalancerTarget {
  readonly priority: number;
  load: { inFlight: number; fleetInFlight: number };
}

/**
 * Targets named by key: `{ a: 5, b: 1 }` gives a (weight 5) and b (weight 1), idle. Undefined
 * entries are skipped, so test tables may mix objects of different shapes.
 */
export function targets(weights: Readonly<Record<string, number | undefined>>): TestTarget[] {
  return Object.entries(weights).flatMap(([key, weight]) => (weight === undefined ? [] : [target(key, weight)]));
}

export function target(key: string, weight = 1, priority = 0): TestTarget {
  return { key, weight, priority, load: { inFlight: 0, fleetInFlight: 0 } };
}

/** `count` targets t0..t{count-1}, weight 1 unless `weightOf` says otherwise. */
export function numbered(count: number, weightOf: (i: number) => number = () => 1): TestTarget[] {
  return Array.from({ length: count }, (_, i) => target(`t${i}`, weightOf(i)));
}

/** Deterministic uniform [0, 1) generator (mulberry32), so statistical tests are reproducible. */
export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Keys of `times` consecutive picks. */
export function keys(pick: () => BalancerTarget | undefined, times: number): string[] {
  return Array.from({ length: times }, () => pick()?.key ?? "-");
}

/** How many times each key occurs. */
export function tally(sequence: readonly string[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const k of sequence) counts[k] = (counts[k] ?? 0) + 1;
  return counts;
}

/** Longest run of consecutive equal entries per key. */
export function longestRuns(sequence: readonly string[]): Record<string, number> {
  const runs: Record<string, number> = {};
  let run = 0;
  sequence.forEach((k, i) => {
    run = i > 0 && sequence[i - 1] === k ? run + 1 : 1;
    runs[k] = Math.max(runs[k] ?? 0, run);
  });
  return runs;
}
