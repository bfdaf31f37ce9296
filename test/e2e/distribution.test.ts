/**
 * Seed 000 end to end: rules created over REST on a real control plane reach two real data-plane
 * processes, which split real traffic across three real targets exactly as the seed says
 * (round-robin without weights, smooth weighted round-robin when weights sum to 100, round-robin
 * with a warning otherwise, weight 0 never chosen), strip paths, enforce methods, and follow changes.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { GatewayApi, type TenantCreds } from "../support/api.js";
import { header, httpRequest } from "../support/http.js";
import { startControlPlane, startDataPlane, type ControlPlane, type DataPlane } from "../support/processes.js";
import { refusedPort, startSseTarget, startTarget, type Target } from "../support/targets.js";
import { teardown } from "../support/teardown.js";
import { sendRequests } from "../support/traffic.js";

let cp: ControlPlane;
let api: GatewayApi;
let dps: DataPlane[];
let nodeIds: string[];
let t1: Target, t2: Target, t3: Target;
let tenant: TenantCreds;

beforeAll(async () => {
  cp = await startControlPlane();
  api = GatewayApi.of(cp);
  [t1, t2, t3] = await Promise.all([startTarget("t1"), startTarget("t2"), startTarget("t3")]);
  dps = await Promise.all(["dist-dp-1", "dist-dp-2"].map((nodeId) => startDataPlane({ controlPlane: cp.url, nodeId, token: cp.nodeToken })));
  nodeIds = dps.map((d) => d.nodeId);
  tenant = await api.createTenant("distribution");
});

afterAll(teardown);

beforeEach(() => {
  for (const t of [t1, t2, t3]) t.clear();
});

/** Creates a rule (seed 000 body) and waits until both data planes serve it. */
async function ruleOnBothPlanes(body: Record<string, unknown>) {
  const rule = await api.mustCreateRule(tenant, body);
  await api.waitForAcked(rule.revision, nodeIds);
  return rule;
}

describe("seed 000 distribution through two data planes", () => {
  it("round-robins a rule without weights exactly: 100 of 300 requests per target on each data plane", async () => {
    const rule = await ruleOnBothPlanes({
      path: "/rr/*",
      targets: [{ url: t1.url }, { url: t2.url }, { url: t3.url }],
      methods: ["GET", "POST"],
      strip_path: true,
    });
    expect(rule.warnings).toEqual([]);
    for (const dp of dps) {
      const r = await sendRequests(dp.url, 300, { path: "/rr/hello" });
      expect(r.failures).toEqual([]);
      expect(r.byTarget).toEqual({ t1: 100, t2: 100, t3: 100 });
    }
    // What the targets saw agrees with what the clients saw.
    expect([t1.requests.length, t2.requests.length, t3.requests.length]).toEqual([200, 200, 200]);
  });

  it("splits 90/10 exactly: 900 and 100 of 1,000 requests through one data plane", async () => {
    const rule = await ruleOnBothPlanes({
      path: "/canary/*",
      targets: [
        { url: t1.url, weight: 90 },
        { url: t2.url, weight: 10 },
      ],
      methods: ["GET", "POST"],
      strip_path: true,
    });
    expect(rule.warnings).toEqual([]);
    const r = await sendRequests(dps[0].url, 1000, { path: "/canary/x" });
    expect(r.failures).toEqual([]);
    expect(r.byTarget).toEqual({ t1: 900, t2: 100 });
    expect(t3.requests).toHaveLength(0);
  });

  it("is exact over every cycle of 100, not only in total (smooth weighted round-robin)", async () => {
    await ruleOnBothPlanes({
      path: "/cycles/*",
      targets: [
        { url: t1.url, weight: 90 },
        { url: t2.url, weight: 10 },
      ],
    });
    for (let cycle = 0; cycle < 3; cycle++) {
      const r = await sendRequests(dps[1].url, 100, { path: "/cycles/y" });
      expect(r.byTarget).toEqual({ t1: 90, t2: 10 });
    }
  });

  it("warns that 60/30 falls back to round-robin, and serves it round-robin", async () => {
    const rule = await ruleOnBothPlanes({
      path: "/sixty/*",
      targets: [
        { url: t1.url, weight: 60 },
        { url: t2.url, weight: 30 },
      ],
    });
    expect(rule.warnings).toHaveLength(1);
    expect(rule.warnings[0]).toMatch(/^targets: /);
    expect(rule.warnings[0]).toMatch(/sum to 90/);
    expect(rule.warnings[0]).toMatch(/round-robin/);
    for (const dp of dps) {
      const r = await sendRequests(dp.url, 200, { path: "/sixty/a" });
      expect(r.failures).toEqual([]);
      expect(r.byTarget).toEqual({ t1: 100, t2: 100 });
    }
  });

  it("never sends traffic to the weight-0 side of a blue/green 100/0 rule", async () => {
    const rule = await ruleOnBothPlanes({
      path: "/bluegreen/*",
      targets: [
        { url: t1.url, weight: 100 },
        { url: t2.url, weight: 0 },
      ],
    });
    expect(rule.warnings).toEqual([]);
    for (const dp of dps) {
      const r = await sendRequests(dp.url, 200, { path: "/bluegreen/z" });
      expect(r.failures).toEqual([]);
      expect(r.byTarget).toEqual({ t1: 200 });
    }
    expect(t2.requests).toHaveLength(0);
  });
});

describe("forwarding and the data plane's own answers", () => {
  let downPort: number;
  let sse: Target;

  beforeAll(async () => {
    downPort = await refusedPort();
    sse = await startSseTarget("sse", { events: 5, intervalMs: 10 });
    await api.mustCreateRule(tenant, { path: "/stream/*", targets: [{ url: sse.url }] });
    await api.mustCreateRule(tenant, { path: "/api/*", targets: [{ url: t1.url }], methods: ["GET", "POST"], strip_path: true });
    await api.mustCreateRule(tenant, { path: "/keep/*", targets: [{ url: t2.url }], methods: ["GET"] });
    const last = await api.mustCreateRule(tenant, { path: "/down/*", targets: [{ url: `http://127.0.0.1:${downPort}` }] });
    await api.waitForAcked(last.revision, nodeIds);
  });

  it('strip_path forwards "/api/v1/x?q=1" as "/v1/x?q=1"', async () => {
    for (const dp of dps) {
      const res = await httpRequest(`${dp.url}/api/v1/x?q=1`);
      expect(res.status).toBe(200);
      expect(res.text).toBe("t1");
    }
    expect(t1.requests.map((r) => r.url)).toEqual(["/v1/x?q=1", "/v1/x?q=1"]);
    expect(t1.requests.map((r) => r.method)).toEqual(["GET", "GET"]);
  });

  it("keeps the path without strip_path, and forwards POST bodies", async () => {
    const res = await httpRequest(`${dps[0].url}/keep/v1/x?q=1`);
    expect(res.status).toBe(200);
    expect(header(res, "x-target")).toBe("t2");
    expect(t2.requests.map((r) => r.url)).toEqual(["/keep/v1/x?q=1"]);

    const post = await httpRequest(`${dps[1].url}/api/echo`, { method: "POST", body: "payload" });
    expect(post.status).toBe(200);
    expect(t1.requests.at(-1)).toMatchObject({ method: "POST", url: "/echo", body: "payload" });
  });

  it("streams a Server-Sent Events response through, every event in order", async () => {
    const res = await httpRequest(`${dps[0].url}/stream/chat`);
    expect(res.status).toBe(200);
    expect(header(res, "content-type")).toBe("text/event-stream");
    expect(res.text).toBe(["sse 0", "sse 1", "sse 2", "sse 3", "sse 4", "[DONE]"].map((e) => `data: ${e}\n\n`).join(""));
  });

  it("answers a method the rule does not list with 405 JSON, an Allow header and a request id", async () => {
    const res = await httpRequest(`${dps[0].url}/api/v1/x`, { method: "DELETE" });
    expect(res.status).toBe(405);
    expect(header(res, "content-type")).toMatch(/^application\/json/);
    expect(header(res, "allow")).toBe("GET, POST");
    expect(res.json.error.code).toBe("method_not_allowed");
    expect(res.json.error.request_id).toEqual(expect.any(String));
    expect(res.json.error.request_id).not.toBe("");
    expect(header(res, "x-request-id")).toBe(res.json.error.request_id);
    expect(t1.requests).toHaveLength(0);
  });

  it("answers an unknown path with 404 JSON and a request id", async () => {
    const res = await httpRequest(`${dps[1].url}/nothing/here`);
    expect(res.status).toBe(404);
    expect(header(res, "content-type")).toMatch(/^application\/json/);
    expect(res.json.error.code).toBe("no_route");
    expect(header(res, "x-request-id")).toBe(res.json.error.request_id);
    expect(res.json.error.request_id).not.toBe("");
  });

  it("answers 502 JSON when the target refuses the connection", async () => {
    const res = await httpRequest(`${dps[0].url}/down/x`);
    expect(res.status).toBe(502);
    expect(header(res, "content-type")).toMatch(/^application\/json/);
    expect(res.json.error.code).toBe("upstream_unavailable");
    expect(header(res, "x-request-id")).toBe(res.json.error.request_id);
  });
});

describe("configuration changes", () => {
  it("a PUT that changes targets and weights reaches both data planes, and traffic follows it on both", async () => {
    const created = await ruleOnBothPlanes({ path: "/change/*", targets: [{ url: t1.url }] });
    for (const dp of dps) {
      expect((await sendRequests(dp.url, 10, { path: "/change/a" })).byTarget).toEqual({ t1: 10 });
    }

    // If-Match with the ETag of the create response, as an HTTP client would do it.
    const res = await api.updateRule(
      tenant,
      created.id,
      {
        path: "/change/*",
        targets: [
          { url: t2.url, weight: 80 },
          { url: t3.url, weight: 20 },
        ],
      },
      { headers: { "if-match": `"${created.revision}"` } },
    );
    expect(res.status).toBe(200);
    expect(BigInt(res.json.revision)).toBeGreaterThan(BigInt(created.revision));
    expect(header(res, "etag")).toBe(`"${res.json.revision}"`);
    await api.waitForAcked(res.json.revision, nodeIds);

    t1.clear();
    for (const dp of dps) {
      const r = await sendRequests(dp.url, 100, { path: "/change/b" });
      expect(r.failures).toEqual([]);
      expect(r.byTarget).toEqual({ t2: 80, t3: 20 });
    }
    expect(t1.requests).toHaveLength(0);

    // And back, with the revision in the body instead of If-Match.
    const back = await api.mustUpdateRule(tenant, created.id, { path: "/change/*", targets: [{ url: t3.url }], revision: res.json.revision });
    await api.waitForAcked(back.revision, nodeIds);
    for (const dp of dps) expect((await sendRequests(dp.url, 10, { path: "/change/c" })).byTarget).toEqual({ t3: 10 });
  });

  it("a deleted rule stops matching on both data planes", async () => {
    const rule = await ruleOnBothPlanes({ path: "/gone/*", targets: [{ url: t1.url }] });
    const del = await api.deleteRule(tenant, rule.id);
    expect(del.status).toBe(204);
    await api.waitForConverged(nodeIds);
    for (const dp of dps) expect((await httpRequest(`${dp.url}/gone/x`)).status).toBe(404);
  });
});

describe("exactness across configuration changes", () => {
  it("an unrelated rule's change does not restart another rule's rotation", async () => {
    await ruleOnBothPlanes({ path: "/steady/*", targets: [{ url: t1.url }, { url: t2.url }, { url: t3.url }] });
    const dp = dps[0];
    const seen: Record<string, number> = {};
    // Another tenant's (or rule's) write between every two requests: 30 snapshots in all.
    for (let i = 0; i < 30; i++) {
      const r = await sendRequests(dp.url, 2, { path: "/steady/x" });
      for (const [k, v] of Object.entries(r.byTarget)) seen[k] = (seen[k] ?? 0) + v;
      const other = await api.mustCreateRule(tenant, { path: `/unrelated/${i}/*`, targets: [{ url: t1.url }] });
      await api.waitForAcked(other.revision, [dp.nodeId]);
    }
    expect(seen).toEqual({ t1: 20, t2: 20, t3: 20 });
  });
});
