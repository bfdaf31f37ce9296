import { describe, expect, it } from "vitest";
import {
  bestPriorityGroup,
  groupByPriority,
  selectPriorityGroup,
} from "../../../../data-plane/src/balancer/priority.js";
import { target, type TestTarget } from "./helpers.js";

/** Targets from `key:priority[:weight]` specs. */
function prioritized(...specs: string[]): TestTarget[] {
  return specs.map((spec) => {
    const [key, priority, weight] = spec.split(":");
    return target(key, Number(weight ?? 1), Number(priority));
  });
}

const keysOf = (list: readonly TestTarget[] | undefined) => list?.map((t) => t.key);

describe("groupByPriority", () => {
  it("orders groups best first and keeps list order inside a group", () => {
    const groups = groupByPriority(prioritized("c:2", "a:0", "d:1", "b:0", "e:2"));
    expect(groups.map((g) => [g.priority, keysOf(g.targets)])).toEqual([
      [0, ["a", "b"]],
      [1, ["d"]],
      [2, ["c", "e"]],
    ]);
  });

  it("returns no groups for no targets", () => {
    expect(groupByPriority([])).toEqual([]);
  });
});

describe("selectPriorityGroup", () => {
  const list = prioritized("a:0", "b:0", "c:1", "d:1", "e:5");
  it.each([
    { name: "all up: the primary group", down: [], priority: 0, expected: ["a", "b"] },
    { name: "one primary down: its peer only", down: ["a"], priority: 0, expected: ["b"] },
    { name: "primary group down: fail over", down: ["a", "b"], priority: 1, expected: ["c", "d"] },
    { name: "partial backup group", down: ["a", "b", "c"], priority: 1, expected: ["d"] },
    { name: "skips to the last resort", down: ["a", "b", "c", "d"], priority: 5, expected: ["e"] },
    { name: "recovers to the primary", down: ["c", "d", "e"], priority: 0, expected: ["a", "b"] },
  ])("$name", ({ down, priority, expected }) => {
    const chosen = bestPriorityGroup(list, (t) => !down.includes(t.key));
    expect(chosen?.priority).toBe(priority);
    expect(keysOf(chosen?.targets)).toEqual(expected);
  });

  it("returns undefined when nothing is available", () => {
    expect(bestPriorityGroup(list, () => false)).toBeUndefined();
    expect(bestPriorityGroup([], () => true)).toBeUndefined();
  });

  it("does not let a weight-0 target hold a group up (blue/green with blue down)", () => {
    const groups = groupByPriority(prioritized("blue:0:100", "green:0:0", "backup:1:1"));
    const chosen = selectPriorityGroup(groups, (t) => t.key !== "blue");
    expect(chosen?.priority).toBe(1);
    expect(keysOf(chosen?.targets)).toEqual(["backup"]);
  });
});
