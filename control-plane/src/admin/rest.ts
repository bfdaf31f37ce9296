import { toJson, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type http from "node:http";
import type http2 from "node:http2";
import { GetFleetHealthResponseSchema, NodeSchema } from "../../../proto/gen/gateway/v1/config_service_pb.js";
import { RolloutSchema, type Rollout } from "../../../proto/gen/gateway/v1/rollout_pb.js";
import { RuleSchema } from "../../../proto/gen/gateway/v1/rule_pb.js";
import { ApiKeySchema, JwtVerificationSchema, TenantSchema } from "../../../proto/gen/gateway/v1/tenant_pb.js";
import { UpstreamSchema } from "../../../proto/gen/gateway/v1/upstream_pb.js";
import { ConfigError } from "../../../data-plane/src/config/errors.js";
import type { ConfigApi } from "../config/api.js";
import type { Authenticator, Principal } from "../config/auth.js";
import type { NodeRegistry } from "../discovery/nodes.js";
import type { Fleet } from "../fleet/fleet.js";
import { fleetHealth } from "../fleet/health-api.js";
import { fromApisixRule } from "./apisix.js";
import type { RolloutApi } from "../rollout/api.js";
import { decodeJson } from "./decode.js";

/**
 * The REST surface of the config API (seed 000's `/api/v1/tenants/{tenant_id}/rules` and friends),
 * JSON in snake_case, authorised by `Authorization: Bearer <key>`. It maps HTTP onto ConfigApi and
 * ConnectError codes onto HTTP statuses; it holds no behaviour of its own.
 */

type Req = http.IncomingMessage | http2.Http2ServerRequest;
type Res = http.ServerResponse | http2.Http2ServerResponse;

const MAX_BODY = 1 << 20;

interface Ctx {
  readonly p: Principal;
  readonly params: string[];
  readonly body: unknown;
  readonly req: Req;
}

interface Reply {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
}

type Route = { method: string; pattern: RegExp; run: (c: Ctx) => Promise<Reply> | Reply };

const ID = "([A-Za-z0-9_.:\\[\\]-]+)";

function json<D extends DescMessage>(schema: D, msg: MessageShape<D>): unknown {
  return toJson(schema, msg, { useProtoFieldName: true, alwaysEmitImplicit: true });
}

/**
 * Revision a PUT is based on. Lost updates are refused, so a PUT must say what it read: the
 * "revision" in the body or an If-Match ETag; `If-Match: *` is an explicit unconditional write.
 * Without either the answer is 428 Precondition Required.
 */
function putRevision(req: Req, bodyRevision: bigint): bigint {
  const h = req.headers["if-match"];
  const v = Array.isArray(h) ? h[0] : h;
  if (v?.trim() === "*") return 0n;
  if (v === undefined && bodyRevision === 0n) {
    throw new HttpError(428, "precondition_required", 'revision: send the revision you read (in the body, or as If-Match: "<revision>"), or If-Match: * to overwrite unconditionally');
  }
  return ifMatch(req, bodyRevision);
}

/** Revision to check: If-Match header (an ETag we sent) wins over a "revision" field in the body. */
function ifMatch(req: Req, fallback: bigint): bigint {
  const h = req.headers["if-match"];
  const v = Array.isArray(h) ? h[0] : h;
  if (v === undefined || v === "*") return fallback;
  const m = /^(?:W\/)?"?(\d+)"?$/.exec(v.trim());
  if (m === null) throw new ConnectError(`If-Match: expected a revision like "12", got ${v}`, Code.InvalidArgument);
  return BigInt(m[1]);
}

function withEtag(body: unknown, revision: bigint, status = 200): Reply {
  return { status, body, headers: { etag: `"${revision}"` } };
}

function objectBody(body: unknown): Record<string, unknown> {
  if (body === undefined) return {};
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new ConfigError("(body)", "must be a JSON object");
  }
  return body as Record<string, unknown>;
}

/** Builds the REST handler. Returns false for paths it does not own. */
export function restHandler(api: ConfigApi, auth: Authenticator, nodes: NodeRegistry, fleet?: Fleet, rollouts?: RolloutApi) {
  const routes: Route[] = [
    {
      method: "POST",
      pattern: /^\/api\/v1\/tenants$/,
      run: async ({ p, body }) => {
        const b = objectBody(body);
        for (const k of Object.keys(b)) if (k !== "name" && k !== "jwt") throw new ConfigError(k, "unknown field");
        if (typeof b.name !== "string") throw new ConfigError("name", "is required and must be a string");
        const jwt = b.jwt === undefined ? undefined : decodeJson(JwtVerificationSchema, b.jwt, "jwt");
        const { tenant, apiKey } = await api.createTenant(p, b.name, jwt);
        return withEtag({ id: tenant.id, name: tenant.name, api_key: apiKey, revision: String(tenant.revision) }, tenant.revision, 201);
      },
    },
    { method: "GET", pattern: /^\/api\/v1\/tenants$/, run: ({ p }) => ({ status: 200, body: { tenants: api.listTenants(p).map((t) => json(TenantSchema, t)) } }) },
    {
      method: "GET",
      pattern: new RegExp(`^/api/v1/tenants/${ID}$`),
      run: ({ p, params }) => {
        const t = api.getTenant(p, params[0]);
        return withEtag(json(TenantSchema, t), t.revision);
      },
    },
    {
      method: "PUT",
      pattern: new RegExp(`^/api/v1/tenants/${ID}$`),
      run: async ({ p, params, body, req }) => {
        const t = decodeJson(TenantSchema, body);
        t.id = params[0];
        t.revision = putRevision(req, t.revision);
        const out = await api.updateTenant(p, t);
        return withEtag(json(TenantSchema, out), out.revision);
      },
    },
    {
      method: "DELETE",
      pattern: new RegExp(`^/api/v1/tenants/${ID}$`),
      run: async ({ p, params }) => {
        await api.deleteTenant(p, params[0]);
        return { status: 204 };
      },
    },
    {
      method: "POST",
      pattern: new RegExp(`^/api/v1/tenants/${ID}/api-keys$`),
      run: async ({ p, params }) => {
        const { key, apiKey } = await api.createApiKey(p, params[0]);
        return { status: 201, body: { ...(json(ApiKeySchema, key) as object), api_key: apiKey } };
      },
    },
    {
      method: "GET",
      pattern: new RegExp(`^/api/v1/tenants/${ID}/api-keys$`),
      run: ({ p, params }) => ({ status: 200, body: { api_keys: api.listApiKeys(p, params[0]).map((k) => json(ApiKeySchema, k)) } }),
    },
    {
      method: "DELETE",
      pattern: new RegExp(`^/api/v1/tenants/${ID}/api-keys/${ID}$`),
      run: async ({ p, params }) => {
        await api.deleteApiKey(p, params[0], params[1]);
        return { status: 204 };
      },
    },
    {
      method: "POST",
      pattern: new RegExp(`^/api/v1/tenants/${ID}/rules$`),
      run: async ({ p, params, body }) => {
        const { rule, warnings } = await api.createRule(p, params[0], decodeJson(RuleSchema, fromApisixRule(body)));
        return withEtag({ ...(json(RuleSchema, rule) as object), warnings }, rule.revision, 201);
      },
    },
    {
      method: "GET",
      pattern: new RegExp(`^/api/v1/tenants/${ID}/rules$`),
      run: ({ p, params }) => ({ status: 200, body: { rules: api.listRules(p, params[0]).map((r) => json(RuleSchema, r)) } }),
    },
    {
      method: "GET",
      pattern: new RegExp(`^/api/v1/tenants/${ID}/rules/${ID}$`),
      run: ({ p, params }) => {
        const r = api.getRule(p, params[0], params[1]);
        return withEtag(json(RuleSchema, r), r.revision);
      },
    },
    {
      method: "PUT",
      pattern: new RegExp(`^/api/v1/tenants/${ID}/rules/${ID}$`),
      run: async ({ p, params, body, req }) => {
        const r = decodeJson(RuleSchema, fromApisixRule(body));
        r.id = params[1];
        r.revision = putRevision(req, r.revision);
        const { rule, warnings } = await api.updateRule(p, params[0], r);
        return withEtag({ ...(json(RuleSchema, rule) as object), warnings }, rule.revision);
      },
    },
    {
      method: "DELETE",
      pattern: new RegExp(`^/api/v1/tenants/${ID}/rules/${ID}$`),
      run: async ({ p, params, req }) => {
        await api.deleteRule(p, params[0], params[1], ifMatch(req, 0n));
        return { status: 204 };
      },
    },
    {
      method: "POST",
      pattern: new RegExp(`^/api/v1/tenants/${ID}/upstreams$`),
      run: async ({ p, params, body }) => {
        const { upstream, warnings } = await api.createUpstream(p, params[0], decodeJson(UpstreamSchema, body));
        return withEtag({ ...(json(UpstreamSchema, upstream) as object), warnings }, upstream.revision, 201);
      },
    },
    {
      method: "GET",
      pattern: new RegExp(`^/api/v1/tenants/${ID}/upstreams$`),
      run: ({ p, params }) => ({ status: 200, body: { upstreams: api.listUpstreams(p, params[0]).map((u) => json(UpstreamSchema, u)) } }),
    },
    {
      method: "GET",
      pattern: new RegExp(`^/api/v1/tenants/${ID}/upstreams/${ID}$`),
      run: ({ p, params }) => {
        const u = api.getUpstream(p, params[0], params[1]);
        return withEtag(json(UpstreamSchema, u), u.revision);
      },
    },
    {
      method: "PUT",
      pattern: new RegExp(`^/api/v1/tenants/${ID}/upstreams/${ID}$`),
      run: async ({ p, params, body, req }) => {
        const u = decodeJson(UpstreamSchema, body);
        u.id = params[1];
        u.revision = putRevision(req, u.revision);
        const { upstream, warnings } = await api.updateUpstream(p, params[0], u);
        return withEtag({ ...(json(UpstreamSchema, upstream) as object), warnings }, upstream.revision);
      },
    },
    {
      method: "DELETE",
      pattern: new RegExp(`^/api/v1/tenants/${ID}/upstreams/${ID}$`),
      run: async ({ p, params, req }) => {
        await api.deleteUpstream(p, params[0], params[1], ifMatch(req, 0n));
        return { status: 204 };
      },
    },
    {
      method: "PUT",
      pattern: new RegExp(`^/api/v1/tenants/${ID}/upstreams/${ID}/targets/${ID}/state$`),
      run: async ({ p, params, body }) => {
        const b = objectBody(body);
        if (typeof b.admin_state !== "string") throw new ConfigError("admin_state", 'is required: "enabled", "draining" or "disabled"');
        const u = await api.setTargetState(p, params[0], params[1], decodeURIComponent(params[2]), b.admin_state);
        return withEtag(json(UpstreamSchema, u), u.revision);
      },
    },
    {
      method: "GET",
      // The fleet's view of an upstream's targets. The id may also name a rule's inline targets,
      // "rule/<id>" (and ".../canary", ".../split/<i>/<j>"), with its slashes raw or as %2F.
      pattern: new RegExp(`^/api/v1/tenants/${ID}/upstreams/([A-Za-z0-9_.:%/\\[\\]-]+)/health$`),
      run: ({ p, params, req }) => {
        if (fleet === undefined) throw new ConnectError("fleet health is not available on this server", Code.Unavailable);
        const windowMs = new URL(req.url ?? "/", "http://localhost").searchParams.get("window_ms") ?? "0";
        if (!/^\d{1,10}$/.test(windowMs)) throw new ConfigError("window_ms", `must be a whole number of milliseconds, got "${windowMs}"`);
        let backendId: string;
        try {
          backendId = decodeURIComponent(params[1]);
        } catch {
          throw new ConfigError("upstream_id", "is not valid percent-encoding");
        }
        const health = fleetHealth(p, api.current(), fleet, params[0], backendId, Number(windowMs));
        return { status: 200, body: json(GetFleetHealthResponseSchema, health) };
      },
    },
    ...(rollouts === undefined ? [] : rolloutRoutes(rollouts)),
    {
      method: "GET",
      pattern: /^\/api\/v1\/nodes$/,
      run: ({ p }) => {
        if (p.kind !== "admin") throw new ConnectError("this call needs the admin key", Code.PermissionDenied);
        return { status: 200, body: { version: String(api.current().version), nodes: nodes.list().map((n) => json(NodeSchema, n)) } };
      },
    },
  ];

  return async function handle(req: Req, res: Res): Promise<boolean> {
    const url = req.url ?? "/";
    const path = url.split("?", 1)[0];
    if (!path.startsWith("/api/")) return false;
    let allowed: string[] = [];
    for (const route of routes) {
      const m = route.pattern.exec(path);
      if (m === null) continue;
      if (route.method !== req.method) {
        allowed.push(route.method);
        continue;
      }
      allowed = [];
      try {
        const p = auth.authenticate(header(req, "authorization"));
        const body = await readJson(req);
        const reply = await route.run({ p, params: m.slice(1), body, req });
        send(res, reply.status, reply.body, reply.headers);
      } catch (err) {
        sendError(res, err);
      }
      return true;
    }
    if (allowed.length > 0) {
      send(res, 405, { error: { code: "method_not_allowed", message: `${req.method} is not allowed on ${path}` } }, { allow: allowed.join(", ") });
    } else {
      send(res, 404, { error: { code: "not_found", message: `no API route for ${path}` } });
    }
    return true;
  };
}

/** `/api/v1/tenants/{tenant_id}/rollouts`: create, list, read, and the pause/resume/promote/abort actions. */
function rolloutRoutes(rollouts: RolloutApi): Route[] {
  const view = (r: Rollout, status = 200) => withEtag(json(RolloutSchema, r), r.revision, status);
  const actions = ["pause", "resume", "promote", "abort"] as const;
  return [
    {
      method: "POST",
      pattern: new RegExp(`^/api/v1/tenants/${ID}/rollouts$`),
      run: async ({ p, params, body }) => view(await rollouts.create(p, params[0], decodeJson(RolloutSchema, body)), 201),
    },
    {
      method: "GET",
      pattern: new RegExp(`^/api/v1/tenants/${ID}/rollouts$`),
      run: ({ p, params }) => ({ status: 200, body: { rollouts: rollouts.list(p, params[0]).map((r) => json(RolloutSchema, r)) } }),
    },
    {
      method: "GET",
      pattern: new RegExp(`^/api/v1/tenants/${ID}/rollouts/${ID}$`),
      run: ({ p, params }) => view(rollouts.get(p, params[0], params[1])),
    },
    ...actions.map(
      (action): Route => ({
        method: "POST",
        pattern: new RegExp(`^/api/v1/tenants/${ID}/rollouts/${ID}/${action}$`),
        run: async ({ p, params, body, req }) => {
          // Optional body: {"reason": "..."}; If-Match (or "revision") guards against acting on a stale view.
          const b = objectBody(body);
          for (const k of Object.keys(b)) if (k !== "reason" && k !== "revision") throw new ConfigError(k, "unknown field");
          if (b.reason !== undefined && typeof b.reason !== "string") throw new ConfigError("reason", "must be a string");
          if (b.revision !== undefined && !(typeof b.revision === "string" ? /^\d+$/.test(b.revision) : Number.isSafeInteger(b.revision) && (b.revision as number) >= 0)) {
            throw new ConfigError("revision", "must be a non-negative integer");
          }
          const revision = ifMatch(req, b.revision === undefined ? 0n : BigInt(b.revision as string | number));
          return view(await rollouts.act(p, params[0], params[1], action, (b.reason as string | undefined) ?? "", revision));
        },
      }),
    ),
  ];
}

function header(req: Req, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

async function readJson(req: Req): Promise<unknown> {
  if (req.method === "GET" || req.method === "DELETE" || req.method === "HEAD") return undefined;
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY) throw new HttpError(413, "payload_too_large", `request body over ${MAX_BODY} bytes`);
    chunks.push(chunk);
  }
  if (size === 0) return undefined;
  const ct = header(req, "content-type") ?? "application/json";
  if (!/^application\/(.+\+)?json\b/i.test(ct)) {
    throw new HttpError(415, "unsupported_media_type", `Content-Type must be application/json, got ${ct}`);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch (err) {
    throw new HttpError(400, "invalid_json", `request body is not valid JSON: ${(err as Error).message}`);
  }
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const STATUS_BY_CODE: Partial<Record<Code, number>> = {
  [Code.InvalidArgument]: 400,
  [Code.Unauthenticated]: 401,
  [Code.PermissionDenied]: 403,
  [Code.NotFound]: 404,
  [Code.AlreadyExists]: 409,
  [Code.FailedPrecondition]: 409,
  [Code.Aborted]: 409,
  [Code.Unavailable]: 503,
};

function sendError(res: Res, err: unknown): void {
  if (err instanceof HttpError) return send(res, err.status, { error: { code: err.code, message: err.message } });
  if (err instanceof ConfigError) return send(res, 400, { error: { code: "invalid_argument", message: err.message, field: err.field } });
  if (err instanceof ConnectError) {
    const status = STATUS_BY_CODE[err.code] ?? 500;
    const code = Code[err.code].replace(/[A-Z]/g, (c, i) => (i === 0 ? c.toLowerCase() : `_${c.toLowerCase()}`));
    const headers: Record<string, string> = status === 401 ? { "www-authenticate": "Bearer" } : {};
    // Validation messages start with the field path ("targets[1].weight: ..."): expose it as well.
    const field = err.code === Code.InvalidArgument ? /^([A-Za-z_][\w.\[\]]*): /.exec(err.rawMessage)?.[1] : undefined;
    return send(res, status, { error: field === undefined ? { code, message: err.rawMessage } : { code, message: err.rawMessage, field } }, headers);
  }
  console.error("config API internal error", err);
  send(res, 500, { error: { code: "internal", message: "internal error" } });
}

function send(res: Res, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const data = body === undefined ? "" : JSON.stringify(body);
  const h: Record<string, string | number> = { ...headers };
  if (body !== undefined) h["content-type"] = "application/json";
  h["content-length"] = Buffer.byteLength(data);
  (res as http.ServerResponse).writeHead(status, h);
  (res as http.ServerResponse).end(data);
}
