/**
 * The rollout lifecycle: its states, which are final, and which operator actions each allows.
 *
 *   pending ──start──▶ progressing ──advance──▶ progressing … ──last step passes──▶ promoted
 *      │                  │  ▲                       │
 *      │               pause resume                  ├──threshold crossed──▶ rolled_back
 *      ▼                  ▼  │                       │
 *   (pause) ───────────▶ paused ─────────────────────┴──abort / rule gone──▶ aborted
 *
 * promote-now and abort are allowed from every non-final state. Final states never change again.
 */

/** Every state a rollout can be in (stored as these strings, as the API documents them). */
export const ROLLOUT_STATES = ["pending", "progressing", "paused", "promoted", "rolled_back", "aborted"] as const;

/** A rollout state. */
export type RolloutStateName = (typeof ROLLOUT_STATES)[number];

/** States a rollout never leaves. */
const FINAL: ReadonlySet<string> = new Set<RolloutStateName>(["promoted", "rolled_back", "aborted"]);

/** Whether a rollout in `state` is finished (the controller no longer drives it). */
export function isFinal(state: string): boolean {
  return FINAL.has(state);
}

/** Whether a rollout in `state` still owns its rule's split (pending, progressing or paused). */
export function isActive(state: string): boolean {
  return !FINAL.has(state);
}

/** Operator actions of the API. */
export type RolloutAction = "pause" | "resume" | "promote" | "abort";

/**
 * Why `action` is not allowed in `state`, or undefined when it is. The words end up in a
 * FAILED_PRECONDITION answer, so they say what state the rollout is in.
 */
export function refusal(action: RolloutAction, state: string): string | undefined {
  if (isFinal(state)) return `the rollout is ${state} (final): nothing to ${action}`;
  if (action === "pause" && state === "paused") return "the rollout is already paused";
  if (action === "resume" && state !== "paused") return `the rollout is ${state}, not paused`;
  return undefined;
}
