import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import {
  ProbeAssignment,
  probeKey,
  probedTargets,
  rendezvousOwners,
  type ProbeTarget,
} from "../../../../control-plane/src/fleet/probe-assignment.js";
import { RuleSchema, type Rule } from "../../../../proto/gen/gateway/v1/rule_pb.js";
import { UpstreamSchema, type Upstream } from "../../../../proto/gen/gateway/v1/upstream_pb.js";

function targets(n: number): ProbeTarget[] {
  return Array.from({ length: n }, (_, i) => ({ backend: `up_${i % 7}`, target: `10.0.${Math.floor(i / 250)}.${i % 250}:8080` }));
}

const nodeIds = (n: number, from = 0) => Array.from({ length: n }, (_, i) => `dp-${from + i}`);

/** Every (target, node) assignment as "key@node". */
function pairs(a: ProbeAssignment, ts: ProbeTarget[]): Set<string> {
  const out = new Set<string>();
  for (const t of ts) for (const n of a.owners(t.backend, t.target)) out.add(`${probeKey(t.backend, t.target)}@${n}`);
  return out;
}

describe("ProbeAssignment", () => {
  it.each([
    [1, 3, 1],
    [2, 3, 2],
    [3, 3, 3],
    [10, 3, 3],
    [10, 1, 1],
    [10, 5, 5],
  ])("with %i nodes and k=%i, every target has exactly %i distinct probers", (n, k, want) => {
    const ts = targets(200);
    const a = new ProbeAssignment(k);
    a.setTargets(ts);
    for (const id of nodeIds(n)) a.addNode(id);
    for (const t of ts) {
      const owners = a.owners(t.backend, t.target);
      expect(owners).toHaveLength(want);
      expect(new Set(owners).size).toBe(want);
    }
    // keysOf is the same relation seen from the node side.
    let total = 0;
    for (const id of nodeIds(n)) total += a.keysOf(id).size;
    expect(total).toBe(ts.length * want);
  });

  it("adding an 11th node moves about 1/11 of the assignments, all of them to the new node", () => {
    const ts = targets(3000);
    const a = new ProbeAssignment(3);
    a.setTargets(ts);
    for (const id of nodeIds(10)) a.addNode(id);
    const before = pairs(a, ts);
    a.addNode("dp-10");
    const after = pairs(a, ts);
    const gained = [...after].filter((p) => !before.has(p));
    const lost = [...before].filter((p) => !after.has(p));
    expect(gained.every((p) => p.endsWith("@dp-10"))).toBe(true);
    expect(lost).toHaveLength(gained.length);
    const moved = gained.length / before.size;
    // Expected 1/11 ≈ 0.091 (3000 targets: one standard deviation ≈ 0.005).
    expect(moved).toBeGreaterThan(0.075);
    expect(moved).toBeLessThan(0.108);
  });

  it("removing a node moves only that node's targets", () => {
    const ts = targets(1000);
    const a = new ProbeAssignment(3);
    a.setTargets(ts);
    for (const id of nodeIds(10)) a.addNode(id);
    const before = pairs(a, ts);
    const owned = a.keysOf("dp-4").size;
    a.removeNode("dp-4");
    const after = pairs(a, ts);
    const lost = [...before].filter((p) => !after.has(p));
    expect(lost).toHaveLength(owned);
    expect(lost.every((p) => p.endsWith("@dp-4"))).toBe(true);
    for (const t of ts) expect(a.owners(t.backend, t.target)).toHaveLength(3);
  });

  it("spreads the probing evenly across nodes", () => {
    const ts = targets(3000);
    const a = new ProbeAssignment(3);
    a.setTargets(ts);
    for (const id of nodeIds(10)) a.addNode(id);
    for (const id of nodeIds(10)) {
      // 900 each on average.
      expect(a.keysOf(id).size).toBeGreaterThan(800);
      expect(a.keysOf(id).size).toBeLessThan(1000);
    }
  });

  it("is the same as the from-scratch rendezvous ranking after any sequence of changes", () => {
    const ts = targets(300);
    const a = new ProbeAssignment(3);
    const live = new Set<string>();
    a.addNode("dp-0");
    live.add("dp-0");
    a.setTargets(ts.slice(0, 150));
    let seed = 7;
    const rnd = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
    for (let step = 0; step < 200; step++) {
      const id = `dp-${Math.floor(rnd() * 15)}`;
      if (live.has(id) && rnd() < 0.5) {
        a.removeNode(id);
        live.delete(id);
      } else {
        a.addNode(id);
        live.add(id);
      }
      if (step === 100) a.setTargets(ts.slice(100));
    }
    const current = ts.slice(100);
    for (const t of current) {
      expect([...a.owners(t.backend, t.target)].sort()).toEqual(rendezvousOwners(probeKey(t.backend, t.target), live, 3).sort());
    }
    for (const t of ts.slice(0, 100)) expect(a.owners(t.backend, t.target)).toEqual([]);
    let total = 0;
    for (const id of live) total += a.keysOf(id).size;
    expect(total).toBe(current.length * Math.min(3, live.size));
  });

  it("bumps a node's version only when its own set changes", () => {
    const a = new ProbeAssignment(1);
    a.setTargets(targets(50));
    a.addNode("dp-0");
    const v0 = a.versionOf("dp-0");
    a.setTargets(targets(50));
    expect(a.versionOf("dp-0")).toBe(v0);
    a.addNode("dp-1");
    expect(a.versionOf("dp-0")).not.toBe(v0);
    expect(a.versionOf("nobody")).toBe(0);
  });
});

describe("probedTargets", () => {
  const active = { active: { type: "tcp" } };
  const up = (id: string, init: object): Upstream => create(UpstreamSchema, { id, tenantId: "t", name: id, ...init } as never);

  it("lists the targets with an active check: upstream-wide, per-target override, and split inline upstreams; never disabled ones", () => {
    const upstreams = new Map<string, Upstream>([
      ["up_all", up("up_all", { healthCheck: active, targets: [{ host: "a", port: 1 }, { host: "b", port: 2, adminState: "disabled" }, { host: "::1", port: 3, adminState: "draining" }] })],
      ["up_one", up("up_one", { targets: [{ host: "c", port: 1 }, { host: "d", port: 2, activeCheck: { path: "/health" } }] })],
      ["up_none", up("up_none", { healthCheck: { passive: { consecutiveFailures: 3 } }, targets: [{ host: "e", port: 1 }] })],
    ]);
    const rule: Rule = create(RuleSchema, {
      id: "rule_x",
      tenantId: "t",
      path: "/",
      targets: [{ url: "http://f:1" }],
      trafficSplit: { rules: [{ weightedUpstreams: [{ weight: 1 }, { upstream: { name: "inline", healthCheck: active, targets: [{ host: "g", port: 9 }] }, weight: 1 }] }] },
    } as never);
    expect(probedTargets({ upstreams, rules: new Map([["rule_x", rule]]) })).toEqual([
      { backend: "up_all", target: "a:1" },
      { backend: "up_all", target: "[::1]:3" },
      { backend: "up_one", target: "d:2" },
      { backend: "rule/rule_x/split/0/1", target: "g:9" },
    ]);
  });
});
