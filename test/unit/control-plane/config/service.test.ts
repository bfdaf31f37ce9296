import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createRouterTransport, type Client } from "@connectrpc/connect";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ConfigApi } from "../../../../control-plane/src/config/api.js";
import { Authenticator } from "../../../../control-plane/src/config/auth.js";
import { ConfigServiceImpl } from "../../../../control-plane/src/config/connect-service.js";
import { NodeRegistry } from "../../../../control-plane/src/discovery/nodes.js";
import { SnapshotCache } from "../../../../control-plane/src/discovery/snapshot-cache.js";
import { DiscoveryServer } from "../../../../control-plane/src/discovery/stream.js";
import { routes } from "../../../../control-plane/src/routes.js";
import { FileStore } from "../../../../control-plane/src/store/file.js";
import { ConfigService } from "../../../../proto/gen/gateway/v1/config_service_pb.js";
import { RuleSchema, type Rule } from "../../../../proto/gen/gateway/v1/rule_pb.js";
import { UpstreamSchema } from "../../../../proto/gen/gateway/v1/upstream_pb.js";

const ADMIN = "admin-secret";
let dir: string;
let store: FileStore;
let api: ConfigApi;
let client: Client<typeof ConfigService>;

const admin = { headers: { authorization: `Bearer ${ADMIN}` } };
const as = (key: string) => ({ headers: { authorization: `Bearer ${key}` } });

async function open(): Promise<void> {
  store = await FileStore.open(dir);
  api = await ConfigApi.open(store);
  const nodes = new NodeRegistry();
  const auth = new Authenticator(ADMIN, (h) => api.lookupKey(h));
  const discovery = new DiscoveryServer(new SnapshotCache(api.current()), nodes, "node-token");
  client = createClient(ConfigService, createRouterTransport(routes(new ConfigServiceImpl(api, auth, nodes), discovery)));
}

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "gw-service-"));
  await open();
});

afterEach(async () => {
  api.close();
  await store.close();
  await rm(dir, { recursive: true, force: true });
});

async function tenant(name = "acme"): Promise<{ id: string; key: string }> {
  const res = await client.createTenant({ name }, admin);
  return { id: res.tenant!.id, key: res.apiKey };
}

function rule(init: Partial<Rule> & { targets?: { url: string; weight?: number }[] }): Rule {
  return create(RuleSchema, { path: "/api/*", targets: [{ url: "http://127.0.0.1:9001" }], ...init } as never);
}

async function codeOf(p: Promise<unknown>): Promise<{ code: Code; message: string }> {
  try {
    await p;
  } catch (err) {
    const e = ConnectError.from(err);
    return { code: e.code, message: e.rawMessage };
  }
  throw new Error("expected the call to fail");
}

describe("ConfigService", () => {
  it("creates a tenant only with the admin key, and stores only a hash of its key", async () => {
    expect((await codeOf(client.createTenant({ name: "x" }))).code).toBe(Code.Unauthenticated);
    const t = await tenant();
    expect((await codeOf(client.createTenant({ name: "y" }, as(t.key)))).code).toBe(Code.PermissionDenied);
    expect(t.key).toMatch(/^gk_/);
    expect(JSON.stringify([...api.current().apiKeys.values()])).not.toContain(t.key);
    expect((await codeOf(client.createTenant({ name: "acme" }, admin))).code).toBe(Code.AlreadyExists);
  });

  it("accepts the seed rule and warns when weights do not sum to 100", async () => {
    const t = await tenant();
    const ok = await client.createRule(
      { tenantId: t.id, rule: rule({ targets: [{ url: "https://production.example.com", weight: 90 }, { url: "https://canary.example.com", weight: 10 }], methods: ["get", "POST"], stripPath: true }) },
      as(t.key),
    );
    expect(ok.warnings).toEqual([]);
    expect(ok.rule!.methods).toEqual(["GET", "POST"]);
    expect(ok.rule!.revision).toBeGreaterThan(0n);
    const warned = await client.createRule({ tenantId: t.id, rule: rule({ path: "/b/*", targets: [{ url: "http://a", weight: 60 }, { url: "http://b", weight: 30 }] }) }, as(t.key));
    expect(warned.warnings).toHaveLength(1);
    expect(warned.warnings[0]).toMatch(/weights sum to 90, not 100.*round-robin/);
  });

  it.each([
    ["bad URL", rule({ targets: [{ url: "not a url" }] }), /^targets\[0\]\.url: invalid URL/],
    ["non-http scheme", rule({ targets: [{ url: "ftp://x" }] }), /^targets\[0\]\.url: scheme must be http or https/],
    ["weight over 100", rule({ targets: [{ url: "http://a", weight: 150 }] }), /^targets\[0\]\.weight: must be an integer from 0 to 100/],
    ["mixed weights", rule({ targets: [{ url: "http://a", weight: 50 }, { url: "http://b" }] }), /^targets: either every target has a weight or none/],
    ["all weights 0", rule({ targets: [{ url: "http://a", weight: 0 }] }), /^targets: every target has weight 0/],
    ["unknown method", rule({ methods: ["FETCH"] }), /^methods\[0\]: unknown HTTP method "FETCH"/],
    ["empty targets", rule({ targets: [] }), /^targets: must not be empty/],
    ["path without slash", rule({ path: "api" }), /^path: must start with "\/"/],
    ["star inside path", rule({ path: "/a*/b" }), /^path: "\*" is only allowed as the last character/],
    ["missing upstream", rule({ targets: [], upstreamId: "up_missing" }), /^upstream_id: upstream up_missing does not exist/],
    ["bad split operator", rule({ trafficSplit: { rules: [{ match: [{ vars: [{ values: [{ kind: { case: "stringValue", value: "http_x" } }, { kind: { case: "stringValue", value: "=~=" } }, { kind: { case: "stringValue", value: "1" } }] }] }], weightedUpstreams: [{ weight: 1 }] }] } } as never), /^traffic_split\.rules\[0\]\.match\[0\]\.vars\[0\]/],
  ])("refuses %s with INVALID_ARGUMENT naming the field", async (_label, r, message) => {
    const t = await tenant();
    const before = api.current().version;
    const err = await codeOf(client.createRule({ tenantId: t.id, rule: r }, as(t.key)));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.message).toMatch(message);
    expect(api.current().version).toBe(before); // nothing half-applied
  });

  it("refuses a duplicate (host, path, method) across rules and across tenants", async () => {
    const a = await tenant("a");
    const b = await tenant("b");
    await client.createRule({ tenantId: a.id, rule: rule({ methods: ["GET"] }) }, as(a.key));
    const ownRule = [...api.current().rules.values()][0];
    for (const t of [a, b]) {
      const err = await codeOf(client.createRule({ tenantId: t.id, rule: rule({ methods: ["GET", "POST"] }) }, as(t.key)));
      expect(err.code).toBe(Code.InvalidArgument);
      expect(err.message).toMatch(/^path: duplicate route: host \* path \/api\/\* GET is already routed by /);
      // The owner is named to its own tenant only.
      if (t === a) expect(err.message).toContain(ownRule.id);
      else expect(err.message).not.toContain(ownRule.id);
      if (t === b) expect(err.message).not.toContain(a.id);
    }
    // Disjoint methods, or another host, coexist.
    await client.createRule({ tenantId: b.id, rule: rule({ methods: ["POST"] }) }, as(b.key));
    await client.createRule({ tenantId: b.id, rule: rule({ methods: ["GET"], hosts: ["b.example.com"] }) }, as(b.key));
  });

  it("uses revisions for optimistic concurrency", async () => {
    const t = await tenant();
    const created = (await client.createRule({ tenantId: t.id, rule: rule({}) }, as(t.key))).rule!;
    const first = await client.updateRule({ tenantId: t.id, rule: { ...created, stripPath: true } }, as(t.key));
    expect(first.rule!.revision).toBeGreaterThan(created.revision);
    const stale = await codeOf(client.updateRule({ tenantId: t.id, rule: { ...created, stripPath: false } }, as(t.key)));
    expect(stale.code).toBe(Code.FailedPrecondition);
    expect(stale.message).toMatch(/revision/);
    expect((await client.getRule({ tenantId: t.id, ruleId: created.id }, as(t.key))).rule!.stripPath).toBe(true);
    const staleDelete = await codeOf(client.deleteRule({ tenantId: t.id, ruleId: created.id, revision: created.revision }, as(t.key)));
    expect(staleDelete.code).toBe(Code.FailedPrecondition);
  });

  it("keeps tenants apart: another tenant's resources answer NOT_FOUND", async () => {
    const a = await tenant("a");
    const b = await tenant("b");
    const r = (await client.createRule({ tenantId: a.id, rule: rule({}) }, as(a.key))).rule!;
    const calls = [
      client.getRule({ tenantId: a.id, ruleId: r.id }, as(b.key)),
      client.listRules({ tenantId: a.id }, as(b.key)),
      client.deleteRule({ tenantId: a.id, ruleId: r.id }, as(b.key)),
      client.createRule({ tenantId: a.id, rule: rule({ path: "/z" }) }, as(b.key)),
      client.getRule({ tenantId: b.id, ruleId: r.id }, as(b.key)),
    ];
    for (const c of calls) expect((await codeOf(c)).code).toBe(Code.NotFound);
    expect((await codeOf(client.listTenants({}, as(a.key)))).code).toBe(Code.PermissionDenied);
  });

  it("refuses to delete an upstream a rule still references, and refuses rules pointing at another tenant's upstream", async () => {
    const a = await tenant("a");
    const b = await tenant("b");
    const up = (
      await client.createUpstream(
        { tenantId: a.id, upstream: create(UpstreamSchema, { name: "pool", targets: [{ host: "127.0.0.1", port: 9001 }], metadata: { team: "x" } }) },
        as(a.key),
      )
    ).upstream!;
    expect(up.algorithm).toBe("round-robin");
    expect(up.metadata).toEqual({ team: "x" });
    await client.createRule({ tenantId: a.id, rule: rule({ targets: [], upstreamId: up.id }) }, as(a.key));
    const del = await codeOf(client.deleteUpstream({ tenantId: a.id, upstreamId: up.id }, as(a.key)));
    expect(del.code).toBe(Code.FailedPrecondition);
    expect(del.message).toMatch(/still referenced/);
    const foreign = await codeOf(client.createRule({ tenantId: b.id, rule: rule({ path: "/b", targets: [], upstreamId: up.id }) }, as(b.key)));
    expect(foreign.code).toBe(Code.InvalidArgument);
    expect(foreign.message).toMatch(/does not exist/);
  });

  it("survives a restart with the same resources and a version that only grows", async () => {
    const t = await tenant();
    const r = (await client.createRule({ tenantId: t.id, rule: rule({}) }, as(t.key))).rule!;
    const version = api.current().version;
    api.close();
    await store.close();
    await open();
    expect(api.current().version).toBe(version);
    expect((await client.getRule({ tenantId: t.id, ruleId: r.id }, as(t.key))).rule!.path).toBe("/api/*");
    await client.createRule({ tenantId: t.id, rule: rule({ path: "/two" }) }, as(t.key));
    expect(api.current().version).toBe(version + 1n);
  });

  it("sets a target's admin state", async () => {
    const t = await tenant();
    const up = (await client.createUpstream({ tenantId: t.id, upstream: create(UpstreamSchema, { name: "p", targets: [{ host: "10.0.0.1", port: 80 }, { host: "10.0.0.2", port: 80 }] }) }, as(t.key))).upstream!;
    const res = await client.setTargetState({ tenantId: t.id, upstreamId: up.id, target: "10.0.0.2:80", adminState: "draining" }, as(t.key));
    expect(res.upstream!.targets.map((x) => x.adminState)).toEqual(["enabled", "draining"]);
    expect((await codeOf(client.setTargetState({ tenantId: t.id, upstreamId: up.id, target: "10.0.0.9:80", adminState: "disabled" }, as(t.key)))).code).toBe(Code.NotFound);
    expect((await codeOf(client.setTargetState({ tenantId: t.id, upstreamId: up.id, target: "10.0.0.2:80", adminState: "off" }, as(t.key)))).code).toBe(Code.InvalidArgument);
  });
});
