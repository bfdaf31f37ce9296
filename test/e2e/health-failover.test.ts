/**
 * Health checking end to end, with a real control plane, a real data-plane process and real targets:
 * passive ejection of a killed target under load with retries hiding it from clients, retryable
 * statuses, active checks taking a failing target out and back (ramping up with slow start),
 * draining, panic mode, priority failover, and the metrics, /healthz and access log that show it.
 *
 * Nothing here waits on time: every step waits for the event that proves it (a log line of the data
 * plane, a metric, an acknowledged version) with a generous cap that only bounds a failure.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GatewayApi, type TenantCreds } from "../support/api.js";
import { httpRequest } from "../support/http.js";
import { startControlPlane, type ControlPlane, type DataPlane } from "../support/processes.js";
import { teardown } from "../support/teardown.js";
import { sendRequests, TrafficLoop } from "../support/traffic.js";
import { waitFor } from "../support/wait.js";
import { scrape, series, startObservedDataPlane, startSwitchTarget, sumSeries, waitForMetrics, type SwitchTarget } from "./health-support.js";

let cp: ControlPlane;
let api: GatewayApi;
let dp: DataPlane;
let metricsUrl: string;
let tenant: TenantCreds;
const NODE = "health-dp-1";

beforeAll(async () => {
  cp = await startControlPlane();
  api = GatewayApi.of(cp);
  ({ dp, metricsUrl } = await startObservedDataPlane({ controlPlane: cp.url, nodeId: NODE, token: cp.nodeToken, reportIntervalMs: 500, accessLog: "info" }));
  tenant = await api.createTenant("health");
});

afterAll(teardown);

/** Creates an upstream and a rule `/<prefix>/*` on it; resolves when the data plane serves both. */
async function route(prefix: string, upstream: Record<string, unknown>): Promise<{ id: string; path: string }> {
  const up = await api.mustCreateUpstream(tenant, { name: prefix, ...upstream });
  const rule = await api.mustCreateRule(tenant, { path: `/${prefix}/*`, upstream_id: up.id, methods: ["GET", "POST", "PUT"], strip_path: true });
  await api.waitForAcked(rule.revision, [NODE]);
  return { id: up.id, path: `/${prefix}/x` };
}

const hostsOf = (...ts: SwitchTarget[]) => ts.map((t) => ({ host: "127.0.0.1", port: t.target.port }));

/** The data plane's log record for a target's state change (msg, target key and fields). */
function waitForTargetLog(msg: string, key: string, fields: Record<string, unknown>, since: number) {
  return dp.proc.waitForLog((r) => r.msg === msg && r.target === key && Object.entries(fields).every(([k, v]) => r[k] === v), {
    since,
    what: `"${msg}" for ${key} with ${JSON.stringify(fields)}`,
    timeoutMs: 20_000,
  });
}

describe("passive health and retries", () => {
  it("a target killed under steady GET load: no client sees an error, and it is out after consecutive_failures attempts", async () => {
    const [a, b, c] = await Promise.all([startSwitchTarget("kill-a"), startSwitchTarget("kill-b"), startSwitchTarget("kill-c")]);
    const threshold = 3;
    const { id, path } = await route("kill", {
      targets: hostsOf(a, b, c),
      health_check: { passive: { consecutive_failures: threshold, base_ejection_ms: 300_000 } },
      retries: { count: 2 },
    });
    // Four concurrent clients, each one request at a time.
    const loops = Array.from({ length: 4 }, () => new TrafficLoop([dp.url], { path }));
    await Promise.all(loops.map((l) => l.waitForMore(40)));
    const mark = dp.proc.mark();
    await b.target.close();
    await waitForTargetLog("passive health state changed", b.key, { state: "ejected", backend: id }, mark);
    await Promise.all(loops.map((l) => l.waitForMore(40)));
    const results = await Promise.all(loops.map((l) => l.stop()));

    expect(results.flatMap((r) => r.failures)).toEqual([]);
    const byTarget: Record<string, number> = {};
    for (const r of results) for (const [k, v] of Object.entries(r.byTarget)) byTarget[k] = (byTarget[k] ?? 0) + v;
    expect(byTarget["kill-a"]).toBeGreaterThan(40);
    expect(byTarget["kill-c"]).toBeGreaterThan(40);

    const m = await scrape(metricsUrl);
    // Failed attempts to the dead target: the threshold, plus at most one per other concurrent client
    // whose attempt was already on its way when the circuit opened. Each was retried elsewhere.
    const failed = series(m, "gateway_upstream_failures_total", { backend: id, target: b.key })!;
    expect(failed).toBeGreaterThanOrEqual(threshold);
    expect(failed).toBeLessThanOrEqual(threshold + loops.length - 1);
    expect(sumSeries(m, "gateway_upstream_retries_total", { backend: id })).toBeGreaterThanOrEqual(failed);
    expect(series(m, "gateway_target_state", { backend: id, target: b.key, state: "ejected" })).toBe(1);
    expect(series(m, "gateway_target_routable", { backend: id, target: b.key })).toBe(0);
    expect(series(m, "gateway_target_ejections_total", { backend: id, target: b.key })).toBe(1);

    // Out of rotation: more traffic never tries it again (its ejection lasts minutes here).
    const after = await sendRequests(dp.url, 30, { path });
    expect(after.failures).toEqual([]);
    expect(after.byTarget).toEqual({ "kill-a": 15, "kill-c": 15 });
    const m2 = await scrape(metricsUrl);
    expect(series(m2, "gateway_upstream_failures_total", { backend: id, target: b.key })).toBe(failed);
  });

  it("retries a retryable status on another target instead of relaying it (GET; POST with retry_non_idempotent)", async () => {
    const [good, busy] = await Promise.all([startSwitchTarget("st-good"), startSwitchTarget("st-busy", 503)]);
    const { id, path } = await route("status", {
      targets: hostsOf(good, busy),
      health_check: { passive: { consecutive_failures: 0 } },
      retries: { count: 1, statuses: [503], retry_non_idempotent: true },
    });
    const r = await sendRequests(dp.url, 20, { path });
    expect(r.failures).toEqual([]);
    expect(r.byTarget).toEqual({ "st-good": 20 });
    // A retry takes the next turn of the rotation, so after the first request every first attempt
    // lands on the busy target (passive ejection is off here) and is retried on the good one.
    const busyGets = busy.target.requests.length;
    expect(busyGets).toBeGreaterThanOrEqual(10);

    good.target.clear();
    for (let i = 0; i < 4; i++) {
      const res = await httpRequest(`${dp.url}${path}`, { method: "POST", body: { n: i } });
      expect(res.status).toBe(200);
    }
    // Every POST that went to the busy target first was replayed, with its body, on the good one.
    expect(good.target.requests.map((q) => q.body)).toEqual([0, 1, 2, 3].map((n) => JSON.stringify({ n })));
    const busyPosts = busy.target.requests.slice(busyGets);
    expect(busyPosts.length).toBeGreaterThan(0);
    expect(busyPosts.every((q) => q.method === "POST" && /^\{"n":\d\}$/.test(q.body))).toBe(true);
    const m = await scrape(metricsUrl);
    // Exactly one retry per request the busy target answered.
    expect(series(m, "gateway_upstream_retries_total", { backend: id })).toBe(busy.target.requests.length);
  });

  it("relays the target's own answer when every attempt gets a retryable status", async () => {
    const [x, y] = await Promise.all([startSwitchTarget("all-busy-x", 503), startSwitchTarget("all-busy-y", 503)]);
    const { path } = await route("allbusy", {
      targets: hostsOf(x, y),
      health_check: { passive: { consecutive_failures: 0 } },
      retries: { count: 1 },
    });
    const res = await httpRequest(`${dp.url}${path}`);
    expect(res.status).toBe(503);
    expect(["all-busy-x", "all-busy-y"]).toContain(res.headers["x-target"]);
    expect(x.target.requests.length + y.target.requests.length).toBe(2);
  });
});

describe("active health checks", () => {
  it("takes a target answering 500 out after unhealthy_threshold probes and brings it back ramping up (slow start)", async () => {
    const [a, b] = await Promise.all([startSwitchTarget("act-a"), startSwitchTarget("act-b")]);
    const { id, path } = await route("active", {
      targets: hostsOf(a, b),
      health_check: {
        active: { path: "/health", interval_ms: 200, timeout_ms: 150, unhealthy_threshold: 2, healthy_threshold: 2 },
        passive: { consecutive_failures: 0, slow_start_ms: 3_000 },
      },
    });
    const first = await sendRequests(dp.url, 10, { path });
    expect(first.byTarget).toEqual({ "act-a": 5, "act-b": 5 });

    let mark = dp.proc.mark();
    b.setStatus(500);
    const out = await waitForTargetLog("probe state changed", b.key, { state: "unhealthy" }, mark);
    // Out after exactly unhealthy_threshold failed probes, i.e. within interval × threshold.
    expect(out).toMatchObject({ status: 500, consecutive: 2, backend: id });
    const during = await sendRequests(dp.url, 10, { path });
    expect(during.byTarget).toEqual({ "act-a": 10 });

    mark = dp.proc.mark();
    b.setStatus(200);
    const back = await waitForTargetLog("probe state changed", b.key, { state: "healthy" }, mark);
    expect(back.consecutive).toBe(2);
    // Ramping: well under its even share right after recovery (it starts at 10% of its weight).
    const ramp = await sendRequests(dp.url, 20, { path });
    expect(ramp.failures).toEqual([]);
    expect(ramp.byTarget["act-b"] ?? 0).toBeGreaterThan(0);
    expect(ramp.byTarget["act-b"] ?? 0).toBeLessThan(10);
    await waitForTargetLog("slow start finished", b.key, {}, mark);
    const full = await sendRequests(dp.url, 20, { path });
    expect(full.byTarget).toEqual({ "act-a": 10, "act-b": 10 });
  });

  it("panic: when every target fails its checks, they all keep serving (their own answers, not 503 for everything)", async () => {
    const [a, b] = await Promise.all([startSwitchTarget("panic-a"), startSwitchTarget("panic-b")]);
    const { id, path } = await route("panic", {
      targets: hostsOf(a, b),
      health_check: { active: { path: "/health", interval_ms: 200, timeout_ms: 150, unhealthy_threshold: 2 }, passive: { consecutive_failures: 0 } },
    });
    const mark = dp.proc.mark();
    a.setStatus(500);
    b.setStatus(500);
    await dp.proc.waitForLog((r) => typeof r.msg === "string" && r.msg.startsWith("panic mode:") && r.backend === id, { since: mark, what: "panic mode", timeoutMs: 20_000 });
    const r = await sendRequests(dp.url, 10, { path });
    expect(r.statuses).toEqual({ 500: 10 });
    expect(r.byTarget).toEqual({ "panic-a": 5, "panic-b": 5 });
    const m = await scrape(metricsUrl);
    expect(series(m, "gateway_backend_panic", { backend: id })).toBe(1);
    expect(series(m, "gateway_target_state", { backend: id, target: a.key, state: "unhealthy" })).toBe(1);

    a.setStatus(200);
    await dp.proc.waitForMsg("panic mode ended", { backend: id }, { since: mark, timeoutMs: 20_000 });
    const after = await sendRequests(dp.url, 10, { path });
    expect(after.byTarget).toEqual({ "panic-a": 10 });
  });

  it("fails over to the next priority group when the best one is down, and back when it recovers", async () => {
    const [p0, p1a, p1b] = await Promise.all([startSwitchTarget("prio-0"), startSwitchTarget("prio-1a"), startSwitchTarget("prio-1b")]);
    const { id, path } = await route("prio", {
      targets: [
        { host: "127.0.0.1", port: p0.target.port, priority: 0 },
        { host: "127.0.0.1", port: p1a.target.port, priority: 1 },
        { host: "127.0.0.1", port: p1b.target.port, priority: 1 },
      ],
      health_check: { active: { path: "/health", interval_ms: 200, timeout_ms: 150, unhealthy_threshold: 2, healthy_threshold: 1 }, passive: { consecutive_failures: 0 } },
    });
    expect((await sendRequests(dp.url, 6, { path })).byTarget).toEqual({ "prio-0": 6 });
    let mark = dp.proc.mark();
    p0.setStatus(500);
    await dp.proc.waitForMsg("priority group changed", { backend: id, priority: 1 }, { since: mark, timeoutMs: 20_000 });
    expect((await sendRequests(dp.url, 6, { path })).byTarget).toEqual({ "prio-1a": 3, "prio-1b": 3 });
    expect(series(await scrape(metricsUrl), "gateway_backend_priority", { backend: id })).toBe(1);
    mark = dp.proc.mark();
    p0.setStatus(200);
    await dp.proc.waitForMsg("priority group changed", { backend: id, priority: 0 }, { since: mark, timeoutMs: 20_000 });
    expect((await sendRequests(dp.url, 6, { path })).byTarget).toEqual({ "prio-0": 6 });
  });
});

describe("draining", () => {
  it("lets a slow in-flight request finish while new requests go elsewhere, and its in-flight count falls to 0", async () => {
    const [a, b] = await Promise.all([startSwitchTarget("drain-a"), startSwitchTarget("drain-b")]);
    const { id } = await route("drain", { targets: hostsOf(a, b) });
    // The slow request lands on one of them; that one is drained.
    const slow = httpRequest(`${dp.url}/drain/slow`);
    await waitFor(() => a.slowWaiting() + b.slowWaiting() === 1, { what: "the slow request to reach a target" });
    const [busy, other] = a.slowWaiting() === 1 ? [a, b] : [b, a];
    await waitForMetrics(metricsUrl, (m) => series(m, "gateway_upstream_in_flight", { backend: id, target: busy.key }) === 1, { what: "in-flight 1" });

    const res = await api.call("PUT", `/api/v1/tenants/${tenant.id}/upstreams/${id}/targets/${busy.key}/state`, { key: tenant.apiKey, body: { admin_state: "draining" } });
    expect(res.status).toBe(200);
    await api.waitForAcked(res.json.revision, [NODE]);
    const during = await sendRequests(dp.url, 10, { path: "/drain/x" });
    expect(during.failures).toEqual([]);
    expect(during.byTarget).toEqual({ [other.target.name]: 10 });
    const m = await scrape(metricsUrl);
    expect(series(m, "gateway_target_state", { backend: id, target: busy.key, state: "draining" })).toBe(1);
    expect(series(m, "gateway_upstream_in_flight", { backend: id, target: busy.key })).toBe(1);
    // The control plane's fleet view shows the draining target's in-flight request.
    const fleetInFlight = async () => {
      const h = await api.call("GET", `/api/v1/tenants/${tenant.id}/upstreams/${id}/health`, { key: tenant.apiKey });
      if (h.status !== 200) throw new Error(`GET .../health: ${h.status} ${h.text}`);
      const t = (h.json.targets as { target: string; in_flight?: number; admin_state?: string }[]).find((x) => x.target === busy.key);
      return t;
    };
    await waitFor(async () => (await fleetInFlight())?.in_flight === 1, { what: "the fleet view to show 1 in flight" });

    busy.releaseSlow();
    const done = await slow;
    expect(done.status).toBe(200);
    expect(done.headers["x-target"]).toBe(busy.target.name);
    await waitForMetrics(metricsUrl, (m) => series(m, "gateway_upstream_in_flight", { backend: id, target: busy.key }) === 0, { what: "in-flight 0" });
    await waitFor(async () => ((await fleetInFlight())?.in_flight ?? 0) === 0, { what: "the fleet view to show 0 in flight" });
  });
});

describe("metrics, /healthz and the access log", () => {
  it("exposes per-rule, per-target, state and control-plane series", async () => {
    const [a] = await Promise.all([startSwitchTarget("metrics-a")]);
    const { id, path } = await route("metrics", { targets: hostsOf(a) });
    const rule = (await api.listRules(tenant)).json.rules.find((r: { path: string }) => r.path === "/metrics/*").id as string;
    await sendRequests(dp.url, 5, { path });
    await httpRequest(`${dp.url}/no-such-route`);
    const m = await scrape(metricsUrl);
    expect(series(m, "gateway_requests_total", { rule, code: "2xx" })).toBe(5);
    expect(series(m, "gateway_request_duration_seconds_count", { rule })).toBe(5);
    expect(series(m, "gateway_request_duration_seconds_bucket", { rule, le: "+Inf" })).toBe(5);
    expect(series(m, "gateway_requests_total", { rule: "", code: "4xx" })).toBeGreaterThanOrEqual(1);
    expect(series(m, "gateway_upstream_requests_total", { backend: id, target: a.key, code: "2xx" })).toBe(5);
    expect(series(m, "gateway_upstream_request_duration_seconds_count", { backend: id, target: a.key })).toBe(5);
    expect(series(m, "gateway_target_state", { backend: id, target: a.key, state: "healthy" })).toBe(1);
    expect(series(m, "gateway_upstream_in_flight", { backend: id, target: a.key })).toBe(0);
    expect(series(m, "gateway_control_plane_connected")).toBe(1);
    expect(series(m, "gateway_config_version")).toBe(Number(await api.currentVersion()));
    expect(series(m, "gateway_config_snapshots_total", { result: "applied" })).toBeGreaterThan(0);
    expect(series(m, "process_cpu_seconds_total")).toBeGreaterThan(0);
  });

  it("/healthz says ok with the version, and the access log has one line per request with its id", async () => {
    const h = await httpRequest(`${metricsUrl}/healthz`);
    expect(h.status).toBe(200);
    expect(h.json).toMatchObject({ status: "ok", control_plane_connected: true, node_id: NODE });
    expect(BigInt(h.json.version)).toBeGreaterThan(0n);
    expect(typeof h.json.last_contact_ms).toBe("number");

    const mark = dp.proc.mark();
    const res = await httpRequest(`${dp.url}/metrics/y?secret=1`, { headers: { "x-request-id": "req-health-42" } });
    expect(res.status).toBe(200);
    const line = await dp.proc.waitForMsg("request", { request_id: "req-health-42" }, { since: mark });
    expect(line).toMatchObject({ method: "GET", path: "/metrics/y", status: 200, attempts: 1, error: null });
    expect(typeof line.rule).toBe("string");
    expect(typeof line.backend).toBe("string");
    expect(String(line.target)).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(typeof line.duration_ms).toBe("number");
  });
});
