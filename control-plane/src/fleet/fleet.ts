import type { Rule } from "../../../proto/gen/gateway/v1/rule_pb.js";
import type { Report, StreamResponse } from "../../../proto/gen/gateway/v1/discovery_pb.js";
import type { Upstream } from "../../../proto/gen/gateway/v1/upstream_pb.js";
import { DEFAULT_PROBERS_PER_TARGET, ProbeAssignment, probedTargets } from "./probe-assignment.js";
import { FleetPublisher } from "./publisher.js";
import { FleetView, type BackendStats, type FleetViewOptions } from "./view.js";

/**
 * The control plane's fleet health: the view built from reports, the probe assignment and the
 * publisher that pushes FleetHealth, behind the three events the discovery stream reports (connect,
 * disconnect, report) and configuration changes. main.ts hangs it on DiscoveryServer's callbacks;
 * the API and rollouts read it.
 */

/** The part of a node's stream status the fleet needs: a reconnect gets a new session. */
export interface FleetNode {
  readonly nodeId: string;
  readonly session: number;
}

/** The configuration the fleet reads (ConfigState satisfies it). */
export interface FleetConfig {
  readonly upstreams: ReadonlyMap<string, Upstream>;
  readonly rules: ReadonlyMap<string, Rule>;
}

/** Options of a Fleet. */
export interface FleetOptions {
  /** Delivers a message to one node (DiscoveryServer.sendTo). */
  readonly send: (nodeId: string, msg: StreamResponse) => void;
  /** Configuration at start; later ones arrive through configChanged. */
  readonly config?: FleetConfig;
  /** Nodes assigned to actively probe each target. Default 3. */
  readonly probersPerTarget?: number;
  /** Publisher tick in ms (0: no timer, tests drive tick()). Default 1000. */
  readonly publishIntervalMs?: number;
  /** See FleetPublisherOptions.defer. */
  readonly defer?: (fn: () => void) => () => void;
  /** Options of the view (clock, windows, expiry). */
  readonly view?: FleetViewOptions;
}

/** Fleet health of one control plane. */
export class Fleet {
  readonly view: FleetView;
  readonly assignment: ProbeAssignment;
  readonly publisher: FleetPublisher;
  /** Connected nodes and their current session. */
  private readonly sessions = new Map<string, number>();

  constructor(opts: FleetOptions) {
    this.view = new FleetView(opts.view);
    this.assignment = new ProbeAssignment(opts.probersPerTarget ?? DEFAULT_PROBERS_PER_TARGET);
    if (opts.config !== undefined) this.assignment.setTargets(probedTargets(opts.config));
    this.publisher = new FleetPublisher({
      view: this.view,
      assignment: this.assignment,
      send: opts.send,
      intervalMs: opts.publishIntervalMs,
      defer: opts.defer,
    });
  }

  /** DiscoveryCallbacks.onConnect: the node may now be assigned probes and gets FleetHealth. */
  nodeConnected(node: FleetNode): void {
    const replaced = this.sessions.has(node.nodeId);
    this.sessions.set(node.nodeId, node.session);
    // A reconnect of the same node keeps its assignment and its view entries (same node, same
    // evidence); it only needs a full message on its new stream.
    if (!replaced) this.assignment.addNode(node.nodeId);
    this.publisher.nodeJoined(node.nodeId);
  }

  /**
   * DiscoveryCallbacks.onDisconnect: the node's view entries go at once and its probe targets move
   * to other nodes. The close of a stream that a newer stream of the same node replaced is ignored.
   */
  nodeDisconnected(node: FleetNode): void {
    if (this.sessions.get(node.nodeId) !== node.session) return;
    this.sessions.delete(node.nodeId);
    this.assignment.removeNode(node.nodeId);
    this.view.removeNode(node.nodeId);
    this.publisher.nodeLeft(node.nodeId);
  }

  /**
   * DiscoveryCallbacks.onReport. Reports of a stream that is not the node's current one are
   * ignored: a stream's reader may still deliver a report after the stream was closed or replaced,
   * and a node that left must not reappear in the view.
   */
  report(node: FleetNode, report: Report): void {
    if (this.sessions.get(node.nodeId) !== node.session) return;
    this.view.applyReport(node.nodeId, report);
  }

  /** A new configuration: targets with active checks are (re)assigned to probers. */
  configChanged(config: FleetConfig): void {
    this.assignment.setTargets(probedTargets(config));
    this.publisher.publishSoon();
  }

  /** Windowed traffic of a backend per target and in total (for rollouts); see FleetView.backendStats. */
  backendStats(backendId: string, windowMs: number): BackendStats {
    return this.view.backendStats(backendId, windowMs);
  }

  /** Number of connected nodes. */
  connectedNodes(): number {
    return this.sessions.size;
  }

  /** Stops the publisher's timers. */
  close(): void {
    this.publisher.close();
  }
}
