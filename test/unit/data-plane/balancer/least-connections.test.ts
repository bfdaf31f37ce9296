import { describe, expect, it } from "vitest";
import { LeastConnectionsBalancer, score } from "../../../../data-plane/src/balancer/least-connections.js";
import { keys, numbered, seeded, tally, target, type TestTarget } from "./helpers.js";

/** Targets from `key:weight:inFlight:fleetInFlight` specs. */
function loaded(...specs: string[]): TestTarget[] {
  return specs.map((spec) => {
    const [key, weight, inFlight, fleet] = spec.split(":");
    const t = target(key, Number(weight));
    t.load.inFlight = Number(inFlight ?? 0);
    t.load.fleetInFlight = Number(fleet ?? 0);
    return t;
  });
}

describe("score", () => {
  it.each([
    { spec: "a:1:3:0", expected: 3 },
    { spec: "a:2:3:1", expected: 2 },
    { spec: "a:4:0:0", expected: 0 },
    { spec: "a:3:4:5", expected: 3 },
  ])("$spec scores $expected", ({ spec, expected }) => {
    expect(score(loaded(spec)[0])).toBe(expected);
  });
});

describe("LeastConnectionsBalancer", () => {
  it.each([
    { name: "fewest in flight", specs: ["a:1:5", "b:1:2", "c:1:9"], expected: "b" },
    { name: "fleet in-flight counts", specs: ["a:1:1:10", "b:1:5:0", "c:1:3:4"], expected: "b" },
    { name: "weight divides the load", specs: ["a:1:2", "b:3:5"], expected: "b" },
    { name: "heavier is not always better", specs: ["a:1:1", "b:3:6"], expected: "a" },
    { name: "idle target wins", specs: ["a:1:1", "b:1:1", "c:1:0"], expected: "c" },
  ])("prefers the least loaded: $name", ({ specs, expected }) => {
    expect(new LeastConnectionsBalancer(loaded(...specs)).pick()?.key).toBe(expected);
  });

  it.each([
    { name: "all idle", specs: ["a:1:0", "b:1:0", "c:1:0"], expected: "a b c a b c" },
    { name: "two tied below a busy one", specs: ["a:1:0", "b:1:5", "c:1:0"], expected: "a c a c a c" },
    { name: "tie across weights", specs: ["a:2:2", "b:1:1", "c:1:3"], expected: "a b a b" },
  ])("rotates ties instead of favouring the first: $name", ({ specs, expected }) => {
    const balancer = new LeastConnectionsBalancer(loaded(...specs));
    const sequence = expected.split(" ");
    expect(keys(() => balancer.pick(), sequence.length)).toEqual(sequence);
  });

  it.each([
    { weights: [1, 1, 1], picks: 300, expected: [100, 100, 100] },
    { weights: [3, 1], picks: 400, expected: [300, 100] },
    { weights: [5, 3, 2], picks: 1000, expected: [500, 300, 200] },
  ])("spreads requests that stay in flight by weight $weights", ({ weights, picks, expected }) => {
    const list = numbered(weights.length, (i) => weights[i]);
    const balancer = new LeastConnectionsBalancer(list);
    for (let k = 0; k < picks; k++) balancer.pick()!.load.inFlight++;
    list.forEach((t, i) => expect(Math.abs(t.load.inFlight - expected[i])).toBeLessThanOrEqual(1));
  });

  it("follows load as requests finish", () => {
    const list = loaded("a:1:0", "b:1:0");
    const balancer = new LeastConnectionsBalancer(list);
    const first = balancer.pick()!;
    first.load.inFlight = 10; // a long streamed response
    const picks = tally(keys(() => balancer.pick(), 5));
    expect(picks).toEqual({ b: 5 });
  });

  it.each([
    { name: "avoids the least loaded when excluded", specs: ["a:1:0", "b:1:3", "c:1:1"], exclude: "a", expected: "c" },
    { name: "unaffected when another is lower", specs: ["a:1:0", "b:1:3", "c:1:1"], exclude: "b", expected: "a" },
    { name: "single target is still returned", specs: ["a:1:0"], exclude: "a", expected: "a" },
  ])("exclude: $name", ({ specs, exclude, expected }) => {
    expect(new LeastConnectionsBalancer(loaded(...specs)).pick(undefined, target(exclude))?.key).toBe(expected);
  });

  it("returns undefined only without targets", () => {
    expect(new LeastConnectionsBalancer([]).pick()).toBeUndefined();
  });

  describe("power of two choices (above the scan limit)", () => {
    it("keeps in-flight counts level across many targets", () => {
      const list = numbered(200);
      const balancer = new LeastConnectionsBalancer(list, { random: seeded(1) });
      for (let k = 0; k < 20_000; k++) balancer.pick()!.load.inFlight++;
      const loads = list.map((t) => t.load.inFlight);
      // Uniform random choice would leave a spread of about 55 (100 ± 2.8σ, σ ≈ 10).
      expect(Math.max(...loads) - Math.min(...loads)).toBeLessThanOrEqual(10);
    });

    it("avoids a busy target", () => {
      const list = numbered(200);
      list[7].load.inFlight = 1000;
      const balancer = new LeastConnectionsBalancer(list, { random: seeded(2) });
      const picks = tally(keys(() => balancer.pick(), 20_000));
      expect(picks.t7 ?? 0).toBeLessThanOrEqual(2);
    });

    it.each([
      { weights: [3, 1], expected: [0.75, 0.25] },
      { weights: [1, 1, 2], expected: [0.25, 0.25, 0.5] },
    ])("draws by weight, so idle targets share by weight $weights", ({ weights, expected }) => {
      const list = numbered(weights.length, (i) => weights[i]);
      const balancer = new LeastConnectionsBalancer(list, { random: seeded(3), scanLimit: 1 });
      const picks = tally(keys(() => balancer.pick(), 40_000));
      list.forEach((t, i) => expect(picks[t.key] / 40_000).toBeCloseTo(expected[i], 1));
    });

    it("redraws once when both draws hit the same target", () => {
      // Two equal targets, one busy: it wins only when every draw lands on it, 1/8 with the
      // redraw instead of 1/4 without.
      const list = numbered(2);
      list[0].load.inFlight = 100;
      const balancer = new LeastConnectionsBalancer(list, { random: seeded(5), scanLimit: 1 });
      const picks = tally(keys(() => balancer.pick(), 40_000));
      expect(picks.t0 / 40_000).toBeCloseTo(0.125, 1);
    });

    it("never returns the excluded target", () => {
      const list = numbered(150, (i) => (i === 0 ? 1000 : 1));
      const balancer = new LeastConnectionsBalancer(list, { random: seeded(4) });
      const picks = tally(keys(() => balancer.pick(undefined, list[0]), 5000));
      expect(picks.t0).toBeUndefined();
      expect(Object.values(picks).reduce((a, b) => a + b, 0)).toBe(5000);
    });
  });
});
