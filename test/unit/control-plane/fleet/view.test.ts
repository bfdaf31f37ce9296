import { FLEET_MIN_VOTERS } from "../../../../control-plane/src/main.js";
import { describe, expect, it } from "vitest";
import { FleetView, isDown, voteOf, type PassiveState, type ProbeState, type TargetVerdict } from "../../../../control-plane/src/fleet/view.js";
import { apiVerdict } from "../../../../control-plane/src/fleet/health-api.js";
import { fakeClock, report, type T } from "./helpers.js";

const A = "10.0.0.1:80";
const B = "10.0.0.2:80";

function view(opts: ConstructorParameters<typeof FleetView>[0] = {}) {
  const clock = fakeClock();
  const v = new FleetView({ now: clock.now, minExpiryMs: 0, ...opts });
  const flips: TargetVerdict[] = [];
  v.onVerdictChange((x) => flips.push(x));
  return { v, clock, flips };
}

/** A node's line about target A: its passive state, probe state, and whether it sent traffic. */
type Seen = [passive: PassiveState, probe: ProbeState, traffic: boolean];

describe("voteOf", () => {
  const rows: [PassiveState, ProbeState, boolean, ReturnType<typeof voteOf>][] = [
    ["ejected", "unknown", false, "down"],
    ["healthy", "unhealthy", true, "down"],
    ["ejected", "healthy", true, "down"],
    ["healthy", "healthy", false, "up"],
    ["healthy", "unknown", true, "up"],
    ["healthy", "unknown", false, "abstain"],
    ["half-open", "unknown", true, "abstain"],
    ["half-open", "healthy", false, "up"],
    ["unknown", "unknown", true, "abstain"],
  ];
  it.each(rows)("passive %s, probe %s, traffic %s → %s", (passive, probe, traffic, want) => {
    expect(voteOf(passive, probe, traffic)).toBe(want);
  });
});

describe("fleet verdict", () => {
  const rows: { name: string; nodes: Seen[]; down: boolean }[] = [
    { name: "two of three nodes eject it", nodes: [["ejected", "unknown", false], ["ejected", "unknown", false], ["healthy", "unknown", true]], down: true },
    { name: "one of two is no majority", nodes: [["ejected", "unknown", false], ["healthy", "unknown", true]], down: false },
    { name: "two of two", nodes: [["ejected", "unknown", false], ["ejected", "unknown", false]], down: true },
    { name: "a single node's passive ejection stays local", nodes: [["ejected", "unknown", false]], down: false },
    { name: "the only prober sees it unhealthy", nodes: [["healthy", "unhealthy", false]], down: true },
    { name: "the only prober, with idle nodes around", nodes: [["healthy", "unhealthy", false], ["healthy", "unknown", false], ["healthy", "unknown", false]], down: true },
    { name: "idle nodes abstain instead of outvoting the ones that see it fail", nodes: [["ejected", "unknown", true], ["ejected", "unknown", true], ["healthy", "unknown", false], ["healthy", "unknown", false], ["healthy", "unknown", false]], down: true },
    { name: "nodes with traffic that see it up outvote", nodes: [["ejected", "unknown", true], ["ejected", "unknown", true], ["healthy", "unknown", true], ["healthy", "unknown", true], ["healthy", "unknown", true]], down: false },
    { name: "three probers down, seven with good traffic", nodes: [...Array(3).fill(["healthy", "unhealthy", false]), ...Array(7).fill(["healthy", "unknown", true])], down: false },
    { name: "half-open abstains (a passively ejected target can come back)", nodes: [["half-open", "unknown", false], ["half-open", "unknown", false], ["ejected", "unknown", false]], down: false },
    { name: "one prober down, one up", nodes: [["healthy", "unhealthy", false], ["healthy", "healthy", false]], down: false },
    { name: "nobody has evidence", nodes: [["healthy", "unknown", false], ["healthy", "unknown", false]], down: false },
  ];
  it.each(rows)("$name → down=$down", ({ nodes, down }) => {
    const { v } = view();
    nodes.forEach(([passive, probe, traffic], i) => v.applyReport(`n${i}`, report([{ target: A, passive, probe, requests: traffic ? 10 : 0 }])));
    expect(v.verdict("up_a", A)?.down).toBe(down);
    expect(v.verdict("up_a", A)?.reporters).toBe(nodes.length);
  });

  it("isDown needs at least minVoters for a majority", () => {
    expect(isDown({ voters: 1, downVotes: 1, probeDownVotes: 0 })).toBe(false);
    expect(isDown({ voters: 1, downVotes: 1, probeDownVotes: 0 }, 1)).toBe(true);
    expect(isDown({ voters: 3, downVotes: 2, probeDownVotes: 0 }, 4)).toBe(false);
  });

  it("tells listeners when a verdict flips, and only then", () => {
    const { v, flips } = view();
    v.applyReport("n1", report([{ target: A, passive: "ejected" }]));
    expect(flips).toEqual([]);
    v.applyReport("n2", report([{ target: A, passive: "ejected" }]));
    expect(flips.map((f) => [f.target, f.down])).toEqual([[A, true]]);
    v.applyReport("n2", report([{ target: A, passive: "ejected" }]));
    expect(flips).toHaveLength(1);
    v.applyReport("n2", report([{ target: A, passive: "healthy", requests: 5 }]));
    expect(flips.map((f) => f.down)).toEqual([true, false]);
  });

  it("a node that disconnects takes its votes and in-flight requests with it at once", () => {
    const { v, flips } = view();
    v.applyReport("n1", report([{ target: A, passive: "ejected", inFlight: 2 }]));
    v.applyReport("n2", report([{ target: A, passive: "ejected", inFlight: 3 }]));
    expect(v.verdict("up_a", A)).toMatchObject({ down: true, inFlight: 5 });
    v.removeNode("n2");
    expect(v.verdict("up_a", A)).toMatchObject({ down: false, inFlight: 2, reporters: 1 });
    expect(flips.map((f) => f.down)).toEqual([true, false]);
  });

  it("entries of a node that stops reporting expire after 3 report intervals", () => {
    const { v, clock, flips } = view();
    v.applyReport("n1", report([{ target: A, passive: "ejected" }], 1_000));
    v.applyReport("n2", report([{ target: A, passive: "ejected" }], 1_000));
    for (let i = 0; i < 5; i++) {
      clock.advance(1_000);
      v.applyReport("n1", report([{ target: A, passive: "ejected" }], 1_000));
      v.sweep();
    }
    // n2 last reported 5 s ago (> 3 × 1 s): gone; n1 alone is no majority.
    expect(v.verdict("up_a", A)).toMatchObject({ down: false, reporters: 1 });
    expect(v.nodeViews("up_a", A).map((n) => n.nodeId)).toEqual(["n1"]);
    expect(flips.map((f) => f.down)).toEqual([true, false]);
  });

  it("expiry follows the node's usual interval, not a short state-change report", () => {
    const { v, clock } = view();
    v.applyReport("n1", report([{ target: A, passive: "ejected" }], 5_000));
    v.applyReport("n2", report([{ target: A, passive: "ejected" }], 5_000));
    clock.advance(100);
    v.applyReport("n2", report([{ target: A, passive: "ejected" }], 100));
    clock.advance(10_000);
    v.sweep();
    expect(v.verdict("up_a", A)?.reporters).toBe(2);
    clock.advance(6_000);
    v.sweep();
    expect(v.verdict("up_a", A)).toBeUndefined();
    expect(v.size()).toMatchObject({ nodes: 0, entries: 0 });
  });

  it("a partial report keeps the node's other targets until they expire", () => {
    const { v, clock } = view();
    v.applyReport("n1", report([{ target: A, inFlight: 1 }, { target: B, inFlight: 4 }], 1_000));
    clock.advance(500);
    v.applyReport("n1", report([{ target: A, passive: "ejected" }], 500));
    v.sweep();
    expect(v.verdict("up_a", B)?.inFlight).toBe(4);
    clock.advance(3_000);
    v.applyReport("n1", report([{ target: A, passive: "ejected" }], 1_000));
    v.sweep();
    expect(v.verdict("up_a", B)).toBeUndefined();
    expect(v.verdict("up_a", A)?.reporters).toBe(1);
  });

  it("traffic evidence lapses: an idle node stops voting up", () => {
    const { v, clock } = view();
    v.applyReport("n1", report([{ target: A, passive: "ejected" }], 1_000));
    v.applyReport("n2", report([{ target: A, passive: "ejected" }], 1_000));
    v.applyReport("n3", report([{ target: A, requests: 10 }], 1_000));
    v.applyReport("n4", report([{ target: A, requests: 10 }], 1_000));
    expect(v.verdict("up_a", A)).toMatchObject({ down: false, voters: 4 });
    for (let i = 0; i < 4; i++) {
      clock.advance(1_000);
      for (const n of ["n1", "n2"]) v.applyReport(n, report([{ target: A, passive: "ejected" }], 1_000));
      for (const n of ["n3", "n4"]) v.applyReport(n, report([{ target: A }], 1_000));
      v.sweep();
    }
    expect(v.verdict("up_a", A)).toMatchObject({ down: true, voters: 2, reporters: 4 });
  });
});

describe("fleet in-flight", () => {
  it("is the sum of the live nodes' latest counts", () => {
    const { v } = view();
    v.applyReport("n1", report([{ target: A, inFlight: 2 }, { target: B, inFlight: 1 }]));
    v.applyReport("n2", report([{ target: A, inFlight: 3 }]));
    v.applyReport("n3", report([{ target: A, inFlight: 4 }]));
    expect(v.verdict("up_a", A)?.inFlight).toBe(9);
    v.applyReport("n3", report([{ target: A, inFlight: 0 }]));
    expect(v.verdict("up_a", A)?.inFlight).toBe(5);
    v.removeNode("n1");
    expect(v.verdict("up_a", A)?.inFlight).toBe(3);
    expect(v.verdict("up_a", B)).toBeUndefined();
    expect([...v.verdicts()].map((x) => [x.target, x.inFlight])).toEqual([[A, 3]]);
  });
});

describe("apiVerdict", () => {
  const rows: [string, boolean, string][] = [
    ["enabled", false, "healthy"],
    ["enabled", true, "unhealthy"],
    ["draining", false, "draining"],
    ["draining", true, "draining"],
    ["disabled", true, "disabled"],
    ["", false, "healthy"],
  ];
  it.each(rows)("admin %s, down %s → %s", (admin, down, want) => {
    expect(apiVerdict(admin, down)).toBe(want);
  });
});

describe("windowed stats", () => {
  const line = (target: string, requests: number, failures: number, p50: number, p99: number, max = p99): T => ({
    target,
    requests,
    failures,
    p50,
    p99,
    max,
    sum: p50 * requests,
  });

  it("merges nodes: sums counts, request-weighted p50, max p99", () => {
    const { v } = view();
    v.applyReport("n1", report([line(A, 100, 10, 10, 50)]));
    v.applyReport("n2", report([line(A, 300, 0, 20, 80, 200), line(B, 100, 50, 5, 9)]));
    const s = v.backendStats("up_a", 60_000);
    expect(s.targets.get(A)).toEqual({ requests: 400, failures: 10, errorRate: 10 / 400, p50Ms: (100 * 10 + 300 * 20) / 400, p99Ms: 80, maxMs: 200, meanMs: 17.5 });
    expect(s.targets.get(B)).toMatchObject({ requests: 100, failures: 50, errorRate: 0.5, p99Ms: 9 });
    expect(s.total).toMatchObject({ requests: 500, failures: 60, errorRate: 60 / 500, p99Ms: 80, maxMs: 200 });
    expect(s.total.p50Ms).toBeCloseTo((400 * 17.5 + 100 * 5) / 500);
    expect(v.backendStats("up_other", 60_000).targets.size).toBe(0);
  });

  it("counts only the reports received within the window", () => {
    const { v, clock } = view();
    v.applyReport("n1", report([line(A, 100, 100, 1, 900)]));
    clock.advance(30_000);
    v.applyReport("n1", report([line(A, 50, 0, 1, 10)]));
    clock.advance(5_000);
    v.applyReport("n2", report([line(A, 50, 5, 1, 20)]));
    expect(v.backendStats("up_a", 10_000).targets.get(A)).toMatchObject({ requests: 100, failures: 5, errorRate: 0.05, p99Ms: 20 });
    expect(v.backendStats("up_a", 60_000).targets.get(A)).toMatchObject({ requests: 200, failures: 105, p99Ms: 900 });
    // Windows are clamped to what is kept.
    expect(v.backendStats("up_a", 10 * 3600_000).windowMs).toBe(v.maxWindowMs);
  });

  it("keeps a departed node's traffic in the window, but not its votes", () => {
    const { v } = view();
    v.applyReport("n1", report([{ ...line(A, 10, 10, 1, 1), passive: "ejected" }]));
    v.removeNode("n1");
    expect(v.verdict("up_a", A)).toBeUndefined();
    expect(v.backendStats("up_a", 60_000).targets.get(A)).toMatchObject({ requests: 10, failures: 10, errorRate: 1 });
  });

  it("failures without completed requests read as a 100% error rate, and none as 0", () => {
    const { v } = view();
    v.applyReport("n1", report([{ target: A, failures: 3 }, { target: B, inFlight: 1 }]));
    const s = v.backendStats("up_a", 60_000);
    expect(s.targets.get(A)?.errorRate).toBe(1);
    expect(s.targets.get(B)).toMatchObject({ requests: 0, failures: 0, errorRate: 0 });
  });

  it("memory does not grow with time: old buckets and forgotten targets go", () => {
    const { v, clock } = view({ bucketMs: 1_000, maxWindowMs: 60_000 });
    for (let i = 0; i < 600; i++) {
      clock.advance(1_000);
      v.applyReport("n1", report([line(A, 1, 0, 1, 1), line(B, 1, 0, 1, 1)], 1_000));
      v.applyReport("n2", report([line(A, 1, 0, 1, 1)], 1_000));
      if (i % 10 === 0) v.sweep();
    }
    expect(v.size()).toEqual({ nodes: 2, targets: 2, entries: 3, buckets: 2 * 60 });
    expect(v.backendStats("up_a", 60_000).total.requests).toBe(180);
    // Everybody leaves; after the longest window nothing is left.
    v.removeNode("n1");
    v.removeNode("n2");
    clock.advance(61_000);
    v.sweep();
    expect(v.size()).toEqual({ nodes: 0, targets: 0, entries: 0, buckets: 0 });
  });

  it("ignores junk from a broken node without failing", () => {
    const { v } = view();
    v.applyReport("n1", report([{ target: "" }, { backend: "x".repeat(600), target: A }, { target: A, p99: Number.NaN, requests: 1, passive: "weird", probe: "??" }]));
    expect(v.size().targets).toBe(1);
    expect(v.nodeViews("up_a", A)[0]).toMatchObject({ passiveState: "unknown", probeState: "unknown", vote: "abstain" });
    expect(v.backendStats("up_a", 60_000).targets.get(A)?.p99Ms).toBe(0);
  });
});

describe("fleet verdict as the control plane configures it (minVoters 1)", () => {
  const rows: { name: string; nodes: Seen[]; down: boolean }[] = [
    { name: "the only node with traffic ejects it: the idle one learns it", nodes: [["ejected", "unknown", true], ["healthy", "unknown", false]], down: true },
    { name: "one ejects, one with traffic sees it fine: no majority", nodes: [["ejected", "unknown", true], ["healthy", "unknown", true]], down: false },
    { name: "nobody has evidence", nodes: [["healthy", "unknown", false], ["healthy", "unknown", false]], down: false },
  ];
  it.each(rows)("$name → down=$down", ({ nodes, down }) => {
    const v = new FleetView({ minVoters: FLEET_MIN_VOTERS });
    nodes.forEach(([passive, probe, traffic], i) => v.applyReport(`n${i}`, report([{ target: A, passive, probe, requests: traffic ? 10 : 0 }])));
    expect(v.verdict("up_a", A)?.down).toBe(down);
  });
});
