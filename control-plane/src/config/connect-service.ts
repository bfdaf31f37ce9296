import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  ConfigService,
  CreateApiKeyResponseSchema,
  CreateRuleResponseSchema,
  CreateTenantResponseSchema,
  CreateUpstreamResponseSchema,
  DeleteApiKeyResponseSchema,
  DeleteRuleResponseSchema,
  DeleteTenantResponseSchema,
  DeleteUpstreamResponseSchema,
  GetRuleResponseSchema,
  GetTenantResponseSchema,
  GetUpstreamResponseSchema,
  ListApiKeysResponseSchema,
  ListNodesResponseSchema,
  ListRulesResponseSchema,
  ListTenantsResponseSchema,
  ListUpstreamsResponseSchema,
  SetTargetStateResponseSchema,
  UpdateRuleResponseSchema,
  UpdateTenantResponseSchema,
  UpdateUpstreamResponseSchema,
  type CreateApiKeyRequest,
  type CreateRuleRequest,
  type CreateTenantRequest,
  type CreateUpstreamRequest,
  type DeleteApiKeyRequest,
  type DeleteRuleRequest,
  type DeleteTenantRequest,
  type DeleteUpstreamRequest,
  type GetRuleRequest,
  type GetTenantRequest,
  type GetFleetHealthRequest,
  type GetUpstreamRequest,
  type ListApiKeysRequest,
  type ListNodesRequest,
  type ListRulesRequest,
  type ListTenantsRequest,
  type ListUpstreamsRequest,
  type SetTargetStateRequest,
  type UpdateRuleRequest,
  type UpdateTenantRequest,
  type UpdateUpstreamRequest,
} from "../../../proto/gen/gateway/v1/config_service_pb.js";
import { requireAdmin, type Authenticator, type Principal } from "./auth.js";
import type { ConfigApi } from "./api.js";
import type { NodeRegistry } from "../discovery/nodes.js";
import type { Fleet } from "../fleet/fleet.js";
import { fleetHealth } from "../fleet/health-api.js";

/** The ConfigService over Connect/gRPC/gRPC-Web: authenticates, then delegates to ConfigApi. */
export class ConfigServiceImpl implements ServiceImpl<typeof ConfigService> {
  constructor(
    private readonly api: ConfigApi,
    private readonly auth: Authenticator,
    private readonly nodes: NodeRegistry,
    /** Fleet health view; without it GetFleetHealth answers UNAVAILABLE. */
    private readonly fleet?: Fleet,
  ) {}

  private who(ctx: HandlerContext): Principal {
    return this.auth.authenticate(ctx.requestHeader.get("authorization"));
  }

  async createTenant(req: CreateTenantRequest, ctx: HandlerContext) {
    const { tenant, apiKey } = await this.api.createTenant(this.who(ctx), req.name, req.jwt);
    return create(CreateTenantResponseSchema, { tenant, apiKey });
  }

  listTenants(_req: ListTenantsRequest, ctx: HandlerContext) {
    return create(ListTenantsResponseSchema, { tenants: this.api.listTenants(this.who(ctx)) });
  }

  getTenant(req: GetTenantRequest, ctx: HandlerContext) {
    return create(GetTenantResponseSchema, { tenant: this.api.getTenant(this.who(ctx), req.tenantId) });
  }

  async updateTenant(req: UpdateTenantRequest, ctx: HandlerContext) {
    const p = this.who(ctx);
    if (req.tenant === undefined) throw invalid("tenant: is required");
    return create(UpdateTenantResponseSchema, { tenant: await this.api.updateTenant(p, req.tenant) });
  }

  async deleteTenant(req: DeleteTenantRequest, ctx: HandlerContext) {
    await this.api.deleteTenant(this.who(ctx), req.tenantId);
    return create(DeleteTenantResponseSchema);
  }

  async createApiKey(req: CreateApiKeyRequest, ctx: HandlerContext) {
    const { key, apiKey } = await this.api.createApiKey(this.who(ctx), req.tenantId);
    return create(CreateApiKeyResponseSchema, { key, apiKey });
  }

  listApiKeys(req: ListApiKeysRequest, ctx: HandlerContext) {
    return create(ListApiKeysResponseSchema, { keys: this.api.listApiKeys(this.who(ctx), req.tenantId) });
  }

  async deleteApiKey(req: DeleteApiKeyRequest, ctx: HandlerContext) {
    await this.api.deleteApiKey(this.who(ctx), req.tenantId, req.keyId);
    return create(DeleteApiKeyResponseSchema);
  }

  async createRule(req: CreateRuleRequest, ctx: HandlerContext) {
    return create(CreateRuleResponseSchema, await this.api.createRule(this.who(ctx), req.tenantId, req.rule));
  }

  getRule(req: GetRuleRequest, ctx: HandlerContext) {
    return create(GetRuleResponseSchema, { rule: this.api.getRule(this.who(ctx), req.tenantId, req.ruleId) });
  }

  listRules(req: ListRulesRequest, ctx: HandlerContext) {
    return create(ListRulesResponseSchema, { rules: this.api.listRules(this.who(ctx), req.tenantId) });
  }

  async updateRule(req: UpdateRuleRequest, ctx: HandlerContext) {
    return create(UpdateRuleResponseSchema, await this.api.updateRule(this.who(ctx), req.tenantId, req.rule));
  }

  async deleteRule(req: DeleteRuleRequest, ctx: HandlerContext) {
    await this.api.deleteRule(this.who(ctx), req.tenantId, req.ruleId, req.revision);
    return create(DeleteRuleResponseSchema);
  }

  async createUpstream(req: CreateUpstreamRequest, ctx: HandlerContext) {
    return create(CreateUpstreamResponseSchema, await this.api.createUpstream(this.who(ctx), req.tenantId, req.upstream));
  }

  getUpstream(req: GetUpstreamRequest, ctx: HandlerContext) {
    return create(GetUpstreamResponseSchema, { upstream: this.api.getUpstream(this.who(ctx), req.tenantId, req.upstreamId) });
  }

  listUpstreams(req: ListUpstreamsRequest, ctx: HandlerContext) {
    return create(ListUpstreamsResponseSchema, { upstreams: this.api.listUpstreams(this.who(ctx), req.tenantId) });
  }

  async updateUpstream(req: UpdateUpstreamRequest, ctx: HandlerContext) {
    return create(UpdateUpstreamResponseSchema, await this.api.updateUpstream(this.who(ctx), req.tenantId, req.upstream));
  }

  async deleteUpstream(req: DeleteUpstreamRequest, ctx: HandlerContext) {
    await this.api.deleteUpstream(this.who(ctx), req.tenantId, req.upstreamId, req.revision);
    return create(DeleteUpstreamResponseSchema);
  }

  async setTargetState(req: SetTargetStateRequest, ctx: HandlerContext) {
    const upstream = await this.api.setTargetState(this.who(ctx), req.tenantId, req.upstreamId, req.target, req.adminState);
    return create(SetTargetStateResponseSchema, { upstream });
  }

  listNodes(_req: ListNodesRequest, ctx: HandlerContext) {
    requireAdmin(this.who(ctx));
    return create(ListNodesResponseSchema, { nodes: this.nodes.list(), version: this.api.current().version });
  }

  getFleetHealth(req: GetFleetHealthRequest, ctx: HandlerContext) {
    const p = this.who(ctx);
    if (this.fleet === undefined) throw new ConnectError("fleet health is not available on this server", Code.Unavailable);
    return fleetHealth(p, this.api.current(), this.fleet, req.tenantId, req.upstreamId, req.windowMs);
  }
}

function invalid(message: string): ConnectError {
  return new ConnectError(message, Code.InvalidArgument);
}
