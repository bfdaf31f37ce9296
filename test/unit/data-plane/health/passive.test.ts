import { describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { PassiveHealthCheckSchema } from "../../../../proto/gen/gateway/v1/upstream_pb.js";
import { ConfigError } from "../../../../data-plane/src/config/errors.js";
import {
  PassiveHealth,
  isFailureStatus,
  resolvePassiveCheck,
  type PassiveState,
  type ResolvedPassiveCheck,
} from "../../../../data-plane/src/health/passive.js";

/** A backend on a fake clock; `t` is moved by hand, nothing sleeps. */
function setup(over: Partial<ResolvedPassiveCheck> = {}, keys = ["a", "b", "c", "d"]) {
  const clock = { t: 1_000 };
  const check: ResolvedPassiveCheck = {
    ...resolvePassiveCheck(create(PassiveHealthCheckSchema, { consecutiveFailures: 3, baseEjectionMs: 1000, maxEjectionMs: 10_000 })),
    maxEjectionPercent: 100,
    ...over,
  };
  const ph = new PassiveHealth(check, keys, { now: () => clock.t });
  const events: string[] = [];
  ph.onChange((k, s, d) => events.push(`${k}:${s}${d.until === undefined ? "" : `@${d.until}`}`));
  const fail = (key: string, n: number): void => {
    for (let i = 0; i < n; i++) ph.onResult(key, "failure");
  };
  return { clock, ph, events, fail };
}

describe("resolvePassiveCheck", () => {
  it("applies the documented defaults when unset", () => {
    const r = resolvePassiveCheck();
    expect({ ...r, failureStatuses: [...r.failureStatuses] }).toEqual({
      consecutiveFailures: 5,
      failureStatuses: [502, 503, 504],
      baseEjectionMs: 30_000,
      maxEjectionMs: 300_000,
      maxEjectionPercent: 50,
      halfOpenRequests: 1,
      slowStartMs: 0,
    });
  });

  it("fills zero fields of a present message with defaults, except consecutive_failures 0 which disables", () => {
    const r = resolvePassiveCheck(create(PassiveHealthCheckSchema, { failureStatuses: [500] }));
    expect(r.consecutiveFailures).toBe(0);
    expect(r.baseEjectionMs).toBe(30_000);
    expect(r.maxEjectionPercent).toBe(50);
    expect([...r.failureStatuses]).toEqual([500]);
  });

  const bad: [string, Record<string, unknown>, string][] = [
    ["percent above 100", { maxEjectionPercent: 101 }, "health_check.passive.max_ejection_percent"],
    ["base above max", { baseEjectionMs: 60_000, maxEjectionMs: 30_000 }, "health_check.passive.base_ejection_ms"],
    ["base above default max", { baseEjectionMs: 400_000 }, "health_check.passive.base_ejection_ms"],
    ["status out of range", { failureStatuses: [503, 600] }, "health_check.passive.failure_statuses[1]"],
    ["huge max ejection", { maxEjectionMs: 86_400_001 }, "health_check.passive.max_ejection_ms"],
    ["huge slow start", { slowStartMs: 86_400_001 }, "health_check.passive.slow_start_ms"],
    ["huge consecutive failures", { consecutiveFailures: 1001 }, "health_check.passive.consecutive_failures"],
  ];
  it.each(bad)("refuses %s naming the field", (_name, fields, field) => {
    const cfg = create(PassiveHealthCheckSchema, fields);
    expect(() => resolvePassiveCheck(cfg)).toThrow(ConfigError);
    try {
      resolvePassiveCheck(cfg);
    } catch (e) {
      expect((e as ConfigError).field).toBe(field);
    }
  });

  it("classifies statuses with the default or configured list", () => {
    expect([500, 502, 503, 504, 429].map((s) => isFailureStatus(s))).toEqual([false, true, true, true, false]);
    const ph = new PassiveHealth(resolvePassiveCheck(create(PassiveHealthCheckSchema, { consecutiveFailures: 1, failureStatuses: [500, 429] })));
    expect([500, 502, 429].map((s) => ph.isFailureStatus(s))).toEqual([true, false, true]);
  });
});

describe("PassiveHealth", () => {
  it("ejects after exactly consecutive_failures failures in a row; a success resets the count", () => {
    const { ph, events, fail } = setup();
    fail("a", 2);
    ph.onResult("a", "success");
    fail("a", 2);
    expect(ph.state("a")).toBe("healthy");
    expect(events).toEqual([]);
    fail("a", 1);
    expect(ph.state("a")).toBe("ejected");
    expect(ph.available("a")).toBe(false);
    expect(ph.tryAcquire("a")).toBe(false);
    expect(events).toEqual(["a:ejected@2000"]);
  });

  // ejection n lasts min(n × base, max): 1000, 2000, 3000, ... capped at 10_000.
  const growth: [number, number][] = [
    [1, 1000],
    [2, 2000],
    [3, 3000],
    [9, 9000],
    [10, 10_000],
    [11, 10_000],
    [14, 10_000],
  ];
  it.each(growth)("the ejection number %i lasts %i ms (failures in half-open re-eject)", (n, expected) => {
    const { clock, ph, fail } = setup();
    fail("a", 3);
    for (let i = 1; i < n; i++) {
      clock.t = ph.nextDeadline()!;
      expect(ph.state("a")).toBe("half-open");
      expect(ph.tryAcquire("a")).toBe(true);
      ph.onResult("a", "failure");
    }
    const start = clock.t;
    expect(ph.nextDeadline()! - start).toBe(expected);
    clock.t = start + expected - 1;
    expect(ph.available("a")).toBe(false);
    clock.t = start + expected;
    expect(ph.available("a")).toBe(true);
    expect(ph.state("a")).toBe("half-open");
  });

  it.each([1, 2, 5])("half-open admits exactly %i request(s) until one reports", (n) => {
    const { clock, ph, events, fail } = setup({ halfOpenRequests: n });
    fail("a", 3);
    clock.t += 1000;
    const admitted = Array.from({ length: n + 3 }, () => ph.tryAcquire("a"));
    expect(admitted).toEqual([...Array(n).fill(true), false, false, false]);
    // A permit handed back (request sent elsewhere) may be used again.
    ph.release("a");
    expect(ph.tryAcquire("a")).toBe(true);
    expect(ph.tryAcquire("a")).toBe(false);
    expect(events).toEqual(["a:ejected@2000", "a:half-open"]);
  });

  it("a success in half-open closes the circuit", () => {
    const { clock, ph, events, fail } = setup();
    fail("a", 3);
    clock.t += 1000;
    expect(ph.tryAcquire("a")).toBe(true);
    ph.onResult("a", "success");
    expect(ph.state("a")).toBe("healthy");
    expect([ph.tryAcquire("a"), ph.tryAcquire("a"), ph.tryAcquire("a")]).toEqual([true, true, true]);
    expect(events).toEqual(["a:ejected@2000", "a:half-open", "a:healthy"]);
    // Closed means a fresh count: it takes consecutive_failures again to eject.
    fail("a", 2);
    expect(ph.state("a")).toBe("healthy");
  });

  it("a failure in half-open re-ejects for longer, and the multiplier survives a short healthy spell", () => {
    const { clock, ph, events, fail } = setup();
    fail("a", 3); // ejection 1: 1000 ms
    clock.t += 1000;
    ph.onResult("a", "failure"); // ejection 2: 2000 ms
    expect(ph.nextDeadline()).toBe(clock.t + 2000);
    clock.t += 2000;
    ph.onResult("a", "success");
    clock.t += 5000; // healthy, but less than max_ejection_ms (10_000)
    fail("a", 3); // ejection 3: 3000 ms
    expect(ph.nextDeadline()).toBe(clock.t + 3000);
    expect(events).toEqual(["a:ejected@2000", "a:half-open", "a:ejected@4000", "a:half-open", "a:healthy", "a:ejected@12000"]);
  });

  it("the multiplier decays back after one max_ejection_ms healthy", () => {
    const { clock, ph, fail } = setup();
    fail("a", 3);
    clock.t += 1000;
    ph.onResult("a", "failure"); // 2nd ejection
    clock.t += 2000;
    ph.onResult("a", "success");
    clock.t += 10_000; // one max_ejection_ms with no ejection
    fail("a", 3);
    expect(ph.nextDeadline()).toBe(clock.t + 1000); // back to base
  });

  it("ignores results of ejected and unknown targets", () => {
    const { clock, ph, fail } = setup();
    fail("a", 3);
    const until = ph.nextDeadline();
    // Requests that started before the ejection report late: they neither close nor extend it.
    ph.onResult("a", "success");
    expect(ph.state("a")).toBe("ejected");
    fail("a", 6);
    expect(ph.nextDeadline()).toBe(until);
    ph.onResult("zz", "failure");
    expect(ph.state("zz")).toBeUndefined();
    expect(ph.available("zz")).toBe(true);
    expect(ph.tryAcquire("zz")).toBe(true);
    clock.t += 1000;
    expect(ph.state("a")).toBe("half-open");
  });

  type Step = [key: string, action: "eject" | "expire" | "expire-and-close", expect: Record<string, PassiveState>];
  const percentCases: [string, number, string[], Step[]][] = [
    [
      "50% of 4: two out, the third stays in until one comes back",
      50,
      ["a", "b", "c", "d"],
      [
        ["a", "eject", { a: "ejected", b: "healthy", c: "healthy", d: "healthy" }],
        ["b", "eject", { a: "ejected", b: "ejected", c: "healthy", d: "healthy" }],
        ["c", "eject", { a: "ejected", b: "ejected", c: "healthy", d: "healthy" }],
        ["a", "expire-and-close", { a: "healthy", b: "half-open", c: "healthy", d: "healthy" }],
        // c's failure count was kept: its next failure ejects it now that there is room.
        ["c", "eject", { a: "healthy", b: "half-open", c: "ejected", d: "healthy" }],
      ],
    ],
    [
      "half-open targets still count as out",
      50,
      ["a", "b", "c", "d"],
      [
        ["a", "eject", { a: "ejected" }],
        ["b", "eject", { b: "ejected" }],
        ["a", "expire", { a: "half-open", b: "half-open" }],
        ["c", "eject", { a: "half-open", b: "half-open", c: "healthy" }],
      ],
    ],
    ["49% of 2: none", 49, ["a", "b"], [["a", "eject", { a: "healthy", b: "healthy" }]]],
    ["50% of 1: none (a lone target stays in)", 50, ["a"], [["a", "eject", { a: "healthy" }]]],
    [
      "100% of 2: all",
      100,
      ["a", "b"],
      [
        ["a", "eject", { a: "ejected", b: "healthy" }],
        ["b", "eject", { a: "ejected", b: "ejected" }],
      ],
    ],
    [
      "10% of 10: one",
      10,
      ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
      [
        ["0", "eject", { "0": "ejected", "1": "healthy" }],
        ["1", "eject", { "0": "ejected", "1": "healthy" }],
      ],
    ],
  ];
  it.each(percentCases)("max_ejection_percent: %s", (_name, percent, keys, steps) => {
    const { clock, ph } = setup({ maxEjectionPercent: percent, consecutiveFailures: 1 }, keys);
    for (const [key, action, want] of steps) {
      if (action === "eject") ph.onResult(key, "failure");
      else if (action === "expire") clock.t = ph.nextDeadline()!;
      else {
        clock.t = ph.nextDeadline()!;
        ph.onResult(key, "success");
      }
      const got = Object.fromEntries(Object.keys(want).map((k) => [k, ph.state(k)]));
      expect(got, `after ${action} ${key}`).toEqual(want);
    }
  });

  it("consecutive_failures 0 never ejects", () => {
    const { ph, fail } = setup({ consecutiveFailures: 0 });
    fail("a", 100);
    expect(ph.state("a")).toBe("healthy");
  });

  it("setTargets keeps circuits of kept keys and forgets removed ones", () => {
    const { clock, ph, fail } = setup();
    fail("a", 3);
    ph.setTargets(["a", "e"]);
    expect(ph.state("a")).toBe("ejected");
    expect(ph.state("e")).toBe("healthy");
    expect(ph.state("b")).toBeUndefined();
    expect(ph.states()).toEqual(new Map([["a", "ejected"], ["e", "healthy"]]));
    clock.t += 1000;
    expect(ph.nextDeadline()).toBe(clock.t);
    ph.advance();
    expect(ph.nextDeadline()).toBeUndefined();
  });

  it("advance() emits the move to half-open once, for the owner's timer", () => {
    const { clock, ph, events, fail } = setup();
    fail("a", 3);
    fail("b", 3);
    clock.t += 999;
    ph.advance();
    clock.t += 1;
    ph.advance();
    ph.advance();
    expect(events).toEqual(["a:ejected@2000", "b:ejected@2000", "a:half-open", "b:half-open"]);
  });
});
