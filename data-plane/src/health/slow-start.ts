/**
 * Slow start: a target that just joined or recovered gets a growing share of traffic instead of its
 * full share at once, so cold caches, JITs and connection pools warm up before the target is
 * loaded (Envoy's slow_start_config on round_robin / least_request is the model).
 *
 * Formula (Envoy's with aggression 1, i.e. linear):
 *
 *     fraction(t) = max(minFraction, t / window)   for 0 ≤ t < window, 1 from t ≥ window
 *     effective   = weight × fraction(t)
 *
 * where t is the time since the target became available. The result is a real number in
 * (0, weight] for weight > 0: with the default weight 1 an integer would jump straight to full, so
 * an owner that needs integers scales every target of the picker by the same factor.
 *
 * Weights are meant to change at a coarse step (nextSlowStartUpdate), with the owner rebuilding its
 * immutable picker then, never per request.
 */

/** Default starting fraction of the weight (Envoy's min_weight_percent default, 10%). */
export const DEFAULT_MIN_FRACTION = 0.1;
/** Default re-weighting step, as a fraction of the window: ten picker rebuilds per slow start. */
export const DEFAULT_STEP_FRACTION = 0.1;

/**
 * Effective weight `sinceMs` after the target became available, ramping linearly from
 * `minFraction × weight` to `weight` over `windowMs` (formula above). A window of 0 disables slow start.
 */
export function slowStartWeight(weight: number, sinceMs: number, windowMs: number, minFraction = DEFAULT_MIN_FRACTION): number {
  checkFraction(minFraction, "minFraction");
  if (weight <= 0 || windowMs <= 0 || sinceMs >= windowMs) return Math.max(0, weight);
  return weight * Math.max(minFraction, Math.max(0, sinceMs) / windowMs);
}

/** Whether a target is still ramping, so the owner knows which targets need slowStartWeight at all. */
export function inSlowStart(sinceMs: number, windowMs: number): boolean {
  return windowMs > 0 && sinceMs < windowMs;
}

/**
 * Milliseconds from `sinceMs` until the weight should next be recomputed, or undefined when the ramp
 * is over. Boundaries fall every `stepFraction × windowMs`; the flat start (while t/window is below
 * minFraction) is skipped, since the weight does not change there, and the last boundary is the end of
 * the window, where the weight becomes exactly full.
 */
export function nextSlowStartUpdate(
  sinceMs: number,
  windowMs: number,
  stepFraction = DEFAULT_STEP_FRACTION,
  minFraction = DEFAULT_MIN_FRACTION,
): number | undefined {
  checkFraction(stepFraction, "stepFraction");
  checkFraction(minFraction, "minFraction");
  if (!inSlowStart(sinceMs, windowMs)) return undefined;
  const t = Math.max(0, sinceMs);
  const stepMs = stepFraction * windowMs;
  const from = Math.max(t, minFraction * windowMs);
  const boundary = Math.min(windowMs, (Math.floor(from / stepMs + 1e-9) + 1) * stepMs);
  return boundary - t;
}

// Programming errors, not config: these come from code, never from a snapshot.
function checkFraction(f: number, name: string): void {
  if (!(f > 0 && f <= 1)) throw new RangeError(`${name} must be in (0, 1], got ${f}`);
}
