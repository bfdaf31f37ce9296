import { clone, create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  RolloutAnalysisSchema,
  RolloutSchema,
  RolloutStepSchema,
  type Rollout,
  type RolloutAnalysis,
} from "../../../proto/gen/gateway/v1/rollout_pb.js";
import type { Rule } from "../../../proto/gen/gateway/v1/rule_pb.js";
import { ConfigError } from "../../../data-plane/src/config/errors.js";
import { HASH_SOURCES } from "../../../data-plane/src/config/validate.js";
import type { ConfigState } from "../config/state.js";
import { isActive } from "./lifecycle.js";

/**
 * Validation of a rollout at the API edge: the resource alone (`validateRollout`, errors name the
 * field as in the REST body) and the rule it would drive (`checkDrivable`, against the current
 * configuration). Inside the rollout module the normalised resource is trusted.
 */

/** Steps used when a rollout names none: seed 002's phases, a minute each. */
export const DEFAULT_STEPS: readonly { weight: number; holdMs: number }[] = [1, 10, 25, 50, 100].map((weight) => ({ weight, holdMs: 60_000 }));
/** Analysis interval when none is given. */
export const DEFAULT_INTERVAL_MS = 10_000;
/** Shortest analysis interval (tests use it; reports arrive no faster anyway). */
export const MIN_INTERVAL_MS = 100;
/** Longest analysis interval: an hour. */
export const MAX_INTERVAL_MS = 3_600_000;
/** Longest analysis window: what the fleet view keeps (5 minutes). */
export const MAX_WINDOW_MS = 300_000;
/** Canary requests needed for a verdict when none is given. */
export const DEFAULT_MIN_REQUESTS = 100n;
/** Highest canary error rate (percent) when none is given. */
export const DEFAULT_MAX_ERROR_RATE_PERCENT = 5;
/** Most steps a rollout may have. */
export const MAX_STEPS = 100;
/** Longest hold of a step: a week. */
export const MAX_HOLD_MS = 604_800_000;

const HEADER_RE = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/;
const ID_RE = /^[A-Za-z0-9_.:-]{1,128}$/;

/**
 * Validates a rollout as submitted and returns it normalised: defaults filled in (steps, interval,
 * min requests, max error rate, override values), server-set fields cleared. Throws ConfigError
 * naming the field.
 */
export function validateRollout(input: Rollout): Rollout {
  const r = clone(RolloutSchema, input);
  if (r.ruleId === "") throw new ConfigError("rule_id", "is required");
  if (!ID_RE.test(r.ruleId)) throw new ConfigError("rule_id", `not a rule id: "${r.ruleId}"`);
  if (r.canaryUpstreamId === "") throw new ConfigError("canary_upstream_id", "is required (the upstream serving the new version)");
  if (!ID_RE.test(r.canaryUpstreamId)) throw new ConfigError("canary_upstream_id", `not an upstream id: "${r.canaryUpstreamId}"`);
  if (r.stableUpstreamId !== "" && !ID_RE.test(r.stableUpstreamId)) {
    throw new ConfigError("stable_upstream_id", `not an upstream id: "${r.stableUpstreamId}"`);
  }
  if (r.stableUpstreamId !== "" && r.stableUpstreamId === r.canaryUpstreamId) {
    throw new ConfigError("canary_upstream_id", "must differ from stable_upstream_id");
  }

  if (r.steps.length === 0) r.steps = DEFAULT_STEPS.map((s) => create(RolloutStepSchema, s));
  if (r.steps.length > MAX_STEPS) throw new ConfigError("steps", `at most ${MAX_STEPS} steps`);
  let previous = 0;
  r.steps.forEach((s, i) => {
    if (s.weight < 1 || s.weight > 100) throw new ConfigError(`steps[${i}].weight`, `must be a percentage from 1 to 100, got ${s.weight}`);
    if (s.weight <= previous) {
      throw new ConfigError(`steps[${i}].weight`, `must be greater than the previous step's weight (${previous}): steps only move traffic to the canary`);
    }
    if (s.holdMs > MAX_HOLD_MS) throw new ConfigError(`steps[${i}].hold_ms`, `must be at most ${MAX_HOLD_MS} (a week), got ${s.holdMs}`);
    previous = s.weight;
  });

  r.analysis = validateAnalysis(r.analysis ?? create(RolloutAnalysisSchema));

  if (r.hashOn !== undefined) {
    if (!(HASH_SOURCES as readonly string[]).includes(r.hashOn.source)) {
      throw new ConfigError("hash_on.source", `must be one of ${HASH_SOURCES.join(", ")}, got "${r.hashOn.source}"`);
    }
    if (r.hashOn.source !== "client_ip" && r.hashOn.name === "") throw new ConfigError("hash_on.name", `is required for source "${r.hashOn.source}"`);
  }

  const o = r.headerOverride;
  if (o !== undefined) {
    if (o.header === "" && o.query === "") throw new ConfigError("header_override", 'set header (e.g. "X-Canary"), query, or both');
    if (o.header !== "" && !HEADER_RE.test(o.header)) throw new ConfigError("header_override.header", `invalid header name "${o.header}"`);
    if (o.query !== "" && o.query.length > 256) throw new ConfigError("header_override.query", "must be at most 256 characters");
    if (o.header !== "" && o.headerValue === "") o.headerValue = "true";
    if (o.query !== "" && o.queryValue === "") o.queryValue = "true";
  }

  // Set by the server only.
  r.id = "";
  r.tenantId = "";
  r.state = "";
  r.currentStep = 0;
  r.currentWeight = 0;
  r.stepStartedAtMs = 0n;
  r.createdAtMs = 0n;
  r.finishedAtMs = 0n;
  r.events = [];
  r.revision = 0n;
  r.lastAnalysis = undefined;
  r.ruleOutOfSync = false;
  return r;
}

function validateAnalysis(input: RolloutAnalysis): RolloutAnalysis {
  const a = clone(RolloutAnalysisSchema, input);
  if (a.intervalMs === 0) a.intervalMs = DEFAULT_INTERVAL_MS;
  if (a.intervalMs < MIN_INTERVAL_MS || a.intervalMs > MAX_INTERVAL_MS) {
    throw new ConfigError("analysis.interval_ms", `must be from ${MIN_INTERVAL_MS} to ${MAX_INTERVAL_MS}, got ${a.intervalMs}`);
  }
  if (a.windowMs !== 0 && (a.windowMs < MIN_INTERVAL_MS || a.windowMs > MAX_WINDOW_MS)) {
    throw new ConfigError("analysis.window_ms", `must be 0 (the whole step) or from ${MIN_INTERVAL_MS} to ${MAX_WINDOW_MS}, got ${a.windowMs}`);
  }
  a.minRequests ??= DEFAULT_MIN_REQUESTS;
  if (a.minRequests > 1_000_000_000n) throw new ConfigError("analysis.min_requests", `must be at most 1000000000, got ${a.minRequests}`);
  a.maxErrorRatePercent ??= DEFAULT_MAX_ERROR_RATE_PERCENT;
  percent(a.maxErrorRatePercent, "analysis.max_error_rate_percent");
  if (a.maxErrorRateIncreasePoints !== undefined) percent(a.maxErrorRateIncreasePoints, "analysis.max_error_rate_increase_points");
  if (a.maxP99Ms === 0) throw new ConfigError("analysis.max_p99_ms", "must be at least 1 (leave it unset for no latency threshold)");
  return a;
}

function percent(v: number, field: string): void {
  if (!Number.isFinite(v) || v < 0 || v > 100) throw new ConfigError(field, `must be a percentage from 0 to 100, got ${v}`);
}

/**
 * Checks that the rollout can drive its rule in state `s` and returns the stable upstream id (the
 * rule's upstream when the rollout names none). The rule must route to an upstream (not inline
 * targets), have no traffic_split (the rollout owns it), no canary route if the rollout brings a
 * header override, and no other active rollout. Errors are ConnectErrors naming the field.
 */
export function checkDrivable(s: ConfigState, tenantId: string, r: Rollout): string {
  const rule = s.rules.get(r.ruleId);
  if (rule === undefined || rule.tenantId !== tenantId) throw new ConnectError(`rule_id: rule ${r.ruleId} not found`, Code.NotFound);
  if (rule.upstreamId === "") {
    throw new ConnectError(
      `rule_id: rule ${rule.id} routes to inline targets; a rollout moves traffic between two upstreams: create the stable and canary upstreams and point the rule at the stable one (upstream_id)`,
      Code.FailedPrecondition,
    );
  }
  const stable = r.stableUpstreamId === "" ? rule.upstreamId : r.stableUpstreamId;
  if (stable !== rule.upstreamId) {
    throw new ConnectError(`stable_upstream_id: must be the upstream rule ${rule.id} routes to (${rule.upstreamId}), got ${stable}`, Code.InvalidArgument);
  }
  if (r.canaryUpstreamId === stable) throw new ConnectError(`canary_upstream_id: must differ from the stable upstream (${stable})`, Code.InvalidArgument);
  const canary = s.upstreams.get(r.canaryUpstreamId);
  if (canary === undefined || canary.tenantId !== tenantId) {
    throw new ConnectError(`canary_upstream_id: upstream ${r.canaryUpstreamId} not found`, Code.InvalidArgument);
  }
  const busy = activeRolloutOn(s, rule);
  if (busy !== undefined && busy.id !== r.id) {
    throw new ConnectError(`rule_id: rollout ${busy.id} is already ${busy.state} on rule ${rule.id}`, Code.FailedPrecondition);
  }
  if ((rule.trafficSplit?.rules.length ?? 0) > 0) {
    throw new ConnectError(
      `rule_id: rule ${rule.id} already has a traffic_split; a rollout owns the rule's split while it runs: remove the split first`,
      Code.FailedPrecondition,
    );
  }
  if (r.headerOverride !== undefined && rule.canary !== undefined) {
    throw new ConnectError(
      `header_override: rule ${rule.id} already has a canary route; remove it, or create the rollout without header_override`,
      Code.FailedPrecondition,
    );
  }
  return stable;
}

/** The rollout that currently drives `rule`, if any. */
export function activeRolloutOn(s: ConfigState, rule: Rule): Rollout | undefined {
  for (const r of s.rollouts.values()) if (r.ruleId === rule.id && r.tenantId === rule.tenantId && isActive(r.state)) return r;
  return undefined;
}
