import type { CompiledBackend, CompiledConfig, CompiledRoute, CompiledTarget } from "../config/compile.js";
import type { ErrorClass } from "../proxy/errors.js";
import type { ForwardOutcome } from "../proxy/forward.js";
import { LatencyHistogram } from "./latency.js";

/**
 * Traffic counters of a data plane, per target (every attempt) and per rule (every request), kept
 * across snapshots by backend id + target key and by rule id, so a snapshot that does not touch a
 * target does not reset its numbers. Two readers: the report to the control plane (differences
 * since the previous report) and the Prometheus endpoint (cumulative). Updating costs a WeakMap
 * lookup and a few additions per attempt; the label sets readers need are built once per entry.
 */

/** Every ErrorClass, in the order of TargetTraffic.errors. */
export const ERROR_CLASSES: readonly ErrorClass[] = [
  "connect_refused",
  "connect_timeout",
  "reset",
  "headers_timeout",
  "body_timeout",
  "dns",
  "aborted",
  "other",
];
const ERROR_INDEX = new Map<ErrorClass, number>(ERROR_CLASSES.map((c, i) => [c, i]));

/** Status classes of StatusCounts: index 0 = no status (failed before an answer), 1-5 = 1xx-5xx. */
export const STATUS_CLASSES: readonly string[] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

function statusIndex(status: number, hasAnswer: boolean): number {
  if (!hasAnswer) return 0;
  const c = (status / 100) | 0;
  return c >= 1 && c <= 5 ? c : 0;
}

/** Cumulative numbers of one backend target (all attempts to it). */
export class TargetTraffic {
  /** Attempts completed. */
  requests = 0;
  /** Attempts that failed for passive health (errors other than client aborts, failure statuses). */
  failures = 0;
  /** Attempts by the target's status class (STATUS_CLASSES). */
  readonly statuses = new Float64Array(STATUS_CLASSES.length);
  /** Attempts by ErrorClass (ERROR_CLASSES). */
  readonly errors = new Float64Array(ERROR_CLASSES.length);
  readonly latency = new LatencyHistogram();
  /** requests / failures at the last report. */
  reportedRequests = 0;
  reportedFailures = 0;
  /** { backend, target } for metrics, built once. */
  readonly labels: Readonly<Record<string, string>>;

  constructor(
    readonly backend: string,
    readonly key: string,
  ) {
    this.labels = { backend, target: key };
  }
}

/** Cumulative numbers of one rule (every request that matched it, once, whatever the attempts). */
export class RouteTraffic {
  /** Requests by the status the client got (STATUS_CLASSES; "none": the client left first). */
  readonly statuses = new Float64Array(STATUS_CLASSES.length);
  readonly latency = new LatencyHistogram();
  readonly labels: Readonly<Record<string, string>>;

  constructor(readonly rule: string) {
    this.labels = { rule };
  }
}

/** Cumulative numbers of one backend. */
export class BackendTraffic {
  /** Attempts after the first, over all requests. */
  retries = 0;
  readonly labels: Readonly<Record<string, string>>;

  constructor(readonly backend: string) {
    this.labels = { backend };
  }
}

/** Rule id used for requests that matched no rule (404, 405, no configuration yet). */
export const NO_RULE = "";

/** The data plane's traffic counters (see the file comment). */
export class TrafficStats {
  private readonly targetsByKey = new Map<string, TargetTraffic>();
  private byTarget = new WeakMap<CompiledTarget, TargetTraffic>();
  private readonly routesById = new Map<string, RouteTraffic>();
  private byRoute = new WeakMap<CompiledRoute, RouteTraffic>();
  private readonly backendsById = new Map<string, BackendTraffic>();
  private byBackend = new WeakMap<CompiledBackend, BackendTraffic>();
  private readonly unmatched = new RouteTraffic(NO_RULE);

  /**
   * Takes a newly applied configuration: entries of targets, rules and backends still present are
   * kept (their compiled objects of the new snapshot map to them), the others are dropped, so the
   * metrics' series follow the configuration and stay bounded by it.
   */
  sync(config: CompiledConfig): void {
    const targets = new Set<string>();
    const backends = new Set<string>();
    for (const b of config.backends.values()) {
      backends.add(b.id);
      let bt = this.backendsById.get(b.id);
      if (bt === undefined) this.backendsById.set(b.id, (bt = new BackendTraffic(b.id)));
      this.byBackend.set(b, bt);
      for (const t of b.targets) {
        const id = `${b.id}|${t.key}`;
        targets.add(id);
        let tt = this.targetsByKey.get(id);
        if (tt === undefined) this.targetsByKey.set(id, (tt = new TargetTraffic(b.id, t.key)));
        this.byTarget.set(t, tt);
      }
    }
    const rules = new Set<string>();
    for (const r of config.routes) {
      rules.add(r.ruleId);
      let rt = this.routesById.get(r.ruleId);
      if (rt === undefined) this.routesById.set(r.ruleId, (rt = new RouteTraffic(r.ruleId)));
      this.byRoute.set(r, rt);
    }
    for (const id of this.targetsByKey.keys()) if (!targets.has(id)) this.targetsByKey.delete(id);
    for (const id of this.backendsById.keys()) if (!backends.has(id)) this.backendsById.delete(id);
    for (const id of this.routesById.keys()) if (!rules.has(id)) this.routesById.delete(id);
  }

  /** One attempt's outcome (the handler's observe hook). */
  attempt(backend: CompiledBackend, target: CompiledTarget, outcome: ForwardOutcome): void {
    const tt = this.byTarget.get(target);
    if (tt === undefined) return;
    tt.requests++;
    const cls = outcome.errorClass;
    // An answer exists when the target sent headers (held or relayed), even if the body was cut later.
    const answered = cls === undefined || outcome.responseStarted;
    tt.statuses[statusIndex(outcome.status, answered)]++;
    if (cls !== undefined) tt.errors[ERROR_INDEX.get(cls) ?? ERROR_CLASSES.length - 1]++;
    if ((cls !== undefined && cls !== "aborted") || (answered && backend.passive.failureStatuses.has(outcome.status))) tt.failures++;
    tt.latency.record(outcome.durationMs);
  }

  /** One finished request (the handler's onDone hook); `durationMs` from arrival to the end. */
  request(route: CompiledRoute | undefined, backend: CompiledBackend | undefined, status: number, attempts: number, durationMs: number): void {
    const rt = route === undefined ? this.unmatched : (this.byRoute.get(route) ?? this.unmatched);
    // 499: the client left; nothing was answered.
    rt.statuses[status === 499 ? 0 : statusIndex(status, true)]++;
    rt.latency.record(durationMs);
    if (attempts > 1 && backend !== undefined) {
      const bt = this.byBackend.get(backend);
      if (bt !== undefined) bt.retries += attempts - 1;
    }
  }

  /** Counters of one target, undefined when it is not in the configuration. */
  target(backendId: string, key: string): TargetTraffic | undefined {
    return this.targetsByKey.get(`${backendId}|${key}`);
  }

  targets(): IterableIterator<TargetTraffic> {
    return this.targetsByKey.values();
  }

  /** Rules of the configuration, then the "no rule" entry. */
  *routes(): IterableIterator<RouteTraffic> {
    yield* this.routesById.values();
    yield this.unmatched;
  }

  backends(): IterableIterator<BackendTraffic> {
    return this.backendsById.values();
  }
}
