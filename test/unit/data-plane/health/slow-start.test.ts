import { describe, expect, it } from "vitest";
import { inSlowStart, nextSlowStartUpdate, slowStartWeight } from "../../../../data-plane/src/health/slow-start.js";

describe("slowStartWeight", () => {
  // weight × max(minFraction, t / window), full from t ≥ window.
  const cases: [string, number, number, number, number | undefined, number][] = [
    ["start is the minimum fraction", 10, 0, 1000, undefined, 1],
    ["flat while t/window < minFraction", 10, 50, 1000, undefined, 1],
    ["linear after that", 10, 250, 1000, undefined, 2.5],
    ["half way", 4, 500, 1000, undefined, 2],
    ["just before the end", 10, 999, 1000, undefined, 9.99],
    ["full at the end", 10, 1000, 1000, undefined, 10],
    ["full after the end", 10, 5000, 1000, undefined, 10],
    ["default weight 1 is ramped, not rounded", 1, 300, 1000, undefined, 0.3],
    ["custom minimum", 10, 100, 1000, 0.5, 5],
    ["no window: full at once", 10, 0, 0, undefined, 10],
    ["negative elapsed (clock skew) is the start", 10, -20, 1000, undefined, 1],
    ["weight 0 stays 0", 0, 500, 1000, undefined, 0],
  ];
  it.each(cases)("%s", (_name, weight, since, window, min, expected) => {
    expect(slowStartWeight(weight, since, window, min)).toBeCloseTo(expected, 10);
  });

  it("is monotonic and stays positive over the window", () => {
    let previous = 0;
    for (let t = 0; t <= 1000; t += 7) {
      const w = slowStartWeight(3, t, 1000);
      expect(w).toBeGreaterThan(0);
      expect(w).toBeGreaterThanOrEqual(previous);
      previous = w;
    }
  });

  it("refuses a minimum fraction outside (0, 1]", () => {
    expect(() => slowStartWeight(1, 0, 1000, 0)).toThrow(RangeError);
    expect(() => slowStartWeight(1, 0, 1000, 1.5)).toThrow(RangeError);
  });
});

describe("nextSlowStartUpdate", () => {
  const cases: [string, number, number, number | undefined, number | undefined][] = [
    ["skips the flat start to the first step past the minimum", 0, 1000, undefined, 200],
    ["mid-step goes to the next boundary", 150, 1000, undefined, 50],
    ["on a boundary goes to the next one", 200, 1000, undefined, 100],
    ["the last boundary is the end of the window", 950, 1000, undefined, 50],
    ["coarser steps", 0, 1000, 0.25, 250],
    ["ramp over", 1000, 1000, undefined, undefined],
    ["no slow start", 0, 0, undefined, undefined],
  ];
  it.each(cases)("%s", (_name, since, window, step, expected) => {
    const got = nextSlowStartUpdate(since, window, step);
    if (expected === undefined) expect(got).toBeUndefined();
    else expect(got).toBeCloseTo(expected, 6);
  });

  it("walks the window in at most 1 / step rebuilds and ends at full weight", () => {
    let t = 0;
    const weights: number[] = [slowStartWeight(10, t, 1000)];
    for (let delay = nextSlowStartUpdate(t, 1000); delay !== undefined; delay = nextSlowStartUpdate(t, 1000)) {
      expect(delay).toBeGreaterThan(0);
      t += delay;
      weights.push(slowStartWeight(10, t, 1000));
    }
    expect(weights.length).toBeLessThanOrEqual(11);
    expect(weights.map((w) => Math.round(w * 100) / 100)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(inSlowStart(t, 1000)).toBe(false);
  });
});
