/**
 * Compiled configurations for the counter tests, built the way a data plane builds them (protobuf
 * snapshot → compileSnapshot), so keys and balancers are the real ones.
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { RuleSchema } from "../../../../proto/gen/gateway/v1/rule_pb.js";
import { ResourceSchema, SnapshotSchema, type Resource } from "../../../../proto/gen/gateway/v1/snapshot_pb.js";
import { TenantSchema } from "../../../../proto/gen/gateway/v1/tenant_pb.js";
import { UpstreamSchema } from "../../../../proto/gen/gateway/v1/upstream_pb.js";
import { compileSnapshot, type CompiledConfig } from "../../../../data-plane/src/config/compile.js";

export const TENANT = "t1";

/** A resource with its own revision (the store version that last wrote it). */
export interface Versioned<T> {
  readonly revision: bigint;
  readonly value: T;
}

export type RuleInit = MessageInitShape<typeof RuleSchema>;
export type UpstreamInit = MessageInitShape<typeof UpstreamSchema>;

/** Compiles a snapshot at `version` holding tenant t1 and the given rules and upstreams. */
export function compile(version: bigint, rules: Versioned<RuleInit>[], upstreams: Versioned<UpstreamInit>[] = []): CompiledConfig {
  const resources: Resource[] = [
    create(ResourceSchema, { name: `tenant/${TENANT}`, revision: 1n, kind: { case: "tenant", value: create(TenantSchema, { id: TENANT, name: TENANT }) } }),
  ];
  for (const u of upstreams) {
    const value = create(UpstreamSchema, { tenantId: TENANT, ...u.value });
    resources.push(create(ResourceSchema, { name: `upstream/${value.id}`, revision: u.revision, kind: { case: "upstream", value } }));
  }
  for (const r of rules) {
    const value = create(RuleSchema, { tenantId: TENANT, ...r.value });
    resources.push(create(ResourceSchema, { name: `rule/${value.id}`, revision: r.revision, kind: { case: "rule", value } }));
  }
  return compileSnapshot(create(SnapshotSchema, { version, resources }));
}

/** A rule with inline targets at these weights ("http://<name>.test:80"), e.g. { stable: 90, canary: 10 }. */
export function weightedRule(id: string, weights: Record<string, number>, path = `/${id}/*`): RuleInit {
  return { id, path, targets: Object.entries(weights).map(([name, weight]) => ({ url: `http://${name}.test`, weight })) };
}

/** An upstream with one target per name (host "<name>.test", port 80), weight-less unless given. */
export function upstream(id: string, names: readonly string[], algorithm = "round-robin", weights?: Record<string, number>): UpstreamInit {
  return { id, name: id, algorithm, targets: names.map((n) => ({ host: `${n}.test`, port: 80, weight: weights?.[n] ?? 1 })) };
}

/** A rule whose first split rule sends traffic to upstreams by weight, e.g. { v1: 90, v2: 10 }. */
export function splitRule(id: string, ownUpstream: string, weights: Record<string, number>): RuleInit {
  return {
    id,
    path: `/${id}/*`,
    upstreamId: ownUpstream,
    trafficSplit: { rules: [{ weightedUpstreams: Object.entries(weights).map(([upstreamId, weight]) => ({ upstreamId, weight })) }] },
  };
}

/** The route of rule `id`. */
export function route(config: CompiledConfig, id: string) {
  const r = config.routes.find((x) => x.ruleId === id);
  if (r === undefined) throw new Error(`no route ${id}`);
  return r;
}

/** Host name of a target key ("canary.test:80" → "canary"). */
export function nameOf(key: string): string {
  return key.slice(0, key.indexOf("."));
}
