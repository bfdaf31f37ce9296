/**
 * Fleet health end to end. First against a scripted control plane (test/support/fake-control-plane),
 * which pushes exactly the FleetHealth a test wants and reads the data plane's reports: a data plane
 * routes around a target the fleet says is down, probes only what it is assigned, and reports a state
 * change at once. Then with the real control plane: data planes that see a target die get it marked
 * down fleet-wide, and a data plane that never sent it a request stops routing there too.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { StreamResponseSchema, type FleetHealth, type Report } from "../../proto/gen/gateway/v1/discovery_pb.js";
import { GatewayApi } from "../support/api.js";
import { httpRequest } from "../support/http.js";
import { buildSnapshot, FakeControlPlane, type FakeStream } from "../support/fake-control-plane.js";
import { startControlPlane, type DataPlane } from "../support/processes.js";
import { teardown } from "../support/teardown.js";
import { sendRequests } from "../support/traffic.js";
import { waitFor } from "../support/wait.js";
import { scrape, series, startObservedDataPlane, startSwitchTarget, type SwitchTarget } from "./health-support.js";

afterAll(teardown);

const tenant = { id: "ten_fleet", name: "fleet" };

function fleetHealth(targets: { backend: string; target: string; down?: boolean; probe?: boolean; inFlight?: number }[]) {
  return create(StreamResponseSchema, { nonce: "", kind: { case: "fleetHealth", value: { targets } as unknown as FleetHealth } });
}

describe("against a scripted control plane", () => {
  let fake: FakeControlPlane;
  let dp: DataPlane;
  let metricsUrl: string;
  let stream: FakeStream;
  let a: SwitchTarget, b: SwitchTarget;
  let version = 0n;

  beforeAll(async () => {
    [a, b] = await Promise.all([startSwitchTarget("fleet-a"), startSwitchTarget("fleet-b")]);
    fake = await FakeControlPlane.start();
    // Reports every minute: anything sooner is a report sent at once on a state change.
    ({ dp, metricsUrl } = await startObservedDataPlane({ controlPlane: fake.url, nodeId: "fleet-fake-dp", token: "t", reportIntervalMs: 60_000 }));
    stream = await fake.nextStream();
  });

  /** Pushes a snapshot with upstream "up" over the two targets and rule /f/* on it. */
  async function pushUpstream(upstream: Record<string, unknown>): Promise<void> {
    version++;
    const answer = await stream.pushAndAwaitAnswer(
      buildSnapshot(version, {
        tenants: [tenant],
        upstreams: [{ id: "up", tenantId: tenant.id, name: "up", targets: [a, b].map((t) => ({ host: "127.0.0.1", port: t.target.port })), ...upstream }],
        rules: [{ id: "r", tenantId: tenant.id, path: "/f/*", methods: ["GET"], upstreamId: "up", stripPath: true }],
      }),
    );
    expect(answer.kind).toBe("ack");
  }

  it("routes around a target the fleet says is down, without local evidence, and back when the verdict lifts", async () => {
    await pushUpstream({});
    expect((await sendRequests(dp.url, 10, { path: "/f/x" })).byTarget).toEqual({ "fleet-a": 5, "fleet-b": 5 });
    let mark = dp.proc.mark();
    stream.send(fleetHealth([{ backend: "up", target: b.key, down: true, inFlight: 3 }]));
    await dp.proc.waitForMsg("fleet verdict changed", { target: b.key, down: true }, { since: mark });
    const during = await sendRequests(dp.url, 10, { path: "/f/x" });
    expect(during.byTarget).toEqual({ "fleet-a": 10 });
    const m = await scrape(metricsUrl);
    expect(series(m, "gateway_target_state", { backend: "up", target: b.key, state: "unhealthy" })).toBe(1);
    expect(series(m, "gateway_upstream_fleet_in_flight", { backend: "up", target: b.key })).toBe(3);

    mark = dp.proc.mark();
    stream.send(fleetHealth([]));
    await dp.proc.waitForMsg("fleet verdict changed", { target: b.key, down: false }, { since: mark });
    expect((await sendRequests(dp.url, 10, { path: "/f/x" })).byTarget).toEqual({ "fleet-a": 5, "fleet-b": 5 });
    expect(series(await scrape(metricsUrl), "gateway_upstream_fleet_in_flight", { backend: "up", target: b.key })).toBe(0);
  });

  it("probes every actively checked target until the fleet assigns probes, then only its own", async () => {
    // The data plane is already in assignment mode from the previous test's pushes; a dropped view
    // is not observable from outside, so this uses a second data plane that never got FleetHealth.
    const fake2 = await FakeControlPlane.start();
    const { dp: dp2 } = await startObservedDataPlane({ controlPlane: fake2.url, nodeId: "fleet-probe-dp", token: "t" });
    const s2 = await fake2.nextStream();
    const [p, q] = await Promise.all([startSwitchTarget("probe-p"), startSwitchTarget("probe-q")]);
    const probes = (t: SwitchTarget) => t.target.requests.filter((r) => r.url === "/health").length;
    const answer = await s2.pushAndAwaitAnswer(
      buildSnapshot(1n, {
        tenants: [tenant],
        upstreams: [
          {
            id: "probed",
            tenantId: tenant.id,
            name: "probed",
            targets: [p, q].map((t) => ({ host: "127.0.0.1", port: t.target.port })),
            healthCheck: { active: { path: "/health", intervalMs: 100, timeoutMs: 50 } },
          },
        ],
      }),
    );
    expect(answer.kind).toBe("ack");
    await Promise.all([p.target.waitForRequests(2), q.target.waitForRequests(2)]);

    const mark = dp2.proc.mark();
    s2.send(fleetHealth([{ backend: "probed", target: p.key, probe: true }]));
    await dp2.proc.waitForMsg("fleet health received", {}, { since: mark });
    const qBefore = probes(q);
    const pBefore = probes(p);
    await waitFor(() => probes(p) >= pBefore + 5, { what: "five more probes of the assigned target" });
    // At most the one probe that was already on its way when the assignment arrived.
    expect(probes(q) - qBefore).toBeLessThanOrEqual(1);
  });

  it("reports a target's ejection at once, not at the next interval", async () => {
    await pushUpstream({ healthCheck: { passive: { consecutiveFailures: 2, baseEjectionMs: 300_000 } } });
    stream.send(fleetHealth([]));
    const since = stream.received.length;
    b.setStatus(503);
    // Each request: the held 503 is retried on the other target, so clients see no failure.
    const r = await sendRequests(dp.url, 6, { path: "/f/x" });
    expect(r.failures).toEqual([]);
    const msg = await stream.waitForRequest(
      (req) => stream.received.indexOf(req) >= since && req.kind.case === "report" && req.kind.value.targets.some((t) => t.target === b.key && t.passiveState === "ejected"),
      15_000,
      "a report with the ejected target",
    );
    const report = msg.kind.value as Report;
    expect(report.appliedVersion).toBe(version);
    const tb = report.targets.find((t) => t.target === b.key)!;
    expect(tb).toMatchObject({ backend: "up", passiveState: "ejected", probeState: "unknown", inFlight: 0 });
    expect(tb.failures).toBeGreaterThanOrEqual(2n);
    const ta = report.targets.find((t) => t.target === a.key)!;
    expect(ta.requests).toBeGreaterThanOrEqual(1n);
    expect(ta.latency?.maxMs).toBeGreaterThan(0);
    b.setStatus(200);
  });

  it("says on /healthz and in the metrics when the control plane is lost, and keeps serving", async () => {
    const before = await httpRequest(`${metricsUrl}/healthz`);
    expect(before.json).toMatchObject({ status: "ok", control_plane_connected: true, version: String(version) });
    const mark = dp.proc.mark();
    await fake.close();
    await dp.proc.waitForMsg("lost control plane", {}, { since: mark });
    const h = await httpRequest(`${metricsUrl}/healthz`);
    expect(h.status).toBe(200);
    expect(h.json).toMatchObject({ status: "control_plane_lost", control_plane_connected: false, version: String(version) });
    expect(h.json.last_contact_ms).toBeGreaterThanOrEqual(0);
    expect(series(await scrape(metricsUrl), "gateway_control_plane_connected")).toBe(0);
    expect((await sendRequests(dp.url, 4, { path: "/f/x" })).failures).toEqual([]);
  });
});

describe("with the real control plane", () => {
  it("two data planes, only one sends traffic to a dying target: the other learns the fleet verdict and never routes there", async () => {
    const cp = await startControlPlane();
    const api = GatewayApi.of(cp);
    const nodes = ["fleet-dp-1", "fleet-dp-2"];
    const planes = await Promise.all(nodes.map((nodeId) => startObservedDataPlane({ controlPlane: cp.url, nodeId, token: cp.nodeToken, reportIntervalMs: 500 })));
    const t = await api.createTenant("fleet");
    const [good, dying] = await Promise.all([startSwitchTarget("fleet-good"), startSwitchTarget("fleet-dying")]);
    const up = await api.mustCreateUpstream(t, {
      name: "fleet",
      targets: [good, dying].map((x) => ({ host: "127.0.0.1", port: x.target.port })),
      health_check: { passive: { consecutive_failures: 2, base_ejection_ms: 300_000 } },
      retries: { count: 1 },
    });
    const rule = await api.mustCreateRule(t, { path: "/fleet/*", upstream_id: up.id, methods: ["GET"], strip_path: true });
    await api.waitForAcked(rule.revision, nodes);

    // One node sends traffic and sees the target die; the other sends nothing to it.
    const [p1, p3] = planes;
    const mark3 = p3.dp.proc.mark();
    await dying.target.close();
    const mark = p1.dp.proc.mark();
    const r = await sendRequests(p1.dp.url, 8, { path: "/fleet/x" });
    expect(r.failures).toEqual([]);
    await p1.dp.proc.waitForMsg("passive health state changed", { target: dying.key, state: "ejected" }, { since: mark });
    // The fleet verdict reaches the idle node.
    await p3.dp.proc.waitForMsg("fleet verdict changed", { target: dying.key, down: true }, { since: mark3, timeoutMs: 20_000 });
    const r3 = await sendRequests(p3.dp.url, 10, { path: "/fleet/x" });
    expect(r3.failures).toEqual([]);
    expect(r3.byTarget).toEqual({ "fleet-good": 10 });
    const m3 = await scrape(p3.metricsUrl);
    // Not a single attempt from the idle node went to the dead target.
    expect(series(m3, "gateway_upstream_requests_total", { backend: up.id, target: dying.key, code: "2xx" })).toBe(0);
    expect(series(m3, "gateway_upstream_failures_total", { backend: up.id, target: dying.key })).toBe(0);
    expect(series(m3, "gateway_target_state", { backend: up.id, target: dying.key, state: "unhealthy" })).toBe(1);

    // The API shows the fleet verdict and each node's view.
    const h = await api.call("GET", `/api/v1/tenants/${t.id}/upstreams/${up.id}/health`, { key: t.apiKey });
    expect(h.status).toBe(200);
    const view = (h.json.targets as { target: string; down?: boolean; nodes?: { node_id: string; passive_state: string }[] }[]).find((x) => x.target === dying.key)!;
    expect(view.down).toBe(true);
    const byNode = new Map((view.nodes ?? []).map((n) => [n.node_id, n.passive_state]));
    expect(byNode.get("fleet-dp-1")).toBe("ejected");
    expect(byNode.get("fleet-dp-2")).not.toBe("ejected");
  });
});
