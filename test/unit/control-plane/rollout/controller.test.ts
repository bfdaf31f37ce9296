/**
 * The rollout controller with a fake clock and fake fleet figures on a real file store: steps
 * advance only after the hold time and a passing analysis, thin traffic holds, thresholds roll back
 * at once (absolute and against stable), operators pause/resume/promote/abort, the controller
 * guards its rule, and a restarted control plane continues where the old one stopped.
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { RuleSchema } from "../../../../proto/gen/gateway/v1/rule_pb.js";
import { ADMIN, Harness } from "./harness.js";

let h: Harness;

beforeEach(async () => {
  h = await Harness.start();
});

afterEach(async () => {
  await h.close();
});

function types(id: string): string[] {
  return h.rollout(id).events.map((e) => e.type);
}

async function codeOf(p: Promise<unknown> | (() => unknown)): Promise<{ code: Code; message: string }> {
  try {
    await (typeof p === "function" ? p() : p);
  } catch (err) {
    const e = ConnectError.from(err);
    return { code: e.code, message: e.rawMessage };
  }
  throw new Error("expected an error");
}

describe("progress", () => {
  it("starts at the first step on the first round: the rule's split gets 90/10 in the same commit", async () => {
    const r = await h.create();
    expect(r.state).toBe("pending");
    expect(h.weights()).toBeUndefined();
    await h.tick();
    const s = h.rollout(r.id);
    expect(s).toMatchObject({ state: "progressing", currentStep: 0, currentWeight: 10, stepStartedAtMs: BigInt(h.now) });
    expect(h.weights()).toEqual([90, 10]);
    // Decision and weights are one commit: the rule's revision is the rollout's.
    expect(h.rule().revision).toBe(s.revision);
    expect(types(r.id)).toEqual(["created", "started"]);
  });

  it("advances only after the hold time, with a passing analysis, through every step, then promotes", async () => {
    const r = await h.create();
    h.healthy();
    await h.tick();
    await h.run(900);
    expect(h.rollout(r.id).currentStep).toBe(0);
    await h.run(100);
    expect(h.rollout(r.id)).toMatchObject({ currentStep: 1, currentWeight: 50 });
    expect(h.weights()).toEqual([50, 50]);
    await h.run(1_000);
    expect(h.rollout(r.id)).toMatchObject({ currentStep: 2, currentWeight: 100 });
    expect(h.weights()).toEqual([0, 100]);
    await h.run(1_000);
    const done = h.rollout(r.id);
    expect(done).toMatchObject({ state: "promoted", currentWeight: 100, finishedAtMs: BigInt(h.now) });
    // The canary is the rule's upstream now; the rollout's split is gone.
    expect(h.rule().upstreamId).toBe(h.canaryId);
    expect(h.rule().trafficSplit).toBeUndefined();
    expect(types(r.id)).toEqual(["created", "started", "advanced", "advanced", "promoted"]);
    const adv = done.events[2];
    expect(adv.analysis?.verdict).toBe("pass");
    expect(adv.analysis?.canary?.requests).toBe(500n);
    expect(adv.reason).toMatch(/analysis passed.*step 2\/3: canary at 50%/);
  });

  it("analyses each rollout once per interval, over the window since the step started (capped by window_ms)", async () => {
    const r = await h.create({ analysis: { intervalMs: 500, minRequests: 100n, windowMs: 300 } });
    h.healthy();
    await h.tick(); // starts
    h.metrics.reads.length = 0;
    await h.run(400, 100); // not due before 500 ms
    expect(h.metrics.reads).toEqual([]);
    await h.run(100, 100);
    // Canary and stable, each over min(elapsed 500, window 300).
    expect(h.metrics.reads).toEqual([
      { backendId: h.canaryId, windowMs: 300 },
      { backendId: h.stableId, windowMs: 300 },
    ]);
    expect(h.rollout(r.id).lastAnalysis?.windowMs).toBe(300);
  });

  it("holds on thin traffic, noting it once per step, and advances once the requests arrive", async () => {
    const r = await h.create();
    h.metrics.set(h.canaryId, { requests: 40, failures: 0 });
    h.metrics.set(h.stableId, { requests: 400, failures: 0 });
    await h.tick();
    await h.run(3_000);
    const s = h.rollout(r.id);
    expect(s).toMatchObject({ state: "progressing", currentStep: 0, currentWeight: 10 });
    expect(types(r.id)).toEqual(["created", "started", "held"]);
    expect(s.events[2].reason).toMatch(/thin traffic: the canary served 40 of the 100 requests/);
    expect(s.lastAnalysis?.verdict).toBe("hold");
    h.healthy(120);
    await h.run(100);
    expect(h.rollout(r.id).currentStep).toBe(1);
  });
});

describe("rollback", () => {
  async function atStep2(init: Record<string, unknown> = {}): Promise<string> {
    const r = await h.create(init);
    h.healthy();
    await h.tick();
    await h.run(1_000);
    expect(h.rollout(r.id).currentStep).toBe(1);
    return r.id;
  }

  it("rolls back at once when the canary's error rate crosses the threshold, recording the figures", async () => {
    const id = await atStep2();
    h.metrics.set(h.canaryId, { requests: 200, failures: 20, p99Ms: 30 });
    await h.run(100);
    const s = h.rollout(id);
    expect(s).toMatchObject({ state: "rolled_back", currentWeight: 0, finishedAtMs: BigInt(h.now) });
    // 100% stable, in the same commit as the decision.
    expect(h.weights()).toBeUndefined();
    expect(h.rule().upstreamId).toBe(h.stableId);
    expect(h.rule().revision).toBe(s.revision);
    const e = s.events.at(-1)!;
    expect(e).toMatchObject({ type: "rolled_back", actor: "controller", step: 1 });
    expect(e.reason).toMatch(/canary error rate 10% \(20 of 200 requests failed\) exceeds max_error_rate_percent 5%/);
    expect(e.analysis?.canary).toMatchObject({ requests: 200n, failures: 20n, errorRatePercent: 10 });
    expect(h.logs.find((l) => l.msg === "rollout rolled_back")?.level).toBe("warn");
    // Final: nothing moves any more.
    h.healthy();
    await h.run(3_000);
    expect(h.rollout(id).state).toBe("rolled_back");
    expect(h.weights()).toBeUndefined();
  });

  it("does not wait for min_requests when the failures already decide", async () => {
    const id = await atStep2();
    h.metrics.set(h.canaryId, { requests: 8, failures: 8 });
    await h.run(100);
    const e = h.rollout(id).events.at(-1)!;
    expect(e.type).toBe("rolled_back");
    expect(e.reason).toMatch(/at least 8% whatever the next 92 requests do/);
  });

  it("rolls back on p99 latency over max_p99_ms", async () => {
    const id = await atStep2({ analysis: { intervalMs: 100, minRequests: 100n, maxP99Ms: 200 } });
    h.metrics.set(h.canaryId, { requests: 300, failures: 0, p99Ms: 350 });
    await h.run(100);
    expect(h.rollout(id).state).toBe("rolled_back");
    expect(h.rollout(id).events.at(-1)!.reason).toMatch(/p99 latency 350 ms exceeds max_p99_ms 200/);
  });

  it("compares with stable: a canary within the absolute limit but too far above stable is rolled back", async () => {
    const id = await atStep2({ analysis: { intervalMs: 100, minRequests: 100n, maxErrorRatePercent: 5, maxErrorRateIncreasePoints: 1 } });
    h.metrics.set(h.stableId, { requests: 1_000, failures: 20 }); // 2%
    h.metrics.set(h.canaryId, { requests: 200, failures: 5 }); // 2.5%: fine
    await h.run(100);
    expect(h.rollout(id).state).toBe("progressing");
    expect(h.rollout(id).lastAnalysis?.verdict).toBe("pass");
    h.metrics.set(h.canaryId, { requests: 200, failures: 8 }); // 4%: under 5%, but 2 points over stable
    await h.run(100);
    expect(h.rollout(id).state).toBe("rolled_back");
    expect(h.rollout(id).events.at(-1)!.reason).toMatch(/exceeds stable's 2% by more than max_error_rate_increase_points 1/);
  });

  it("skips the comparison while stable is too thin to be a baseline", async () => {
    const id = await atStep2({ analysis: { intervalMs: 100, minRequests: 100n, maxErrorRateIncreasePoints: 1 } });
    h.metrics.set(h.stableId, { requests: 10, failures: 0 });
    h.metrics.set(h.canaryId, { requests: 200, failures: 6 }); // 3%
    await h.run(100);
    expect(h.rollout(id).state).toBe("progressing");
    expect(h.rollout(id).lastAnalysis?.reason).toMatch(/stable too thin to compare/);
  });

  it("compares p99 with stable when asked", async () => {
    const id = await atStep2({ analysis: { intervalMs: 100, minRequests: 100n, maxP99IncreaseMs: 50 } });
    h.metrics.set(h.stableId, { requests: 1_000, p99Ms: 100 });
    h.metrics.set(h.canaryId, { requests: 200, p99Ms: 180 });
    await h.run(100);
    expect(h.rollout(id).state).toBe("rolled_back");
    expect(h.rollout(id).events.at(-1)!.reason).toMatch(/exceeds stable's 100 ms by more than max_p99_increase_ms 50/);
  });
});

describe("operator actions", () => {
  it("pause stops advancing but not protection; resume continues from the same step", async () => {
    const r = await h.create();
    h.healthy();
    await h.tick();
    const paused = await h.rollouts.act(ADMIN, h.tenantId, r.id, "pause", "looking at dashboards", 0n);
    expect(paused.state).toBe("paused");
    expect(paused.events.at(-1)).toMatchObject({ type: "paused", actor: "admin", reason: "looking at dashboards" });
    await h.run(3_000);
    expect(h.rollout(r.id)).toMatchObject({ state: "paused", currentStep: 0 });
    expect(h.weights()).toEqual([90, 10]);
    const resumed = await h.rollouts.act(ADMIN, h.tenantId, r.id, "resume", "", 0n);
    expect(resumed.state).toBe("progressing");
    await h.run(100);
    // The hold time had passed while paused: the next analysis advances.
    expect(h.rollout(r.id).currentStep).toBe(1);
    await h.rollouts.act(ADMIN, h.tenantId, r.id, "pause", "", 0n);
    h.metrics.set(h.canaryId, { requests: 200, failures: 100 });
    await h.run(100);
    expect(h.rollout(r.id).state).toBe("rolled_back");
  });

  it("promote now routes the rule to the canary and records the actor", async () => {
    const r = await h.create();
    await h.tick();
    const out = await h.rollouts.act({ kind: "tenant", tenantId: h.tenantId, keyId: "key_1" }, h.tenantId, r.id, "promote", "", 0n);
    expect(out).toMatchObject({ state: "promoted", currentWeight: 100 });
    expect(out.events.at(-1)).toMatchObject({ type: "promoted", actor: "key/key_1", reason: "promote requested by key/key_1" });
    expect(h.rule().upstreamId).toBe(h.canaryId);
    expect(h.rule().trafficSplit).toBeUndefined();
  });

  it("abort sends everything back to stable; final rollouts refuse further actions", async () => {
    const r = await h.create({ headerOverride: { header: "X-Canary" } });
    await h.tick();
    expect(h.rule().canary).toMatchObject({ header: "x-canary", headerValue: "true", upstreamId: h.canaryId });
    const out = await h.rollouts.act(ADMIN, h.tenantId, r.id, "abort", "bad deploy", 0n);
    expect(out).toMatchObject({ state: "aborted", currentWeight: 0 });
    expect(h.weights()).toBeUndefined();
    expect(h.rule().canary).toBeUndefined();
    for (const action of ["pause", "resume", "promote", "abort"] as const) {
      expect(await codeOf(h.rollouts.act(ADMIN, h.tenantId, r.id, action, "", 0n))).toMatchObject({ code: Code.FailedPrecondition, message: /aborted \(final\)/ });
    }
  });

  it("refuses a stale revision and a resume that is not paused", async () => {
    const r = await h.create();
    await h.tick();
    expect(await codeOf(h.rollouts.act(ADMIN, h.tenantId, r.id, "pause", "", r.revision))).toMatchObject({ code: Code.FailedPrecondition, message: /revision/ });
    expect(await codeOf(h.rollouts.act(ADMIN, h.tenantId, r.id, "resume", "", 0n))).toMatchObject({ code: Code.FailedPrecondition, message: /progressing, not paused/ });
  });

  it("can pause before the first step; resume then starts it", async () => {
    const r = await h.create();
    await h.rollouts.act(ADMIN, h.tenantId, r.id, "pause", "", 0n);
    await h.run(500);
    expect(h.rollout(r.id).state).toBe("paused");
    expect(h.weights()).toBeUndefined();
    await h.rollouts.act(ADMIN, h.tenantId, r.id, "resume", "", 0n);
    expect(h.rollout(r.id).state).toBe("pending");
    await h.tick();
    expect(h.weights()).toEqual([90, 10]);
  });
});

describe("sticky and header override", () => {
  it("writes hash_on into the split and the override into the rule's canary route, both gone at the end", async () => {
    const r = await h.create({ hashOn: { source: "header", name: "x-user" }, headerOverride: { header: "X-Canary", headerValue: "yes" } });
    h.healthy();
    await h.tick();
    const sr = h.rule().trafficSplit!.rules[0];
    expect(sr.match).toEqual([]);
    expect(sr.hashOn).toMatchObject({ source: "header", name: "x-user" });
    // Stable first, canary last: raising the weight only moves users into the canary.
    expect(sr.weightedUpstreams.map((w) => [w.upstreamId, w.weight])).toEqual([
      ["", 90],
      [h.canaryId, 10],
    ]);
    expect(h.rule().canary).toMatchObject({ header: "x-canary", headerValue: "yes", upstreamId: h.canaryId });
    await h.run(3_000);
    expect(h.rollout(r.id).state).toBe("promoted");
    expect(h.rule().canary).toBeUndefined();
  });
});

describe("guarding the rule", () => {
  it("aborts when the rule is deleted", async () => {
    const r = await h.create();
    await h.tick();
    // The rule references the canary while the split is in place; a user deletes the rule anyway.
    await h.api.deleteRule(ADMIN, h.tenantId, h.ruleId, 0n);
    await h.run(100);
    expect(h.rollout(r.id).state).toBe("aborted");
    expect(h.rollout(r.id).events.at(-1)!.reason).toMatch(/was deleted/);
  });

  it("aborts when the rule is pointed at another upstream, leaving that change alone", async () => {
    const r = await h.create();
    await h.tick();
    const rule = h.rule();
    await h.api.updateRule(ADMIN, h.tenantId, create(RuleSchema, { ...rule, upstreamId: h.canaryId, trafficSplit: undefined, revision: 0n }));
    await h.run(100);
    expect(h.rollout(r.id).state).toBe("aborted");
    expect(h.rule().upstreamId).toBe(h.canaryId);
  });

  it("does not start over a split added to the rule after the rollout was accepted", async () => {
    const r = await h.create();
    const rule = h.rule();
    rule.trafficSplit = create(RuleSchema, { trafficSplit: { rules: [{ weightedUpstreams: [{ upstreamId: h.canaryId, weight: 3 }, { weight: 97 }] }] } }).trafficSplit;
    await h.api.updateRule(ADMIN, h.tenantId, rule);
    await h.tick();
    expect(h.rollout(r.id).state).toBe("aborted");
    expect(h.rollout(r.id).events.at(-1)!.reason).toMatch(/^cannot start: rule_id: rule .* already has a traffic_split/);
    expect(h.weights()).toEqual([97, 3]); // the operator's split is left alone
  });

  it("restores the step's weights when the split is edited outside the rollout", async () => {
    const r = await h.create();
    await h.tick();
    const rule = h.rule();
    rule.trafficSplit!.rules[0].weightedUpstreams[1].weight = 90;
    rule.trafficSplit!.rules[0].weightedUpstreams[0].weight = 10;
    await h.api.updateRule(ADMIN, h.tenantId, rule);
    expect(h.weights()).toEqual([10, 90]);
    await h.run(100);
    expect(h.weights()).toEqual([90, 10]);
    expect(h.rollout(r.id).events.at(-1)).toMatchObject({ type: "rule_synced" });
  });
});

describe("refused rule writes", () => {
  it("commits the decision anyway, marks the rule out of sync once, and retries until the rule follows", async () => {
    const r = await h.create();
    h.healthy();
    await h.tick();
    h.writer.refuseRules = true;
    h.metrics.set(h.canaryId, { requests: 200, failures: 100 });
    await h.run(100);
    const s = h.rollout(r.id);
    // The rollback decision is durable although the weights could not be written.
    expect(s).toMatchObject({ state: "rolled_back", ruleOutOfSync: true });
    expect(types(r.id)).toEqual(["created", "started", "rolled_back", "rule_sync_failed"]);
    expect(s.events.at(-1)!.reason).toMatch(/refused by the test/);
    expect(h.weights()).toEqual([90, 10]);
    await h.run(500);
    expect(types(r.id)).toHaveLength(4); // retries are not news
    // After a restart too, the decision is there and still being applied.
    await h.restart();
    await h.tick();
    expect(h.weights()).toBeUndefined();
    expect(h.rollout(r.id)).toMatchObject({ state: "rolled_back", ruleOutOfSync: false });
    expect(types(r.id).at(-1)).toBe("rule_synced");
  });
});

describe("restart", () => {
  it("resumes mid-rollout at the stored step and step start, without restarting", async () => {
    const r = await h.create();
    h.healthy();
    await h.tick();
    await h.run(1_000);
    await h.run(400);
    const before = h.rollout(r.id);
    expect(before).toMatchObject({ state: "progressing", currentStep: 1 });
    await h.restart();
    const after = h.rollout(r.id);
    expect(after).toMatchObject({ state: "progressing", currentStep: 1, currentWeight: 50, stepStartedAtMs: before.stepStartedAtMs });
    expect(after.events).toEqual(before.events);
    expect(after.lastAnalysis).toBeUndefined(); // live figures are rebuilt from new reports
    expect(h.weights()).toEqual([50, 50]);
    // 400 ms of the step's 1 s hold had passed before the restart: 600 ms more suffice.
    await h.run(500);
    expect(h.rollout(r.id).currentStep).toBe(1);
    await h.run(100);
    expect(h.rollout(r.id)).toMatchObject({ currentStep: 2, currentWeight: 100 });
    expect(types(r.id)).toEqual(["created", "started", "advanced", "advanced"]);
  });

  it("keeps a rollback decision across a restart", async () => {
    const r = await h.create();
    h.healthy();
    await h.tick();
    h.metrics.set(h.canaryId, { requests: 200, failures: 50 });
    await h.run(100);
    expect(h.rollout(r.id).state).toBe("rolled_back");
    await h.restart();
    h.healthy();
    await h.run(3_000);
    expect(h.rollout(r.id).state).toBe("rolled_back");
    expect(h.weights()).toBeUndefined();
    expect(h.rule().upstreamId).toBe(h.stableId);
  });

  it("a pending rollout created just before a restart starts after it", async () => {
    const r = await h.create();
    await h.restart();
    await h.tick();
    expect(h.rollout(r.id).state).toBe("progressing");
    expect(h.weights()).toEqual([90, 10]);
  });
});

describe("creation", () => {
  it("fills defaults: seed 002's steps, 10 s interval, 100 requests, 5% errors; stable from the rule", async () => {
    const r = await h.rollouts.create(ADMIN, h.tenantId, create((await import("../../../../proto/gen/gateway/v1/rollout_pb.js")).RolloutSchema, { ruleId: h.ruleId, canaryUpstreamId: h.canaryId }));
    expect(r.steps.map((s) => s.weight)).toEqual([1, 10, 25, 50, 100]);
    expect(r.steps.every((s) => s.holdMs === 60_000)).toBe(true);
    expect(r.analysis).toMatchObject({ intervalMs: 10_000, minRequests: 100n, maxErrorRatePercent: 5 });
    expect(r.stableUpstreamId).toBe(h.stableId);
    expect(r.events[0]).toMatchObject({ type: "created", actor: "admin" });
  });

  it.each([
    [{ ruleId: "" }, Code.InvalidArgument, /^rule_id: is required/],
    [{ canaryUpstreamId: "" }, Code.InvalidArgument, /^canary_upstream_id: is required/],
    [{ steps: [{ weight: 10 }, { weight: 10 }] }, Code.InvalidArgument, /^steps\[1\]\.weight: must be greater than the previous/],
    [{ steps: [{ weight: 0 }] }, Code.InvalidArgument, /^steps\[0\]\.weight: must be a percentage from 1 to 100/],
    [{ steps: [{ weight: 101 }] }, Code.InvalidArgument, /^steps\[0\]\.weight/],
    [{ analysis: { intervalMs: 50 } }, Code.InvalidArgument, /^analysis\.interval_ms: must be from 100/],
    [{ analysis: { maxErrorRatePercent: 120 } }, Code.InvalidArgument, /^analysis\.max_error_rate_percent/],
    [{ analysis: { maxP99Ms: 0 } }, Code.InvalidArgument, /^analysis\.max_p99_ms/],
    [{ hashOn: { source: "header" } }, Code.InvalidArgument, /^hash_on\.name: is required/],
    [{ hashOn: { source: "moon" } }, Code.InvalidArgument, /^hash_on\.source/],
    [{ headerOverride: { header: "bad header" } }, Code.InvalidArgument, /^header_override\.header/],
    [{ headerOverride: {} }, Code.InvalidArgument, /^header_override: set header/],
    [{ ruleId: "rule_nope" }, Code.NotFound, /^rule_id: rule rule_nope not found/],
    [{ canaryUpstreamId: "up_nope" }, Code.InvalidArgument, /^canary_upstream_id: upstream up_nope not found/],
    [{ stableUpstreamId: "up_other" }, Code.InvalidArgument, /^stable_upstream_id: must be the upstream rule/],
  ])("refuses %j with a field-named error", async (patch, code, message) => {
    expect(await codeOf(h.create(patch))).toMatchObject({ code, message });
  });

  it("refuses rules it cannot drive: inline targets, an existing split, a canary route with an override, a second active rollout", async () => {
    const inline = (await h.api.createRule(ADMIN, h.tenantId, create(RuleSchema, { path: "/inline/*", targets: [{ url: "http://127.0.0.1:9003" }] }))).rule;
    expect(await codeOf(h.create({ ruleId: inline.id }))).toMatchObject({ code: Code.FailedPrecondition, message: /routes to inline targets/ });

    const split = (
      await h.api.createRule(
        ADMIN,
        h.tenantId,
        create(RuleSchema, { path: "/split/*", upstreamId: h.stableId, trafficSplit: { rules: [{ weightedUpstreams: [{ upstreamId: h.canaryId, weight: 1 }] }] } }),
      )
    ).rule;
    expect(await codeOf(h.create({ ruleId: split.id }))).toMatchObject({ code: Code.FailedPrecondition, message: /already has a traffic_split/ });

    const canary = (await h.api.createRule(ADMIN, h.tenantId, create(RuleSchema, { path: "/canary/*", upstreamId: h.stableId, canary: { header: "x-v", upstreamId: h.canaryId } }))).rule;
    expect(await codeOf(h.create({ ruleId: canary.id, headerOverride: { header: "X-Canary" } }))).toMatchObject({
      code: Code.FailedPrecondition,
      message: /^header_override: rule .* already has a canary route/,
    });
    // Without an override the rule's own canary route is left alone.
    await h.create({ ruleId: canary.id });

    const first = await h.create();
    expect(await codeOf(h.create())).toMatchObject({ code: Code.FailedPrecondition, message: new RegExp(`rollout ${first.id} is already pending`) });
    // Once it is final, the rule is free again.
    await h.rollouts.act(ADMIN, h.tenantId, first.id, "abort", "", 0n);
    await h.create();
  });

  it("keeps tenants apart", async () => {
    const r = await h.create();
    const { tenant } = await h.api.createTenant(ADMIN, "other", undefined);
    const other = { kind: "tenant" as const, tenantId: tenant.id, keyId: "k" };
    expect(await codeOf(() => h.rollouts.get(other, h.tenantId, r.id))).toMatchObject({ code: Code.NotFound });
    expect(await codeOf(() => h.rollouts.get(ADMIN, tenant.id, r.id))).toMatchObject({ code: Code.NotFound });
    expect(h.rollouts.list(ADMIN, tenant.id)).toEqual([]);
    expect(h.rollouts.list(ADMIN, h.tenantId).map((x) => x.id)).toEqual([r.id]);
  });
});
