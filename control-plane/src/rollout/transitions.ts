import { clone, create } from "@bufbuild/protobuf";
import { RolloutEventSchema, RolloutSchema, type Rollout, type RolloutAnalysisResult } from "../../../proto/gen/gateway/v1/rollout_pb.js";
import type { RolloutStateName } from "./lifecycle.js";

/**
 * Every change of a rollout's state, as pure functions from the stored rollout to the next one,
 * each recording its event (time, reason, actor, and the analysis that decided it). They say
 * nothing about the rule: the rule a state implies is derived from it (traffic.ts) and written in
 * the same commit, so a decision and its weights are durable together or not at all.
 */

/** Events kept per rollout (the oldest are dropped past it). */
export const MAX_EVENTS = 200;

/** Who caused a transition: "controller", "admin" or "key/<id>". */
export type Actor = string;

/** The actor that runs analyses. */
export const CONTROLLER: Actor = "controller";

function next(r: Rollout): Rollout {
  const n = clone(RolloutSchema, r);
  n.lastAnalysis = undefined; // live figures are not stored
  return n;
}

/** Appends an event describing `r` as it is now (after the change). */
function record(r: Rollout, now: number, type: string, reason: string, actor: Actor, analysis?: RolloutAnalysisResult): Rollout {
  r.events.push(
    create(RolloutEventSchema, {
      atMs: BigInt(Math.round(now)),
      type,
      state: r.state,
      step: r.currentStep,
      weight: r.currentWeight,
      reason,
      actor,
      analysis,
    }),
  );
  if (r.events.length > MAX_EVENTS) r.events.splice(0, r.events.length - MAX_EVENTS);
  return r;
}

function setState(r: Rollout, state: RolloutStateName): void {
  r.state = state;
}

function stepLabel(r: Rollout): string {
  return `step ${r.currentStep + 1}/${r.steps.length}: canary at ${r.currentWeight}%`;
}

/** A new rollout, accepted: nothing applied yet. */
export function created(r: Rollout, id: string, tenantId: string, stable: string, now: number, actor: Actor): Rollout {
  const n = next(r);
  n.id = id;
  n.tenantId = tenantId;
  n.stableUpstreamId = stable;
  n.createdAtMs = BigInt(Math.round(now));
  setState(n, "pending");
  return record(n, now, "created", `rollout of rule ${n.ruleId} from ${stable} to ${n.canaryUpstreamId} in ${n.steps.length} steps`, actor);
}

/** The first step applied. */
export function started(r: Rollout, now: number): Rollout {
  const n = next(r);
  setState(n, "progressing");
  n.currentStep = 0;
  n.currentWeight = n.steps[0].weight;
  n.stepStartedAtMs = BigInt(Math.round(now));
  return record(n, now, "started", stepLabel(n), CONTROLLER);
}

/** The step passed: the next one, or promotion after the last. */
export function advanced(r: Rollout, now: number, analysis: RolloutAnalysisResult): Rollout {
  if (r.currentStep + 1 >= r.steps.length) return promoted(r, now, CONTROLLER, `every step passed; ${analysis.reason}`, analysis);
  const n = next(r);
  n.currentStep += 1;
  n.currentWeight = n.steps[n.currentStep].weight;
  n.stepStartedAtMs = BigInt(Math.round(now));
  return record(n, now, "advanced", `${analysis.reason}; ${stepLabel(n)}`, CONTROLLER, analysis);
}

/** The hold time passed but the canary has too few requests to judge: noted once per step. */
export function held(r: Rollout, now: number, analysis: RolloutAnalysisResult): Rollout {
  return record(next(r), now, "held", `${analysis.reason}; holding ${stepLabel(r)}`, CONTROLLER, analysis);
}

/** Whether the current step already has its "held" event (so thin traffic is recorded once per step). */
export function heldThisStep(r: Rollout): boolean {
  return r.events.some((e) => e.type === "held" && e.step === r.currentStep && e.atMs >= r.stepStartedAtMs);
}

/** A threshold was crossed: everything back to stable. */
export function rolledBack(r: Rollout, now: number, analysis: RolloutAnalysisResult): Rollout {
  const n = next(r);
  setState(n, "rolled_back");
  n.currentWeight = 0;
  n.finishedAtMs = BigInt(Math.round(now));
  return record(n, now, "rolled_back", analysis.reason, CONTROLLER, analysis);
}

/** 100% canary, for good: the rule routes to the canary upstream. */
export function promoted(r: Rollout, now: number, actor: Actor, reason: string, analysis?: RolloutAnalysisResult): Rollout {
  const n = next(r);
  setState(n, "promoted");
  n.currentWeight = 100;
  n.finishedAtMs = BigInt(Math.round(now));
  return record(n, now, "promoted", reason, actor, analysis);
}

/** Stopped by an operator (or because the rule changed under the rollout): everything back to stable. */
export function aborted(r: Rollout, now: number, actor: Actor, reason: string): Rollout {
  const n = next(r);
  setState(n, "aborted");
  n.currentWeight = 0;
  n.finishedAtMs = BigInt(Math.round(now));
  return record(n, now, "aborted", reason, actor);
}

/** No more advancing (weights stay; analysis still rolls back). */
export function paused(r: Rollout, now: number, actor: Actor, reason: string): Rollout {
  const n = next(r);
  setState(n, "paused");
  return record(n, now, "paused", reason, actor);
}

/** Advancing again from the step it was paused at (pending if it was paused before the first step). */
export function resumed(r: Rollout, now: number, actor: Actor, reason: string): Rollout {
  const n = next(r);
  setState(n, n.stepStartedAtMs === 0n ? "pending" : "progressing");
  return record(n, now, "resumed", reason, actor);
}

/** The rule was rewritten to match the rollout again (after a refused write, or an edit outside the rollout). */
export function resynced(r: Rollout, now: number, reason: string): Rollout {
  const n = next(r);
  n.ruleOutOfSync = false;
  return record(n, now, "rule_synced", reason, CONTROLLER);
}

/** The rule could not be rewritten; the decision stands and the controller retries. */
export function syncFailed(r: Rollout, now: number, error: string): Rollout {
  const n = next(r);
  n.ruleOutOfSync = true;
  return record(n, now, "rule_sync_failed", `the rule could not be updated (retrying every analysis interval): ${error}`, CONTROLLER);
}
