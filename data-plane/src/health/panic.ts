import type { ProbeState } from "./active.js";

/**
 * The availability policy of one backend: which targets a picker may be built over, combining the
 * operator's admin state with every health signal. Pure and table-testable; the owner calls it
 * whenever a signal changes and replaces its picker with one over the result.
 *
 * Eligible: admin "enabled", probe state not "unhealthy" ("unknown" counts as healthy, see
 * active.ts), passively available (not ejected), and not marked down by the fleet.
 *
 * Panic (Envoy's healthy_panic_threshold): when too few of the enabled targets are eligible, the
 * health signals are more likely wrong, or the survivors would collapse under the whole load, than
 * the backend being mostly down; serving every enabled target spreads the load and lets real
 * requests decide. The threshold defaults to Envoy's 50%: panic when fewer than half the enabled
 * targets are eligible, and always when none is (unless no target is enabled at all). A threshold of
 * 0 panics only when nothing is eligible. Draining and disabled targets are never returned, even in
 * panic: those are operator decisions, not health guesses.
 */

/** Operator-set state of a target (Target.admin_state). */
export type AdminState = "enabled" | "draining" | "disabled";

/** The signals known about one target. */
export interface TargetAvailability {
  readonly key: string;
  readonly admin: AdminState;
  /** Active probe state; undefined when the backend has no active check. */
  readonly probe: ProbeState | undefined;
  /** PassiveHealth.available(): false while ejected. */
  readonly passiveAvailable: boolean;
  /** The control plane reports that the fleet agrees this target is down. */
  readonly fleetDown: boolean;
}

/** The policy's answer; `targets` keeps the caller's objects and order. */
export interface Availability<T> {
  readonly targets: readonly T[];
  /** True when the health signals were overridden (report it: it means the backend is degraded). */
  readonly panic: boolean;
  /** Eligible targets before any panic override, for reports. */
  readonly eligibleCount: number;
  /** Enabled targets, the denominator of the threshold. */
  readonly enabledCount: number;
}

/** Envoy's default healthy_panic_threshold, in percent. */
export const DEFAULT_PANIC_THRESHOLD_PERCENT = 50;

/** Whether one target may take new requests on health grounds (no panic considered). */
export function isEligible(t: TargetAvailability): boolean {
  return t.admin === "enabled" && t.probe !== "unhealthy" && t.passiveAvailable && !t.fleetDown;
}

/**
 * Returns the targets a picker should use: the eligible ones, or in panic every enabled one.
 * `panicThresholdPercent` is 0-100; panic when eligible / enabled × 100 is below it, or nothing is eligible.
 */
export function selectAvailable<T extends TargetAvailability>(
  targets: readonly T[],
  panicThresholdPercent = DEFAULT_PANIC_THRESHOLD_PERCENT,
): Availability<T> {
  if (!(panicThresholdPercent >= 0 && panicThresholdPercent <= 100)) {
    throw new RangeError(`panicThresholdPercent must be from 0 to 100, got ${panicThresholdPercent}`);
  }
  const enabled = targets.filter((t) => t.admin === "enabled");
  const eligible = enabled.filter(isEligible);
  const enabledCount = enabled.length;
  const eligibleCount = eligible.length;
  // Integer comparison: no float rounding decides a panic at exactly the threshold.
  const panic = enabledCount > 0 && (eligibleCount === 0 || eligibleCount * 100 < panicThresholdPercent * enabledCount);
  return { targets: panic ? enabled : eligible, panic, eligibleCount, enabledCount };
}
