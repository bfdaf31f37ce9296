/**
 * Seed 002's automated canary, end to end with real processes: a control plane, two data planes
 * reporting to it, and real stable/canary targets carrying real traffic. The rollout's analysis
 * reads the fleet's figures (both data planes' reports), so these tests need the data-plane reports
 * flowing.
 *
 * - a healthy canary is promoted through every step to 100%, driven from the CLI
 *   (`gateway rollout create ... --watch`, which exits 0 once promoted);
 * - a canary that starts returning 5xx at step 2 is rolled back within one analysis interval of
 *   the failures being reported, and once the data planes acked the rollback, the canary gets no
 *   further request;
 * - thin traffic holds the step (and says so in the events).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GatewayApi, type TenantCreds } from "../support/api.js";
import { runGateway, startControlPlane, type ControlPlane, type DataPlane } from "../support/processes.js";
import { teardown } from "../support/teardown.js";
import { sendRequests, TrafficLoop } from "../support/traffic.js";
import { createRollout, createService, getRollout, reportIntervalMs, startReportingDataPlane, waitForRollout } from "./rollout-support.js";

const INTERVAL_MS = 250;

let cp: ControlPlane;
let api: GatewayApi;
let dps: DataPlane[];
let nodeIds: string[];
let tenant: TenantCreds;

beforeAll(async () => {
  cp = await startControlPlane({ name: "rollout-control-plane" });
  api = GatewayApi.of(cp);
  dps = await Promise.all(["rollout-dp-1", "rollout-dp-2"].map((id) => startReportingDataPlane(cp, id)));
  nodeIds = dps.map((d) => d.nodeId);
  await api.waitForConnected(nodeIds);
  tenant = await api.createTenant("rollouts");
});

afterAll(teardown);

describe("automated canary rollouts", () => {
  it("promotes a healthy canary through every step to 100% (CLI create --watch exits 0)", async () => {
    const svc = await createService(api, tenant, "healthy", nodeIds);
    const traffic = new TrafficLoop(
      dps.map((d) => d.url),
      { path: svc.path },
    );
    try {
      const cli = await runGateway(
        [
          "rollout",
          "create",
          "--rule",
          svc.ruleId,
          "--canary",
          svc.canaryId,
          "--steps",
          "10,50,100",
          "--hold",
          "600ms",
          "--interval",
          `${INTERVAL_MS}ms`,
          "--min-requests",
          "20",
          "--control-plane",
          cp.url,
          "--tenant",
          tenant.id,
          "--watch",
        ],
        { env: { GATEWAY_API_KEY: tenant.apiKey }, timeoutMs: 60_000 },
      );
      expect(cli.code, cli.stderr + cli.stdout).toBe(0);
      // Line by line (not a terminal): one line per change, then the final picture.
      expect(cli.stdout).toMatch(/ progressing step 1\/3 canary 10% /);
      expect(cli.stdout).toMatch(/ progressing step 2\/3 canary 50% /);
      expect(cli.stdout).toMatch(/ promoted step 3\/3 canary 100% /);
      expect(cli.stdout).toMatch(/\[promoted\]/);
      expect(cli.stdout).toMatch(/canary at 100%: promoted/);

      const list = await api.call("GET", `/api/v1/tenants/${tenant.id}/rollouts`, { key: tenant.apiKey });
      const id = (list.json.rollouts as { id: string; rule_id: string }[]).find((r) => r.rule_id === svc.ruleId)!.id;
      const r = await getRollout(api, tenant, id);
      expect(r.state).toBe("promoted");
      // "held" may appear while traffic ramps up (thin traffic); the transitions are exactly these.
      expect(r.events.map((e) => e.type).filter((t) => t !== "held")).toEqual(["created", "started", "advanced", "advanced", "promoted"]);
      // Every step was judged on real fleet figures.
      for (const e of r.events.filter((x) => x.type === "advanced" || x.type === "promoted")) {
        expect(e.analysis?.verdict).toBe("pass");
        expect(Number(e.analysis?.canary?.requests)).toBeGreaterThanOrEqual(20);
      }
      // The rule now routes to the canary upstream, without a split; the data planes follow.
      const rule = (await api.getRule(tenant, svc.ruleId)).json;
      expect(rule.upstream_id).toBe(svc.canaryId);
      expect(rule.traffic_split).toBeUndefined();
      await api.waitForAcked(rule.revision, nodeIds);
    } finally {
      const result = await traffic.stop();
      expect(result.failures).toEqual([]);
    }
    for (const dp of dps) {
      const after = await sendRequests(dp.url, 20, { path: svc.path });
      expect(after.byTarget).toEqual({ "healthy-v2": 20 });
    }
  });

  it("rolls a canary that starts failing at step 2 back within one analysis interval, then sends it nothing", async () => {
    const svc = await createService(api, tenant, "failing", nodeIds);
    const traffic = new TrafficLoop(
      dps.map((d) => d.url),
      { path: svc.path },
    );
    try {
      const created = await createRollout(api, tenant, {
        rule_id: svc.ruleId,
        canary_upstream_id: svc.canaryId,
        steps: [
          { weight: 10, hold_ms: 500 },
          { weight: 50, hold_ms: 60_000 },
          { weight: 100, hold_ms: 60_000 },
        ],
        analysis: { interval_ms: INTERVAL_MS, min_requests: 20, max_error_rate_percent: 5 },
      });
      await waitForRollout(api, tenant, created.id, (r) => r.current_step === 1, "step 2");
      // Step 2 is in effect: from now on the canary fails every request.
      svc.canary.failing = true;
      const brokeAt = Date.now();
      const r = await waitForRollout(api, tenant, created.id, (x) => x.state === "rolled_back", "the rollback", 20_000);
      const e = r.events.at(-1)!;
      expect(e.type).toBe("rolled_back");
      expect(e.step).toBe(1);
      expect(e.reason).toMatch(/exceeds max_error_rate_percent 5%/);
      expect(Number(e.analysis!.canary!.failures)).toBeGreaterThan(0);
      // Failures reach the control plane with the next report; the next analysis acts on them.
      const reportMs = (await reportIntervalMs()) * 1.2 + 1_000; // jittered report + fleet bucket resolution
      expect(Number(e.at_ms) - brokeAt).toBeLessThan(reportMs + INTERVAL_MS + 1_000);

      // The rollback is an ordinary rule change: once both data planes applied it, the canary gets nothing.
      const rule = (await api.getRule(tenant, svc.ruleId)).json;
      expect(rule.traffic_split).toBeUndefined();
      expect(rule.upstream_id).toBe(svc.stableId);
      expect(rule.revision).toBe(r.revision);
      await api.waitForAcked(rule.revision, nodeIds);
      await traffic.waitForMore(2); // a request already routed before the ack finishes
      const canarySeen = svc.canary.requests.length;
      const stableSeen = svc.stable.requests.length;
      await traffic.waitForMore(300);
      expect(svc.canary.requests.length).toBe(canarySeen);
      expect(svc.stable.requests.length).toBeGreaterThanOrEqual(stableSeen + 300);
    } finally {
      await traffic.stop();
    }
  });

  it("holds the step while traffic is too thin to judge", async () => {
    const svc = await createService(api, tenant, "thin", nodeIds);
    const created = await createRollout(api, tenant, {
      rule_id: svc.ruleId,
      canary_upstream_id: svc.canaryId,
      steps: [
        { weight: 50, hold_ms: 300 },
        { weight: 100, hold_ms: 300 },
      ],
      analysis: { interval_ms: INTERVAL_MS, min_requests: 1_000 },
    });
    await waitForRollout(api, tenant, created.id, (r) => r.state === "progressing", "the first step");
    // A trickle: far below 1,000 canary requests.
    for (const dp of dps) await sendRequests(dp.url, 20, { path: svc.path });
    const held = await waitForRollout(api, tenant, created.id, (r) => r.events.some((e) => e.type === "held"), "a held event", 20_000);
    expect(held.events.find((e) => e.type === "held")!.reason).toMatch(/thin traffic: the canary served \d+ of the 1000 requests/);
    // Many hold times and analyses later, still on the first step.
    await new Promise((resolve) => setTimeout(resolve, 6 * INTERVAL_MS));
    const r = await getRollout(api, tenant, created.id);
    expect(r).toMatchObject({ state: "progressing", current_step: 0, current_weight: 50 });
    expect(r.last_analysis?.verdict).toBe("hold");
    expect(r.events.filter((e) => e.type === "held")).toHaveLength(1);
    // The operator ends it: everything back on stable.
    const aborted = await api.call("POST", `/api/v1/tenants/${tenant.id}/rollouts/${created.id}/abort`, { key: tenant.apiKey, body: { reason: "not enough traffic today" } });
    expect(aborted.status).toBe(200);
    expect(aborted.json).toMatchObject({ state: "aborted", current_weight: 0 });
    const again = await api.call("POST", `/api/v1/tenants/${tenant.id}/rollouts/${created.id}/resume`, { key: tenant.apiKey });
    expect(again.status).toBe(409);
  });
});
