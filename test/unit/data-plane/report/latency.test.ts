import { describe, expect, it } from "vitest";
import { bucketOf, bucketUpperMs, LATENCY_BUCKETS, LatencyHistogram, powerOfTwoBucket } from "../../../../data-plane/src/report/latency.js";

describe("latency buckets", () => {
  it.each([
    [0, 0],
    [-1, 0],
    [Number.NaN, 0],
    [0.0625, 0],
    [1, 16],
    [2, 20],
    [1.5, 19],
    [1e12, LATENCY_BUCKETS - 1],
  ])("%f ms goes to bucket %i", (ms, bucket) => {
    expect(bucketOf(ms)).toBe(bucket);
  });

  it("holds every value at or below its bucket's upper bound and above the previous one's (19% resolution)", () => {
    for (let ms = 0.07; ms < 8e5; ms *= 1.07) {
      const i = bucketOf(ms);
      expect(ms).toBeLessThanOrEqual(bucketUpperMs(i) * (1 + 1e-9));
      expect(ms).toBeGreaterThan(bucketUpperMs(i - 1) * (1 - 1e-9));
      expect(bucketUpperMs(i) / bucketUpperMs(i - 1)).toBeCloseTo(2 ** 0.25, 9);
    }
  });

  it("places powers of two on bucket boundaries (the Prometheus le bounds)", () => {
    for (let k = -1; k <= 16; k++) expect(bucketUpperMs(powerOfTwoBucket(k))).toBe(2 ** k);
  });
});

describe("LatencyHistogram intervals", () => {
  it("summarises each interval on its own: percentiles within a bucket, exact max and sum", () => {
    const h = new LatencyHistogram();
    for (let i = 1; i <= 100; i++) h.record(i);
    const first = h.takeInterval();
    expect(first.count).toBe(100);
    expect(first.sum).toBe(5050);
    expect(first.max).toBe(100);
    expect(first.p50).toBeGreaterThanOrEqual(50);
    expect(first.p50).toBeLessThan(50 * 1.19);
    expect(first.p99).toBeGreaterThanOrEqual(99);
    expect(first.p99).toBeLessThanOrEqual(100);

    for (let i = 0; i < 10; i++) h.record(3);
    const second = h.takeInterval();
    expect(second).toMatchObject({ count: 10, sum: 30, max: 3, p99: 3, p50: 3 });
    // Cumulative counts stay for Prometheus.
    expect(h.count).toBe(110);
    expect(h.takeInterval()).toEqual({ count: 0, sum: 0, max: 0, p50: 0, p99: 0 });
  });
});
