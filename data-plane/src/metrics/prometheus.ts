import { collectDefaultMetrics, Registry, type Metric } from "prom-client";
import { TARGET_STATES, type HealthManager } from "../health/manager.js";
import { LATENCY_BUCKETS, powerOfTwoBucket, type LatencyHistogram } from "../report/latency.js";
import { ERROR_CLASSES, STATUS_CLASSES, type TrafficStats } from "../report/stats.js";

/**
 * The data plane's Prometheus metrics (prom-client's registry and text format).
 *
 * Nothing is observed through prom-client on the request path: its observe()/inc() hash a label
 * set per call. The proxy bumps plain numbers (report/stats.ts, health/manager.ts) and the families
 * here read them when scraped. Label values come only from the configuration (rule ids, backend
 * ids, "host:port"), never from requests, so the number of series is bounded by the configuration:
 * per rule a few counters and one histogram, per backend target a few counters, gauges and one
 * histogram; series of removed rules and targets disappear with them.
 *
 * Families (all prefixed gateway_):
 *   requests_total{rule,code}                     requests by the status class the client got
 *                                                 (code 1xx-5xx; "none": the client left first);
 *                                                 rule "" for requests no rule matched
 *   request_duration_seconds{rule}                histogram, arrival to end of response, retries included
 *   upstream_requests_total{backend,target,code}  attempts by the target's status class ("none": no answer)
 *   upstream_errors_total{backend,target,error}   attempts that failed: connect_refused, connect_timeout,
 *                                                 reset, headers_timeout, body_timeout, dns, aborted, other
 *   upstream_failures_total{backend,target}       attempts counted as failures by passive health
 *   upstream_request_duration_seconds{backend,target}  histogram per attempt
 *   upstream_in_flight{backend,target}            attempts in flight on this node
 *   upstream_fleet_in_flight{backend,target}      in flight across the fleet (control plane's figure)
 *   upstream_retries_total{backend}               attempts after the first
 *   target_state{backend,target,state}            1 for the target's state, 0 for the others
 *                                                 (healthy, unhealthy, ejected, half-open, draining, disabled)
 *   target_routable{backend,target}               1 when in the backend's current picker
 *   target_ejections_total{backend,target}        passive ejections
 *   backend_panic{backend}                        1 while the backend serves in panic mode
 *   backend_priority{backend}                     priority group serving now (-1: none)
 *   control_plane_connected                       1 while the discovery stream is up
 *   control_plane_last_contact_seconds            seconds since the last message from the control plane
 *   config_version                                configuration version applied
 *   config_snapshots_total{result}                snapshots applied / refused
 * plus prom-client's default process and Node.js metrics (CPU, memory, event-loop lag, GC).
 */

/** What the metrics read besides traffic and health. */
export interface MetricsSources {
  readonly health: HealthManager;
  readonly stats: TrafficStats;
  readonly configVersion: () => bigint;
  readonly controlPlane: () => { connected: boolean; lastContactMs: number };
  readonly snapshots: { readonly applied: number; readonly refused: number };
  /** Whether fleet-wide counters (Redis) are unavailable and picks fall back to random weighted. */
  readonly countersFallback?: () => boolean;
}

/** Prometheus `le` bounds: 2^k ms for k from −1 to 16 (0.5 ms to 65.5 s), plus +Inf. */
const LE_POWERS = Array.from({ length: 18 }, (_, i) => i - 1);
const LE_LABELS = LE_POWERS.map((k) => String(2 ** k / 1000));
const LE_BUCKETS = LE_POWERS.map(powerOfTwoBucket);

type Labels = Readonly<Record<string, string>>;
type Value = { value: number; labels: Labels; metricName?: string };

/** A family read at scrape time, in the shape prom-client's Registry serialises. */
class CollectedMetric {
  readonly aggregator = "sum";

  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: "counter" | "gauge" | "histogram",
    private readonly collect: () => Value[],
  ) {}

  async get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: Value[] }> {
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values: this.collect() };
  }
}

function histogramValues(name: string, h: LatencyHistogram, labels: Labels, out: Value[]): void {
  let cumulative = 0;
  let bucket = 0;
  for (let b = 0; b < LE_BUCKETS.length; b++) {
    for (; bucket <= LE_BUCKETS[b] && bucket < LATENCY_BUCKETS; bucket++) cumulative += h.counts[bucket];
    out.push({ metricName: `${name}_bucket`, labels: { ...labels, le: LE_LABELS[b] }, value: cumulative });
  }
  out.push({ metricName: `${name}_bucket`, labels: { ...labels, le: "+Inf" }, value: h.count });
  out.push({ metricName: `${name}_sum`, labels, value: h.sum / 1000 });
  out.push({ metricName: `${name}_count`, labels, value: h.count });
}

/** Builds the registry over the sources. */
export function createMetricsRegistry(src: MetricsSources, opts: { defaultMetrics?: boolean } = {}): Registry {
  const registry = new Registry();
  const add = (name: string, help: string, type: "counter" | "gauge" | "histogram", collect: () => Value[]) =>
    registry.registerMetric(new CollectedMetric(name, help, type, collect) as unknown as Metric);

  add("gateway_requests_total", "Requests by rule and the status class the client got", "counter", () => {
    const out: Value[] = [];
    for (const r of src.stats.routes()) {
      STATUS_CLASSES.forEach((code, i) => {
        if (r.statuses[i] > 0 || i === 2) out.push({ labels: { ...r.labels, code }, value: r.statuses[i] });
      });
    }
    return out;
  });
  add("gateway_request_duration_seconds", "Request duration by rule, retries included", "histogram", () => {
    const out: Value[] = [];
    for (const r of src.stats.routes()) histogramValues("gateway_request_duration_seconds", r.latency, r.labels, out);
    return out;
  });
  add("gateway_upstream_requests_total", "Attempts per backend target by the target's status class", "counter", () => {
    const out: Value[] = [];
    for (const t of src.stats.targets()) {
      STATUS_CLASSES.forEach((code, i) => {
        if (t.statuses[i] > 0 || i === 2) out.push({ labels: { ...t.labels, code }, value: t.statuses[i] });
      });
    }
    return out;
  });
  add("gateway_upstream_errors_total", "Failed attempts per backend target by error class", "counter", () => {
    const out: Value[] = [];
    for (const t of src.stats.targets()) {
      ERROR_CLASSES.forEach((error, i) => {
        if (t.errors[i] > 0) out.push({ labels: { ...t.labels, error }, value: t.errors[i] });
      });
    }
    return out;
  });
  add("gateway_upstream_failures_total", "Attempts counted as failures by passive health", "counter", () =>
    [...src.stats.targets()].map((t) => ({ labels: t.labels, value: t.failures })),
  );
  add("gateway_upstream_request_duration_seconds", "Attempt duration per backend target", "histogram", () => {
    const out: Value[] = [];
    for (const t of src.stats.targets()) histogramValues("gateway_upstream_request_duration_seconds", t.latency, t.labels, out);
    return out;
  });
  add("gateway_upstream_retries_total", "Attempts after the first, per backend", "counter", () =>
    [...src.stats.backends()].map((b) => ({ labels: b.labels, value: b.retries })),
  );

  const perTarget = (value: (t: ReturnType<typeof targetsOf>[number]) => number) => () =>
    targetsOf(src.health).map((t) => ({ labels: { backend: t.backend, target: t.key }, value: value(t) }));
  add("gateway_upstream_in_flight", "Attempts in flight on this data plane", "gauge", perTarget((t) => t.target.load.inFlight));
  add("gateway_upstream_fleet_in_flight", "Requests in flight across the fleet, as the control plane last reported", "gauge", perTarget((t) => t.target.load.fleetInFlight));
  add("gateway_target_routable", "1 when the target is in its backend's current picker", "gauge", perTarget((t) => (t.inPicker ? 1 : 0)));
  add("gateway_target_ejections_total", "Passive-health ejections of the target", "counter", perTarget((t) => t.ejections));
  add("gateway_target_state", "1 for the target's current state", "gauge", () => {
    const out: Value[] = [];
    for (const t of targetsOf(src.health)) {
      for (const state of TARGET_STATES) out.push({ labels: { backend: t.backend, target: t.key, state }, value: t.state === state ? 1 : 0 });
    }
    return out;
  });
  add("gateway_backend_panic", "1 while the backend serves in panic mode", "gauge", () =>
    [...src.health.view()].map((b) => ({ labels: { backend: b.id }, value: b.panic ? 1 : 0 })),
  );
  add("gateway_backend_priority", "Priority group serving now (-1: none)", "gauge", () =>
    [...src.health.view()].map((b) => ({ labels: { backend: b.id }, value: b.priority ?? -1 })),
  );
  add("gateway_control_plane_connected", "1 while the discovery stream to the control plane is up", "gauge", () => [
    { labels: {}, value: src.controlPlane().connected ? 1 : 0 },
  ]);
  add("gateway_control_plane_last_contact_seconds", "Seconds since the last message from the control plane (-1: never)", "gauge", () => {
    const last = src.controlPlane().lastContactMs;
    return [{ labels: {}, value: last === 0 ? -1 : Math.max(0, (Date.now() - last) / 1000) }];
  });
  add("gateway_config_version", "Configuration version applied", "gauge", () => [{ labels: {}, value: Number(src.configVersion()) }]);
  add("gateway_counters_fallback", "1 while fleet-wide counters (Redis) are unavailable and picks are random weighted", "gauge", () => [
    { labels: {}, value: src.countersFallback?.() ? 1 : 0 },
  ]);
  add("gateway_config_snapshots_total", "Snapshots applied and refused", "counter", () => [
    { labels: { result: "applied" }, value: src.snapshots.applied },
    { labels: { result: "refused" }, value: src.snapshots.refused },
  ]);
  if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: registry });
  return registry;
}

function targetsOf(health: HealthManager) {
  const out = [];
  for (const b of health.view()) out.push(...b.targets);
  return out;
}
