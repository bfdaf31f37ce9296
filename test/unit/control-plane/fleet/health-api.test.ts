import { Code, ConnectError, createClient, createRouterTransport, type Client } from "@connectrpc/connect";
import { mkdtemp, rm } from "node:fs/promises";
import type http from "node:http";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { restHandler } from "../../../../control-plane/src/admin/rest.js";
import { ConfigApi } from "../../../../control-plane/src/config/api.js";
import { Authenticator } from "../../../../control-plane/src/config/auth.js";
import { ConfigServiceImpl } from "../../../../control-plane/src/config/connect-service.js";
import { NodeRegistry } from "../../../../control-plane/src/discovery/nodes.js";
import { SnapshotCache } from "../../../../control-plane/src/discovery/snapshot-cache.js";
import { DiscoveryServer } from "../../../../control-plane/src/discovery/stream.js";
import { Fleet } from "../../../../control-plane/src/fleet/fleet.js";
import { routes } from "../../../../control-plane/src/routes.js";
import { FileStore } from "../../../../control-plane/src/store/file.js";
import { ConfigService } from "../../../../proto/gen/gateway/v1/config_service_pb.js";
import { report } from "./helpers.js";

const ADMIN = "admin-secret";
const admin = { headers: { authorization: `Bearer ${ADMIN}` } };
const as = (key: string) => ({ headers: { authorization: `Bearer ${key}` } });

let dir: string;
let store: FileStore;
let api: ConfigApi;
let fleet: Fleet;
let auth: Authenticator;
let nodes: NodeRegistry;
let client: Client<typeof ConfigService>;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "gw-fleet-health-"));
  store = await FileStore.open(dir);
  api = await ConfigApi.open(store);
  nodes = new NodeRegistry();
  auth = new Authenticator(ADMIN, (h) => api.lookupKey(h));
  fleet = new Fleet({ config: api.current(), send: () => undefined, publishIntervalMs: 0 });
  api.onChange((s) => fleet.configChanged(s));
  const discovery = new DiscoveryServer(new SnapshotCache(api.current(), 0), nodes, "node-token");
  client = createClient(ConfigService, createRouterTransport(routes(new ConfigServiceImpl(api, auth, nodes, fleet), discovery)));
});

afterEach(async () => {
  fleet.close();
  api.close();
  await store.close();
  await rm(dir, { recursive: true, force: true });
});

async function codeOf(p: Promise<unknown>): Promise<Code> {
  try {
    await p;
  } catch (err) {
    return ConnectError.from(err).code;
  }
  throw new Error("expected the call to fail");
}

/** Two tenants; acme has an actively checked upstream with three targets and a rule with inline targets. */
async function world() {
  const acme = await client.createTenant({ name: "acme" }, admin);
  const other = await client.createTenant({ name: "other" }, admin);
  const key = acme.apiKey;
  const tid = acme.tenant!.id;
  const up = await client.createUpstream(
    {
      tenantId: tid,
      upstream: {
        name: "models",
        healthCheck: { active: { type: "tcp" } },
        targets: [
          { host: "10.0.0.1", port: 80 },
          { host: "10.0.0.2", port: 80, adminState: "draining" },
          { host: "10.0.0.3", port: 80, adminState: "disabled" },
        ],
      },
    },
    as(key),
  );
  const rule = await client.createRule({ tenantId: tid, rule: { path: "/chat/*", targets: [{ url: "http://127.0.0.1:9001" }, { url: "https://llm.example.com" }] } }, as(key));
  const otherUp = await client.createUpstream({ tenantId: other.tenant!.id, upstream: { name: "x", targets: [{ host: "h", port: 1 }] } }, as(other.apiKey));
  const otherRule = await client.createRule({ tenantId: other.tenant!.id, rule: { path: "/o/*", targets: [{ url: "http://h:2" }] } }, as(other.apiKey));
  return { tid, key, upId: up.upstream!.id, ruleId: rule.rule!.id, otherTid: other.tenant!.id, otherUpId: otherUp.upstream!.id, otherRuleId: otherRule.rule!.id };
}

describe("GetFleetHealth", () => {
  it("returns per target the admin state, fleet verdict, fleet in-flight, windowed traffic and each node's view", async () => {
    const w = await world();
    for (const [i, id] of ["n1", "n2", "n3"].entries()) fleet.nodeConnected({ nodeId: id, session: i + 1 });
    const b = w.upId;
    fleet.report({ nodeId: "n1", session: 1 }, report([
      { backend: b, target: "10.0.0.1:80", passive: "ejected", requests: 10, failures: 10, p50: 5, p99: 40, sum: 50 },
      { backend: b, target: "10.0.0.2:80", inFlight: 4 },
    ]));
    fleet.report({ nodeId: "n2", session: 2 }, report([
      { backend: b, target: "10.0.0.1:80", probe: "unhealthy", requests: 30, failures: 0, p50: 10, p99: 20, sum: 300 },
      { backend: b, target: "10.0.0.2:80", inFlight: 1, requests: 2 },
    ]));

    const res = await client.getFleetHealth({ tenantId: w.tid, upstreamId: b }, as(w.key));
    expect(res.upstreamId).toBe(b);
    expect(res.windowMs).toBe(60_000);
    expect(res.connectedNodes).toBe(3);
    expect(res.targets.map((t) => [t.target, t.adminState, t.verdict, t.down, t.inFlight])).toEqual([
      ["10.0.0.1:80", "enabled", "unhealthy", true, 0],
      ["10.0.0.2:80", "draining", "draining", false, 5],
      ["10.0.0.3:80", "disabled", "disabled", false, 0],
    ]);
    const [t1, t2, t3] = res.targets;
    expect(t1.stats).toMatchObject({ requests: 40n, failures: 10n, errorRate: 0.25, p50Ms: 8.75, p99Ms: 40, meanMs: 8.75 });
    expect(t1).toMatchObject({ voters: 2, downVotes: 2 });
    expect(t1.probers.sort()).toEqual(["n1", "n2", "n3"]);
    expect(t3.probers).toEqual([]);
    expect(t1.nodes.map((n) => [n.nodeId, n.passiveState, n.probeState, n.requests, n.prober])).toEqual([
      ["n1", "ejected", "unknown", 10n, true],
      ["n2", "healthy", "unhealthy", 30n, true],
    ]);
    expect(t2.nodes.map((n) => [n.nodeId, n.inFlight])).toEqual([["n1", 4], ["n2", 1]]);
    expect(t2.nodes[0].lastReportMs).toBeGreaterThan(0n);
    expect(res.total).toMatchObject({ requests: 42n, failures: 10n });

    // The node leaves: the draining target's fleet in-flight count falls with it.
    fleet.nodeDisconnected({ nodeId: "n1", session: 1 });
    const later = await client.getFleetHealth({ tenantId: w.tid, upstreamId: b, windowMs: 10_000 }, as(w.key));
    expect(later.windowMs).toBe(10_000);
    expect(later.targets[1].inFlight).toBe(1);
    expect(later.targets[0]).toMatchObject({ down: true, verdict: "unhealthy", voters: 1, downVotes: 1 });
  });

  it("serves a rule's inline targets as rule/<id>, keyed as the data plane reports them", async () => {
    const w = await world();
    fleet.nodeConnected({ nodeId: "n1", session: 1 });
    fleet.report({ nodeId: "n1", session: 1 }, report([{ backend: `rule/${w.ruleId}`, target: "llm.example.com:443", requests: 4, failures: 1 }]));
    const res = await client.getFleetHealth({ tenantId: w.tid, upstreamId: `rule/${w.ruleId}` }, as(w.key));
    expect(res.targets.map((t) => [t.target, t.adminState, t.verdict])).toEqual([
      ["127.0.0.1:9001", "enabled", "healthy"],
      ["llm.example.com:443", "enabled", "healthy"],
    ]);
    expect(res.targets[1].stats).toMatchObject({ requests: 4n, failures: 1n, errorRate: 0.25 });
    expect(res.targets[0].probers).toEqual([]);
  });

  it("lists targets nodes still report but the configuration no longer has, with an empty admin state", async () => {
    const w = await world();
    fleet.nodeConnected({ nodeId: "n1", session: 1 });
    fleet.report({ nodeId: "n1", session: 1 }, report([{ backend: w.upId, target: "10.9.9.9:80", inFlight: 2 }]));
    // Reports of streams that are not (or no longer) the node's current one do not count.
    fleet.report({ nodeId: "n1", session: 0 }, report([{ backend: w.upId, target: "10.9.9.9:80", inFlight: 50 }]));
    fleet.report({ nodeId: "ghost", session: 9 }, report([{ backend: w.upId, target: "10.9.9.9:80", inFlight: 50 }]));
    const res = await client.getFleetHealth({ tenantId: w.tid, upstreamId: w.upId }, admin);
    expect(res.targets.at(-1)).toMatchObject({ target: "10.9.9.9:80", adminState: "", verdict: "healthy", inFlight: 2 });
  });

  it("scopes by tenant: other tenants' upstreams and rules, and unknown backends, are NOT_FOUND", async () => {
    const w = await world();
    const cases: [string, string][] = [
      [w.tid, w.otherUpId],
      [w.tid, `rule/${w.otherRuleId}`],
      [w.otherTid, w.otherUpId],
      [w.tid, "up_nope"],
      [w.tid, `rule/${w.ruleId}/canary`],
      [w.tid, `rule/${w.ruleId}/split/0/0`],
      [w.tid, `rule/${w.ruleId}/bogus`],
      [w.tid, "rule/"],
    ];
    for (const [tenantId, upstreamId] of cases) {
      expect([tenantId, upstreamId, await codeOf(client.getFleetHealth({ tenantId, upstreamId }, as(w.key)))]).toEqual([tenantId, upstreamId, Code.NotFound]);
    }
    expect(await codeOf(client.getFleetHealth({ tenantId: w.tid, upstreamId: w.upId }))).toBe(Code.Unauthenticated);
    // The admin may read any tenant's.
    expect((await client.getFleetHealth({ tenantId: w.otherTid, upstreamId: w.otherUpId }, admin)).targets).toHaveLength(1);
    expect(await codeOf(client.getFleetHealth({ tenantId: "ten_missing", upstreamId: w.upId }, admin))).toBe(Code.NotFound);
  });
});

/** Calls the REST handler with a minimal GET request; returns status and parsed body. */
async function restGet(url: string, key: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const handle = restHandler(api, auth, nodes, fleet);
  const req = { url, method: "GET", headers: { authorization: `Bearer ${key}` } } as unknown as http.IncomingMessage;
  let status = 0;
  let data = "";
  const res = {
    writeHead: (s: number) => void (status = s),
    end: (d: string) => void (data = d),
  } as unknown as http.ServerResponse;
  expect(await handle(req, res)).toBe(true);
  return { status, body: data === "" ? {} : (JSON.parse(data) as Record<string, unknown>) };
}

describe("GET /api/v1/tenants/{tid}/upstreams/{uid}/health", () => {
  it("answers the same view in snake_case JSON, for upstreams and rule backends (raw or %2F)", async () => {
    const w = await world();
    fleet.nodeConnected({ nodeId: "n1", session: 1 });
    fleet.report({ nodeId: "n1", session: 1 }, report([{ backend: w.upId, target: "10.0.0.2:80", inFlight: 3 }]));
    const r = await restGet(`/api/v1/tenants/${w.tid}/upstreams/${w.upId}/health?window_ms=30000`, w.key);
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ upstream_id: w.upId, window_ms: 30000, connected_nodes: 1 });
    const targets = r.body.targets as Record<string, unknown>[];
    expect(targets[1]).toMatchObject({ target: "10.0.0.2:80", admin_state: "draining", verdict: "draining", in_flight: 3 });
    expect((targets[1].nodes as Record<string, unknown>[])[0]).toMatchObject({ node_id: "n1", passive_state: "healthy", probe_state: "unknown", in_flight: 3 });

    for (const id of [`rule/${w.ruleId}`, `rule%2F${w.ruleId}`]) {
      const rr = await restGet(`/api/v1/tenants/${w.tid}/upstreams/${id}/health`, w.key);
      expect([id, rr.status, rr.body.upstream_id]).toEqual([id, 200, `rule/${w.ruleId}`]);
    }
  });

  it("maps errors: other tenant's upstream 404, bad window 400", async () => {
    const w = await world();
    expect((await restGet(`/api/v1/tenants/${w.tid}/upstreams/${w.otherUpId}/health`, w.key)).status).toBe(404);
    expect((await restGet(`/api/v1/tenants/${w.otherTid}/upstreams/${w.otherUpId}/health`, w.key)).status).toBe(404);
    const bad = await restGet(`/api/v1/tenants/${w.tid}/upstreams/${w.upId}/health?window_ms=soon`, w.key);
    expect(bad.status).toBe(400);
    expect(bad.body).toMatchObject({ error: { field: "window_ms" } });
  });
});
