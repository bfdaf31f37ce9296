import type { Rule, RuleTarget, SplitRule } from "../../../proto/gen/gateway/v1/rule_pb.js";
import type { Resource, Snapshot } from "../../../proto/gen/gateway/v1/snapshot_pb.js";
import type { Tenant } from "../../../proto/gen/gateway/v1/tenant_pb.js";
import type { HashOn, Upstream } from "../../../proto/gen/gateway/v1/upstream_pb.js";
import type { AlgorithmName, Balancer, BalancerTarget, LoadCounters } from "../balancer/balancer.js";
import { createBalancer } from "../balancer/factory.js";
import { resolveActiveCheck, type ResolvedActiveCheck } from "../health/active.js";
import { resolvePassiveCheck, type ResolvedPassiveCheck } from "../health/passive.js";
import type { ForwardTarget } from "../proxy/forward.js";
import { Router, RouteConflictError, stripLength, type RouteSpec } from "../router/match.js";
import { compileMatch, type CompiledMatch } from "../split/expr.js";
import { buildJwtVerifier, type JwtVerifier } from "../split/jwt.js";
import { StickyBuckets } from "../split/sticky.js";
import { ConfigError, DuplicateRouteError } from "./errors.js";
import { parseTargetUrl, ruleTargetMode, targetKey, validateRule, validateTenant, validateUpstream } from "./validate.js";

/**
 * Compiles a snapshot into the immutable structures the proxy reads per request: the router, the
 * backends with their targets and balancers, split rules with compiled expressions, and tenants'
 * JWT verifiers. The control plane runs the same function on every candidate configuration, so it
 * never publishes what a data plane would NACK.
 */

/** A target as the proxy and the balancers see it. Load counters are the only mutable part. */
export interface CompiledTarget extends BalancerTarget {
  /** "host:port", the target's identity within its backend (reports, health). */
  readonly key: string;
  /** Configured weight (0 = never chosen). */
  readonly weight: number;
  readonly load: LoadCounters;
  /** "http://host:port" or "https://host:port". */
  readonly origin: string;
  /** Path prepended to the forwarded path ("" for none). */
  readonly basePath: string;
  /** Host header when the backend sends the target's own host. */
  readonly hostHeader: string;
  readonly priority: number;
  readonly adminState: "enabled" | "draining" | "disabled";
  /** Active check for this target, if any (the upstream's, or the target's override). */
  readonly activeCheck: ResolvedActiveCheck | undefined;
  /** What forward() needs of the target, built once here rather than per attempt. */
  readonly forward: ForwardTarget;
  readonly hostname: string;
  readonly port: number;
}

/** Timeouts, retries and host policy of a backend. */
export interface BackendPolicy {
  readonly connectTimeoutMs: number;
  readonly sendTimeoutMs: number;
  readonly readTimeoutMs: number;
  readonly retries: number;
  readonly retryStatuses: ReadonlySet<number>;
  readonly retryTimeoutMs: number;
  readonly retryNonIdempotent: boolean;
  /** "pass": client Host; "node": target host; "rewrite": upstreamHost. */
  readonly passHost: "pass" | "node" | "rewrite";
  readonly upstreamHost: string;
}

/** A pool of targets with one algorithm: an upstream, or a rule's inline targets. */
export interface CompiledBackend {
  /** Upstream id, or "rule/<id>" (inline targets), "rule/<id>/canary", "rule/<id>/split/<i>/<j>". */
  readonly id: string;
  readonly tenantId: string;
  readonly algorithm: AlgorithmName;
  readonly hashOn: HashOn | undefined;
  /** Every configured target, including weight 0 and disabled ones (health and reports see them all). */
  readonly targets: readonly CompiledTarget[];
  readonly policy: BackendPolicy;
  readonly passive: ResolvedPassiveCheck;
  /** Store revision of the resource that defined the backend (changes when it is edited). */
  readonly revision: bigint;
  /**
   * Current picker over the eligible targets. Replaced as a whole (never mutated) when health,
   * draining or priority failover change what is eligible.
   */
  balancer: Balancer<CompiledTarget>;
}

/** One weighted choice of a split rule. */
export interface SplitChoice extends BalancerTarget {
  readonly backend: CompiledBackend;
}

/** A compiled split rule: a match and a weighted choice among backends. */
export interface CompiledSplitRule {
  readonly match: CompiledMatch;
  readonly choices: readonly SplitChoice[];
  /** Exact weighted rotation across choices (smooth weighted round-robin). */
  readonly chooser: Balancer<SplitChoice>;
  /** Present for sticky splits: the key hashed into weight buckets. */
  readonly hashOn: HashOn | undefined;
  /** Weight buckets over `choices` for sticky splits (same user, same side; raising a weight only moves users in). */
  readonly sticky: StickyBuckets | undefined;
}

/** Header / query canary shortcut. */
export interface CompiledCanary {
  readonly header: string;
  readonly headerValue: string;
  readonly query: string;
  readonly queryValue: string;
  readonly backend: CompiledBackend;
}

/** A rule ready to serve. */
export interface CompiledRoute extends RouteSpec {
  readonly ruleId: string;
  readonly tenantId: string;
  /** Store revision of the rule. */
  readonly revision: bigint;
  /** Characters to strip from the start of the path (0 when strip_path is off). */
  readonly strip: number;
  readonly backend: CompiledBackend;
  readonly canary: CompiledCanary | undefined;
  readonly split: readonly CompiledSplitRule[];
  /** True when a split or sticky key reads JWT claims (verification is async, done only then). */
  readonly needsJwt: boolean;
}

/** The whole compiled configuration of one snapshot version. */
export interface CompiledConfig {
  readonly version: bigint;
  readonly router: Router<CompiledRoute>;
  readonly routes: readonly CompiledRoute[];
  readonly backends: ReadonlyMap<string, CompiledBackend>;
  readonly tenants: ReadonlyMap<string, { readonly tenant: Tenant; readonly jwt: JwtVerifier | undefined }>;
}

const DEFAULT_CONNECT_MS = 5_000;
const DEFAULT_SEND_MS = 60_000;
const DEFAULT_READ_MS = 60_000;
const DEFAULT_RETRY_STATUSES = [502, 503, 504];

/** Splits a snapshot's resources by kind; throws on unknown or empty resources. */
export function indexResources(resources: readonly Resource[]): {
  rules: Map<string, { rule: Rule; revision: bigint }>;
  upstreams: Map<string, { upstream: Upstream; revision: bigint }>;
  tenants: Map<string, Tenant>;
} {
  const rules = new Map<string, { rule: Rule; revision: bigint }>();
  const upstreams = new Map<string, { upstream: Upstream; revision: bigint }>();
  const tenants = new Map<string, Tenant>();
  for (const r of resources) {
    switch (r.kind.case) {
      case "rule":
        rules.set(r.kind.value.id, { rule: r.kind.value, revision: r.revision });
        break;
      case "upstream":
        upstreams.set(r.kind.value.id, { upstream: r.kind.value, revision: r.revision });
        break;
      case "tenant":
        tenants.set(r.kind.value.id, r.kind.value);
        break;
      default:
        throw new ConfigError(r.name || "(resource)", "resource has no kind");
    }
  }
  return { rules, upstreams, tenants };
}

/**
 * Compiles a snapshot; throws ConfigError naming the resource and field on anything invalid.
 *
 * With `previous` (the configuration being served), backends and routes whose resources did not
 * change (same id and revision, and for routes the same backends) are carried over as they are:
 * their rotation positions, health-driven pickers and counters continue, so an unrelated write
 * (another tenant's, say) never restarts a rule's weighted cycle.
 */
export function compileSnapshot(snapshot: Snapshot, previous?: CompiledConfig): CompiledConfig {
  const { rules, upstreams, tenants } = indexResources(snapshot.resources);

  const tenantMap = new Map<string, { tenant: Tenant; jwt: JwtVerifier | undefined }>();
  // Resources unchanged since `previous` (same revision) were validated when it was compiled: they
  // are reused as they are, so compiling after a one-resource change costs about that resource.
  for (const [id, t] of tenants) {
    const prev = previous?.tenants.get(id);
    if (prev !== undefined && t.revision !== 0n && prev.tenant.revision === t.revision) {
      tenantMap.set(id, prev);
      continue;
    }
    const tenant = validateTenant(t, `tenant/${id}`).value;
    tenantMap.set(id, { tenant, jwt: tenant.jwt === undefined ? undefined : buildJwtVerifier(tenant.jwt, `tenant/${id}.jwt`) });
  }

  const backends = new Map<string, CompiledBackend>();
  for (const [id, { upstream, revision }] of upstreams) {
    const field = `upstream/${id}`;
    const prev = previous?.backends.get(id);
    if (prev !== undefined && prev.revision === revision) {
      if (!tenantMap.has(prev.tenantId)) throw new ConfigError(`${field}.tenant_id`, `tenant ${prev.tenantId} does not exist`);
      backends.set(id, prev);
      continue;
    }
    const up = validateUpstream(upstream, field).value;
    if (!tenantMap.has(up.tenantId)) throw new ConfigError(`${field}.tenant_id`, `tenant ${up.tenantId} does not exist`);
    backends.set(id, compileUpstream(id, up, revision, field));
  }
  const previousRoutes = new Map(previous?.routes.map((r) => [r.ruleId, r]));

  const routes: CompiledRoute[] = [];
  for (const [id, entry] of rules) {
    const field = `rule/${id}`;
    const prev = previousRoutes.get(id);
    if (prev !== undefined && prev.revision === entry.revision && sameBackends(prev, backends)) {
      if (!tenantMap.has(prev.tenantId)) throw new ConfigError(`${field}.tenant_id`, `tenant ${prev.tenantId} does not exist`);
      for (const b of inlineBackends(prev)) backends.set(b.id, b);
      routes.push(prev);
      continue;
    }
    const rule = validateRule(entry.rule, field).value;
    if (!tenantMap.has(rule.tenantId)) throw new ConfigError(`${field}.tenant_id`, `tenant ${rule.tenantId} does not exist`);
    routes.push(compileRule(rule, entry.revision, field, backends));
  }

  let router: Router<CompiledRoute>;
  try {
    router = new Router(routes);
  } catch (err) {
    if (err instanceof RouteConflictError) {
      const { existing, incoming } = err as RouteConflictError<CompiledRoute>;
      throw new DuplicateRouteError(
        { ruleId: existing.ruleId, tenantId: existing.tenantId },
        { ruleId: incoming.ruleId, tenantId: incoming.tenantId },
        err.where,
      );
    }
    throw err;
  }
  return { version: snapshot.version, router, routes, backends, tenants: tenantMap };
}

/** Every backend a route can send to. */
function routeBackends(r: CompiledRoute): CompiledBackend[] {
  const list = [r.backend];
  if (r.canary !== undefined) list.push(r.canary.backend);
  for (const sr of r.split) for (const c of sr.choices) list.push(c.backend);
  return list;
}

/** The route's own backends (inline targets), which live and die with the rule. */
function inlineBackends(r: CompiledRoute): CompiledBackend[] {
  return routeBackends(r).filter((b) => b.id.startsWith("rule/"));
}

/** Whether every upstream the route uses is the very object of the new configuration. */
function sameBackends(r: CompiledRoute, backends: ReadonlyMap<string, CompiledBackend>): boolean {
  return routeBackends(r).every((b) => b.id.startsWith("rule/") || backends.get(b.id) === b);
}

function lookupUpstream(backends: Map<string, CompiledBackend>, id: string, tenantId: string, field: string): CompiledBackend {
  const b = backends.get(id);
  // Another tenant's upstream reads as missing: ids must not leak across tenants.
  if (b === undefined || b.tenantId !== tenantId) throw new ConfigError(field, `upstream ${id} does not exist`);
  return b;
}

function compileRule(rule: Rule, revision: bigint, field: string, backends: Map<string, CompiledBackend>): CompiledRoute {
  const ruleBackendId = `rule/${rule.id}`;
  const backend =
    rule.upstreamId !== ""
      ? lookupUpstream(backends, rule.upstreamId, rule.tenantId, `${field}.upstream_id`)
      : inlineBackend(ruleBackendId, rule.tenantId, rule.targets, revision, `${field}.targets`, backends);

  let canary: CompiledCanary | undefined;
  if (rule.canary !== undefined) {
    const c = rule.canary;
    canary = {
      header: c.header,
      headerValue: c.headerValue,
      query: c.query,
      queryValue: c.queryValue,
      backend:
        c.upstreamId !== ""
          ? lookupUpstream(backends, c.upstreamId, rule.tenantId, `${field}.canary.upstream_id`)
          : inlineBackend(`${ruleBackendId}/canary`, rule.tenantId, c.targets, revision, `${field}.canary.targets`, backends),
    };
  }

  let needsJwt = false;
  const split = (rule.trafficSplit?.rules ?? []).map((sr, i) => {
    const compiled = compileSplitRule(sr, i, rule, revision, backend, `${field}.traffic_split.rules[${i}]`, backends);
    needsJwt ||= compiled.match.needsJwt || compiled.hashOn?.source === "jwt_claim";
    return compiled;
  });
  // A backend that hashes on a claim (consistent hashing) needs the verified claims too.
  const hashesOnClaim = (b: CompiledBackend) => b.hashOn?.source === "jwt_claim";
  needsJwt ||= hashesOnClaim(backend) || (canary !== undefined && hashesOnClaim(canary.backend)) || split.some((sr) => sr.choices.some((c) => hashesOnClaim(c.backend)));

  return {
    name: `rule ${rule.id} (tenant ${rule.tenantId}, ${rule.path})`,
    hosts: rule.hosts,
    path: rule.path,
    methods: rule.methods,
    ruleId: rule.id,
    tenantId: rule.tenantId,
    revision,
    strip: rule.stripPath ? stripLength(rule.path) : 0,
    backend,
    canary,
    split,
    needsJwt,
  };
}

function compileSplitRule(
  sr: SplitRule,
  index: number,
  rule: Rule,
  revision: bigint,
  ruleBackend: CompiledBackend,
  field: string,
  backends: Map<string, CompiledBackend>,
): CompiledSplitRule {
  const match = compileMatch(sr.match, `${field}.match`);
  const choices: SplitChoice[] = sr.weightedUpstreams.map((w, j) => {
    const wf = `${field}.weighted_upstreams[${j}]`;
    let backend: CompiledBackend;
    if (w.upstreamId !== "") backend = lookupUpstream(backends, w.upstreamId, rule.tenantId, `${wf}.upstream_id`);
    else if (w.upstream !== undefined) {
      const id = `rule/${rule.id}/split/${index}/${j}`;
      backend = compileUpstream(id, { ...w.upstream, tenantId: rule.tenantId }, revision, `${wf}.upstream`);
      backends.set(id, backend);
    } else backend = ruleBackend;
    return { key: `${j}:${backend.id}`, weight: w.weight ?? 1, load: { inFlight: 0, fleetInFlight: 0 }, backend };
  });
  const live = choices.filter((c) => c.weight > 0);
  // Seeded by rule and position so different rules' canaries do not all pick the same first users.
  const sticky = sr.hashOn === undefined ? undefined : new StickyBuckets(choices.map((c) => c.weight), `${rule.id}/${index}`, `${field}.weighted_upstreams`);
  return { match, choices, chooser: createBalancer("weighted-round-robin", live), hashOn: sr.hashOn, sticky };
}

/** Backend of a rule's inline URL targets (TrustGate shape): weights 100 → weighted, else round-robin. */
function inlineBackend(
  id: string,
  tenantId: string,
  targets: readonly RuleTarget[],
  revision: bigint,
  field: string,
  backends: Map<string, CompiledBackend>,
): CompiledBackend {
  const { mode } = ruleTargetMode(targets);
  const compiled = targets.map((t, i): CompiledTarget => {
    const url = parseTargetUrl(t.url, `${field}[${i}].url`);
    const port = url.port !== "" ? Number(url.port) : url.protocol === "https:" ? 443 : 80;
    const weight = t.weight === 0 ? 0 : mode === "weighted" ? t.weight! : 1;
    const basePath = url.pathname === "/" ? "" : url.pathname.replace(/\/$/, "");
    return {
      key: targetKey({ host: url.hostname.replace(/^\[|\]$/g, ""), port }),
      weight,
      load: { inFlight: 0, fleetInFlight: 0 },
      origin: url.origin,
      basePath,
      hostHeader: url.host,
      priority: 0,
      adminState: "enabled",
      activeCheck: undefined,
      forward: { origin: url.origin, basePath, hostHeader: undefined },
      hostname: url.hostname,
      port,
    };
  });
  const backend = makeBackend(id, tenantId, mode === "weighted" ? "weighted-round-robin" : "round-robin", undefined, compiled, {
    ...defaultPolicy(),
    // A URL target names its own virtual host (https://api1.example.com): send that host, as Kong does.
    passHost: "node",
  }, resolvePassiveCheck(undefined, `${field}`), revision);
  backends.set(id, backend);
  return backend;
}

function defaultPolicy(): BackendPolicy {
  return {
    connectTimeoutMs: DEFAULT_CONNECT_MS,
    sendTimeoutMs: DEFAULT_SEND_MS,
    readTimeoutMs: DEFAULT_READ_MS,
    retries: 1,
    retryStatuses: new Set(DEFAULT_RETRY_STATUSES),
    retryTimeoutMs: 0,
    retryNonIdempotent: false,
    passHost: "pass",
    upstreamHost: "",
  };
}

function compileUpstream(id: string, up: Upstream, revision: bigint, field: string): CompiledBackend {
  const scheme = up.scheme === "" ? "http" : up.scheme;
  const upstreamActive = up.healthCheck?.active;
  const targets = up.targets.map((t, i): CompiledTarget => {
    const key = targetKey(t);
    const hostForUrl = t.host.includes(":") ? `[${t.host}]` : t.host;
    const override = t.activeCheck ?? upstreamActive;
    const origin = `${scheme}://${hostForUrl}:${t.port}`;
    return {
      key,
      weight: t.weight ?? 1,
      load: { inFlight: 0, fleetInFlight: 0 },
      origin,
      basePath: "",
      hostHeader: `${hostForUrl}:${t.port}`,
      priority: t.priority,
      adminState: (t.adminState || "enabled") as CompiledTarget["adminState"],
      activeCheck: override === undefined ? undefined : resolveActiveCheck(override, `${field}.targets[${i}].active_check`),
      forward: { origin, basePath: "", hostHeader: up.passHost === "rewrite" ? up.upstreamHost : undefined },
      hostname: t.host,
      port: t.port,
    };
  });
  const d = defaultPolicy();
  const policy: BackendPolicy = {
    connectTimeoutMs: up.timeouts?.connectMs || d.connectTimeoutMs,
    sendTimeoutMs: up.timeouts?.sendMs || d.sendTimeoutMs,
    readTimeoutMs: up.timeouts?.readMs || d.readTimeoutMs,
    retries: up.retries === undefined ? d.retries : up.retries.count,
    retryStatuses: up.retries === undefined || up.retries.statuses.length === 0 ? d.retryStatuses : new Set(up.retries.statuses),
    retryTimeoutMs: up.retries?.timeoutMs ?? 0,
    retryNonIdempotent: up.retries?.retryNonIdempotent ?? false,
    passHost: (up.passHost || "pass") as BackendPolicy["passHost"],
    upstreamHost: up.upstreamHost,
  };
  return makeBackend(
    id,
    up.tenantId,
    (up.algorithm || "round-robin") as AlgorithmName,
    up.hashOn,
    targets,
    policy,
    resolvePassiveCheck(up.healthCheck?.passive, `${field}.health_check.passive`),
    revision,
  );
}

function makeBackend(
  id: string,
  tenantId: string,
  algorithm: AlgorithmName,
  hashOn: HashOn | undefined,
  targets: CompiledTarget[],
  policy: BackendPolicy,
  passive: ResolvedPassiveCheck,
  revision: bigint,
): CompiledBackend {
  return {
    id,
    tenantId,
    algorithm,
    hashOn,
    targets,
    policy,
    passive,
    revision,
    balancer: createBalancer(algorithm, initialEligible(targets)),
  };
}

/**
 * Eligible targets before any health information: enabled, weight > 0, in the best priority group.
 * The data plane's health layer replaces the balancer as soon as it knows more.
 */
export function initialEligible(targets: readonly CompiledTarget[]): CompiledTarget[] {
  const usable = targets.filter((t) => t.adminState === "enabled" && t.weight > 0);
  if (usable.length === 0) return usable;
  const best = Math.min(...usable.map((t) => t.priority));
  return usable.filter((t) => t.priority === best);
}
