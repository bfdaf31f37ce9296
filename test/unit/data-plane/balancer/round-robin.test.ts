import { describe, expect, it } from "vitest";
import { RoundRobinBalancer } from "../../../../data-plane/src/balancer/round-robin.js";
import { keys, numbered, tally, target, targets } from "./helpers.js";

describe("RoundRobinBalancer", () => {
  it.each([
    { name: "one target", weights: { a: 1 }, expected: "a a a a" },
    { name: "three targets", weights: { a: 1, b: 1, c: 1 }, expected: "a b c a b c a" },
    { name: "weights are ignored", weights: { a: 9, b: 1 }, expected: "a b a b a b" },
  ])("picks in rotation: $name", ({ weights, expected }) => {
    const balancer = new RoundRobinBalancer(targets(weights));
    const sequence = expected.split(" ");
    expect(keys(() => balancer.pick(), sequence.length)).toEqual(sequence);
  });

  it("returns undefined only without targets", () => {
    const balancer = new RoundRobinBalancer([]);
    expect(balancer.pick()).toBeUndefined();
    expect(balancer.cycle).toBe(0);
    expect(() => balancer.pickAt(0)).toThrow(RangeError);
  });

  it.each([
    { count: 3, picks: 999 },
    { count: 7, picks: 7 * 143 },
    { count: 100, picks: 10_000 },
  ])("gives $count targets exactly equal counts over whole cycles", ({ count, picks }) => {
    const balancer = new RoundRobinBalancer(numbered(count));
    const counts = tally(keys(() => balancer.pick(), picks));
    expect(Object.keys(counts)).toHaveLength(count);
    for (const c of Object.values(counts)) expect(c).toBe(picks / count);
  });

  it("pickAt(position) matches the pick() sequence and wraps", () => {
    const balancer = new RoundRobinBalancer(targets({ a: 1, b: 1, c: 1 }));
    expect(balancer.cycle).toBe(3);
    const picked = keys(() => balancer.pick(), 10);
    expect(Array.from({ length: 10 }, (_, p) => balancer.pickAt(p).key)).toEqual(picked);
    expect(balancer.pickAt(3 * 1e12 + 1).key).toBe("b");
  });

  it.each([-1, 1.5, Number.NaN, 2 ** 60])("pickAt(%s) is refused", (position) => {
    expect(() => new RoundRobinBalancer(targets({ a: 1 })).pickAt(position)).toThrow(RangeError);
  });

  it.each([
    { name: "skips the excluded target and resumes after it", exclude: "a", expected: "b c b c" },
    { name: "unaffected when the excluded one is not next", exclude: "c", expected: "a b a b" },
  ])("exclude: $name", ({ exclude, expected }) => {
    const list = targets({ a: 1, b: 1, c: 1 });
    const balancer = new RoundRobinBalancer(list);
    // Exclusion is by key, so an equal target object from a rebuilt list is recognised too.
    const avoid = target(exclude);
    const sequence = expected.split(" ");
    expect(keys(() => balancer.pick(undefined, avoid), sequence.length)).toEqual(sequence);
  });

  it("exclude falls back to the only target", () => {
    const [only] = targets({ a: 1 });
    expect(new RoundRobinBalancer([only]).pick(undefined, only)).toBe(only);
  });

  it("copies the target list, so later mutation by the caller has no effect", () => {
    const list = targets({ a: 1, b: 1 });
    const balancer = new RoundRobinBalancer(list);
    list.pop();
    expect(keys(() => balancer.pick(), 4)).toEqual(["a", "b", "a", "b"]);
  });
});
