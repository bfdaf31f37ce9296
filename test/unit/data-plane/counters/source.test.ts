import { describe, expect, it } from "vitest";
import { WeightedRoundRobinBalancer } from "../../../../data-plane/src/balancer/weighted-round-robin.js";
import { randomPosition } from "../../../../data-plane/src/counters/source.js";
import { seeded, tally } from "./sources.js";

describe("randomPosition (the fallback)", () => {
  it.each([
    { cycle: 10, u: 0, position: 0 },
    { cycle: 10, u: 0.05, position: 0 },
    { cycle: 10, u: 0.1, position: 1 },
    { cycle: 10, u: 0.999999999, position: 9 },
    { cycle: 10, u: 1 - Number.EPSILON / 2, position: 9 },
    { cycle: 1, u: 0.7, position: 0 },
    { cycle: 0, u: 0.7, position: 0 },
  ])("maps $u onto [0, $cycle) as $position", ({ cycle, u, position }) => {
    expect(randomPosition(cycle, () => u)).toBe(position);
  });

  it("is a weighted random pick: each target of a cycle owns `weight` of its slots", () => {
    const targets = [
      { key: "a", weight: 50, load: { inFlight: 0, fleetInFlight: 0 } },
      { key: "b", weight: 30, load: { inFlight: 0, fleetInFlight: 0 } },
      { key: "c", weight: 20, load: { inFlight: 0, fleetInFlight: 0 } },
    ];
    const balancer = new WeightedRoundRobinBalancer(targets);
    // Every slot once: exactly the weights (per cycle of 10).
    expect(tally(Array.from({ length: balancer.cycle }, (_, p) => balancer.pickAt(p).key))).toEqual({ a: 5, b: 3, c: 2 });
    // Uniform slots, hence proportional targets: 100,000 seeded draws within 1% of 50/30/20.
    const random = seeded(42);
    const counts = tally(Array.from({ length: 100_000 }, () => balancer.pickAt(randomPosition(balancer.cycle, random)).key));
    expect(Math.abs(counts.a - 50_000)).toBeLessThan(1_000);
    expect(Math.abs(counts.b - 30_000)).toBeLessThan(1_000);
    expect(Math.abs(counts.c - 20_000)).toBeLessThan(1_000);
  });
});
