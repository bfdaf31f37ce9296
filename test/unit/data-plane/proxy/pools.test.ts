import { afterEach, describe, expect, it } from "vitest";
import { PoolRegistry } from "../../../../data-plane/src/proxy/pools.js";
import { closeAll, deferred, startTarget } from "./harness.js";

afterEach(closeAll);

describe("PoolRegistry", () => {
  it("shares one pool per origin and connect settings", async () => {
    const registry = new PoolRegistry();
    try {
      const a = registry.get("http://127.0.0.1:1", { connectTimeoutMs: 1_000 });
      expect(registry.get("http://127.0.0.1:1", { connectTimeoutMs: 1_000 })).toBe(a);
      expect(registry.get("http://127.0.0.1:2", { connectTimeoutMs: 1_000 })).not.toBe(a);
      expect(registry.get("http://127.0.0.1:1", { connectTimeoutMs: 2_000 })).not.toBe(a);
      expect(registry.get("https://127.0.0.1:1", { connectTimeoutMs: 1_000, rejectUnauthorized: true })).toBe(
        registry.get("https://127.0.0.1:1", { connectTimeoutMs: 1_000 }),
      );
      expect(registry.origins().sort()).toEqual(["http://127.0.0.1:1", "http://127.0.0.1:2", "https://127.0.0.1:1"]);
    } finally {
      await registry.close();
    }
  });

  it("reuses keep-alive connections", async () => {
    const remotePorts = new Set<number>();
    const target = await startTarget((req, res) => {
      remotePorts.add(req.socket.remotePort ?? 0);
      res.end("ok");
    });
    const registry = new PoolRegistry();
    try {
      const pool = registry.get(target.origin, { connectTimeoutMs: 1_000 });
      for (let i = 0; i < 10; i++) {
        const r = await pool.request({ path: "/", method: "GET" });
        expect(await r.body.text()).toBe("ok");
      }
      // Sequential requests, so one connection would do; undici's pool may open a second one
      // because it learns a connection is free again (its "drain") a tick after the response ended.
      expect(remotePorts.size).toBeLessThanOrEqual(2);
    } finally {
      await registry.close();
    }
  });

  it("retain closes dropped origins gracefully: a request in flight still completes", async () => {
    const release = deferred();
    const arrived = deferred();
    const target = await startTarget(async (_req, res) => {
      arrived.resolve();
      await release.promise;
      res.end("finished");
    });
    const registry = new PoolRegistry();
    try {
      const pool = registry.get(target.origin, { connectTimeoutMs: 1_000 });
      const kept = registry.get("http://127.0.0.1:9", { connectTimeoutMs: 1_000 });
      const inFlight = pool.request({ path: "/", method: "GET" });
      await arrived.promise;

      const retained = registry.retain(new Set(["http://127.0.0.1:9"]));
      expect(pool.closed).toBe(true);
      expect(kept.closed).toBe(false);
      expect(registry.origins()).toEqual(["http://127.0.0.1:9"]);
      // A new get() for the dropped origin makes a fresh pool rather than returning the closing one.
      expect(registry.get(target.origin, { connectTimeoutMs: 1_000 })).not.toBe(pool);

      release.resolve();
      const res = await inFlight;
      expect(await res.body.text()).toBe("finished");
      await retained;
      expect(pool.destroyed).toBe(true);
    } finally {
      await registry.close();
    }
  });

  it("close() closes every pool and refuses new ones", async () => {
    const registry = new PoolRegistry();
    const a = registry.get("http://127.0.0.1:1", { connectTimeoutMs: 1_000 });
    await registry.close();
    expect(a.closed).toBe(true);
    expect(registry.origins()).toEqual([]);
    expect(() => registry.get("http://127.0.0.1:1", { connectTimeoutMs: 1_000 })).toThrow(/closed/);
  });
});
