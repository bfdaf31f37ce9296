import { describe, expect, it } from "vitest";
import { MethodNotAllowed, RouteConflictError, Router, type RouteSpec } from "../../../../data-plane/src/router/match.js";

/**
 * Differential test: the Router against a linear scan that states the precedence of match.ts
 * directly, on random rule sets with heavily shared path prefixes and many random requests.
 * Fixed seeds, so a failure names a reproducible case.
 */

const SEEDS = [1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987, 1597, 2584, 4181, 6765, 10946];
const REQUESTS_PER_SEED = 3000;

/** mulberry32: small, deterministic, good enough for test data. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// Segments share prefixes with each other ("a", "ab", "abc", "api") so keys split edges in the
// middle; "é" and "中" put children far apart in character code (the tree's non-dense branch).
const SEGMENTS = ["a", "ab", "abc", "api", "apx", "v1", "v10", "v2", "x", "", "é", "中", "a?b"];
const METHODS = ["GET", "POST", "PUT", "DELETE"];
// Two suffixes whose hashes collide in match.ts's wildcard table (FNV-1a, 30 bits), so the
// collision list is exercised as long as that hash is the one in use.
const COLLIDING = ["*.bibua", "*.nhaee"];
const RULE_HOSTS = ["a.io", "b.a.io", "*.a.io", "*.io", "c.b.a.io", "*.b.a.io", ...COLLIDING];
const REQUEST_HOSTS = ["", "a.io", "b.a.io", "x.a.io", "c.b.a.io", "z.io", "io", ".a.io", "x.b.a.io", "m.bibua", "m.nhaee", "m.zzzzz"];

type Rand = () => number;
const pick = <V>(rand: Rand, list: readonly V[]): V => list[Math.floor(rand() * list.length)];

function randomPath(rand: Rand): string {
  const n = Math.floor(rand() * 4);
  let p = "";
  for (let k = 0; k < n; k++) p += "/" + pick(rand, SEGMENTS);
  if (n === 0 || rand() < 0.2) p += "/";
  if (rand() < 0.15) p = p.slice(0, Math.max(0, p.length - 1 - Math.floor(rand() * 3))); // cut mid-segment
  return p;
}

function randomRule(rand: Rand, name: string): RouteSpec {
  let path = randomPath(rand);
  if (rand() < 0.55) path += "*";
  if (rand() < 0.02) path = "*";
  const methods = rand() < 0.5 ? [] : METHODS.filter(() => rand() < 0.35);
  const hosts = rand() < 0.6 ? [] : RULE_HOSTS.filter(() => rand() < 0.25);
  return { name, path, methods, hosts };
}

function randomUrl(rand: Rand, rules: readonly RouteSpec[]): string {
  let p: string;
  const r = rand();
  if (r < 0.5 && rules.length > 0) {
    // Near a rule: its key, cut short, extended, or with one character changed.
    const path = pick(rand, rules).path;
    p = path.endsWith("*") ? path.slice(0, -1) : path;
    const how = rand();
    if (how < 0.2) p = p.slice(0, Math.floor(rand() * (p.length + 1)));
    else if (how < 0.4) p += pick(rand, ["/", "x", "/v1", "/a/b", "é", "a"]);
    else if (how < 0.5 && p.length > 0) p = p.slice(0, -1);
    else if (how < 0.6 && p.length > 0) {
      const at = Math.floor(rand() * p.length);
      p = p.slice(0, at) + pick(rand, ["a", "/", "b", "1"]) + p.slice(at + 1);
    }
  } else {
    p = randomPath(rand);
  }
  if (rand() < 0.25) p += pick(rand, ["?", "?q=1", "?x=/api/*", "?a/b"]);
  return p;
}

/** Rules that share one (host level, key, kind), as the router groups them. */
interface Group {
  any: RouteSpec | undefined;
  byMethod: Map<string, RouteSpec>;
}

/** The reference: rules kept in order, every question answered by scanning all of them. */
class Reference {
  private readonly groups = new Map<string, Group>();
  readonly rules: RouteSpec[] = [];

  /** Adds the rule, or returns the conflict the router must report (existing, incoming). */
  add(rule: RouteSpec): { existing: RouteSpec; incoming: RouteSpec } | undefined {
    const levels = rule.hosts.length === 0 ? ["any"] : rule.hosts.map((h) => (h.startsWith("*.") ? `wild ${h.slice(1)}` : `exact ${h}`));
    const kind = rule.path.endsWith("*") ? "prefix" : "exact";
    const key = kind === "prefix" ? rule.path.slice(0, -1) : rule.path;
    // Validate against a copy first: a refused rule leaves nothing behind in the reference.
    const touched: [string, Group][] = [];
    for (const level of levels) {
      const id = `${level}\u0000${kind}\u0000${key}`;
      const found = touched.find(([t]) => t === id)?.[1] ?? this.groups.get(id);
      const g: Group = found === undefined ? { any: undefined, byMethod: new Map() } : { any: found.any, byMethod: new Map(found.byMethod) };
      if (rule.methods.length === 0) {
        if (g.any !== undefined) return { existing: g.any, incoming: rule };
        const first = g.byMethod.values().next();
        if (!first.done) return { existing: first.value, incoming: rule };
        g.any = rule;
      } else {
        if (g.any !== undefined) return { existing: g.any, incoming: rule };
        for (const m of rule.methods) {
          const existing = g.byMethod.get(m);
          if (existing !== undefined) return { existing, incoming: rule };
        }
        for (const m of rule.methods) g.byMethod.set(m, rule);
      }
      touched.push([id, g]);
    }
    for (const [id, g] of touched) this.groups.set(id, g);
    this.rules.push(rule);
    return undefined;
  }

  match(host: string, method: string, url: string): RouteSpec | MethodNotAllowed | undefined {
    const q = url.indexOf("?");
    const path = q === -1 ? url : url.slice(0, q);
    const dot = host.indexOf(".");
    const levels: ((r: RouteSpec) => boolean)[] = [
      (r) => r.hosts.includes(host),
      (r) => dot > 0 && r.hosts.includes("*" + host.slice(dot)),
      (r) => r.hosts.length === 0,
    ];
    for (const inLevel of levels) {
      const answer = this.matchPath(this.rules.filter(inLevel), path, method);
      if (answer !== undefined) return answer;
    }
    return undefined;
  }

  private matchPath(rules: RouteSpec[], path: string, method: string): RouteSpec | MethodNotAllowed | undefined {
    const exact = (key: string) => rules.filter((r) => r.path === key);
    const prefix = (key: string) => rules.filter((r) => r.path === key + "*");
    // Most specific first: the exact path, the prefix path + "/" ("/api/*" serves "/api"), then
    // every prefix of the path from longest to shortest.
    const candidates = [exact(path), prefix(path + "/")];
    for (let n = path.length; n >= 0; n--) candidates.push(prefix(path.slice(0, n)));
    let refusal: MethodNotAllowed | undefined;
    for (const group of candidates) {
      if (group.length === 0) continue;
      const allowed = group.find((r) => r.methods.length === 0 || r.methods.includes(method));
      if (allowed !== undefined) return allowed;
      refusal ??= new MethodNotAllowed([...new Set(group.flatMap((r) => r.methods))].sort().join(", "));
    }
    return refusal;
  }
}

function describeResult(m: RouteSpec | MethodNotAllowed | undefined): string {
  if (m === undefined) return "404";
  if (m instanceof MethodNotAllowed) return `405 ${m.allow}`;
  return m.name;
}

/** Builds a conflict-free rule set, checking on the way that the Router refuses what the reference refuses. */
function buildRules(rand: Rand, count: number): { rules: RouteSpec[]; conflicts: number } {
  const reference = new Reference();
  let conflicts = 0;
  for (let k = 0; k < count; k++) {
    const rule = randomRule(rand, `r${k}`);
    const conflict = reference.add(rule);
    if (conflict === undefined) continue;
    conflicts++;
    let thrown: unknown;
    try {
      new Router([...reference.rules, rule]);
    } catch (err) {
      thrown = err;
    }
    expect(thrown, `rule ${rule.name} ${rule.path} should be refused`).toBeInstanceOf(RouteConflictError);
    expect((thrown as RouteConflictError).existing).toBe(conflict.existing);
    expect((thrown as RouteConflictError).incoming).toBe(conflict.incoming);
  }
  return { rules: reference.rules, conflicts };
}

describe("Router against a linear-scan reference", () => {
  it.each(SEEDS)("seed %i", (seed) => {
    const rand = prng(seed);
    const { rules, conflicts } = buildRules(rand, 10 + Math.floor(rand() * 150));
    const reference = new Reference();
    for (const rule of rules) expect(reference.add(rule)).toBeUndefined();
    const router = new Router(rules);
    expect(router.usesHosts).toBe(rules.some((r) => r.hosts.length > 0));
    expect(conflicts).toBeGreaterThanOrEqual(0);

    for (let k = 0; k < REQUESTS_PER_SEED; k++) {
      const host = pick(rand, REQUEST_HOSTS);
      const method = pick(rand, METHODS);
      const url = randomUrl(rand, rules);
      const got = router.match(host, method, url);
      const want = reference.match(host, method, url);
      const where = `seed ${seed}: ${method} ${host} ${JSON.stringify(url)}`;
      expect(describeResult(got), where).toBe(describeResult(want));
      if (!(want instanceof MethodNotAllowed)) expect(got, where).toBe(want); // the same rule object
    }
  });

  it("agrees when rules differ only past long shared prefixes", () => {
    const rand = prng(4242);
    // Many keys under one deep common prefix, split at every depth: long edges and fine branches.
    const base = "/tenants/t1/services/";
    const rules: RouteSpec[] = [];
    for (let k = 0; k < 300; k++) {
      const path = base + "svc" + String(Math.floor(rand() * 1000)) + (rand() < 0.5 ? "/*" : rand() < 0.5 ? "*" : "");
      if (rules.some((r) => r.path === path)) continue;
      rules.push({ name: `r${k}`, path, methods: [], hosts: [] });
    }
    const reference = new Reference();
    for (const rule of rules) expect(reference.add(rule)).toBeUndefined();
    const router = new Router(rules);
    for (let k = 0; k < 5000; k++) {
      const url = randomUrl(rand, rules);
      expect(describeResult(router.match("", "GET", url)), url).toBe(describeResult(reference.match("", "GET", url)));
    }
  });
});
