import { create } from "@bufbuild/protobuf";
import {
  FleetHealthSchema,
  FleetTargetSchema,
  StreamResponseSchema,
  type FleetTarget,
  type StreamResponse,
} from "../../../proto/gen/gateway/v1/discovery_pb.js";
import { probeKey, type ProbeAssignment } from "./probe-assignment.js";
import type { FleetView } from "./view.js";

/**
 * Pushes FleetHealth to every connected data plane: per target the fleet verdict (`down`), the
 * fleet's in-flight count and whether this node is assigned to probe it.
 *
 * Every message is complete (state of the world, like a snapshot), never a delta: a target absent
 * from it is not down, has no fleet in-flight requests and is not this node's to probe. So a node
 * may apply only the newest message it has, and the stream's outbox may drop older ones under
 * backpressure without losing anything. To keep messages small, targets with nothing to say
 * (up, nothing in flight, not probed by this node) are left out.
 *
 * A node is sent a message only when its content would differ from the last one it was sent: when
 * a verdict or an in-flight count changed (checked every tick) or its probe assignment changed. A
 * newly connected node always gets one at once. Verdict flips and nodes joining or leaving publish
 * at once (coalesced into one pass per turn of the event loop); in-flight counts ride the periodic
 * tick (default every second), as they move constantly and a second's lag is what least-connections
 * across the fleet tolerates anyway.
 */

/** Options of a FleetPublisher. */
export interface FleetPublisherOptions {
  readonly view: FleetView;
  readonly assignment: ProbeAssignment;
  /** Delivers a message to one node (DiscoveryServer.sendTo). */
  readonly send: (nodeId: string, msg: StreamResponse) => void;
  /** Period of the tick (sweep the view, publish what changed). Default 1000; 0 disables the timer. */
  readonly intervalMs?: number;
  /**
   * Runs `fn` soon, once per burst of triggers; returns a canceller. Default setImmediate. Tests
   * pass a function that records `fn` and run it when they choose.
   */
  readonly defer?: (fn: () => void) => () => void;
}

interface NodeState {
  /** Fleet generation and assignment version last sent; undefined before the first send. */
  sentFleet: number | undefined;
  sentProbes: number | undefined;
}

/** Periodically and on change, sends each connected node its FleetHealth. */
export class FleetPublisher {
  private readonly nodes = new Map<string, NodeState>();
  private readonly timer: NodeJS.Timeout | undefined;
  private readonly defer: (fn: () => void) => () => void;
  private readonly unsubscribe: () => void;
  private cancelSoon: (() => void) | undefined;
  /** Fleet-wide part of the last pass, shared by every node's message. */
  private fleet: FleetTarget[] = [];
  private fleetIndex = new Map<string, FleetTarget>();
  private fleetSignature = "";
  private fleetGeneration = 0;
  private closed = false;

  constructor(private readonly opts: FleetPublisherOptions) {
    this.defer =
      opts.defer ??
      ((fn) => {
        const h = setImmediate(fn);
        return () => clearImmediate(h);
      });
    this.unsubscribe = opts.view.onVerdictChange(() => this.publishSoon());
    const interval = opts.intervalMs ?? 1_000;
    if (interval > 0) {
      this.timer = setInterval(() => this.tick(), interval);
      this.timer.unref();
    }
  }

  /** A node connected (or reconnected): it gets a full message at the next pass, which runs soon. */
  nodeJoined(nodeId: string): void {
    this.nodes.set(nodeId, { sentFleet: undefined, sentProbes: undefined });
    this.publishSoon();
  }

  /** A node's stream closed: nothing more is sent to it. */
  nodeLeft(nodeId: string): void {
    this.nodes.delete(nodeId);
    this.publishSoon();
  }

  /** Asks for a pass soon (coalesced): after a verdict flip, a join or leave, a configuration change. */
  publishSoon(): void {
    if (this.closed || this.cancelSoon !== undefined) return;
    this.cancelSoon = this.defer(() => {
      this.cancelSoon = undefined;
      this.publish();
    });
  }

  /** The periodic pass: applies the passage of time to the view, then publishes what changed. */
  tick(): void {
    if (this.closed) return;
    this.opts.view.sweep();
    this.publish();
  }

  /** Sends every node whose message changed its new message; returns how many nodes were sent one. */
  publish(): number {
    if (this.closed) return 0;
    this.refreshFleet();
    const { assignment, send } = this.opts;
    let sent = 0;
    for (const [nodeId, st] of this.nodes) {
      const probes = assignment.versionOf(nodeId);
      if (st.sentFleet === this.fleetGeneration && st.sentProbes === probes) continue;
      send(nodeId, this.messageFor(nodeId));
      st.sentFleet = this.fleetGeneration;
      st.sentProbes = probes;
      sent++;
    }
    return sent;
  }

  /** Stops the timer and any pending pass; later calls do nothing. */
  close(): void {
    this.closed = true;
    this.unsubscribe();
    if (this.timer !== undefined) clearInterval(this.timer);
    this.cancelSoon?.();
    this.cancelSoon = undefined;
    this.nodes.clear();
  }

  /** Rebuilds the fleet-wide part; bumps the generation when it differs from the previous pass. */
  private refreshFleet(): void {
    const list: FleetTarget[] = [];
    const index = new Map<string, FleetTarget>();
    const parts: string[] = [];
    for (const v of this.opts.view.verdicts()) {
      if (!v.down && v.inFlight <= 0) continue;
      const ft = create(FleetTargetSchema, { backend: v.backend, target: v.target, down: v.down, inFlight: Math.max(0, v.inFlight) });
      list.push(ft);
      index.set(probeKey(v.backend, v.target), ft);
      parts.push(`${v.backend}|${v.target}|${v.down ? 1 : 0}|${ft.inFlight}`);
    }
    const signature = parts.join("\n");
    if (signature === this.fleetSignature && this.fleetGeneration > 0) return;
    this.fleet = list;
    this.fleetIndex = index;
    this.fleetSignature = signature;
    this.fleetGeneration++;
  }

  /** The shared fleet targets, with this node's probe assignments merged in. */
  private messageFor(nodeId: string): StreamResponse {
    const keys = this.opts.assignment.keysOf(nodeId);
    const targets: FleetTarget[] = [];
    for (const ft of this.fleet) {
      // Shared objects are never mutated once built; a probed target gets its own copy.
      targets.push(keys.has(probeKey(ft.backend, ft.target)) ? create(FleetTargetSchema, { backend: ft.backend, target: ft.target, down: ft.down, inFlight: ft.inFlight, probe: true }) : ft);
    }
    for (const key of keys) {
      if (this.fleetIndex.has(key)) continue;
      const ref = this.opts.assignment.target(key);
      if (ref !== undefined) targets.push(create(FleetTargetSchema, { backend: ref.backend, target: ref.target, probe: true }));
    }
    return create(StreamResponseSchema, { nonce: "", kind: { case: "fleetHealth", value: create(FleetHealthSchema, { targets }) } });
  }
}
