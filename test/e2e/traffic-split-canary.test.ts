/**
 * Seed 002's canary patterns end to end, through a real control plane, data plane and targets:
 * the one-line header canary (X-Canary: true, X-Version: v2) and query opt-in (?use_canary=true),
 * a weighted 95/5 canary that is exact per cycle, a sticky split by user (a share of users, not of
 * requests, sees the canary; each user always lands on the same side; raising the canary only moves
 * users into it), and a hostile regex that cannot stall the proxy (RE2, linear time).
 *
 * "v1" is the stable service and "v2" the canary, as in seed 002's example workflow.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GatewayApi, type RuleView, type TenantCreds, type UpstreamView } from "../support/api.js";
import { httpRequest } from "../support/http.js";
import { startControlPlane, startDataPlane, type ControlPlane, type DataPlane } from "../support/processes.js";
import { startTarget, type Target } from "../support/targets.js";
import { teardown } from "../support/teardown.js";
import { sendRequests, type TrafficOptions } from "../support/traffic.js";

let cp: ControlPlane;
let api: GatewayApi;
let dp: DataPlane;
let tenant: TenantCreds;
let v1: Target, v2: Target, other: Target;
/** The canary service as an upstream object. */
let canaryUp: UpstreamView;

beforeAll(async () => {
  cp = await startControlPlane({ name: "canary-control-plane" });
  api = GatewayApi.of(cp);
  [v1, v2, other] = await Promise.all([startTarget("v1"), startTarget("v2"), startTarget("other")]);
  dp = await startDataPlane({ controlPlane: cp.url, nodeId: "canary-dp", token: cp.nodeToken });
  tenant = await api.createTenant("canary");
  canaryUp = await api.mustCreateUpstream(tenant, { name: "service-v2", targets: [{ host: "127.0.0.1", port: v2.port }] });
});

afterAll(teardown);

/** Creates a rule and waits until the data plane serves it. */
async function serve(body: Record<string, unknown>): Promise<RuleView> {
  const rule = await api.mustCreateRule(tenant, body);
  await api.waitForAcked(rule.revision, [dp.nodeId]);
  return rule;
}

async function hits(n: number, opts: TrafficOptions): Promise<Record<string, number>> {
  const r = await sendRequests(dp.url, n, opts);
  expect(r.failures).toEqual([]);
  return r.byTarget;
}

/** The target that answered one request. */
async function side(path: string, headers: Record<string, string> = {}): Promise<string> {
  const res = await httpRequest(`${dp.url}${path}`, { headers });
  expect(res.status, res.text).toBe(200);
  return res.text;
}

describe("header and query canary shortcut (seed 002)", () => {
  beforeAll(async () => {
    await serve({ path: "/x-canary/*", targets: [{ url: v1.url }], canary: { header: "X-Canary", upstream_id: canaryUp.id } });
    await serve({ path: "/x-version/*", targets: [{ url: v1.url }], canary: { header: "X-Version", header_value: "v2", targets: [{ url: v2.url }] } });
    await serve({ path: "/opt-in/*", targets: [{ url: v1.url }], canary: { query: "use_canary", upstream_id: canaryUp.id } });
  });

  it('X-Canary: true → v2 (header_value defaults to "true"); false or absent → v1', async () => {
    expect(await hits(10, { path: "/x-canary/a", headers: { "X-Canary": "true" } })).toEqual({ v2: 10 });
    expect(await hits(10, { path: "/x-canary/a", headers: { "X-Canary": "false" } })).toEqual({ v1: 10 });
    expect(await hits(10, { path: "/x-canary/a" })).toEqual({ v1: 10 });
  });

  it("the header name is case-insensitive (x-canary: true)", async () => {
    expect(await side("/x-canary/a", { "x-canary": "true" })).toBe("v2");
  });

  it("X-Version: v2 → v2 (inline canary targets); X-Version: v1 or none → v1", async () => {
    expect(await hits(10, { path: "/x-version/a", headers: { "X-Version": "v2" } })).toEqual({ v2: 10 });
    expect(await hits(10, { path: "/x-version/a", headers: { "X-Version": "v1" } })).toEqual({ v1: 10 });
    expect(await hits(10, { path: "/x-version/a" })).toEqual({ v1: 10 });
  });

  it("?use_canary=true → v2; ?use_canary=false, another parameter or none → v1", async () => {
    expect(await hits(10, { path: "/opt-in/a?use_canary=true" })).toEqual({ v2: 10 });
    expect(await hits(10, { path: "/opt-in/a?x=1&use_canary=true" })).toEqual({ v2: 10 });
    expect(await hits(10, { path: "/opt-in/a?use_canary=false" })).toEqual({ v1: 10 });
    expect(await hits(10, { path: "/opt-in/a?canary=true" })).toEqual({ v1: 10 });
    expect(await hits(10, { path: "/opt-in/a" })).toEqual({ v1: 10 });
  });

  it("the canary shortcut is evaluated before traffic_split", async () => {
    await serve({
      path: "/both/*",
      targets: [{ url: v1.url }],
      canary: { header: "X-Canary", upstream_id: canaryUp.id },
      traffic_split: { rules: [{ weighted_upstreams: [{ upstream: { nodes: { [`127.0.0.1:${other.port}`]: 1 } } }] }] },
    });
    expect(await hits(10, { path: "/both/a", headers: { "X-Canary": "true" } })).toEqual({ v2: 10 });
    expect(await hits(10, { path: "/both/a" })).toEqual({ other: 10 });
  });
});

describe("weighted canary: 95% stable, 5% canary (seed 002's weighted routing)", () => {
  it("exactly 95 and 5 in every cycle of 100 requests", async () => {
    await serve({
      path: "/weighted/*",
      targets: [{ url: v1.url }],
      traffic_split: { rules: [{ weighted_upstreams: [{ weight: 95 }, { upstream_id: canaryUp.id, weight: 5 }] }] },
    });
    for (let cycle = 0; cycle < 3; cycle++) expect(await hits(100, { path: "/weighted/a" })).toEqual({ v1: 95, v2: 5 });
  });
});

describe("sticky split by user (hash_on header x-user)", () => {
  const USERS = 2_000;

  it("90/10: each user always lands on the same side, and ~10% of distinct users see the canary", async () => {
    await serve({
      path: "/sticky/*",
      targets: [{ url: v1.url }],
      traffic_split: {
        rules: [{ hash_on: { source: "header", name: "x-user" }, weighted_upstreams: [{ weight: 90 }, { upstream_id: canaryUp.id, weight: 10 }] }],
      },
    });
    const first = new Map<string, string>();
    for (let u = 0; u < USERS; u++) first.set(`user-${u}`, await side("/sticky/a", { "x-user": `user-${u}` }));
    const canaryUsers = [...first.values()].filter((s) => s === "v2").length;
    const share = canaryUsers / USERS;
    // Binomial spread at n=2,000, p=0.1 is ±0.67% (1σ): ±2.5% is more than 3.5σ. The ±1% over 100,000
    // users property is the unit test in test/unit/data-plane/split/sticky.test.ts.
    expect(share, `${canaryUsers} of ${USERS} users on the canary`).toBeGreaterThan(0.075);
    expect(share, `${canaryUsers} of ${USERS} users on the canary`).toBeLessThan(0.125);

    // Repeated requests: the same side, every time, for every user (300 users, 3 more rounds).
    for (let round = 0; round < 3; round++) {
      for (let u = 0; u < 300; u++) {
        expect(await side("/sticky/a", { "x-user": `user-${u}` }), `user-${u}, round ${round}`).toBe(first.get(`user-${u}`));
      }
    }
  });

  it("requests without the key fall back to the exact weighted rotation (90/10 per 100)", async () => {
    expect(await hits(100, { path: "/sticky/a" })).toEqual({ v1: 90, v2: 10 });
  });

  it("raising the canary 5% → 10% with a PUT moves users only into the canary, none out", async () => {
    const body = (canary: number) => ({
      path: "/rollout/*",
      targets: [{ url: v1.url }],
      traffic_split: {
        rules: [{ hash_on: { source: "header", name: "x-user" }, weighted_upstreams: [{ weight: 100 - canary }, { upstream_id: canaryUp.id, weight: canary }] }],
      },
    });
    const rule = await serve(body(5));
    const users = Array.from({ length: 400 }, (_, i) => `rollout-user-${i}`);
    const before = new Map<string, string>();
    for (const u of users) before.set(u, await side("/rollout/a", { "x-user": u }));

    const raised = await api.mustUpdateRule(tenant, rule.id, { ...body(10), revision: rule.revision });
    await api.waitForAcked(raised.revision, [dp.nodeId]);
    const after = new Map<string, string>();
    for (const u of users) after.set(u, await side("/rollout/a", { "x-user": u }));

    const movedOut = users.filter((u) => before.get(u) === "v2" && after.get(u) !== "v2");
    const movedIn = users.filter((u) => before.get(u) === "v1" && after.get(u) === "v2");
    const canaryBefore = users.filter((u) => before.get(u) === "v2").length;
    const canaryAfter = users.filter((u) => after.get(u) === "v2").length;
    expect(movedOut).toEqual([]);
    expect(movedIn.length).toBeGreaterThan(0);
    expect(canaryAfter).toBe(canaryBefore + movedIn.length);
    // Sanity on the shares (400 users: 5% ≈ 20 ± 4.4, 10% ≈ 40 ± 6, bands of about 4σ).
    expect(canaryBefore).toBeGreaterThan(3);
    expect(canaryBefore).toBeLessThan(40);
    expect(canaryAfter).toBeGreaterThan(15);
    expect(canaryAfter).toBeLessThan(65);
  });
});

describe("hostile regular expressions cannot stall the proxy (RE2)", () => {
  it('"(a+)+$" against "aaaa…b" (10,000 a\'s) is answered promptly, and other requests keep flowing', async () => {
    await serve({
      path: "/redos/*",
      targets: [{ url: v1.url }],
      traffic_split: { rules: [{ match: [{ vars: [["http_x-evil", "~~", "(a+)+$"]] }], weighted_upstreams: [{ upstream_id: canaryUp.id }] }] },
    });
    await serve({ path: "/plain/*", targets: [{ url: other.url }] });
    const hostile = "a".repeat(10_000) + "b";
    const started = Date.now();
    // The hostile requests and ordinary ones at the same time: a backtracking engine would need
    // ~2^10000 steps for each hostile one and block the event loop for everybody.
    const [evil, plain] = await Promise.all([
      Promise.all(Array.from({ length: 5 }, () => side("/redos/a", { "x-evil": hostile }))),
      Promise.all(Array.from({ length: 20 }, () => side("/plain/a"))),
    ]);
    const elapsed = Date.now() - started;
    expect(evil).toEqual(Array(5).fill("v1")); // no match: "…b" does not end in a's
    expect(plain).toEqual(Array(20).fill("other"));
    expect(elapsed, "generous sanity bound").toBeLessThan(10_000);
    // And the same expression still matches what it should.
    expect(await side("/redos/a", { "x-evil": "a".repeat(10_000) })).toBe("v2");
  });
});
