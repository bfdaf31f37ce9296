import { performance } from "node:perf_hooks";
import type { FleetHealth, FleetTarget } from "../../../proto/gen/gateway/v1/discovery_pb.js";
import type { CompiledBackend, CompiledConfig, CompiledTarget } from "../config/compile.js";
import type { ForwardOutcome } from "../proxy/forward.js";
import { ActiveProber, type ProbeDetail, type ProbeState, type ProbeTarget } from "./active.js";
import type { AdminState } from "./panic.js";
import { PassiveHealth, type PassiveDetail, type PassiveState } from "./passive.js";
import { buildPicker } from "./picker.js";
import { planPicker, targetEligible, targetHealthy, type PickerPlan, type PlanInput } from "./plan.js";

/**
 * The data plane's health layer: owns every backend's health state across snapshots and keeps each
 * backend's picker (CompiledBackend.balancer) in line with it.
 *
 * State is keyed by backend id and target key ("host:port"), never by the compiled objects, so a
 * snapshot that leaves a target unchanged keeps its circuit, probe verdict and slow-start ramp.
 * Signals, each from its own source:
 * - active probes (ActiveProber), for targets with an active check: all of them until the control
 *   plane's first FleetHealth, then only those it assigns to this node (see applyFleetHealth);
 *   disabled targets are never probed;
 * - passive health (one PassiveHealth per backend) from the proxy's attempts (observe());
 * - the fleet's verdict (FleetTarget.down) and fleet in-flight counts (into load.fleetInFlight);
 * - admin state and weight from the snapshot.
 * After every change the backend's picker is rebuilt from plan.ts's decision (priority failover,
 * panic, half-open gating, slow start) and swapped in whole: the request path only reads it.
 *
 * Timers: one wake-up for the earliest passive ejection end or slow-start step, and one for the
 * fleet view going stale; both unref'd, both cleared by close(), like the prober's.
 */

/** The single state shown for a target (metrics, logs): the first that applies, in this order. */
export type TargetState = "disabled" | "draining" | "ejected" | "unhealthy" | "half-open" | "healthy";

/** Every TargetState, for metrics that export one series per state. */
export const TARGET_STATES: readonly TargetState[] = ["healthy", "unhealthy", "ejected", "half-open", "draining", "disabled"];

/** The part of a pino Logger the manager uses. */
export interface HealthLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

/** What the manager needs of a prober (ActiveProber; a fake in tests). */
export interface Prober {
  setTargets(targets: readonly ProbeTarget[]): void;
  state(key: string): ProbeState | undefined;
  onChange(listener: (key: string, state: ProbeState, detail: ProbeDetail) => void): () => void;
  close(): Promise<void>;
}

/** Options of the manager. */
export interface HealthManagerOptions {
  /** Monotonic clock in ms (default performance.now()); tests pass a fake and call advance(). */
  readonly now?: () => number;
  /** Default: a new ActiveProber, closed with the manager. */
  readonly prober?: Prober;
  readonly log?: HealthLogger;
  /**
   * How long the fleet's verdicts and probe assignments outlive the control-plane connection.
   * Past it this node probes every actively checked target itself and forgets fleet verdicts, so a
   * control plane that stays away cannot leave targets out (or unprobed) forever. Default 30 s.
   */
  readonly fleetStaleMs?: number;
}

/** A state change, for reports (sent at once), metrics and tests. */
export interface HealthChange {
  readonly backend: string;
  /** Target key; undefined for a backend-wide change (panic, failover). */
  readonly target: string | undefined;
  readonly cause: "passive" | "probe" | "fleet" | "admin" | "panic" | "priority" | "slow-start";
}

/** A read-only view of one target's health, for reports and metrics. */
export interface TargetHealthView {
  readonly backend: string;
  readonly key: string;
  /** The target of the current snapshot (its load cells are current). */
  readonly target: CompiledTarget;
  readonly state: TargetState;
  readonly passive: PassiveState;
  /** This node's probe state; "unknown" when this node does not probe the target. */
  readonly probe: ProbeState;
  /** Whether this node probes the target itself. */
  readonly probedHere: boolean;
  readonly fleetDown: boolean;
  /** In the backend's current picker. */
  readonly inPicker: boolean;
  /** Passive ejections since the process started. */
  readonly ejections: number;
}

/** A read-only view of one backend. */
export interface BackendHealthView {
  readonly id: string;
  readonly backend: CompiledBackend;
  readonly panic: boolean;
  /** Priority group serving now (undefined: none). */
  readonly priority: number | undefined;
  readonly targets: readonly TargetHealthView[];
}

const DEFAULT_FLEET_STALE_MS = 30_000;

interface TargetRecord {
  readonly owner: BackendRecord;
  readonly key: string;
  /** `${backend}|${key}`: the prober's key, and FleetTarget's identity. */
  readonly fleetKey: string;
  target: CompiledTarget;
  /** This node's probe state; undefined when it does not probe the target. */
  probe: ProbeState | undefined;
  passive: PassiveState;
  fleetDown: boolean;
  fleetProbe: boolean;
  /** Eligible and not on trial at the last plan (slow start begins when this turns true). */
  healthy: boolean;
  rampStart: number | undefined;
  inPicker: boolean;
  state: TargetState;
  ejections: number;
  removed: boolean;
}

interface BackendRecord {
  readonly id: string;
  backend: CompiledBackend;
  readonly passive: PassiveHealth;
  readonly unsubscribe: () => void;
  targets: Map<string, TargetRecord>;
  /** Whether a plan was made before (targets joining later ramp up; the first ones do not). */
  planned: boolean;
  panic: boolean;
  priority: number | undefined;
  nextStepAt: number | undefined;
  /** The plan behind the installed picker, and the compiled backend it was installed on. */
  plan: PickerPlan<CompiledTarget> | undefined;
  plannedFor: CompiledBackend | undefined;
  removed: boolean;
}

/** Owns health across snapshots and rebuilds pickers (see the file comment). */
export class HealthManager {
  private readonly now: () => number;
  private readonly prober: Prober;
  private readonly ownsProber: boolean;
  private readonly log: HealthLogger | undefined;
  private readonly fleetStaleMs: number;
  private readonly backends = new Map<string, BackendRecord>();
  /** Compiled targets of every snapshot seen (old ones too, for requests still running) → record. */
  private byTarget = new WeakMap<CompiledTarget, TargetRecord>();
  private readonly byFleetKey = new Map<string, TargetRecord>();
  private fleet = new Map<string, FleetTarget>();
  /** A FleetHealth arrived (and has not gone stale): probe assignments are in force. */
  private fleetMode = false;
  /** Set by applyFleetTo when a target's probe assignment changed. */
  private assignmentChanged = false;
  private readonly listeners = new Set<(change: HealthChange) => void>();
  private readonly unsubscribeProber: () => void;
  private wake: NodeJS.Timeout | undefined;
  private wakeAt = Infinity;
  private staleTimer: NodeJS.Timeout | undefined;
  private closed = false;
  /** While sync() rebuilds its maps, passive events only record state; sync plans every backend after. */
  private syncing = false;

  constructor(opts: HealthManagerOptions = {}) {
    this.now = opts.now ?? (() => performance.now());
    this.ownsProber = opts.prober === undefined;
    this.prober = opts.prober ?? new ActiveProber();
    this.log = opts.log;
    this.fleetStaleMs = opts.fleetStaleMs ?? DEFAULT_FLEET_STALE_MS;
    this.unsubscribeProber = this.prober.onChange((key, state, detail) => this.onProbe(key, state, detail));
  }

  /** Subscribes to state changes; returns the unsubscribe function. */
  onChange(listener: (change: HealthChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Takes a newly applied configuration: carries state over by backend id and target key, starts
   * and stops probes, and installs every backend's picker. Call it synchronously after the swap
   * (LiveConfig.onApply), so no request sees the compiler's provisional picker for long.
   */
  sync(config: CompiledConfig): void {
    if (this.closed) return;
    this.syncing = true;
    let dirty: Set<BackendRecord>;
    try {
      dirty = this.syncBackends(config);
    } finally {
      this.syncing = false;
    }
    for (const b of this.syncProber()) dirty.add(b);
    // A backend carried over unchanged by the compiler keeps its picker (and its rotation position).
    for (const b of dirty) this.rebuild(b);
    this.rearm();
  }

  /** Updates the records; returns the backends whose compiled object or fleet view changed. */
  private syncBackends(config: CompiledConfig): Set<BackendRecord> {
    const dirty = new Set<BackendRecord>();
    const seen = new Set<string>();
    for (const backend of config.backends.values()) {
      seen.add(backend.id);
      let b = this.backends.get(backend.id);
      const passiveKeys = backend.targets.filter((t) => t.adminState === "enabled" && t.weight > 0).map((t) => t.key);
      if (b === undefined) {
        const passive = new PassiveHealth(backend.passive, passiveKeys, { now: this.now });
        const rec: BackendRecord = {
          id: backend.id,
          backend,
          passive,
          unsubscribe: () => undefined,
          targets: new Map(),
          planned: false,
          panic: false,
          priority: undefined,
          nextStepAt: undefined,
          plan: undefined,
          plannedFor: undefined,
          removed: false,
        };
        (rec as { unsubscribe: () => void }).unsubscribe = passive.onChange((key, state, detail) => this.onPassive(rec, key, state, detail));
        b = rec;
        this.backends.set(backend.id, b);
        dirty.add(b);
      } else {
        if (b.backend !== backend) dirty.add(b);
        b.backend = backend;
        b.passive.reconfigure(backend.passive);
        b.passive.setTargets(passiveKeys);
      }
      const next = new Map<string, TargetRecord>();
      for (const t of backend.targets) {
        let rec = b.targets.get(t.key);
        if (rec === undefined) {
          rec = {
            owner: b,
            key: t.key,
            fleetKey: `${backend.id}|${t.key}`,
            target: t,
            probe: undefined,
            passive: "healthy",
            fleetDown: false,
            fleetProbe: false,
            healthy: false,
            rampStart: undefined,
            inPicker: false,
            state: "healthy",
            ejections: 0,
            removed: false,
          };
          this.byFleetKey.set(rec.fleetKey, rec);
        } else if (rec.target.adminState !== t.adminState) {
          this.log?.info({ backend: backend.id, target: t.key, admin_state: t.adminState, previous: rec.target.adminState }, "target admin state changed");
          this.emit({ backend: backend.id, target: t.key, cause: "admin" });
        }
        rec.target = t;
        rec.passive = b.passive.state(t.key) ?? "healthy";
        next.set(t.key, rec);
        this.byTarget.set(t, rec);
        if (this.applyFleetTo(rec)) dirty.add(b);
      }
      for (const [key, rec] of b.targets) {
        if (!next.has(key)) {
          rec.removed = true;
          this.byFleetKey.delete(rec.fleetKey);
        }
      }
      b.targets = next;
    }
    for (const [id, b] of this.backends) {
      if (seen.has(id)) continue;
      b.removed = true;
      b.unsubscribe();
      for (const rec of b.targets.values()) {
        rec.removed = true;
        this.byFleetKey.delete(rec.fleetKey);
      }
      this.backends.delete(id);
    }
    return dirty;
  }

  /**
   * The proxy's outcome of one attempt (the handler's observe hook). Failures for passive health:
   * connect errors, resets, timeouts and the backend's failure statuses (held ones included); a
   * client that went away is nobody's failure and only gives back a half-open trial slot.
   */
  observe(target: CompiledTarget, outcome: ForwardOutcome): void {
    const rec = this.byTarget.get(target);
    if (rec === undefined || rec.removed) return;
    const b = rec.owner;
    if (outcome.errorClass === "aborted") {
      b.passive.release(rec.key);
      return;
    }
    const failed = outcome.errorClass !== undefined || b.backend.passive.failureStatuses.has(outcome.status);
    b.passive.onResult(rec.key, failed ? "failure" : "success");
  }

  /**
   * Applies a FleetHealth push. Each push is the control plane's complete view for this node and
   * replaces the previous one; a target it does not list is not down, has no fleet in-flight
   * requests and is not this node's to probe (the control plane leaves out targets with nothing to
   * say). Per target:
   * - `down`: the fleet sees it down, so it leaves the picker even without local evidence (except
   *   for the trial requests of a local half-open circuit, which let it come back);
   * - `in_flight`: the fleet's in-flight count, into load.fleetInFlight (least-connections);
   * - `probe`: probe assignment. From the first push on, this node probes only the targets whose
   *   `probe` is set; the others' probe verdicts come from the probers through `down`. Before the
   *   first push (and after the view goes stale) it probes every actively checked target itself.
   */
  applyFleetHealth(health: FleetHealth): void {
    if (this.closed) return;
    const entering = !this.fleetMode;
    if (entering) this.log?.info({ targets: health.targets.length }, "fleet health received: probing only the targets assigned to this node");
    this.fleetMode = true;
    this.fleet = new Map(health.targets.map((t) => [`${t.backend}|${t.target}`, t]));
    this.reapplyFleet(entering);
  }

  /**
   * Control-plane connection state (DiscoveryClient's onState). The fleet view is kept while the
   * connection is back within fleetStaleMs, and dropped after that (see the option).
   */
  setControlPlaneConnected(connected: boolean): void {
    if (this.closed) return;
    if (connected) {
      if (this.staleTimer !== undefined) clearTimeout(this.staleTimer);
      this.staleTimer = undefined;
      return;
    }
    if (this.staleTimer !== undefined || !this.fleetMode) return;
    this.staleTimer = setTimeout(() => {
      this.staleTimer = undefined;
      this.dropFleetView();
    }, this.fleetStaleMs);
    this.staleTimer.unref();
  }

  /** Forgets the fleet's verdicts and assignments now (what the stale timer does). */
  dropFleetView(): void {
    if (this.closed || !this.fleetMode) return;
    this.log?.warn({ after_ms: this.fleetStaleMs }, "fleet health view dropped: probing every actively checked target locally");
    this.fleetMode = false;
    this.fleet = new Map();
    this.reapplyFleet(true);
  }

  /**
   * Processes what is due now: expired ejections become half-open, slow-start weights step. The
   * manager's own timer calls it; tests on a fake clock call it after moving the clock.
   */
  advance(): void {
    if (this.closed) return;
    const now = this.now();
    for (const b of this.backends.values()) {
      b.passive.advance(now); // emits half-open changes, which rebuild
      if (b.nextStepAt !== undefined && now >= b.nextStepAt) this.rebuild(b);
    }
    this.rearm();
  }

  /** Every backend with its targets, for reports and metrics. */
  *view(): IterableIterator<BackendHealthView> {
    for (const b of this.backends.values()) {
      yield {
        id: b.id,
        backend: b.backend,
        panic: b.panic,
        priority: b.priority,
        targets: [...b.targets.values()].map((r) => this.targetView(r)),
      };
    }
  }

  /** One target's view, or undefined for an unknown backend or key. */
  target(backendId: string, key: string): TargetHealthView | undefined {
    const rec = this.backends.get(backendId)?.targets.get(key);
    return rec === undefined ? undefined : this.targetView(rec);
  }

  /** Stops probing and clears every timer; the pickers in place keep serving as they are. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.wake !== undefined) clearTimeout(this.wake);
    if (this.staleTimer !== undefined) clearTimeout(this.staleTimer);
    this.wake = undefined;
    this.staleTimer = undefined;
    for (const b of this.backends.values()) b.unsubscribe();
    this.unsubscribeProber();
    this.listeners.clear();
    if (this.ownsProber) await this.prober.close();
  }

  // ---- signals ----

  private onPassive(b: BackendRecord, key: string, state: PassiveState, detail: PassiveDetail): void {
    if (this.closed || b.removed) return;
    const rec = b.targets.get(key);
    if (rec === undefined) return;
    const previous = rec.passive;
    rec.passive = state;
    if (state === "ejected") rec.ejections++;
    const fields: Record<string, unknown> = { backend: b.id, target: key, state, previous, reason: detail.reason, ejections: detail.ejections };
    if (detail.until !== undefined) fields.ejected_for_ms = Math.max(0, Math.round(detail.until - this.now()));
    if (state === "ejected") this.log?.warn(fields, "passive health state changed");
    else this.log?.info(fields, "passive health state changed");
    this.rebuild(b);
    this.emit({ backend: b.id, target: key, cause: "passive" });
    this.rearm();
  }

  private onProbe(fleetKey: string, state: ProbeState, detail: ProbeDetail): void {
    if (this.closed) return;
    const rec = this.byFleetKey.get(fleetKey);
    if (rec === undefined || rec.removed) return;
    const previous = rec.probe ?? "unknown";
    rec.probe = state;
    const fields: Record<string, unknown> = { backend: rec.owner.id, target: rec.key, state, previous, reason: detail.reason, consecutive: detail.consecutive };
    if (detail.status !== undefined) fields.status = detail.status;
    if (detail.code !== undefined) fields.code = detail.code;
    if (state === "unhealthy") this.log?.warn(fields, "probe state changed");
    else this.log?.info(fields, "probe state changed");
    this.rebuild(rec.owner);
    this.emit({ backend: rec.owner.id, target: rec.key, cause: "probe" });
    this.rearm();
  }

  /** Applies the fleet view to every target; `modeChanged` when assignment mode switched on or off. */
  private reapplyFleet(modeChanged: boolean): void {
    const dirty = new Set<BackendRecord>();
    this.assignmentChanged = modeChanged;
    for (const b of this.backends.values()) {
      for (const rec of b.targets.values()) if (this.applyFleetTo(rec)) dirty.add(rec.owner);
    }
    // Pushes come about every second under load (in-flight counts move); the prober is only told
    // when what this node probes changed.
    if (this.assignmentChanged) for (const b of this.syncProber()) dirty.add(b);
    for (const b of dirty) this.rebuild(b);
    this.rearm();
  }

  /**
   * Copies the fleet view onto one target; true when its verdict changed (a changed assignment
   * matters only through the probe states, which syncProber compares).
   */
  private applyFleetTo(rec: TargetRecord): boolean {
    const ft = this.fleet.get(rec.fleetKey);
    rec.target.load.fleetInFlight = ft?.inFlight ?? 0;
    const down = ft?.down ?? false;
    const probe = ft?.probe ?? false;
    const changed = down !== rec.fleetDown;
    if (probe !== rec.fleetProbe) this.assignmentChanged = true;
    if (changed) {
      const fields = { backend: rec.owner.id, target: rec.key, down };
      if (down) this.log?.warn(fields, "fleet verdict changed");
      else this.log?.info(fields, "fleet verdict changed");
      this.emit({ backend: rec.owner.id, target: rec.key, cause: "fleet" });
    }
    rec.fleetDown = down;
    rec.fleetProbe = probe;
    return changed;
  }

  /** Hands the prober the targets this node probes; returns the backends whose probe states changed. */
  private syncProber(): Set<BackendRecord> {
    const targets: ProbeTarget[] = [];
    const probed = new Set<TargetRecord>();
    for (const b of this.backends.values()) {
      for (const rec of b.targets.values()) {
        const t = rec.target;
        if (t.activeCheck === undefined || t.adminState === "disabled") continue;
        if (this.fleetMode && !rec.fleetProbe) continue;
        probed.add(rec);
        targets.push({
          key: rec.fleetKey,
          host: t.hostname,
          port: t.port,
          scheme: t.origin.startsWith("https:") ? "https" : "http",
          check: t.activeCheck,
        });
      }
    }
    this.prober.setTargets(targets);
    const changed = new Set<BackendRecord>();
    for (const b of this.backends.values()) {
      for (const rec of b.targets.values()) {
        const next = probed.has(rec) ? (this.prober.state(rec.fleetKey) ?? "unknown") : undefined;
        if (next !== rec.probe) {
          rec.probe = next;
          changed.add(b);
        }
      }
    }
    return changed;
  }

  // ---- pickers ----

  /** Plans the backend from its signals and installs a new picker (see plan.ts). */
  private rebuild(b: BackendRecord): void {
    if (b.removed || this.syncing) return;
    const now = this.now();
    const backend = b.backend;
    const inputs: PlanInput<CompiledTarget>[] = [];
    for (const t of backend.targets) {
      const rec = b.targets.get(t.key)!;
      const signals = {
        key: t.key,
        admin: t.adminState as AdminState,
        weight: t.weight,
        priority: t.priority,
        // Not probed here: the probe verdict is the fleet's (carried by fleetDown).
        probe: rec.probe,
        passive: rec.passive,
        fleetDown: rec.fleetDown,
      };
      const healthy = targetHealthy(signals);
      if (healthy && !rec.healthy && b.planned && backend.passive.slowStartMs > 0) rec.rampStart = now;
      if (!healthy) rec.rampStart = undefined;
      if (rec.rampStart !== undefined && now - rec.rampStart >= backend.passive.slowStartMs) {
        rec.rampStart = undefined;
        this.log?.info({ backend: b.id, target: t.key }, "slow start finished");
        this.emit({ backend: b.id, target: t.key, cause: "slow-start" });
      }
      rec.healthy = healthy;
      inputs.push({ ...signals, target: t, rampStart: rec.rampStart });
    }
    const plan = planPicker(inputs, {
      panicThresholdPercent: 100 - backend.passive.maxEjectionPercent,
      // A consistent-hash ring must not move while a target ramps.
      slowStartMs: backend.algorithm === "consistent-hash" ? 0 : backend.passive.slowStartMs,
      now,
    });
    // A signal that changes nothing (a first probe confirming "unknown" as "healthy", a fleet push
    // with only new load figures) keeps the picker, so its rotation does not restart.
    if (b.plannedFor !== backend || b.plan === undefined || !samePlan(b.plan, plan)) {
      backend.balancer = buildPicker(backend.algorithm, plan, b.passive);
      b.plan = plan;
      b.plannedFor = backend;
    }

    const inPicker = new Set(plan.targets);
    for (const input of inputs) {
      const rec = b.targets.get(input.key)!;
      rec.inPicker = inPicker.has(input.target);
      // Weight 0 is a routing choice, not health: a standby's state says whether it could serve.
      const state = stateOf(input, targetEligible({ ...input, weight: 1 }));
      if (state !== rec.state) {
        const fields = { backend: b.id, target: rec.key, state, previous: rec.state, in_picker: rec.inPicker };
        if (state === "healthy" || state === "half-open") this.log?.info(fields, "target state changed");
        else this.log?.warn(fields, "target state changed");
        rec.state = state;
      }
    }
    if (b.planned && plan.panic !== b.panic) {
      const fields = { backend: b.id, panic: plan.panic, eligible: plan.eligibleCount, usable: plan.usableCount, priority: plan.priority };
      if (plan.panic) this.log?.warn(fields, "panic mode: too few healthy targets, serving every enabled target of the group");
      else this.log?.info(fields, "panic mode ended");
      this.emit({ backend: b.id, target: undefined, cause: "panic" });
    }
    if (b.planned && plan.priority !== b.priority) {
      this.log?.warn({ backend: b.id, priority: plan.priority ?? null, previous: b.priority ?? null }, "priority group changed");
      this.emit({ backend: b.id, target: undefined, cause: "priority" });
    }
    b.panic = plan.panic;
    b.priority = plan.priority;
    b.nextStepAt = plan.nextStepAt;
    b.planned = true;
  }

  // ---- timers ----

  /** Arms the single wake-up at the earliest ejection end or slow-start step. */
  private rearm(): void {
    if (this.closed) return;
    let at = Infinity;
    for (const b of this.backends.values()) {
      const d = b.passive.nextDeadline();
      if (d !== undefined && d < at) at = d;
      if (b.nextStepAt !== undefined && b.nextStepAt < at) at = b.nextStepAt;
    }
    if (at === this.wakeAt && this.wake !== undefined) return;
    if (this.wake !== undefined) clearTimeout(this.wake);
    this.wake = undefined;
    this.wakeAt = at;
    if (at === Infinity) return;
    // +1: a timer may fire a hair early on the clock's scale; advance() would then find nothing due.
    this.wake = setTimeout(() => {
      this.wake = undefined;
      this.wakeAt = Infinity;
      this.advance();
    }, Math.max(0, Math.ceil(at - this.now())) + 1);
    this.wake.unref();
  }

  private targetView(rec: TargetRecord): TargetHealthView {
    return {
      backend: rec.owner.id,
      key: rec.key,
      target: rec.target,
      state: rec.state,
      passive: rec.passive,
      probe: rec.probe ?? "unknown",
      probedHere: rec.probe !== undefined,
      fleetDown: rec.fleetDown,
      inPicker: rec.inPicker,
      ejections: rec.ejections,
    };
  }

  private emit(change: HealthChange): void {
    for (const l of this.listeners) {
      try {
        l(change);
      } catch (err) {
        process.emitWarning(`health change listener threw: ${String(err)}`, "GatewayHealthWarning");
      }
    }
  }
}

/** Whether two plans build the same picker. */
function samePlan<T>(a: PickerPlan<T>, b: PickerPlan<T>): boolean {
  if (a.targets.length !== b.targets.length || a.panic !== b.panic) return false;
  for (let i = 0; i < a.targets.length; i++) if (a.targets[i] !== b.targets[i]) return false;
  if ((a.fractions === undefined) !== (b.fractions === undefined)) return false;
  if (a.fractions !== undefined && b.fractions !== undefined) {
    for (let i = 0; i < a.fractions.length; i++) if (a.fractions[i] !== b.fractions[i]) return false;
  }
  if (a.halfOpen.size !== b.halfOpen.size) return false;
  for (const k of a.halfOpen) if (!b.halfOpen.has(k)) return false;
  return true;
}

function stateOf(t: PlanInput<unknown>, eligible: boolean): TargetState {
  if (t.admin === "disabled") return "disabled";
  if (t.admin === "draining") return "draining";
  if (t.passive === "ejected") return "ejected";
  if (!eligible) return "unhealthy";
  if (t.passive === "half-open") return "half-open";
  return "healthy";
}
