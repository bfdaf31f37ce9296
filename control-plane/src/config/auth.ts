import { Code, ConnectError } from "@connectrpc/connect";
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";

/**
 * Bearer-key authentication for the config API. Keys are 192-bit random secrets, so a plain SHA-256
 * is enough to store them (no password stretching needed) and lets us look a key up by its hash.
 */

/** Who is calling. */
export type Principal = { readonly kind: "admin" } | { readonly kind: "tenant"; readonly tenantId: string; readonly keyId: string };

/** Generates a new API key secret. */
export function newApiKey(): string {
  return `gk_${randomBytes(24).toString("base64url")}`;
}

/** Generates a resource id with a readable prefix. */
export function newId(prefix: string): string {
  return `${prefix}_${randomBytes(8).toString("hex")}`;
}

/** SHA-256 of a key, hex. */
export function hashKey(key: string): string {
  return createHash("sha256").update(key).digest("hex");
}

/** Extracts the bearer token of an Authorization header value. */
export function bearer(header: string | null | undefined): string | undefined {
  if (!header) return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return m?.[1];
}

/** Resolves bearer keys to principals: the admin key, or a tenant key looked up by hash. */
export class Authenticator {
  private readonly adminHash: Buffer;

  constructor(
    adminKey: string,
    /** Returns the tenant and key id for a key hash, if it exists now. */
    private readonly lookup: (hash: string) => { tenantId: string; keyId: string } | undefined,
  ) {
    this.adminHash = createHash("sha256").update(adminKey).digest();
  }

  /** The principal for an Authorization header, or an UNAUTHENTICATED error. */
  authenticate(authorization: string | null | undefined): Principal {
    const token = bearer(authorization);
    if (token === undefined) {
      throw new ConnectError('missing credentials: send "Authorization: Bearer <api key>"', Code.Unauthenticated);
    }
    const digest = createHash("sha256").update(token).digest();
    if (timingSafeEqual(digest, this.adminHash)) return { kind: "admin" };
    const hit = this.lookup(digest.toString("hex"));
    if (hit === undefined) throw new ConnectError("invalid API key", Code.Unauthenticated);
    return { kind: "tenant", tenantId: hit.tenantId, keyId: hit.keyId };
  }
}

/** Throws PERMISSION_DENIED unless the principal is the admin. */
export function requireAdmin(p: Principal): void {
  if (p.kind !== "admin") throw new ConnectError("this call needs the admin key", Code.PermissionDenied);
}

/**
 * Throws NOT_FOUND unless the principal may act on the tenant. A tenant key asking about another
 * tenant gets the same answer as for a tenant that does not exist, so ids do not leak.
 */
export function requireTenant(p: Principal, tenantId: string): void {
  if (p.kind === "admin") return;
  if (p.tenantId !== tenantId) throw new ConnectError(`tenant ${tenantId} not found`, Code.NotFound);
}
