import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { compileSnapshot, type CompiledConfig } from "../../../../data-plane/src/config/compile.js";
import { DuplicateRouteError } from "../../../../data-plane/src/config/errors.js";
import { ResourceSchema, SnapshotSchema, type Resource } from "../../../../proto/gen/gateway/v1/snapshot_pb.js";

function tenant(id: string): Resource {
  return create(ResourceSchema, { name: `tenant/${id}`, revision: 1n, kind: { case: "tenant", value: { id, name: id } } });
}
function rule(id: string, revision: bigint, path: string, targets: { url: string; weight?: number }[], extra: object = {}): Resource {
  return create(ResourceSchema, { name: `rule/${id}`, revision, kind: { case: "rule", value: { id, tenantId: "t", path, targets, ...extra } } } as never);
}
function upstream(id: string, revision: bigint, port: number): Resource {
  return create(ResourceSchema, {
    name: `upstream/${id}`,
    revision,
    kind: { case: "upstream", value: { id, tenantId: "t", name: id, targets: [{ host: "10.0.0.1", port }, { host: "10.0.0.2", port }] } },
  });
}
function compile(version: bigint, resources: Resource[], previous?: CompiledConfig): CompiledConfig {
  return compileSnapshot(create(SnapshotSchema, { version, resources }), previous);
}

const canary = rule("canary", 2n, "/api/*", [
  { url: "http://stable", weight: 90 },
  { url: "http://canary", weight: 10 },
]);

describe("compileSnapshot carry-over", () => {
  it("keeps the weighted cycle of an unchanged rule across unrelated snapshots", () => {
    // Reference: 1,000 picks from one configuration.
    const reference = compile(1n, [tenant("t"), canary]);
    const expected = Array.from({ length: 1000 }, () => reference.routes[0].backend.balancer.pick()!.key);

    // The same picks with a new snapshot (another rule added each time) between every two requests.
    let config = compile(1n, [tenant("t"), canary]);
    const seen: string[] = [];
    for (let i = 0; i < 1000; i++) {
      seen.push(config.routes.find((r) => r.ruleId === "canary")!.backend.balancer.pick()!.key);
      config = compile(BigInt(i + 2), [tenant("t"), canary, rule(`other${i}`, BigInt(i + 2), `/o${i}`, [{ url: "http://x" }])], config);
    }
    expect(seen).toEqual(expected);
    expect(seen.filter((k) => k.startsWith("canary")).length).toBe(100);
  });

  it("reuses unchanged upstream backends and rebuilds changed ones and the routes using them", () => {
    const r = rule("r", 3n, "/u/*", [], { upstreamId: "u" });
    const first = compile(1n, [tenant("t"), upstream("u", 1n, 80), upstream("v", 1n, 80), r]);
    const second = compile(2n, [tenant("t"), upstream("u", 1n, 80), upstream("v", 2n, 81), r], first);
    expect(second.backends.get("u")).toBe(first.backends.get("u"));
    expect(second.backends.get("v")).not.toBe(first.backends.get("v"));
    expect(second.routes[0]).toBe(first.routes[0]);
    const third = compile(3n, [tenant("t"), upstream("u", 3n, 82), upstream("v", 2n, 81), r], second);
    expect(third.routes[0]).not.toBe(second.routes[0]);
    expect(third.routes[0].backend).toBe(third.backends.get("u"));
    expect(third.routes[0].backend.targets[0].port).toBe(82);
  });

  it("refuses two rules on the same route with both owners named", () => {
    const a = rule("a", 1n, "/same/*", [{ url: "http://a" }]);
    const b = rule("b", 2n, "/same/*", [{ url: "http://b" }]);
    try {
      compile(2n, [tenant("t"), a, b]);
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(DuplicateRouteError);
      const e = err as DuplicateRouteError;
      expect(e.field).toBe("rule/b.path");
      expect(e.existing).toEqual({ ruleId: "a", tenantId: "t" });
      expect(e.where).toBe("host * path /same/* (any method)");
    }
  });

  it("marks a route whose upstream hashes on a JWT claim as needing verified claims", () => {
    const hashed = create(ResourceSchema, {
      name: "upstream/h",
      revision: 1n,
      kind: {
        case: "upstream",
        value: { id: "h", tenantId: "t", name: "h", algorithm: "consistent-hash", hashOn: { source: "jwt_claim", name: "sub" }, targets: [{ host: "10.0.0.1", port: 80 }] },
      },
    });
    const config = compile(1n, [tenant("t"), hashed, rule("r", 2n, "/h/*", [], { upstreamId: "h" }), rule("plain", 3n, "/p/*", [{ url: "http://p" }])]);
    expect(config.routes.find((r) => r.ruleId === "r")!.needsJwt).toBe(true);
    expect(config.routes.find((r) => r.ruleId === "plain")!.needsJwt).toBe(false);
  });
});
