/**
 * A fixed-bucket latency histogram cheap enough to update on every request (one log2, three
 * additions, no allocation), shared by the control-plane reports (interval p50/p99/max/sum) and the
 * Prometheus histograms (cumulative buckets at powers of two).
 *
 * Buckets sit on a quarter-power-of-two grid in milliseconds: bucket i holds values in
 * (2^((i−1−OFFSET)/4), 2^((i−OFFSET)/4)] ms, so any percentile is known within 19%. Bucket 0 holds
 * everything up to 62.5 µs; the last one everything above 2^19.75 ms (about 15 minutes: a long stream).
 */

const OFFSET = 16;
/** Number of buckets, overflow included. */
export const LATENCY_BUCKETS = 97;
const LAST = LATENCY_BUCKETS - 1;

/** Index of the bucket holding `ms`. */
export function bucketOf(ms: number): number {
  if (!(ms > 0.0625)) return 0; // also NaN and negatives
  const i = Math.ceil(Math.log2(ms) * 4) + OFFSET;
  return i >= LAST ? LAST : i;
}

/** Upper bound of bucket `i` in ms (Infinity for the overflow bucket). */
export function bucketUpperMs(i: number): number {
  return i >= LAST ? Infinity : 2 ** ((i - OFFSET) / 4);
}

/** Buckets whose upper bound is 2^k ms, for Prometheus `le` bounds: index of 2^k ms. */
export function powerOfTwoBucket(k: number): number {
  return OFFSET + 4 * k;
}

/** Percentiles and totals of a set of latencies. */
export interface LatencySummaryMs {
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
  readonly sum: number;
}

/** Cumulative histogram: never reset (Prometheus needs monotonic counts); intervals are differences. */
export class LatencyHistogram {
  readonly counts = new Float64Array(LATENCY_BUCKETS);
  count = 0;
  sum = 0;
  /** Largest value since the last takeInterval(). */
  private intervalMax = 0;
  /** Counts, count and sum at the last takeInterval(). */
  private readonly mark = new Float64Array(LATENCY_BUCKETS);
  private markCount = 0;
  private markSum = 0;

  record(ms: number): void {
    this.counts[bucketOf(ms)]++;
    this.count++;
    this.sum += ms;
    if (ms > this.intervalMax) this.intervalMax = ms;
  }

  /**
   * Summary of the values recorded since the previous call (or since creation), then starts a new
   * interval. Percentiles are bucket upper bounds, capped by the interval's maximum.
   */
  takeInterval(): LatencySummaryMs & { readonly count: number } {
    const n = this.count - this.markCount;
    const sum = this.sum - this.markSum;
    const max = this.intervalMax;
    let p50 = 0;
    let p99 = 0;
    if (n > 0) {
      const r50 = Math.ceil(n * 0.5);
      const r99 = Math.ceil(n * 0.99);
      let seen = 0;
      let found50 = false;
      for (let i = 0; i < LATENCY_BUCKETS; i++) {
        seen += this.counts[i] - this.mark[i];
        if (!found50 && seen >= r50) {
          p50 = Math.min(bucketUpperMs(i), max);
          found50 = true;
        }
        if (seen >= r99) {
          p99 = Math.min(bucketUpperMs(i), max);
          break;
        }
      }
    }
    this.mark.set(this.counts);
    this.markCount = this.count;
    this.markSum = this.sum;
    this.intervalMax = 0;
    return { count: n, p50, p99, max, sum };
  }
}
