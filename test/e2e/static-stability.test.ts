/**
 * Static stability (issue 7, point 4) between real processes: a data plane keeps its last applied
 * snapshot in `--snapshot-cache` and, restarted while the control plane is dead, serves it before
 * any control plane answers; without a cache it answers 503 no_config until its first snapshot; a
 * corrupt cache is ignored with a warning; and a data plane that loses the control plane keeps
 * serving and says so on `/healthz` and in `/metrics` (`--metrics-listen`).
 */
import { fromBinary } from "@bufbuild/protobuf";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SnapshotSchema } from "../../proto/gen/gateway/v1/snapshot_pb.js";
import { GatewayApi, type RuleView, type TenantCreds } from "../support/api.js";
import { header, httpRequest } from "../support/http.js";
import { DataPlane, restartControlPlane, spawnGateway, startControlPlane, tempDir, type ControlPlane } from "../support/processes.js";
import { refusedPort, startTarget, type Target } from "../support/targets.js";
import { teardown } from "../support/teardown.js";
import { sendRequests, TrafficLoop } from "../support/traffic.js";
import { waitFor } from "../support/wait.js";
import { scrape, series } from "./health-support.js";

afterAll(teardown);

/** A data plane with its admin listener (/healthz, /metrics). */
interface StableDataPlane {
  readonly dp: DataPlane;
  readonly metricsUrl: string;
}

/**
 * Starts `gateway data-plane` with `--metrics-listen 127.0.0.1:0` and, when given, `--snapshot-cache`;
 * waits for both listeners (not for a configuration: the point is what it does without one).
 */
async function startStableDataPlane(opts: { controlPlane: string; nodeId: string; token: string; cache?: string }): Promise<StableDataPlane> {
  const args = ["data-plane", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--node-id", opts.nodeId, "--token", opts.token];
  args.push("--control-plane", opts.controlPlane, "--log-level", "info");
  if (opts.cache !== undefined) args.push("--snapshot-cache", opts.cache);
  const proc = spawnGateway(opts.nodeId, args);
  const metrics = await proc.waitForMsg("metrics listening", {}, { timeoutMs: 20_000 });
  const listening = await proc.waitForMsg("data plane listening", {}, { timeoutMs: 20_000 });
  return { dp: new DataPlane(proc, String(listening.url), opts.nodeId), metricsUrl: String(metrics.url) };
}

/** GET /healthz: status code and body. */
async function healthz(metricsUrl: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await httpRequest(`${metricsUrl}/healthz`);
  return { status: res.status, body: res.json as Record<string, unknown> };
}

/** The version in the cache file, or undefined while there is no file. */
function cachedVersion(file: string): bigint | undefined {
  return existsSync(file) ? fromBinary(SnapshotSchema, readFileSync(file)).version : undefined;
}

/** Names of the resources in the cache file, sorted ("rule/<id>", "tenant/<id>", ...). */
function cachedResources(file: string): string[] {
  return fromBinary(SnapshotSchema, readFileSync(file)).resources.map((r) => r.name).sort();
}

/** Polls until the cache file holds `version` (it is written just after the snapshot is applied). */
function waitForCachedVersion(file: string, version: bigint | string): Promise<true> {
  const want = BigInt(version);
  return waitFor(() => cachedVersion(file) === want, { what: `${file} to hold version ${want}` });
}

describe("snapshot cache: a data plane restarted while the control plane is dead serves its cached configuration", () => {
  let cp: ControlPlane;
  let api: GatewayApi;
  let cached: Target, changed: Target;
  let tenant: TenantCreds;
  let rule: RuleView;
  let cacheFile: string;
  let second: StableDataPlane;

  beforeAll(async () => {
    cp = await startControlPlane({ name: "cache-control-plane" });
    api = GatewayApi.of(cp);
    [cached, changed] = await Promise.all([startTarget("cached"), startTarget("changed")]);
    tenant = await api.createTenant("cache");
    cacheFile = path.join(tempDir("gateway-cache-"), "snapshot.bin");
  });

  it("writes the applied snapshot to the cache file while connected", async () => {
    const first = await startStableDataPlane({ controlPlane: cp.url, nodeId: "cache-dp-1", token: cp.nodeToken, cache: cacheFile });
    expect(first.dp.proc.logs("serving cached snapshot")).toEqual([]);
    rule = await api.mustCreateRule(tenant, { path: "/cached/*", targets: [{ url: cached.url }] });
    await api.waitForAcked(rule.revision, [first.dp.nodeId]);
    expect((await sendRequests(first.dp.url, 10, { path: "/cached/a" })).byTarget).toEqual({ cached: 10 });
    await waitForCachedVersion(cacheFile, rule.revision);

    // The control plane crashes; then the data plane is stopped (as for an upgrade or a reboot).
    expect((await cp.proc.kill9()).signal).toBe("SIGKILL");
    await first.dp.proc.stop();
    expect(cachedVersion(cacheFile)).toBe(BigInt(rule.revision));
    expect(cachedResources(cacheFile)).toEqual([`rule/${rule.id}`, `tenant/${tenant.id}`]);
  });

  it("a new data plane with the same cache serves the cached rule before any control plane answers, and says it is disconnected", async () => {
    cached.clear();
    second = await startStableDataPlane({ controlPlane: cp.url, nodeId: "cache-dp-2", token: cp.nodeToken, cache: cacheFile });
    const proc = second.dp.proc;
    // Applied before the proxy listens: its first request already has a configuration.
    const serving = proc.logs("serving cached snapshot until the control plane answers");
    expect(serving).toHaveLength(1);
    expect(serving[0]).toMatchObject({ version: rule.revision, file: cacheFile });
    expect(proc.records.indexOf(serving[0])).toBeLessThan(proc.records.indexOf(proc.logs("data plane listening")[0]));

    const r = await sendRequests(second.dp.url, 20, { path: "/cached/b" });
    expect(r.failures).toEqual([]);
    expect(r.byTarget).toEqual({ cached: 20 });
    expect(cached.requests.map((q) => q.url)).toEqual(Array(20).fill("/cached/b"));

    const h = await healthz(second.metricsUrl);
    expect(h.status).toBe(200);
    expect(h.body).toMatchObject({ status: "control_plane_lost", version: rule.revision, control_plane_connected: false, last_contact_ms: null });
    expect(series(await scrape(second.metricsUrl), "gateway_control_plane_connected")).toBe(0);
    expect(series(await scrape(second.metricsUrl), "gateway_config_version")).toBe(Number(rule.revision));

    // It tells the operator why: the control plane is unreachable, and it serves what it has.
    const lost = await proc.waitForMsg("lost control plane; serving the last applied configuration", { controlPlane: cp.url });
    expect(lost.version).toBe(rule.revision);
    expect(proc.logs("applied snapshot")).toEqual([]);
  });

  it("reconnects to the control plane restarted on the same port and data dir, and converges on new changes", async () => {
    const mark = second.dp.proc.mark();
    cp = await restartControlPlane(cp);
    const view = await api.waitForConnected([second.dp.nodeId], { timeoutMs: 30_000 });
    expect(view.version).toBe(rule.revision);
    await second.dp.proc.waitForMsg("connected to control plane", { controlPlane: cp.url }, { since: mark, timeoutMs: 30_000 });
    await waitFor(async () => (await healthz(second.metricsUrl)).body.status === "ok", { what: "/healthz to say ok" });
    expect(series(await scrape(second.metricsUrl), "gateway_control_plane_connected")).toBe(1);

    const update = await api.mustUpdateRule(tenant, rule.id, { path: "/cached/*", targets: [{ url: changed.url }], revision: rule.revision });
    expect(BigInt(update.revision)).toBe(BigInt(rule.revision) + 1n);
    await api.waitForAcked(update.revision, [second.dp.nodeId]);
    const r = await sendRequests(second.dp.url, 10, { path: "/cached/c" });
    expect(r.failures).toEqual([]);
    expect(r.byTarget).toEqual({ changed: 10 });
    // The cached snapshot is the delta base: the control plane sends a delta from the cached
    // version and the node applies it on top. Without the seed the node NACKs the delta (base
    // mismatch) and gets a full resync, which only the control plane's log shows.
    const applied = await second.dp.waitForApplied(BigInt(update.revision));
    expect(applied.resources).toBe(2);
    expect(second.dp.proc.logs("refused snapshot")).toEqual([]);
    expect(cp.proc.logs("data plane refused a snapshot")).toEqual([]);
    // The new version replaced the cached one on disk, whole.
    await waitForCachedVersion(cacheFile, update.revision);
    expect(cachedResources(cacheFile)).toEqual([`rule/${rule.id}`, `tenant/${tenant.id}`]);
    const h = await healthz(second.metricsUrl);
    expect(h.body).toMatchObject({ status: "ok", version: update.revision, control_plane_connected: true });
  });
});

describe("no cache and no control plane: 503 no_config until the first snapshot", () => {
  let stable: StableDataPlane;
  let controlPlane: string;

  beforeAll(async () => {
    controlPlane = `http://127.0.0.1:${await refusedPort()}`;
    stable = await startStableDataPlane({ controlPlane, nodeId: "nocfg-dp", token: "nocfg-token" });
  });

  it("answers 503 no_config with Retry-After on the proxy and on /healthz, and logs that it cannot reach the control plane", async () => {
    const res = await httpRequest(`${stable.dp.url}/anything`);
    expect(res.status).toBe(503);
    expect(res.json.error.code).toBe("no_config");
    expect(res.json.error.message).toContain("configuration");
    expect(header(res, "retry-after")).toMatch(/^[1-9][0-9]*$/);

    const h = await healthz(stable.metricsUrl);
    expect(h.status).toBe(503);
    expect(h.body).toMatchObject({ status: "no_config", version: "0", control_plane_connected: false, last_contact_ms: null });
    expect(series(await scrape(stable.metricsUrl), "gateway_control_plane_connected")).toBe(0);

    const log = await stable.dp.proc.waitForMsg("cannot reach the control plane; no configuration yet (answering 503)", { controlPlane });
    expect(String(log.error)).not.toBe("");
    // Still 503 after it has tried: nothing was made up in the meantime.
    expect((await httpRequest(`${stable.dp.url}/anything`)).status).toBe(503);
  });
});

describe("a corrupt snapshot cache is ignored with a warning", () => {
  let cp: ControlPlane;
  let api: GatewayApi;
  let target: Target;

  beforeAll(async () => {
    cp = await startControlPlane({ name: "corrupt-control-plane" });
    api = GatewayApi.of(cp);
    target = await startTarget("fresh");
  });

  it("starts, warns about the file, gets its configuration from the control plane and rewrites the cache", async () => {
    const tenant = await api.createTenant("corrupt");
    const rule = await api.mustCreateRule(tenant, { path: "/fresh/*", targets: [{ url: target.url }] });
    const cacheFile = path.join(tempDir("gateway-cache-"), "snapshot.bin");
    // 'n' (0x6e) is field 13 with wire type 6, which does not exist: no protobuf decoder accepts it.
    writeFileSync(cacheFile, Buffer.concat([Buffer.from("not a snapshot\n"), Buffer.from([0xff, 0xfe, 0x00, 0x13, 0x37, 0xff])]));

    const stable = await startStableDataPlane({ controlPlane: cp.url, nodeId: "corrupt-dp", token: cp.nodeToken, cache: cacheFile });
    const warning = await stable.dp.proc.waitForMsg("ignoring unusable snapshot cache", { file: cacheFile });
    expect(warning.level).toBe(40);
    expect(String(warning.err)).toContain("is not a snapshot");
    expect(stable.dp.proc.logs("serving cached snapshot")).toEqual([]);

    await api.waitForAcked(rule.revision, [stable.dp.nodeId]);
    const r = await sendRequests(stable.dp.url, 10, { path: "/fresh/x" });
    expect(r.failures).toEqual([]);
    expect(r.byTarget).toEqual({ fresh: 10 });
    expect((await healthz(stable.metricsUrl)).body).toMatchObject({ status: "ok", version: rule.revision, control_plane_connected: true });
    await waitForCachedVersion(cacheFile, rule.revision);
  });
});

describe("a connected data plane that loses the control plane keeps serving and says so", () => {
  let cp: ControlPlane;
  let api: GatewayApi;
  let target: Target;
  let stable: StableDataPlane;
  let rule: RuleView;

  beforeAll(async () => {
    cp = await startControlPlane({ name: "lost-control-plane" });
    api = GatewayApi.of(cp);
    target = await startTarget("steady");
    stable = await startStableDataPlane({ controlPlane: cp.url, nodeId: "lost-dp", token: cp.nodeToken });
    const tenant = await api.createTenant("lost");
    rule = await api.mustCreateRule(tenant, { path: "/steady/*", targets: [{ url: target.url }] });
    await api.waitForAcked(rule.revision, [stable.dp.nodeId]);
  });

  it("serves every request while the control plane is down, /healthz says control_plane_lost, and recovers when it returns", async () => {
    expect((await healthz(stable.metricsUrl)).body).toMatchObject({ status: "ok", control_plane_connected: true, version: rule.revision });
    expect(series(await scrape(stable.metricsUrl), "gateway_control_plane_connected")).toBe(1);

    const traffic = new TrafficLoop([stable.dp.url], { path: "/steady/x" });
    let result;
    try {
      await traffic.waitForMore(20);
      const mark = stable.dp.proc.mark();
      await cp.proc.kill9();
      const lost = await stable.dp.proc.waitForMsg("lost control plane; serving the last applied configuration", {}, { since: mark });
      expect(lost.version).toBe(rule.revision);
      await traffic.waitForMore(300);

      const h = await healthz(stable.metricsUrl);
      expect(h.status).toBe(200);
      expect(h.body).toMatchObject({ status: "control_plane_lost", version: rule.revision, control_plane_connected: false });
      expect(typeof h.body.last_contact_ms).toBe("number");
      expect(series(await scrape(stable.metricsUrl), "gateway_control_plane_connected")).toBe(0);
      await traffic.waitForMore(20);
    } finally {
      result = await traffic.stop();
    }
    expect(result.failures).toEqual([]);
    expect(result.byTarget).toEqual({ steady: result.total });
    expect(result.total).toBeGreaterThanOrEqual(340);

    // Back: the same data plane reconnects and says so again.
    const mark = stable.dp.proc.mark();
    cp = await restartControlPlane(cp);
    await api.waitForConnected([stable.dp.nodeId], { timeoutMs: 30_000 });
    await stable.dp.proc.waitForMsg("connected to control plane", {}, { since: mark, timeoutMs: 30_000 });
    await waitFor(async () => (await healthz(stable.metricsUrl)).body.status === "ok", { what: "/healthz to say ok again" });
    expect(series(await scrape(stable.metricsUrl), "gateway_control_plane_connected")).toBe(1);
  });
});
