import { describe, expect, it } from "vitest";
import type { ProbeState } from "../../../../data-plane/src/health/active.js";
import { isEligible, selectAvailable, type AdminState, type TargetAvailability } from "../../../../data-plane/src/health/panic.js";

/**
 * Compact target notation: `key:admin[/signal...]` where admin is e (enabled), dr (draining) or
 * di (disabled) and signals are U (probe unhealthy), H (probe healthy), ? (probe unknown),
 * X (passively ejected), F (fleet down).
 */
function t(spec: string): TargetAvailability {
  const [key, rest] = spec.split(":") as [string, string];
  const [admin, ...signals] = rest.split("/");
  const adminState: AdminState = admin === "e" ? "enabled" : admin === "dr" ? "draining" : "disabled";
  let probe: ProbeState | undefined;
  if (signals.includes("U")) probe = "unhealthy";
  else if (signals.includes("H")) probe = "healthy";
  else if (signals.includes("?")) probe = "unknown";
  return { key, admin: adminState, probe, passiveAvailable: !signals.includes("X"), fleetDown: signals.includes("F") };
}

describe("isEligible", () => {
  const cases: [string, boolean][] = [
    ["a:e", true],
    ["a:e/H", true],
    ["a:e/?", true], // unknown is routed as healthy
    ["a:e/U", false],
    ["a:e/X", false],
    ["a:e/F", false],
    ["a:dr/H", false],
    ["a:di/H", false],
  ];
  it.each(cases)("%s → %s", (spec, expected) => expect(isEligible(t(spec))).toBe(expected));
});

describe("selectAvailable", () => {
  const cases: [string, string[], number | undefined, string[], boolean][] = [
    ["all healthy", ["a:e/H", "b:e/H", "c:e"], undefined, ["a", "b", "c"], false],
    ["one of three down stays out", ["a:e/U", "b:e/H", "c:e/H"], undefined, ["b", "c"], false],
    ["exactly 50% eligible is not panic", ["a:e/U", "b:e/X", "c:e", "d:e"], undefined, ["c", "d"], false],
    ["below 50% panics to every enabled target", ["a:e/U", "b:e/X", "c:e/F", "d:e"], undefined, ["a", "b", "c", "d"], true],
    ["none eligible panics", ["a:e/U", "b:e/X"], undefined, ["a", "b"], true],
    ["none eligible panics even with threshold 0", ["a:e/U", "b:e/X"], 0, ["a", "b"], true],
    ["threshold 0: one survivor is enough", ["a:e/U", "b:e/X", "c:e/F", "d:e"], 0, ["d"], false],
    ["threshold 100: any loss panics", ["a:e/U", "b:e", "c:e"], 100, ["a", "b", "c"], true],
    ["draining and disabled never returned, even in panic", ["a:e/U", "b:dr/H", "c:di", "d:e/X"], undefined, ["a", "d"], true],
    ["draining and disabled are not in the denominator", ["a:e/U", "b:e", "c:dr", "d:di"], undefined, ["b"], false],
    ["no enabled target: empty, no panic", ["a:dr", "b:di"], undefined, [], false],
    ["nothing at all", [], undefined, [], false],
  ];
  it.each(cases)("%s", (_name, specs, threshold, expected, panic) => {
    const r = selectAvailable(specs.map(t), threshold);
    expect(r.targets.map((x) => x.key)).toEqual(expected);
    expect(r.panic).toBe(panic);
  });

  it("reports the counts and keeps the caller's objects", () => {
    const targets = ["a:e/U", "b:e", "c:dr"].map(t);
    const r = selectAvailable(targets);
    expect(r).toMatchObject({ eligibleCount: 1, enabledCount: 2, panic: false });
    expect(r.targets[0]).toBe(targets[1]);
  });

  it("refuses a threshold outside 0-100", () => {
    expect(() => selectAvailable([], 101)).toThrow(RangeError);
    expect(() => selectAvailable([], -1)).toThrow(RangeError);
  });
});
