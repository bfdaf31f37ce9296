import { describe, expect, it } from "vitest";
import { ConfigError } from "../../../../data-plane/src/config/errors.js";
import { StickyBuckets, stickyPosition } from "../../../../data-plane/src/split/sticky.js";

const USERS = Array.from({ length: 100_000 }, (_, i) => `user-${i}`);

function shares(buckets: StickyBuckets, n: number): number[] {
  const counts = new Array<number>(n).fill(0);
  for (const u of USERS) counts[buckets.pick(u)]++;
  return counts.map((c) => c / USERS.length);
}

function assignments(buckets: StickyBuckets): Int8Array {
  const out = new Int8Array(USERS.length);
  USERS.forEach((u, i) => (out[i] = buckets.pick(u)));
  return out;
}

describe("StickyBuckets distribution", () => {
  it.each([
    [[95, 5]],
    [[50, 50]],
    [[1, 2, 3, 4]],
    [[70, 0, 30]],
    [[1, 99]],
    [[3333, 3333, 3334]],
  ])("matches weights %j within 1% over 100,000 users", (weights) => {
    const total = weights.reduce((a, b) => a + b, 0);
    const got = shares(new StickyBuckets(weights), weights.length);
    weights.forEach((w, i) => expect(Math.abs(got[i] - w / total)).toBeLessThan(0.01));
  });

  it("never picks a weight-0 entry", () => {
    const b = new StickyBuckets([0, 10, 0, 10, 0]);
    const picked = new Set(USERS.slice(0, 20_000).map((u) => b.pick(u)));
    expect([...picked].sort()).toEqual([1, 3]);
  });

  it("returns -1 when every weight is 0", () => {
    expect(new StickyBuckets([0, 0]).pick("alice")).toBe(-1);
    expect(new StickyBuckets([]).pick("alice")).toBe(-1);
  });

  it("always maps the same key to the same entry, across instances", () => {
    const a = new StickyBuckets([1, 1, 1, 1, 1, 1, 1]);
    const b = new StickyBuckets([1, 1, 1, 1, 1, 1, 1]);
    for (const u of USERS.slice(0, 5_000)) {
      const first = a.pick(u);
      expect(a.pick(u)).toBe(first);
      expect(b.pick(u)).toBe(first);
    }
  });

  it("is a fixed function of the key (same answer on every data plane and version)", () => {
    // murmur3("hello") = 0x248bfa47, so "hello" sits at 0x248bfa47 / 2^32 ≈ 0.1428 of the line.
    expect(stickyPosition("hello", 100)).toBeCloseTo((0x248bfa47 / 2 ** 32) * 100, 10);
    const b = new StickyBuckets([14, 86]); // boundary at 0.14 < 0.1428
    expect(b.pick("hello")).toBe(1);
    expect(new StickyBuckets([15, 85]).pick("hello")).toBe(0);
  });

  it("spreads users differently per seed, so the same users are not first on every canary", () => {
    const plain = new StickyBuckets([90, 10]);
    const seeded = new StickyBuckets([90, 10], "rule-42");
    let both = 0;
    let canary = 0;
    for (const u of USERS) {
      const p = plain.pick(u) === 1;
      if (p) canary++;
      if (p && seeded.pick(u) === 1) both++;
    }
    // Independent 10% choices overlap on about 10% of the first canary's users, not 100%.
    expect(both / canary).toBeGreaterThan(0.08);
    expect(both / canary).toBeLessThan(0.12);
  });

  it("refuses invalid weights naming the entry", () => {
    try {
      new StickyBuckets([10, -1], 0, "rules[0].traffic_split.rules[1].weighted_upstreams");
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).field).toBe("rules[0].traffic_split.rules[1].weighted_upstreams[1].weight");
    }
    expect(() => new StickyBuckets([Number.NaN])).toThrow(ConfigError);
  });
});

describe("StickyBuckets: raising the canary only moves users into it", () => {
  /** Users whose entry changed, by (from → to). */
  function moves(before: StickyBuckets, after: StickyBuckets): Map<string, number> {
    const a = assignments(before);
    const b = assignments(after);
    const out = new Map<string, number>();
    for (let i = 0; i < a.length; i++) {
      if (a[i] !== b[i]) out.set(`${a[i]}→${b[i]}`, (out.get(`${a[i]}→${b[i]}`) ?? 0) + 1);
    }
    return out;
  }

  it("canary listed after stable: 95/5 → 90/10", () => {
    const m = moves(new StickyBuckets([95, 5]), new StickyBuckets([90, 10]));
    expect([...m.keys()]).toEqual(["0→1"]);
    expect(Math.abs(m.get("0→1")! / USERS.length - 0.05)).toBeLessThan(0.01);
  });

  it("canary listed before stable: 5/95 → 10/90", () => {
    const m = moves(new StickyBuckets([5, 95]), new StickyBuckets([10, 90]));
    expect([...m.keys()]).toEqual(["1→0"]);
    expect(Math.abs(m.get("1→0")! / USERS.length - 0.05)).toBeLessThan(0.01);
  });

  it("relative weights with a changing total: 1/1 → 1/3 (canary last) and 1/1 → 3/1 (canary first)", () => {
    expect([...moves(new StickyBuckets([1, 1]), new StickyBuckets([1, 3])).keys()]).toEqual(["0→1"]);
    expect([...moves(new StickyBuckets([1, 1]), new StickyBuckets([3, 1])).keys()]).toEqual(["1→0"]);
  });

  it("a full rollout 1% → 100% in steps never moves a canary user back", () => {
    let previous = assignments(new StickyBuckets([99, 1]));
    let movedBack = 0;
    for (const canary of [2, 5, 10, 25, 50, 75, 100]) {
      const current = assignments(new StickyBuckets([100 - canary, canary]));
      for (let i = 0; i < current.length; i++) if (previous[i] === 1 && current[i] !== 1) movedBack++;
      previous = current;
    }
    expect(movedBack).toBe(0);
    expect(previous.every((e) => e === 1)).toBe(true);
  });

  it("three entries: the canary takes only from its neighbour when the others keep their share", () => {
    // [stable 60, canary 5, other 35] → [stable 55, canary 10, other 35]
    const m = moves(new StickyBuckets([60, 5, 35]), new StickyBuckets([55, 10, 35]));
    expect([...m.keys()]).toEqual(["0→1"]);
  });

  it("three entries scaled proportionally reshuffles the others (why the ordering condition matters)", () => {
    // [stable 50, other 45, canary 5] → [stable 47.37, other 42.63, canary 10]: the stable/other
    // boundary moves too, so users move between stable and other — not only into the canary.
    const m = moves(new StickyBuckets([50, 45, 5]), new StickyBuckets([4737, 4263, 1000]));
    expect(m.has("0→1")).toBe(true);
  });
});
