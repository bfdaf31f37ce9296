/**
 * Fleet-wide exact distribution end to end: one control plane, four data-plane processes started
 * with --redis on the test's own redis-server, real HTTP targets and a seed-000 90/10 rule. Traffic
 * spread over the four data planes splits exactly 900/100; killing redis-server mid-run fails no
 * client request (the data planes log their fallback to random weighted selection), and once it is
 * back they log their recovery and splits are exact again. Deleting the rule removes its sequence.
 */
import type { Redis } from "ioredis";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { GatewayApi, type RuleView, type TenantCreds } from "../support/api.js";
import { httpRequest } from "../support/http.js";
import { DataPlane, spawnGateway, startControlPlane, type ControlPlane } from "../support/processes.js";
import { startTarget, type Target } from "../support/targets.js";
import { teardown } from "../support/teardown.js";
import { TrafficLoop } from "../support/traffic.js";
import { waitFor } from "../support/wait.js";
import { RedisServer } from "../unit/data-plane/counters/redis-server.js";

let redis: RedisServer;
let inspect: Redis;
let cp: ControlPlane;
let api: GatewayApi;
let dps: DataPlane[];
let nodeIds: string[];
let stable: Target;
let canary: Target;
let tenant: TenantCreds;
let rule: RuleView;

/** `gateway data-plane ... --redis URL [--redis-lease N]`, started and listening with its counters active. */
async function startRedisDataPlane(nodeId: string, lease?: number): Promise<DataPlane> {
  const args = ["data-plane", "--listen", "127.0.0.1:0", "--control-plane", cp.url, "--node-id", nodeId, "--token", cp.nodeToken, "--redis", redis.url];
  args.push("--metrics-listen", "127.0.0.1:0");
  if (lease !== undefined) args.push("--redis-lease", String(lease));
  const proc = spawnGateway(nodeId, args);
  // The data plane waits for Redis before it listens, so "active" comes first.
  await proc.waitForMsg("redis counters active", {}, { timeoutMs: 20_000 });
  const metrics = await proc.waitForMsg("metrics listening", {}, { timeoutMs: 20_000 });
  const rec = await proc.waitForMsg("data plane listening", {}, { timeoutMs: 20_000 });
  metricsUrls.set(nodeId, String(metrics.url));
  return new DataPlane(proc, String(rec.url), nodeId);
}

const metricsUrls = new Map<string, string>();

/** The value of the data plane's gateway_counters_fallback gauge. */
async function fallbackGauge(dp: DataPlane): Promise<number> {
  const res = await httpRequest(`${metricsUrls.get(dp.nodeId)}/metrics`);
  const m = /^gateway_counters_fallback (\d+)$/m.exec(res.text);
  if (m === null) throw new Error(`no gateway_counters_fallback in /metrics of ${dp.nodeId}`);
  return Number(m[1]);
}

/** `n` sequential requests, taking the data planes in turn; counts answers by target. */
async function spread(n: number, path: string): Promise<{ byTarget: Record<string, number>; order: string[]; failures: string[] }> {
  const byTarget: Record<string, number> = {};
  const order: string[] = [];
  const failures: string[] = [];
  for (let i = 0; i < n; i++) {
    const url = `${dps[i % dps.length].url}${path}`;
    const res = await httpRequest(url).catch((err: Error) => err);
    if (res instanceof Error || res.status !== 200) {
      failures.push(`${url}: ${res instanceof Error ? res.message : `${res.status} ${res.text}`}`);
      continue;
    }
    const name = String(res.headers["x-target"]);
    byTarget[name] = (byTarget[name] ?? 0) + 1;
    order.push(name);
  }
  return { byTarget, order, failures };
}

beforeAll(async () => {
  redis = await RedisServer.start();
  inspect = redis.client();
  cp = await startControlPlane();
  api = GatewayApi.of(cp);
  [stable, canary] = await Promise.all([startTarget("stable"), startTarget("canary")]);
  nodeIds = ["redis-dp-1", "redis-dp-2", "redis-dp-3", "redis-dp-4"];
  dps = await Promise.all(nodeIds.map((id) => startRedisDataPlane(id)));
  tenant = await api.createTenant("redis-counters");
  // Seed 000's weighted distribution body.
  rule = await api.mustCreateRule(tenant, {
    path: "/api/*",
    targets: [
      { url: stable.url, weight: 90 },
      { url: canary.url, weight: 10 },
    ],
    methods: ["GET", "POST"],
    strip_path: true,
  });
  expect(rule.warnings).toEqual([]);
  await api.waitForAcked(rule.revision, nodeIds);
});

afterAll(async () => {
  try {
    await teardown();
  } finally {
    await redis.stop();
  }
});

beforeEach(() => {
  stable.clear();
  canary.clear();
});

describe("four data planes sharing Redis counters", () => {
  it("split 1,000 requests spread round-robin over them exactly 900/100, and 9/1 in every cycle of 10", async () => {
    const r = await spread(1000, "/api/x");
    expect(r.failures).toEqual([]);
    expect(r.byTarget).toEqual({ stable: 900, canary: 100 });
    for (let c = 0; c < 100; c++) expect(r.order.slice(c * 10, c * 10 + 10).filter((t) => t === "canary")).toHaveLength(1);
    // What the targets saw agrees with what the clients saw.
    expect([stable.requests.length, canary.requests.length]).toEqual([900, 100]);
    // One shared sequence for the rule, named by its id and revision, with a TTL.
    const key = `gw:seq:{rule/${rule.id}}:${rule.revision}`;
    expect(await inspect.keys("gw:seq:*")).toEqual([key]);
    expect(await inspect.get(key)).toBe("1000");
    expect(await inspect.pttl(key)).toBeGreaterThan(0);
  });

  it("fail no request when redis-server is killed mid-run, report fallback, and resume exact counting by themselves", async () => {
    const marks = dps.map((dp) => dp.proc.mark());
    const loop = new TrafficLoop(
      dps.map((dp) => dp.url),
      { path: "/api/loop" },
    );
    try {
      await loop.waitForMore(100);
      await redis.kill();
      await Promise.all(dps.map((dp, i) => dp.proc.waitForMsg("redis counters unavailable", {}, { since: marks[i] })));
      // The fallback shows in the metrics too.
      for (const dp of dps) expect(await fallbackGauge(dp)).toBe(1);
      await loop.waitForMore(400);
      await redis.restart();
      await Promise.all(dps.map((dp, i) => dp.proc.waitForMsg("redis counters recovered", {}, { since: marks[i] })));
      for (const dp of dps) expect(await fallbackGauge(dp)).toBe(0);
      await loop.waitForMore(100);
    } finally {
      const result = await loop.stop();
      expect(result.failures).toEqual([]);
      // Random by weight while Redis was away: both sides kept receiving traffic.
      expect(result.byTarget.stable).toBeGreaterThan(0);
      expect(result.byTarget.canary).toBeGreaterThan(0);
    }
    // Back to counting: any 1,000 consecutive positions are 100 whole cycles, so 900/100 exactly.
    const r = await spread(1000, "/api/after");
    expect(r.failures).toEqual([]);
    expect(r.byTarget).toEqual({ stable: 900, canary: 100 });
  });

  it("with --redis-lease, answer from leased positions: one INCRBY per half block, not one per request", async () => {
    const leased = await startRedisDataPlane("redis-dp-lease", 20);
    await api.waitForAcked(rule.revision, [leased.nodeId]);
    const key = `gw:seq:{rule/${rule.id}}:${rule.revision}`;
    const before = Number(await inspect.get(key));
    await inspect.config("RESETSTAT");
    const r = { stable: 0, canary: 0 } as Record<string, number>;
    for (let i = 0; i < 200; i++) {
      const res = await httpRequest(`${leased.url}/api/lease`);
      expect(res.status).toBe(200);
      r[String(res.headers["x-target"])]++;
    }
    // Alone on the sequence, its blocks are contiguous: 200 consecutive positions, 20 whole cycles.
    expect(r).toEqual({ stable: 180, canary: 20 });
    const calls = Number(/cmdstat_incrby:calls=(\d+)/.exec(await inspect.info("commandstats"))?.[1] ?? 0);
    // Topped up when half of the 20 held positions are used: about one INCRBY per 10 requests.
    expect(calls).toBeGreaterThanOrEqual(10);
    expect(calls).toBeLessThanOrEqual(25);
    // It holds at most 20 positions it has not used yet.
    expect(Number(await inspect.get(key)) - before - 200).toBeLessThanOrEqual(20);
    await leased.proc.stop();
  });

  it("delete the rule's sequence when the rule is deleted", async () => {
    await spread(4, "/api/before-delete");
    const key = `gw:seq:{rule/${rule.id}}:${rule.revision}`;
    expect(await inspect.exists(key)).toBe(1);
    const res = await api.deleteRule(tenant, rule.id);
    expect([200, 204]).toContain(res.status);
    await api.waitForConverged(nodeIds);
    await waitFor(async () => (await inspect.exists(key)) === 0, { what: `${key} to be deleted` });
    expect(await inspect.keys("gw:seq:*")).toEqual([]);
  });
});
