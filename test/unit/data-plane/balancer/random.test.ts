import { describe, expect, it } from "vitest";
import { RandomBalancer, WeightedSampler } from "../../../../data-plane/src/balancer/random.js";
import { keys, seeded, tally, target, targets } from "./helpers.js";

/** A "random" source walking the midpoints of a grid of `size` cells: every draw region is hit exactly. */
function grid(size: number): () => number {
  let i = 0;
  return () => ((i++ % size) + 0.5) / size;
}

describe("WeightedSampler", () => {
  it.each([
    { weights: [1, 1, 1, 1], expected: [250, 250, 250, 250] },
    { weights: [5, 3, 2], expected: [500, 300, 200] },
    { weights: [90, 10], expected: [900, 100] },
    { weights: [1, 0.5, 0.25, 0.25], expected: [500, 250, 125, 125] },
    { weights: [7], expected: [1000] },
  ])("alias table covers [0, 1) in exact proportion to $weights", ({ weights, expected }) => {
    // 1,000 evenly spaced draws per 1,000 cells: the alias layout must give each index its exact area.
    const sampler = new WeightedSampler(weights);
    const random = grid(1000);
    const counts = new Array(weights.length).fill(0);
    for (let k = 0; k < 1000; k++) counts[sampler.sample(random)]++;
    expect(counts).toEqual(expected);
  });

  it.each([
    { weights: [5, 3, 2], excluded: 0, expected: [0, 600, 400] },
    { weights: [5, 3, 2], excluded: 1, expected: [714, 0, 286] },
    { weights: [5, 3, 2], excluded: 2, expected: [625, 375, 0] },
    { weights: [1, 1], excluded: 1, expected: [1000, 0] },
  ])("draws excluding $excluded in proportion to the rest", ({ weights, excluded, expected }) => {
    const sampler = new WeightedSampler(weights);
    const random = grid(1000);
    const counts = new Array(weights.length).fill(0);
    for (let k = 0; k < 1000; k++) counts[sampler.sampleExcluding(excluded, random)]++;
    counts.forEach((c, i) => expect(Math.abs(c - expected[i])).toBeLessThanOrEqual(1));
  });

  it.each([0, 0.9999999999999999, 0.5])("stays in range when random() returns %s", (u) => {
    const sampler = new WeightedSampler([3, 1, 2]);
    const i = sampler.sample(() => u);
    expect(i).toBeGreaterThanOrEqual(0);
    expect(i).toBeLessThan(3);
    expect(sampler.sampleExcluding(2, () => u)).not.toBe(2);
  });
});

describe("RandomBalancer", () => {
  it.each([
    { name: "90/10", weights: { a: 90, b: 10 } },
    { name: "equal", weights: { a: 1, b: 1, c: 1 } },
    { name: "50/30/20", weights: { a: 50, b: 30, c: 20 } },
    { name: "99/1", weights: { a: 99, b: 1 } },
    { name: "many", weights: Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`t${i}`, i + 1])) },
  ])("distributes by weight within 4σ: $name", ({ weights }) => {
    const draws = 100_000;
    const balancer = new RandomBalancer(targets(weights), seeded(11));
    const counts = tally(keys(() => balancer.pick(), draws));
    const total = Object.values(weights).reduce((a, b) => a + b, 0);
    for (const [key, weight] of Object.entries(weights)) {
      const p = weight / total;
      const sigma = Math.sqrt(draws * p * (1 - p));
      expect(Math.abs((counts[key] ?? 0) - draws * p), key).toBeLessThanOrEqual(4 * sigma);
    }
  });

  it("repeats its sequence for the same seed, and differs for another", () => {
    const list = targets({ a: 2, b: 1, c: 1 });
    const balancer1 = new RandomBalancer(list, seeded(5));
    const first = keys(() => balancer1.pick(), 50);
    const balancer1Again = new RandomBalancer(list, seeded(5));
    expect(keys(() => balancer1Again.pick(), 50)).toEqual(first);
    const other = new RandomBalancer(list, seeded(6));
    expect(keys(() => other.pick(), 50)).not.toEqual(first);
  });

  it("excluding a target spreads retries over the others by weight", () => {
    const balancer = new RandomBalancer(targets({ a: 5, b: 3, c: 2 }), seeded(12));
    const counts = tally(keys(() => balancer.pick(undefined, target("a")), 50_000));
    expect(counts.a).toBeUndefined();
    expect(counts.b / 50_000).toBeCloseTo(0.6, 1);
    expect(counts.c / 50_000).toBeCloseTo(0.4, 1);
  });

  it("a single target is returned even when excluded; none gives undefined", () => {
    const [only] = targets({ a: 1 });
    expect(new RandomBalancer([only]).pick(undefined, only)).toBe(only);
    expect(new RandomBalancer([]).pick()).toBeUndefined();
  });
});
