import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  GetFleetHealthResponseSchema,
  TargetHealthSchema,
  TargetNodeHealthSchema,
  TrafficStatsSchema,
  type GetFleetHealthResponse,
  type TrafficStats,
} from "../../../proto/gen/gateway/v1/config_service_pb.js";
import type { Rule, RuleTarget } from "../../../proto/gen/gateway/v1/rule_pb.js";
import type { Tenant } from "../../../proto/gen/gateway/v1/tenant_pb.js";
import type { Upstream } from "../../../proto/gen/gateway/v1/upstream_pb.js";
import { parseTargetUrl, targetKey } from "../../../data-plane/src/config/validate.js";
import { requireTenant, type Principal } from "../config/auth.js";
import type { Fleet, FleetConfig } from "./fleet.js";
import type { TargetStats } from "./view.js";

/**
 * GetFleetHealth, independent of transport (the Connect method and the REST route both call it):
 * the configured targets of one backend of a tenant joined with the fleet view.
 */

/** Window used when the request leaves it 0. */
export const DEFAULT_HEALTH_WINDOW_MS = 60_000;

/** The verdict the API shows: the administrative state wins over health. */
export type ApiVerdict = "healthy" | "unhealthy" | "draining" | "disabled";

/** The API verdict of a target from its configured admin state and the fleet's health verdict. */
export function apiVerdict(adminState: string, down: boolean): ApiVerdict {
  if (adminState === "disabled") return "disabled";
  if (adminState === "draining") return "draining";
  return down ? "unhealthy" : "healthy";
}

/** A configured target of a backend. */
interface ConfiguredTarget {
  readonly key: string;
  readonly adminState: string;
}

/** Everything GetFleetHealth reads from the configuration. */
export interface HealthConfig extends FleetConfig {
  readonly tenants: ReadonlyMap<string, Tenant>;
}

/**
 * Builds the GetFleetHealth response. `backendId` is an upstream id or a rule backend
 * ("rule/<id>", "rule/<id>/canary", "rule/<id>/split/<i>/<j>"); another tenant's ids, like unknown
 * ones, answer NOT_FOUND.
 */
export function fleetHealth(
  p: Principal,
  config: HealthConfig,
  fleet: Fleet,
  tenantId: string,
  backendId: string,
  windowMs: number,
  now = Date.now(),
): GetFleetHealthResponse {
  requireTenant(p, tenantId);
  if (!config.tenants.has(tenantId)) throw new ConnectError(`tenant ${tenantId} not found`, Code.NotFound);
  const configured = configuredTargets(config, tenantId, backendId);
  const view = fleet.view;
  const window = view.clampWindow(windowMs > 0 ? windowMs : DEFAULT_HEALTH_WINDOW_MS);
  const stats = view.backendStats(backendId, window, now);

  const keys: { key: string; adminState: string }[] = [...configured];
  const seen = new Set(configured.map((t) => t.key));
  // Targets nodes still report but the configuration dropped (nodes on an older version).
  for (const key of view.targetsOf(backendId)) if (!seen.has(key)) keys.push({ key, adminState: "" });

  const targets = keys.map(({ key, adminState }) => {
    const v = view.verdict(backendId, key);
    const down = v?.down ?? false;
    const probers = fleet.assignment.owners(backendId, key);
    return create(TargetHealthSchema, {
      target: key,
      adminState,
      verdict: apiVerdict(adminState, down),
      down,
      inFlight: Math.max(0, v?.inFlight ?? 0),
      stats: trafficStats(stats.targets.get(key)),
      voters: v?.voters ?? 0,
      downVotes: v?.downVotes ?? 0,
      probers: [...probers],
      nodes: view.nodeViews(backendId, key).map((n) =>
        create(TargetNodeHealthSchema, {
          nodeId: n.nodeId,
          passiveState: n.passiveState,
          probeState: n.probeState,
          inFlight: n.inFlight,
          lastReportMs: BigInt(Math.floor(n.lastReportMs)),
          requests: BigInt(n.requests),
          failures: BigInt(n.failures),
          intervalMs: n.intervalMs,
          prober: probers.includes(n.nodeId),
        }),
      ),
    });
  });

  return create(GetFleetHealthResponseSchema, {
    upstreamId: backendId,
    windowMs: window,
    targets,
    total: trafficStats(stats.total),
    connectedNodes: fleet.connectedNodes(),
    generatedAtMs: BigInt(Math.floor(now)),
  });
}

function trafficStats(s: TargetStats | undefined): TrafficStats {
  if (s === undefined) return create(TrafficStatsSchema);
  return create(TrafficStatsSchema, {
    requests: BigInt(Math.floor(s.requests)),
    failures: BigInt(Math.floor(s.failures)),
    errorRate: s.errorRate,
    p50Ms: s.p50Ms,
    p99Ms: s.p99Ms,
    maxMs: s.maxMs,
    meanMs: s.meanMs,
  });
}

function notFound(what: string): ConnectError {
  return new ConnectError(`${what} not found`, Code.NotFound);
}

/** The configured targets of a tenant's backend, in configuration order. */
function configuredTargets(config: HealthConfig, tenantId: string, backendId: string): ConfiguredTarget[] {
  if (!backendId.startsWith("rule/")) {
    const up = config.upstreams.get(backendId);
    if (up === undefined || up.tenantId !== tenantId) throw notFound(`upstream ${backendId}`);
    return upstreamTargets(up);
  }
  const m = /^rule\/([^/]+)(?:\/(canary)|\/split\/(\d+)\/(\d+))?$/.exec(backendId);
  const rule: Rule | undefined = m === null ? undefined : config.rules.get(m[1]);
  if (m === null || rule === undefined || rule.tenantId !== tenantId) throw notFound(`backend ${backendId}`);
  if (m[2] === "canary") {
    if (rule.canary === undefined || rule.canary.targets.length === 0) throw notFound(`backend ${backendId}`);
    return ruleTargets(rule.canary.targets);
  }
  if (m[3] !== undefined) {
    const w = rule.trafficSplit?.rules[Number(m[3])]?.weightedUpstreams[Number(m[4])];
    if (w === undefined || w.upstreamId !== "" || w.upstream === undefined) throw notFound(`backend ${backendId}`);
    return upstreamTargets(w.upstream);
  }
  if (rule.targets.length === 0) throw notFound(`backend ${backendId}`);
  return ruleTargets(rule.targets);
}

function upstreamTargets(up: Upstream): ConfiguredTarget[] {
  return up.targets.map((t) => ({ key: targetKey(t), adminState: t.adminState || "enabled" }));
}

/**
 * Inline URL targets, keyed as the data plane's compiler keys them ("host:port", default ports
 * from the scheme). Stored rules were validated, so the URLs parse.
 */
function ruleTargets(targets: readonly RuleTarget[]): ConfiguredTarget[] {
  return targets.map((t, i) => {
    const url = parseTargetUrl(t.url, `targets[${i}].url`);
    const port = url.port !== "" ? Number(url.port) : url.protocol === "https:" ? 443 : 80;
    return { key: targetKey({ host: url.hostname.replace(/^\[|\]$/g, ""), port }), adminState: "enabled" };
  });
}
