import { describe, expect, it } from "vitest";
import { ConsistentHashBalancer, POINTS_PER_MIN_WEIGHT } from "../../../../data-plane/src/balancer/consistent-hash.js";
import { murmur3, murmur3Words } from "../../../../data-plane/src/balancer/hash.js";
import { keys, numbered, tally, target, targets, type TestTarget } from "./helpers.js";

const requestKeys = Array.from({ length: 10_000 }, (_, i) => `user-${i}`);

function owners(balancer: ConsistentHashBalancer<TestTarget>): string[] {
  return requestKeys.map((k) => balancer.pick(k)!.key);
}

/**
 * The documented placement, written out plainly: replica r of a target sits at
 * murmur3Words(murmur3(key), murmur3(key, 0x9747b28c), r), a key goes to the first point at or after
 * murmur3(key), wrapping. Data planes of different versions must agree on it, so it is pinned here.
 */
function referenceRing(list: readonly TestTarget[]): (hashKey: string) => string {
  const minWeight = Math.min(...list.map((t) => t.weight));
  const points = list.flatMap((t) => {
    const count = Math.max(1, Math.round((t.weight * POINTS_PER_MIN_WEIGHT) / minWeight));
    const [h1, h2] = [murmur3(t.key), murmur3(t.key, 0x9747b28c)];
    return Array.from({ length: count }, (_, r) => ({ at: murmur3Words(h1, h2, r), key: t.key }));
  });
  points.sort((a, b) => a.at - b.at || (a.key < b.key ? -1 : 1));
  return (hashKey) => {
    const hash = murmur3(hashKey);
    return (points.find((p) => p.at >= hash) ?? points[0]).key;
  };
}

describe("ConsistentHashBalancer", () => {
  it.each([
    { name: "one target", weights: { a: 1 } },
    { name: "weighted", weights: { a: 1, b: 3, c: 2 } },
    { name: "many", weights: Object.fromEntries(Array.from({ length: 30 }, (_, i) => [`10.0.0.${i}:80`, 1 + (i % 4)])) },
  ])("places points and finds owners exactly as documented: $name", ({ weights }) => {
    const list = targets(weights);
    const balancer = new ConsistentHashBalancer(list);
    const owner = referenceRing(list);
    for (const k of requestKeys.slice(0, 3000)) expect(balancer.pick(k)!.key, k).toBe(owner(k));
  });

  it("sends the same key to the same target, across builds and list orders", () => {
    const list = numbered(10);
    const first = owners(new ConsistentHashBalancer(list));
    expect(owners(new ConsistentHashBalancer(list))).toEqual(first);
    expect(owners(new ConsistentHashBalancer([...list].reverse()))).toEqual(first);
    const balancer = new ConsistentHashBalancer(list);
    expect(keys(() => balancer.pick("user-42"), 5)).toEqual(Array(5).fill(first[42]));
  });

  it.each([
    { n: 10, removed: 3 },
    { n: 10, removed: 0 },
    { n: 5, removed: 4 },
    { n: 20, removed: 11 },
  ])("removing one of $n targets moves only its keys, about 1/$n", ({ n, removed }) => {
    const list = numbered(n);
    const before = owners(new ConsistentHashBalancer(list));
    const after = owners(new ConsistentHashBalancer(list.filter((_, i) => i !== removed)));
    let moved = 0;
    before.forEach((owner, i) => {
      if (owner !== after[i]) {
        moved++;
        expect(owner).toBe(`t${removed}`);
      }
    });
    const fraction = moved / requestKeys.length;
    expect(fraction).toBeGreaterThanOrEqual(0.5 / n);
    expect(fraction).toBeLessThanOrEqual(1.5 / n);
  });

  it("adding a target moves keys only onto it", () => {
    const list = numbered(11);
    const before = owners(new ConsistentHashBalancer(list.slice(0, 10)));
    const after = owners(new ConsistentHashBalancer(list));
    const moved = before.filter((owner, i) => owner !== after[i]).length;
    before.forEach((owner, i) => {
      if (owner !== after[i]) expect(after[i]).toBe("t10");
    });
    expect(moved / requestKeys.length).toBeGreaterThan(0.05);
    expect(moved / requestKeys.length).toBeLessThan(0.15);
  });

  it.each([
    { name: "equal", weights: { a: 1, b: 1, c: 1, d: 1 } },
    { name: "1:2:3:4", weights: { a: 1, b: 2, c: 3, d: 4 } },
    { name: "90/10", weights: { a: 90, b: 10 } },
    { name: "scaled weights", weights: { a: 100, b: 300 } },
  ])("shares keys in proportion to weight: $name", ({ weights }) => {
    const balancer = new ConsistentHashBalancer(targets(weights));
    const picks = tally(Array.from({ length: 100_000 }, (_, i) => balancer.pick(`k${i}`)!.key));
    const total = Object.values(weights).reduce((a, b) => a + b, 0);
    for (const [key, weight] of Object.entries(weights)) {
      const share = picks[key] / 100_000;
      const expected = weight / total;
      expect(Math.abs(share - expected) / expected, `${key}: ${share} vs ${expected}`).toBeLessThan(0.15);
    }
  });

  it("exclude goes to the next distinct target, where the key would land without it", () => {
    const list = numbered(8);
    const balancer = new ConsistentHashBalancer(list);
    const without = new Map(list.map((t) => [t.key, new ConsistentHashBalancer(list.filter((o) => o !== t))]));
    for (const k of requestKeys) {
      const owner = balancer.pick(k)!;
      expect(balancer.pick(k, target(owner.key))!.key).toBe(without.get(owner.key)!.pick(k)!.key);
    }
  });

  it("exclude of a target that does not own the key changes nothing", () => {
    const list = numbered(4);
    const balancer = new ConsistentHashBalancer(list);
    const owner = balancer.pick("user-1")!;
    const other = list.find((t) => t !== owner)!;
    expect(balancer.pick("user-1", other)).toBe(owner);
  });

  it.each([
    { name: "undefined", hashKey: undefined },
    { name: "empty", hashKey: "" },
  ])("without a hash key ($name) falls back to round-robin", ({ hashKey }) => {
    const balancer = new ConsistentHashBalancer(targets({ a: 1, b: 5, c: 1 }));
    expect(keys(() => balancer.pick(hashKey), 6)).toEqual(["a", "b", "c", "a", "b", "c"]);
    expect(balancer.pick(hashKey, target("a"))!.key).toBe("b");
  });

  it("single target takes every key, even when excluded", () => {
    const balancer = new ConsistentHashBalancer(targets({ a: 3 }));
    expect(balancer.pick("x")!.key).toBe("a");
    expect(balancer.pick("x", target("a"))!.key).toBe("a");
  });

  it("returns undefined only without targets", () => {
    const balancer = new ConsistentHashBalancer([]);
    expect(balancer.pick("x")).toBeUndefined();
    expect(balancer.pick()).toBeUndefined();
  });

  it("bounds the ring for extreme weight spreads and still serves the light target", () => {
    const balancer = new ConsistentHashBalancer(numbered(50, (i) => (i === 0 ? 1 : 1_000_000)));
    const picks = tally(Array.from({ length: 20_000 }, (_, i) => balancer.pick(`k${i}`)!.key));
    expect(Object.keys(picks).length).toBeGreaterThanOrEqual(49);
  });
});
