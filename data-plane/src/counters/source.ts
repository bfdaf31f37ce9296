/**
 * The contract between selection and whatever numbers its picks: a sequence source hands out the
 * next position of a named sequence, and a sequenced balancer turns the position into a target
 * (`pickAt`). With in-process counters (local.ts) every data plane has its own sequence; with Redis
 * (redis.ts) the whole fleet shares one per rule or upstream, so a weighted split is exact across
 * data planes, not only within each.
 */

/** Where a source stands; `fallback` is what the data plane reports to the control plane. */
export type SequenceState =
  /** Positions come from the source's counters. */
  | "counting"
  /** Not connected yet: positions are random (weighted) until the first successful round trip. */
  | "connecting"
  /** The shared counters failed (unreachable, timed out): positions are random until they answer again. */
  | "fallback"
  /** Closed: positions are random, nothing is sent. */
  | "closed";

/** A source of sequence positions, one sequence per key. */
export interface SequenceSource {
  /** "local" (per process) or "redis" (fleet-wide). */
  readonly kind: "local" | "redis";
  /**
   * The next position of `key`'s sequence (a non-negative safe integer; callers take it modulo
   * `cycle`). `cycle` is the length of the caller's cycle: when the source cannot count it returns a
   * uniformly random position in [0, cycle), which over a cycle where each target appears `weight`
   * times is a weighted random pick, the fallback the seeds ask for.
   *
   * Returns a number when the answer is known now (local counters, a leased block, fallback) and a
   * Promise otherwise; the Promise never rejects, so a pick never fails because of the counters.
   */
  next(key: string, cycle: number): number | Promise<number>;
  /** Current state. */
  readonly state: SequenceState;
  /** True while picks are random-weighted instead of counted (reported to the control plane). */
  readonly fallback: boolean;
  /**
   * Forgets sequences whose rule or upstream was deleted or re-versioned (a weight change starts a
   * new sequence under a new key): local state is dropped and shared keys deleted.
   */
  retire(keys: readonly string[]): void;
  /**
   * The keys the configuration being served uses, so periodic cleanup can tell a stale key from a
   * live one. Replaces the previous set.
   */
  setLiveKeys(keys: ReadonlySet<string>): void;
  /** Stops timers and closes connections; later picks get random positions. */
  close(): Promise<void>;
}

/** A source of uniform numbers in [0, 1), injectable so tests can seed the fallback. */
export type RandomSource = () => number;

/**
 * A uniformly random position in [0, cycle): each target of a sequenced balancer occupies `weight`
 * slots of its cycle, so this is a weighted random choice of target with no extra table.
 */
export function randomPosition(cycle: number, random: RandomSource): number {
  if (cycle <= 1) return 0;
  const p = Math.floor(random() * cycle);
  return p >= cycle ? cycle - 1 : p; // random() * cycle can round up to cycle
}
