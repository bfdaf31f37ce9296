import type { SequenceSource, SequenceState } from "./source.js";

/**
 * In-process counters: one sequence per key, starting at 0, always answered synchronously.
 *
 * This is what every data plane has without Redis (its balancers keep their own rotation), written
 * as a SequenceSource so tests and benchmarks can put N independent nodes side by side with N
 * fleet-wide ones. It shows the limit of per-node sequences: nodes that all start at position 0
 * are in the same phase, so with sparse traffic a 99/1 canary (whose one slot sits mid-cycle) can
 * get nothing at all, however many nodes there are.
 *
 * Positions wrap at the key's cycle, so a counter never grows past it.
 */
export class LocalSequenceSource implements SequenceSource {
  readonly kind = "local" as const;
  private readonly counters = new Map<string, number>();
  private closed = false;

  get state(): SequenceState {
    return this.closed ? "closed" : "counting";
  }

  get fallback(): boolean {
    return false;
  }

  next(key: string, cycle: number): number {
    const p = this.counters.get(key) ?? 0;
    this.counters.set(key, cycle > 0 && p + 1 >= cycle ? 0 : p + 1);
    return cycle > 0 ? p % cycle : 0;
  }

  retire(keys: readonly string[]): void {
    for (const k of keys) this.counters.delete(k);
  }

  setLiveKeys(keys: ReadonlySet<string>): void {
    // Nothing shared to clean up: drop counters of keys no longer in use.
    for (const k of this.counters.keys()) if (!keys.has(k)) this.counters.delete(k);
  }

  /** Number of sequences held (for tests: retired keys are gone). */
  get size(): number {
    return this.counters.size;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.counters.clear();
  }
}
