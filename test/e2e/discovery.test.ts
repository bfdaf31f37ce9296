/**
 * The discovery stream between real processes: a data plane refuses (NACKs) a snapshot it cannot
 * compile and keeps serving the previous one, and data planes keep serving while the control plane
 * is killed, then reconnect to its restart, which resumes the store and versions where they were.
 */
import { create } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StreamResponseSchema } from "../../proto/gen/gateway/v1/discovery_pb.js";
import { GatewayApi, type RuleView, type TenantCreds } from "../support/api.js";
import { buildSnapshot, FakeControlPlane, type FakeStream } from "../support/fake-control-plane.js";
import { restartControlPlane, startControlPlane, startDataPlane, type ControlPlane, type DataPlane } from "../support/processes.js";
import { startTarget, type Target } from "../support/targets.js";
import { teardown } from "../support/teardown.js";
import { sendRequests, TrafficLoop } from "../support/traffic.js";

afterAll(teardown);

describe("NACK: a data plane refuses a snapshot it cannot compile", () => {
  const token = "nack-node-token";
  let fake: FakeControlPlane;
  let dp: DataPlane;
  let stream: FakeStream;
  let oldTarget: Target;
  let newTarget: Target;

  const tenant = { id: "ten_nack", name: "nack" };
  const goodRule = (url: string) => ({ id: "rule_nack", tenantId: tenant.id, path: "/svc/*", methods: ["GET"], targets: [{ url }] });

  beforeAll(async () => {
    [oldTarget, newTarget] = await Promise.all([startTarget("old"), startTarget("new")]);
    fake = await FakeControlPlane.start();
    dp = await startDataPlane({ controlPlane: fake.url, nodeId: "nack-dp", token });
    stream = await fake.nextStream();
  });

  it("opens the stream with Hello and the node token as a Bearer authorization header", () => {
    expect(stream.requestHeader.get("authorization")).toBe(`Bearer ${token}`);
    expect(stream.hello?.nodeId).toBe("nack-dp");
    expect(stream.hello?.lastAppliedVersion).toBe(0n);
  });

  it("ACKs a valid snapshot with its nonce and serves it", async () => {
    const answer = await stream.pushAndAwaitAnswer(buildSnapshot(1n, { tenants: [tenant], rules: [goodRule(oldTarget.url)] }));
    expect(answer).toEqual({ kind: "ack", version: 1n });
    await dp.waitForApplied(1n);
    const r = await sendRequests(dp.url, 10, { path: "/svc/a" });
    expect(r.byTarget).toEqual({ old: 10 });
  });

  it("NACKs a rule whose path lacks the leading '/', naming the field, and keeps serving version 1", async () => {
    const mark = dp.proc.mark();
    const bad = buildSnapshot(2n, { tenants: [tenant], rules: [{ ...goodRule(newTarget.url), path: "svc/*" }] });
    const answer = await stream.pushAndAwaitAnswer(bad);
    expect(answer.kind).toBe("nack");
    if (answer.kind !== "nack") return;
    expect(answer.version).toBe(2n);
    expect(answer.appliedVersion).toBe(1n);
    expect(answer.error).toContain("rule/rule_nack.path");
    expect(answer.error).toMatch(/must start with "\/"/);

    const log = await dp.proc.waitForMsg("refused snapshot", {}, { since: mark });
    expect(log.version).toBe("2");
    expect(String(log.err)).toContain("rule/rule_nack.path");

    const r = await sendRequests(dp.url, 10, { path: "/svc/a" });
    expect(r.failures).toEqual([]);
    expect(r.byTarget).toEqual({ old: 10 });
    expect(newTarget.requests).toHaveLength(0);
  });

  it("NACKs a rule that references a missing upstream, naming the field", async () => {
    const bad = buildSnapshot(3n, { tenants: [tenant], rules: [{ ...goodRule(""), targets: [], upstreamId: "up_missing" }] });
    const answer = await stream.pushAndAwaitAnswer(bad);
    expect(answer.kind).toBe("nack");
    if (answer.kind !== "nack") return;
    expect(answer.version).toBe(3n);
    expect(answer.appliedVersion).toBe(1n);
    expect(answer.error).toContain("rule/rule_nack.upstream_id");
    expect(answer.error).toContain("up_missing");
    expect((await sendRequests(dp.url, 5, { path: "/svc/b" })).byTarget).toEqual({ old: 5 });
  });

  it("NACKs a delta computed from another version (logged and counted), and applies one from its own", async () => {
    const newRule = buildSnapshot(9n, { rules: [goodRule(newTarget.url)] }).resources;
    const delta = (nonce: string, baseVersion: bigint) =>
      create(StreamResponseSchema, { nonce, kind: { case: "delta", value: { baseVersion, version: 9n, upserted: newRule, removed: [] } } });
    const answerTo = (nonce: string) => stream.waitForRequest((r) => (r.kind.case === "ack" || r.kind.case === "nack") && r.kind.value.nonce === nonce);

    const mark = dp.proc.mark();
    stream.send(delta("delta-wrong-base", 7n));
    const refused = await answerTo("delta-wrong-base");
    expect(refused.kind.case).toBe("nack");
    expect(refused.kind.case === "nack" && refused.kind.value.error).toMatch(/delta from version 7 does not apply to version 1/);
    const log = await dp.proc.waitForMsg("refused delta", {}, { since: mark });
    expect(log.served).toBe("1");
    expect((await sendRequests(dp.url, 5, { path: "/svc/c" })).byTarget).toEqual({ old: 5 });

    stream.send(delta("delta-right-base", 1n));
    const applied = await answerTo("delta-right-base");
    expect(applied.kind.case).toBe("ack");
    await dp.waitForApplied(9n);
    expect((await sendRequests(dp.url, 5, { path: "/svc/d" })).byTarget).toEqual({ new: 5 });
  });

  it("still ACKs and applies the next valid snapshot after refusing two", async () => {
    const answer = await stream.pushAndAwaitAnswer(buildSnapshot(4n, { tenants: [tenant], rules: [goodRule(newTarget.url)] }));
    expect(answer).toEqual({ kind: "ack", version: 4n });
    const r = await sendRequests(dp.url, 10, { path: "/svc/c" });
    expect(r.byTarget).toEqual({ new: 10 });
    expect(dp.proc.logs("refused snapshot").map((l) => l.version)).toEqual(["2", "3"]);
  });
});

describe("control plane killed while traffic flows", () => {
  let cp: ControlPlane;
  let api: GatewayApi;
  let dps: DataPlane[];
  let nodeIds: string[];
  let k1: Target, k2: Target;
  let tenant: TenantCreds;
  let live: RuleView;

  beforeAll(async () => {
    cp = await startControlPlane({ name: "ha-control-plane" });
    api = GatewayApi.of(cp);
    [k1, k2] = await Promise.all([startTarget("k1"), startTarget("k2")]);
    dps = await Promise.all(["ha-dp-1", "ha-dp-2"].map((nodeId) => startDataPlane({ controlPlane: cp.url, nodeId, token: cp.nodeToken })));
    nodeIds = dps.map((d) => d.nodeId);
    tenant = await api.createTenant("ha");
    live = await api.mustCreateRule(tenant, { path: "/live/*", targets: [{ url: k1.url }, { url: k2.url }] });
    await api.waitForAcked(live.revision, nodeIds);
  });

  it("data planes serve without a failure while it is down; its restart keeps every acknowledged write and the version, and new changes flow again", async () => {
    // A burst of concurrent writes, each acknowledged (201) just before the crash: all must survive it.
    const burst = await Promise.all(
      Array.from({ length: 20 }, (_, i) => api.mustCreateRule(tenant, { path: `/burst/${i}/*`, targets: [{ url: k1.url }] })),
    );
    const acknowledged = new Map<string, string>([[live.id, live.revision], ...burst.map((r): [string, string] => [r.id, r.revision])]);
    const versionBefore = await api.currentVersion();
    expect(versionBefore).toBe(BigInt(Math.max(...[...acknowledged.values()].map(Number))));
    await api.waitForAcked(versionBefore, nodeIds);

    const traffic = new TrafficLoop(dps.map((d) => d.url), { path: "/live/x" });
    let total;
    try {
      await traffic.waitForMore(20);
      const marks = dps.map((d) => d.proc.mark());
      const killed = await cp.proc.kill9();
      expect(killed.signal).toBe("SIGKILL");

      // Both data planes noticed the loss, and traffic keeps flowing through both meanwhile.
      await Promise.all(dps.map((d, i) => d.proc.waitForMsg("lost control plane", {}, { since: marks[i] })));
      await traffic.waitForMore(200);
      expect(traffic.failures).toEqual([]);

      cp = await restartControlPlane(cp);
      expect(new URL(cp.url).port).toBe(String(cp.port));
      const view = await api.waitForConnected(nodeIds, { timeoutMs: 30_000 });
      for (const n of view.nodes) expect(BigInt(n.acked_version)).toBe(versionBefore);

      // The version resumed where it was, and the store kept every acknowledged write as it was.
      expect(BigInt(view.version)).toBe(versionBefore);
      const rules = await api.listRules(tenant);
      expect(rules.status).toBe(200);
      const stored = new Map<string, string>(rules.json.rules.map((r: RuleView) => [r.id, r.revision]));
      expect(stored).toEqual(acknowledged);

      // A change after the restart gets a newer version and reaches both data planes.
      const changed = await api.mustUpdateRule(tenant, live.id, { path: "/live/*", targets: [{ url: k2.url }], revision: live.revision });
      expect(BigInt(changed.revision)).toBe(versionBefore + 1n);
      await api.waitForAcked(changed.revision, nodeIds);
      // The one request that may have been in flight during the switch finishes before counting.
      await traffic.waitForMore(1);
      k1.clear();
      await traffic.waitForMore(20);
    } finally {
      total = await traffic.stop();
    }
    // Not one request failed, before, during or after the outage.
    expect(total.failures).toEqual([]);
    expect(total.total).toBeGreaterThan(240);
    for (const dp of dps) {
      expect((await sendRequests(dp.url, 20, { path: "/live/y" })).byTarget).toEqual({ k2: 20 });
    }
    // The requests after the change all went to k2 on both data planes.
    expect(k1.requests).toHaveLength(0);
  });
});

describe("a data plane that cannot join", () => {
  it("with a wrong node token is not listed, and logs why it cannot connect", async () => {
    const cp = await startControlPlane({ name: "token-control-plane" });
    const api = GatewayApi.of(cp);
    const dp = await startDataPlane({ controlPlane: cp.url, nodeId: "wrong-token-dp", token: "not-the-token" });
    // An operator must be able to tell from the data plane's log why it serves no configuration.
    const log = await dp.proc.waitForLog((r) => (r.level ?? 0) >= 40 && /unauthenticated|token/i.test(JSON.stringify(r)), {
      what: "a warning that the control plane refused the node token",
      timeoutMs: 10_000,
    });
    expect(JSON.stringify(log)).toMatch(/token/i);
    expect((await api.listNodes()).nodes).toEqual([]);
    const res = await sendRequests(dp.url, 1, { path: "/anything" });
    expect(res.statuses).toEqual({ 503: 1 });
  });
});
