import { describe, expect, it } from "vitest";
import { fromApisixRule, fromApisixUpstream, isApisixUpstream } from "../../../../control-plane/src/admin/apisix.js";
import { decodeJson } from "../../../../control-plane/src/admin/decode.js";
import { ConfigError } from "../../../../data-plane/src/config/errors.js";
import { validateRule } from "../../../../data-plane/src/config/validate.js";
import { RuleSchema } from "../../../../proto/gen/gateway/v1/rule_pb.js";

const F = "traffic_split.rules[0].weighted_upstreams[0].upstream";

/** A rule body whose first split entry carries `upstream`, as a REST client sends it. */
function ruleWith(upstream: unknown, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    path: "/index.html",
    targets: [{ url: "http://127.0.0.1:1980" }],
    traffic_split: { rules: [{ weighted_upstreams: [{ upstream, weight: 3, ...extra }, { weight: 2 }] }] },
  };
}

/** The translated upstream of the first split entry. */
function translated(upstream: unknown): Record<string, unknown> {
  const out = fromApisixRule(ruleWith(upstream)) as { traffic_split: { rules: { weighted_upstreams: { upstream: Record<string, unknown> }[] }[] } };
  return out.traffic_split.rules[0].weighted_upstreams[0].upstream;
}

function errorOf(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error("expected a ConfigError");
}

describe("fromApisixRule: the seed's inline upstreams", () => {
  it("translates the canary example's upstream_A verbatim (nodes hash, roundrobin, timeouts in seconds)", () => {
    const up = translated({
      name: "upstream_A",
      type: "roundrobin",
      nodes: { "127.0.0.1:1981": 10 },
      timeout: { connect: 15, send: 15, read: 15 },
    });
    expect(up).toEqual({
      name: "upstream_A",
      algorithm: "round-robin",
      targets: [{ host: "127.0.0.1", port: 1981, weight: 10 }],
      timeouts: { connect_ms: 15000, send_ms: 15000, read_ms: 15000 },
    });
  });

  it("decodes and validates as a Rule once translated (what the REST route does)", () => {
    const body = ruleWith({ name: "upstream_A", type: "roundrobin", nodes: { "127.0.0.1:1981": 10 }, timeout: { connect: 15, send: 15, read: 15 } });
    const rule = validateRule(decodeJson(RuleSchema, fromApisixRule(body))).value;
    const w = rule.trafficSplit!.rules[0].weightedUpstreams;
    expect(w[0].weight).toBe(3);
    expect(w[0].upstream!.targets.map((t) => [t.host, t.port, t.weight])).toEqual([["127.0.0.1", 1981, 10]]);
    expect(w[0].upstream!.timeouts).toMatchObject({ connectMs: 15000, sendMs: 15000, readMs: 15000 });
    expect(w[1].upstream).toBeUndefined();
    expect(w[1].weight).toBe(2);
  });

  it("leaves a body without APISIX shapes identical (same contents), and never mutates its input", () => {
    const ours = ruleWith({ name: "ours", algorithm: "round-robin", targets: [{ host: "127.0.0.1", port: 1981 }] });
    const frozen = JSON.stringify(ours);
    expect(fromApisixRule(ours)).toEqual(ours);
    const apisix = ruleWith({ nodes: { "127.0.0.1:1981": 1 } });
    const before = JSON.stringify(apisix);
    fromApisixRule(apisix);
    expect(JSON.stringify(apisix)).toBe(before);
    expect(JSON.stringify(ours)).toBe(frozen);
  });

  it.each([
    ["not an object", "x"],
    ["null", null],
    ["an array", []],
    ["no traffic_split", { path: "/a" }],
    ["traffic_split not an object", { traffic_split: 3 }],
    ["rules not an array", { traffic_split: { rules: {} } }],
    ["weighted_upstreams not an array", { traffic_split: { rules: [{ weighted_upstreams: 1 }] } }],
  ])("passes %s through for decodeJson to judge", (_what, body) => {
    expect(fromApisixRule(body)).toEqual(body);
  });

  it("reads lowerCamelCase keys too (trafficSplit, weightedUpstreams, upstreamId)", () => {
    const out = fromApisixRule({
      trafficSplit: { rules: [{ weightedUpstreams: [{ upstream: { nodes: { "10.0.0.1:80": 1 } } }, { upstreamId: 7 }] }] },
    }) as { trafficSplit: { rules: { weightedUpstreams: Record<string, unknown>[] }[] } };
    const w = out.trafficSplit.rules[0].weightedUpstreams;
    expect(w[0].upstream).toEqual({ name: "split-0-0", algorithm: "round-robin", targets: [{ host: "10.0.0.1", port: 80, weight: 1 }] });
    expect(w[1]).toEqual({ upstreamId: "7" });
  });

  it("reads an integer upstream_id (APISIX ids may be numbers) as its decimal string", () => {
    const out = fromApisixRule({ traffic_split: { rules: [{ weighted_upstreams: [{ upstream_id: 1, weight: 1 }, { weight: 1 }] }] } });
    expect(out).toEqual({ traffic_split: { rules: [{ weighted_upstreams: [{ upstream_id: "1", weight: 1 }, { weight: 1 }] }] } });
  });

  it("names a missing upstream after its position", () => {
    const out = fromApisixRule({
      traffic_split: {
        rules: [
          { weighted_upstreams: [{ weight: 1 }] },
          { weighted_upstreams: [{ weight: 1 }, { upstream: { nodes: { "10.0.0.1": 1 } } }] },
        ],
      },
    }) as { traffic_split: { rules: { weighted_upstreams: { upstream?: { name: string } }[] }[] } };
    expect(out.traffic_split.rules[1].weighted_upstreams[1].upstream!.name).toBe("split-1-1");
  });
});

describe("fromApisixUpstream: nodes", () => {
  it.each([
    ["host:port", { "10.0.0.1:8080": 5 }, [{ host: "10.0.0.1", port: 8080, weight: 5 }]],
    ["host without port: 80", { "api.internal": 1 }, [{ host: "api.internal", port: 80, weight: 1 }]],
    ["bracketed IPv6 with port", { "[::1]:8080": 2 }, [{ host: "::1", port: 8080, weight: 2 }]],
    ["bracketed IPv6 without port", { "[2001:db8::1]": 1 }, [{ host: "2001:db8::1", port: 80, weight: 1 }]],
    ["weight 0 (never chosen) kept", { "10.0.0.1:1": 1, "10.0.0.2:1": 0 }, [{ host: "10.0.0.1", port: 1, weight: 1 }, { host: "10.0.0.2", port: 1, weight: 0 }]],
  ])("hash form: %s", (_what, nodes, targets) => {
    expect(fromApisixUpstream({ nodes }, F).targets).toEqual(targets);
  });

  it("defaults a missing port to 443 with scheme https", () => {
    expect(fromApisixUpstream({ scheme: "https", nodes: { "api.example.com": 1 } }, F).targets).toEqual([{ host: "api.example.com", port: 443, weight: 1 }]);
  });

  it("array form: host, port, weight, metadata; APISIX's higher priority becomes our lower number", () => {
    const out = fromApisixUpstream(
      {
        nodes: [
          { host: "10.0.0.1", port: 81, weight: 1, priority: 10 },
          { host: "10.0.0.2", port: 82, weight: 2 },
          { host: "[::1]", port: 83, weight: 3, priority: -5, metadata: { zone: "b" } },
        ],
      },
      F,
    );
    expect(out.targets).toEqual([
      { host: "10.0.0.1", port: 81, weight: 1 },
      { host: "10.0.0.2", port: 82, weight: 2, priority: 10 },
      { host: "::1", port: 83, weight: 3, priority: 15, metadata: { zone: "b" } },
    ]);
    expect(out.algorithm).toBe("weighted-round-robin");
  });

  it.each([
    [{ "10.0.0.1:x": 1 }, `${F}.nodes["10.0.0.1:x"]`, /port must be an integer from 1 to 65535/],
    [{ "10.0.0.1:0": 1 }, `${F}.nodes["10.0.0.1:0"]`, /port/],
    [{ "10.0.0.1:70000": 1 }, `${F}.nodes["10.0.0.1:70000"]`, /port/],
    [{ "::1:80": 1 }, `${F}.nodes["::1:80"]`, /IPv6 address must be in brackets/],
    [{ "[::1:80": 1 }, `${F}.nodes["[::1:80"]`, /missing "\]"/],
    [{ "[::1]80": 1 }, `${F}.nodes["[::1]80"]`, /expected ":port"/],
    [{ ":80": 1 }, `${F}.nodes[":80"]`, /host is empty/],
    [{ "10.0.0.1:80": -1 }, `${F}.nodes["10.0.0.1:80"]`, /non-negative integer, got -1/],
    [{ "10.0.0.1:80": 1.5 }, `${F}.nodes["10.0.0.1:80"]`, /non-negative integer/],
    [{ "10.0.0.1:80": "1" }, `${F}.nodes["10.0.0.1:80"]`, /non-negative integer, got "1"/],
    [{}, `${F}.nodes`, /must not be empty/],
    [[], `${F}.nodes`, /must not be empty/],
    ["10.0.0.1:80", `${F}.nodes`, /must be an object .* or an array/],
    [{ "10.0.0.1": 1, "10.0.0.1:80": 1 }, `${F}.nodes`, /duplicate node 10.0.0.1:80/],
    [["10.0.0.1:80"], `${F}.nodes[0]`, /must be an object/],
    [[{ port: 80, weight: 1 }], `${F}.nodes[0].host`, /is required/],
    [[{ host: "a", port: "80", weight: 1 }], `${F}.nodes[0].port`, /integer from 1 to 65535/],
    [[{ host: "a", port: 80 }], `${F}.nodes[0].weight`, /is required/],
    [[{ host: "a", port: 80, weight: 1, priority: "high" }], `${F}.nodes[0].priority`, /must be an integer/],
    [[{ host: "a", port: 80, weight: 1, zone: "x" }], `${F}.nodes[0].zone`, /unknown field/],
    [[{ host: "a", port: 80, weight: 1 }, { host: "a", port: 80, weight: 2 }], `${F}.nodes[1]`, /duplicate node a:80/],
  ])("refuses nodes %j naming %s", (nodes, field, reason) => {
    const err = errorOf(() => fromApisixUpstream({ nodes }, F));
    expect(err.field).toBe(field);
    expect(err.reason).toMatch(reason);
  });

  it("reports bad nodes through fromApisixRule with the path inside the rule body", () => {
    const err = errorOf(() =>
      fromApisixRule({
        traffic_split: { rules: [{ weighted_upstreams: [{ weight: 1 }] }, { weighted_upstreams: [{ weight: 1 }, { upstream: { nodes: { "h:0": 1 } } }] }] },
      }),
    );
    expect(err.message).toMatch(/^traffic_split\.rules\[1\]\.weighted_upstreams\[1\]\.upstream\.nodes\["h:0"\]: /);
  });
});

describe("fromApisixUpstream: type, hash_on and key", () => {
  it.each([
    ["roundrobin, equal weights → round-robin", { type: "roundrobin", nodes: { "a:1": 3, "b:1": 3 } }, "round-robin"],
    ["roundrobin, different weights → weighted-round-robin", { type: "roundrobin", nodes: { "a:1": 3, "b:1": 1 } }, "weighted-round-robin"],
    ["roundrobin, zero weights ignored", { type: "roundrobin", nodes: { "a:1": 3, "b:1": 0 } }, "round-robin"],
    ["no type → APISIX's default roundrobin", { nodes: { "a:1": 1, "b:1": 2 } }, "weighted-round-robin"],
    ["least_conn", { type: "least_conn", nodes: { "a:1": 1 } }, "least-connections"],
    ["chash", { type: "chash", key: "remote_addr", nodes: { "a:1": 1 } }, "consistent-hash"],
  ])("%s", (_what, up, algorithm) => {
    expect(fromApisixUpstream(up, F).algorithm).toBe(algorithm);
  });

  it.each([
    [{ hash_on: "header", key: "x-user" }, { source: "header", name: "x-user" }],
    [{ hash_on: "cookie", key: "sid" }, { source: "cookie", name: "sid" }],
    [{ key: "remote_addr" }, { source: "client_ip" }],
    [{ hash_on: "vars", key: "remote_addr" }, { source: "client_ip" }],
    [{ hash_on: "vars", key: "arg_user" }, { source: "query", name: "user" }],
    [{ hash_on: "vars", key: "http_x_user_id" }, { source: "header", name: "x-user-id" }],
    [{ hash_on: "vars", key: "cookie_session" }, { source: "cookie", name: "session" }],
    [{ hash_on: { source: "jwt_claim", name: "sub" } }, { source: "jwt_claim", name: "sub" }],
  ])("chash with %j hashes on %j", (settings, expected) => {
    expect(fromApisixUpstream({ type: "chash", nodes: { "a:1": 1 }, ...settings }, F).hash_on).toEqual(expected);
  });

  it("ignores hash_on and key unless type is chash, as APISIX does", () => {
    const out = fromApisixUpstream({ type: "roundrobin", hash_on: "header", key: "x-user", nodes: { "a:1": 1 } }, F);
    expect(out).not.toHaveProperty("hash_on");
    expect(out).not.toHaveProperty("key");
  });

  it.each([
    [{ type: "ewma" }, `${F}.type`, /"ewma" is not supported/],
    [{ type: "round_robin" }, `${F}.type`, /must be one of roundrobin, chash or least_conn, got "round_robin"/],
    [{ type: 1 }, `${F}.type`, /got 1/],
    [{ type: "chash" }, `${F}.key`, /is required for type "chash"/],
    [{ type: "chash", hash_on: "header" }, `${F}.key`, /is required/],
    [{ type: "chash", hash_on: "header", key: "" }, `${F}.key`, /is required/],
    [{ type: "chash", key: "uri" }, `${F}.key`, /nginx variable "uri" is not supported/],
    [{ type: "chash", hash_on: "consumer" }, `${F}.hash_on`, /"consumer" is not supported: .*jwt_claim/],
    [{ type: "chash", hash_on: "vars_combinations", key: "$remote_addr$uri" }, `${F}.hash_on`, /vars_combinations/],
    [{ type: "chash", hash_on: "body", key: "x" }, `${F}.hash_on`, /must be one of vars, header or cookie/],
    [{ type: "chash", hash_on: { source: "header", name: "x" }, key: "y" }, `${F}.key`, /not both/],
    [{ type: "roundrobin", algorithm: "random" }, `${F}.type`, /not both/],
  ])("refuses %j naming %s", (settings, field, reason) => {
    const err = errorOf(() => fromApisixUpstream({ nodes: { "a:1": 1 }, ...settings }, F));
    expect(err.field).toBe(field);
    expect(err.reason).toMatch(reason);
  });
});

describe("fromApisixUpstream: timeouts, retries, host and the rest", () => {
  it("converts timeout seconds (fractions too) to milliseconds, keeping only what is set", () => {
    expect(fromApisixUpstream({ nodes: { "a:1": 1 }, timeout: { connect: 0.5, read: 120 } }, F).timeouts).toEqual({ connect_ms: 500, read_ms: 120000 });
  });

  it.each([
    [{ connect: 0 }, `${F}.timeout.connect`, /positive number of seconds/],
    [{ connect: -1 }, `${F}.timeout.connect`, /positive/],
    [{ send: "15" }, `${F}.timeout.send`, /got "15"/],
    [{ read: 3601 }, `${F}.timeout.read`, /at most 3600 seconds/],
    [{ read: 0.0001 }, `${F}.timeout.read`, /at least 0.001 seconds/],
    [{ idle: 1 }, `${F}.timeout.idle`, /unknown field/],
    [15, `${F}.timeout`, /must be an object/],
  ])("refuses timeout %j naming %s", (timeout, field, reason) => {
    const err = errorOf(() => fromApisixUpstream({ nodes: { "a:1": 1 }, timeout }, F));
    expect(err.field).toBe(field);
    expect(err.reason).toMatch(reason);
  });

  it("passes pass_host, upstream_host, scheme and name through; labels and desc become metadata", () => {
    const out = fromApisixUpstream(
      {
        name: "canary",
        nodes: { "a:1": 1 },
        pass_host: "rewrite",
        upstream_host: "internal.example",
        scheme: "https",
        labels: { team: "search" },
        desc: "v2 canary",
        metadata: { owner: "ops" },
      },
      F,
    );
    expect(out).toEqual({
      name: "canary",
      algorithm: "round-robin",
      targets: [{ host: "a", port: 1, weight: 1 }],
      pass_host: "rewrite",
      upstream_host: "internal.example",
      scheme: "https",
      metadata: { owner: "ops", team: "search", desc: "v2 canary" },
    });
  });

  it("maps retries and retry_timeout onto our retries", () => {
    expect(fromApisixUpstream({ nodes: { "a:1": 1 }, retries: 2, retry_timeout: 1.5 }, F).retries).toEqual({ count: 2, timeout_ms: 1500 });
    expect(errorOf(() => fromApisixUpstream({ nodes: { "a:1": 1 }, retries: -1 }, F)).field).toBe(`${F}.retries`);
  });

  it.each(["checks", "service_name", "discovery_type", "keepalive_pool", "tls"])("refuses %s with APISIX's advice (use upstream_id)", (k) => {
    const err = errorOf(() => fromApisixUpstream({ nodes: { "a:1": 1 }, [k]: {} }, F));
    expect(err.field).toBe(`${F}.${k}`);
    expect(err.reason).toMatch(/reference it with upstream_id/);
  });

  it("recognises APISIX shapes and leaves ours alone", () => {
    expect(isApisixUpstream({ nodes: {} })).toBe(true);
    expect(isApisixUpstream({ type: "chash" })).toBe(true);
    expect(isApisixUpstream({ hash_on: "header" })).toBe(true);
    expect(isApisixUpstream({ retries: 1 })).toBe(true);
    expect(isApisixUpstream({ name: "x", targets: [], algorithm: "random", hash_on: { source: "client_ip" }, retries: { count: 1 } })).toBe(false);
  });

  it("produces what our validator refuses in our own words when a value is out of our range", () => {
    const body = ruleWith({ name: "upstream A", nodes: { "127.0.0.1:1981": 1 } });
    expect(() => validateRule(decodeJson(RuleSchema, fromApisixRule(body)))).toThrow(/^traffic_split\.rules\[0\]\.weighted_upstreams\[0\]\.upstream\.name: /);
  });
});
