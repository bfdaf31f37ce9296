import { describe, expect, it } from "vitest";
import { ProbeAssignment, probeKey, type ProbeTarget } from "../../../../control-plane/src/fleet/probe-assignment.js";
import { FleetPublisher } from "../../../../control-plane/src/fleet/publisher.js";
import { FleetView } from "../../../../control-plane/src/fleet/view.js";
import type { FleetTarget, StreamResponse } from "../../../../proto/gen/gateway/v1/discovery_pb.js";
import { fakeClock, report } from "./helpers.js";

const PROBED: ProbeTarget[] = [
  { backend: "up_a", target: "10.0.0.1:80" },
  { backend: "up_a", target: "10.0.0.2:80" },
  { backend: "up_a", target: "10.0.0.3:80" },
  { backend: "up_b", target: "10.0.1.1:80" },
];

function setup(k = 2, nodes = ["n1", "n2", "n3", "n4"]) {
  const clock = fakeClock();
  const view = new FleetView({ now: clock.now, minExpiryMs: 0 });
  const assignment = new ProbeAssignment(k);
  assignment.setTargets(PROBED);
  const sent: { nodeId: string; msg: StreamResponse }[] = [];
  const deferred: (() => void)[] = [];
  const publisher = new FleetPublisher({
    view,
    assignment,
    send: (nodeId, msg) => sent.push({ nodeId, msg }),
    intervalMs: 0,
    defer: (fn) => {
      deferred.push(fn);
      return () => deferred.splice(deferred.indexOf(fn), 1);
    },
  });
  for (const n of nodes) {
    assignment.addNode(n);
    publisher.nodeJoined(n);
  }
  /** Runs what the publisher deferred (the "at once" pass). */
  const runDeferred = () => {
    for (const fn of deferred.splice(0)) fn();
  };
  /** The newest message each node got, as its targets by key. */
  const latest = () => {
    const out = new Map<string, Map<string, FleetTarget>>();
    for (const { nodeId, msg } of sent) {
      expect(msg.nonce).toBe("");
      if (msg.kind.case !== "fleetHealth") throw new Error(`unexpected ${msg.kind.case}`);
      out.set(nodeId, new Map(msg.kind.value.targets.map((t) => [probeKey(t.backend, t.target), t])));
    }
    return out;
  };
  return { clock, view, assignment, publisher, sent, deferred, runDeferred, latest };
}

describe("FleetPublisher", () => {
  it("sends every node its own probe assignments, each target to exactly k nodes", () => {
    const { publisher, assignment, latest, sent } = setup(2);
    expect(publisher.publish()).toBe(4);
    const got = latest();
    expect([...got.keys()].sort()).toEqual(["n1", "n2", "n3", "n4"]);
    for (const t of PROBED) {
      const key = probeKey(t.backend, t.target);
      const probers = [...got].filter(([, m]) => m.get(key)?.probe === true).map(([n]) => n);
      expect(probers.sort()).toEqual([...assignment.owners(t.backend, t.target)].sort());
      expect(probers).toHaveLength(2);
    }
    for (const [nodeId, m] of got) {
      // Nothing is down or loaded: a node's message holds exactly its probe targets.
      expect([...m.keys()].sort()).toEqual([...assignment.keysOf(nodeId)].sort());
      for (const t of m.values()) expect(t).toMatchObject({ down: false, inFlight: 0, probe: true });
    }
    expect(sent).toHaveLength(4);
  });

  it("sends nothing when nothing changed, and fleet in-flight changes at the next tick", () => {
    const { publisher, view, latest, sent } = setup(1);
    publisher.publish();
    const first = sent.length;
    expect(publisher.publish()).toBe(0);
    view.applyReport("n1", report([{ backend: "up_c", target: "h:1", inFlight: 3 }]));
    view.applyReport("n2", report([{ backend: "up_c", target: "h:1", inFlight: 4 }]));
    expect(sent).toHaveLength(first);
    publisher.tick();
    expect(sent).toHaveLength(first + 4);
    for (const m of latest().values()) expect(m.get("up_c|h:1")).toMatchObject({ down: false, inFlight: 7, probe: false });
    expect(publisher.publish()).toBe(0);
  });

  it("publishes a verdict flip at once, to nodes that never reported the target too", () => {
    const { publisher, view, latest, runDeferred, deferred } = setup(2);
    publisher.publish();
    runDeferred();
    view.applyReport("n1", report([{ target: "10.0.0.9:80", passive: "ejected" }]));
    expect(deferred).toHaveLength(0);
    view.applyReport("n2", report([{ target: "10.0.0.9:80", passive: "ejected" }]));
    expect(deferred).toHaveLength(1);
    runDeferred();
    for (const n of ["n1", "n2", "n3", "n4"]) expect(latest().get(n)?.get("up_a|10.0.0.9:80")?.down).toBe(true);
    // And back: one node now sees it healthy with traffic, so no majority.
    view.applyReport("n2", report([{ target: "10.0.0.9:80", requests: 5 }]));
    runDeferred();
    for (const m of latest().values()) expect(m.has("up_a|10.0.0.9:80")).toBe(false);
  });

  it("a probed target that is down carries both flags for its probers", () => {
    const { publisher, view, assignment, latest } = setup(2);
    const t = PROBED[0];
    const [p1, p2] = assignment.owners(t.backend, t.target);
    view.applyReport(p1, report([{ backend: t.backend, target: t.target, probe: "unhealthy" }]));
    view.applyReport(p2, report([{ backend: t.backend, target: t.target, probe: "unhealthy" }]));
    publisher.publish();
    const key = probeKey(t.backend, t.target);
    for (const [n, m] of latest()) expect(m.get(key)).toMatchObject({ down: true, probe: n === p1 || n === p2 });
  });

  it("moves probes when a node leaves and stops sending to it; a joining node gets a full message at once", () => {
    const { publisher, assignment, latest, sent, runDeferred, deferred } = setup(1, ["n1", "n2"]);
    publisher.publish();
    assignment.removeNode("n2");
    publisher.nodeLeft("n2");
    expect(deferred).toHaveLength(1);
    const before = sent.length;
    runDeferred();
    expect(sent.slice(before).map((s) => s.nodeId)).toEqual(["n1"]);
    expect(latest().get("n1")?.size).toBe(PROBED.length);
    assignment.addNode("n5");
    publisher.nodeJoined("n5");
    runDeferred();
    const n5 = sent.filter((s) => s.nodeId === "n5");
    expect(n5).toHaveLength(1);
    const probes = [...latest().get("n5")!.values()].filter((t) => t.probe).length;
    expect(probes).toBe(assignment.keysOf("n5").size);
    expect(probes + [...latest().get("n1")!.values()].filter((t) => t.probe).length).toBe(PROBED.length);
  });

  it("sweeps the view on tick, so a silent node's verdict expires", () => {
    const { publisher, view, clock, latest } = setup(1, ["n1"]);
    view.applyReport("a", report([{ target: "x:1", passive: "ejected" }], 1_000));
    view.applyReport("b", report([{ target: "x:1", passive: "ejected" }], 1_000));
    publisher.tick();
    expect(latest().get("n1")?.get("up_a|x:1")?.down).toBe(true);
    clock.advance(3_001);
    publisher.tick();
    expect(latest().get("n1")?.has("up_a|x:1")).toBe(false);
  });

  it("close() cancels the pending pass and stops the timer", () => {
    const view = new FleetView();
    const assignment = new ProbeAssignment();
    const sent: string[] = [];
    const p = new FleetPublisher({ view, assignment, send: (n) => sent.push(n), intervalMs: 10 });
    p.nodeJoined("n1");
    p.close();
    expect(p.publish()).toBe(0);
    p.publishSoon();
    p.tick();
    expect(sent).toEqual([]);
  });
});
