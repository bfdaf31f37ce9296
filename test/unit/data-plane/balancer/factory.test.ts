import { describe, expect, it } from "vitest";
import type { AlgorithmName } from "../../../../data-plane/src/balancer/balancer.js";
import { ConsistentHashBalancer } from "../../../../data-plane/src/balancer/consistent-hash.js";
import {
  ALGORITHM_NAMES,
  createBalancer,
  isAlgorithmName,
  isSequenced,
} from "../../../../data-plane/src/balancer/factory.js";
import { LeastConnectionsBalancer } from "../../../../data-plane/src/balancer/least-connections.js";
import { RandomBalancer } from "../../../../data-plane/src/balancer/random.js";
import { RoundRobinBalancer } from "../../../../data-plane/src/balancer/round-robin.js";
import { WeightedRoundRobinBalancer } from "../../../../data-plane/src/balancer/weighted-round-robin.js";
import { ConfigError } from "../../../../data-plane/src/config/errors.js";
import { keys, numbered, seeded, tally, targets } from "./helpers.js";

describe("createBalancer", () => {
  it.each([
    { algorithm: "round-robin", type: RoundRobinBalancer, sequenced: true },
    { algorithm: "weighted-round-robin", type: WeightedRoundRobinBalancer, sequenced: true },
    { algorithm: "least-connections", type: LeastConnectionsBalancer, sequenced: false },
    { algorithm: "consistent-hash", type: ConsistentHashBalancer, sequenced: false },
    { algorithm: "random", type: RandomBalancer, sequenced: false },
  ] as const)("builds $algorithm", ({ algorithm, type, sequenced }) => {
    const balancer = createBalancer(algorithm, targets({ a: 1, b: 2 }));
    expect(balancer).toBeInstanceOf(type);
    expect(isSequenced(balancer)).toBe(sequenced);
  });

  it("lists exactly the contract's names", () => {
    expect([...ALGORITHM_NAMES].sort()).toEqual(
      ["consistent-hash", "least-connections", "random", "round-robin", "weighted-round-robin"],
    );
    expect(isAlgorithmName("random")).toBe(true);
    expect(isAlgorithmName("ip-hash")).toBe(false);
  });

  it("refuses an unknown algorithm with a ConfigError naming the field", () => {
    const build = () => createBalancer("fastest" as AlgorithmName, targets({ a: 1 }));
    expect(build).toThrow(ConfigError);
    expect(build).toThrow(expect.objectContaining({ field: "algorithm" }));
    expect(build).toThrow(/unknown load-balancing algorithm "fastest"; expected one of round-robin/);
  });

  it.each(ALGORITHM_NAMES)("%s never picks a weight-0 target (blue/green)", (algorithm) => {
    const list = targets({ blue: 100, green: 0 });
    const balancer = createBalancer(algorithm, list, { random: seeded(1) });
    const picks = tally(
      Array.from({ length: 200 }, (_, i) => balancer.pick(i % 2 === 0 ? `user-${i}` : undefined)?.key ?? "-"),
    );
    expect(picks).toEqual({ blue: 200 });
    // Retries stay on the only target that takes traffic rather than going to green.
    expect(balancer.pick("user-1", list[0])?.key).toBe("blue");
  });

  it.each(ALGORITHM_NAMES)("%s returns undefined when every target has weight 0 or there are none", (algorithm) => {
    expect(createBalancer(algorithm, targets({ a: 0, b: 0 })).pick("k")).toBeUndefined();
    expect(createBalancer(algorithm, []).pick("k")).toBeUndefined();
  });

  it.each(ALGORITHM_NAMES)("%s avoids an excluded target when another exists", (algorithm) => {
    const list = numbered(5, (i) => i + 1);
    const balancer = createBalancer(algorithm, list, { random: seeded(2) });
    for (let i = 0; i < 200; i++) {
      const excluded = list[i % 5];
      expect(balancer.pick(`user-${i}`, excluded)?.key).not.toBe(excluded.key);
    }
  });

  it("names a non-integer weighted-round-robin weight by its index in the configuration", () => {
    // Index 2, although target 0 (weight 0) is dropped before the algorithm sees the list.
    const list = numbered(3, (i) => [0, 1, 2.5][i]);
    expect(() => createBalancer("weighted-round-robin", list)).toThrow(expect.objectContaining({ field: "targets[2].weight" }));
  });

  it("passes the random source on", () => {
    const list = targets({ a: 1, b: 1, c: 1 });
    const a = createBalancer("random", list, { random: seeded(9) });
    const b = createBalancer("random", list, { random: seeded(9) });
    expect(keys(() => a.pick(), 30)).toEqual(keys(() => b.pick(), 30));
  });

  it("exposes pickAt on sequenced balancers", () => {
    const balancer = createBalancer("weighted-round-robin", targets({ a: 90, b: 10 }));
    if (!isSequenced(balancer)) throw new Error("expected a sequenced balancer");
    expect(balancer.cycle).toBe(10);
    expect(tally(Array.from({ length: 1000 }, (_, p) => balancer.pickAt(p).key))).toEqual({ a: 900, b: 100 });
  });
});
