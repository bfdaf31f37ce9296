import { Code, ConnectError } from "@connectrpc/connect";
import { RolloutSchema, type Rollout } from "../../../proto/gen/gateway/v1/rollout_pb.js";
import { RuleSchema, type Rule } from "../../../proto/gen/gateway/v1/rule_pb.js";
import { compileSnapshot } from "../../../data-plane/src/config/compile.js";
import { validateRule } from "../../../data-plane/src/config/validate.js";
import { ConfigState, encodeMessage } from "../config/state.js";
import { StoreConflictError, StoreUnavailableError, type ConfigStore, type Mutation } from "../store/store.js";
import { sameRouting } from "./traffic.js";

/**
 * The rollout's write path into the configuration store, the same path ConfigApi's writes take:
 * one store commit per change, durable before it resolves, versioned, validated first with the data
 * plane's own compiler (a rule change the data planes would NACK is refused here), and seen by
 * ConfigApi through the store subscription, so it is pushed to every data plane like any change.
 *
 * A rollout's state and the rule weights it implies go into ONE commit: after a crash either both
 * are on disk or neither is, so a rollback decision is never lost while its weights went out, nor
 * the other way round.
 *
 * Writes are serialised here; a conflict with a concurrent ConfigApi write (the store moved) re-runs
 * the plan on the newer state.
 */

/** A planned commit: the mutations, and what to return once they are durable. */
export interface Planned<T> {
  readonly mutations: Mutation[];
  readonly result: (state: ConfigState) => T;
}

/** Conflicts tolerated in a row before a write gives up. */
const MAX_ATTEMPTS = 6;

export class RolloutWriter {
  private chain: Promise<unknown> = Promise.resolve();
  private reloaded: ConfigState | undefined;

  constructor(
    private readonly store: ConfigStore,
    /** The config API's current state (it follows every commit, ours included). */
    private readonly current: () => ConfigState,
  ) {}

  /** The newest state known: the config API's, or a fresher one loaded after a conflict. */
  state(): ConfigState {
    const c = this.current();
    return this.reloaded !== undefined && this.reloaded.version > c.version ? this.reloaded : c;
  }

  /**
   * Runs `plan` on the newest state and commits its mutations. `plan` may return undefined to
   * write nothing (the decision it was asked to make is stale), or throw to refuse. Rejects with the
   * ConfigError of a candidate the data planes would refuse; nothing is written then.
   */
  write<T>(plan: (s: ConfigState) => Planned<T> | undefined): Promise<T | undefined> {
    const run = async (): Promise<T | undefined> => {
      for (let attempt = 1; ; attempt++) {
        const base = this.state();
        const planned = plan(base);
        if (planned === undefined || planned.mutations.length === 0) return planned?.result(base);
        const candidate = base.with(base.version + 1n, planned.mutations);
        // Only a rule change can make the snapshot invalid; rollout records are not part of it.
        if (planned.mutations.some((m) => m.kind !== "rollout")) compileSnapshot(candidate.snapshot());
        try {
          await this.store.commit(base.version, planned.mutations);
          return planned.result(candidate);
        } catch (err) {
          if (err instanceof StoreConflictError && attempt < MAX_ATTEMPTS) {
            this.reloaded = ConfigState.fromStore(await this.store.load());
            continue;
          }
          // As the config API answers them: retry later (UNAVAILABLE) or retry the request (ABORTED).
          // The controller retries its decision at the next interval, on the state it then reads.
          if (err instanceof StoreUnavailableError) throw new ConnectError(err.message, Code.Unavailable, undefined, undefined, err);
          if (err instanceof StoreConflictError) throw new ConnectError(`${err.message}, on every attempt; retry`, Code.Aborted, undefined, undefined, err);
          throw err;
        }
      }
    };
    const p = this.chain.then(run, run);
    this.chain = p.catch(() => undefined);
    return p;
  }
}

/** The store mutation that writes a rollout (live figures and revision are not stored). */
export function rolloutMutation(r: Rollout): Mutation {
  return { op: "put", kind: "rollout", id: r.id, data: encodeMessage(RolloutSchema, { ...r, revision: 0n, lastAnalysis: undefined }) };
}

/**
 * The mutation that rewrites `current` as `desired` (validated and normalised as a user's rule
 * write would be), or undefined when it already routes that way. Throws ConfigError if the
 * desired rule is invalid.
 */
export function ruleMutation(current: Rule, desired: Rule): Mutation | undefined {
  const value = validateRule(desired).value;
  value.tenantId = current.tenantId;
  if (sameRouting(value, current)) return undefined;
  return { op: "put", kind: "rule", id: current.id, data: encodeMessage(RuleSchema, { ...value, revision: 0n }) };
}
