import type { PassiveHealthCheck } from "../../../proto/gen/gateway/v1/upstream_pb.js";
import { ConfigError } from "../config/errors.js";

/**
 * Passive health (outlier detection / circuit breaking) from the outcomes of real requests, as
 * Envoy's outlier detection with a half-open step. Like grpc-js's outlier-detection policy it only
 * says which targets may be used; it never touches the balancing algorithm. It owns no timer: every
 * method takes the current time (from an injectable clock), and the owner arms one timer for
 * nextDeadline() and calls advance() then, so tests run on a fake clock and never sleep.
 */

/** Circuit state of one target. */
export type PassiveState = "healthy" | "ejected" | "half-open";

/** What the proxy learnt from one request to a target. */
export type Outcome = "success" | "failure";

/** A PassiveHealthCheck with defaults applied and validated, so PassiveHealth trusts it. */
export interface ResolvedPassiveCheck {
  /** Consecutive failures that eject; 0 means passive ejection is off. */
  readonly consecutiveFailures: number;
  readonly failureStatuses: ReadonlySet<number>;
  readonly baseEjectionMs: number;
  readonly maxEjectionMs: number;
  readonly maxEjectionPercent: number;
  readonly halfOpenRequests: number;
  /** 0 means no slow start (see slow-start.ts). */
  readonly slowStartMs: number;
}

/** Documented defaults of PassiveHealthCheck (proto/gateway/v1/upstream.proto). */
export const PASSIVE_CHECK_DEFAULTS = {
  consecutiveFailures: 5,
  failureStatuses: [502, 503, 504],
  baseEjectionMs: 30_000,
  maxEjectionMs: 300_000,
  maxEjectionPercent: 50,
  halfOpenRequests: 1,
  slowStartMs: 0,
} as const;

/** Longest ejection or slow-start window: keeps the owner's deadlines valid setTimeout values. */
export const MAX_EJECTION_MS = 86_400_000;

const DEFAULT_FAILURE_STATUSES: ReadonlySet<number> = new Set(PASSIVE_CHECK_DEFAULTS.failureStatuses);

/**
 * Applies the documented defaults (proto3 zero values mean "unset") and validates, throwing a
 * ConfigError that names the field under `field`. Shared by both planes so they refuse the same config.
 *
 * consecutive_failures is the one field whose zero is not "unset": the contract says "Default 5;
 * 0 disables passive ejection", and proto3 cannot tell the two apart, so an absent message gets 5
 * and a present message with 0 turns ejection off.
 */
export function resolvePassiveCheck(cfg?: PassiveHealthCheck, field = "health_check.passive"): ResolvedPassiveCheck {
  const consecutiveFailures = cfg === undefined ? PASSIVE_CHECK_DEFAULTS.consecutiveFailures : cfg.consecutiveFailures;
  checkInt(consecutiveFailures, 0, 1000, `${field}.consecutive_failures`);
  let failureStatuses = DEFAULT_FAILURE_STATUSES;
  if (cfg !== undefined && cfg.failureStatuses.length > 0) {
    cfg.failureStatuses.forEach((s, i) => {
      if (!Number.isInteger(s) || s < 100 || s > 599) {
        throw new ConfigError(`${field}.failure_statuses[${i}]`, `must be an HTTP status from 100 to 599, got ${s}`);
      }
    });
    failureStatuses = new Set(cfg.failureStatuses);
  }
  const baseEjectionMs = cfg?.baseEjectionMs || PASSIVE_CHECK_DEFAULTS.baseEjectionMs;
  checkInt(baseEjectionMs, 1, MAX_EJECTION_MS, `${field}.base_ejection_ms`);
  const maxEjectionMs = cfg?.maxEjectionMs || PASSIVE_CHECK_DEFAULTS.maxEjectionMs;
  checkInt(maxEjectionMs, 1, MAX_EJECTION_MS, `${field}.max_ejection_ms`);
  if (baseEjectionMs > maxEjectionMs) {
    throw new ConfigError(`${field}.base_ejection_ms`, `must not exceed max_ejection_ms (${maxEjectionMs}), got ${baseEjectionMs}`);
  }
  const maxEjectionPercent = cfg?.maxEjectionPercent || PASSIVE_CHECK_DEFAULTS.maxEjectionPercent;
  checkInt(maxEjectionPercent, 0, 100, `${field}.max_ejection_percent`);
  const halfOpenRequests = cfg?.halfOpenRequests || PASSIVE_CHECK_DEFAULTS.halfOpenRequests;
  checkInt(halfOpenRequests, 1, 1000, `${field}.half_open_requests`);
  const slowStartMs = cfg?.slowStartMs ?? PASSIVE_CHECK_DEFAULTS.slowStartMs;
  checkInt(slowStartMs, 0, MAX_EJECTION_MS, `${field}.slow_start_ms`);
  return { consecutiveFailures, failureStatuses, baseEjectionMs, maxEjectionMs, maxEjectionPercent, halfOpenRequests, slowStartMs };
}

function checkInt(n: number, min: number, max: number, field: string): void {
  if (!Number.isInteger(n) || n < min || n > max) throw new ConfigError(field, `must be an integer from ${min} to ${max}, got ${n}`);
}

/**
 * Whether a response status counts as a failed request for passive health, so the proxy classifies
 * with the same list the upstream configured (default 502, 503, 504).
 */
export function isFailureStatus(status: number, failureStatuses: ReadonlySet<number> = DEFAULT_FAILURE_STATUSES): boolean {
  return failureStatuses.has(status);
}

/** Why a target changed state, for logs and the fleet view. */
export interface PassiveDetail {
  readonly reason: "consecutive-failures" | "ejection-expired" | "half-open-success" | "half-open-failure";
  /** Consecutive ejections so far (the ejection-time multiplier, after any reset). */
  readonly ejections: number;
  /** End of the ejection (clock time) when the new state is "ejected". */
  readonly until?: number;
}

/** Listener of circuit-state transitions; called only when the state actually changes. */
export type PassiveChangeListener = (key: string, state: PassiveState, detail: PassiveDetail) => void;

/** Clock injection, so the owner and tests share one notion of time. */
export interface PassiveHealthOptions {
  /** Milliseconds on any monotonic scale. Default performance.now(). */
  now?: () => number;
}

interface Slot {
  state: PassiveState;
  /** Consecutive failures while healthy. */
  failures: number;
  /** Consecutive ejections, before decay. */
  ejections: number;
  ejectedUntil: number;
  /** When the circuit last closed; decay counts from here. */
  healthySince: number;
  /** Half-open requests admitted and not yet resolved. */
  admitted: number;
}

/**
 * Circuit breaking for the targets of one backend. The n-th consecutive ejection lasts
 * n × base_ejection_ms (at most max_ejection_ms), so a flapping target stays out longer each time;
 * the multiplier goes back to zero once a target has stayed healthy for a whole max_ejection_ms
 * (Envoy decrements it gradually instead; one reset is simpler to reason about and to test).
 */
export class PassiveHealth {
  private readonly slots = new Map<string, Slot>();
  private readonly listeners = new Set<PassiveChangeListener>();
  private readonly clock: () => number;
  private check: ResolvedPassiveCheck;
  /**
   * No ejection ends before this (clock time): advance() returns at once until then, so the
   * per-request calls (onResult, tryAcquire) cost a comparison, not a walk over every target.
   * May be early (a forgotten key), never late.
   */
  private earliestEnd = Infinity;

  /**
   * `keys` are the targets of the backend the ejection percentage is measured against (pass the ones
   * that can take traffic: draining and disabled targets would dilute the share).
   */
  constructor(check: ResolvedPassiveCheck, keys: Iterable<string> = [], options: PassiveHealthOptions = {}) {
    this.check = check;
    this.clock = options.now ?? (() => performance.now());
    this.setTargets(keys);
  }

  /** Replaces the tracked keys: kept keys keep their circuit, new ones start healthy, removed ones are forgotten. */
  setTargets(keys: Iterable<string>): void {
    const next = new Set(keys);
    for (const key of this.slots.keys()) if (!next.has(key)) this.slots.delete(key);
    const now = this.clock();
    for (const key of next) {
      if (!this.slots.has(key)) {
        this.slots.set(key, { state: "healthy", failures: 0, ejections: 0, ejectedUntil: 0, healthySince: now, admitted: 0 });
      }
    }
  }

  /** Applies a new config from a snapshot without forgetting circuits; running ejections keep their end. */
  reconfigure(check: ResolvedPassiveCheck): void {
    this.check = check;
  }

  /** Whether this backend's config counts the status as a failure. */
  isFailureStatus(status: number): boolean {
    return this.check.failureStatuses.has(status);
  }

  /**
   * Records one request's outcome. Results for unknown keys (a target removed while the request ran)
   * and for ejected targets (requests that started before the ejection) are ignored: the decision
   * they would inform is already taken.
   */
  onResult(key: string, outcome: Outcome, now = this.clock()): void {
    this.advance(now);
    const s = this.slots.get(key);
    if (s === undefined || s.state === "ejected") return;
    if (s.state === "half-open") {
      s.admitted = 0;
      if (outcome === "success") {
        s.state = "healthy";
        s.failures = 0;
        s.healthySince = now;
        this.emit(key, "healthy", { reason: "half-open-success", ejections: s.ejections });
      } else {
        // Already counted as out for the percentage, so a re-ejection is never refused.
        this.eject(key, s, now, s.ejections, "half-open-failure");
      }
      return;
    }
    if (outcome === "success") {
      s.failures = 0;
      return;
    }
    s.failures++;
    const threshold = this.check.consecutiveFailures;
    if (threshold === 0 || s.failures < threshold) return;
    // Past the percentage the target stays in with its count kept, so the next failure retries
    // as soon as another target has come back (Envoy refuses the same way).
    if (!this.roomToEject()) return;
    // A target that stayed healthy for a whole max_ejection_ms has earned a fresh start.
    const previous = now - s.healthySince >= this.check.maxEjectionMs ? 0 : s.ejections;
    this.eject(key, s, now, previous, "consecutive-failures");
  }

  /**
   * Asks to send one request to the target now. Healthy: always yes. Ejected: no. Half-open: yes for
   * at most half_open_requests requests until one of them reports, so a recovering target is tried
   * with a trickle, not the full load. A yes in half-open must be followed by onResult or release.
   */
  tryAcquire(key: string, now = this.clock()): boolean {
    this.advance(now);
    const s = this.slots.get(key);
    if (s === undefined || s.state === "healthy") return true;
    if (s.state === "ejected" || s.admitted >= this.check.halfOpenRequests) return false;
    s.admitted++;
    return true;
  }

  /** Returns an unused half-open admission (the request went elsewhere or was cancelled before it was sent). */
  release(key: string): void {
    const s = this.slots.get(key);
    if (s !== undefined && s.state === "half-open" && s.admitted > 0) s.admitted--;
  }

  /** Circuit state at `now`, undefined for unknown keys. */
  state(key: string, now = this.clock()): PassiveState | undefined {
    this.advance(now);
    return this.slots.get(key)?.state;
  }

  /** Whether the target belongs in the eligible set at `now` (not ejected); unknown keys have no evidence against them. */
  available(key: string, now = this.clock()): boolean {
    return this.state(key, now) !== "ejected";
  }

  /** Every tracked key with its state, for the periodic report to the control plane. */
  states(now = this.clock()): Map<string, PassiveState> {
    this.advance(now);
    return new Map([...this.slots].map(([k, s]) => [k, s.state]));
  }

  /** Earliest end of a running ejection (clock time), for the owner's single timer; undefined if none. */
  nextDeadline(): number | undefined {
    let next: number | undefined;
    for (const s of this.slots.values()) {
      if (s.state === "ejected" && (next === undefined || s.ejectedUntil < next)) next = s.ejectedUntil;
    }
    return next;
  }

  /** Moves expired ejections to half-open (emitting the changes); every other method calls it first. */
  advance(now = this.clock()): void {
    if (now < this.earliestEnd) return;
    let earliest = Infinity;
    const expired: string[] = [];
    for (const [key, s] of this.slots) {
      if (s.state !== "ejected") continue;
      if (now >= s.ejectedUntil) {
        s.state = "half-open";
        s.admitted = 0;
        expired.push(key);
      } else if (s.ejectedUntil < earliest) earliest = s.ejectedUntil;
    }
    this.earliestEnd = earliest;
    // Emitted after the walk, so a listener that calls back in sees consistent bookkeeping.
    for (const key of expired) {
      const s = this.slots.get(key);
      if (s !== undefined && s.state === "half-open") this.emit(key, "half-open", { reason: "ejection-expired", ejections: s.ejections });
    }
  }

  /** Subscribes to state transitions; returns the unsubscribe function. */
  onChange(listener: PassiveChangeListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  // Half-open targets count as out: they are not trusted yet and take only a trickle.
  private roomToEject(): boolean {
    let out = 0;
    for (const s of this.slots.values()) if (s.state !== "healthy") out++;
    return (out + 1) * 100 <= this.check.maxEjectionPercent * this.slots.size;
  }

  private eject(key: string, s: Slot, now: number, previous: number, reason: PassiveDetail["reason"]): void {
    s.ejections = previous + 1;
    s.state = "ejected";
    s.failures = 0;
    s.admitted = 0;
    s.ejectedUntil = now + Math.min(this.check.baseEjectionMs * s.ejections, this.check.maxEjectionMs);
    if (s.ejectedUntil < this.earliestEnd) this.earliestEnd = s.ejectedUntil;
    this.emit(key, "ejected", { reason, ejections: s.ejections, until: s.ejectedUntil });
  }

  private emit(key: string, state: PassiveState, detail: PassiveDetail): void {
    for (const l of this.listeners) {
      try {
        l(key, state, detail);
      } catch (err) {
        // A faulty listener must not corrupt the circuit bookkeeping or starve the other listeners.
        process.emitWarning(`passive health listener threw: ${String(err)}`, "GatewayHealthWarning");
      }
    }
  }
}
