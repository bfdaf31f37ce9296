/**
 * Fleet-wide exactness through the real selection path (proxy/select.ts on compiled snapshots):
 * several "data planes", each with its own compiled configuration and its own SequenceSource,
 * sharing one redis-server, split traffic exactly as weighted however requests are spread over them;
 * with per-node sequences they do not.
 */
import type { Redis } from "ioredis";
import { describe, expect, it } from "vitest";
import type { CompiledConfig, CompiledTarget } from "../../../../data-plane/src/config/compile.js";
import { LocalSequenceSource } from "../../../../data-plane/src/counters/local.js";
import type { SequenceSource } from "../../../../data-plane/src/counters/source.js";
import { chooseBackend, pickTarget } from "../../../../data-plane/src/proxy/select.js";
import { fakeView } from "../split/fake-view.js";
import { compile, nameOf, route, splitRule, upstream, weightedRule } from "./config.js";
import { RedisServer } from "./redis-server.js";
import { countingSources, seeded, tally, useRedisServer } from "./sources.js";

const redis = useRedisServer();

/** One data plane: its own compiled snapshot and its own source (undefined: local rotation). */
interface Node {
  readonly config: CompiledConfig;
  readonly source: SequenceSource | undefined;
}

function nodes(count: number, build: () => CompiledConfig, sources: readonly (SequenceSource | undefined)[]): Node[] {
  return Array.from({ length: count }, (_, i) => ({ config: build(), source: sources[i] }));
}

/** A first attempt on rule `ruleId` at `node`, as the handler makes it; returns the target's name. */
async function request(node: Node, ruleId: string): Promise<string> {
  const r = route(node.config, ruleId);
  const picked = pickTarget(r.backend, undefined, undefined, node.source);
  const target: CompiledTarget | undefined = picked instanceof Promise ? await picked : picked;
  return nameOf(target!.key);
}

const canary9010 = () => compile(7n, [{ revision: 7n, value: weightedRule("r", { stable: 90, canary: 10 }) }]);

describe("exact weighted split across data planes sharing Redis", () => {
  it("4 nodes, 1,000 sequential requests spread unevenly over them at 90/10: exactly 900/100, and 9/1 in every cycle of 10", async () => {
    const sources = await countingSources(redis.server.url, 4);
    const fleet = nodes(4, canary9010, sources.map((s) => s.source));
    const random = seeded(4);
    const seen: string[] = [];
    for (let i = 0; i < 1000; i++) seen.push(await request(fleet[Math.floor(random() * 4)], "r"));
    expect(tally(seen)).toEqual({ stable: 900, canary: 100 });
    for (let c = 0; c < 100; c++) expect(tally(seen.slice(c * 10, c * 10 + 10))).toEqual({ stable: 9, canary: 1 });
  });

  it("4 nodes, 1,000 concurrent requests interleaved over them: exactly 900/100 with a handful of INCRBYs", async () => {
    const sources = await countingSources(redis.server.url, 4);
    const fleet = nodes(4, canary9010, sources.map((s) => s.source));
    const seen = await Promise.all(Array.from({ length: 1000 }, (_, i) => request(fleet[i % 4], "r")));
    expect(tally(seen)).toEqual({ stable: 900, canary: 100 });
    // One INCRBY per node for the whole burst.
    expect(await RedisServer.incrbyCalls(redis.inspect)).toBe(4);
  });

  it("splits a traffic_split rule's choices exactly too (90/10 between upstreams v1 and v2, 9/1 in every cycle)", async () => {
    const build = () =>
      compile(9n, [{ revision: 9n, value: splitRule("s", "v1", { v1: 90, v2: 10 }) }], [
        { revision: 2n, value: upstream("v1", ["a"]) },
        { revision: 3n, value: upstream("v2", ["b"]) },
      ]);
    const sources = await countingSources(redis.server.url, 4);
    const fleet = nodes(4, build, sources.map((s) => s.source));
    const random = seeded(9);
    const seen: string[] = [];
    for (let i = 0; i < 1000; i++) {
      const node = fleet[Math.floor(random() * 4)];
      const chosen = chooseBackend(route(node.config, "s"), fakeView(), node.source);
      seen.push((chosen instanceof Promise ? await chosen : chosen).id);
    }
    expect(tally(seen)).toEqual({ v1: 900, v2: 100 });
    for (let c = 0; c < 100; c++) expect(tally(seen.slice(c * 10, c * 10 + 10))).toEqual({ v1: 9, v2: 1 });
  });

  it("keeps retries on the local rotation: a pick that avoids a target never consumes a fleet position", async () => {
    const [{ source }] = await countingSources(redis.server.url, 1);
    const config = canary9010();
    const backend = route(config, "r").backend;
    const stable = backend.targets.find((t) => nameOf(t.key) === "stable")!;
    for (let i = 0; i < 20; i++) {
      const picked = pickTarget(backend, undefined, stable, source);
      expect(picked).not.toBeInstanceOf(Promise);
      expect(nameOf((picked as CompiledTarget).key)).toBe("canary");
    }
    expect(source.stats.countedPicks + source.stats.fallbackPicks).toBe(0);
  });
});

describe("sparse traffic over many nodes (20 nodes, 99/1, 5 requests per node per round)", () => {
  const canary991 = () => compile(3n, [{ revision: 3n, value: weightedRule("sparse", { stable: 99, canary: 1 }) }]);

  async function run(fleet: Node[], rounds: number): Promise<Record<string, number>> {
    const seen: string[] = [];
    for (let round = 0; round < rounds; round++) {
      for (const node of fleet) for (let k = 0; k < 5; k++) seen.push(await request(node, "sparse"));
    }
    return tally(seen);
  }

  it("with per-node sequences (all starting in the same phase) the 1% canary gets nothing at all", async () => {
    // Each node's own balancer (no source), and the same with in-process counters driving pickAt.
    expect(await run(nodes(20, canary991, []), 10)).toEqual({ stable: 1000 });
    const locals = Array.from({ length: 20 }, () => new LocalSequenceSource());
    expect(await run(nodes(20, canary991, locals), 10)).toEqual({ stable: 1000 });
  });

  it("with one sequence in Redis the canary gets exactly its share: 1 of each 100, 10 of 1,000", async () => {
    const sources = await countingSources(redis.server.url, 20);
    const fleet = nodes(20, canary991, sources.map((s) => s.source));
    expect(await run(fleet, 1)).toEqual({ stable: 99, canary: 1 });
    expect(await run(fleet, 9)).toEqual({ stable: 891, canary: 9 });
  });
});

describe("lease mode", () => {
  it("uses every position once across nodes, and stays within nodes × lease of the exact split", async () => {
    const lease = 10;
    const sources = await countingSources(redis.server.url, 4, { lease });
    const fleet = nodes(4, canary9010, sources.map((s) => s.source));
    const seen: string[] = [];
    for (let i = 0; i < 1000; i++) seen.push(await request(fleet[i % 4], "r"));
    const counts = tally(seen);
    expect(counts.stable + counts.canary).toBe(1000);
    expect(Math.abs(counts.canary - 100)).toBeLessThanOrEqual(4 * lease);
    // Positions are unique fleet-wide: what was reserved is exactly what Redis counted.
    const reserved = sources.reduce((n, s) => n + s.source.stats.reservedPositions, 0);
    expect(reserved).toBeGreaterThanOrEqual(1000);
    expect(reserved).toBeLessThanOrEqual(1000 + 4 * lease);
    expect(Number(await redis.inspect.get("gw:seq:{rule/r}:7"))).toBe(reserved);
    // Far fewer round trips than picks: one block per 10 picks or so per node, not one per pick.
    expect(await RedisServer.incrbyCalls(redis.inspect)).toBeLessThanOrEqual(1000 / lease + 4 * 2);
  });
});
