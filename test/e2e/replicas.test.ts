/**
 * Control-plane high availability on Redis, with real processes: two `gateway control-plane
 * --store redis://...` replicas on one redis-server (AOF, appendfsync always), a data plane on each
 * (dp-a follows only replica 1, dp-b only replica 2) and one started with both URLs (dp-c).
 *
 * - A write on either replica reaches the data planes of both, and both report the same version.
 * - A replica SIGKILLed while both take writes loses no acknowledged write; dp-c fails over to the
 *   other replica and converges on its version; dp-a (no other URL) keeps serving until its replica
 *   is back, then converges too.
 * - Redis killed: writes answer 503, reads and proxy traffic go on from memory; Redis restarted:
 *   both replicas recover by themselves, nothing acknowledged is lost, everyone converges.
 *
 * Each replica lists only the data planes connected to it in GET /api/v1/nodes (the node registry
 * is per process); the configuration version is the same everywhere.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GatewayApi, type RuleView, type TenantCreds } from "../support/api.js";
import { secret, spawnGateway, startDataPlane, tempDir, type ControlPlane, type DataPlane } from "../support/processes.js";
import { RedisProcess } from "../support/redis-process.js";
import { startTarget, type Target } from "../support/targets.js";
import { onTeardown, teardown } from "../support/teardown.js";
import { sendRequests } from "../support/traffic.js";
import { waitFor } from "../support/wait.js";

afterAll(teardown);

const adminKey = secret("adm");
const nodeToken = secret("nt");
let redis: RedisProcess;

/** Starts `gateway control-plane --store redis://...` (on `port` for a restart) and waits until it listens. */
async function startReplica(name: string, opts: { port?: number; dataDir?: string } = {}): Promise<ControlPlane> {
  const dataDir = opts.dataDir ?? tempDir("gateway-replica-");
  const args = [
    "control-plane",
    "--store",
    redis.url,
    "--listen",
    `127.0.0.1:${opts.port ?? 0}`,
    "--data-dir",
    dataDir,
    "--admin-key",
    adminKey,
    "--node-token",
    nodeToken,
  ];
  const proc = spawnGateway(name, args);
  const rec = await proc.waitForMsg("control plane listening", {}, { timeoutMs: 20_000 });
  expect(rec.store).toBe(redis.url);
  const url = String(rec.url);
  return { proc, url, port: Number(new URL(url).port), dataDir, adminKey, nodeToken };
}

/** Connected node ids a replica lists. */
async function connectedNodes(api: GatewayApi): Promise<string[]> {
  return (await api.listNodes()).nodes
    .filter((n) => n.connected)
    .map((n) => n.node_id)
    .sort();
}

describe("two control-plane replicas on one Redis", () => {
  let cp1: ControlPlane;
  let cp2: ControlPlane;
  let api1: GatewayApi;
  let api2: GatewayApi;
  let dpA: DataPlane;
  let dpB: DataPlane;
  let dpC: DataPlane;
  let blue: Target;
  let green: Target;
  let tenant: TenantCreds;
  /** Every rule a replica acknowledged (201), with the revision it answered. */
  const acknowledged: RuleView[] = [];

  beforeAll(async () => {
    redis = await RedisProcess.start({ persistence: "aof-always" });
    onTeardown(() => redis.stop());
    [blue, green] = await Promise.all([startTarget("blue"), startTarget("green")]);
    [cp1, cp2] = await Promise.all([startReplica("replica-1"), startReplica("replica-2")]);
    api1 = GatewayApi.of(cp1);
    api2 = GatewayApi.of(cp2);
    [dpA, dpB, dpC] = await Promise.all([
      startDataPlane({ controlPlane: cp1.url, nodeId: "dp-a", token: nodeToken }),
      startDataPlane({ controlPlane: cp2.url, nodeId: "dp-b", token: nodeToken }),
      // Tries replica 1 first, the other on failure.
      startDataPlane({ controlPlane: [cp1.url, cp2.url], nodeId: "dp-c", token: nodeToken }),
    ]);
    await api1.waitForConnected(["dp-a", "dp-c"]);
    await api2.waitForConnected(["dp-b"]);
  });

  it("carries a write on either replica to the data planes of both, at the same version", async () => {
    tenant = await api1.createTenant("ha");
    const rule = await api2.mustCreateRule(tenant, { path: "/ha/*", targets: [{ url: blue.url }] });
    acknowledged.push(rule);
    await api1.waitForAcked(rule.revision, ["dp-a", "dp-c"]);
    await api2.waitForAcked(rule.revision, ["dp-b"]);
    for (const dp of [dpA, dpB, dpC]) expect((await sendRequests(dp.url, 4, { path: "/ha/x" })).byTarget).toEqual({ blue: 4 });

    const updated = await api1.mustUpdateRule(tenant, rule.id, { path: "/ha/*", targets: [{ url: green.url }], revision: rule.revision });
    expect(BigInt(updated.revision)).toBeGreaterThan(BigInt(rule.revision));
    acknowledged[0] = updated;
    const [view1, view2] = await Promise.all([api1.waitForAcked(updated.revision, ["dp-a", "dp-c"]), api2.waitForAcked(updated.revision, ["dp-b"])]);
    expect(view1.version).toBe(updated.revision);
    expect(view2.version).toBe(updated.revision);
    for (const view of [view1, view2]) {
      for (const n of view.nodes) expect(n.acked_version).toBe(updated.revision);
    }
    for (const dp of [dpA, dpB, dpC]) expect((await sendRequests(dp.url, 4, { path: "/ha/x" })).byTarget).toEqual({ green: 4 });

    // Each replica lists the data planes connected to it.
    expect(await connectedNodes(api1)).toEqual(["dp-a", "dp-c"]);
    expect(await connectedNodes(api2)).toEqual(["dp-b"]);
  });

  it("refuses a stale write on one replica after the other changed the resource, and the winner stays", async () => {
    const base = acknowledged[0];
    const stale = await api2.updateRule(tenant, base.id, { path: "/ha/*", targets: [{ url: blue.url }], revision: "1" });
    expect(stale.status).toBe(409);
    expect(stale.json.error.code).toBe("failed_precondition");
    expect((await api2.getRule(tenant, base.id)).json.revision).toBe(base.revision);
  });

  it("loses no acknowledged write when a replica is SIGKILLed under load; its data planes fail over and converge", async () => {
    const refused: string[] = [];
    let stop = false;
    /** One writer per replica, both at once, so their commits race in Redis. */
    const writer = async (api: GatewayApi, name: string) => {
      for (let i = 0; !stop && i < 200; i++) {
        const path = `/load/${name}/${i}/*`;
        const res = await api.createRule(tenant, { path, targets: [{ url: blue.url }] }).catch((err: Error) => err);
        if (res instanceof Error) return; // the replica is gone
        if (res.status === 201) acknowledged.push(res.json as RuleView);
        else refused.push(`${path}: ${res.status} ${res.text}`);
        if (acknowledged.length >= 41) stop = true;
      }
    };
    const load = Promise.all([writer(api1, "r1"), writer(api2, "r2")]);
    await waitFor(() => acknowledged.length >= 12, { what: "writes on both replicas" });
    await cp1.proc.kill9();
    await load;
    expect(acknowledged.length).toBeGreaterThanOrEqual(41);
    // A write that lost the race to the other replica on every attempt is refused as ABORTED
    // (retry), never answered with a server error.
    for (const r of refused) expect(r).toMatch(/: 409 .*"aborted"/);

    // Every acknowledged rule is in the shared store, with the revision it was acknowledged with.
    const listed = (await api2.listRules(tenant)).json.rules as RuleView[];
    const byId = new Map(listed.map((r) => [r.id, r.revision]));
    for (const rule of acknowledged) expect(byId.get(rule.id), `rule ${rule.path}`).toBe(rule.revision);

    // dp-c fails over to replica 2 and converges on its version; dp-b stays there.
    const version = await api2.currentVersion();
    await api2.waitForConnected(["dp-c"]);
    const view = await api2.waitForAcked(version, ["dp-b", "dp-c"]);
    expect(view.version).toBe(String(version));
    const latest = acknowledged[acknowledged.length - 1];
    const probe = latest.path.replace("*", "x");
    expect((await sendRequests(dpC.url, 3, { path: probe })).byTarget).toEqual({ blue: 3 });
    // dp-a knows no other replica: it keeps serving what it had.
    expect((await sendRequests(dpA.url, 3, { path: "/ha/x" })).byTarget).toEqual({ green: 3 });

    // Replica 1 restarts on its port from the shared store; dp-a reconnects and converges.
    cp1 = await startReplica("replica-1", { port: cp1.port, dataDir: cp1.dataDir });
    expect(await api1.currentVersion()).toBe(version);
    await api1.waitForAcked(version, ["dp-a"]);
    expect((await sendRequests(dpA.url, 3, { path: probe })).byTarget).toEqual({ blue: 3 });
  });

  it("answers 503 to writes while Redis is down, keeps serving reads and traffic, and recovers by itself", async () => {
    const before = await api2.currentVersion();
    const rulesBefore = ((await api2.listRules(tenant)).json.rules as RuleView[]).length;
    const marks = [cp1.proc.mark(), cp2.proc.mark()];
    await redis.kill();

    const down = await api1.createRule(tenant, { path: "/redis-down/*", targets: [{ url: blue.url }] });
    expect(down.status).toBe(503);
    expect(down.json.error.code).toBe("unavailable");
    expect(down.json.error.message).toContain(redis.url);
    const read = await api2.listRules(tenant);
    expect(read.status).toBe(200);
    expect(read.json.rules).toHaveLength(rulesBefore);
    for (const dp of [dpA, dpB, dpC]) expect((await sendRequests(dp.url, 3, { path: "/ha/x" })).failures).toEqual([]);
    await Promise.all(
      [cp1, cp2].map((cp, i) => cp.proc.waitForLog((r) => typeof r.msg === "string" && r.msg.includes("lost Redis"), { since: marks[i], what: "the outage" })),
    );

    await redis.restart();
    await Promise.all(
      [cp1, cp2].map((cp, i) => cp.proc.waitForLog((r) => typeof r.msg === "string" && r.msg.includes("reachable again"), { since: marks[i], what: "the recovery" })),
    );
    // Nothing acknowledged was lost (AOF, appendfsync always), and both replicas write again.
    expect(await api1.currentVersion()).toBe(before);
    let attempt = 0;
    const first = await waitFor(
      async () => {
        const res = await api2.createRule(tenant, { path: `/after-redis/${attempt++}/*`, targets: [{ url: green.url }] });
        return res.status === 201 ? (res.json as RuleView) : undefined;
      },
      { what: "replica 2 to write again" },
    );
    const second = await api1.mustCreateRule(tenant, { path: "/after-redis-1/*", targets: [{ url: green.url }] });
    expect(BigInt(second.revision)).toBeGreaterThan(BigInt(first.revision));
    await api1.waitForAcked(second.revision, ["dp-a"]);
    await api2.waitForAcked(second.revision, ["dp-b", "dp-c"]);
    expect(await api1.currentVersion()).toBe(BigInt(second.revision));
    expect(await api2.currentVersion()).toBe(BigInt(second.revision));
    const listed = (await api1.listRules(tenant)).json.rules as RuleView[];
    const ids = new Set(listed.map((r) => r.id));
    for (const rule of acknowledged) expect(ids.has(rule.id), `rule ${rule.path}`).toBe(true);
    for (const dp of [dpA, dpB, dpC]) expect((await sendRequests(dp.url, 3, { path: "/after-redis-1/x" })).byTarget).toEqual({ green: 3 });
  });
});
