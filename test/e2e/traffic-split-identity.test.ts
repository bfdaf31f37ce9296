/**
 * Routing by who the client is (seed 002), end to end through real data-plane processes:
 * - JWT claims (`jwt_<claim>`), read only from tokens that verify with the tenant's keys: an HS256
 *   secret, an RS256 public key (PEM) and an ES256 JWKS. Unsigned, expired, not-yet-valid, forged
 *   and wrongly signed tokens match nothing and the request goes to the rule's own backend.
 * - Client IP (`remote_addr` with `ipmatch`): the socket address, or, on a data plane started with
 *   --trusted-proxies, the right-most untrusted X-Forwarded-For address.
 * - Country (`geo_country`) from the real MaxMind-format database the
 *   @ip-location-db/geo-whois-asn-country-mmdb dev dependency ships, given to the data plane with
 *   --geo-db, for public addresses passed through a trusted X-Forwarded-For.
 *
 * Two data planes follow one control plane: "plain" (no flags: the socket peer is the client, no
 * country database) and "edge" (--trusted-proxies 127.0.0.1/32,10.9.0.0/16 --geo-db ...).
 */
import { generateKeyPairSync, type KeyObject } from "node:crypto";
import path from "node:path";
import { SignJWT, UnsecuredJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openCountryDb } from "../../data-plane/src/split/geo.js";
import { GatewayApi, expectStatus, type TenantCreds } from "../support/api.js";
import { httpRequest } from "../support/http.js";
import { DataPlane, REPO_ROOT, spawnGateway, startControlPlane, startDataPlane, type ControlPlane } from "../support/processes.js";
import { startTarget, type Target } from "../support/targets.js";
import { teardown } from "../support/teardown.js";

const GEO_DB = path.join(REPO_ROOT, "node_modules/@ip-location-db/geo-whois-asn-country-mmdb/geo-whois-asn-country.mmdb");

let cp: ControlPlane;
let api: GatewayApi;
let plain: DataPlane;
let edge: DataPlane;
let stable: Target, canary: Target, other: Target;

/** Starts a data plane with extra flags (the shared helper has none for these), waiting until it listens. */
async function startDataPlaneWith(nodeId: string, extra: string[]): Promise<DataPlane> {
  const proc = spawnGateway(nodeId, [
    "data-plane",
    "--listen",
    "127.0.0.1:0",
    "--node-id",
    nodeId,
    "--token",
    cp.nodeToken,
    "--control-plane",
    cp.url,
    "--log-level",
    "info",
    ...extra,
  ]);
  const rec = await proc.waitForMsg("data plane listening", {}, { timeoutMs: 20_000 });
  return new DataPlane(proc, String(rec.url), nodeId);
}

beforeAll(async () => {
  cp = await startControlPlane({ name: "identity-control-plane" });
  api = GatewayApi.of(cp);
  [stable, canary, other] = await Promise.all([startTarget("stable"), startTarget("canary"), startTarget("other")]);
  [plain, edge] = await Promise.all([
    startDataPlane({ controlPlane: cp.url, nodeId: "identity-plain", token: cp.nodeToken }),
    startDataPlaneWith("identity-edge", ["--trusted-proxies", "127.0.0.1/32,10.9.0.0/16", "--geo-db", GEO_DB]),
  ]);
});

afterAll(teardown);

/** `POST /api/v1/tenants` with JWT verification settings. */
async function tenantWithJwt(name: string, jwt: Record<string, unknown>): Promise<TenantCreds> {
  const res = await api.call("POST", "/api/v1/tenants", { body: { name, jwt } });
  expectStatus(res, 201, "POST /api/v1/tenants");
  return { id: res.json.id, name: res.json.name, apiKey: res.json.api_key };
}

/** Creates a rule and waits until both data planes serve it. */
async function serve(tenant: TenantCreds, body: Record<string, unknown>): Promise<void> {
  const rule = await api.mustCreateRule(tenant, body);
  await api.waitForAcked(rule.revision, [plain.nodeId, edge.nodeId]);
}

/** An inline APISIX upstream for one target. */
const to = (t: Target) => ({ upstream: { nodes: { [`127.0.0.1:${t.port}`]: 1 } } });

/** The target that answered one request through `dp`. */
async function side(dp: DataPlane, pathAndQuery: string, headers: Record<string, string> = {}): Promise<string> {
  const res = await httpRequest(`${dp.url}${pathAndQuery}`, { headers });
  expect(res.status, res.text).toBe(200);
  return res.text;
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
const now = () => Math.floor(Date.now() / 1000);

/** The JWT rule every tenant below gets: role, nested roles with `has`, and a list of user ids. */
function jwtRule(prefix: string): Record<string, unknown> {
  return {
    path: `${prefix}/*`,
    targets: [{ url: stable.url }],
    traffic_split: {
      rules: [
        { match: [{ vars: [["jwt_role", "==", "beta-tester"]] }, { vars: [["jwt_realm_access.roles", "has", "beta"]] }], weighted_upstreams: [to(canary)] },
        { match: [{ vars: [["jwt_sub", "in", ["alice", "bob"]]] }], weighted_upstreams: [to(other)] },
      ],
    },
  };
}

describe("JWT claims with an HS256 secret", () => {
  const SECRET = "hs256-shared-secret-of-the-tenant-0123456789";
  const key = new TextEncoder().encode(SECRET);
  const sign = (claims: Record<string, unknown>, opts: { exp?: number; nbf?: number; secret?: Uint8Array } = {}) =>
    new SignJWT(claims)
      .setProtectedHeader({ alg: "HS256", typ: "JWT" })
      .setIssuedAt()
      .setExpirationTime(opts.exp ?? now() + 3600)
      .setNotBefore(opts.nbf ?? now() - 10)
      .sign(opts.secret ?? key);

  beforeAll(async () => {
    const tenant = await tenantWithJwt("jwt-hs256", { hmac_secrets: [SECRET] });
    await serve(tenant, jwtRule("/jwt-hs"));
  });

  it("a verified token with role beta-tester → canary; role user → stable; no token → stable", async () => {
    expect(await side(plain, "/jwt-hs/a", bearer(await sign({ sub: "u1", role: "beta-tester" })))).toBe("canary");
    expect(await side(plain, "/jwt-hs/a", bearer(await sign({ sub: "u1", role: "user" })))).toBe("stable");
    expect(await side(plain, "/jwt-hs/a")).toBe("stable");
  });

  it("nested claim realm_access.roles has beta → canary; without beta → stable", async () => {
    expect(await side(plain, "/jwt-hs/a", bearer(await sign({ sub: "u2", realm_access: { roles: ["admin", "beta"] } })))).toBe("canary");
    expect(await side(plain, "/jwt-hs/a", bearer(await sign({ sub: "u2", realm_access: { roles: ["admin"] } })))).toBe("stable");
  });

  it("a list of user ids (jwt_sub in [alice, bob]) → the second split rule", async () => {
    expect(await side(plain, "/jwt-hs/a", bearer(await sign({ sub: "alice" })))).toBe("other");
    expect(await side(plain, "/jwt-hs/a", bearer(await sign({ sub: "carol" })))).toBe("stable");
  });

  it("unsigned, expired, not-yet-valid, forged and wrongly signed beta-tester tokens → stable", async () => {
    const claims = { sub: "mallory", role: "beta-tester" };
    const unsigned = new UnsecuredJWT(claims).setIssuedAt().setExpirationTime(now() + 3600).encode();
    const expired = await sign(claims, { exp: now() - 3600, nbf: now() - 7200 });
    const notYet = await sign(claims, { nbf: now() + 3600 });
    const wrongKey = await sign(claims, { secret: new TextEncoder().encode("another-secret-that-is-long-enough-000") });
    // A genuine token for role "user" with its payload swapped for role "beta-tester": the signature no longer matches.
    const [h, , s] = (await sign({ sub: "mallory", role: "user" })).split(".");
    const forged = `${h}.${Buffer.from(JSON.stringify({ ...claims, exp: now() + 3600 })).toString("base64url")}.${s}`;
    for (const [what, token] of Object.entries({ unsigned, expired, notYet, wrongKey, forged })) {
      expect(await side(plain, "/jwt-hs/a", bearer(token)), what).toBe("stable");
    }
    // The raw token without "Bearer " and another scheme carry no JWT either.
    expect(await side(plain, "/jwt-hs/a", { authorization: await sign(claims) })).toBe("stable");
    expect(await side(plain, "/jwt-hs/a", { authorization: `Basic ${Buffer.from("a:b").toString("base64")}` })).toBe("stable");
  });

  it("the same verified token routes the same way on every data plane and every time", async () => {
    const token = await sign({ sub: "u3", role: "beta-tester" });
    for (let i = 0; i < 5; i++) {
      expect(await side(plain, "/jwt-hs/a", bearer(token))).toBe("canary");
      expect(await side(edge, "/jwt-hs/a", bearer(token))).toBe("canary");
    }
  });
});

describe("JWT claims with an RS256 public key (PEM) and an ES256 JWKS", () => {
  let rsaKey: KeyObject;
  let otherRsaKey: KeyObject;
  let publicPem: string;
  let ecKey: KeyObject;
  let otherEcKey: KeyObject;
  const ISSUER = "https://idp.example.test";
  const AUDIENCE = "gateway";

  const signWith = (alg: string, key: KeyObject | Uint8Array, claims: Record<string, unknown>, kid?: string) =>
    new SignJWT(claims)
      .setProtectedHeader({ alg, ...(kid !== undefined ? { kid } : {}) })
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setExpirationTime(now() + 600)
      .sign(key);

  beforeAll(async () => {
    const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 });
    rsaKey = rsa.privateKey;
    publicPem = rsa.publicKey.export({ type: "spki", format: "pem" }).toString();
    otherRsaKey = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey;
    const ec = generateKeyPairSync("ec", { namedCurve: "P-256" });
    ecKey = ec.privateKey;
    otherEcKey = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
    const jwk = { ...ec.publicKey.export({ format: "jwk" }), kid: "k1", alg: "ES256", use: "sig" };

    const rs = await tenantWithJwt("jwt-rs256", { public_keys_pem: [publicPem], issuer: ISSUER, audience: AUDIENCE });
    await serve(rs, jwtRule("/jwt-rs"));
    const es = await tenantWithJwt("jwt-jwks", { jwks_json: JSON.stringify({ keys: [jwk] }), issuer: ISSUER, audience: AUDIENCE });
    await serve(es, jwtRule("/jwt-jwks"));
  });

  it("RS256 signed by the tenant's key: role beta-tester → canary, role user → stable", async () => {
    expect(await side(plain, "/jwt-rs/a", bearer(await signWith("RS256", rsaKey, { role: "beta-tester" })))).toBe("canary");
    expect(await side(plain, "/jwt-rs/a", bearer(await signWith("RS256", rsaKey, { role: "user" })))).toBe("stable");
  });

  it("RS256 signed by another key, HS256 'signed' with the public key (algorithm confusion), or a wrong audience → stable", async () => {
    expect(await side(plain, "/jwt-rs/a", bearer(await signWith("RS256", otherRsaKey, { role: "beta-tester" })))).toBe("stable");
    expect(await side(plain, "/jwt-rs/a", bearer(await signWith("HS256", new TextEncoder().encode(publicPem), { role: "beta-tester" })))).toBe("stable");
    const wrongAudience = await new SignJWT({ role: "beta-tester" })
      .setProtectedHeader({ alg: "RS256" })
      .setIssuer(ISSUER)
      .setAudience("someone-else")
      .setExpirationTime(now() + 600)
      .sign(rsaKey);
    expect(await side(plain, "/jwt-rs/a", bearer(wrongAudience))).toBe("stable");
  });

  it("ES256 from the JWKS: the published key → canary; another key with the same kid → stable", async () => {
    expect(await side(plain, "/jwt-jwks/a", bearer(await signWith("ES256", ecKey, { realm_access: { roles: ["beta"] } }, "k1")))).toBe("canary");
    expect(await side(plain, "/jwt-jwks/a", bearer(await signWith("ES256", otherEcKey, { realm_access: { roles: ["beta"] } }, "k1")))).toBe("stable");
  });

  it("a tenant's token does not verify on another tenant's rules (keys are per tenant)", async () => {
    expect(await side(plain, "/jwt-hs/a", bearer(await signWith("RS256", rsaKey, { role: "beta-tester" })))).toBe("stable");
  });
});

describe("client IP (remote_addr ipmatch) and trusted proxies", () => {
  beforeAll(async () => {
    const tenant = await api.createTenant("client-ip");
    await serve(tenant, {
      path: "/office/*",
      targets: [{ url: stable.url }],
      traffic_split: { rules: [{ match: [{ vars: [["remote_addr", "ipmatch", ["10.1.0.0/16", "2001:db8:1::/48"]]] }], weighted_upstreams: [to(canary)] }] },
    });
    await serve(tenant, {
      path: "/loopback/*",
      targets: [{ url: stable.url }],
      traffic_split: { rules: [{ match: [{ vars: [["remote_addr", "ipmatch", "127.0.0.0/8"]] }], weighted_upstreams: [to(canary)] }] },
    });
  });

  it.each([
    ["10.1.2.3", "canary"],
    ["10.2.0.1", "stable"],
    ["2001:db8:1::5", "canary"],
    ["2001:db8:2::5", "stable"],
    // Right-most untrusted: a client cannot prepend an office address to get in.
    ["10.1.2.3, 203.0.113.9", "stable"],
    ["203.0.113.9, 10.1.2.3", "canary"],
    // 10.9.0.0/16 is a trusted internal proxy: skipped, the office address behind it counts.
    ["10.1.2.3, 10.9.0.1", "canary"],
  ])("edge (trusted proxies): X-Forwarded-For %s → %s", async (xff, expected) => {
    expect(await side(edge, "/office/a", { "x-forwarded-for": xff })).toBe(expected);
  });

  it("edge without X-Forwarded-For: the socket address (127.0.0.1) is the client", async () => {
    expect(await side(edge, "/office/a")).toBe("stable");
    expect(await side(edge, "/loopback/a")).toBe("canary");
  });

  it("plain (no trusted proxies): X-Forwarded-For is ignored, the socket address counts", async () => {
    expect(await side(plain, "/office/a", { "x-forwarded-for": "10.1.2.3" })).toBe("stable");
    expect(await side(plain, "/loopback/a", { "x-forwarded-for": "10.1.2.3" })).toBe("canary");
    expect(await side(edge, "/loopback/a", { "x-forwarded-for": "10.1.2.3" })).toBe("stable");
  });
});

describe("geolocation (geo_country) from the real country database", () => {
  beforeAll(async () => {
    // The facts the routing below relies on, read from the same database file.
    const db = await openCountryDb(GEO_DB);
    expect(["193.0.6.139", "2001:67c:2e8::2", "8.8.8.8", "217.160.0.1", "212.27.48.10"].map((ip) => db.country(ip))).toEqual(["NL", "NL", "US", "DE", "FR"]);

    const tenant = await api.createTenant("geo");
    await serve(tenant, {
      path: "/geo/*",
      targets: [{ url: stable.url }],
      traffic_split: {
        rules: [
          { match: [{ vars: [["geo_country", "==", "NL"]] }], weighted_upstreams: [to(canary)] },
          { match: [{ vars: [["geo_country", "in", ["DE", "FR"]]] }], weighted_upstreams: [to(other)] },
        ],
      },
    });
  });

  it.each([
    ["193.0.6.139", "canary"],
    ["2001:67c:2e8::2", "canary"],
    ["8.8.8.8", "stable"],
    ["217.160.0.1", "other"],
    ["212.27.48.10", "other"],
    // Private and loopback addresses have no country.
    ["10.1.2.3", "stable"],
    // Spoofing attempt: the right-most untrusted address (US) counts, not the prepended NL one.
    ["193.0.6.139, 8.8.8.8", "stable"],
  ])("edge: X-Forwarded-For %s → %s", async (xff, expected) => {
    expect(await side(edge, "/geo/a", { "x-forwarded-for": xff })).toBe(expected);
  });

  it("edge without X-Forwarded-For (127.0.0.1, no country) → stable", async () => {
    expect(await side(edge, "/geo/a")).toBe("stable");
  });

  it("plain (no --geo-db, no trusted proxies): geo_country is missing → stable", async () => {
    expect(await side(plain, "/geo/a", { "x-forwarded-for": "193.0.6.139" })).toBe("stable");
  });
});
