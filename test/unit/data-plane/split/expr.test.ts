import { create, fromJson } from "@bufbuild/protobuf";
import { ListValueSchema } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { ConfigError } from "../../../../data-plane/src/config/errors.js";
import { compileMatch, type MatchClauseInput } from "../../../../data-plane/src/split/expr.js";
import { MatchClauseSchema } from "../../../../proto/gen/gateway/v1/rule_pb.js";
import { fakeView, type FakeRequest } from "./fake-view.js";

const FIELD = "rules[0].traffic_split.rules[0].match";

/** One expression, one request, the expected outcome. */
function holds(expr: unknown[], req: FakeRequest): boolean {
  return compileMatch([{ vars: [expr] }], FIELD).test(fakeView(req));
}

function compileError(match: MatchClauseInput[]): ConfigError {
  try {
    compileMatch(match, FIELD);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error("expected a ConfigError");
}

describe("compileMatch operators", () => {
  const cases: [string, unknown[], FakeRequest, boolean][] = [
    // == / ~= : string equality, numeric when the configured value is a number
    ["== string equal", ["http_x-version", "==", "v2"], { headers: { "x-version": "v2" } }, true],
    ["== string differs", ["http_x-version", "==", "v2"], { headers: { "x-version": "v1" } }, false],
    ["== is case-sensitive on values", ["http_x-version", "==", "v2"], { headers: { "x-version": "V2" } }, false],
    ["== string vs numeric-looking string is textual", ["arg_n", "==", "30"], { query: { n: "30.0" } }, false],
    ["== numeric value compares numbers", ["arg_n", "==", 30], { query: { n: "30.0" } }, true],
    ["== numeric value, non-numeric variable", ["arg_n", "==", 30], { query: { n: "thirty" } }, false],
    ["== numeric value, empty variable is not 0", ["arg_n", "==", 0], { query: { n: "" } }, false],
    ["== boolean value matches text", ["arg_canary", "==", true], { query: { canary: "true" } }, true],
    ["== boolean value matches boolean claim", ["jwt_beta", "==", true], { claims: { beta: true } }, true],
    ["== number claim vs string value", ["jwt_tier", "==", "3"], { claims: { tier: 3 } }, true],
    ["== array claim never equals a string", ["jwt_roles", "==", "admin"], { claims: { roles: ["admin"] } }, false],
    ["== missing variable", ["http_x-version", "==", "v2"], {}, false],
    ["~= differs", ["http_x-version", "~=", "v2"], { headers: { "x-version": "v1" } }, true],
    ["~= equal", ["http_x-version", "~=", "v2"], { headers: { "x-version": "v2" } }, false],
    ["~= missing variable is true (negation of ==)", ["http_x-version", "~=", "v2"], {}, true],
    ["~= numeric, non-numeric variable", ["arg_n", "~=", 30], { query: { n: "abc" } }, true],
    // numeric comparisons
    ["> above", ["http_user-id", ">", "23"], { headers: { "user-id": "30" } }, true],
    ["> equal", ["http_user-id", ">", 30], { headers: { "user-id": "30" } }, false],
    ["> compares numbers, not text", ["http_user-id", ">", 9], { headers: { "user-id": "10" } }, true],
    ["> non-numeric variable", ["http_user-id", ">", 9], { headers: { "user-id": "ten" } }, false],
    ["> missing variable", ["http_user-id", ">", 9], {}, false],
    ["< below", ["arg_age", "<", 18], { query: { age: "17.5" } }, true],
    ["< not below", ["arg_age", "<", 18], { query: { age: "18" } }, false],
    [">= equal", ["arg_age", ">=", "18"], { query: { age: "18" } }, true],
    [">= below", ["arg_age", ">=", "18"], { query: { age: "-1" } }, false],
    ["<= equal", ["arg_age", "<=", 18], { query: { age: "18" } }, true],
    ["<= above", ["arg_age", "<=", 18], { query: { age: "1e3" } }, false],
    [">= Infinity is not a number", ["arg_age", ">=", 18], { query: { age: "Infinity" } }, false],
    ["> on a numeric claim", ["jwt_level", ">", 2], { claims: { level: 5 } }, true],
    // regexes
    ["~~ unanchored search", ["http_apisix-key", "~~", "[a-z]+"], { headers: { "apisix-key": "HELLO world" } }, true],
    ["~~ no match", ["http_apisix-key", "~~", "^[a-z]+$"], { headers: { "apisix-key": "Hello" } }, false],
    ["~~ case-sensitive", ["http_apisix-key", "~~", "^hello$"], { headers: { "apisix-key": "HELLO" } }, false],
    ["~* case-insensitive", ["http_apisix-key", "~*", "^hello$"], { headers: { "apisix-key": "HELLO" } }, true],
    ["~~ missing variable", ["http_apisix-key", "~~", ".*"], {}, false],
    ["~~ on uri (path only)", ["uri", "~~", "^/api/v2/"], { uri: "/api/v2/items?x=1" }, true],
    // in
    ["in listed", ["arg_name", "in", ["jack", "rose"]], { query: { name: "rose" } }, true],
    ["in not listed", ["arg_name", "in", ["jack", "rose"]], { query: { name: "tom" } }, false],
    ["in numbers compare numerically", ["arg_id", "in", [1, 2, 3]], { query: { id: "2.0" } }, true],
    ["in with a number claim and string elements", ["jwt_id", "in", ["7"]], { claims: { id: 7 } }, true],
    ["in missing variable", ["arg_name", "in", ["jack"]], {}, false],
    // has
    ["has: array claim contains", ["jwt_roles", "has", "beta-tester"], { claims: { roles: ["user", "beta-tester"] } }, true],
    ["has: array claim lacks", ["jwt_roles", "has", "beta-tester"], { claims: { roles: ["user"] } }, false],
    ["has: nested claim", ["jwt_realm_access.roles", "has", "canary"], { claims: { realm_access: { roles: ["canary"] } } }, true],
    ["has: number in array", ["jwt_groups", "has", 42], { claims: { groups: [7, 42] } }, true],
    ["has: space-separated scope string", ["jwt_scope", "has", "write"], { claims: { scope: "read write" } }, true],
    ["has: comma list header", ["http_x-features", "has", "new-ui"], { headers: { "x-features": "dark, new-ui" } }, true],
    ["has: substring is not an item", ["http_x-features", "has", "new"], { headers: { "x-features": "dark, new-ui" } }, false],
    ["has: suffix is not an item", ["http_x-features", "has", "ui"], { headers: { "x-features": "dark, new-ui" } }, false],
    ["has: later occurrence is an item", ["http_x-features", "has", "ui"], { headers: { "x-features": "new-ui,ui" } }, true],
    ["has: numeric item in a string list", ["http_x-ids", "has", 3], { headers: { "x-ids": "1, 3.0" } }, true],
    ["has: object claim", ["jwt_org", "has", "a"], { claims: { org: { a: 1 } } }, false],
    ["has: missing variable", ["jwt_roles", "has", "x"], {}, false],
    // ipmatch
    ["ipmatch v4 CIDR", ["remote_addr", "ipmatch", "10.0.0.0/8"], { remoteAddr: "10.1.2.3" }, true],
    ["ipmatch v4 outside", ["remote_addr", "ipmatch", ["10.0.0.0/8", "192.168.0.0/16"]], { remoteAddr: "11.0.0.1" }, false],
    ["ipmatch v4 single address", ["remote_addr", "ipmatch", ["127.0.0.1"]], { remoteAddr: "127.0.0.1" }, true],
    ["ipmatch v6 CIDR", ["remote_addr", "ipmatch", "2001:db8::/32"], { remoteAddr: "2001:db8:1::7" }, true],
    ["ipmatch v6 outside", ["remote_addr", "ipmatch", "2001:db8::/32"], { remoteAddr: "2001:db9::1" }, false],
    ["ipmatch mapped v6 against v4 CIDR", ["remote_addr", "ipmatch", "1.2.3.0/24"], { remoteAddr: "::ffff:1.2.3.4" }, true],
    ["ipmatch on a header", ["http_x-real-ip", "ipmatch", "192.0.2.0/24"], { headers: { "x-real-ip": "192.0.2.77" } }, true],
    ["ipmatch garbage variable", ["http_x-real-ip", "ipmatch", "0.0.0.0/0"], { headers: { "x-real-ip": "nope" } }, false],
    // other variables
    ["method", ["method", "==", "POST"], { method: "POST" }, true],
    ["host", ["host", "==", "api.example.com"], { host: "api.example.com" }, true],
    ["uri drops the query", ["uri", "==", "/index.html"], { uri: "/index.html?name=jack" }, true],
    ["request_uri keeps the query", ["request_uri", "==", "/index.html?name=jack"], { uri: "/index.html?name=jack" }, true],
    ["cookie", ["cookie_variant", "==", "b"], { cookies: { variant: "b" } }, true],
    ["geo_country", ["geo_country", "in", ["DE", "FR"]], { country: "FR" }, true],
    ["geo_country missing (no database)", ["geo_country", "==", "US"], {}, false],
    // header names
    ["header name is case-insensitive", ["http_X-Canary", "==", "true"], { headers: { "x-canary": "true" } }, true],
    ["request header case does not matter", ["http_x-canary", "==", "true"], { headers: { "X-CANARY": "true" } }, true],
    ["nginx-style underscores reach a dashed header", ["http_x_api_id", "==", "1"], { headers: { "x-api-id": "1" } }, true],
    ["an underscored header wins over the dashed one", ["http_x_api_id", "==", "1"], { headers: { "x_api_id": "1", "x-api-id": "2" } }, true],
    ["dashes do not reach an underscored header", ["http_x-api-id", "==", "1"], { headers: { "x_api_id": "1" } }, false],
    // jwt
    ["jwt claim", ["jwt_sub", "==", "alice"], { claims: { sub: "alice" } }, true],
    ["jwt missing claims (unverified token)", ["jwt_sub", "==", "alice"], {}, false],
    ["jwt does not walk the prototype", ["jwt_constructor", "~~", "Object"], { claims: {} }, false],
  ];

  it.each(cases)("%s", (_name, expr, req, expected) => {
    expect(holds(expr, req)).toBe(expected);
  });

  // Negation is the exact complement of every case above, missing variables included.
  it.each(cases)("! %s", (_name, expr, req, expected) => {
    expect(holds([expr[0], "!", ...expr.slice(1)], req)).toBe(!expected);
  });

  it("reads operators case-insensitively like lua-resty-expr", () => {
    expect(holds(["arg_a", "IN", ["x"]], { query: { a: "x" } })).toBe(true);
  });

  it("accepts protobuf MatchClause messages (ListValue vars)", () => {
    const clause = create(MatchClauseSchema, {
      vars: [fromJson(ListValueSchema, ["http_release", "==", "new_release"]), fromJson(ListValueSchema, ["arg_n", ">", 3])],
    });
    const m = compileMatch([clause], FIELD);
    expect(m.test(fakeView({ headers: { release: "new_release" }, query: { n: "4" } }))).toBe(true);
    expect(m.test(fakeView({ headers: { release: "new_release" }, query: { n: "3" } }))).toBe(false);
  });
});

describe("compileMatch AND / OR (APISIX traffic-split examples)", () => {
  it("matches everything when match is empty", () => {
    expect(compileMatch([], FIELD).test(fakeView())).toBe(true);
    expect(compileMatch(undefined, FIELD).test(fakeView())).toBe(true);
    expect(compileMatch([{ vars: [] }], FIELD).test(fakeView())).toBe(true);
  });

  it("blue-green: release header", () => {
    const m = compileMatch([{ vars: [["http_release", "==", "new_release"]] }], FIELD);
    expect(m.test(fakeView({ headers: { release: "new_release" } }))).toBe(true);
    expect(m.test(fakeView({ headers: { release: "old_release" } }))).toBe(false);
  });

  const first = [
    ["arg_name", "==", "jack"],
    ["http_user-id", ">", "23"],
    ["http_apisix-key", "~~", "[a-z]+"],
  ];
  const second = [
    ["arg_name2", "==", "rose"],
    ["http_user-id2", "!", ">", "33"],
    ["http_apisix-key2", "~~", "[a-z]+"],
  ];

  it("custom release with AND: every expression of one vars must hold", () => {
    const m = compileMatch([{ vars: first }], FIELD);
    const full = { query: { name: "jack" }, headers: { "user-id": "30", "apisix-key": "hello" } };
    expect(m.test(fakeView(full))).toBe(true);
    expect(m.test(fakeView({ ...full, query: { name: "rose" } }))).toBe(false);
    expect(m.test(fakeView({ ...full, headers: { "user-id": "20", "apisix-key": "hello" } }))).toBe(false);
    expect(m.test(fakeView({ ...full, headers: { "user-id": "30", "apisix-key": "HELLO" } }))).toBe(false);
  });

  it("custom release with OR: both vars match", () => {
    const m = compileMatch([{ vars: first }, { vars: second }], FIELD);
    const req = {
      query: { name: "jack", name2: "rose" },
      headers: { "user-id": "30", "user-id2": "22", "apisix-key": "hello", "apisix-key2": "world" },
    };
    expect(m.test(fakeView(req))).toBe(true);
  });

  it("custom release with OR: the second vars fails, the first carries", () => {
    const m = compileMatch([{ vars: first }, { vars: second }], FIELD);
    const req = { query: { name: "jack" }, headers: { "user-id": "30", "user-id2": "22", "apisix-key": "hello", "apisix-key2": "world" } };
    expect(m.test(fakeView(req))).toBe(true);
  });

  it("custom release with OR: only the second vars holds (user-id2 22 is ! > 33)", () => {
    const m = compileMatch([{ vars: first }, { vars: second }], FIELD);
    const req = { query: { name2: "rose" }, headers: { "user-id2": "22", "apisix-key2": "world" } };
    expect(m.test(fakeView(req))).toBe(true);
    expect(m.test(fakeView({ ...req, headers: { "user-id2": "34", "apisix-key2": "world" } }))).toBe(false);
    // The header missing: "!" ">" holds (a missing variable never satisfies ">").
    expect(m.test(fakeView({ ...req, headers: { "apisix-key2": "world" } }))).toBe(true);
  });

  it("custom release with OR: required headers missing, neither vars matches", () => {
    const m = compileMatch([{ vars: first }, { vars: second }], FIELD);
    expect(m.test(fakeView({ query: { name: "jack" } }))).toBe(false);
  });

  it("reports needsJwt only when an expression reads a claim", () => {
    expect(compileMatch([{ vars: first }], FIELD).needsJwt).toBe(false);
    expect(compileMatch([{ vars: first }, { vars: [["jwt_sub", "==", "a"]] }], FIELD).needsJwt).toBe(true);
  });
});

describe("compileMatch refuses invalid expressions, naming the clause", () => {
  const cases: [string, MatchClauseInput[], string, RegExp][] = [
    ["unknown operator", [{ vars: [["arg_a", "=~", "x"]] }], `${FIELD}[0].vars[0]`, /unknown operator "=~"/],
    ["unknown variable", [{ vars: [["arg_a", "==", "x"], ["remote_port", "==", "1"]] }], `${FIELD}[0].vars[1]`, /unknown variable "remote_port"/],
    ["empty header name", [{ vars: [["http_", "==", "x"]] }], `${FIELD}[0].vars[0]`, /unknown variable "http_"/],
    ["empty claim path segment", [{ vars: [["jwt_a..b", "==", "x"]] }], `${FIELD}[0].vars[0]`, /empty segment/],
    ["arity 2", [{ vars: [] }, { vars: [["arg_a", "x"]] }], `${FIELD}[1].vars[0]`, /wrong arity.*2 elements/],
    ["arity 5", [{ vars: [["arg_a", "!", "==", "x", "y"]] }], `${FIELD}[0].vars[0]`, /wrong arity/],
    ["4 elements without !", [{ vars: [["arg_a", "not", "==", "x"]] }], `${FIELD}[0].vars[0]`, /"!" second/],
    ["nested logic", [{ vars: [["OR", ["arg_a", "==", "x"], ["arg_b", "==", "y"]]] }], `${FIELD}[0].vars[0]`, /nested logical operators/],
    ["not an array", [{ vars: ["arg_a == x"] } as unknown as MatchClauseInput], `${FIELD}[0].vars[0]`, /must be an array/],
    ["vars not a list", [{ vars: "x" } as unknown as MatchClauseInput], `${FIELD}[0].vars`, /list of expressions/],
    ["variable not a string", [{ vars: [[1, "==", "x"]] }], `${FIELD}[0].vars[0]`, /variable name must be a string/],
    ["null value", [{ vars: [["arg_a", "==", null]] }], `${FIELD}[0].vars[0]`, /value of wrong type/],
    ["== with an array", [{ vars: [["arg_a", "==", ["x"]]] }], `${FIELD}[0].vars[0]`, /value of wrong type: == needs/],
    ["in needs an array", [{ vars: [["arg_a", "in", "x"]] }], `${FIELD}[0].vars[0]`, /in needs an array/],
    ["in element of wrong type", [{ vars: [["arg_a", "in", ["x", {}]]] }], `${FIELD}[0].vars[0]`, /element 1/],
    ["> needs a number", [{ vars: [["arg_a", ">", "ten"]] }], `${FIELD}[0].vars[0]`, /> needs a number/],
    ["<= needs a number, not empty", [{ vars: [["arg_a", "<=", ""]] }], `${FIELD}[0].vars[0]`, /<= needs a number/],
    ["ipmatch invalid CIDR", [{ vars: [["remote_addr", "ipmatch", ["10.0.0.0/8", "10.0.0.0/33"]]] }], `${FIELD}[0].vars[0]`, /ipmatch: value\[1\]/],
    ["ipmatch not an address", [{ vars: [["remote_addr", "ipmatch", "localhost"]] }], `${FIELD}[0].vars[0]`, /ipmatch/],
    ["ipmatch number", [{ vars: [["remote_addr", "ipmatch", 10]] }], `${FIELD}[0].vars[0]`, /ipmatch needs/],
    ["ipmatch empty list", [{ vars: [["remote_addr", "ipmatch", []]] }], `${FIELD}[0].vars[0]`, /ipmatch needs/],
    ["regex not a string", [{ vars: [["arg_a", "~~", 5]] }], `${FIELD}[0].vars[0]`, /regex must be a string/],
    ["invalid regex", [{ vars: [["arg_a", "~~", "a(b"]] }], `${FIELD}[0].vars[0]`, /invalid regex: .*missing closing \)/],
    ["backreferences are not RE2", [{ vars: [["arg_a", "~*", "(a)\\1"]] }], `${FIELD}[0].vars[0]`, /invalid regex: .*invalid escape/],
    ["lookahead is not RE2", [{ vars: [["arg_a", "~~", "a(?=b)"]] }], `${FIELD}[0].vars[0]`, /invalid regex/],
  ];

  it.each(cases)("%s", (_name, match, field, reason) => {
    const err = compileError(match);
    expect(err.field).toBe(field);
    expect(err.reason).toMatch(reason);
  });
});

describe("regexes run in linear time", () => {
  it("a catastrophic-backtracking pattern on 100 KB completes with the right answer", () => {
    const m = compileMatch([{ vars: [["http_x-payload", "~~", "(a+)+$"]] }], FIELD);
    const n = compileMatch([{ vars: [["http_x-payload", "~~", "^(a|aa)+$"]] }], FIELD);
    const evil = "a".repeat(100_000) + "b";
    const started = performance.now();
    expect(m.test(fakeView({ headers: { "x-payload": evil } }))).toBe(false);
    expect(n.test(fakeView({ headers: { "x-payload": evil } }))).toBe(false);
    expect(m.test(fakeView({ headers: { "x-payload": evil + "a" } }))).toBe(true);
    // A sanity bound only: a backtracking engine would not finish this in our lifetime.
    expect(performance.now() - started).toBeLessThan(1000);
  });
});
