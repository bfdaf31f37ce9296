/**
 * REST client for the control plane's config API, as a curl user sees it (seed 000's
 * `/api/v1/tenants/{tenant_id}/rules` and friends, `Authorization: Bearer <key>`).
 *
 * Methods return the raw {@link HttpResponse} (status, headers, parsed JSON) so tests assert exact
 * statuses and error bodies; the `must*` variants assert success and return the resource, for
 * setup code. {@link GatewayApi.waitForAcked} is how a test knows a change reached the data planes:
 * it polls `GET /api/v1/nodes` until every named node acknowledged the version.
 */
import { randomBytes } from "node:crypto";
import { httpRequest, type HttpRequestOptions, type HttpResponse } from "./http.js";
import type { ControlPlane } from "./processes.js";
import { waitFor, type WaitOptions } from "./wait.js";

/** A tenant and its API key, as `POST /api/v1/tenants` returns them. */
export interface TenantCreds {
  readonly id: string;
  readonly name: string;
  readonly apiKey: string;
}

/** One entry of `GET /api/v1/nodes`. */
export interface NodeView {
  readonly node_id: string;
  /** Decimal string (uint64). */
  readonly acked_version: string;
  readonly connected: boolean;
  readonly last_error: string;
  readonly labels: Record<string, string>;
  readonly software_version: string;
}

/** `GET /api/v1/nodes`. */
export interface NodesView {
  /** Current configuration version (decimal string). */
  readonly version: string;
  readonly nodes: NodeView[];
}

/** Who calls: a key, or `null` for no Authorization header; admin key when omitted. */
export interface CallOptions {
  readonly key?: string | null;
  readonly headers?: Record<string, string>;
}

/** Body of a rule (seed 000 shape, snake_case); loosely typed so tests can send invalid ones. */
export type RuleBody = Record<string, unknown>;

/** A REST client bound to one control plane and its admin key. */
export class GatewayApi {
  constructor(
    readonly baseUrl: string,
    readonly adminKey: string,
  ) {}

  /** Client for a started control plane. */
  static of(cp: Pick<ControlPlane, "url" | "adminKey">): GatewayApi {
    return new GatewayApi(cp.url, cp.adminKey);
  }

  /** Any request to the API. The key defaults to the admin key; `key: null` sends none. */
  call(method: NonNullable<HttpRequestOptions["method"]>, path: string, opts: CallOptions & { body?: unknown } = {}): Promise<HttpResponse> {
    const headers: Record<string, string> = { ...opts.headers };
    const key = opts.key === undefined ? this.adminKey : opts.key;
    if (key !== null) headers.authorization = `Bearer ${key}`;
    return httpRequest(`${this.baseUrl}${path}`, { method, headers, body: opts.body });
  }

  // ---- tenants ----

  /** `POST /api/v1/tenants` with the admin key; throws unless 201. */
  async createTenant(name = `tenant-${randomBytes(4).toString("hex")}`): Promise<TenantCreds> {
    const res = await this.call("POST", "/api/v1/tenants", { body: { name } });
    expectStatus(res, 201, "POST /api/v1/tenants");
    return { id: res.json.id, name: res.json.name, apiKey: res.json.api_key };
  }

  // ---- rules ----

  /** `POST /api/v1/tenants/{tid}/rules` with the tenant's key (or `opts.key`). */
  createRule(tenant: TenantCreds, body: RuleBody, opts: CallOptions = {}): Promise<HttpResponse> {
    return this.call("POST", `/api/v1/tenants/${tenant.id}/rules`, { key: tenant.apiKey, ...opts, body });
  }

  /** Creates a rule and returns its JSON (id, revision, warnings, ...); throws unless 201. */
  async mustCreateRule(tenant: TenantCreds, body: RuleBody): Promise<RuleView> {
    const res = await this.createRule(tenant, body);
    expectStatus(res, 201, `POST /api/v1/tenants/${tenant.id}/rules`);
    return res.json as RuleView;
  }

  getRule(tenant: TenantCreds, ruleId: string, opts: CallOptions = {}): Promise<HttpResponse> {
    return this.call("GET", `/api/v1/tenants/${tenant.id}/rules/${ruleId}`, { key: tenant.apiKey, ...opts });
  }

  listRules(tenant: TenantCreds, opts: CallOptions = {}): Promise<HttpResponse> {
    return this.call("GET", `/api/v1/tenants/${tenant.id}/rules`, { key: tenant.apiKey, ...opts });
  }

  /** `PUT .../rules/{rid}`: send `revision` in the body or `If-Match` in `opts.headers`. */
  updateRule(tenant: TenantCreds, ruleId: string, body: RuleBody, opts: CallOptions = {}): Promise<HttpResponse> {
    return this.call("PUT", `/api/v1/tenants/${tenant.id}/rules/${ruleId}`, { key: tenant.apiKey, ...opts, body });
  }

  /** Updates a rule and returns its JSON; throws unless 200. */
  async mustUpdateRule(tenant: TenantCreds, ruleId: string, body: RuleBody): Promise<RuleView> {
    const res = await this.updateRule(tenant, ruleId, body);
    expectStatus(res, 200, `PUT /api/v1/tenants/${tenant.id}/rules/${ruleId}`);
    return res.json as RuleView;
  }

  deleteRule(tenant: TenantCreds, ruleId: string, opts: CallOptions = {}): Promise<HttpResponse> {
    return this.call("DELETE", `/api/v1/tenants/${tenant.id}/rules/${ruleId}`, { key: tenant.apiKey, ...opts });
  }

  // ---- upstreams ----

  createUpstream(tenant: TenantCreds, body: Record<string, unknown>, opts: CallOptions = {}): Promise<HttpResponse> {
    return this.call("POST", `/api/v1/tenants/${tenant.id}/upstreams`, { key: tenant.apiKey, ...opts, body });
  }

  /** Creates an upstream and returns its JSON; throws unless 201. */
  async mustCreateUpstream(tenant: TenantCreds, body: Record<string, unknown>): Promise<UpstreamView> {
    const res = await this.createUpstream(tenant, body);
    expectStatus(res, 201, `POST /api/v1/tenants/${tenant.id}/upstreams`);
    return res.json as UpstreamView;
  }

  getUpstream(tenant: TenantCreds, upstreamId: string, opts: CallOptions = {}): Promise<HttpResponse> {
    return this.call("GET", `/api/v1/tenants/${tenant.id}/upstreams/${upstreamId}`, { key: tenant.apiKey, ...opts });
  }

  listUpstreams(tenant: TenantCreds, opts: CallOptions = {}): Promise<HttpResponse> {
    return this.call("GET", `/api/v1/tenants/${tenant.id}/upstreams`, { key: tenant.apiKey, ...opts });
  }

  updateUpstream(tenant: TenantCreds, upstreamId: string, body: Record<string, unknown>, opts: CallOptions = {}): Promise<HttpResponse> {
    return this.call("PUT", `/api/v1/tenants/${tenant.id}/upstreams/${upstreamId}`, { key: tenant.apiKey, ...opts, body });
  }

  deleteUpstream(tenant: TenantCreds, upstreamId: string, opts: CallOptions = {}): Promise<HttpResponse> {
    return this.call("DELETE", `/api/v1/tenants/${tenant.id}/upstreams/${upstreamId}`, { key: tenant.apiKey, ...opts });
  }

  // ---- fleet ----

  /** `GET /api/v1/nodes` with the admin key; throws unless 200. */
  async listNodes(): Promise<NodesView> {
    const res = await this.call("GET", "/api/v1/nodes");
    expectStatus(res, 200, "GET /api/v1/nodes");
    return res.json as NodesView;
  }

  /** The control plane's current configuration version. */
  async currentVersion(): Promise<bigint> {
    return BigInt((await this.listNodes()).version);
  }

  /**
   * Polls `GET /api/v1/nodes` until every node in `nodeIds` has acknowledged `version` or a newer
   * one (a rule's or upstream's `revision` is the version that wrote it). Returns the last view.
   */
  waitForAcked(version: bigint | number | string, nodeIds: readonly string[], opts: WaitOptions = {}): Promise<NodesView> {
    const v = BigInt(version);
    let last: NodesView | undefined;
    return waitFor(
      async () => {
        last = await this.listNodes();
        const byId = new Map(last.nodes.map((n) => [n.node_id, n]));
        return nodeIds.every((id) => byId.has(id) && BigInt(byId.get(id)!.acked_version) >= v) ? last : undefined;
      },
      { what: `nodes ${nodeIds.join(", ")} to ack version ${v}`, ...opts },
    ).catch((err: Error) => {
      throw new Error(`${err.message}\nlast GET /api/v1/nodes: ${JSON.stringify(last)}`);
    });
  }

  /** Waits until every node in `nodeIds` has acknowledged the control plane's current version. */
  async waitForConverged(nodeIds: readonly string[], opts: WaitOptions = {}): Promise<NodesView> {
    return this.waitForAcked(await this.currentVersion(), nodeIds, opts);
  }

  /**
   * Polls `GET /api/v1/nodes` until every node in `nodeIds` is listed as connected. Connection
   * errors while the control plane is (re)starting count as "not yet".
   */
  waitForConnected(nodeIds: readonly string[], opts: WaitOptions = {}): Promise<NodesView> {
    return waitFor(
      async () => {
        const view = await this.listNodes();
        const byId = new Map(view.nodes.map((n) => [n.node_id, n]));
        return nodeIds.every((id) => byId.get(id)?.connected === true) ? view : undefined;
      },
      { what: `nodes ${nodeIds.join(", ")} to be connected`, ...opts },
    );
  }
}

/** A rule as the API returns it (the fields tests read). */
export interface RuleView {
  readonly id: string;
  readonly tenant_id: string;
  readonly path: string;
  /** Decimal string; also the configuration version that wrote the rule. */
  readonly revision: string;
  readonly warnings: string[];
  readonly [field: string]: unknown;
}

/** An upstream as the API returns it (the fields tests read). */
export interface UpstreamView {
  readonly id: string;
  readonly name: string;
  readonly revision: string;
  readonly warnings: string[];
  readonly [field: string]: unknown;
}

/** Throws with the response body unless the status is `status`. */
export function expectStatus(res: HttpResponse, status: number, what: string): void {
  if (res.status !== status) throw new Error(`${what}: expected ${status}, got ${res.status}: ${res.text}`);
}
