/** The verdict on one window, table-driven: which figures pass, hold or fail, and why. */
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { RolloutAnalysisSchema } from "../../../../proto/gen/gateway/v1/rollout_pb.js";
import { analyse } from "../../../../control-plane/src/rollout/analysis.js";
import { NO_TRAFFIC, type WindowFigures } from "../../../../control-plane/src/rollout/metrics.js";

const f = (requests: number, failures = 0, p99Ms = 10): WindowFigures => ({ ...NO_TRAFFIC, requests, failures, p50Ms: p99Ms / 2, p99Ms });
const base = { minRequests: 100n, maxErrorRatePercent: 5 };

describe("analyse", () => {
  it.each([
    // name, canary, stable, analysis, verdict, reason
    ["no traffic at all", NO_TRAFFIC, NO_TRAFFIC, base, "hold", /served 0 of the 100/],
    ["thin and clean", f(99), f(1000), base, "hold", /thin traffic/],
    ["enough and clean", f(100), f(1000), base, "pass", /error rate 0% ≤ 5%/],
    ["exactly at the limit passes", f(100, 5), f(1000), base, "pass", /5% ≤ 5%/],
    ["just over the limit fails", f(100, 6), f(1000), base, "fail", /error rate 6% \(6 of 100 requests failed\)/],
    ["thin but already decided", f(10, 6), f(1000), base, "fail", /at least 6% whatever the next 90/],
    ["thin, not decided yet", f(10, 5), f(1000), base, "hold", /thin/],
    ["p99 over the limit", f(200, 0, 300), f(1000), { ...base, maxP99Ms: 250 }, "fail", /p99 latency 300 ms exceeds max_p99_ms 250/],
    ["p99 ignored while thin", f(50, 0, 900), f(1000), { ...base, maxP99Ms: 250 }, "hold", /thin/],
    ["over stable by too much", f(200, 8), f(1000, 20), { ...base, maxErrorRateIncreasePoints: 1 }, "fail", /stable's 2%/],
    ["over stable within the margin", f(200, 5), f(1000, 20), { ...base, maxErrorRateIncreasePoints: 1 }, "pass", /0.5% over stable ≤ 1 points/],
    ["stable thin: no comparison", f(200, 8), f(50, 0), { ...base, maxErrorRateIncreasePoints: 1 }, "pass", /stable too thin/],
    ["p99 over stable", f(200, 0, 200), f(1000, 0, 100), { ...base, maxP99IncreaseMs: 50 }, "fail", /max_p99_increase_ms 50/],
    ["zero tolerance", f(1000, 1), f(1000), { ...base, maxErrorRatePercent: 0 }, "fail", /exceeds max_error_rate_percent 0%/],
    ["min_requests 0 judges at once", f(0), f(0), { minRequests: 0n, maxErrorRatePercent: 5 }, "pass", /over 0 requests/],
  ])("%s", (_name, canary, stable, a, verdict, reason) => {
    const r = analyse(canary, stable, create(RolloutAnalysisSchema, a), 1_000, 42);
    expect(r.verdict).toBe(verdict);
    expect(r.reason).toMatch(reason);
    expect(r.atMs).toBe(42n);
    expect(r.canary?.requests).toBe(BigInt(canary.requests));
  });

  it("reports zero latency without requests", () => {
    const r = analyse({ requests: 0, failures: 0, p50Ms: 7, p99Ms: 9 }, NO_TRAFFIC, create(RolloutAnalysisSchema, base), 1, 1);
    expect(r.canary).toMatchObject({ p50Ms: 0, p99Ms: 0, errorRatePercent: 0 });
  });
});
