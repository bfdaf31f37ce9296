import { describe, expect, it } from "vitest";
import { ConfigError } from "../../../../data-plane/src/config/errors.js";
import {
  MAX_SCHEDULE_LENGTH,
  WeightedRoundRobinBalancer,
} from "../../../../data-plane/src/balancer/weighted-round-robin.js";
import { keys, longestRuns, numbered, seeded, tally, target, targets } from "./helpers.js";

/** nginx's smooth weighted round-robin, written the plain O(n) way, as the reference sequence. */
function nginxSequence(weights: readonly number[], picks: number): number[] {
  const total = weights.reduce((a, b) => a + b, 0);
  const current = weights.map(() => 0);
  const out: number[] = [];
  for (let step = 0; step < picks; step++) {
    let best = -1;
    for (let i = 0; i < weights.length; i++) {
      current[i] += weights[i];
      if (best < 0 || current[i] > current[best]) best = i;
    }
    current[best] -= total;
    out.push(best);
  }
  return out;
}

describe("WeightedRoundRobinBalancer", () => {
  it.each([
    { weights: { a: 1 }, expected: "a a a" },
    { weights: { a: 1, b: 1, c: 1 }, expected: "a b c a b c" },
    { weights: { a: 2, b: 1 }, expected: "a b a a b a" },
    { weights: { a: 3, b: 2 }, expected: "a b a b a" },
    { weights: { a: 5, b: 1, c: 1 }, expected: "a a b a c a a" },
    { weights: { a: 1, b: 5, c: 1 }, expected: "b b a b c b b" },
    { weights: { a: 4, b: 2, c: 2 }, expected: "a b c a a b c a" },
    { weights: { a: 90, b: 10 }, expected: "a a a a a b a a a a" },
  ])("picks the smooth sequence for $weights", ({ weights, expected }) => {
    const balancer = new WeightedRoundRobinBalancer(targets(weights));
    const sequence = expected.split(" ");
    expect(keys(() => balancer.pick(), sequence.length)).toEqual(sequence);
  });

  it.each([
    { name: "90/10", weights: { a: 90, b: 10 }, cycle: 10, picks: 1000, counts: { a: 900, b: 100 } },
    { name: "95/5", weights: { a: 95, b: 5 }, cycle: 20, picks: 1000, counts: { a: 950, b: 50 } },
    { name: "3 equal", weights: { a: 1, b: 1, c: 1 }, cycle: 3, picks: 999, counts: { a: 333, b: 333, c: 333 } },
    { name: "50/30/20", weights: { a: 50, b: 30, c: 20 }, cycle: 10, picks: 1000, counts: { a: 500, b: 300, c: 200 } },
    { name: "7/3", weights: { a: 7, b: 3 }, cycle: 10, picks: 70, counts: { a: 49, b: 21 } },
    { name: "99/1", weights: { a: 99, b: 1 }, cycle: 100, picks: 1000, counts: { a: 990, b: 10 } },
    { name: "primes", weights: { a: 13, b: 7, c: 5, d: 2 }, cycle: 27, picks: 27 * 37, counts: { a: 481, b: 259, c: 185, d: 74 } },
  ])("counts are exact over whole cycles: $name", ({ weights, cycle, picks, counts }) => {
    const balancer = new WeightedRoundRobinBalancer(targets(weights));
    expect(balancer.cycle).toBe(cycle);
    expect(balancer.precomputed).toBe(true);
    expect(tally(keys(() => balancer.pick(), picks))).toEqual(counts);
  });

  it("counts are within one of the exact share at every prefix (two targets)", () => {
    const balancer = new WeightedRoundRobinBalancer(targets({ a: 90, b: 10 }));
    let b = 0;
    for (let t = 1; t <= 1000; t++) {
      if (balancer.pick()!.key === "b") b++;
      expect(Math.abs(b - t / 10)).toBeLessThan(1);
    }
  });

  it.each([
    // Plain weighted round-robin would send the whole weight as one burst (5, 90, 9 in a row).
    { weights: { a: 5, b: 1, c: 1 }, runs: { a: 4, b: 1, c: 1 } },
    { weights: { a: 90, b: 10 }, runs: { a: 9, b: 1 } },
    { weights: { a: 1, b: 1, c: 1 }, runs: { a: 1, b: 1, c: 1 } },
    { weights: { a: 3, b: 3, c: 1 }, runs: { a: 1, b: 1, c: 1 } },
    { weights: { a: 50, b: 50 }, runs: { a: 1, b: 1 } },
  ])("is smooth: longest runs for $weights", ({ weights, runs }) => {
    const balancer = new WeightedRoundRobinBalancer(targets(weights));
    expect(longestRuns(keys(() => balancer.pick(), balancer.cycle * 5))).toEqual(runs);
  });

  it.each([
    { name: "distinct weights", weights: [5, 3, 2, 7, 1] },
    { name: "equal weights grouped", weights: [2, 2, 2, 2] },
    { name: "mixed groups and ties", weights: [3, 1, 3, 2, 1, 2, 3, 1] },
    { name: "heavy first", weights: [100, 1, 1, 1] },
    { name: "heavy last", weights: [1, 1, 1, 100] },
    ...[1, 2, 3, 4, 5].map((seed) => {
      const random = seeded(seed);
      return { name: `random seed ${seed}`, weights: Array.from({ length: 12 }, () => 1 + Math.floor(random() * 6)) };
    }),
  ])("matches nginx's sequence exactly: $name", ({ weights }) => {
    const list = numbered(weights.length, (i) => weights[i]);
    const balancer = new WeightedRoundRobinBalancer(list);
    const picks = 3 * balancer.cycle + 5;
    const reference = nginxSequence(weights, picks).map((i) => list[i].key);
    expect(keys(() => balancer.pick(), picks)).toEqual(reference);
  });

  it("pickAt(position) equals the pick() sequence, across cycle boundaries", () => {
    const balancer = new WeightedRoundRobinBalancer(targets({ a: 5, b: 3, c: 2 }));
    const picked = keys(() => balancer.pick(), 3 * balancer.cycle + 4);
    expect(picked.map((_, p) => balancer.pickAt(p).key)).toEqual(picked);
    expect(balancer.pickAt(balancer.cycle * 1e9 + 1).key).toBe(picked[1]);
  });

  it.each([-1, 0.5, Number.NaN])("pickAt(%s) is refused", (position) => {
    expect(() => new WeightedRoundRobinBalancer(targets({ a: 1 })).pickAt(position)).toThrow(RangeError);
  });

  it("reduces weights by their GCD, so huge equal weights make a tiny table", () => {
    const balancer = new WeightedRoundRobinBalancer(targets({ a: 3e9, b: 1e9 }));
    expect(balancer.cycle).toBe(4);
    expect(balancer.precomputed).toBe(true);
    expect(keys(() => balancer.pick(), 4)).toEqual(["a", "a", "b", "a"]);
  });

  it("computes live past the table limit: same sequence, exact cycle, pickAt refused", () => {
    const weights = [MAX_SCHEDULE_LENGTH, 3]; // GCD 1, cycle just over the limit
    const list = numbered(2, (i) => weights[i]);
    const balancer = new WeightedRoundRobinBalancer(list);
    expect(balancer.precomputed).toBe(false);
    expect(balancer.cycle).toBe(MAX_SCHEDULE_LENGTH + 3);
    expect(() => balancer.pickAt(0)).toThrow(/too long to precompute/);
    const reference = nginxSequence(weights, 5000).map((i) => list[i].key);
    expect(keys(() => balancer.pick(), 5000)).toEqual(reference);
    const rest = tally(keys(() => balancer.pick(), balancer.cycle - 5000));
    const first = tally(reference);
    expect((first.t1 ?? 0) + (rest.t1 ?? 0)).toBe(3);
  });

  it("computes live when building the table would take too many steps", () => {
    // 1,000 distinct weights: a 500,500-pick cycle but 1,000 groups to compare at each step.
    const balancer = new WeightedRoundRobinBalancer(numbered(1000, (i) => i + 1));
    expect(balancer.cycle).toBe(500_500);
    expect(balancer.precomputed).toBe(false);
    expect(balancer.pick()!.key).toBe("t999");
  });

  it.each([
    { name: "heavy target excluded: the other takes every pick", weights: { a: 9, b: 1 }, exclude: "a", expected: "b b b b b b b b b b" },
    { name: "light target excluded", weights: { a: 9, b: 1 }, exclude: "b", expected: "a a a a a a a a a a" },
    { name: "next different target of the schedule", weights: { a: 5, b: 1, c: 1 }, exclude: "a", expected: "b b b c c b b" },
  ])("exclude: $name", ({ weights, exclude, expected }) => {
    const balancer = new WeightedRoundRobinBalancer(targets(weights));
    const sequence = expected.split(" ");
    expect(keys(() => balancer.pick(undefined, target(exclude)), sequence.length)).toEqual(sequence);
  });

  it("exclude does not shift the cycle", () => {
    const balancer = new WeightedRoundRobinBalancer(targets({ a: 5, b: 1, c: 1 }));
    balancer.pick(undefined, target("a"));
    expect(keys(() => balancer.pick(), 6)).toEqual(["a", "b", "a", "c", "a", "a"]);
  });

  it("exclude in live mode goes to another target", () => {
    const balancer = new WeightedRoundRobinBalancer(numbered(3, (i) => [MAX_SCHEDULE_LENGTH, 2, 1][i]));
    expect(balancer.precomputed).toBe(false);
    const picks = tally(keys(() => balancer.pick(undefined, target("t0")), 100));
    expect(picks.t0).toBeUndefined();
    expect((picks.t1 ?? 0) + (picks.t2 ?? 0)).toBe(100);
  });

  it("returns undefined only without targets", () => {
    const balancer = new WeightedRoundRobinBalancer([]);
    expect(balancer.pick()).toBeUndefined();
    expect(balancer.cycle).toBe(0);
    expect(() => balancer.pickAt(0)).toThrow(RangeError);
  });

  it.each([
    { weights: [1, 1.5], field: "targets[1].weight" },
    { weights: [0, 1], field: "targets[0].weight" },
    { weights: [2, -1], field: "targets[1].weight" },
    { weights: [Number.NaN], field: "targets[0].weight" },
  ])("refuses weights $weights naming $field", ({ weights, field }) => {
    const build = () => new WeightedRoundRobinBalancer(numbered(weights.length, (i) => weights[i]));
    expect(build).toThrow(ConfigError);
    expect(build).toThrow(expect.objectContaining({ field }));
  });

  it("uses the narrowest table for many targets and stays exact", () => {
    const balancer = new WeightedRoundRobinBalancer(numbered(300, (i) => 1 + (i % 3)));
    expect(balancer.cycle).toBe(600);
    const counts = tally(keys(() => balancer.pick(), 1200));
    expect(counts.t0).toBe(2);
    expect(counts.t1).toBe(4);
    expect(counts.t299).toBe(6);
  });
});
