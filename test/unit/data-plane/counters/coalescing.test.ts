/**
 * Redis cost does not grow per request: picks for one key requested in one turn of the event loop,
 * or while that key's round trip is in flight, become one INCRBY (counted by the server itself,
 * INFO commandstats), and the range it returns is handed out in request order.
 */
import type { Redis } from "ioredis";
import { describe, expect, it } from "vitest";
import { RedisServer } from "./redis-server.js";
import { countingSources, until, useRedisServer } from "./sources.js";

const redis = useRedisServer();

const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

describe("coalescing", () => {
  it("turns 100 concurrent picks on one node into one INCRBY and hands out 0..99 in order", async () => {
    const [{ source }] = await countingSources(redis.server.url, 1);
    const picks = Array.from({ length: 100 }, () => source.next("gw:seq:{c1}:1", 10));
    expect(picks.every((p) => p instanceof Promise)).toBe(true);
    expect(await Promise.all(picks)).toEqual(Array.from({ length: 100 }, (_, i) => i));
    expect(await RedisServer.incrbyCalls(redis.inspect)).toBe(1);
    expect(source.stats).toMatchObject({ incrbyCommands: 1, roundTrips: 1, countedPicks: 100, fallbackPicks: 0 });
    expect(await redis.inspect.get("gw:seq:{c1}:1")).toBe("100");
  });

  it("folds picks that arrive while the key's round trip is in flight into the next single INCRBY", async () => {
    // A generous timeout: the server is paused on purpose and this is not a failure.
    const [{ source }] = await countingSources(redis.server.url, 1, { commandTimeoutMs: 30_000 });
    // Writes (INCRBY) wait at the server until UNPAUSE; this client's CLIENT commands do not.
    await redis.inspect.call("CLIENT", "PAUSE", "60000", "WRITE");
    try {
      const first = source.next("gw:seq:{c2}:1", 10);
      await until(() => source.stats.roundTrips === 1, "the first INCRBY to be sent");
      const later: (number | Promise<number>)[] = [];
      for (let tick = 0; tick < 5; tick++) {
        for (let i = 0; i < 10; i++) later.push(source.next("gw:seq:{c2}:1", 10));
        await turn();
      }
      // Five turns of the loop passed, but the key's round trip is still out: nothing else was sent.
      expect(source.stats.roundTrips).toBe(1);
      await redis.inspect.call("CLIENT", "UNPAUSE");
      expect(await Promise.all([first, ...later])).toEqual(Array.from({ length: 51 }, (_, i) => i));
    } finally {
      await redis.inspect.call("CLIENT", "UNPAUSE");
    }
    expect(await RedisServer.incrbyCalls(redis.inspect)).toBe(2);
    expect(source.stats).toMatchObject({ incrbyCommands: 2, roundTrips: 2, countedPicks: 51 });
  });

  it("sends the keys flushed together in one pipeline (one round trip, one INCRBY per key)", async () => {
    const [{ source }] = await countingSources(redis.server.url, 1);
    const keys = ["gw:seq:{a}:1", "gw:seq:{b}:1", "gw:seq:{c}:1"];
    const picks = keys.flatMap((k) => [source.next(k, 5), source.next(k, 5)]);
    expect(await Promise.all(picks)).toEqual([0, 1, 0, 1, 0, 1]);
    expect(source.stats).toMatchObject({ roundTrips: 1, incrbyCommands: 3 });
    expect(await RedisServer.incrbyCalls(redis.inspect)).toBe(3);
  });

  it("continues one sequence across nodes: each range is used once, in the order the server granted it", async () => {
    const [a, b] = await countingSources(redis.server.url, 2);
    const fromA = await Promise.all(Array.from({ length: 30 }, () => a.source.next("gw:seq:{shared}:1", 10)));
    const fromB = await Promise.all(Array.from({ length: 30 }, () => b.source.next("gw:seq:{shared}:1", 10)));
    expect(fromA).toEqual(Array.from({ length: 30 }, (_, i) => i));
    expect(fromB).toEqual(Array.from({ length: 30 }, (_, i) => 30 + i));
    expect(await RedisServer.incrbyCalls(redis.inspect)).toBe(2);
  });

  it("in lease mode holds up to `lease` positions and answers from them synchronously, topping up at half", async () => {
    const [{ source }] = await countingSources(redis.server.url, 1, { lease: 10 });
    const first = source.next("gw:seq:{lease}:1", 10);
    expect(first).toBeInstanceOf(Promise);
    expect(await first).toBe(0);
    // Positions 1..10 of the first block (1 + 10 reserved) are at hand: no waiting.
    const sync: unknown[] = [];
    for (let i = 0; i < 5; i++) sync.push(source.next("gw:seq:{lease}:1", 10));
    expect(sync).toEqual([1, 2, 3, 4, 5]);
    // Half the block is used: it was topped up to 10 held positions in the background (INCRBY 5).
    await until(() => source.stats.incrbyCommands === 2 && source.stats.reservedPositions === 16, "the top-up");
    for (let i = 0; i < 10; i++) sync.push(source.next("gw:seq:{lease}:1", 10));
    expect(sync.every((p) => typeof p === "number")).toBe(true);
    expect(sync.slice(5)).toEqual([6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
    // Never more than 10 held: reserved minus handed out stays within the lease.
    await until(() => source.stats.incrbyCommands === 3, "the next top-up");
    expect(source.stats.reservedPositions - source.stats.countedPicks).toBeLessThanOrEqual(10);
    expect(await redis.inspect.get("gw:seq:{lease}:1")).toBe(String(source.stats.reservedPositions));
  });
});
