/**
 * The config API of a real control plane, over every protocol it serves: REST (tenant isolation,
 * authentication, validation with errors that name the field), gRPC from an independent client
 * stack, Connect and gRPC-Web, and plain HTTP/1.1 Connect unary as curl would send it. Changes made
 * through any of them reach a real data plane.
 */
import { ConnectError, Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GatewayApi, type RuleView, type TenantCreds, type UpstreamView } from "../support/api.js";
import { header, httpRequest, type HttpResponse } from "../support/http.js";
import { startControlPlane, startDataPlane, type ControlPlane, type DataPlane } from "../support/processes.js";
import { connectConfigClient, grpcConfigClient, type GrpcError } from "../support/rpc.js";
import { startTarget, type Target } from "../support/targets.js";
import { teardown } from "../support/teardown.js";
import { sendRequests } from "../support/traffic.js";

let cp: ControlPlane;
let api: GatewayApi;
let dp: DataPlane;
let u1: Target, u2: Target;

beforeAll(async () => {
  cp = await startControlPlane({ name: "api-control-plane" });
  api = GatewayApi.of(cp);
  [u1, u2] = await Promise.all([startTarget("u1"), startTarget("u2")]);
  dp = await startDataPlane({ controlPlane: cp.url, nodeId: "api-dp", token: cp.nodeToken });
});

afterAll(teardown);

/** Asserts a REST error: status, JSON error body, and a message that names `field`. */
function expectError(res: HttpResponse, status: number, field: string | RegExp): void {
  expect(res.status, res.text).toBe(status);
  expect(header(res, "content-type")).toMatch(/^application\/json/);
  expect(res.json.error.code).toEqual(expect.any(String));
  if (typeof field === "string") expect(res.json.error.message).toContain(field);
  else expect(res.json.error.message).toMatch(field);
}

describe("tenant isolation and authentication (REST)", () => {
  let a: TenantCreds;
  let b: TenantCreds;
  let ruleA: RuleView;
  let upA: UpstreamView;

  beforeAll(async () => {
    a = await api.createTenant("iso-a");
    b = await api.createTenant("iso-b");
    upA = await api.mustCreateUpstream(a, { name: "a-backend", targets: [{ host: "127.0.0.1", port: u1.port }] });
    ruleA = await api.mustCreateRule(a, { path: "/iso-a/*", upstream_id: upA.id });
  });

  it("answers tenant B's key with 404, not 403, on every call about tenant A's rules", async () => {
    const asB = { key: b.apiKey };
    const ruleBody = { path: "/iso-a/*", targets: [{ url: u2.url }], revision: ruleA.revision };
    const calls: [string, Promise<HttpResponse>][] = [
      ["GET rule", api.getRule(a, ruleA.id, asB)],
      ["PUT rule", api.updateRule(a, ruleA.id, ruleBody, asB)],
      ["DELETE rule", api.deleteRule(a, ruleA.id, asB)],
      ["list rules", api.listRules(a, asB)],
      ["create rule under A", api.createRule(a, { path: "/iso-b-sneaks/*", targets: [{ url: u2.url }] }, asB)],
      ["GET tenant", api.call("GET", `/api/v1/tenants/${a.id}`, asB)],
      // A's rule id under B's own tenant is not B's rule either.
      ["GET A's rule via B's tenant", api.getRule(b, ruleA.id)],
    ];
    for (const [what, p] of calls) {
      const res = await p;
      expect(res.status, `${what}: ${res.text}`).toBe(404);
      expect(res.json.error.code, what).toBe("not_found");
    }
  });

  it("answers tenant B's key with 404 on every call about tenant A's upstreams", async () => {
    const asB = { key: b.apiKey };
    const upBody = { name: "a-backend", targets: [{ host: "127.0.0.1", port: u2.port }], revision: upA.revision };
    const calls: [string, Promise<HttpResponse>][] = [
      ["GET upstream", api.getUpstream(a, upA.id, asB)],
      ["PUT upstream", api.updateUpstream(a, upA.id, upBody, asB)],
      ["DELETE upstream", api.deleteUpstream(a, upA.id, asB)],
      ["list upstreams", api.listUpstreams(a, asB)],
      ["create upstream under A", api.createUpstream(a, { name: "sneaky", targets: [{ host: "127.0.0.1", port: u2.port }] }, asB)],
    ];
    for (const [what, p] of calls) {
      const res = await p;
      expect(res.status, `${what}: ${res.text}`).toBe(404);
      expect(res.json.error.code, what).toBe("not_found");
    }
  });

  it("left tenant A's resources untouched", async () => {
    const rule = await api.getRule(a, ruleA.id);
    expect(rule.status).toBe(200);
    expect(rule.json.revision).toBe(ruleA.revision);
    expect(rule.json.upstream_id).toBe(upA.id);
    const up = await api.getUpstream(a, upA.id);
    expect(up.status).toBe(200);
    expect(up.json.revision).toBe(upA.revision);
    expect((await api.listRules(a)).json.rules.map((r: RuleView) => r.id)).toEqual([ruleA.id]);
  });

  it("does not let tenant B reference tenant A's upstream, and says it does not exist", async () => {
    const res = await api.createRule(b, { path: "/iso-b/*", upstream_id: upA.id });
    expectError(res, 400, "upstream_id");
    expect(res.json.error.message).toContain("does not exist");
  });

  it("answers 401 without a key, with a wrong key, and with a non-Bearer scheme", async () => {
    const noKey = await api.listRules(a, { key: null });
    expect(noKey.status).toBe(401);
    expect(header(noKey, "www-authenticate")).toBe("Bearer");
    expect(noKey.json.error.code).toBe("unauthenticated");
    expect((await api.listRules(a, { key: "gk_wrong" })).status).toBe(401);
    expect((await api.call("GET", `/api/v1/tenants/${a.id}/rules`, { key: null, headers: { authorization: `Basic ${a.apiKey}` } })).status).toBe(401);
    expect((await api.call("POST", "/api/v1/tenants", { key: null, body: { name: "nobody" } })).status).toBe(401);
  });

  it("answers 403 to a tenant key on admin routes", async () => {
    const asA = { key: a.apiKey };
    const calls: [string, Promise<HttpResponse>][] = [
      ["create tenant", api.call("POST", "/api/v1/tenants", { ...asA, body: { name: "by-a" } })],
      ["list tenants", api.call("GET", "/api/v1/tenants", asA)],
      ["list nodes", api.call("GET", "/api/v1/nodes", asA)],
      ["delete own tenant", api.call("DELETE", `/api/v1/tenants/${a.id}`, asA)],
    ];
    for (const [what, p] of calls) {
      const res = await p;
      expect(res.status, `${what}: ${res.text}`).toBe(403);
      expect(res.json.error.code, what).toBe("permission_denied");
    }
  });

  it("lets the admin key read any tenant's rules", async () => {
    const res = await api.listRules(a, { key: cp.adminKey });
    expect(res.status).toBe(200);
    expect(res.json.rules).toHaveLength(1);
  });

  it("answers unknown API paths with 404 and wrong methods with 405 and Allow", async () => {
    expectError(await api.call("GET", "/api/v1/nope"), 404, "/api/v1/nope");
    const res = await api.call("PATCH", `/api/v1/tenants/${a.id}/rules`);
    expect(res.status).toBe(405);
    expect(header(res, "allow")).toBe("POST, GET");
    expect(res.json.error.code).toBe("method_not_allowed");
  });
});

describe("validation over REST", () => {
  let t: TenantCreds;
  let other: TenantCreds;

  beforeAll(async () => {
    t = await api.createTenant("validation");
    other = await api.createTenant("validation-other");
  });

  const rule = (over: Record<string, unknown>) => ({ path: "/valid/*", targets: [{ url: "http://127.0.0.1:9" }], ...over });

  it.each([
    ["a bad target URL", rule({ targets: [{ url: "not a url" }] }), "targets[0].url"],
    ["a target URL with another scheme", rule({ targets: [{ url: "ftp://127.0.0.1/" }] }), "targets[0].url"],
    ["a negative weight", rule({ targets: [{ url: "http://127.0.0.1:9", weight: -5 }] }), "targets[0].weight"],
    ["a non-integer weight", rule({ targets: [{ url: "http://127.0.0.1:9", weight: 1.5 }] }), "targets[0].weight"],
    ["a weight over 100", rule({ targets: [{ url: "http://127.0.0.1:9", weight: 101 }] }), "targets[0].weight"],
    ["weights on some targets only", rule({ targets: [{ url: "http://127.0.0.1:9", weight: 50 }, { url: "http://127.0.0.1:10" }] }), "targets"],
    ["an unknown method", rule({ methods: ["GET", "FETCH"] }), "methods[1]"],
    ["empty targets", rule({ targets: [] }), "targets"],
    ["a path without the leading '/'", rule({ path: "valid/*" }), "path"],
    ["a '*' inside the path", rule({ path: "/va*lid" }), "path"],
    ["an unknown field", rule({ wieght: 3 }), "wieght"],
    ["a string where a list is expected", rule({ methods: "GET" }), "methods"],
  ])("refuses %s with 400 naming the field", async (_what, body, field) => {
    const res = await api.createRule(t, body);
    expectError(res, 400, field);
    expect(res.json.error.code).toBe("invalid_argument");
  });

  it("refuses a body that is not JSON with 400", async () => {
    const res = await api.call("POST", `/api/v1/tenants/${t.id}/rules`, { key: t.apiKey, body: "{not json", headers: { "content-type": "application/json" } });
    expect(res.status).toBe(400);
    expect(res.json.error.code).toBe("invalid_json");
  });

  it("refuses a rule that references a missing upstream, naming upstream_id", async () => {
    const res = await api.createRule(t, { path: "/missing-up/*", upstream_id: "up_doesnotexist" });
    expectError(res, 400, "upstream_id");
    expect(res.json.error.message).toContain("up_doesnotexist");
  });

  // A duplicate (host, path, method) is a validation error of the rule (INVALID_ARGUMENT, 400), as
  // the API contract lists it; the message names the field (path).
  // Soft assertions: each aspect is reported on its own.
  it("refuses a duplicate (host, path, method) within a tenant with 400 naming the path", async () => {
    await api.mustCreateRule(t, { path: "/dup/*", methods: ["GET"], targets: [{ url: u1.url }] });
    const res = await api.createRule(t, { path: "/dup/*", methods: ["POST", "GET"], targets: [{ url: u2.url }] });
    expect(res.json?.error?.message).toContain("/dup/*");
    expect.soft(res.status, res.text).toBe(400);
    expect.soft(res.json.error.message, "the message names the field").toMatch(/^path: /);
    // A different method on the same path is not a duplicate.
    expect((await api.createRule(t, { path: "/dup/*", methods: ["DELETE"], targets: [{ url: u2.url }] })).status).toBe(201);
  });

  it("refuses a duplicate (host, path, method) across tenants with 400, without revealing the other tenant's ids", async () => {
    const mine = await api.mustCreateRule(t, { path: "/shared/*", targets: [{ url: u1.url }] });
    const res = await api.createRule(other, { path: "/shared/*", targets: [{ url: u2.url }] });
    expect(res.json?.error?.message).toContain("/shared/*");
    expect.soft(res.status, res.text).toBe(400);
    expect.soft(res.json.error.message, "the message names the field").toMatch(/^path: /);
    expect.soft(res.json.error.message, "another tenant's id must not leak").not.toContain(t.id);
    expect.soft(res.json.error.message, "another tenant's rule id must not leak").not.toContain(mine.id);
  });

  it("answers 409 when deleting an upstream a rule still references, naming the rule", async () => {
    const up = await api.mustCreateUpstream(t, { name: "in-use", targets: [{ host: "127.0.0.1", port: u1.port }] });
    const r = await api.mustCreateRule(t, { path: "/in-use/*", upstream_id: up.id });
    const res = await api.deleteUpstream(t, up.id);
    expectError(res, 409, r.id);
    expect((await api.getUpstream(t, up.id)).status).toBe(200);
    // Once the rule is gone, the upstream can go.
    expect((await api.deleteRule(t, r.id)).status).toBe(204);
    expect((await api.deleteUpstream(t, up.id)).status).toBe(204);
    expect((await api.getUpstream(t, up.id)).status).toBe(404);
  });

  it("answers 409 to a PUT with a stale revision (body or If-Match), naming revision, and keeps the newer rule", async () => {
    const created = await api.mustCreateRule(t, { path: "/stale/*", targets: [{ url: u1.url }] });
    const updated = await api.mustUpdateRule(t, created.id, { path: "/stale/*", targets: [{ url: u2.url }], revision: created.revision });
    expect(BigInt(updated.revision)).toBeGreaterThan(BigInt(created.revision));

    const staleBody = await api.updateRule(t, created.id, { path: "/stale/*", targets: [{ url: u1.url }], revision: created.revision });
    expectError(staleBody, 409, "revision");
    const staleHeader = await api.updateRule(t, created.id, { path: "/stale/*", targets: [{ url: u1.url }] }, { headers: { "if-match": `"${created.revision}"` } });
    expectError(staleHeader, 409, "revision");

    const now = await api.getRule(t, created.id);
    expect(now.json.revision).toBe(updated.revision);
    expect(now.json.targets).toEqual([{ url: u2.url }]);
    expect(header(now, "etag")).toBe(`"${updated.revision}"`);
  });

  it("refuses a PUT that carries neither a revision nor If-Match with 428 naming revision, and changes nothing; If-Match: * overwrites", async () => {
    const created = await api.mustCreateRule(t, { path: "/blind/*", targets: [{ url: u1.url }] });
    const res = await api.updateRule(t, created.id, { path: "/blind/*", targets: [{ url: u2.url }] });
    expectError(res, 428, "revision");
    const now = await api.getRule(t, created.id);
    expect(now.json.revision).toBe(created.revision);
    expect(now.json.targets).toEqual([{ url: u1.url }]);
    const forced = await api.updateRule(t, created.id, { path: "/blind/*", targets: [{ url: u2.url }] }, { headers: { "if-match": "*" } });
    expect(forced.status, forced.text).toBe(200);
    expect(forced.json.targets).toEqual([{ url: u2.url }]);
  });

  it("routes a rule that references an upstream by id to that upstream's targets", async () => {
    const up = await api.createUpstream(t, {
      name: "by-id",
      algorithm: "round-robin",
      targets: [{ host: "127.0.0.1", port: u1.port, weight: 1 }],
      metadata: { team: "payments", tier: "gold" },
    });
    expect(up.status).toBe(201);
    expect(up.json.metadata).toEqual({ team: "payments", tier: "gold" });
    expect(up.json.warnings).toEqual([]);
    const r = await api.mustCreateRule(t, { path: "/by-id/*", upstream_id: up.json.id, strip_path: true });
    await api.waitForAcked(r.revision, [dp.nodeId]);
    u1.clear();
    const res = await sendRequests(dp.url, 10, { path: "/by-id/hello?x=1" });
    expect(res.failures).toEqual([]);
    expect(res.byTarget).toEqual({ u1: 10 });
    expect(u1.requests.map((q) => q.url)).toEqual(Array(10).fill("/hello?x=1"));
  });
});

describe("gRPC, Connect and gRPC-Web clients", () => {
  it("a @grpc/grpc-js client built from the .proto creates a tenant and a rule and lists it; the rule serves traffic", async () => {
    const client = grpcConfigClient(`127.0.0.1:${cp.port}`);
    const created = await client.call("CreateTenant", { name: "grpc-tenant" }, cp.adminKey);
    expect(created.tenant.name).toBe("grpc-tenant");
    expect(created.tenant.id).toMatch(/^ten_/);
    expect(created.api_key).toMatch(/^gk_/);
    const tenantId: string = created.tenant.id;
    const key: string = created.api_key;

    const rule = await client.call(
      "CreateRule",
      { tenant_id: tenantId, rule: { path: "/grpc/*", methods: ["GET"], strip_path: true, targets: [{ url: u2.url, weight: 100 }] } },
      key,
    );
    expect(rule.rule.id).toMatch(/^rule_/);
    expect(rule.rule.tenant_id).toBe(tenantId);
    expect(rule.warnings).toEqual([]);

    const list = await client.call("ListRules", { tenant_id: tenantId }, key);
    expect(list.rules.map((r: { id: string }) => r.id)).toEqual([rule.rule.id]);

    await api.waitForAcked(rule.rule.revision, [dp.nodeId]);
    expect((await sendRequests(dp.url, 5, { path: "/grpc/x" })).byTarget).toEqual({ u2: 5 });
  });

  it("gRPC errors carry the right status codes and name the field", async () => {
    const client = grpcConfigClient(`127.0.0.1:${cp.port}`);
    const noAuth = (await client.call("ListTenants", {}).catch((e: GrpcError) => e)) as GrpcError;
    expect(noAuth.code).toBe(16); // UNAUTHENTICATED
    const tenant = await api.createTenant("grpc-errors");
    const denied = (await client.call("ListTenants", {}, tenant.apiKey).catch((e: GrpcError) => e)) as GrpcError;
    expect(denied.code).toBe(7); // PERMISSION_DENIED
    const invalid = (await client
      .call("CreateRule", { tenant_id: tenant.id, rule: { path: "no-slash", targets: [{ url: u1.url }] } }, tenant.apiKey)
      .catch((e: GrpcError) => e)) as GrpcError;
    expect(invalid.code).toBe(3); // INVALID_ARGUMENT
    expect(invalid.details).toContain("path");
    const other = await api.createTenant("grpc-errors-other");
    const hidden = (await client.call("ListRules", { tenant_id: other.id }, tenant.apiKey).catch((e: GrpcError) => e)) as GrpcError;
    expect(hidden.code).toBe(5); // NOT_FOUND
  });

  it.each(["connect-http1", "connect-http2", "grpc-web"] as const)("a %s client lists tenants and creates a rule", async (protocol) => {
    const client = connectConfigClient(cp.url, protocol);
    const admin = { headers: { authorization: `Bearer ${cp.adminKey}` } };
    const { tenant, apiKey } = await client.createTenant({ name: `via-${protocol}` }, admin);
    expect(tenant?.id).toMatch(/^ten_/);
    const listed = await client.listTenants({}, admin);
    expect(listed.tenants.map((x) => x.id)).toContain(tenant!.id);
    const created = await client.createRule(
      { tenantId: tenant!.id, rule: { path: `/${protocol}/*`, targets: [{ url: u1.url }] } },
      { headers: { authorization: `Bearer ${apiKey}` } },
    );
    expect(created.rule?.path).toBe(`/${protocol}/*`);
    const err = await client.listTenants({}).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).code).toBe(Code.Unauthenticated);
  });

  it("serves plain HTTP/1.1 Connect unary JSON, as curl sends it", async () => {
    const res = await httpRequest(`${cp.url}/gateway.v1.ConfigService/ListTenants`, {
      method: "POST",
      headers: { authorization: `Bearer ${cp.adminKey}`, "content-type": "application/json" },
      body: "{}",
    });
    expect(res.status).toBe(200);
    expect(header(res, "content-type")).toMatch(/^application\/json/);
    expect(Array.isArray(res.json.tenants)).toBe(true);
    expect(res.json.tenants.map((x: { name: string }) => x.name)).toContain("grpc-tenant");

    const denied = await httpRequest(`${cp.url}/gateway.v1.ConfigService/ListTenants`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
    });
    expect(denied.status).toBe(401);
    expect(denied.json.code).toBe("unauthenticated");
  });
});
