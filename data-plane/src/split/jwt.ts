/**
 * Per-tenant JWT verification for `jwt_<claim>` match variables.
 *
 * Claims only ever come from a token whose signature verified with one of the tenant's keys and
 * whose exp/nbf/iss/aud hold: an unverified token contributes nothing, so a client cannot route
 * itself onto a canary by forging `role: beta-tester`. Keys are parsed when the snapshot is compiled
 * (bad keys are refused there, naming the field); tokens are verified with `jose`, and results are
 * cached per token string so a hot client does not pay a signature check on every request.
 */
import { createPublicKey, type KeyObject } from "node:crypto";
import {
  createLocalJWKSet,
  decodeProtectedHeader,
  jwtVerify,
  type JSONWebKeySet,
  type JWTPayload,
  type KeyInput,
  type JWTVerifyGetKey,
  type JWTVerifyOptions,
} from "jose";
import { ConfigError } from "../config/errors.js";

/** Verified claims of a token. */
export type JwtClaims = Readonly<JWTPayload>;

/**
 * The fields of a tenant's JwtVerification this module reads. The generated protobuf message
 * satisfies it, and so does a plain object (tests, YAML), without a dependency on the generated code.
 */
export interface JwtVerificationConfig {
  readonly hmacSecrets?: readonly string[];
  readonly publicKeysPem?: readonly string[];
  readonly jwksJson?: string;
  readonly issuer?: string;
  readonly audience?: string;
  readonly header?: string;
  readonly clockToleranceS?: number;
}

/** Tuning that is not tenant configuration. */
export interface JwtVerifierOptions {
  /** Verified tokens remembered (least recently used evicted). Default 1024. */
  readonly cacheSize?: number;
  /** Clock in Unix milliseconds, for tests. Default Date.now. */
  readonly now?: () => number;
}

/** A tenant's compiled verifier. */
export interface JwtVerifier {
  /** Lower-case name of the request header the token is read from. */
  readonly header: string;
  /** Whether any key is configured; without keys no token ever verifies. */
  readonly hasKeys: boolean;
  /** The token in a value of `header` (after "Bearer "), or undefined when there is none. */
  token(headerValue: string | undefined): string | undefined;
  /**
   * The token's claims when it verifies; undefined for anything else (unsigned, expired, not yet
   * valid, wrong key or issuer or audience, malformed). Never rejects on a bad token.
   */
  verify(token: string): Promise<JwtClaims | undefined>;
}

const DEFAULT_HEADER = "authorization";
const DEFAULT_CLOCK_TOLERANCE_S = 30;
const DEFAULT_CACHE_SIZE = 1024;
/** Longest token considered: bounds the work an anonymous client can ask for. */
const MAX_TOKEN_LENGTH = 16 * 1024;
/** How long a token without exp stays cached: claims may be revoked by rotating keys (a new snapshot). */
const NO_EXP_TTL_MS = 60_000;
/**
 * How long a failed token stays cached. Short, because one failure is time-dependent (nbf not
 * reached yet); long enough that a client replaying a bad token is not re-verified on every request.
 */
const FAILURE_TTL_MS = 5_000;

const HMAC_ALGS = ["HS256", "HS384", "HS512"] as const;
const RSA_ALGS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"] as const;
const PSS_ALGS = ["PS256", "PS384", "PS512"] as const;
const EC_ALGS: Readonly<Record<string, string>> = { prime256v1: "ES256", secp384r1: "ES384", secp521r1: "ES512" };
const EDDSA_ALGS = ["EdDSA", "Ed25519"] as const;
/** Asymmetric algorithms a JWKS may serve ("none" and HMAC never come from a JWKS). */
const JWKS_ALGS = new Set<string>([...RSA_ALGS, ...Object.values(EC_ALGS), ...EDDSA_ALGS]);

interface PublicKey {
  readonly key: KeyObject;
  /** Algorithms the key can verify: a token's alg picks the keys to try. */
  readonly algs: ReadonlySet<string>;
}

interface CacheEntry {
  readonly result: Promise<JwtClaims | undefined>;
  /** Unix ms after which the entry is stale; +Infinity while verification is pending. */
  expiresAt: number;
}

/**
 * Compiles a tenant's JwtVerification. Throws ConfigError naming the bad field under `field`
 * (e.g. `jwt.public_keys_pem[0]`, `jwt.jwks_json`).
 *
 * `clock_tolerance_s` 0 means the default (30 s): proto3 cannot tell unset from 0.
 */
export function buildJwtVerifier(
  config: JwtVerificationConfig,
  field = "jwt",
  options: JwtVerifierOptions = {},
): JwtVerifier {
  const encoder = new TextEncoder();
  const secrets = (config.hmacSecrets ?? []).map((secret, i) => {
    if (typeof secret !== "string" || secret.length === 0) {
      throw new ConfigError(`${field}.hmac_secrets[${i}]`, "must be a non-empty string");
    }
    return encoder.encode(secret);
  });
  const publicKeys = (config.publicKeysPem ?? []).map((pem, i) => parsePem(pem, `${field}.public_keys_pem[${i}]`));
  const jwks = config.jwksJson ? parseJwks(config.jwksJson, `${field}.jwks_json`) : undefined;

  const header = (config.header || DEFAULT_HEADER).toLowerCase();
  const tolerance = config.clockToleranceS || DEFAULT_CLOCK_TOLERANCE_S;
  const now = options.now ?? Date.now;
  const cacheSize = Math.max(1, options.cacheSize ?? DEFAULT_CACHE_SIZE);
  const baseOptions: JWTVerifyOptions = {
    clockTolerance: tolerance,
    ...(config.issuer ? { issuer: config.issuer } : {}),
    ...(config.audience ? { audience: config.audience } : {}),
  };
  const hasKeys = secrets.length > 0 || publicKeys.length > 0 || jwks !== undefined;
  const cache = new Map<string, CacheEntry>();

  async function verifyUncached(token: string): Promise<JwtClaims | undefined> {
    let alg: unknown;
    try {
      alg = decodeProtectedHeader(token).alg;
    } catch {
      return undefined;
    }
    if (typeof alg !== "string") return undefined;
    const opts: JWTVerifyOptions = { ...baseOptions, algorithms: [alg], currentDate: new Date(now()) };
    if ((HMAC_ALGS as readonly string[]).includes(alg)) {
      return firstVerified(token, secrets, opts);
    }
    const candidates: (KeyInput | JWTVerifyGetKey)[] = [];
    for (const k of publicKeys) if (k.algs.has(alg)) candidates.push(k.key);
    if (jwks !== undefined && JWKS_ALGS.has(alg)) candidates.push(jwks);
    return firstVerified(token, candidates, opts);
  }

  function remember(token: string, entry: CacheEntry): void {
    if (cache.size >= cacheSize) {
      const oldest = cache.keys().next().value;
      if (oldest !== undefined) cache.delete(oldest);
    }
    cache.set(token, entry);
  }

  return {
    header,
    hasKeys,
    token(headerValue) {
      return extractToken(headerValue, header === DEFAULT_HEADER);
    },
    verify(token) {
      if (!hasKeys || token.length === 0 || token.length > MAX_TOKEN_LENGTH) return RESOLVED_UNDEFINED;
      const hit = cache.get(token);
      const t = now();
      if (hit !== undefined && t < hit.expiresAt) {
        // Refresh recency: Map iteration order is insertion order, so the first key is the LRU one.
        cache.delete(token);
        cache.set(token, hit);
        return hit.result;
      }
      if (hit !== undefined) cache.delete(token);
      // The promise itself is cached, so concurrent requests with one token share one verification.
      const entry: CacheEntry = { result: verifyUncached(token), expiresAt: Number.POSITIVE_INFINITY };
      remember(token, entry);
      void entry.result.then((claims) => {
        const settled = now();
        if (claims === undefined) {
          entry.expiresAt = settled + FAILURE_TTL_MS;
        } else if (typeof claims.exp === "number") {
          // Until verification would start failing: exp plus the tolerance jose grants.
          entry.expiresAt = (claims.exp + tolerance) * 1000;
        } else {
          entry.expiresAt = settled + NO_EXP_TTL_MS;
        }
      });
      return entry.result;
    },
  };
}

const RESOLVED_UNDEFINED: Promise<undefined> = Promise.resolve(undefined);

/**
 * Tries the keys in order. A signature failure moves on to the next key; a claim failure (expired,
 * wrong issuer) means the signature matched, so no other key can do better.
 */
async function firstVerified(
  token: string,
  keys: readonly (KeyInput | JWTVerifyGetKey)[],
  opts: JWTVerifyOptions,
): Promise<JwtClaims | undefined> {
  for (const key of keys) {
    try {
      const { payload } = await jwtVerify(token, key, opts);
      return payload;
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (code === "ERR_JWT_EXPIRED" || code === "ERR_JWT_CLAIM_VALIDATION_FAILED") return undefined;
      if (code === "ERR_JWKS_MULTIPLE_MATCHING_KEYS" && Symbol.asyncIterator in (err as object)) {
        // Several JWKS keys fit (no kid in the token, or a shared kid): jose hands them over to try.
        const claims = await firstOfMany(token, err as AsyncIterable<KeyInput>, opts);
        if (claims !== undefined) return claims;
      }
    }
  }
  return undefined;
}

async function firstOfMany(token: string, keys: AsyncIterable<KeyInput>, opts: JWTVerifyOptions): Promise<JwtClaims | undefined> {
  for await (const key of keys) {
    try {
      const { payload } = await jwtVerify(token, key, opts);
      return payload;
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (code === "ERR_JWT_EXPIRED" || code === "ERR_JWT_CLAIM_VALIDATION_FAILED") return undefined;
    }
  }
  return undefined;
}

function extractToken(value: string | undefined, bearerRequired: boolean): string | undefined {
  if (value === undefined) return undefined;
  let start = 0;
  while (start < value.length && value.charCodeAt(start) === 32) start++;
  if (hasBearerPrefix(value, start)) {
    start += 7;
  } else if (bearerRequired) {
    return undefined; // Authorization with another scheme (Basic, ...) carries no JWT
  }
  const token = value.slice(start).trim();
  return token.length > 0 ? token : undefined;
}

const BEARER = "bearer ";

/** Whether value[start..] begins with "Bearer " in any case (auth schemes are case-insensitive, RFC 7235). */
function hasBearerPrefix(value: string, start: number): boolean {
  if (value.length - start <= BEARER.length) return false;
  for (let i = 0; i < BEARER.length; i++) {
    if ((value.charCodeAt(start + i) | 0x20) !== BEARER.charCodeAt(i)) return false;
  }
  return true;
}

function parsePem(pem: unknown, field: string): PublicKey {
  if (typeof pem !== "string" || pem.trim().length === 0) throw new ConfigError(field, "must be a PEM-encoded public key");
  if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(pem)) {
    throw new ConfigError(field, "is a private key: configure the public key (SPKI PEM) only");
  }
  let key: KeyObject;
  try {
    key = createPublicKey({ key: pem, format: "pem" });
  } catch (err) {
    throw new ConfigError(field, `not a valid PEM public key: ${(err as Error).message}`);
  }
  return { key, algs: new Set(algorithmsFor(key, field)) };
}

function algorithmsFor(key: KeyObject, field: string): readonly string[] {
  switch (key.asymmetricKeyType) {
    case "rsa":
      if ((key.asymmetricKeyDetails?.modulusLength ?? 0) < 2048) {
        throw new ConfigError(field, "RSA keys must be at least 2048 bits");
      }
      return RSA_ALGS;
    case "rsa-pss":
      return PSS_ALGS;
    case "ec": {
      const alg = EC_ALGS[key.asymmetricKeyDetails?.namedCurve ?? ""];
      if (alg === undefined) throw new ConfigError(field, `unsupported EC curve ${key.asymmetricKeyDetails?.namedCurve}`);
      return [alg];
    }
    case "ed25519":
      return EDDSA_ALGS;
    default:
      throw new ConfigError(field, `unsupported key type ${key.asymmetricKeyType}`);
  }
}

function parseJwks(text: string, field: string): JWTVerifyGetKey {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(field, `not valid JSON: ${(err as Error).message}`);
  }
  const keys = (doc as { keys?: unknown } | null)?.keys;
  if (typeof doc !== "object" || doc === null || !Array.isArray(keys)) {
    throw new ConfigError(field, 'must be a JWKS document: {"keys": [...]}');
  }
  // Import every key now so a bad one is refused with the snapshot, not discovered per request.
  keys.forEach((jwk: unknown, i) => {
    const at = `${field}.keys[${i}]`;
    if (typeof jwk !== "object" || jwk === null) throw new ConfigError(at, "must be a JSON object");
    const { kty, d } = jwk as { kty?: unknown; d?: unknown };
    if (kty === "oct") throw new ConfigError(at, "symmetric keys belong in hmac_secrets, not in a JWKS");
    if (d !== undefined) throw new ConfigError(at, "is a private key: publish public keys only");
    try {
      createPublicKey({ key: jwk as import("node:crypto").JsonWebKey, format: "jwk" });
    } catch (err) {
      throw new ConfigError(at, `not a valid public key: ${(err as Error).message}`);
    }
  });
  try {
    return createLocalJWKSet(doc as JSONWebKeySet);
  } catch (err) {
    throw new ConfigError(field, `not a valid JWKS: ${(err as Error).message}`);
  }
}

// Split dotted paths once: claim paths come from configuration, so the set is small; the bound
// only guards against a caller passing request-controlled paths.
const PATHS = new Map<string, readonly string[]>();
const MAX_PATHS = 4096;

/**
 * The claim at a dotted path ("realm_access.roles"), or undefined. A top-level claim whose name
 * itself contains dots (namespaced claims such as "https://example.com/roles") is found first.
 * Only own properties are followed, so "constructor" or "__proto__" never reach Object.prototype.
 */
export function claimAt(claims: JwtClaims | undefined, path: string): unknown {
  if (claims === undefined) return undefined;
  if (Object.hasOwn(claims, path)) return (claims as Record<string, unknown>)[path];
  let segments = PATHS.get(path);
  if (segments === undefined) {
    if (PATHS.size >= MAX_PATHS) PATHS.clear();
    segments = path.split(".");
    PATHS.set(path, segments);
  }
  if (segments.length === 1) return undefined;
  let node: unknown = claims;
  for (const segment of segments) {
    if (typeof node !== "object" || node === null || !Object.hasOwn(node, segment)) return undefined;
    node = (node as Record<string, unknown>)[segment];
  }
  return node;
}
