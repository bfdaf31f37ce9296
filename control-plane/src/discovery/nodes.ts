import { create } from "@bufbuild/protobuf";
import { NodeSchema, type Node } from "../../../proto/gen/gateway/v1/config_service_pb.js";
import type { Hello } from "../../../proto/gen/gateway/v1/discovery_pb.js";

/**
 * Per-node bookkeeping of the discovery stream: who is connected, which version each node has
 * acknowledged, and its last NACK. Knows nothing about snapshots or transports.
 */

/** Mutable status of one node. */
export interface NodeStatus {
  readonly nodeId: string;
  labels: Record<string, string>;
  softwareVersion: string;
  ackedVersion: bigint;
  lastError: string;
  connected: boolean;
  lastSeenMs: number;
  connectedSinceMs: number;
  /** Identifies the current stream, so a replaced stream's teardown does not mark the node offline. */
  session: number;
}

/** How long a disconnected node stays listed. */
const FORGET_AFTER_MS = 24 * 3600_000;

export class NodeRegistry {
  private readonly nodes = new Map<string, NodeStatus>();
  private nextSession = 1;
  private readonly ackListeners = new Set<(nodeId: string, version: bigint) => void>();

  /** Records a stream opening; returns the session id for later calls. */
  connect(hello: Hello, now = Date.now()): NodeStatus {
    const existing = this.nodes.get(hello.nodeId);
    const status: NodeStatus = {
      nodeId: hello.nodeId,
      labels: { ...hello.labels },
      softwareVersion: hello.softwareVersion,
      ackedVersion: hello.lastAppliedVersion,
      lastError: existing?.lastError ?? "",
      connected: true,
      lastSeenMs: now,
      connectedSinceMs: now,
      session: this.nextSession++,
    };
    this.nodes.set(hello.nodeId, status);
    return status;
  }

  /** Records a stream closing, unless a newer stream of the same node replaced it. */
  disconnect(status: NodeStatus, now = Date.now()): void {
    const current = this.nodes.get(status.nodeId);
    if (current === undefined || current.session !== status.session) return;
    current.connected = false;
    current.lastSeenMs = now;
  }

  /** Whether `status` is still the node's current session. */
  isCurrent(status: NodeStatus): boolean {
    return this.nodes.get(status.nodeId)?.session === status.session;
  }

  ack(status: NodeStatus, version: bigint, now = Date.now()): void {
    status.lastSeenMs = now;
    status.lastError = "";
    if (version > status.ackedVersion) status.ackedVersion = version;
    for (const l of this.ackListeners) l(status.nodeId, version);
  }

  nack(status: NodeStatus, error: string, now = Date.now()): void {
    status.lastSeenMs = now;
    status.lastError = error;
  }

  seen(status: NodeStatus, now = Date.now()): void {
    status.lastSeenMs = now;
  }

  /** Calls `listener` on every ACK (used by tools that wait for convergence). */
  onAck(listener: (nodeId: string, version: bigint) => void): () => void {
    this.ackListeners.add(listener);
    return () => this.ackListeners.delete(listener);
  }

  /** Connected nodes and recently disconnected ones, as the API lists them. */
  list(now = Date.now()): Node[] {
    const out: Node[] = [];
    for (const [id, n] of this.nodes) {
      if (!n.connected && now - n.lastSeenMs > FORGET_AFTER_MS) {
        this.nodes.delete(id);
        continue;
      }
      out.push(
        create(NodeSchema, {
          nodeId: n.nodeId,
          labels: n.labels,
          softwareVersion: n.softwareVersion,
          ackedVersion: n.ackedVersion,
          lastError: n.lastError,
          connected: n.connected,
          lastSeenMs: BigInt(n.lastSeenMs),
          connectedSinceMs: BigInt(n.connectedSinceMs),
        }),
      );
    }
    return out.sort((a, b) => a.nodeId.localeCompare(b.nodeId));
  }

  /** Number of nodes with an open stream. */
  connectedCount(): number {
    let n = 0;
    for (const s of this.nodes.values()) if (s.connected) n++;
    return n;
  }
}
