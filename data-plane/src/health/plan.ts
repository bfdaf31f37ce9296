import type { AdminState } from "./panic.js";
import { isEligible, selectAvailable } from "./panic.js";
import type { ProbeState } from "./active.js";
import type { PassiveState } from "./passive.js";
import { nextSlowStartUpdate, slowStartWeight } from "./slow-start.js";

/**
 * What a backend's picker is built over, decided from every signal known about its targets: the
 * operator's admin state and weight, the active probe, passive health, the fleet's verdict, priority
 * failover, panic and slow start. Pure (the clock is an argument), so it is table-tested; the health
 * manager calls it whenever a signal changes and builds a new immutable picker from the result.
 *
 * Order of decisions:
 * 1. Usable: admin "enabled" and weight > 0. Draining and disabled targets never take new requests,
 *    not even in panic (operator decisions, not health guesses).
 * 2. Eligible: usable, probe not "unhealthy" ("unknown" counts as healthy, see active.ts), not
 *    ejected, and not marked down by the fleet. The fleet's verdict is for nodes without evidence
 *    of their own, so it yields to fresher local evidence of recovery: a target this node probes
 *    and sees "healthy", and the trial requests of a local half-open circuit (those trials are how
 *    the fleet learns that a passively ejected target recovered when every node routes around it).
 * 3. Priority failover: groups by priority, best first; the first group whose eligible share is at
 *    or above the panic threshold serves, with its eligible targets only.
 * 4. Panic (Envoy's healthy_panic_threshold): when no group qualifies, the best group that has any
 *    eligible target (else the best group) serves with every usable target of that group: with
 *    most targets failing, health signals are more likely wrong, or the survivors would collapse
 *    under the whole load, and real requests then decide (clients see the targets' own answers
 *    rather than a 503 for everything). The threshold is 100 − max_ejection_percent, so the default
 *    50 panics when fewer than half the group's usable targets are eligible, as Envoy does.
 * 5. Half-open targets (ejection expired, on trial) are in the picker but gated to
 *    half_open_requests at a time; in panic nothing is gated.
 * 6. Slow start: a target that became healthy again (or joined a running backend) less than
 *    slow_start_ms ago takes a weight ramping from 10% to 100% over the window (slow-start.ts);
 *    the weight moves in coarse steps, each one a picker rebuild. Not in panic.
 *
 * A group degraded below the threshold fails over whole to the next healthy group (Envoy would
 * split load between the two by their health); that keeps a degraded group's survivors from taking
 * its whole load, at the price of not using them while the next group serves.
 */

/** Every signal known about one target, as the manager tracks it. */
export interface PlanInput<T> {
  readonly target: T;
  readonly key: string;
  readonly admin: AdminState;
  /** Configured weight (0: never chosen). */
  readonly weight: number;
  readonly priority: number;
  /** Active probe state (this node's, or the fleet's through `fleetDown`); undefined when not probed. */
  readonly probe: ProbeState | undefined;
  readonly passive: PassiveState;
  /** The control plane's fleet verdict. */
  readonly fleetDown: boolean;
  /** When the target last became healthy (clock ms), while it may still be ramping; undefined otherwise. */
  readonly rampStart: number | undefined;
}

/** Settings of one plan. */
export interface PlanOptions {
  /** Panic when a group's eligible share is below this percentage (0-100). */
  readonly panicThresholdPercent: number;
  /** Slow-start window in ms (0: none, e.g. for consistent hashing, whose ring must not move). */
  readonly slowStartMs: number;
  /** Clock time now, on the same scale as `rampStart`. */
  readonly now: number;
}

/** What the picker is built over. */
export interface PickerPlan<T> {
  /** Targets for the picker, in configured order (empty: nothing can serve, the proxy answers 503). */
  readonly targets: readonly T[];
  /**
   * Slow-start fraction of the full weight, parallel to `targets` (1 when not ramping); undefined
   * when no target ramps, so the plain algorithm can be used.
   */
  readonly fractions: readonly number[] | undefined;
  /** Keys of half-open targets among `targets`, to be gated to a trickle; empty in panic. */
  readonly halfOpen: ReadonlySet<string>;
  readonly panic: boolean;
  /** Priority of the serving group; undefined when nothing serves. */
  readonly priority: number | undefined;
  /** Clock time at which the slow-start weights next change; undefined when nothing ramps. */
  readonly nextStepAt: number | undefined;
  /** Eligible targets (rule 2) across all groups, and usable ones (rule 1), for reports and logs. */
  readonly eligibleCount: number;
  readonly usableCount: number;
}

/** Rule 2 for one target: may it take requests on health grounds. */
export function targetEligible(t: Omit<PlanInput<unknown>, "target" | "rampStart">): boolean {
  if (t.weight <= 0) return false;
  return isEligible({
    key: t.key,
    admin: t.admin,
    probe: t.probe,
    passiveAvailable: t.passive !== "ejected",
    fleetDown: t.fleetDown && t.passive !== "half-open" && t.probe !== "healthy",
  });
}

/** Whether a target counts as fully healthy (eligible and not on trial): the start of a slow-start ramp. */
export function targetHealthy(t: Omit<PlanInput<unknown>, "target" | "rampStart">): boolean {
  return t.passive !== "half-open" && targetEligible(t);
}

/** Decides the picker's targets (see the rules above). */
export function planPicker<T>(inputs: readonly PlanInput<T>[], opts: PlanOptions): PickerPlan<T> {
  const groups = new Map<number, PlanInput<T>[]>();
  let eligibleCount = 0;
  let usableCount = 0;
  for (const t of inputs) {
    if (t.admin !== "enabled" || t.weight <= 0) continue;
    usableCount++;
    if (targetEligible(t)) eligibleCount++;
    const g = groups.get(t.priority);
    if (g === undefined) groups.set(t.priority, [t]);
    else g.push(t);
  }
  const ordered = [...groups.entries()].sort(([a], [b]) => a - b);
  const availability = (members: PlanInput<T>[]) =>
    selectAvailable(
      members.map((m) => ({ key: m.key, admin: m.admin, probe: m.probe, passiveAvailable: targetEligible(m), fleetDown: false, input: m })),
      opts.panicThresholdPercent,
    );

  let chosen: PlanInput<T>[] | undefined;
  let priority: number | undefined;
  let panic = false;
  for (const [p, members] of ordered) {
    const a = availability(members);
    if (!a.panic && a.targets.length > 0) {
      chosen = a.targets.map((x) => x.input);
      priority = p;
      break;
    }
  }
  if (chosen === undefined && ordered.length > 0) {
    const best = ordered.find(([, members]) => members.some((m) => targetEligible(m))) ?? ordered[0];
    priority = best[0];
    chosen = best[1];
    panic = true;
  }
  chosen ??= [];

  const halfOpen = new Set<string>();
  let fractions: number[] | undefined;
  let nextStepAt: number | undefined;
  if (!panic) {
    for (let i = 0; i < chosen.length; i++) {
      const t = chosen[i];
      if (t.passive === "half-open") halfOpen.add(t.key);
      if (t.rampStart === undefined || opts.slowStartMs <= 0) continue;
      const since = opts.now - t.rampStart;
      const fraction = slowStartWeight(1, since, opts.slowStartMs);
      if (fraction >= 1) continue;
      fractions ??= new Array<number>(chosen.length).fill(1);
      fractions[i] = fraction;
      const step = nextSlowStartUpdate(since, opts.slowStartMs);
      if (step !== undefined && (nextStepAt === undefined || opts.now + step < nextStepAt)) nextStepAt = opts.now + step;
    }
  }
  return { targets: chosen.map((t) => t.target), fractions, halfOpen, panic, priority, nextStepAt, eligibleCount, usableCount };
}
