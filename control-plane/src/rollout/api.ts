import { clone, create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { RolloutSchema, type Rollout } from "../../../proto/gen/gateway/v1/rollout_pb.js";
import { ConfigError } from "../../../data-plane/src/config/errors.js";
import { newId, requireTenant, type Principal } from "../config/auth.js";
import type { ConfigState } from "../config/state.js";
import type { ConfigSource, RolloutController } from "./controller.js";
import { isFinal, type RolloutAction } from "./lifecycle.js";
import * as t from "./transitions.js";
import { checkDrivable, validateRollout } from "./validate.js";
import { rolloutMutation, type RolloutWriter } from "./writer.js";

/**
 * The rollout API's behaviour, independent of transport (the Connect service and the REST routes
 * call it with an authenticated principal): tenant checks, validation at the edge, creation, the
 * operator actions (delegated to the controller, which owns transitions), and watching.
 */
export class RolloutApi {
  private readonly now: () => number;

  constructor(
    private readonly config: ConfigSource,
    private readonly writer: RolloutWriter,
    private readonly controller: RolloutController,
    opts: { readonly now?: () => number } = {},
  ) {
    this.now = opts.now ?? Date.now;
  }

  /** Creates a rollout ("pending"); the controller applies its first step at once. */
  async create(p: Principal, tenantId: string, input: Rollout | undefined): Promise<Rollout> {
    requireTenant(p, tenantId);
    let r: Rollout;
    try {
      r = validateRollout(input ?? create(RolloutSchema));
    } catch (err) {
      if (err instanceof ConfigError) throw new ConnectError(err.message, Code.InvalidArgument);
      throw err;
    }
    const id = newId("ro");
    const out = await this.writer.write((s) => {
      tenantOf(s, tenantId);
      const stable = checkDrivable(s, tenantId, r);
      const rollout = t.created(r, id, tenantId, stable, this.now(), actorOf(p));
      return { mutations: [rolloutMutation(rollout)], result: (st: ConfigState) => st.rollouts.get(id)! };
    });
    this.controller.kick(id);
    return this.view(out!);
  }

  /** Reads a rollout with its latest analysis. */
  get(p: Principal, tenantId: string, rolloutId: string): Rollout {
    requireTenant(p, tenantId);
    return this.view(rolloutOf(this.config.current(), tenantId, rolloutId));
  }

  /** A tenant's rollouts, newest first. */
  list(p: Principal, tenantId: string): Rollout[] {
    requireTenant(p, tenantId);
    const s = this.config.current();
    tenantOf(s, tenantId);
    return [...s.rollouts.values()]
      .filter((r) => r.tenantId === tenantId)
      .sort((a, b) => Number(b.createdAtMs - a.createdAtMs) || a.id.localeCompare(b.id))
      .map((r) => this.view(r));
  }

  /** Pause, resume, promote now or abort. `revision` 0 skips the concurrency check. */
  async act(p: Principal, tenantId: string, rolloutId: string, action: RolloutAction, reason: string, revision: bigint): Promise<Rollout> {
    requireTenant(p, tenantId);
    if (reason.length > 1024) throw new ConnectError("reason: must be at most 1024 characters", Code.InvalidArgument);
    rolloutOf(this.config.current(), tenantId, rolloutId);
    return this.view(await this.controller.act(rolloutId, action, actorOf(p), reason, revision));
  }

  /**
   * The rollout now, then again after every stored change and every new analysis, until it is
   * final (that state is the last one yielded) or `signal` aborts.
   */
  async *watch(p: Principal, tenantId: string, rolloutId: string, signal: AbortSignal): AsyncGenerator<Rollout> {
    requireTenant(p, tenantId);
    rolloutOf(this.config.current(), tenantId, rolloutId);
    let wake: (() => void) | undefined;
    let dirty = true;
    const poke = () => {
      dirty = true;
      wake?.();
    };
    const offChange = this.config.onChange(poke);
    const offAnalysis = this.controller.onAnalysis((id) => {
      if (id === rolloutId) poke();
    });
    const onAbort = () => wake?.();
    signal.addEventListener("abort", onAbort);
    let lastRevision = -1n;
    let lastAnalysisAt = -1n;
    try {
      while (!signal.aborted) {
        if (!dirty) {
          await new Promise<void>((resolve) => (wake = resolve));
          wake = undefined;
          continue;
        }
        dirty = false;
        const r = this.config.current().rollouts.get(rolloutId);
        if (r === undefined) return;
        const view = this.view(r);
        const at = view.lastAnalysis?.atMs ?? 0n;
        if (view.revision === lastRevision && at === lastAnalysisAt) continue;
        lastRevision = view.revision;
        lastAnalysisAt = at;
        yield view;
        if (isFinal(view.state)) return;
      }
    } finally {
      offChange();
      offAnalysis();
      signal.removeEventListener("abort", onAbort);
    }
  }

  /**
   * The stored rollout with its live analysis; a finished one shows the analysis that decided its
   * end (stored in its events), since nothing is analysed any more.
   */
  private view(r: Rollout): Rollout {
    const v = clone(RolloutSchema, r);
    v.lastAnalysis = isFinal(r.state) ? r.events.findLast((e) => e.analysis !== undefined)?.analysis : this.controller.lastAnalysis(r.id);
    return v;
  }
}

/** How a principal is named in events. */
export function actorOf(p: Principal): t.Actor {
  return p.kind === "admin" ? "admin" : `key/${p.keyId}`;
}

function tenantOf(s: ConfigState, tenantId: string): void {
  if (!s.tenants.has(tenantId)) throw new ConnectError(`tenant ${tenantId} not found`, Code.NotFound);
}

function rolloutOf(s: ConfigState, tenantId: string, rolloutId: string): Rollout {
  tenantOf(s, tenantId);
  const r = s.rollouts.get(rolloutId);
  if (r === undefined || r.tenantId !== tenantId) throw new ConnectError(`rollout ${rolloutId} not found`, Code.NotFound);
  return r;
}
