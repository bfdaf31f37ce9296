/**
 * A control plane that dies in the middle of a rollout (SIGKILL: no goodbye) and is started again on
 * the same store resumes the rollout where it was: same state, step, step start and events, the
 * step's hold counted from the stored start, and it goes on to promotion without replaying a step.
 * A rollback decided before the crash stays decided. The data planes keep serving the last weights
 * meanwhile and reconnect by themselves.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GatewayApi, type TenantCreds } from "../support/api.js";
import { restartControlPlane, startControlPlane, type ControlPlane, type DataPlane } from "../support/processes.js";
import { teardown } from "../support/teardown.js";
import { TrafficLoop } from "../support/traffic.js";
import { createRollout, createService, getRollout, startReportingDataPlane, waitForRollout } from "./rollout-support.js";

const INTERVAL_MS = 250;
const STEP2_HOLD_MS = 4_000;

let cp: ControlPlane;
let api: GatewayApi;
let dps: DataPlane[];
let nodeIds: string[];
let tenant: TenantCreds;

beforeAll(async () => {
  cp = await startControlPlane({ name: "rollout-restart-cp" });
  api = GatewayApi.of(cp);
  dps = await Promise.all(["rollout-restart-dp-1", "rollout-restart-dp-2"].map((id) => startReportingDataPlane(cp, id)));
  nodeIds = dps.map((d) => d.nodeId);
  await api.waitForConnected(nodeIds);
  tenant = await api.createTenant("rollout-restart");
});

afterAll(teardown);

describe("control-plane restart mid-rollout", () => {
  it("resumes at the stored step and step start, then promotes without replaying a step; a rollback decision survives too", async () => {
    const svc = await createService(api, tenant, "resume", nodeIds);
    const doomed = await createService(api, tenant, "doomed", nodeIds);
    const traffic = new TrafficLoop(
      dps.flatMap((d) => [`${d.url}${svc.path}`, `${d.url}${doomed.path}`]),
      { path: "" },
    );
    try {
      const steps = [
        { weight: 10, hold_ms: 500 },
        { weight: 50, hold_ms: STEP2_HOLD_MS },
        { weight: 100, hold_ms: 500 },
      ];
      const analysis = { interval_ms: INTERVAL_MS, min_requests: 20 };
      const ro = await createRollout(api, tenant, { rule_id: svc.ruleId, canary_upstream_id: svc.canaryId, steps, analysis });
      const bad = await createRollout(api, tenant, { rule_id: doomed.ruleId, canary_upstream_id: doomed.canaryId, steps, analysis });
      const before = await waitForRollout(api, tenant, ro.id, (r) => r.current_step === 1, "step 2");
      doomed.canary.failing = true;
      const rolledBack = await waitForRollout(api, tenant, bad.id, (r) => r.state === "rolled_back", "the rollback", 20_000);

      const killed = await cp.proc.kill9();
      expect(killed.signal).toBe("SIGKILL");
      cp = await restartControlPlane(cp);

      // Right after the restart, before any new analysis: exactly as stored.
      const after = await getRollout(api, tenant, ro.id);
      expect(after).toMatchObject({ state: "progressing", current_step: 1, current_weight: 50, step_started_at_ms: before.step_started_at_ms });
      expect(after.events.map((e) => e.type)).toEqual(before.events.map((e) => e.type));
      const stillBack = await getRollout(api, tenant, bad.id);
      expect(stillBack).toMatchObject({ state: "rolled_back", revision: rolledBack.revision });
      const doomedRule = (await api.getRule(tenant, doomed.ruleId)).json;
      expect(doomedRule.traffic_split).toBeUndefined();

      await api.waitForConnected(nodeIds, { timeoutMs: 20_000 });
      const done = await waitForRollout(api, tenant, ro.id, (r) => r.state === "promoted", "promotion", 40_000);
      expect(done.events.map((e) => e.type).filter((t) => t !== "held")).toEqual(["created", "started", "advanced", "advanced", "promoted"]);
      const advanced = done.events.filter((e) => e.type === "advanced");
      // Step 3 came a full hold after step 2's stored start, counted across the restart.
      expect(Number(advanced[1].at_ms) - Number(before.step_started_at_ms)).toBeGreaterThanOrEqual(STEP2_HOLD_MS);
      expect(advanced[1].weight).toBe(100);
      const rule = (await api.getRule(tenant, svc.ruleId)).json;
      expect(rule.upstream_id).toBe(svc.canaryId);
      // The doomed rollout never moved again.
      expect(await getRollout(api, tenant, bad.id)).toMatchObject({ state: "rolled_back", revision: rolledBack.revision });
    } finally {
      await traffic.stop();
      // Data planes before the control plane they follow, as the shared teardown intends (it stops
      // the newest process first, and the restarted control plane is newer than the data planes).
      for (const dp of dps) await dp.proc.stop();
    }
  });
});
