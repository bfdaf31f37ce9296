/**
 * Redis failures never fail a pick: a killed, hung or absent redis-server switches the sources to
 * random weighted positions (reported as fallback), nothing is buffered meanwhile, and counting
 * resumes by itself once the server answers again. Each test owns its server, since it kills it.
 */
import { afterEach, describe, expect, it } from "vitest";
import type { CompiledTarget } from "../../../../data-plane/src/config/compile.js";
import type { RedisSequenceSource } from "../../../../data-plane/src/counters/redis.js";
import { pickTarget } from "../../../../data-plane/src/proxy/select.js";
import { compile, nameOf, route, weightedRule } from "./config.js";
import { RedisServer } from "./redis-server.js";
import { closeSources, countingSources, redisSource, seeded, tally, until, waitCounting } from "./sources.js";

const servers: RedisServer[] = [];
async function startServer(): Promise<RedisServer> {
  const s = await RedisServer.start();
  servers.push(s);
  return s;
}
afterEach(async () => {
  await closeSources();
  await Promise.all(servers.splice(0).map((s) => s.stop()));
});

const build = () => compile(7n, [{ revision: 7n, value: weightedRule("r", { stable: 90, canary: 10 }) }]);

/** `n` first attempts spread round-robin over the sources; each pick must resolve to a target. */
async function picks(sources: readonly RedisSequenceSource[], n: number): Promise<string[]> {
  const configs = sources.map(() => build());
  const seen: string[] = [];
  for (let i = 0; i < n; i++) {
    const k = i % sources.length;
    const picked = pickTarget(route(configs[k], "r").backend, undefined, undefined, sources[k]);
    const target: CompiledTarget | undefined = picked instanceof Promise ? await picked : picked;
    seen.push(nameOf(target!.key));
  }
  return seen;
}

describe("Redis killed and restarted", () => {
  it("keeps every pick answered, reports fallback, picks by weight at random, and resumes exact counting by itself", async () => {
    const server = await startServer();
    const nodes = await countingSources(server.url, 2, { random: seeded(1) });
    const sources = nodes.map((n) => n.source);
    expect(tally(await picks(sources, 100))).toEqual({ stable: 90, canary: 10 });

    await server.kill();
    // Picks go on: the first ones find the connection gone (or a failed INCRBY) and fall back.
    const during = await picks(sources, 2000);
    expect(during).toHaveLength(2000);
    for (const n of nodes) {
      expect(n.source.fallback).toBe(true);
      expect(n.source.state).toBe("fallback");
      expect(n.states.map((s) => s.state)).toEqual(["counting", "fallback"]);
    }
    // Random by weight: with a seeded generator the count is fixed; it lies well within 10% ± 4σ.
    const canary = tally(during).canary ?? 0;
    expect(canary).toBeGreaterThan(200 - 4 * Math.sqrt(2000 * 0.1 * 0.9));
    expect(canary).toBeLessThan(200 + 4 * Math.sqrt(2000 * 0.1 * 0.9));
    // Not counted: a local rotation would give exactly 200.
    expect(canary).not.toBe(200);
    // Nothing waits while Redis is down: every pick is answered synchronously.
    const config = build();
    for (let i = 0; i < 1000; i++) expect(typeof pickTarget(route(config, "r").backend, undefined, undefined, sources[0])).toBe("object");

    await server.restart();
    await Promise.all(sources.map((s) => waitCounting(s)));
    for (const n of nodes) expect(n.states.map((s) => s.state)).toEqual(["counting", "fallback", "counting"]);
    // The restarted server is empty: the sequence starts again at 0, shared and exact.
    expect(tally(await picks(sources, 1000))).toEqual({ stable: 900, canary: 100 });
  });
});

describe("Redis hung (SIGSTOP)", () => {
  it("answers picks after at most the command timeout, falls back, and counts again after SIGCONT", async () => {
    const server = await startServer();
    const [node] = await countingSources(server.url, 1, { commandTimeoutMs: 50, probeIntervalMs: 50 });
    const source = node.source;
    expect(tally(await picks([source], 10))).toEqual({ stable: 9, canary: 1 });
    server.freeze();
    try {
      // The round trip gets no answer; the pick resolves anyway, with a random position.
      const seen = await picks([source], 50);
      expect(seen).toHaveLength(50);
      expect(source.state).toBe("fallback");
      expect(node.states.at(-1)?.reason).toMatch(/no answer within 50 ms/);
    } finally {
      server.thaw();
    }
    await waitCounting(source);
    // Whatever the counter reached meanwhile, any 1,000 consecutive positions are 100 whole cycles.
    expect(tally(await picks([source], 1000))).toEqual({ stable: 900, canary: 100 });
  });
});

describe("Redis absent at start", () => {
  it("starts in random fallback without waiting, and switches to counting once a server appears", async () => {
    const server = await startServer();
    await server.kill();
    const { source, states } = redisSource(server.url, { random: seeded(3), probeIntervalMs: 50 });
    expect(await source.ready(200)).toBe(false);
    expect(source.state).toBe("connecting");
    expect(source.fallback).toBe(true);
    expect(typeof source.next("gw:seq:{x}:1", 10)).toBe("number");
    await server.restart();
    await waitCounting(source);
    expect(states.map((s) => s.state)).toEqual(["counting"]);
    expect(await source.next("gw:seq:{x}:1", 10)).toBe(0);
  });
});

describe("close", () => {
  it("answers waiting picks, ends the connection and keeps answering (randomly) afterwards", async () => {
    const server = await startServer();
    const [{ source }] = await countingSources(server.url, 1);
    const pending = source.next("gw:seq:{y}:1", 10);
    await source.close();
    expect(await pending).toBeGreaterThanOrEqual(0);
    expect(source.state).toBe("closed");
    expect(typeof source.next("gw:seq:{y}:1", 10)).toBe("number");
    await until(async () => (await server.client().client("LIST")).split("\n").filter((l) => l.trim() !== "").length === 1, "only the inspection client to remain");
  });
});
