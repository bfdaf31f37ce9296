/** The CLI's pure parts: durations, the steps' progress bar, and the text it draws. */
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { RolloutSchema } from "../../../../proto/gen/gateway/v1/rollout_pb.js";
import { parseDuration, progressBar, render, summaryLine } from "../../../../control-plane/src/cli/rollout.js";
import { UsageError } from "../../../../control-plane/src/cli/args.js";

const T0 = 1_700_000_000_000;

function rollout(init: Record<string, unknown>) {
  return create(RolloutSchema, {
    id: "ro_1",
    ruleId: "rule_1",
    stableUpstreamId: "up_v1",
    canaryUpstreamId: "up_v2",
    steps: [
      { weight: 10, holdMs: 1_000 },
      { weight: 50, holdMs: 1_000 },
      { weight: 100, holdMs: 1_000 },
    ],
    analysis: { intervalMs: 100, minRequests: 100n, maxErrorRatePercent: 5, maxP99Ms: 300 },
    stepStartedAtMs: BigInt(T0),
    ...init,
  } as never);
}

describe("parseDuration", () => {
  it.each([
    ["500ms", 500],
    ["30s", 30_000],
    ["1.5s", 1_500],
    ["2m", 120_000],
    ["1h", 3_600_000],
    ["250", 250],
  ])("%s = %d ms", (v, ms) => expect(parseDuration("hold", v)).toBe(ms));

  it.each(["", "5 minutes", "-1s", "1d"])("refuses %j naming the flag", (v) => {
    expect(() => parseDuration("hold", v)).toThrow(UsageError);
    expect(() => parseDuration("hold", v)).toThrow(/^--hold:/);
  });
});

describe("progressBar", () => {
  it.each([
    ["pending", { state: "pending" }, 0, "[░░░░░░░░░]"],
    ["first step, half held", { state: "progressing", currentStep: 0 }, 500, "[█░░░░░░░░]"],
    ["second step, fully held", { state: "progressing", currentStep: 1 }, 1_000, "[██████░░░]"],
    ["last step, just started", { state: "progressing", currentStep: 2 }, 0, "[██████░░░]"],
    ["promoted", { state: "promoted", currentStep: 2 }, 0, "[█████████]"],
    ["rolled back at step 2", { state: "rolled_back", currentStep: 1 }, 0, "[███✗░░░░░]"],
  ])("%s", (_name, init, elapsed, bar) => {
    expect(progressBar(rollout(init), T0 + elapsed, 9)).toBe(bar);
  });
});

describe("render", () => {
  it("shows the step, the figures against the thresholds, the verdict and the latest events", () => {
    const r = rollout({
      state: "progressing",
      currentStep: 1,
      currentWeight: 50,
      lastAnalysis: {
        atMs: BigInt(T0 + 400),
        windowMs: 400,
        verdict: "pass",
        reason: "analysis passed over 120 requests",
        canary: { requests: 120n, failures: 1n, errorRatePercent: 0.83, p50Ms: 4, p99Ms: 42 },
        stable: { requests: 130n, failures: 0n, errorRatePercent: 0, p50Ms: 4, p99Ms: 40 },
      },
      events: [{ atMs: BigInt(T0), type: "advanced", reason: "analysis passed; step 2/3: canary at 50%" }],
    });
    const text = render(r, T0 + 400).join("\n");
    expect(text).toContain("up_v1 → up_v2  [progressing]");
    expect(text).toContain("step 2/3: canary at 50%, held 400ms of 1s");
    expect(text).toContain("steps   10%✓ 50%● 100%");
    expect(text).toContain("canary  requests 120/100  errors 0.83% (max 5%)  p50 4 ms  p99 42 ms (max 300 ms)");
    expect(text).toContain("stable  requests 130  errors 0%");
    expect(text).toContain("verdict pass: analysis passed over 120 requests (window 400ms)");
    expect(text).toMatch(/advanced +analysis passed; step 2\/3/);
    expect(summaryLine(r, T0 + 400)).toMatch(/ro_1 progressing step 2\/3 canary 50% \[.*\] canary 120 req, 0.83% errors, p99 42 ms; pass$/);
  });
});
