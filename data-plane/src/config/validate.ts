import { clone, create } from "@bufbuild/protobuf";
import { isIP } from "node:net";
import {
  CanaryRouteSchema,
  RuleSchema,
  type CanaryRoute,
  type Rule,
  type RuleTarget,
  type TrafficSplit,
} from "../../../proto/gen/gateway/v1/rule_pb.js";
import { TenantSchema, type Tenant } from "../../../proto/gen/gateway/v1/tenant_pb.js";
import { UpstreamSchema, type HashOn, type Target, type Upstream } from "../../../proto/gen/gateway/v1/upstream_pb.js";
import { resolveActiveCheck } from "../health/active.js";
import { resolvePassiveCheck } from "../health/passive.js";
import { compileMatch } from "../split/expr.js";
import { buildJwtVerifier } from "../split/jwt.js";
import { ConfigError } from "./errors.js";

/**
 * Single-resource validation and normalisation, shared by the control plane (at write time) and
 * the data plane (when compiling a snapshot). Cross-resource checks (references, route conflicts)
 * live in compile.ts. Each function returns a normalised copy and never mutates its input.
 */

/** A validated resource and the remarks that do not block the write. */
export interface Validated<T> {
  readonly value: T;
  readonly warnings: string[];
}

export const HTTP_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"] as const;
export const ALGORITHMS = ["round-robin", "weighted-round-robin", "least-connections", "consistent-hash", "random"] as const;
export const ADMIN_STATES = ["enabled", "draining", "disabled"] as const;
export const HASH_SOURCES = ["header", "cookie", "query", "jwt_claim", "client_ip"] as const;

const NAME_RE = /^[A-Za-z0-9._-]{1,128}$/;
const HOST_LABEL_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const MAX_TARGETS = 10_000;
const MAX_RULE_WEIGHT = 100;
const MAX_WEIGHT = 10_000;

/** How a rule's inline targets are balanced, decided by their weights (seed 000). */
export type RuleTargetMode = "round-robin" | "weighted";

/** Tells how inline targets are balanced and why, so the API can warn on a round-robin fallback. */
export function ruleTargetMode(targets: readonly RuleTarget[]): { mode: RuleTargetMode; sum: number } {
  if (targets.length === 0 || targets[0].weight === undefined) return { mode: "round-robin", sum: 0 };
  const sum = targets.reduce((s, t) => s + (t.weight ?? 0), 0);
  return { mode: sum === 100 ? "weighted" : "round-robin", sum };
}

/** Validates and normalises a rule (methods upper-cased, hosts lower-cased). */
export function validateRule(input: Rule, path = ""): Validated<Rule> {
  const rule = clone(RuleSchema, input);
  const warnings: string[] = [];
  const at = (f: string) => (path === "" ? f : `${path}.${f}`);

  validatePath(rule.path, at("path"));

  const methods = new Set<string>();
  rule.methods = rule.methods.map((m, i) => {
    const upper = m.toUpperCase();
    if (!(HTTP_METHODS as readonly string[]).includes(upper)) {
      throw new ConfigError(at(`methods[${i}]`), `unknown HTTP method "${m}" (expected one of ${HTTP_METHODS.join(", ")})`);
    }
    if (methods.has(upper)) throw new ConfigError(at(`methods[${i}]`), `duplicate method ${upper}`);
    methods.add(upper);
    return upper;
  });

  const hosts = new Set<string>();
  rule.hosts = rule.hosts.map((h, i) => {
    const host = validateRouteHost(h, at(`hosts[${i}]`));
    if (hosts.has(host)) throw new ConfigError(at(`hosts[${i}]`), `duplicate host ${host}`);
    hosts.add(host);
    return host;
  });

  const hasTargets = rule.targets.length > 0;
  if (hasTargets && rule.upstreamId !== "") {
    throw new ConfigError(at("upstream_id"), "set either targets or upstream_id, not both");
  }
  if (!hasTargets && rule.upstreamId === "") {
    throw new ConfigError(at("targets"), "must not be empty (or set upstream_id)");
  }
  if (hasTargets) warnings.push(...validateRuleTargets(rule.targets, at("targets")));

  if (rule.trafficSplit !== undefined) validateTrafficSplit(rule.trafficSplit, at("traffic_split"));
  if (rule.canary !== undefined) rule.canary = validateCanary(rule.canary, at("canary"));
  validateMetadata(rule.metadata, at("metadata"));
  return { value: rule, warnings };
}

function validatePath(p: string, field: string): void {
  if (p === "") throw new ConfigError(field, "is required");
  if (!p.startsWith("/")) throw new ConfigError(field, `must start with "/", got "${p}"`);
  if (p.length > 2048) throw new ConfigError(field, "must be at most 2048 characters");
  const star = p.indexOf("*");
  if (star !== -1 && star !== p.length - 1) {
    throw new ConfigError(field, `"*" is only allowed as the last character (prefix match), got "${p}"`);
  }
  if (/[\s?#]/.test(p)) throw new ConfigError(field, "must not contain whitespace, '?' or '#'");
}

function validateRouteHost(h: string, field: string): string {
  const host = h.toLowerCase();
  const bare = host.startsWith("*.") ? host.slice(2) : host;
  if (isIP(bare) !== 0 && bare === host) return host;
  const labels = bare.split(".");
  if (bare.length === 0 || bare.length > 253 || !labels.every((l) => HOST_LABEL_RE.test(l))) {
    throw new ConfigError(field, `invalid host name "${h}" (a DNS name, an IP address, or "*.example.com")`);
  }
  return host;
}

/** Returns the warnings for a list of rule targets; throws on invalid ones. */
export function validateRuleTargets(targets: readonly RuleTarget[], field: string): string[] {
  if (targets.length > MAX_TARGETS) throw new ConfigError(field, `at most ${MAX_TARGETS} targets`);
  const withWeight = targets.filter((t) => t.weight !== undefined).length;
  if (withWeight !== 0 && withWeight !== targets.length) {
    throw new ConfigError(field, "either every target has a weight or none has (without weights targets are served round-robin)");
  }
  const seen = new Set<string>();
  targets.forEach((t, i) => {
    const url = parseTargetUrl(t.url, `${field}[${i}].url`);
    if (seen.has(url.href)) throw new ConfigError(`${field}[${i}].url`, `duplicate target ${t.url}`);
    seen.add(url.href);
    if (t.weight !== undefined && t.weight > MAX_RULE_WEIGHT) {
      throw new ConfigError(`${field}[${i}].weight`, `must be an integer from 0 to ${MAX_RULE_WEIGHT} (a percentage), got ${t.weight}`);
    }
  });
  if (withWeight === 0) return [];
  if (targets.every((t) => t.weight === 0)) {
    throw new ConfigError(field, "every target has weight 0: at least one must receive traffic");
  }
  const { mode, sum } = ruleTargetMode(targets);
  if (mode === "round-robin") {
    return [`${field}: weights sum to ${sum}, not 100: targets are served round-robin (weight-0 targets still receive nothing)`];
  }
  return [];
}

/** Parses a rule target URL: absolute http(s), no credentials, query or fragment. */
export function parseTargetUrl(raw: string, field: string): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError(field, `invalid URL "${raw}"`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new ConfigError(field, `scheme must be http or https, got "${url.protocol.replace(":", "")}"`);
  }
  if (url.username !== "" || url.password !== "") throw new ConfigError(field, "must not contain credentials");
  if (url.search !== "" || url.hash !== "") throw new ConfigError(field, "must not contain a query or fragment");
  if (url.hostname === "") throw new ConfigError(field, "must have a host");
  return url;
}

function validateTrafficSplit(split: TrafficSplit, field: string): void {
  split.rules.forEach((r, i) => {
    const at = `${field}.rules[${i}]`;
    compileMatch(r.match, `${at}.match`);
    if (r.weightedUpstreams.length === 0) throw new ConfigError(`${at}.weighted_upstreams`, "must not be empty");
    let total = 0;
    r.weightedUpstreams.forEach((w, j) => {
      const wf = `${at}.weighted_upstreams[${j}]`;
      if (w.upstreamId !== "" && w.upstream !== undefined) {
        throw new ConfigError(wf, "set either upstream_id or upstream, not both");
      }
      if (w.upstream !== undefined) w.upstream = validateUpstream(w.upstream, `${wf}.upstream`).value;
      const weight = w.weight ?? 1;
      if (weight > MAX_WEIGHT) throw new ConfigError(`${wf}.weight`, `must be an integer from 0 to ${MAX_WEIGHT}, got ${weight}`);
      total += weight;
    });
    if (total === 0) throw new ConfigError(`${at}.weighted_upstreams`, "every weight is 0: at least one must receive traffic");
    if (r.hashOn !== undefined) validateHashOn(r.hashOn, `${at}.hash_on`);
  });
}

function validateCanary(input: CanaryRoute, field: string): CanaryRoute {
  const c = clone(CanaryRouteSchema, input);
  if (c.header === "" && c.query === "") throw new ConfigError(field, "set header, query, or both");
  if (c.header !== "" && !/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/.test(c.header)) {
    throw new ConfigError(`${field}.header`, `invalid header name "${c.header}"`);
  }
  c.header = c.header.toLowerCase();
  if (c.header !== "" && c.headerValue === "") c.headerValue = "true";
  if (c.query !== "" && c.queryValue === "") c.queryValue = "true";
  const hasTargets = c.targets.length > 0;
  if (hasTargets === (c.upstreamId !== "")) throw new ConfigError(field, "set exactly one of upstream_id and targets");
  if (hasTargets) {
    validateRuleTargets(c.targets, `${field}.targets`);
  }
  return c;
}

function validateHashOn(h: HashOn, field: string): void {
  if (!(HASH_SOURCES as readonly string[]).includes(h.source)) {
    throw new ConfigError(`${field}.source`, `must be one of ${HASH_SOURCES.join(", ")}, got "${h.source}"`);
  }
  if (h.source !== "client_ip" && h.name === "") throw new ConfigError(`${field}.name`, `is required for source "${h.source}"`);
}

function validateMetadata(m: Record<string, string>, field: string): void {
  const keys = Object.keys(m);
  if (keys.length > 64) throw new ConfigError(field, "at most 64 entries");
  for (const k of keys) {
    if (k.length === 0 || k.length > 128) throw new ConfigError(`${field}.${k}`, "keys must be 1-128 characters");
    if (m[k].length > 1024) throw new ConfigError(`${field}.${k}`, "values must be at most 1024 characters");
  }
}

/** Validates and normalises an upstream (defaults filled in: algorithm, scheme, pass_host, weights). */
export function validateUpstream(input: Upstream, path = ""): Validated<Upstream> {
  const up = clone(UpstreamSchema, input);
  const at = (f: string) => (path === "" ? f : `${path}.${f}`);
  const warnings: string[] = [];
  if (!NAME_RE.test(up.name)) {
    throw new ConfigError(at("name"), up.name === "" ? "is required" : "must be 1-128 characters of letters, digits, '.', '_' or '-'");
  }
  if (up.algorithm === "") up.algorithm = "round-robin";
  if (!(ALGORITHMS as readonly string[]).includes(up.algorithm)) {
    throw new ConfigError(at("algorithm"), `must be one of ${ALGORITHMS.join(", ")}, got "${up.algorithm}"`);
  }
  if (up.algorithm === "consistent-hash") {
    if (up.hashOn === undefined) throw new ConfigError(at("hash_on"), 'is required for algorithm "consistent-hash"');
    validateHashOn(up.hashOn, at("hash_on"));
  } else if (up.hashOn !== undefined) {
    validateHashOn(up.hashOn, at("hash_on"));
  }
  if (up.targets.length === 0) throw new ConfigError(at("targets"), "must not be empty");
  if (up.targets.length > MAX_TARGETS) throw new ConfigError(at("targets"), `at most ${MAX_TARGETS} targets`);
  const seen = new Set<string>();
  up.targets.forEach((t, i) => {
    validateTarget(t, at(`targets[${i}]`));
    const key = targetKey(t);
    if (seen.has(key)) throw new ConfigError(at(`targets[${i}]`), `duplicate target ${key}`);
    seen.add(key);
  });
  if (up.targets.every((t) => t.weight === 0 || t.adminState === "disabled")) {
    warnings.push(`${at("targets")}: no target can receive traffic (all have weight 0 or are disabled)`);
  }
  if (up.healthCheck?.active !== undefined) resolveActiveCheck(up.healthCheck.active, at("health_check.active"));
  if (up.healthCheck?.passive !== undefined) resolvePassiveCheck(up.healthCheck.passive, at("health_check.passive"));
  if (up.timeouts !== undefined) {
    for (const [name, v] of [["connect_ms", up.timeouts.connectMs], ["send_ms", up.timeouts.sendMs], ["read_ms", up.timeouts.readMs]] as const) {
      if (v > 3_600_000) throw new ConfigError(at(`timeouts.${name}`), `must be at most 3600000 (one hour), got ${v}`);
    }
  }
  if (up.retries !== undefined) {
    if (up.retries.count > 10) throw new ConfigError(at("retries.count"), `must be at most 10, got ${up.retries.count}`);
    up.retries.statuses.forEach((s, i) => {
      if (s < 100 || s > 599) throw new ConfigError(at(`retries.statuses[${i}]`), `must be an HTTP status 100-599, got ${s}`);
    });
  }
  if (up.scheme === "") up.scheme = "http";
  if (up.scheme !== "http" && up.scheme !== "https") throw new ConfigError(at("scheme"), `must be "http" or "https", got "${up.scheme}"`);
  if (up.passHost === "") up.passHost = "pass";
  if (!["pass", "node", "rewrite"].includes(up.passHost)) {
    throw new ConfigError(at("pass_host"), `must be "pass", "node" or "rewrite", got "${up.passHost}"`);
  }
  if (up.passHost === "rewrite" && up.upstreamHost === "") throw new ConfigError(at("upstream_host"), 'is required when pass_host is "rewrite"');
  validateMetadata(up.metadata, at("metadata"));
  return { value: up, warnings };
}

function validateTarget(t: Target, field: string): void {
  if (t.host === "") throw new ConfigError(`${field}.host`, "is required");
  if (isIP(t.host) === 0) {
    const labels = t.host.toLowerCase().split(".");
    if (t.host.length > 253 || !labels.every((l) => HOST_LABEL_RE.test(l))) {
      throw new ConfigError(`${field}.host`, `invalid host "${t.host}" (a DNS name or an IP address)`);
    }
  }
  if (t.port < 1 || t.port > 65535) throw new ConfigError(`${field}.port`, `must be 1-65535, got ${t.port}`);
  if (t.weight !== undefined && t.weight > MAX_WEIGHT) {
    throw new ConfigError(`${field}.weight`, `must be an integer from 0 to ${MAX_WEIGHT}, got ${t.weight}`);
  }
  if (t.adminState === "") t.adminState = "enabled";
  if (!(ADMIN_STATES as readonly string[]).includes(t.adminState)) {
    throw new ConfigError(`${field}.admin_state`, `must be one of ${ADMIN_STATES.join(", ")}, got "${t.adminState}"`);
  }
  if (t.activeCheck !== undefined) resolveActiveCheck(t.activeCheck, `${field}.active_check`);
  validateMetadata(t.metadata, `${field}.metadata`);
}

/** "host:port" of an upstream target, its identity within the upstream. */
export function targetKey(t: { host: string; port: number }): string {
  return t.host.includes(":") ? `[${t.host}]:${t.port}` : `${t.host}:${t.port}`;
}

/** Validates a tenant's name and JWT settings. */
export function validateTenant(input: Tenant, path = ""): Validated<Tenant> {
  const tenant = clone(TenantSchema, input);
  const at = (f: string) => (path === "" ? f : `${path}.${f}`);
  tenant.name = tenant.name.trim();
  if (tenant.name === "" || tenant.name.length > 128) throw new ConfigError(at("name"), "must be 1-128 characters");
  if (tenant.jwt !== undefined) buildJwtVerifier(tenant.jwt, at("jwt"));
  return { value: tenant, warnings: [] };
}

/** An empty rule, for tests and the REST layer's defaults. */
export function emptyRule(): Rule {
  return create(RuleSchema);
}
