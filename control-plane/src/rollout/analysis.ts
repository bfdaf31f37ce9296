import { create } from "@bufbuild/protobuf";
import {
  BackendFiguresSchema,
  RolloutAnalysisResultSchema,
  type BackendFigures,
  type RolloutAnalysis,
  type RolloutAnalysisResult,
} from "../../../proto/gen/gateway/v1/rollout_pb.js";
import type { WindowFigures } from "./metrics.js";
import { DEFAULT_MAX_ERROR_RATE_PERCENT, DEFAULT_MIN_REQUESTS } from "./validate.js";

/**
 * The verdict on one step: a pure function of the canary's and stable's fleet figures over the
 * window and the rollout's thresholds. Checks, in order:
 *
 * 1. Error rate, absolute and against stable. Judged as soon as it is certain: with fewer than
 *    min_requests the rate is computed over min_requests (failures / max(requests, min_requests)),
 *    a lower bound of what the step can end with, so a canary failing every request is rolled back
 *    after a handful of them instead of waiting for min_requests failures.
 * 2. Thin traffic: fewer canary requests than min_requests holds the step (no pass yet).
 * 3. Latency, absolute p99 and against stable, once there are min_requests.
 *
 * Comparisons with stable are skipped while stable has fewer than min_requests in the window (at a
 * 100% step it has none): an empty baseline proves nothing either way.
 */

/** Percent with at most two decimals, as shown in reasons. */
function pct(v: number): string {
  return `${Math.round(v * 100) / 100}%`;
}

function ms(v: number): string {
  return `${Math.round(v * 10) / 10} ms`;
}

function rate(failures: number, requests: number): number {
  return requests === 0 ? 0 : (100 * failures) / requests;
}

/** The figures as the API shows them. */
export function figures(f: WindowFigures): BackendFigures {
  return create(BackendFiguresSchema, {
    requests: BigInt(f.requests),
    failures: BigInt(f.failures),
    errorRatePercent: rate(f.failures, f.requests),
    p50Ms: f.requests === 0 ? 0 : f.p50Ms,
    p99Ms: f.requests === 0 ? 0 : f.p99Ms,
  });
}

/** Judges the canary over one window. `windowMs` and `now` are recorded with the result. */
export function analyse(canary: WindowFigures, stable: WindowFigures, a: RolloutAnalysis, windowMs: number, now: number): RolloutAnalysisResult {
  const minRequests = Number(a.minRequests ?? DEFAULT_MIN_REQUESTS);
  const maxErrorRate = a.maxErrorRatePercent ?? DEFAULT_MAX_ERROR_RATE_PERCENT;
  const enough = canary.requests >= minRequests;
  const stableEnough = stable.requests >= minRequests && stable.requests > 0;
  const canaryRate = rate(canary.failures, canary.requests);
  const stableRate = rate(stable.failures, stable.requests);
  // A lower bound of the step's error rate: exact once there are min_requests.
  const boundRate = rate(canary.failures, Math.max(canary.requests, minRequests, 1));
  const seen = `${canary.failures} of ${canary.requests} requests failed`;
  const result = (verdict: "pass" | "hold" | "fail", reason: string) =>
    create(RolloutAnalysisResultSchema, {
      atMs: BigInt(Math.round(now)),
      windowMs: Math.max(0, Math.round(windowMs)),
      canary: figures(canary),
      stable: figures(stable),
      verdict,
      reason,
    });

  if (boundRate > maxErrorRate) {
    const how = enough ? `canary error rate ${pct(canaryRate)}` : `canary error rate at least ${pct(boundRate)} whatever the next ${minRequests - canary.requests} requests do`;
    return result("fail", `${how} (${seen}) exceeds max_error_rate_percent ${pct(maxErrorRate)}`);
  }
  const maxIncrease = a.maxErrorRateIncreasePoints;
  if (maxIncrease !== undefined && stableEnough && boundRate - stableRate > maxIncrease) {
    return result(
      "fail",
      `canary error rate ${pct(enough ? canaryRate : boundRate)} (${seen}) exceeds stable's ${pct(stableRate)} by more than max_error_rate_increase_points ${maxIncrease}`,
    );
  }
  if (!enough) {
    return result("hold", `thin traffic: the canary served ${canary.requests} of the ${minRequests} requests needed for a verdict`);
  }
  if (a.maxP99Ms !== undefined && canary.p99Ms > a.maxP99Ms) {
    return result("fail", `canary p99 latency ${ms(canary.p99Ms)} exceeds max_p99_ms ${a.maxP99Ms}`);
  }
  if (a.maxP99IncreaseMs !== undefined && stableEnough && canary.p99Ms - stable.p99Ms > a.maxP99IncreaseMs) {
    return result("fail", `canary p99 latency ${ms(canary.p99Ms)} exceeds stable's ${ms(stable.p99Ms)} by more than max_p99_increase_ms ${a.maxP99IncreaseMs}`);
  }
  const checks = [`error rate ${pct(canaryRate)} ≤ ${pct(maxErrorRate)}`];
  if (maxIncrease !== undefined) checks.push(stableEnough ? `${pct(canaryRate - stableRate)} over stable ≤ ${maxIncrease} points` : "stable too thin to compare");
  if (a.maxP99Ms !== undefined) checks.push(`p99 ${ms(canary.p99Ms)} ≤ ${a.maxP99Ms} ms`);
  if (a.maxP99IncreaseMs !== undefined && stableEnough) checks.push(`p99 ${ms(canary.p99Ms - stable.p99Ms)} over stable ≤ ${a.maxP99IncreaseMs} ms`);
  return result("pass", `analysis passed over ${canary.requests} requests: ${checks.join(", ")}`);
}
