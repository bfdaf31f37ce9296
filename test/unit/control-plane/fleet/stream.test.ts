import { create } from "@bufbuild/protobuf";
import { createClient, createRouterTransport, type Client } from "@connectrpc/connect";
import { createWritableIterable } from "@connectrpc/connect/protocol";
import { afterEach, describe, expect, it } from "vitest";
import { ConfigState, encodeMessage } from "../../../../control-plane/src/config/state.js";
import { NodeRegistry } from "../../../../control-plane/src/discovery/nodes.js";
import { SnapshotCache } from "../../../../control-plane/src/discovery/snapshot-cache.js";
import { DiscoveryServer } from "../../../../control-plane/src/discovery/stream.js";
import { Fleet } from "../../../../control-plane/src/fleet/fleet.js";
import {
  DiscoveryService,
  StreamRequestSchema,
  type FleetHealth,
  type Report,
  type StreamRequest,
  type StreamResponse,
} from "../../../../proto/gen/gateway/v1/discovery_pb.js";
import { TenantSchema } from "../../../../proto/gen/gateway/v1/tenant_pb.js";
import { UpstreamSchema } from "../../../../proto/gen/gateway/v1/upstream_pb.js";
import { report } from "./helpers.js";

/**
 * The fleet wired to a real DiscoveryServer over the in-memory transport, as main.ts wires it:
 * reports in through the stream, FleetHealth out through the stream.
 */

const TOKEN = "node-token";
const closers: (() => void)[] = [];
afterEach(() => {
  for (const c of closers.splice(0)) c();
});

function setup() {
  let state = ConfigState.empty();
  state = state.with(1n, [
    { op: "put", kind: "tenant", id: "t", data: encodeMessage(TenantSchema, create(TenantSchema, { id: "t", name: "t" })) },
    {
      op: "put",
      kind: "upstream",
      id: "up_a",
      data: encodeMessage(
        UpstreamSchema,
        create(UpstreamSchema, {
          id: "up_a",
          tenantId: "t",
          name: "a",
          healthCheck: { active: { type: "tcp" } },
          targets: [{ host: "10.0.0.1", port: 80 }, { host: "10.0.0.2", port: 80 }],
        }),
      ),
    },
  ]);
  const cache = new SnapshotCache(state, 0);
  const registry = new NodeRegistry();
  // Publishes only on events (no periodic timer), so every push here comes from a flip or a join.
  const fleet = new Fleet({ config: state, send: (id, msg) => server.sendTo(id, msg), publishIntervalMs: 0 });
  const server = new DiscoveryServer(cache, registry, TOKEN, {
    onConnect: (n) => fleet.nodeConnected(n),
    onDisconnect: (n) => fleet.nodeDisconnected(n),
    onReport: (n, r) => fleet.report(n, r),
  });
  closers.push(() => fleet.close(), () => cache.close());
  const client: Client<typeof DiscoveryService> = createClient(DiscoveryService, createRouterTransport((r) => r.service(DiscoveryService, server)));
  return { client, fleet, registry };
}

function open(client: Client<typeof DiscoveryService>, nodeId: string) {
  const requests = createWritableIterable<StreamRequest>();
  requests.write(create(StreamRequestSchema, { kind: { case: "hello", value: { nodeId } } })).catch(() => undefined);
  const responses = client.stream(requests, { headers: { authorization: `Bearer ${TOKEN}` } });
  closers.push(() => requests.close());
  // Reads the response side continuously, as a data plane does: the in-memory transport holds the
  // server's next message until the previous one is read, so an unread stream would stall.
  const received: FleetHealth[] = [];
  let ended = false;
  let wake: (() => void) | undefined;
  void (async () => {
    try {
      for await (const msg of responses as AsyncIterable<StreamResponse>) {
        if (msg.kind.case === "fleetHealth") received.push(msg.kind.value);
        wake?.();
      }
    } catch {
      // The stream ended with an error (e.g. replaced); `ended` reports it.
    }
    ended = true;
    wake?.();
  })();
  return {
    /** Next FleetHealth on the stream (snapshots are skipped). */
    async nextFleet(): Promise<FleetHealth> {
      while (received.length === 0) {
        if (ended) throw new Error("stream ended");
        await new Promise<void>((r) => (wake = r));
      }
      return received.shift()!;
    },
    /** Waits for a FleetHealth that satisfies `ok`. */
    async fleetUntil(ok: (h: FleetHealth) => boolean): Promise<FleetHealth> {
      for (;;) {
        const h = await this.nextFleet();
        if (ok(h)) return h;
      }
    },
    report: (r: Report) => requests.write(create(StreamRequestSchema, { kind: { case: "report", value: r } })),
    close: () => requests.close(),
    ended: () => ended,
  };
}

describe("fleet health over the discovery stream", () => {
  it("two nodes' reports make the fleet push down=true to a third node that never reported the target", async () => {
    const { client, fleet } = setup();
    const n1 = open(client, "n1");
    const n2 = open(client, "n2");
    const n3 = open(client, "n3");
    // Each node's first FleetHealth: with three nodes and k=3, everybody probes both targets.
    for (const n of [n1, n2, n3]) {
      const first = await n.nextFleet();
      expect(first.targets.filter((t) => t.probe).map((t) => t.target).sort()).toEqual(["10.0.0.1:80", "10.0.0.2:80"]);
    }
    expect(fleet.connectedNodes()).toBe(3);

    const dying = { backend: "up_a", target: "10.0.0.2:80", passive: "ejected", failures: 5, requests: 5 };
    await n1.report(report([dying, { backend: "up_a", target: "10.0.0.1:80", inFlight: 2, requests: 9 }]));
    await n2.report(report([dying, { backend: "up_a", target: "10.0.0.1:80", inFlight: 1, requests: 4 }]));

    const pushed = await n3.fleetUntil((h) => h.targets.some((t) => t.target === "10.0.0.2:80" && t.down));
    const byTarget = new Map(pushed.targets.map((t) => [t.target, t]));
    expect(byTarget.get("10.0.0.2:80")).toMatchObject({ backend: "up_a", down: true, probe: true });
    expect(byTarget.get("10.0.0.1:80")).toMatchObject({ down: false, inFlight: 3, probe: true });
    expect(fleet.view.verdict("up_a", "10.0.0.2:80")).toMatchObject({ down: true, voters: 2, downVotes: 2 });
    expect(fleet.backendStats("up_a", 60_000).total).toMatchObject({ requests: 23, failures: 10 });
  });

  it("a node that disconnects leaves the fleet: its vote goes and the verdict is withdrawn", async () => {
    const { client, fleet } = setup();
    const n1 = open(client, "n1");
    const n2 = open(client, "n2");
    const n3 = open(client, "n3");
    for (const n of [n1, n2, n3]) await n.nextFleet();
    const ejected = { backend: "up_a", target: "10.0.0.2:80", passive: "ejected" };
    await n1.report(report([ejected]));
    await n2.report(report([ejected]));
    await n3.fleetUntil((h) => h.targets.some((t) => t.target === "10.0.0.2:80" && t.down));
    n2.close();
    const after = await n3.fleetUntil((h) => !h.targets.some((t) => t.down));
    expect(fleet.connectedNodes()).toBe(2);
    expect(fleet.view.verdict("up_a", "10.0.0.2:80")).toMatchObject({ down: false, reporters: 1 });
    // With two nodes left and k=3, both still probe everything.
    expect(after.targets.filter((t) => t.probe)).toHaveLength(2);
  });

  it("the close of a replaced stream does not remove the node that reconnected", async () => {
    const { client, fleet } = setup();
    const old = open(client, "n1");
    await old.nextFleet();
    const fresh = open(client, "n1");
    await fresh.nextFleet();
    // The old stream ends once it notices it was replaced; its onDisconnect carries the old session.
    old.close();
    await expect(old.fleetUntil(() => false)).rejects.toThrow("stream ended");
    await fresh.report(report([{ backend: "up_a", target: "10.0.0.1:80", inFlight: 1 }]));
    for (let i = 0; i < 100 && fleet.view.verdict("up_a", "10.0.0.1:80") === undefined; i++) await new Promise((r) => setTimeout(r, 5));
    expect(fleet.connectedNodes()).toBe(1);
    expect(fleet.assignment.keysOf("n1").size).toBe(2);
    expect(fleet.view.verdict("up_a", "10.0.0.1:80")?.inFlight).toBe(1);
  });
});
