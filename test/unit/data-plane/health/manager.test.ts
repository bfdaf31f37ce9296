import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { afterEach, describe, expect, it } from "vitest";
import { FleetHealthSchema } from "../../../../proto/gen/gateway/v1/discovery_pb.js";
import { ResourceSchema, SnapshotSchema, type Resource } from "../../../../proto/gen/gateway/v1/snapshot_pb.js";
import type { UpstreamSchema } from "../../../../proto/gen/gateway/v1/upstream_pb.js";
import { compileSnapshot, type CompiledBackend, type CompiledConfig } from "../../../../data-plane/src/config/compile.js";
import type { ProbeDetail, ProbeState, ProbeTarget } from "../../../../data-plane/src/health/active.js";
import { HealthManager, type HealthChange, type Prober } from "../../../../data-plane/src/health/manager.js";
import type { ForwardOutcome } from "../../../../data-plane/src/proxy/forward.js";
import { ReportBuilder } from "../../../../data-plane/src/report/report.js";
import { TrafficStats } from "../../../../data-plane/src/report/stats.js";

/** A prober the test drives: it records what it was asked to probe and emits what the test says. */
class FakeProber implements Prober {
  targets: ProbeTarget[] = [];
  readonly states = new Map<string, ProbeState>();
  private listener: ((key: string, state: ProbeState, detail: ProbeDetail) => void) | undefined;
  closed = false;

  setTargets(targets: readonly ProbeTarget[]): void {
    this.targets = [...targets];
    const keys = new Set(targets.map((t) => t.key));
    for (const k of this.states.keys()) if (!keys.has(k)) this.states.delete(k);
    for (const k of keys) if (!this.states.has(k)) this.states.set(k, "unknown");
  }
  state(key: string): ProbeState | undefined {
    return this.states.get(key);
  }
  onChange(listener: (key: string, state: ProbeState, detail: ProbeDetail) => void): () => void {
    this.listener = listener;
    return () => (this.listener = undefined);
  }
  async close(): Promise<void> {
    this.closed = true;
  }
  /** The prober's verdict on `backend|target` changes. */
  emit(key: string, state: ProbeState): void {
    if (!this.states.has(key)) throw new Error(`${key} is not being probed`);
    this.states.set(key, state);
    this.listener?.(key, state, { ok: state !== "unhealthy", reason: "status", status: state === "unhealthy" ? 500 : 200, message: "", consecutive: 3 });
  }
  probedKeys(): string[] {
    return this.targets.map((t) => t.key).sort();
  }
}

type UpstreamInit = MessageInitShape<typeof UpstreamSchema>;

function upstream(id: string, revision: bigint, init: Omit<UpstreamInit, "id" | "tenantId" | "name">): Resource {
  return create(ResourceSchema, { name: `upstream/${id}`, revision, kind: { case: "upstream", value: { id, tenantId: "t", name: id, ...init } } });
}
const tenant = create(ResourceSchema, { name: "tenant/t", revision: 1n, kind: { case: "tenant", value: { id: "t", name: "t" } } });

/** A manager on a fake clock and prober; `t.now` is moved by hand, nothing sleeps. */
function setup() {
  const clock = { now: 1_000 };
  const prober = new FakeProber();
  const logs: { msg: string; fields: Record<string, unknown> }[] = [];
  const log = {
    info: (fields: object, msg: string) => logs.push({ msg, fields: fields as Record<string, unknown> }),
    warn: (fields: object, msg: string) => logs.push({ msg, fields: fields as Record<string, unknown> }),
  };
  const health = new HealthManager({ now: () => clock.now, prober, log });
  managers.push(health);
  const changes: HealthChange[] = [];
  health.onChange((c) => changes.push(c));
  let config: CompiledConfig | undefined;
  const apply = (version: bigint, resources: Resource[]): CompiledConfig => {
    config = compileSnapshot(create(SnapshotSchema, { version, resources: [tenant, ...resources] }), config);
    health.sync(config);
    return config;
  };
  const tick = (ms: number) => {
    clock.now += ms;
    health.advance();
  };
  return { clock, prober, health, logs, changes, apply, tick };
}

const managers: HealthManager[] = [];
afterEach(async () => {
  for (const m of managers.splice(0)) await m.close();
});

/** `n` picks from the backend's current picker, as target ports. */
function picks(b: CompiledBackend, n: number): number[] {
  return Array.from({ length: n }, () => {
    const t = b.balancer.pick();
    if (t === undefined) throw new Error("no target picked");
    return t.port;
  });
}
function count(xs: number[]): Record<number, number> {
  const out: Record<number, number> = {};
  for (const x of xs) out[x] = (out[x] ?? 0) + 1;
  return out;
}

const ok: ForwardOutcome = { status: 200, responseStarted: true, requestBodyConsumed: false, durationMs: 2 };
const refused: ForwardOutcome = { status: 502, errorClass: "connect_refused", responseStarted: false, requestBodyConsumed: false, durationMs: 1 };
const status503: ForwardOutcome = { status: 503, responseStarted: true, requestBodyConsumed: false, durationMs: 3 };
const aborted: ForwardOutcome = { status: 499, errorClass: "aborted", responseStarted: false, requestBodyConsumed: false, durationMs: 1 };

const hosts = (...ports: number[]) => ports.map((port) => ({ host: "127.0.0.1", port }));

describe("HealthManager: eligibility and admin state", () => {
  it.each([
    ["draining", { adminState: "draining" }],
    ["disabled", { adminState: "disabled" }],
    ["weight 0", { weight: 0 }],
  ])("never routes to a %s target", (_name, extra) => {
    const { apply } = setup();
    const c = apply(1n, [upstream("u", 1n, { targets: [{ host: "127.0.0.1", port: 1 }, { host: "127.0.0.1", port: 2, ...extra }, { host: "127.0.0.1", port: 3 }] })]);
    expect(count(picks(c.backends.get("u")!, 30))).toEqual({ 1: 15, 3: 15 });
  });

  it("takes a target out when it starts draining, keeping its state, and back when re-enabled", () => {
    const { apply, health, logs } = setup();
    let c = apply(1n, [upstream("u", 1n, { targets: hosts(1, 2) })]);
    expect(count(picks(c.backends.get("u")!, 4))).toEqual({ 1: 2, 2: 2 });
    c = apply(2n, [upstream("u", 2n, { targets: [{ host: "127.0.0.1", port: 1 }, { host: "127.0.0.1", port: 2, adminState: "draining" }] })]);
    expect(count(picks(c.backends.get("u")!, 4))).toEqual({ 1: 4 });
    expect(health.target("u", "127.0.0.1:2")?.state).toBe("draining");
    expect(logs.some((l) => l.msg === "target admin state changed" && l.fields.admin_state === "draining")).toBe(true);
    c = apply(3n, [upstream("u", 3n, { targets: hosts(1, 2) })]);
    expect(count(picks(c.backends.get("u")!, 4))).toEqual({ 1: 2, 2: 2 });
  });

  it("leaves the picker of a backend the compiler carried over unchanged (its rotation continues)", () => {
    const { apply } = setup();
    const first = apply(1n, [upstream("u", 1n, { targets: hosts(1, 2, 3) })]);
    const picker = first.backends.get("u")!.balancer;
    expect(picks(first.backends.get("u")!, 1)).toEqual([1]);
    const second = apply(2n, [upstream("u", 1n, { targets: hosts(1, 2, 3) }), upstream("v", 2n, { targets: hosts(9) })]);
    expect(second.backends.get("u")!.balancer).toBe(picker);
    expect(picks(second.backends.get("u")!, 2)).toEqual([2, 3]);
  });
});

describe("HealthManager: passive health", () => {
  const passive = { consecutiveFailures: 3, baseEjectionMs: 1_000, maxEjectionMs: 10_000, halfOpenRequests: 1 };

  it("ejects after consecutive failures (connect errors and failure statuses), then half-opens and recovers", () => {
    const { apply, health, tick, changes } = setup();
    const c = apply(1n, [upstream("u", 1n, { targets: hosts(1, 2, 3, 4), healthCheck: { passive } })]);
    const b = c.backends.get("u")!;
    const [t1] = b.targets;
    health.observe(t1, refused);
    health.observe(t1, status503);
    expect(health.target("u", t1.key)?.state).toBe("healthy");
    health.observe(t1, refused);
    expect(health.target("u", t1.key)).toMatchObject({ state: "ejected", passive: "ejected", ejections: 1, inPicker: false });
    expect(changes).toContainEqual({ backend: "u", target: t1.key, cause: "passive" });
    expect(count(picks(b, 30))).toEqual({ 2: 10, 3: 10, 4: 10 });

    tick(999);
    expect(health.target("u", t1.key)?.state).toBe("ejected");
    tick(1);
    expect(health.target("u", t1.key)?.state).toBe("half-open");
    // Half-open: one trial request at a time; the others go to the trusted targets.
    const round = picks(b, 8);
    expect(round.filter((p) => p === 1)).toHaveLength(1);
    health.observe(t1, ok);
    expect(health.target("u", t1.key)?.state).toBe("healthy");
    expect(count(picks(b, 40))).toEqual({ 1: 10, 2: 10, 3: 10, 4: 10 });
  });

  it("does not count a client that went away as a failure, and gives back its trial slot", () => {
    const { apply, health, tick } = setup();
    const c = apply(1n, [upstream("u", 1n, { targets: hosts(1, 2), healthCheck: { passive } })]);
    const b = c.backends.get("u")!;
    const [t1] = b.targets;
    for (let i = 0; i < 10; i++) health.observe(t1, aborted);
    expect(health.target("u", t1.key)?.state).toBe("healthy");
    for (let i = 0; i < 3; i++) health.observe(t1, refused);
    tick(1_000);
    expect(health.target("u", t1.key)?.state).toBe("half-open");
    expect(picks(b, 4).filter((p) => p === 1)).toHaveLength(1);
    // While the trial runs, no second one.
    expect(picks(b, 4).filter((p) => p === 1)).toHaveLength(0);
    health.observe(t1, aborted);
    expect(picks(b, 4).filter((p) => p === 1)).toHaveLength(1);
  });

  it("keeps a circuit across snapshots that leave the target in place, and forgets removed targets", () => {
    const { apply, health } = setup();
    let c = apply(1n, [upstream("u", 1n, { targets: hosts(1, 2, 3, 4), healthCheck: { passive } })]);
    for (let i = 0; i < 3; i++) health.observe(c.backends.get("u")!.targets[0], refused);
    expect(health.target("u", "127.0.0.1:1")?.state).toBe("ejected");
    c = apply(2n, [upstream("u", 2n, { targets: hosts(1, 2, 3, 4, 5), healthCheck: { passive } })]);
    expect(health.target("u", "127.0.0.1:1")?.state).toBe("ejected");
    expect(picks(c.backends.get("u")!, 20)).not.toContain(1);
    c = apply(3n, [upstream("u", 3n, { targets: hosts(2, 3), healthCheck: { passive } })]);
    expect(health.target("u", "127.0.0.1:1")).toBeUndefined();
    c = apply(4n, [upstream("u", 4n, { targets: hosts(1, 2, 3), healthCheck: { passive } })]);
    expect(health.target("u", "127.0.0.1:1")?.state).toBe("healthy");
  });

  it("counts outcomes of requests still running against a previous snapshot's target", () => {
    const { apply, health } = setup();
    const old = apply(1n, [upstream("u", 1n, { targets: hosts(1, 2, 3, 4), healthCheck: { passive } })]);
    const oldTarget = old.backends.get("u")!.targets[0];
    apply(2n, [upstream("u", 2n, { targets: hosts(1, 2, 3, 4), healthCheck: { passive } })]);
    for (let i = 0; i < 3; i++) health.observe(oldTarget, refused);
    expect(health.target("u", "127.0.0.1:1")?.state).toBe("ejected");
  });
});

describe("HealthManager: active probes and the fleet", () => {
  const active = { intervalMs: 1_000, timeoutMs: 500 };

  it("probes every enabled or draining target with an active check, never disabled ones", () => {
    const { apply, prober } = setup();
    apply(1n, [
      upstream("u", 1n, {
        targets: [
          { host: "127.0.0.1", port: 1 },
          { host: "127.0.0.1", port: 2, adminState: "draining" },
          { host: "127.0.0.1", port: 3, adminState: "disabled" },
        ],
        healthCheck: { active },
      }),
      upstream("v", 1n, { targets: hosts(4) }),
    ]);
    expect(prober.probedKeys()).toEqual(["u|127.0.0.1:1", "u|127.0.0.1:2"]);
    expect(prober.targets[0]).toMatchObject({ host: "127.0.0.1", port: 1, scheme: "http" });
  });

  it("keeps the picker (and its rotation) when a signal changes nothing, e.g. a first probe confirming a target", () => {
    const { apply, prober, health } = setup();
    const c = apply(1n, [upstream("u", 1n, { targets: hosts(1, 2, 3), healthCheck: { active } })]);
    const b = c.backends.get("u")!;
    const picker = b.balancer;
    expect(picks(b, 1)).toEqual([1]);
    prober.emit("u|127.0.0.1:1", "healthy");
    health.applyFleetHealth(create(FleetHealthSchema, { targets: [{ backend: "u", target: "127.0.0.1:2", inFlight: 4 }] }));
    expect(b.balancer).toBe(picker);
    expect(picks(b, 2)).toEqual([2, 3]);
  });

  it("takes an unhealthy target out and brings it back when its probes recover", () => {
    const { apply, prober, health } = setup();
    const c = apply(1n, [upstream("u", 1n, { targets: hosts(1, 2), healthCheck: { active } })]);
    const b = c.backends.get("u")!;
    prober.emit("u|127.0.0.1:2", "unhealthy");
    expect(health.target("u", "127.0.0.1:2")?.state).toBe("unhealthy");
    expect(count(picks(b, 10))).toEqual({ 1: 10 });
    prober.emit("u|127.0.0.1:2", "healthy");
    expect(count(picks(b, 10))).toEqual({ 1: 5, 2: 5 });
  });

  it("probes only the targets the control plane assigns, and follows the fleet's verdict for the others", () => {
    const { apply, prober, health } = setup();
    const c = apply(1n, [upstream("u", 1n, { targets: hosts(1, 2, 3), healthCheck: { active } })]);
    const b = c.backends.get("u")!;
    expect(prober.probedKeys()).toEqual(["u|127.0.0.1:1", "u|127.0.0.1:2", "u|127.0.0.1:3"]);
    health.applyFleetHealth(
      create(FleetHealthSchema, {
        targets: [
          { backend: "u", target: "127.0.0.1:1", probe: true },
          { backend: "u", target: "127.0.0.1:2", probe: false, down: true, inFlight: 7 },
          { backend: "u", target: "127.0.0.1:3", probe: false },
        ],
      }),
    );
    expect(prober.probedKeys()).toEqual(["u|127.0.0.1:1"]);
    expect(health.target("u", "127.0.0.1:2")).toMatchObject({ state: "unhealthy", fleetDown: true, probedHere: false, probe: "unknown" });
    expect(b.targets[1].load.fleetInFlight).toBe(7);
    expect(count(picks(b, 10))).toEqual({ 1: 5, 3: 5 });

    // A push is complete: a target it leaves out is up, has no fleet load and is not ours to probe.
    health.applyFleetHealth(create(FleetHealthSchema, { targets: [{ backend: "u", target: "127.0.0.1:3", probe: true }] }));
    expect(b.targets[1].load.fleetInFlight).toBe(0);
    expect(count(picks(b, 9))).toEqual({ 1: 3, 2: 3, 3: 3 });
    expect(prober.probedKeys()).toEqual(["u|127.0.0.1:3"]);
    // Even an empty push means "nothing assigned to you".
    health.applyFleetHealth(create(FleetHealthSchema, {}));
    expect(prober.probedKeys()).toEqual([]);
  });

  it("trusts its own healthy probe over the fleet's 'down' for a target it probes (fresher evidence)", () => {
    const { apply, prober, health } = setup();
    const c = apply(1n, [upstream("u", 1n, { targets: hosts(1, 2), healthCheck: { active } })]);
    health.applyFleetHealth(
      create(FleetHealthSchema, {
        targets: [
          { backend: "u", target: "127.0.0.1:1", probe: true, down: true },
          { backend: "u", target: "127.0.0.1:2", probe: true },
        ],
      }),
    );
    // Probed here but no verdict of its own yet: the fleet's stands.
    expect(count(picks(c.backends.get("u")!, 4))).toEqual({ 2: 4 });
    prober.emit("u|127.0.0.1:1", "healthy");
    expect(health.target("u", "127.0.0.1:1")).toMatchObject({ state: "healthy", fleetDown: true });
    expect(count(picks(c.backends.get("u")!, 4))).toEqual({ 1: 2, 2: 2 });
  });

  it("drops the fleet view when the control plane stays away, probing everything locally again", () => {
    const { apply, prober, health, logs } = setup();
    const c = apply(1n, [upstream("u", 1n, { targets: hosts(1, 2), healthCheck: { active } })]);
    health.applyFleetHealth(
      create(FleetHealthSchema, {
        targets: [
          { backend: "u", target: "127.0.0.1:1", probe: true },
          { backend: "u", target: "127.0.0.1:2", probe: false, down: true },
        ],
      }),
    );
    expect(count(picks(c.backends.get("u")!, 4))).toEqual({ 1: 4 });
    health.dropFleetView();
    expect(logs.some((l) => l.msg.startsWith("fleet health view dropped"))).toBe(true);
    expect(prober.probedKeys()).toEqual(["u|127.0.0.1:1", "u|127.0.0.1:2"]);
    expect(count(picks(c.backends.get("u")!, 4))).toEqual({ 1: 2, 2: 2 });
  });

  it("lets a locally half-open target take its trial requests under a fleet 'down', so it can come back", () => {
    const { apply, health, tick } = setup();
    const passive = { consecutiveFailures: 1, baseEjectionMs: 1_000, maxEjectionMs: 10_000, maxEjectionPercent: 50 };
    const c = apply(1n, [upstream("u", 1n, { targets: hosts(1, 2), healthCheck: { passive } })]);
    const b = c.backends.get("u")!;
    health.observe(b.targets[0], refused);
    health.applyFleetHealth(create(FleetHealthSchema, { targets: [{ backend: "u", target: "127.0.0.1:1", down: true }] }));
    tick(1_000);
    expect(health.target("u", "127.0.0.1:1")?.state).toBe("half-open");
    expect(picks(b, 4).filter((p) => p === 1)).toHaveLength(1);
    health.observe(b.targets[0], ok);
    // Healthy locally, still down for the fleet: out until the verdict lifts.
    expect(health.target("u", "127.0.0.1:1")?.state).toBe("unhealthy");
    expect(count(picks(b, 4))).toEqual({ 2: 4 });
  });
});

describe("HealthManager: priority failover and panic", () => {
  const active = { intervalMs: 1_000, timeoutMs: 500 };

  it("fails over to the next priority group when the best one is down, and back", () => {
    const { apply, prober, health, logs } = setup();
    const c = apply(1n, [
      upstream("u", 1n, {
        targets: [
          { host: "127.0.0.1", port: 1, priority: 0 },
          { host: "127.0.0.1", port: 2, priority: 1 },
          { host: "127.0.0.1", port: 3, priority: 1 },
        ],
        healthCheck: { active },
      }),
    ]);
    const b = c.backends.get("u")!;
    expect(count(picks(b, 4))).toEqual({ 1: 4 });
    prober.emit("u|127.0.0.1:1", "unhealthy");
    expect(count(picks(b, 4))).toEqual({ 2: 2, 3: 2 });
    expect([...health.view()][0].priority).toBe(1);
    expect(logs.find((l) => l.msg === "priority group changed")?.fields).toMatchObject({ priority: 1, previous: 0 });
    prober.emit("u|127.0.0.1:1", "healthy");
    expect(count(picks(b, 4))).toEqual({ 1: 4 });
  });

  it("enters panic when fewer than half the targets are healthy, serving every enabled one (not draining ones)", () => {
    const { apply, prober, health, logs } = setup();
    const c = apply(1n, [
      upstream("u", 1n, {
        targets: [...hosts(1, 2, 3), { host: "127.0.0.1", port: 4, adminState: "draining" }],
        healthCheck: { active },
      }),
    ]);
    const b = c.backends.get("u")!;
    prober.emit("u|127.0.0.1:1", "unhealthy");
    expect(count(picks(b, 6))).toEqual({ 2: 3, 3: 3 });
    prober.emit("u|127.0.0.1:2", "unhealthy");
    expect([...health.view()][0].panic).toBe(true);
    expect(count(picks(b, 6))).toEqual({ 1: 2, 2: 2, 3: 2 });
    expect(logs.some((l) => l.msg.startsWith("panic mode:"))).toBe(true);
    prober.emit("u|127.0.0.1:2", "healthy");
    expect([...health.view()][0].panic).toBe(false);
    expect(count(picks(b, 6))).toEqual({ 2: 3, 3: 3 });
  });

  it("serves every target rather than none when all fail", () => {
    const { apply, prober } = setup();
    const c = apply(1n, [upstream("u", 1n, { targets: hosts(1, 2), healthCheck: { active } })]);
    prober.emit("u|127.0.0.1:1", "unhealthy");
    prober.emit("u|127.0.0.1:2", "unhealthy");
    expect(count(picks(c.backends.get("u")!, 4))).toEqual({ 1: 2, 2: 2 });
  });

  it("with max_ejection_percent 100 panics only when nothing is eligible", () => {
    const { apply, prober } = setup();
    const c = apply(1n, [upstream("u", 1n, { targets: hosts(1, 2, 3), healthCheck: { active, passive: { consecutiveFailures: 5, maxEjectionPercent: 100 } } })]);
    prober.emit("u|127.0.0.1:1", "unhealthy");
    prober.emit("u|127.0.0.1:2", "unhealthy");
    expect(count(picks(c.backends.get("u")!, 4))).toEqual({ 3: 4 });
  });

  it("answers with no target (503) only when no target is enabled at all", () => {
    const { apply } = setup();
    const c = apply(1n, [upstream("u", 1n, { targets: [{ host: "127.0.0.1", port: 1, adminState: "disabled" }] })]);
    expect(c.backends.get("u")!.balancer.pick()).toBeUndefined();
  });
});

describe("HealthManager: slow start", () => {
  const active = { intervalMs: 1_000, timeoutMs: 500 };

  it("ramps a recovered target's share up in steps over slow_start_ms, then serves plain round-robin", () => {
    const { apply, prober, tick, logs } = setup();
    const c = apply(1n, [upstream("u", 1n, { targets: hosts(1, 2), healthCheck: { active, passive: { consecutiveFailures: 5, slowStartMs: 1_000 } } })]);
    const b = c.backends.get("u")!;
    prober.emit("u|127.0.0.1:2", "unhealthy");
    prober.emit("u|127.0.0.1:2", "healthy");
    // 10% of its weight: 1 pick in 11.
    expect(count(picks(b, 11))).toEqual({ 1: 10, 2: 1 });
    tick(500);
    // 50%: 5 picks in 15.
    expect(count(picks(b, 15))).toEqual({ 1: 10, 2: 5 });
    tick(500);
    expect(logs.some((l) => l.msg === "slow start finished" && l.fields.target === "127.0.0.1:2")).toBe(true);
    expect(picks(b, 4).sort()).toEqual([1, 1, 2, 2]);
  });

  it("does not ramp the targets of a backend's first configuration", () => {
    const { apply } = setup();
    const c = apply(1n, [upstream("u", 1n, { targets: hosts(1, 2), healthCheck: { passive: { consecutiveFailures: 5, slowStartMs: 60_000 } } })]);
    expect(count(picks(c.backends.get("u")!, 4))).toEqual({ 1: 2, 2: 2 });
  });
});

describe("ReportBuilder", () => {
  it("reports per target the interval's requests, failures and latency, the passive state and this node's probe state", () => {
    const { apply, health, prober } = setup();
    const stats = new TrafficStats();
    const c = apply(1n, [upstream("u", 1n, { targets: hosts(1, 2), healthCheck: { active: { intervalMs: 1_000, timeoutMs: 500 } } })]);
    stats.sync(c);
    const b = c.backends.get("u")!;
    // Target 1 is assigned to this node; target 2 to others (left out of the push).
    health.applyFleetHealth(create(FleetHealthSchema, { targets: [{ backend: "u", target: "127.0.0.1:1", probe: true }] }));
    prober.emit("u|127.0.0.1:1", "healthy");
    const observe = (i: number, o: ForwardOutcome) => {
      health.observe(b.targets[i], o);
      stats.attempt(b, b.targets[i], o);
    };
    observe(0, { ...ok, durationMs: 10 });
    observe(0, { ...ok, durationMs: 20 });
    observe(0, { ...status503, durationMs: 30 });
    observe(1, refused);
    b.targets[0].load.inFlight = 2;
    let clock = 0;
    const reports = new ReportBuilder(health, stats, () => 1n, () => clock);
    clock = 5_000;
    const r = reports.build();
    expect(r.appliedVersion).toBe(1n);
    expect(r.intervalMs).toBe(5_000);
    const [r1, r2] = r.targets;
    expect(r1).toMatchObject({ backend: "u", target: "127.0.0.1:1", inFlight: 2, requests: 3n, failures: 1n, passiveState: "healthy", probeState: "healthy" });
    expect(r1.latency?.maxMs).toBe(30);
    expect(r1.latency?.sumMs).toBe(60);
    expect(r1.latency?.p50Ms).toBeGreaterThanOrEqual(20);
    expect(r1.latency?.p50Ms).toBeLessThan(20 * 1.2);
    expect(r2).toMatchObject({ requests: 1n, failures: 1n, probeState: "unknown" });
    // The next report covers only what happened since.
    observe(0, ok);
    const next = reports.build();
    expect(next.targets[0]).toMatchObject({ requests: 1n, failures: 0n });
    expect(next.targets[1]).toMatchObject({ requests: 0n, failures: 0n });
    expect(next.targets[1].latency).toMatchObject({ p50Ms: 0, p99Ms: 0, maxMs: 0, sumMs: 0 });
  });
});

describe("HealthManager.close", () => {
  it("closes the prober it was given only when it created it, and ignores later events", async () => {
    const { health, prober, apply } = setup();
    const c = apply(1n, [upstream("u", 1n, { targets: hosts(1, 2) })]);
    const picker = c.backends.get("u")!.balancer;
    await health.close();
    expect(prober.closed).toBe(false);
    health.observe(c.backends.get("u")!.targets[0], refused);
    health.sync(c);
    expect(c.backends.get("u")!.balancer).toBe(picker);
  });
});
