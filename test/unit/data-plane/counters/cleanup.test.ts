/**
 * Nothing grows without bound: sequence keys carry a TTL (set with the INCRBY that creates them,
 * refreshed at most every few seconds), are deleted when the configuration drops or re-versions
 * their rule or upstream, and a sweep gives stray keys a TTL and removes older revisions, without
 * touching keys other nodes may still use.
 */
import { describe, expect, it } from "vitest";
import type { CompiledConfig } from "../../../../data-plane/src/config/compile.js";
import { followConfig } from "../../../../data-plane/src/counters/follow-config.js";
import { sequenceKeysOf } from "../../../../data-plane/src/counters/keys.js";
import { pickTarget } from "../../../../data-plane/src/proxy/select.js";
import { compile, route, upstream, weightedRule } from "./config.js";
import { RedisServer } from "./redis-server.js";
import { countingSources, until, useRedisServer } from "./sources.js";

const redis = useRedisServer();

async function pexpireCalls(): Promise<number> {
  const m = /cmdstat_pexpire:calls=(\d+)/.exec(await redis.inspect.info("commandstats"));
  return m === null ? 0 : Number(m[1]);
}

describe("TTL", () => {
  it("is set by the round trip that creates the key, and refreshed at most once per refresh period, not per request", async () => {
    const [{ source }] = await countingSources(redis.server.url, 1, { ttlMs: 60_000, expireRefreshMs: 3_600_000 });
    expect(await source.next("gw:seq:{ttl}:1", 10)).toBe(0);
    const pttl = await redis.inspect.pttl("gw:seq:{ttl}:1");
    expect(pttl).toBeGreaterThan(0);
    expect(pttl).toBeLessThanOrEqual(60_000);
    for (let i = 0; i < 50; i++) await source.next("gw:seq:{ttl}:1", 10);
    expect(await RedisServer.incrbyCalls(redis.inspect)).toBe(51);
    expect(await pexpireCalls()).toBe(1);
  });

  it("is given again to a key another node deleted and this one recreated", async () => {
    const [{ source }] = await countingSources(redis.server.url, 1, { ttlMs: 60_000, expireRefreshMs: 3_600_000 });
    await source.next("gw:seq:{again}:1", 10);
    await redis.inspect.del("gw:seq:{again}:1");
    expect(await source.next("gw:seq:{again}:1", 10)).toBe(0);
    await until(async () => (await redis.inspect.pttl("gw:seq:{again}:1")) > 0, "the recreated key's TTL");
  });

  it("lets an unused sequence expire", async () => {
    const [{ source }] = await countingSources(redis.server.url, 1, { ttlMs: 150 });
    await source.next("gw:seq:{short}:1", 10);
    expect(await redis.inspect.exists("gw:seq:{short}:1")).toBe(1);
    await until(async () => (await redis.inspect.exists("gw:seq:{short}:1")) === 0, "the key to expire");
  });
});

describe("retiring keys on snapshot apply", () => {
  it("deletes the sequences of deleted and re-versioned rules and upstreams, and keeps the others", async () => {
    const [{ source }] = await countingSources(redis.server.url, 1);
    const listeners: ((c: CompiledConfig, p: CompiledConfig | undefined) => void)[] = [];
    const feed = { current: undefined as CompiledConfig | undefined, onApply: (l: (typeof listeners)[number]) => (listeners.push(l), () => undefined) };
    followConfig(feed, source);
    const apply = (c: CompiledConfig) => {
      const previous = feed.current;
      feed.current = c;
      for (const l of listeners) l(c, previous);
    };
    const v1 = compile(10n, [
      { revision: 3n, value: weightedRule("keep", { a: 50, b: 50 }) },
      { revision: 4n, value: weightedRule("reweigh", { a: 90, b: 10 }) },
      { revision: 5n, value: weightedRule("drop", { a: 90, b: 10 }) },
    ], [{ revision: 6n, value: upstream("up", ["x", "y"]) }]);
    apply(v1);
    // Traffic on every backend creates its key.
    for (const id of ["keep", "reweigh", "drop"]) await pickTarget(route(v1, id).backend, undefined, undefined, source);
    await pickTarget(v1.backends.get("up")!, undefined, undefined, source);
    expect((await redis.inspect.keys("gw:seq:*")).sort()).toEqual(["gw:seq:{rule/drop}:5", "gw:seq:{rule/keep}:3", "gw:seq:{rule/reweigh}:4", "gw:seq:{up}:6"]);

    // Version 12: "reweigh" gets new weights (revision 12), "drop" and the upstream are deleted.
    const v2 = compile(12n, [
      { revision: 3n, value: weightedRule("keep", { a: 50, b: 50 }) },
      { revision: 12n, value: weightedRule("reweigh", { a: 80, b: 20 }) },
    ]);
    apply(v2);
    await until(async () => (await redis.inspect.keys("gw:seq:*")).length === 1, "retired keys to be deleted");
    expect(await redis.inspect.keys("gw:seq:*")).toEqual(["gw:seq:{rule/keep}:3"]);
    // The re-weighted rule starts a new sequence at 0 under its new key.
    await pickTarget(route(v2, "reweigh").backend, undefined, undefined, source);
    expect(await redis.inspect.get("gw:seq:{rule/reweigh}:12")).toBe("1");
  });
});

describe("sweep", () => {
  it("gives stray keys a TTL and deletes older revisions of live ids, leaving unknown ids and newer revisions to their TTL", async () => {
    const [{ source }] = await countingSources(redis.server.url, 1, { ttlMs: 60_000 });
    const config = compile(20n, [{ revision: 5n, value: weightedRule("r", { a: 1, b: 1 }) }]);
    source.setLiveKeys(sequenceKeysOf(config));
    // As left behind by nodes that died between INCRBY and PEXPIRE, or served other versions.
    await redis.inspect.mset({
      "gw:seq:{rule/r}:5": "7", // live, no TTL
      "gw:seq:{rule/r}:2": "3", // an older revision of a live rule: dead for sure
      "gw:seq:{rule/r}:9": "1", // a newer revision this node has not seen yet: another node's live key
      "gw:seq:{rule/gone}:4": "5", // an id this node does not know: maybe another node's
      "gw:seq:{rule/r/split/0}:wdeadbeef": "2", // fingerprinted split key: not ordered, left to TTL
      "unrelated:key": "x",
    });
    const result = await source.sweep();
    expect(result).toEqual({ scanned: 5, expired: 4, deleted: 1 });
    expect((await redis.inspect.keys("*")).sort()).toEqual([
      "gw:seq:{rule/gone}:4",
      "gw:seq:{rule/r/split/0}:wdeadbeef",
      "gw:seq:{rule/r}:5",
      "gw:seq:{rule/r}:9",
      "unrelated:key",
    ]);
    for (const k of ["gw:seq:{rule/gone}:4", "gw:seq:{rule/r/split/0}:wdeadbeef", "gw:seq:{rule/r}:5", "gw:seq:{rule/r}:9"]) {
      expect(await redis.inspect.pttl(k)).toBeGreaterThan(0);
    }
    expect(await redis.inspect.pttl("unrelated:key")).toBe(-1);
    expect(await redis.inspect.get("gw:seq:{rule/r}:5")).toBe("7");
  });
});
