import { Code, ConnectError } from "@connectrpc/connect";
import type { Rollout, RolloutAnalysisResult } from "../../../proto/gen/gateway/v1/rollout_pb.js";
import { ConfigError } from "../../../data-plane/src/config/errors.js";
import type { ConfigState } from "../config/state.js";
import type { Mutation } from "../store/store.js";
import { analyse } from "./analysis.js";
import { isActive, refusal, type RolloutAction } from "./lifecycle.js";
import type { RolloutMetrics } from "./metrics.js";
import { desiredRule } from "./traffic.js";
import * as t from "./transitions.js";
import { checkDrivable, DEFAULT_INTERVAL_MS } from "./validate.js";
import { rolloutMutation, ruleMutation, type RolloutWriter } from "./writer.js";

/**
 * The rollout controller: one loop per control plane that drives every active rollout.
 *
 * Every analysis interval (per rollout) it reads the fleet's figures for the canary and the stable
 * upstream over the step's window and decides:
 * - a threshold crossed → roll back to 100% stable at once (paused rollouts too: pausing stops
 *   advancing, never protection);
 * - too few canary requests → hold (noted once per step when the hold time has passed);
 * - the hold time passed and the analysis passes → the next step, or promotion after the last.
 *
 * Everything it knows is in the store: state, step, step start, events. A control plane that
 * restarts builds a new controller that continues where the old one stopped (hold times count from
 * the stored step start; only the live analysis figures are rebuilt from new reports). Each
 * decision is committed together with the rule weights it implies (see writer.ts).
 *
 * The controller also guards its rule: a rule deleted or pointed at another upstream aborts the
 * rollout; a split edited outside the rollout is put back to the step's weights; a rule write the
 * configuration refuses is recorded (rule_out_of_sync) and retried every interval.
 */

/** Reads and follows the configuration (ConfigApi satisfies it). */
export interface ConfigSource {
  current(): ConfigState;
  onChange(listener: (state: ConfigState) => void): () => void;
}

/** Where transitions are logged (a pino logger satisfies it). */
export interface RolloutLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

/** Options of a controller. */
export interface RolloutControllerOptions {
  /** Clock, Unix ms. Injected by tests. */
  readonly now?: () => number;
  readonly log?: RolloutLog;
}

/** A rule change refused by the configuration, while the decision must still be recorded. */
class RuleRefused {
  constructor(readonly error: ConfigError) {}
}

const SILENT: RolloutLog = { info: () => undefined, warn: () => undefined };

export class RolloutController {
  private readonly now: () => number;
  private readonly log: RolloutLog;
  /** Latest analysis per rollout id (not stored). */
  private readonly analyses = new Map<string, RolloutAnalysisResult>();
  /** When each rollout is next analysed. */
  private readonly due = new Map<string, number>();
  private readonly listeners = new Set<(rolloutId: string) => void>();
  private timer: NodeJS.Timeout | undefined;
  private unsubscribe: (() => void) | undefined;
  private ticking: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(
    private readonly config: ConfigSource,
    private readonly writer: RolloutWriter,
    private readonly metrics: RolloutMetrics,
    opts: RolloutControllerOptions = {},
  ) {
    this.now = opts.now ?? Date.now;
    this.log = opts.log ?? SILENT;
  }

  /** Starts the loop: wakes when a rollout is due, and at once when the configuration changes. */
  start(): void {
    if (this.closed || this.unsubscribe !== undefined) return;
    this.unsubscribe = this.config.onChange(() => this.schedule());
    this.schedule();
  }

  /** Stops the loop and waits for the round in progress to finish its writes. */
  async close(): Promise<void> {
    this.closed = true;
    this.unsubscribe?.();
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.listeners.clear();
    await this.ticking;
  }

  /** The latest analysis of a rollout, if one ran since this control plane started. */
  lastAnalysis(rolloutId: string): RolloutAnalysisResult | undefined {
    return this.analyses.get(rolloutId);
  }

  /** Calls `listener` with a rollout's id after each new analysis of it. */
  onAnalysis(listener: (rolloutId: string) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Analyses a rollout at the next round instead of waiting for its interval. */
  kick(rolloutId: string): void {
    this.due.delete(rolloutId);
    this.schedule();
  }

  /**
   * One round: every active rollout whose interval is due (new ones at once) is analysed and
   * its decision committed. Rounds never overlap; the promise resolves when this one's writes are
   * durable. Tests call it directly with a fake clock.
   */
  tick(): Promise<void> {
    const run = () => this.round();
    const p = this.ticking.then(run, run);
    this.ticking = p.catch(() => undefined);
    return p;
  }

  /** An operator action (pause, resume, promote, abort), committed with the rule change it implies. */
  async act(rolloutId: string, action: RolloutAction, actor: t.Actor, reason: string, revision: bigint): Promise<Rollout> {
    const out = await this.transition(rolloutId, (ro) => {
      if (revision !== 0n && revision !== ro.revision) {
        throw new ConnectError(
          `revision: rollout ${ro.id} was changed since revision ${revision} (now ${ro.revision}); read it again`,
          Code.FailedPrecondition,
        );
      }
      const refused = refusal(action, ro.state);
      if (refused !== undefined) throw new ConnectError(refused, Code.FailedPrecondition);
      const now = this.now();
      const why = reason !== "" ? reason : `${action} requested by ${actor}`;
      switch (action) {
        case "pause":
          return t.paused(ro, now, actor, why);
        case "resume":
          return t.resumed(ro, now, actor, why);
        case "promote":
          return t.promoted(ro, now, actor, why, this.analyses.get(ro.id));
        case "abort":
          return t.aborted(ro, now, actor, why);
      }
    });
    this.kick(rolloutId);
    return out!;
  }

  // ---- the loop ----

  private schedule(): void {
    if (this.closed) return;
    const s = this.config.current();
    const now = this.now();
    let wake = Infinity;
    for (const ro of s.rollouts.values()) {
      if (!isActive(ro.state) && !ro.ruleOutOfSync) {
        this.due.delete(ro.id);
        this.analyses.delete(ro.id);
        continue;
      }
      wake = Math.min(wake, this.due.get(ro.id) ?? now);
    }
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    if (wake === Infinity) return;
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        this.tick().then(
          () => this.schedule(),
          (err: unknown) => {
            this.log.warn({ err: err instanceof Error ? err.message : String(err) }, "rollout analysis round failed; retrying");
            this.schedule();
          },
        );
      },
      Math.max(0, wake - now),
    );
  }

  private async round(): Promise<void> {
    if (this.closed) return;
    for (const ro of [...this.writer.state().rollouts.values()]) {
      if (this.closed) return;
      if (!isActive(ro.state) && !ro.ruleOutOfSync) continue;
      const now = this.now();
      if ((this.due.get(ro.id) ?? -Infinity) > now) continue;
      this.due.set(ro.id, now + (ro.analysis?.intervalMs || DEFAULT_INTERVAL_MS));
      try {
        await this.evaluate(ro.id, ro.revision);
      } catch (err) {
        // One rollout's trouble (a store error) must not stall the others; it is retried next interval.
        this.log.warn({ rollout: ro.id, err: err instanceof Error ? err.message : String(err) }, "rollout analysis failed");
      }
    }
  }

  /** Analyses one rollout as stored at `revision` and commits what follows. */
  private async evaluate(id: string, revision: bigint): Promise<void> {
    const s = this.writer.state();
    const ro = s.rollouts.get(id);
    if (ro === undefined || ro.revision !== revision) return;
    const now = this.now();
    const stale = (r: Rollout) => r.revision !== revision;

    const rule = s.rules.get(ro.ruleId);
    if (!isActive(ro.state)) {
      // A final rollout whose rule write was refused: try again.
      await this.transition(id, (r) => (stale(r) ? undefined : t.resynced(r, now, "the rule now matches the rollout's final state")), "resync");
      return;
    }
    const gone =
      rule === undefined || rule.tenantId !== ro.tenantId
        ? `rule ${ro.ruleId} was deleted`
        : rule.upstreamId !== ro.stableUpstreamId
          ? `rule ${ro.ruleId} was pointed at upstream ${rule.upstreamId || "(inline targets)"} outside the rollout (stable is ${ro.stableUpstreamId})`
          : !s.upstreams.has(ro.canaryUpstreamId)
            ? `canary upstream ${ro.canaryUpstreamId} was deleted`
            : undefined;
    if (gone !== undefined) {
      await this.transition(id, (r) => (stale(r) ? undefined : t.aborted(r, now, t.CONTROLLER, gone)));
      return;
    }
    if (ro.state === "pending") {
      // The rule may have changed since the rollout was accepted (a split added): check again.
      const refused = stillDrivable(s, ro);
      if (refused !== undefined) await this.transition(id, (r) => (stale(r) ? undefined : t.aborted(r, now, t.CONTROLLER, `cannot start: ${refused}`)));
      else await this.transition(id, (r) => (stale(r) ? undefined : t.started(r, now)));
      return;
    }
    if (ro.stepStartedAtMs === 0n) return; // paused before its first step: nothing applied, nothing to judge
    if (ro.ruleOutOfSync || drifted(s, ro)) {
      const why = ro.ruleOutOfSync ? "the rule now carries the step's weights" : "the rule's split was changed outside the rollout: the step's weights are restored";
      await this.transition(id, (r) => (stale(r) ? undefined : t.resynced(r, now, why)), "resync");
      return;
    }

    const a = ro.analysis!;
    const elapsed = Math.max(0, now - Number(ro.stepStartedAtMs));
    const windowMs = Math.max(1, a.windowMs > 0 ? Math.min(a.windowMs, elapsed) : elapsed);
    const canary = this.metrics.backendStats(ro.canaryUpstreamId, windowMs).total;
    const stable = this.metrics.backendStats(ro.stableUpstreamId, windowMs).total;
    const result = analyse(canary, stable, a, windowMs, now);
    this.analyses.set(id, result);
    for (const l of this.listeners) l(id);

    const step = ro.steps[ro.currentStep];
    const holdOver = elapsed >= step.holdMs;
    if (result.verdict === "fail") {
      await this.transition(id, (r) => (stale(r) ? undefined : t.rolledBack(r, now, result)));
    } else if (ro.state === "paused") {
      return;
    } else if (result.verdict === "hold") {
      if (holdOver && !t.heldThisStep(ro)) await this.transition(id, (r) => (stale(r) ? undefined : t.held(r, now, result)));
    } else if (holdOver) {
      await this.transition(id, (r) => (stale(r) ? undefined : t.advanced(r, now, result)));
    }
  }

  /**
   * Commits `make`'s next rollout together with the rule it implies. When the configuration
   * refuses the rule, the decision is still committed (with rule_out_of_sync and an event) and the
   * rule is retried every interval: a rollback decision is never lost.
   */
  private async transition(id: string, make: (ro: Rollout) => Rollout | undefined, kind: "decision" | "resync" = "decision"): Promise<Rollout | undefined> {
    let out: Rollout | undefined;
    try {
      out = await this.writer.write((s) => this.plan(s, id, make, kind, undefined));
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      out = await this.writer.write((s) => this.plan(s, id, make, kind, new RuleRefused(err)));
    }
    if (out !== undefined) this.logTransition(out);
    return out;
  }

  private plan(s: ConfigState, id: string, make: (ro: Rollout) => Rollout | undefined, kind: "decision" | "resync", refused: RuleRefused | undefined) {
    const ro = s.rollouts.get(id);
    if (ro === undefined || ro.tenantId === "") throw new ConnectError(`rollout ${id} not found`, Code.NotFound);
    let next = make(ro);
    if (next === undefined) return undefined;
    const mutations: Mutation[] = [];
    if (refused !== undefined) {
      // A failed retry is not news: record the first failure only.
      if (kind === "resync") {
        if (ro.ruleOutOfSync) return undefined;
        next = ro;
      }
      next = t.syncFailed(next, this.now(), refused.error.message);
    } else {
      const m = ruleMutationFor(s, next);
      if (m !== undefined) mutations.push(m);
    }
    mutations.push(rolloutMutation(next));
    return { mutations, result: (st: ConfigState) => st.rollouts.get(id) };
  }

  private logTransition(r: Rollout): void {
    const e = r.events[r.events.length - 1];
    if (e === undefined) return;
    const fields = {
      rollout: r.id,
      tenant: r.tenantId,
      rule: r.ruleId,
      state: r.state,
      step: r.currentStep,
      weight: r.currentWeight,
      revision: String(r.revision),
      actor: e.actor,
      reason: e.reason,
    };
    if (e.type === "rolled_back" || e.type === "rule_sync_failed") this.log.warn(fields, `rollout ${e.type}`);
    else this.log.info(fields, `rollout ${e.type}`);
  }
}

/** Why the rollout can no longer drive its rule, or undefined when it can. */
function stillDrivable(s: ConfigState, r: Rollout): string | undefined {
  try {
    checkDrivable(s, r.tenantId, r);
    return undefined;
  } catch (err) {
    if (err instanceof ConnectError) return err.rawMessage;
    throw err;
  }
}

/** Whether the rule no longer carries what the rollout's state implies (or cannot be made to). */
function drifted(s: ConfigState, r: Rollout): boolean {
  try {
    return ruleMutationFor(s, r) !== undefined;
  } catch (err) {
    if (err instanceof ConfigError) return true;
    throw err;
  }
}

/** The mutation that brings the rollout's rule in line with its state, or undefined (in line, or no rule). */
function ruleMutationFor(s: ConfigState, r: Rollout): Mutation | undefined {
  const rule = s.rules.get(r.ruleId);
  if (rule === undefined || rule.tenantId !== r.tenantId) return undefined;
  // Once the rule routes elsewhere than stable (promoted earlier, or changed by an operator), an
  // unfinished rollout no longer owns it; only its own promotion points it at the canary.
  if (rule.upstreamId !== r.stableUpstreamId && !(r.state === "promoted" && rule.upstreamId === r.canaryUpstreamId)) return undefined;
  // A rollout that never applied a step has nothing to undo: ending it leaves the rule as it is.
  if (r.stepStartedAtMs === 0n && r.state !== "promoted") return undefined;
  return ruleMutation(rule, desiredRule(rule, r));
}
