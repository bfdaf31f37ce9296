import { generateKeyPairSync } from "node:crypto";
import { exportJWK, exportPKCS8, exportSPKI, generateKeyPair, SignJWT, type CryptoKey, type JWTPayload } from "jose";
import { beforeAll, describe, expect, it } from "vitest";
import { ConfigError } from "../../../../data-plane/src/config/errors.js";
import { compileMatch } from "../../../../data-plane/src/split/expr.js";
import { IncomingRequestView } from "../../../../data-plane/src/split/incoming-request-view.js";
import { buildJwtVerifier, claimAt, type JwtVerificationConfig } from "../../../../data-plane/src/split/jwt.js";

const SECRET = "a-shared-secret-of-reasonable-length";
const NOW_S = Math.floor(Date.now() / 1000);

function sign(payload: JWTPayload, alg: string, key: CryptoKey | Uint8Array, header: Record<string, unknown> = {}): Promise<string> {
  return new SignJWT(payload).setProtectedHeader({ alg, ...header }).sign(key);
}

function hmac(secret: string): Uint8Array {
  return new TextEncoder().encode(secret);
}

function b64url(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString("base64url");
}

function configError(config: JwtVerificationConfig): ConfigError {
  try {
    buildJwtVerifier(config, "tenants[0].jwt");
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error("expected a ConfigError");
}

type KeyPair = { publicKey: CryptoKey; privateKey: CryptoKey };
let rsa: KeyPair;
let rsaOther: KeyPair;
let ec: KeyPair;
let ed: KeyPair;

beforeAll(async () => {
  [rsa, rsaOther, ec, ed] = await Promise.all([
    generateKeyPair("RS256", { extractable: true }),
    generateKeyPair("RS256", { extractable: true }),
    generateKeyPair("ES256", { extractable: true }),
    generateKeyPair("EdDSA", { extractable: true }),
  ]);
});

describe("JWT verification", () => {
  const valid = { sub: "alice", exp: NOW_S + 3600 };

  it("verifies HS256 with any of the configured secrets (rotation)", async () => {
    const v = buildJwtVerifier({ hmacSecrets: ["old-secret-value", SECRET] });
    expect(await v.verify(await sign(valid, "HS256", hmac(SECRET)))).toMatchObject({ sub: "alice" });
    expect(await v.verify(await sign(valid, "HS512", hmac("old-secret-value")))).toMatchObject({ sub: "alice" });
    expect(await v.verify(await sign(valid, "HS256", hmac("another-secret-entirely")))).toBeUndefined();
  });

  it("verifies RS256, PS256, ES256 and EdDSA with PEM public keys", async () => {
    const v = buildJwtVerifier({
      publicKeysPem: [await exportSPKI(ec.publicKey), await exportSPKI(rsa.publicKey), await exportSPKI(ed.publicKey)],
    });
    expect(await v.verify(await sign(valid, "RS256", rsa.privateKey))).toMatchObject({ sub: "alice" });
    expect(await v.verify(await sign(valid, "ES256", ec.privateKey))).toMatchObject({ sub: "alice" });
    expect(await v.verify(await sign(valid, "EdDSA", ed.privateKey))).toMatchObject({ sub: "alice" });
    const pss = await generateKeyPair("PS256", { extractable: true });
    const v2 = buildJwtVerifier({ publicKeysPem: [await exportSPKI(pss.publicKey)] });
    expect(await v2.verify(await sign(valid, "PS256", pss.privateKey))).toMatchObject({ sub: "alice" });
  });

  it("PEM keys verify tokens that carry a kid", async () => {
    const v = buildJwtVerifier({ publicKeysPem: [await exportSPKI(rsa.publicKey)] });
    expect(await v.verify(await sign(valid, "RS256", rsa.privateKey, { kid: "k1" }))).toMatchObject({ sub: "alice" });
  });

  it("verifies with a JWKS, by kid and with several candidate keys", async () => {
    const jwks = {
      keys: [
        { ...(await exportJWK(rsaOther.publicKey)), kid: "other", alg: "RS256", use: "sig" },
        { ...(await exportJWK(rsa.publicKey)), kid: "main", alg: "RS256", use: "sig" },
        { ...(await exportJWK(ec.publicKey)) },
      ],
    };
    const v = buildJwtVerifier({ jwksJson: JSON.stringify(jwks) });
    expect(await v.verify(await sign(valid, "RS256", rsa.privateKey, { kid: "main" }))).toMatchObject({ sub: "alice" });
    // No kid: both RSA keys are candidates; the second one verifies.
    expect(await v.verify(await sign(valid, "RS256", rsa.privateKey))).toMatchObject({ sub: "alice" });
    expect(await v.verify(await sign(valid, "ES256", ec.privateKey))).toMatchObject({ sub: "alice" });
    // Right kid, wrong key.
    expect(await v.verify(await sign(valid, "RS256", rsaOther.privateKey, { kid: "main" }))).toBeUndefined();
  });

  it("refuses a token signed with another key", async () => {
    const v = buildJwtVerifier({ publicKeysPem: [await exportSPKI(rsa.publicKey)] });
    expect(await v.verify(await sign(valid, "RS256", rsaOther.privateKey))).toBeUndefined();
  });

  it("refuses unsigned tokens (alg none)", async () => {
    const v = buildJwtVerifier({ hmacSecrets: [SECRET], publicKeysPem: [await exportSPKI(rsa.publicKey)] });
    expect(await v.verify(`${b64url({ alg: "none", typ: "JWT" })}.${b64url(valid)}.`)).toBeUndefined();
    expect(await v.verify(`${b64url({ alg: "none" })}.${b64url(valid)}`)).toBeUndefined();
  });

  it("refuses HS256 signed with the public key text (algorithm confusion)", async () => {
    const pem = await exportSPKI(rsa.publicKey);
    const v = buildJwtVerifier({ publicKeysPem: [pem] });
    expect(await v.verify(await sign(valid, "HS256", hmac(pem)))).toBeUndefined();
  });

  it("refuses expired and not-yet-valid tokens, within the clock tolerance", async () => {
    const v = buildJwtVerifier({ hmacSecrets: [SECRET] });
    const key = hmac(SECRET);
    expect(await v.verify(await sign({ sub: "a", exp: NOW_S - 3600 }, "HS256", key))).toBeUndefined();
    expect(await v.verify(await sign({ sub: "a", exp: NOW_S - 10 }, "HS256", key))).toMatchObject({ sub: "a" }); // 30 s default
    expect(await v.verify(await sign({ sub: "a", nbf: NOW_S + 3600 }, "HS256", key))).toBeUndefined();
    const strict = buildJwtVerifier({ hmacSecrets: [SECRET], clockToleranceS: 5 });
    expect(await strict.verify(await sign({ sub: "b", exp: NOW_S - 10 }, "HS256", key))).toBeUndefined();
  });

  it("checks issuer and audience when configured", async () => {
    const v = buildJwtVerifier({ hmacSecrets: [SECRET], issuer: "https://idp.example.com", audience: "gateway" });
    const key = hmac(SECRET);
    expect(await v.verify(await sign({ iss: "https://idp.example.com", aud: "gateway" }, "HS256", key))).toBeDefined();
    expect(await v.verify(await sign({ iss: "https://idp.example.com", aud: ["x", "gateway"] }, "HS256", key))).toBeDefined();
    expect(await v.verify(await sign({ iss: "https://evil.example.com", aud: "gateway" }, "HS256", key))).toBeUndefined();
    expect(await v.verify(await sign({ iss: "https://idp.example.com", aud: "other" }, "HS256", key))).toBeUndefined();
    expect(await v.verify(await sign({ aud: "gateway" }, "HS256", key))).toBeUndefined();
  });

  it("never throws on malformed tokens", async () => {
    const v = buildJwtVerifier({ hmacSecrets: [SECRET] });
    for (const token of ["", "abc", "a.b.c", "a.b", "..", `${b64url({ alg: "HS256" })}.!!!.abc`, "x".repeat(20_000), `${b64url({})}.${b64url({})}.`]) {
      expect(await v.verify(token)).toBeUndefined();
    }
  });

  it("verifies nothing without keys", async () => {
    const v = buildJwtVerifier({});
    expect(v.hasKeys).toBe(false);
    expect(await v.verify(await sign(valid, "HS256", hmac(SECRET)))).toBeUndefined();
  });
});

describe("JWT verification cache", () => {
  it("reuses a verification until the token expires, then verifies again", async () => {
    let now = NOW_S * 1000;
    const v = buildJwtVerifier({ hmacSecrets: [SECRET], clockToleranceS: 1 }, "jwt", { now: () => now });
    const token = await sign({ sub: "a", exp: NOW_S + 60 }, "HS256", hmac(SECRET));
    const first = v.verify(token);
    expect(v.verify(token)).toBe(first); // shared while pending
    expect(await first).toMatchObject({ sub: "a" });
    now += 30_000;
    expect(v.verify(token)).toBe(first); // cached while valid
    now = (NOW_S + 62) * 1000; // past exp + tolerance
    const again = v.verify(token);
    expect(again).not.toBe(first);
    expect(await again).toBeUndefined();
  });

  it("evicts the least recently used token when full", async () => {
    const v = buildJwtVerifier({ hmacSecrets: [SECRET] }, "jwt", { cacheSize: 2 });
    const key = hmac(SECRET);
    const [a, b, c] = await Promise.all(["a", "b", "c"].map((sub) => sign({ sub, exp: NOW_S + 600 }, "HS256", key)));
    const pa = v.verify(a);
    const pb = v.verify(b);
    expect(v.verify(a)).toBe(pa); // a is now the most recent
    v.verify(c); // evicts b
    expect(v.verify(a)).toBe(pa);
    expect(v.verify(b)).not.toBe(pb);
    await Promise.all([pa, pb]);
  });
});

describe("JWT token extraction", () => {
  it("reads a Bearer token from Authorization", () => {
    const v = buildJwtVerifier({ hmacSecrets: [SECRET] });
    expect(v.header).toBe("authorization");
    expect(v.token("Bearer abc.def.ghi")).toBe("abc.def.ghi");
    expect(v.token("bearer   abc.def.ghi ")).toBe("abc.def.ghi");
    expect(v.token("Basic dXNlcjpwYXNz")).toBeUndefined();
    expect(v.token("abc.def.ghi")).toBeUndefined();
    expect(v.token("Bearer ")).toBeUndefined();
    expect(v.token(undefined)).toBeUndefined();
  });

  it("reads a raw (or Bearer) token from a custom header", () => {
    const v = buildJwtVerifier({ hmacSecrets: [SECRET], header: "X-Auth-Token" });
    expect(v.header).toBe("x-auth-token");
    expect(v.token("abc.def.ghi")).toBe("abc.def.ghi");
    expect(v.token("Bearer abc.def.ghi")).toBe("abc.def.ghi");
  });
});

describe("JWT configuration errors", () => {
  it("names a PEM that does not parse", () => {
    const err = configError({ publicKeysPem: ["-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----"] });
    expect(err.field).toBe("tenants[0].jwt.public_keys_pem[0]");
    expect(err.reason).toMatch(/not a valid PEM/);
  });

  it("refuses a private key in place of a public one", async () => {
    const err = configError({ publicKeysPem: [await exportSPKI(rsa.publicKey), await exportPKCS8(rsa.privateKey)] });
    expect(err.field).toBe("tenants[0].jwt.public_keys_pem[1]");
    expect(err.reason).toMatch(/private key/);
  });

  it("refuses RSA keys under 2048 bits", async () => {
    const weak = generateKeyPairSync("rsa", { modulusLength: 1024 }).publicKey.export({ type: "spki", format: "pem" }).toString();
    expect(configError({ publicKeysPem: [weak] }).reason).toMatch(/2048/);
  });

  it("names JWKS text that is not JSON or not a JWKS", () => {
    expect(configError({ jwksJson: "{keys:" })).toMatchObject({ field: "tenants[0].jwt.jwks_json", reason: expect.stringMatching(/not valid JSON/) });
    expect(configError({ jwksJson: '{"key": []}' })).toMatchObject({ field: "tenants[0].jwt.jwks_json", reason: expect.stringMatching(/JWKS document/) });
  });

  it("names the bad key inside a JWKS", async () => {
    const good = await exportJWK(rsa.publicKey);
    expect(configError({ jwksJson: JSON.stringify({ keys: [good, { kty: "RSA", n: "xx" }] }) }).field).toBe("tenants[0].jwt.jwks_json.keys[1]");
    expect(configError({ jwksJson: JSON.stringify({ keys: [{ kty: "oct", k: "c2VjcmV0" }] }) }).reason).toMatch(/hmac_secrets/);
    const priv = await exportJWK(ec.privateKey);
    expect(configError({ jwksJson: JSON.stringify({ keys: [priv] }) }).reason).toMatch(/private key/);
  });

  it("names an empty HMAC secret", () => {
    expect(configError({ hmacSecrets: [SECRET, ""] }).field).toBe("tenants[0].jwt.hmac_secrets[1]");
  });
});

describe("claimAt", () => {
  const claims = {
    sub: "alice",
    realm_access: { roles: ["user", "beta-tester"] },
    "https://example.com/roles": ["admin"],
    groups: ["a", "b"],
  };
  it.each([
    ["sub", "alice"],
    ["realm_access.roles", ["user", "beta-tester"]],
    ["https://example.com/roles", ["admin"]],
    ["groups.1", "b"],
    ["realm_access.missing", undefined],
    ["sub.length", undefined],
    ["constructor", undefined],
    ["realm_access.__proto__", undefined],
  ])("%s", (path, expected) => {
    expect(claimAt(claims, path)).toEqual(expected);
  });
  it("is undefined without claims", () => {
    expect(claimAt(undefined, "sub")).toBeUndefined();
  });
});

describe("jwt_ expressions over verified claims", () => {
  it("has on a nested roles claim routes beta testers only, and only with a valid signature", async () => {
    const verifier = buildJwtVerifier({ publicKeysPem: [await exportSPKI(rsa.publicKey)] });
    const match = compileMatch([{ vars: [["jwt_realm_access.roles", "has", "beta-tester"]] }], "match");
    expect(match.needsJwt).toBe(true);

    async function routed(token: string): Promise<boolean> {
      const view = new IncomingRequestView({ method: "GET", url: "/", rawHeaders: ["Authorization", `Bearer ${token}`], socket: null });
      const raw = verifier.token(view.header(verifier.header));
      view.setJwtClaims(raw === undefined ? undefined : await verifier.verify(raw));
      return match.test(view);
    }

    const beta = { sub: "alice", realm_access: { roles: ["user", "beta-tester"] }, exp: NOW_S + 600 };
    expect(await routed(await sign(beta, "RS256", rsa.privateKey))).toBe(true);
    expect(await routed(await sign({ ...beta, realm_access: { roles: ["user"] } }, "RS256", rsa.privateKey))).toBe(false);
    // Same claims, forged signature: no claims at all.
    expect(await routed(await sign(beta, "RS256", rsaOther.privateKey))).toBe(false);
    expect(await routed(`${b64url({ alg: "none" })}.${b64url(beta)}.`)).toBe(false);
  });
});
