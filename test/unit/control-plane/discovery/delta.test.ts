import { create, toBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { ConfigState, encodeMessage } from "../../../../control-plane/src/config/state.js";
import { SnapshotCache } from "../../../../control-plane/src/discovery/snapshot-cache.js";
import type { Mutation } from "../../../../control-plane/src/store/store.js";
import { ResourceSet } from "../../../../data-plane/src/discovery/resources.js";
import { RuleSchema } from "../../../../proto/gen/gateway/v1/rule_pb.js";
import { DeltaSchema, SnapshotSchema, type Snapshot } from "../../../../proto/gen/gateway/v1/snapshot_pb.js";
import { TenantSchema } from "../../../../proto/gen/gateway/v1/tenant_pb.js";
import { UpstreamSchema } from "../../../../proto/gen/gateway/v1/upstream_pb.js";

/** A deterministic PRNG (mulberry32) so a failing sequence can be replayed from its seed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function putRule(id: string, port: number): Mutation {
  return { op: "put", kind: "rule", id, data: encodeMessage(RuleSchema, create(RuleSchema, { id, tenantId: "t", path: `/${id}/*`, targets: [{ url: `http://10.0.0.1:${port}` }] })) };
}
function putUpstream(id: string, port: number): Mutation {
  return { op: "put", kind: "upstream", id, data: encodeMessage(UpstreamSchema, create(UpstreamSchema, { id, tenantId: "t", name: id, targets: [{ host: "10.0.0.2", port }] })) };
}
const tenant: Mutation = { op: "put", kind: "tenant", id: "t", data: encodeMessage(TenantSchema, create(TenantSchema, { id: "t", name: "t" })) };

function canonical(s: Snapshot): string[] {
  return [...s.resources].sort((a, b) => a.name.localeCompare(b.name)).map((r) => `${r.name}@${r.revision}:${Buffer.from(toBinary(SnapshotSchema, create(SnapshotSchema, { resources: [r] }))).toString("base64")}`);
}

describe("SnapshotCache deltas", () => {
  it("carries exactly what changed, and removals by name", () => {
    let state = ConfigState.empty().with(1n, [tenant, putRule("a", 1), putRule("b", 2), putUpstream("u", 3)]);
    const cache = new SnapshotCache(state, 0);
    state = state.with(2n, [putRule("a", 11), { op: "delete", kind: "rule", id: "b" }]);
    cache.update(state);
    cache.flush();
    const d = cache.deltaSince(1n)!;
    expect(d.baseVersion).toBe(1n);
    expect(d.version).toBe(2n);
    expect(d.upserted.map((r) => r.name)).toEqual(["rule/a"]);
    expect(d.removed).toEqual(["rule/b"]);
    expect(cache.deltaSince(2n)).toBeUndefined(); // nothing to send
    expect(cache.deltaSince(7n)).toBeUndefined(); // unknown base: full snapshot
    expect(cache.deltaSince(1n)).toBe(d); // computed once per base
  });

  it("forgets bases older than its history and answers them with undefined (full snapshot)", () => {
    let state = ConfigState.empty().with(1n, [tenant]);
    const cache = new SnapshotCache(state, 0, 4);
    for (let v = 2n; v <= 10n; v++) {
      state = state.with(v, [putRule(`r${v}`, Number(v))]);
      cache.update(state);
      cache.flush();
    }
    expect(cache.deltaSince(5n)).toBeUndefined();
    expect(cache.deltaSince(6n)?.upserted.map((r) => r.name).sort()).toEqual(["rule/r10", "rule/r7", "rule/r8", "rule/r9"]);
  });

  it.each([1, 2, 3, 4, 5, 6, 7, 8])("applying every delta equals the full snapshot (random edits, seed %i)", (seed) => {
    const random = rng(seed);
    let state = ConfigState.empty().with(1n, [tenant]);
    const cache = new SnapshotCache(state, 0, 64);
    // Nodes that follow from different bases, as slow or reconnecting nodes do.
    const nodes = [ResourceSet.of(cache.current()), ResourceSet.of(cache.current())];
    for (let step = 0; step < 120; step++) {
      const mutations: Mutation[] = [];
      const n = 1 + Math.floor(random() * 3);
      for (let i = 0; i < n; i++) {
        const id = `x${Math.floor(random() * 12)}`;
        const roll = random();
        if (roll < 0.45) mutations.push(putRule(id, Math.floor(random() * 1000)));
        else if (roll < 0.7) mutations.push(putUpstream(id, Math.floor(random() * 1000)));
        else mutations.push({ op: "delete", kind: roll < 0.85 ? "rule" : "upstream", id });
      }
      state = state.with(state.version + 1n, mutations);
      cache.update(state);
      // Sometimes several writes land in one published snapshot (coalescing).
      if (random() < 0.6) cache.flush();
      for (let k = 0; k < nodes.length; k++) {
        // Node k catches up only now and then.
        if (random() < (k === 0 ? 0.9 : 0.2)) {
          const delta = cache.deltaSince(nodes[k].version);
          nodes[k] = delta === undefined ? ResourceSet.of(cache.current()) : nodes[k].apply(delta);
          expect(nodes[k].version).toBe(cache.current().version);
          expect(canonical(nodes[k].snapshot())).toEqual(canonical(cache.current()));
        }
      }
    }
    cache.flush();
    expect(canonical(state.snapshot())).toEqual(canonical(cache.current()));
  });

  it("refuses a delta whose base is not the node's version", () => {
    let state = ConfigState.empty().with(1n, [tenant]);
    const cache = new SnapshotCache(state, 0);
    state = state.with(2n, [putRule("a", 1)]);
    cache.update(state);
    cache.flush();
    state = state.with(3n, [putRule("b", 1)]);
    cache.update(state);
    cache.flush();
    const node = ResourceSet.empty();
    expect(() => node.apply(cache.deltaSince(2n)!)).toThrow(/does not apply to version 0/);
  });

  it("a one-target change costs the same bytes with 10 or 10,000 rules", () => {
    const sizes = [10, 10_000].map((count) => {
      const muts: Mutation[] = [tenant, putUpstream("pool", 80)];
      for (let i = 0; i < count; i++) muts.push(putRule(`r${i}`, 1000 + (i % 50000)));
      let state = ConfigState.empty().with(1n, muts);
      const cache = new SnapshotCache(state, 0);
      state = state.with(2n, [putUpstream("pool", 81)]);
      cache.update(state);
      cache.flush();
      return { delta: toBinary(DeltaSchema, cache.deltaSince(1n)!).length, full: toBinary(SnapshotSchema, cache.current()).length };
    });
    expect(sizes[1].delta).toBe(sizes[0].delta);
    expect(sizes[1].full).toBeGreaterThan(sizes[0].full * 500);
  });
});
