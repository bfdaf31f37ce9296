import { create } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  AbortRolloutResponseSchema,
  CreateRolloutResponseSchema,
  GetRolloutResponseSchema,
  ListRolloutsResponseSchema,
  PauseRolloutResponseSchema,
  PromoteRolloutResponseSchema,
  ResumeRolloutResponseSchema,
  RolloutService,
  WatchRolloutResponseSchema,
  type AbortRolloutRequest,
  type CreateRolloutRequest,
  type GetRolloutRequest,
  type ListRolloutsRequest,
  type PauseRolloutRequest,
  type PromoteRolloutRequest,
  type ResumeRolloutRequest,
  type WatchRolloutRequest,
} from "../../../proto/gen/gateway/v1/rollout_pb.js";
import type { Authenticator, Principal } from "../config/auth.js";
import type { RolloutApi } from "./api.js";

/** The RolloutService over Connect/gRPC/gRPC-Web: authenticates, then delegates to RolloutApi. */
export class RolloutServiceImpl implements ServiceImpl<typeof RolloutService> {
  constructor(
    private readonly api: RolloutApi,
    private readonly auth: Authenticator,
  ) {}

  private who(ctx: HandlerContext): Principal {
    return this.auth.authenticate(ctx.requestHeader.get("authorization"));
  }

  async createRollout(req: CreateRolloutRequest, ctx: HandlerContext) {
    return create(CreateRolloutResponseSchema, { rollout: await this.api.create(this.who(ctx), req.tenantId, req.rollout) });
  }

  getRollout(req: GetRolloutRequest, ctx: HandlerContext) {
    return create(GetRolloutResponseSchema, { rollout: this.api.get(this.who(ctx), req.tenantId, req.rolloutId) });
  }

  listRollouts(req: ListRolloutsRequest, ctx: HandlerContext) {
    return create(ListRolloutsResponseSchema, { rollouts: this.api.list(this.who(ctx), req.tenantId) });
  }

  async pauseRollout(req: PauseRolloutRequest, ctx: HandlerContext) {
    const rollout = await this.api.act(this.who(ctx), req.tenantId, req.rolloutId, "pause", req.reason, req.revision);
    return create(PauseRolloutResponseSchema, { rollout });
  }

  async resumeRollout(req: ResumeRolloutRequest, ctx: HandlerContext) {
    const rollout = await this.api.act(this.who(ctx), req.tenantId, req.rolloutId, "resume", req.reason, req.revision);
    return create(ResumeRolloutResponseSchema, { rollout });
  }

  async promoteRollout(req: PromoteRolloutRequest, ctx: HandlerContext) {
    const rollout = await this.api.act(this.who(ctx), req.tenantId, req.rolloutId, "promote", req.reason, req.revision);
    return create(PromoteRolloutResponseSchema, { rollout });
  }

  async abortRollout(req: AbortRolloutRequest, ctx: HandlerContext) {
    const rollout = await this.api.act(this.who(ctx), req.tenantId, req.rolloutId, "abort", req.reason, req.revision);
    return create(AbortRolloutResponseSchema, { rollout });
  }

  /** Ends when the rollout is final, the client leaves, or the server shuts down (ctx.signal). */
  async *watchRollout(req: WatchRolloutRequest, ctx: HandlerContext) {
    for await (const rollout of this.api.watch(this.who(ctx), req.tenantId, req.rolloutId, ctx.signal)) {
      yield create(WatchRolloutResponseSchema, { rollout });
    }
  }
}
