import { describe, expect, it } from "vitest";

import { isRedisUrl, parseRedisUrl, RedisUrlError } from "../../../../control-plane/src/store/redis-url.js";
import { redisStoreKeys } from "../../../../control-plane/src/store/redis.js";

describe("parseRedisUrl", () => {
  it.each([
    ["redis://127.0.0.1:7000", { cluster: false, tls: false, nodes: [{ host: "127.0.0.1", port: 7000 }], db: 0 }],
    ["redis://cache", { cluster: false, tls: false, nodes: [{ host: "cache", port: 6379 }], db: 0 }],
    ["redis://cache:6380/3", { nodes: [{ host: "cache", port: 6380 }], db: 3 }],
    ["rediss://cache:6380/", { tls: true, nodes: [{ host: "cache", port: 6380 }], db: 0 }],
    ["redis://[::1]:7000/1", { nodes: [{ host: "::1", port: 7000 }], db: 1 }],
    ["redis://:s%40cret@cache:1", { password: "s@cret", username: undefined, display: "redis://:***@cache:1" }],
    ["redis://admin:pw@cache:1", { password: "pw", username: "admin", display: "redis://admin:***@cache:1" }],
    ["redis://pw@cache:1", { password: "pw", username: undefined, display: "redis://:***@cache:1" }],
    [
      "redis+cluster://10.0.0.1:7000,10.0.0.2:7001, 10.0.0.3",
      {
        cluster: true,
        tls: false,
        nodes: [
          { host: "10.0.0.1", port: 7000 },
          { host: "10.0.0.2", port: 7001 },
          { host: "10.0.0.3", port: 6379 },
        ],
      },
    ],
    ["REDISS+CLUSTER://a:1", { cluster: true, tls: true, nodes: [{ host: "a", port: 1 }] }],
  ])("%s", (url, expected) => {
    expect(parseRedisUrl(url)).toMatchObject(expected);
  });

  it.each([
    ["http://cache:6379", /expected redis:\/\//],
    ["redis://", /host: missing/],
    ["redis://cache:0", /host\[0\]: port must be 1-65535, got "0"/],
    ["redis://cache:99999", /host\[0\]: port must be 1-65535/],
    ["redis://cache:x", /host\[0\]: port/],
    ["redis://cache/db1", /database: expected a number, got "db1"/],
    ["redis://a:1,b:2", /2 hosts given: use redis\+cluster:\/\//],
    ["redis+cluster://a:1/2", /a Redis Cluster has only database 0/],
    ["redis://cache?db=1", /query strings/],
    ["redis://[::1:7000", /unterminated/],
    ["redis+cluster://a:1,,b:2", /host\[1\]: missing/],
  ])("refuses %s", (url, reason) => {
    expect(() => parseRedisUrl(url)).toThrow(RedisUrlError);
    expect(() => parseRedisUrl(url)).toThrow(reason);
  });

  it("never puts the password in an error message", () => {
    expect(() => parseRedisUrl("redis://:hunter2@cache:0")).toThrow(/redis:\/\/:\*\*\*@cache:0/);
    expect(() => parseRedisUrl("redis://:hunter2@cache:0")).not.toThrow(/hunter2/);
  });

  it("tells Redis URLs from the file store", () => {
    expect(isRedisUrl("redis://x")).toBe(true);
    expect(isRedisUrl("rediss+cluster://x")).toBe(true);
    expect(isRedisUrl("file")).toBe(false);
    expect(isRedisUrl("./data")).toBe(false);
  });
});

describe("redisStoreKeys", () => {
  it("wraps the prefix in a hash tag, so every key of a store lands in one cluster slot", () => {
    expect(redisStoreKeys()).toEqual({ version: "{gw:cfg:}version", resources: "{gw:cfg:}res", log: "{gw:cfg:}log" });
    expect(redisStoreKeys("prod:")).toEqual({ version: "{prod:}version", resources: "{prod:}res", log: "{prod:}log" });
  });

  it("keeps a prefix that already holds a hash tag", () => {
    expect(redisStoreKeys("{gw}:cfg:")).toEqual({ version: "{gw}:cfg:version", resources: "{gw}:cfg:res", log: "{gw}:cfg:log" });
  });
});
