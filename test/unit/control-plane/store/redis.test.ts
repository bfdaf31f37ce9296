/**
 * RedisStore against real redis-server processes this file starts (never the machine's Redis):
 * the ConfigStore contract the file store also meets, plus what sharing adds: two stores on one
 * Redis (as two control-plane replicas) see each other's commits in order, exactly one of two
 * racing commits wins, a trimmed log means a full reload, and Redis going away (killed, frozen,
 * restarted, restarted empty) is survived without hangs and without losing acknowledged commits.
 */
import { randomBytes } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";

import { ConfigApi } from "../../../../control-plane/src/config/api.js";
import { ConfigState } from "../../../../control-plane/src/config/state.js";
import { RedisStore, redisStoreKeys, type RedisStoreOptions } from "../../../../control-plane/src/store/redis.js";
import {
  StoreConflictError,
  StoreUnavailableError,
  type CommitEvent,
  type Mutation,
  type StoreState,
} from "../../../../control-plane/src/store/store.js";
import { RedisProcess, stopAllRedis } from "../../../support/redis-process.js";
import { waitFor } from "../../../support/wait.js";

const put = (kind: Mutation["kind"], id: string, data: string): Mutation => ({ op: "put", kind, id, data });
const del = (kind: Mutation["kind"], id: string): Mutation => ({ op: "delete", kind, id });

/** A state as plain data, for toEqual. */
function plain(state: StoreState): Record<string, { revision: bigint; data: string }> {
  return Object.fromEntries([...state.resources].map(([key, r]) => [key, { revision: r.revision, data: r.data }]));
}

/** Fast reconnects and short bounds, so outages resolve quickly; warnings are kept per store. */
const FAST: RedisStoreOptions = { commandTimeoutMs: 1_000, blockMs: 1_000, maxReconnectDelayMs: 200, connectTimeoutMs: 5_000 };

interface Opened {
  readonly store: RedisStore;
  readonly warnings: Error[];
  readonly recovered: string[];
}

const stores: RedisStore[] = [];

async function open(url: string, prefix: string, opts: RedisStoreOptions = {}): Promise<Opened> {
  const warnings: Error[] = [];
  const recovered: string[] = [];
  const store = await RedisStore.open(url, {
    ...FAST,
    prefix,
    onWarning: (w) => warnings.push(w),
    onRecovered: (m) => recovered.push(m),
    ...opts,
  });
  stores.push(store);
  return { store, warnings, recovered };
}

/** Everything a subscriber receives, and a way to wait for a version. */
function follow(store: RedisStore): { events: CommitEvent[]; reloads: StoreState[]; versions(): bigint[]; until(v: bigint): Promise<void> } {
  const events: CommitEvent[] = [];
  const reloads: StoreState[] = [];
  store.subscribe((e) => events.push(e));
  store.onReload((s) => reloads.push(s));
  const last = () => {
    const e = events.at(-1)?.version ?? 0n;
    const r = reloads.at(-1)?.version ?? 0n;
    return e > r ? e : r;
  };
  return {
    events,
    reloads,
    versions: () => events.map((e) => e.version),
    until: (v) => waitFor(() => last() >= v, { what: `version ${v} to be delivered (last: ${last()})` }).then(() => undefined),
  };
}

function uniquePrefix(): string {
  return `t${randomBytes(4).toString("hex")}:`;
}

afterEach(async () => {
  await Promise.all(stores.splice(0).map((s) => s.close()));
});
afterAll(stopAllRedis);

describe("RedisStore: the ConfigStore contract", () => {
  let redis: RedisProcess;
  beforeAll(async () => {
    redis = await RedisProcess.start({ persistence: "aof-always" });
  });

  it("round-trips puts and deletes, in the documented key layout, and a second store reads the same", async () => {
    const prefix = uniquePrefix();
    const { store } = await open(redis.url, prefix);
    expect(await store.load()).toEqual({ version: 0n, resources: new Map() });
    expect(await store.commit(0n, [put("rule", "a", "A1"), put("upstream", "u", "U1"), put("tenant", "t", "T1")])).toBe(1n);
    expect(await store.commit(1n, [put("rule", "a", "A2"), del("upstream", "u"), del("rollout", "missing")])).toBe(2n);
    const state = await store.load();
    expect(state.version).toBe(2n);
    expect(plain(state)).toEqual({ "rule/a": { revision: 2n, data: "A2" }, "tenant/t": { revision: 1n, data: "T1" } });

    const keys = redisStoreKeys(prefix);
    const raw = redis.client();
    expect(await raw.get(keys.version)).toBe("2");
    expect(await raw.hgetall(keys.resources)).toEqual({
      "rule/a": JSON.stringify({ revision: "2", data: "A2" }),
      "tenant/t": JSON.stringify({ revision: "1", data: "T1" }),
    });
    const log = await raw.xrange(keys.log, "-", "+");
    expect(log.map(([id]) => id)).toEqual(["1-0", "2-0"]);
    expect(log[1][1]).toEqual([
      "v",
      "2",
      "m",
      JSON.stringify([put("rule", "a", "A2"), del("upstream", "u"), del("rollout", "missing")]),
    ]);

    const other = await open(redis.url, prefix);
    expect(plain(await other.store.load())).toEqual(plain(state));
  });

  it("refuses a stale expected version with StoreConflictError and writes nothing", async () => {
    const prefix = uniquePrefix();
    const { store } = await open(redis.url, prefix);
    const watcher = follow((await open(redis.url, prefix)).store);
    await store.commit(0n, [put("rule", "a", "A1")]);
    await watcher.until(1n);
    const keys = redisStoreKeys(prefix);
    const raw = redis.client();
    const before = { log: await raw.xlen(keys.log), res: await raw.hgetall(keys.resources), version: await raw.get(keys.version) };

    const error = await store.commit(0n, [put("rule", "a", "lost")]).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StoreConflictError);
    expect(error).toMatchObject({ expectedVersion: 0n, actualVersion: 1n });
    expect({ log: await raw.xlen(keys.log), res: await raw.hgetall(keys.resources), version: await raw.get(keys.version) }).toEqual(before);

    // A later commit is delivered right after version 1: the refused one left no event behind.
    await store.commit(1n, [put("rule", "b", "B")]);
    await watcher.until(2n);
    expect(watcher.versions()).toEqual([1n, 2n]);
    expect(watcher.events[1].mutations).toEqual([put("rule", "b", "B")]);
  });

  it("rejects malformed mutations at the edge, naming the field", async () => {
    const { store } = await open(redis.url, uniquePrefix());
    await expect(store.commit(0n, [{ op: "put", kind: "nope", id: "a", data: "" } as unknown as Mutation])).rejects.toThrow(/mutations\[0\]\.kind/);
    await expect(store.commit(0n, [{ op: "put", kind: "rule", id: "a" } as unknown as Mutation])).rejects.toThrow(/mutations\[0\]\.data/);
    await expect(store.commit(0 as unknown as bigint, [])).rejects.toThrow(/expectedVersion/);
    expect((await store.load()).version).toBe(0n);
  });

  it("delivers every commit of two stores to both subscribers, in version order, own commits included", async () => {
    const prefix = uniquePrefix();
    const a = (await open(redis.url, prefix)).store;
    const b = (await open(redis.url, prefix)).store;
    await a.load();
    await b.load();
    const seenByA = follow(a);
    const seenByB = follow(b);
    const written: Mutation[][] = [];
    let version = 0n;
    for (let i = 0; i < 40; i++) {
      const writer = i % 3 === 0 ? b : a;
      const mutations = [put("rule", `r${i % 7}`, `v${i}`), ...(i % 5 === 4 ? [del("rule", `r${(i + 3) % 7}`)] : [])];
      version = await writer.commit(version, mutations);
      written.push(mutations);
    }
    await seenByA.until(40n);
    await seenByB.until(40n);
    const expected = written.map((mutations, i) => ({ version: BigInt(i + 1), mutations }));
    expect(seenByA.events).toEqual(expected);
    expect(seenByB.events).toEqual(expected);
    expect(seenByA.reloads).toEqual([]);
  });

  it("of two stores committing on the same version, exactly one wins, every time", async () => {
    const prefix = uniquePrefix();
    const a = (await open(redis.url, prefix)).store;
    const b = (await open(redis.url, prefix)).store;
    let version = 0n;
    const winners: string[] = [];
    for (let round = 0; round < 50; round++) {
      const results = await Promise.allSettled([
        a.commit(version, [put("rule", `a${round}`, "a")]),
        b.commit(version, [put("rule", `b${round}`, "b")]),
      ]);
      const won = results.filter((r) => r.status === "fulfilled");
      const lost = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
      expect(won).toHaveLength(1);
      expect(lost).toHaveLength(1);
      expect(lost[0].reason).toBeInstanceOf(StoreConflictError);
      expect(lost[0].reason).toMatchObject({ expectedVersion: version, actualVersion: version + 1n });
      winners.push(results[0].status === "fulfilled" ? `rule/a${round}` : `rule/b${round}`);
      version += 1n;
    }
    const state = await a.load();
    expect(state.version).toBe(50n);
    expect([...state.resources.keys()].sort()).toEqual(winners.sort());
  });

  it("never takes replies racing on its two connections for lost commits", async () => {
    // The follower may deliver version v+1 before the answer to a load or commit sent earlier
    // (which saw v) arrives: that is ordinary, not Redis going back in time.
    const prefix = uniquePrefix();
    const a = await open(redis.url, prefix);
    const b = await open(redis.url, prefix);
    follow(a.store);
    follow(b.store);
    const writer = async (store: RedisStore, name: string) => {
      let version = (await store.load()).version;
      for (let i = 0; i < 60; i++) {
        for (;;) {
          try {
            version = await store.commit(version, [put("rule", `${name}${i}`, "x")]);
            break;
          } catch (error) {
            if (!(error instanceof StoreConflictError)) throw error;
            version = (await store.load()).version;
          }
        }
      }
    };
    await Promise.all([writer(a.store, "a"), writer(b.store, "b")]);
    expect((await a.store.load()).version).toBe(120n);
    expect([...a.warnings, ...b.warnings]).toEqual([]);
  });

  it("starts delivering right after the version it loaded, so nothing between load and subscribe is missed", async () => {
    const prefix = uniquePrefix();
    const writer = (await open(redis.url, prefix)).store;
    const reader = (await open(redis.url, prefix)).store;
    await writer.commit(0n, [put("rule", "a", "1")]);
    expect((await reader.load()).version).toBe(1n);
    await writer.commit(1n, [put("rule", "a", "2")]);
    await writer.commit(2n, [put("rule", "a", "3")]);
    const seen = follow(reader);
    await seen.until(3n);
    expect(seen.versions()).toEqual([2n, 3n]);
  });

  it("replaces the state through onReload when the log was trimmed past its position, then resumes events", async () => {
    const prefix = uniquePrefix();
    const keys = redisStoreKeys(prefix);
    const writer = (await open(redis.url, prefix)).store;
    let version = 0n;
    for (let i = 0; i < 3; i++) version = await writer.commit(version, [put("rule", `r${i}`, `x${i}`)]);
    const late = await open(redis.url, prefix);
    expect((await late.store.load()).version).toBe(3n);
    // The late store is behind while commits 4..10 happen and the log keeps only the last two.
    for (let i = 3; i < 10; i++) version = await writer.commit(version, [put("rule", `r${i % 4}`, `y${i}`), del("rule", "r1")]);
    await redis.client().xtrim(keys.log, "MAXLEN", 2);

    const seen = follow(late.store);
    await seen.until(10n);
    expect(seen.events).toEqual([]);
    expect(seen.reloads).toHaveLength(1);
    expect(seen.reloads[0].version).toBe(10n);
    expect(plain(seen.reloads[0])).toEqual(plain(await writer.load()));
    expect(late.warnings.map((w) => w.message)).toEqual([expect.stringMatching(/trimmed past version 4 .*reloaded the whole configuration at version 10/)]);

    await writer.commit(10n, [put("rule", "z", "after")]);
    await seen.until(11n);
    expect(seen.versions()).toEqual([11n]);
  });

  it("keeps the log to about streamMaxLen entries", async () => {
    const prefix = uniquePrefix();
    const { store } = await open(redis.url, prefix, { streamMaxLen: 10 });
    let version = 0n;
    for (let i = 0; i < 400; i++) version = await store.commit(version, [put("rule", "r", String(i))]);
    const length = await redis.client().xlen(redisStoreKeys(prefix).log);
    // MAXLEN ~ trims whole stream nodes (100 entries by default): approximately, never below 10.
    expect(length).toBeGreaterThanOrEqual(10);
    expect(length).toBeLessThan(400);
  });

  it("lets pending commits settle before close, and refuses work after it", async () => {
    const { store } = await open(redis.url, uniquePrefix());
    follow(store);
    const pending = store.commit(0n, [put("rule", "a", "1")]);
    await store.close();
    await expect(pending).resolves.toBe(1n);
    await expect(store.commit(1n, [])).rejects.toBeInstanceOf(StoreUnavailableError);
    await expect(store.load()).rejects.toBeInstanceOf(StoreUnavailableError);
  });

  it("refuses to open when Redis cannot be reached, naming it", async () => {
    const gone = await RedisProcess.start();
    await gone.kill();
    const error = await RedisStore.open(`redis://:pw@127.0.0.1:${gone.port}`, { connectTimeoutMs: 500 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StoreUnavailableError);
    expect((error as Error).message).toContain(`redis://:***@127.0.0.1:${gone.port}`);
    expect((error as Error).message).not.toContain("pw");
  });
});

describe("RedisStore: Redis going away", () => {
  let redis: RedisProcess;
  afterEach(async () => {
    await redis.stop();
  });

  it("rejects commits promptly while Redis is down, and both stores recover by themselves after a restart, losing nothing acknowledged", async () => {
    redis = await RedisProcess.start({ persistence: "aof-always" });
    const prefix = uniquePrefix();
    const a = await open(redis.url, prefix);
    const b = await open(redis.url, prefix);
    await a.store.load();
    await b.store.load();
    const seenByA = follow(a.store);
    const seenByB = follow(b.store);
    let version = 0n;
    for (let i = 0; i < 3; i++) version = await (i % 2 === 0 ? a : b).store.commit(version, [put("rule", `r${i}`, `v${i}`)]);
    await seenByB.until(3n);

    await redis.kill();
    const first = await a.store.commit(3n, [put("rule", "down", "x")]).catch((e: unknown) => e);
    expect(first).toBeInstanceOf(StoreUnavailableError);
    // Once the client has noticed, a commit is refused before anything is sent.
    const refused = await waitFor(
      async () => {
        const e = await a.store.commit(3n, [put("rule", "down", "x")]).catch((err: unknown) => err);
        return e instanceof StoreUnavailableError && /not sent: not connected to Redis; nothing was written/.test(e.message) ? e : undefined;
      },
      { what: "a commit refused as not sent" },
    );
    expect(refused.message).toContain(redis.url);
    await expect(b.store.load()).rejects.toBeInstanceOf(StoreUnavailableError);
    await waitFor(() => a.warnings.some((w) => /lost Redis/.test(w.message)) && b.warnings.some((w) => /lost Redis/.test(w.message)), {
      what: "both followers to report the outage",
    });

    await redis.restart();
    await waitFor(() => a.recovered.length > 0 && b.recovered.length > 0, { what: "both followers to recover" });
    const state = await waitFor(() => b.store.load().catch(() => undefined), { what: "b to load again" });
    // The AOF (appendfsync always) kept every acknowledged commit; the refused ones left nothing.
    expect(state.version).toBe(3n);
    expect(plain(state)).toEqual({
      "rule/r0": { revision: 1n, data: "v0" },
      "rule/r1": { revision: 2n, data: "v1" },
      "rule/r2": { revision: 3n, data: "v2" },
    });
    version = await waitFor(() => a.store.commit(3n, [put("rule", "after", "a")]).catch(() => undefined), { what: "a to commit again" });
    version = await b.store.commit(version, [put("rule", "after", "b")]);
    expect(version).toBe(5n);
    await seenByA.until(5n);
    await seenByB.until(5n);
    expect(seenByA.versions()).toEqual([1n, 2n, 3n, 4n, 5n]);
    expect(seenByB.versions()).toEqual([1n, 2n, 3n, 4n, 5n]);
  });

  it("bounds commands when Redis hangs: commit and load fail with StoreUnavailableError, and work again once it answers", async () => {
    redis = await RedisProcess.start();
    const prefix = uniquePrefix();
    const { store } = await open(redis.url, prefix, { commandTimeoutMs: 300 });
    follow(store);
    await store.commit(0n, [put("rule", "a", "1")]);

    redis.freeze();
    try {
      const error = await store.commit(1n, [put("rule", "a", "2")]).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(StoreUnavailableError);
      // Sent but unanswered: the caller is told the outcome is unknown.
      expect((error as Error).message).toMatch(/commit of version 2 failed: .*may or may not have been applied/);
      await expect(store.load()).rejects.toBeInstanceOf(StoreUnavailableError);
    } finally {
      redis.thaw();
    }
    const state = await waitFor(() => store.load().catch(() => undefined), { what: "the store to load again" });
    // The frozen server still had the commit in its socket buffer, so it may have run it on thaw;
    // either way the store continues from what Redis holds.
    expect([1n, 2n]).toContain(state.version);
    const next = await waitFor(
      async () => {
        const base = await store.load();
        return store.commit(base.version, [put("rule", "b", "1")]).catch(() => undefined);
      },
      { what: "a commit after the thaw" },
    );
    expect([2n, 3n]).toContain(next);
  });

  it("notices a Redis that came back without its data, and refuses writes instead of forking the history", async () => {
    redis = await RedisProcess.start({ persistence: "none" });
    const prefix = uniquePrefix();
    const a = await open(redis.url, prefix);
    await a.store.load();
    const seen = follow(a.store);
    await a.store.commit(0n, [put("rule", "a", "1")]);
    await a.store.commit(1n, [put("rule", "a", "2")]);
    await seen.until(2n);

    await redis.kill();
    await redis.restart();
    const lost = await waitFor(() => a.warnings.find((w) => /behind version 2/.test(w.message)), { what: "the loss to be reported" });
    expect(lost.message).toMatch(/Redis is at version 0, behind version 2 that this replica already saw: acknowledged commits were lost/);
    const error = await a.store.commit(2n, [put("rule", "a", "3")]).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StoreUnavailableError);
    expect((error as Error).message).toMatch(/refuses writes/);
    expect(await redis.client().get(redisStoreKeys(prefix).version)).toBeNull();
  });

  it("with waitReplicas, refuses to acknowledge a commit no replica has (it is applied, and delivered)", async () => {
    redis = await RedisProcess.start();
    const prefix = uniquePrefix();
    const { store } = await open(redis.url, prefix, { waitReplicas: 1, waitTimeoutMs: 100, commandTimeoutMs: 1_000 });
    await store.load();
    const seen = follow(store);
    const error = await store.commit(0n, [put("rule", "a", "1")]).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StoreUnavailableError);
    expect((error as Error).message).toMatch(/version 1 was committed on the Redis primary, but only 0 of 1 replicas acknowledged it within 100 ms/);
    await seen.until(1n);
    expect(seen.versions()).toEqual([1n]);
  });
});

describe("RedisStore on a Redis Cluster (one node owning every slot)", () => {
  let cluster: RedisProcess;
  beforeAll(async () => {
    cluster = await RedisProcess.start({ cluster: true });
  });

  it("keeps every key of a store in one slot, commits with the script and follows the log", async () => {
    const prefix = uniquePrefix();
    const keys = redisStoreKeys(prefix);
    const raw = cluster.client();
    const slots = await Promise.all([keys.version, keys.resources, keys.log].map((k) => raw.call("CLUSTER", "KEYSLOT", k)));
    expect(new Set(slots).size).toBe(1);

    expect(cluster.url).toMatch(/^redis\+cluster:\/\//);
    const a = (await open(cluster.url, prefix)).store;
    const b = (await open(cluster.url, prefix)).store;
    await b.load();
    const seen = follow(b);
    expect(await a.commit(0n, [put("rule", "a", "1")])).toBe(1n);
    await expect(b.commit(0n, [put("rule", "b", "1")])).rejects.toBeInstanceOf(StoreConflictError);
    expect(await b.commit(1n, [put("rule", "b", "1"), del("rule", "a")])).toBe(2n);
    await seen.until(2n);
    expect(seen.versions()).toEqual([1n, 2n]);
    expect(plain(await a.load())).toEqual({ "rule/b": { revision: 2n, data: "1" } });
  });
});

describe("ConfigApi on RedisStore: two replicas", () => {
  let redis: RedisProcess;
  const admin = { kind: "admin" } as const;
  beforeAll(async () => {
    redis = await RedisProcess.start();
  });

  it("replaces its whole state when the store reloads after a trimmed log", async () => {
    const prefix = uniquePrefix();
    const writer = await ConfigApi.open((await open(redis.url, prefix)).store);
    const lagging = (await open(redis.url, prefix)).store;
    const stale = await lagging.load();
    try {
      await writer.createTenant(admin, "a", undefined);
      const { tenant: b } = await writer.createTenant(admin, "b", undefined);
      await writer.deleteTenant(admin, b.id);
      await redis.client().xtrim(redisStoreKeys(prefix).log, "MAXLEN", 1);
      // A replica that was behind while the log was trimmed: it starts following from `stale`.
      const behind = new ConfigApi(lagging, ConfigState.fromStore(stale));
      try {
        await waitFor(() => behind.current().version === writer.current().version, { what: "the lagging replica to catch up" });
        expect([...behind.current().tenants.values()].map((t) => t.name)).toEqual(["a"]);
        expect(behind.current().apiKeys.size).toBe(1);
      } finally {
        behind.close();
      }
    } finally {
      writer.close();
    }
  });

  it("sees the other replica's writes, retries lost races, and answers UNAVAILABLE while Redis is down", async () => {
    const prefix = uniquePrefix();
    const one = await ConfigApi.open((await open(redis.url, prefix)).store);
    const two = await ConfigApi.open((await open(redis.url, prefix)).store);
    try {
      const { tenant } = await one.createTenant(admin, "first", undefined);
      await waitFor(() => two.current().tenants.has(tenant.id), { what: "replica two to see the tenant" });

      // Both replicas write at once: every write lands (conflicts are re-planned), none twice. Four
      // each, so no write can lose more races than ConfigApi's attempts.
      const names = Array.from({ length: 8 }, (_, i) => `t${i}`);
      await Promise.all(names.map((name, i) => (i % 2 === 0 ? one : two).createTenant(admin, name, undefined)));
      await waitFor(() => one.current().version === 9n && two.current().version === 9n, { what: "both replicas at version 9" });
      for (const api of [one, two]) {
        expect([...api.current().tenants.values()].map((t) => t.name).sort()).toEqual(["first", ...names].sort());
      }

      await redis.kill();
      const error = await one.createTenant(admin, "while-down", undefined).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ConnectError);
      expect((error as ConnectError).code).toBe(Code.Unavailable);
      expect(one.listTenants(admin)).toHaveLength(9);
    } finally {
      one.close();
      two.close();
    }
  });
});
