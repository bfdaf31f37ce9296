/**
 * Seed 003 (APISIX's traffic-split plugin doc) end to end: every example of the doc, written in the
 * doc's own JSON inside our rule body (inline APISIX upstreams with `nodes`, `type`, `timeout`, and
 * upstream_id references), sent over REST to a real control plane, served by a real data-plane
 * process to real targets named after the doc's ports: "1980" is the rule's own upstream, "1981" and
 * "1982" the split upstreams. Outcomes are the doc's, and exact where the doc is only approximate
 * (3:2 is exactly 3 and 2 out of every 5 requests).
 *
 * The doc reconfigures one route (`PUT /apisix/admin/routes/1`) from example to example: so do these
 * tests, with `PUT /api/v1/tenants/{tid}/rules/{id}` on one "/index.html" rule.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GatewayApi, type RuleView, type TenantCreds } from "../support/api.js";
import { header, httpRequest, type HttpResponse } from "../support/http.js";
import { startControlPlane, startDataPlane, type ControlPlane, type DataPlane } from "../support/processes.js";
import { startTarget, type Target } from "../support/targets.js";
import { teardown } from "../support/teardown.js";
import { sendRequests, type TrafficOptions } from "../support/traffic.js";

let cp: ControlPlane;
let api: GatewayApi;
let dp: DataPlane;
let tenant: TenantCreds;
let t1980: Target, t1981: Target, t1982: Target;
/** The doc's route 1: "/index.html", whose own upstream is 1980. */
let route1: RuleView;

beforeAll(async () => {
  cp = await startControlPlane({ name: "split-control-plane" });
  api = GatewayApi.of(cp);
  [t1980, t1981, t1982] = await Promise.all([startTarget("1980"), startTarget("1981"), startTarget("1982")]);
  dp = await startDataPlane({ controlPlane: cp.url, nodeId: "split-dp", token: cp.nodeToken });
  tenant = await api.createTenant("traffic-split");
  route1 = await api.mustCreateRule(tenant, { path: "/index.html", targets: [{ url: t1980.url }] });
  await api.waitForAcked(route1.revision, [dp.nodeId]);
});

afterAll(teardown);

/** "127.0.0.1:PORT", an APISIX node key for a target. */
const node = (t: Target) => `127.0.0.1:${t.port}`;

/** The doc's upstream_A (nodes 127.0.0.1:1981 weight 10, 15 s timeouts), pointing at our "1981". */
function upstreamA(): Record<string, unknown> {
  return { name: "upstream_A", type: "roundrobin", nodes: { [node(t1981)]: 10 }, timeout: { connect: 15, send: 15, read: 15 } };
}

/** PUT route 1 with a traffic_split (the doc's `PUT /apisix/admin/routes/1`) and wait until the data plane serves it. */
async function putRoute1(trafficSplit: Record<string, unknown> | undefined): Promise<RuleView> {
  // The revision we read: a PUT says what it replaces.
  const body: Record<string, unknown> = { path: "/index.html", targets: [{ url: t1980.url }], revision: route1.revision };
  if (trafficSplit !== undefined) body.traffic_split = trafficSplit;
  const rule = await api.mustUpdateRule(tenant, route1.id, body);
  await api.waitForAcked(rule.revision, [dp.nodeId]);
  route1 = rule;
  return rule;
}

/** Sends `n` sequential requests and returns the answers per target; fails on any non-2xx. */
async function hits(n: number, opts: TrafficOptions): Promise<Record<string, number>> {
  const r = await sendRequests(dp.url, n, opts);
  expect(r.failures).toEqual([]);
  return r.byTarget;
}

/** One request; returns the target that answered (the body is the target's name). */
async function one(path: string, headers: Record<string, string> = {}): Promise<string> {
  const res = await httpRequest(`${dp.url}${path}`, { headers });
  expect(res.status, res.text).toBe(200);
  return res.text;
}

describe("seed 003: enable the plugin", () => {
  it("inline upstream_A with weight 1 and the route's own upstream with weight 1 alternate exactly", async () => {
    const rule = await putRoute1({ rules: [{ weighted_upstreams: [{ upstream: upstreamA(), weight: 1 }, { weight: 1 }] }] });
    // The APISIX upstream was stored in our shape: nodes → targets, timeout seconds → milliseconds.
    const stored = (rule.traffic_split as { rules: { weighted_upstreams: { upstream?: Record<string, unknown> }[] }[] }).rules[0].weighted_upstreams[0].upstream!;
    expect(stored).toMatchObject({
      name: "upstream_A",
      algorithm: "round-robin",
      targets: [{ host: "127.0.0.1", port: t1981.port, weight: 10 }],
      timeouts: { connect_ms: 15000, send_ms: 15000, read_ms: 15000 },
    });
    const seq: string[] = [];
    for (let i = 0; i < 10; i++) seq.push(await one("/index.html"));
    expect(seq.filter((s) => s === "1981")).toHaveLength(5);
    expect(seq.filter((s) => s === "1980")).toHaveLength(5);
    // 1:1 is a strict alternation, not just equal totals.
    for (let i = 1; i < seq.length; i++) expect(seq[i]).not.toBe(seq[i - 1]);
  });

  it("upstream_id instead of the inline upstream (an integer id as APISIX allows is read as a string)", async () => {
    const up = await api.mustCreateUpstream(tenant, { name: "upstream-1", targets: [{ host: "127.0.0.1", port: t1981.port }] });
    await putRoute1({ rules: [{ weighted_upstreams: [{ upstream_id: up.id, weight: 1 }, { weight: 1 }] }] });
    expect(await hits(10, { path: "/index.html" })).toEqual({ "1980": 5, "1981": 5 });

    const numeric = await api.updateRule(tenant, route1.id, {
      path: "/index.html",
      targets: [{ url: t1980.url }],
      traffic_split: { rules: [{ weighted_upstreams: [{ upstream_id: 1, weight: 1 }, { weight: 1 }] }] },
      revision: route1.revision,
    });
    expect(numeric.status).toBe(400);
    expect(numeric.json.error.message).toBe("traffic_split.rules[0].weighted_upstreams[0].upstream_id: upstream 1 does not exist");
  });

  it("inline upstream and upstream_id together in one rule", async () => {
    const up = await api.mustCreateUpstream(tenant, { name: "upstream-b", targets: [{ host: "127.0.0.1", port: t1982.port }] });
    await putRoute1({
      rules: [{ weighted_upstreams: [{ upstream: upstreamA(), weight: 3 }, { upstream_id: up.id, weight: 1 }, { weight: 2 }] }],
    });
    for (let cycle = 0; cycle < 4; cycle++) {
      expect(await hits(6, { path: "/index.html" })).toEqual({ "1981": 3, "1982": 1, "1980": 2 });
    }
  });
});

describe("seed 003: canary release 3:2", () => {
  beforeAll(async () => {
    await putRoute1({ rules: [{ weighted_upstreams: [{ upstream: upstreamA(), weight: 3 }, { weight: 2 }] }] });
  });

  it("5 requests: 3 hit upstream_A (1981) and 2 hit the route's upstream (1980)", async () => {
    expect(await hits(5, { path: "/index.html" })).toEqual({ "1981": 3, "1980": 2 });
  });

  it("500 requests: exactly 300 and 200, and every cycle of 5 is 3:2 (the doc's ratio 'may be less accurate'; ours is exact)", async () => {
    const totals: Record<string, number> = {};
    for (let cycle = 0; cycle < 100; cycle++) {
      const c = await hits(5, { path: "/index.html" });
      expect(c, `cycle ${cycle}`).toEqual({ "1981": 3, "1980": 2 });
      for (const [k, v] of Object.entries(c)) totals[k] = (totals[k] ?? 0) + v;
    }
    expect(totals).toEqual({ "1981": 300, "1980": 200 });
  });
});

describe("seed 003: blue-green release by header", () => {
  beforeAll(async () => {
    await putRoute1({
      rules: [
        {
          match: [{ vars: [["http_release", "==", "new_release"]] }],
          weighted_upstreams: [{ upstream: { name: "upstream_A", type: "roundrobin", nodes: { [node(t1981)]: 10 } } }],
        },
      ],
    });
  });

  it("release: new_release → 1981, every time", async () => {
    expect(await hits(20, { path: "/index.html", headers: { release: "new_release" } })).toEqual({ "1981": 20 });
  });

  it("release: old_release → 1980, and so does a request without the header", async () => {
    expect(await hits(20, { path: "/index.html", headers: { release: "old_release" } })).toEqual({ "1980": 20 });
    expect(await hits(20, { path: "/index.html" })).toEqual({ "1980": 20 });
  });

  it("the header name is case-insensitive (Release: new_release)", async () => {
    expect(await one("/index.html", { Release: "new_release" })).toBe("1981");
  });
});

describe("seed 003: custom release, one vars list (AND)", () => {
  beforeAll(async () => {
    await putRoute1({
      rules: [
        {
          match: [
            {
              vars: [
                ["arg_name", "==", "jack"],
                ["http_user-id", ">", "23"],
                ["http_apisix-key", "~~", "[a-z]+"],
              ],
            },
          ],
          weighted_upstreams: [{ upstream: { name: "upstream_A", type: "roundrobin", nodes: { [node(t1981)]: 10 } }, weight: 3 }, { weight: 2 }],
        },
      ],
    });
  });

  it("the doc's matching request (name=jack, user-id: 30, apisix-key: hello) splits 3:2 between 1981 and 1980", async () => {
    const opts = { path: "/index.html?name=jack", headers: { "user-id": "30", "apisix-key": "hello" } };
    expect(await hits(5, opts)).toEqual({ "1981": 3, "1980": 2 });
    expect(await hits(50, opts)).toEqual({ "1981": 30, "1980": 20 });
  });

  it.each([
    ["user-id not above 23", "/index.html?name=jack", { "user-id": "23", "apisix-key": "hello" }],
    ["user-id not a number", "/index.html?name=jack", { "user-id": "thirty", "apisix-key": "hello" }],
    ["apisix-key without a letter", "/index.html?name=jack", { "user-id": "30", "apisix-key": "1234" }],
    ["apisix-key missing", "/index.html?name=jack", { "user-id": "30" }],
    ["name is rose", "/index.html?name=rose", { "user-id": "30", "apisix-key": "hello" }],
    ["no query string", "/index.html", { "user-id": "30", "apisix-key": "hello" }],
  ])("one expression fails (%s): every request goes to 1980", async (_what, path, headers) => {
    expect(await hits(10, { path, headers })).toEqual({ "1980": 10 });
  });
});

describe("seed 003: custom release, two vars lists (OR)", () => {
  beforeAll(async () => {
    await putRoute1({
      rules: [
        {
          match: [
            {
              vars: [
                ["arg_name", "==", "jack"],
                ["http_user-id", ">", "23"],
                ["http_apisix-key", "~~", "[a-z]+"],
              ],
            },
            {
              vars: [
                ["arg_name2", "==", "rose"],
                ["http_user-id2", "!", ">", "33"],
                ["http_apisix-key2", "~~", "[a-z]+"],
              ],
            },
          ],
          weighted_upstreams: [{ upstream: { name: "upstream_A", type: "roundrobin", nodes: { [node(t1981)]: 10 } }, weight: 3 }, { weight: 2 }],
        },
      ],
    });
  });

  const headers = { "user-id": "30", "user-id2": "22", "apisix-key": "hello", "apisix-key2": "world" };

  it("the doc's first request (both vars lists match) splits 3:2", async () => {
    expect(await hits(5, { path: "/index.html?name=jack&name2=rose", headers })).toEqual({ "1981": 3, "1980": 2 });
  });

  it("the doc's second request (the second list fails: no name2) still splits 3:2", async () => {
    expect(await hits(5, { path: "/index.html?name=jack", headers })).toEqual({ "1981": 3, "1980": 2 });
  });

  it("only the second list matches (user-id2 22 is not > 33): splits 3:2", async () => {
    expect(await hits(5, { path: "/index.html?name2=rose", headers: { "user-id2": "22", "apisix-key2": "world" } })).toEqual({ "1981": 3, "1980": 2 });
  });

  it("the doc's third request (headers missing, both lists fail) goes to 1980", async () => {
    expect(await hits(10, { path: "/index.html?name=jack" })).toEqual({ "1980": 10 });
  });

  it("both lists fail on values (user-id 20, user-id2 40): 1980", async () => {
    const opts = { path: "/index.html?name=jack&name2=rose", headers: { ...headers, "user-id": "20", "user-id2": "40" } };
    expect(await hits(10, opts)).toEqual({ "1980": 10 });
  });
});

describe("seed 003: multiple rules to multiple upstreams", () => {
  beforeAll(async () => {
    const rule = await api.mustCreateRule(tenant, {
      path: "/hello",
      targets: [{ url: t1980.url }],
      traffic_split: {
        rules: [
          {
            match: [{ vars: [["http_x-api-id", "==", "1"]] }],
            weighted_upstreams: [{ upstream: { name: "upstream-A", type: "roundrobin", nodes: { [node(t1981)]: 1 } }, weight: 3 }],
          },
          {
            match: [{ vars: [["http_x-api-id", "==", "2"]] }],
            weighted_upstreams: [{ upstream: { name: "upstream-B", type: "roundrobin", nodes: { [node(t1982)]: 1 } }, weight: 3 }],
          },
        ],
      },
    });
    await api.waitForAcked(rule.revision, [dp.nodeId]);
  });

  it.each([
    ["1", "1981"],
    ["2", "1982"],
    ["3", "1980"],
  ])("x-api-id: %s → %s", async (id, target) => {
    expect(await hits(10, { path: "/hello", headers: { "x-api-id": id } })).toEqual({ [target]: 10 });
  });

  it("no x-api-id → 1980", async () => {
    expect(await hits(10, { path: "/hello" })).toEqual({ "1980": 10 });
  });
});

describe("seed 003: delete the plugin", () => {
  it("a PUT without traffic_split sends everything to the route's upstream again", async () => {
    const rule = await putRoute1({ rules: [{ weighted_upstreams: [{ upstream: upstreamA(), weight: 3 }, { weight: 2 }] }] });
    expect(rule.traffic_split).toBeDefined();
    expect(await hits(5, { path: "/index.html" })).toEqual({ "1981": 3, "1980": 2 });
    const removed = await putRoute1(undefined);
    expect(removed.traffic_split ?? null).toBeNull();
    expect(await hits(10, { path: "/index.html" })).toEqual({ "1980": 10 });
  });
});

describe("APISIX inline upstream settings take effect", () => {
  it("node weights inside one upstream are honoured (roundrobin is weighted in APISIX): 1981:3, 1982:1", async () => {
    await putRoute1({ rules: [{ weighted_upstreams: [{ upstream: { type: "roundrobin", nodes: { [node(t1981)]: 3, [node(t1982)]: 1 } } }] }] });
    for (let cycle = 0; cycle < 5; cycle++) expect(await hits(4, { path: "/index.html" })).toEqual({ "1981": 3, "1982": 1 });
  });

  it("nodes as an array with priority: APISIX's higher priority is preferred", async () => {
    await putRoute1({
      rules: [
        {
          weighted_upstreams: [
            {
              upstream: {
                name: "prio",
                nodes: [
                  { host: "127.0.0.1", port: t1982.port, weight: 1, priority: 0 },
                  { host: "127.0.0.1", port: t1981.port, weight: 1, priority: 1 },
                ],
              },
            },
          ],
        },
      ],
    });
    expect(await hits(10, { path: "/index.html" })).toEqual({ "1981": 10 });
  });

  it("type chash with hash_on header and key: one user always reaches the same node, and both nodes serve users", async () => {
    await putRoute1({
      rules: [{ weighted_upstreams: [{ upstream: { type: "chash", hash_on: "header", key: "x-user", nodes: { [node(t1981)]: 1, [node(t1982)]: 1 } } }] }],
    });
    const first = new Map<string, string>();
    for (let round = 0; round < 3; round++) {
      for (let u = 0; u < 40; u++) {
        const got = await one("/index.html", { "x-user": `user-${u}` });
        if (round === 0) first.set(`user-${u}`, got);
        else expect(got, `user-${u} in round ${round}`).toBe(first.get(`user-${u}`));
      }
    }
    expect(new Set(first.values())).toEqual(new Set(["1981", "1982"]));
  });

  it("pass_host rewrite sends upstream_host; pass_host node sends the node's host:port", async () => {
    await putRoute1({
      rules: [
        { match: [{ vars: [["arg_host", "==", "rewrite"]] }], weighted_upstreams: [{ upstream: { nodes: { [node(t1981)]: 1 }, pass_host: "rewrite", upstream_host: "backend.internal" } }] },
        { match: [{ vars: [["arg_host", "==", "node"]] }], weighted_upstreams: [{ upstream: { nodes: { [node(t1982)]: 1 }, pass_host: "node" } }] },
      ],
    });
    t1981.clear();
    t1982.clear();
    expect(await one("/index.html?host=rewrite", { host: "public.example" })).toBe("1981");
    expect(await one("/index.html?host=node", { host: "public.example" })).toBe("1982");
    expect(t1981.requests.map((r) => r.headers.host)).toEqual(["backend.internal"]);
    expect(t1982.requests.map((r) => r.headers.host)).toEqual([node(t1982)]);
  });
});

/** Asserts a 400 whose message starts with `field` (the path inside the rule body) and matches `reason`. */
function expectRefused(res: HttpResponse, field: string, reason: RegExp): void {
  expect(res.status, res.text).toBe(400);
  expect(header(res, "content-type")).toMatch(/^application\/json/);
  expect(res.json.error.code).toBe("invalid_argument");
  expect(res.json.error.message.startsWith(`${field}: `), res.json.error.message).toBe(true);
  expect(res.json.error.message).toMatch(reason);
}

describe("write-time refusals over REST name the rule, the clause and the reason", () => {
  /** A rule body whose split rule 0 has two vars lists, the second ending with `bad`. */
  function withExpression(bad: unknown[]): Record<string, unknown> {
    return {
      path: "/refused/*",
      targets: [{ url: t1980.url }],
      traffic_split: {
        rules: [
          {
            match: [{ vars: [["http_x-a", "==", "1"]] }, { vars: [["arg_b", "==", "2"], bad] }],
            weighted_upstreams: [{ upstream: { nodes: { [node(t1981)]: 1 } } }],
          },
        ],
      },
    };
  }
  const at = "traffic_split.rules[0].match[1].vars[1]";

  it.each([
    ["an invalid regex", ["http_x-b", "~~", "([a-z"], /invalid regex/],
    ["an invalid case-insensitive regex", ["http_x-b", "~*", "a{2,1}"], /invalid regex/],
    ["a backreference (not RE2)", ["http_x-b", "~~", "(a)\\1"], /invalid regex/],
    ["an unknown operator", ["http_x-b", "=~", "x"], /unknown operator "=~"/],
    ["an unknown variable", ["request_body", "==", "x"], /unknown variable "request_body"/],
    ["a variable prefix without a name", ["http_", "==", "x"], /unknown variable "http_"/],
    ["a malformed CIDR", ["remote_addr", "ipmatch", "10.0.0.0/33"], /ipmatch/],
    ["a malformed address in a CIDR list", ["remote_addr", "ipmatch", ["10.0.0.0/8", "10.0.0.256"]], /ipmatch/],
    ["a non-numeric bound for >", ["http_user-id", ">", "many"], /needs a number/],
    ["a wrong arity", ["http_x-b", "=="], /wrong arity/],
  ])("POST with %s → 400 naming %s", async (_what, bad, reason) => {
    expectRefused(await api.createRule(tenant, withExpression(bad)), at, reason);
  });

  it("PUT with an invalid expression → 400, and the data plane keeps serving the previous rule", async () => {
    const rule = await putRoute1({ rules: [{ match: [{ vars: [["http_release", "==", "new_release"]] }], weighted_upstreams: [{ upstream: upstreamA() }] }] });
    const body = withExpression(["remote_addr", "ipmatch", "300.1.1.1/8"]);
    body.path = "/index.html";
    body.revision = rule.revision;
    expectRefused(await api.updateRule(tenant, route1.id, body), at, /ipmatch/);
    const after = await api.getRule(tenant, route1.id);
    expect(after.json.revision).toBe(rule.revision);
    expect(await one("/index.html", { release: "new_release" })).toBe("1981");
    expect(await one("/index.html")).toBe("1980");
  });

  it.each([
    ["a node key that is not host:port", { nodes: { "127.0.0.1:port": 1 } }, 'traffic_split.rules[0].weighted_upstreams[0].upstream.nodes["127.0.0.1:port"]', /port/],
    ["a negative node weight", { nodes: { "127.0.0.1:1981": -1 } }, 'traffic_split.rules[0].weighted_upstreams[0].upstream.nodes["127.0.0.1:1981"]', /non-negative integer/],
    ["an unknown type", { type: "ewma", nodes: { "127.0.0.1:1981": 1 } }, "traffic_split.rules[0].weighted_upstreams[0].upstream.type", /ewma/],
    ["chash without key", { type: "chash", nodes: { "127.0.0.1:1981": 1 } }, "traffic_split.rules[0].weighted_upstreams[0].upstream.key", /required/],
    ["checks (APISIX refuses them inline too)", { nodes: { "127.0.0.1:1981": 1 }, checks: {} }, "traffic_split.rules[0].weighted_upstreams[0].upstream.checks", /upstream_id/],
    ["a name with a space", { name: "upstream A", nodes: { "127.0.0.1:1981": 1 } }, "traffic_split.rules[0].weighted_upstreams[0].upstream.name", /letters, digits/],
  ])("an APISIX inline upstream with %s → 400 naming the field", async (_what, upstream, field, reason) => {
    const res = await api.createRule(tenant, { path: "/refused-up/*", targets: [{ url: t1980.url }], traffic_split: { rules: [{ weighted_upstreams: [{ upstream }] }] } });
    expectRefused(res, field, reason);
  });

  it("nothing refused was stored", async () => {
    const list = await api.listRules(tenant);
    expect(list.status).toBe(200);
    expect((list.json.rules as { path: string }[]).map((r) => r.path).sort()).toEqual(["/hello", "/index.html"]);
  });
});
