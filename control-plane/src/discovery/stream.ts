import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import {
  DiscoveryService,
  StreamResponseSchema,
  type Report,
  type StreamRequest,
  type StreamResponse,
} from "../../../proto/gen/gateway/v1/discovery_pb.js";
import type { Snapshot } from "../../../proto/gen/gateway/v1/snapshot_pb.js";
import { bearer } from "../config/auth.js";
import type { NodeRegistry, NodeStatus } from "./nodes.js";
import type { SnapshotCache } from "./snapshot-cache.js";

/** Callbacks for what the stream learns; logging and the fleet view hang here, not inline. */
export interface DiscoveryCallbacks {
  onConnect?(node: NodeStatus): void;
  onDisconnect?(node: NodeStatus, reason: string): void;
  onNack?(node: NodeStatus, version: bigint, error: string): void;
  onReport?(node: NodeStatus, report: Report): void;
}

/**
 * Holds what a stream still has to send. Only the newest snapshot matters, so a slow node never
 * accumulates a backlog: a newer snapshot replaces an unsent older one.
 */
class Outbox {
  private snapshot: Snapshot | undefined;
  private extra: StreamResponse[] = [];
  private wake: (() => void) | undefined;

  putSnapshot(s: Snapshot): void {
    this.snapshot = s;
    this.wake?.();
  }

  /** Queues a small message (fleet health); bounded, keeping only the newest few. */
  put(msg: StreamResponse): void {
    this.extra.push(msg);
    if (this.extra.length > 4) this.extra.shift();
    this.wake?.();
  }

  /** Next thing to send, or undefined when the signal aborts. */
  async next(signal: AbortSignal): Promise<Snapshot | StreamResponse | undefined> {
    for (;;) {
      if (signal.aborted) return undefined;
      if (this.snapshot !== undefined) {
        const s = this.snapshot;
        this.snapshot = undefined;
        return s;
      }
      const m = this.extra.shift();
      if (m !== undefined) return m;
      await new Promise<void>((resolve) => {
        const done = () => {
          this.wake = undefined;
          signal.removeEventListener("abort", done);
          resolve();
        };
        this.wake = done;
        signal.addEventListener("abort", done, { once: true });
      });
    }
  }
}

/**
 * The discovery stream server, xDS-style (state of the world). It reads snapshots from the cache and
 * node status from the registry; it stores nothing itself.
 */
export class DiscoveryServer implements ServiceImpl<typeof DiscoveryService> {
  private readonly tokenHash: Buffer;
  private readonly outboxes = new Map<string, { node: NodeStatus; outbox: Outbox }>();

  constructor(
    private readonly cache: SnapshotCache,
    private readonly registry: NodeRegistry,
    nodeToken: string,
    private readonly callbacks: DiscoveryCallbacks = {},
  ) {
    this.tokenHash = createHash("sha256").update(nodeToken).digest();
  }

  /** Sends a message (e.g. fleet health) to every connected node; each node keeps only the newest few. */
  broadcast(msg: StreamResponse): void {
    for (const { outbox } of this.outboxes.values()) outbox.put(msg);
  }

  /** Sends a message to one node, if connected. */
  sendTo(nodeId: string, msg: StreamResponse): void {
    this.outboxes.get(nodeId)?.outbox.put(msg);
  }

  async *stream(requests: AsyncIterable<StreamRequest>, ctx: HandlerContext): AsyncIterable<StreamResponse> {
    this.authenticate(ctx.requestHeader.get("authorization"));
    const it = requests[Symbol.asyncIterator]();
    const first = await it.next();
    if (first.done || first.value.kind.case !== "hello") {
      throw new ConnectError("the first message on a discovery stream must be Hello", Code.InvalidArgument);
    }
    const hello = first.value.kind.value;
    if (hello.nodeId === "" || hello.nodeId.length > 256) {
      throw new ConnectError("hello.node_id: must be 1-256 characters", Code.InvalidArgument);
    }

    const node = this.registry.connect(hello);
    const outbox = new Outbox();
    // A reconnecting node replaces its previous stream; that stream ends when it notices.
    this.outboxes.set(node.nodeId, { node, outbox });
    this.callbacks.onConnect?.(node);
    const sent = new Map<string, bigint>(); // nonce -> version, for the pushes not yet answered
    // Version the node holds once it applies what we sent: the base of the next delta. The node's
    // own version counts at first: versions are global, so equal versions mean equal resources.
    let base = hello.lastAppliedVersion;
    let deltaNonce = "";

    // Ends this generator when the client goes away, the server shuts down, or a newer stream of the
    // same node takes over.
    const stop = new AbortController();
    const onAbort = () => stop.abort();
    ctx.signal.addEventListener("abort", onAbort, { once: true });

    let readerError: string | undefined;
    const reader = (async () => {
      for (;;) {
        const r = await it.next();
        if (r.done) break;
        if (!this.registry.isCurrent(node)) break;
        const msg = r.value.kind;
        switch (msg.case) {
          case "ack": {
            // Stale nonces are ignored, as in xDS: an ACK for a push that a newer push superseded
            // says nothing about the newer one.
            const version = sent.get(msg.value.nonce);
            if (version === undefined) break;
            sent.delete(msg.value.nonce);
            this.registry.ack(node, version);
            break;
          }
          case "nack": {
            const version = sent.get(msg.value.nonce);
            if (version === undefined) break;
            sent.delete(msg.value.nonce);
            if (msg.value.nonce === deltaNonce) {
              // The node could not apply the delta (e.g. it lost its state): resync it in full.
              base = 0n;
              outbox.putSnapshot(this.cache.current());
            } else {
              // A refused full snapshot: the node keeps serving what it had; the next push is
              // computed from there (not re-sent now, it would be refused again).
              base = msg.value.appliedVersion;
            }
            this.registry.nack(node, msg.value.error);
            this.callbacks.onNack?.(node, version, msg.value.error);
            break;
          }
          case "report":
            this.registry.seen(node);
            this.callbacks.onReport?.(node, msg.value);
            break;
          case "hello":
            throw new ConnectError("Hello may only be sent once per stream", Code.InvalidArgument);
          default:
            break;
        }
      }
    })().finally(() => stop.abort());
    reader.catch((err: unknown) => {
      readerError = err instanceof Error ? err.message : String(err);
    });

    const unwatch = this.cache.watch((s) => outbox.putSnapshot(s));
    const current = this.cache.current();
    // A node that already serves the current version (e.g. after a control-plane restart) needs no
    // push; a node with nothing yet gets even an empty configuration, so it can answer 404, not 503.
    if (hello.lastAppliedVersion !== current.version || current.version === 0n) outbox.putSnapshot(current);

    let reason = "stream closed";
    try {
      for (;;) {
        const next = await outbox.next(stop.signal);
        if (next === undefined) break;
        if (!this.registry.isCurrent(node)) {
          reason = "replaced by a newer stream of the same node";
          break;
        }
        if (next.$typeName === "gateway.v1.Snapshot") {
          if (next.version === base && base !== 0n) continue;
          const nonce = randomBytes(8).toString("hex");
          // Only the newest push can be acknowledged meaningfully; older nonces become stale.
          sent.clear();
          sent.set(nonce, next.version);
          const delta = base === 0n ? undefined : this.cache.deltaSince(base);
          base = next.version;
          if (delta !== undefined && delta.version === next.version) {
            deltaNonce = nonce;
            yield create(StreamResponseSchema, { nonce, kind: { case: "delta", value: delta } });
          } else {
            deltaNonce = "";
            yield create(StreamResponseSchema, { nonce, kind: { case: "snapshot", value: next } });
          }
        } else {
          yield next;
        }
      }
      // The reader is not awaited: a replaced stream's client may never send again, and the
      // transport ends the request side when this generator returns.
      if (readerError !== undefined) reason = readerError;
    } finally {
      unwatch();
      ctx.signal.removeEventListener("abort", onAbort);
      stop.abort();
      if (this.outboxes.get(node.nodeId)?.node === node) this.outboxes.delete(node.nodeId);
      this.registry.disconnect(node);
      this.callbacks.onDisconnect?.(node, ctx.signal.aborted ? "client or server closed the stream" : reason);
    }
  }

  private authenticate(header: string | null): void {
    const token = bearer(header);
    if (token === undefined) throw new ConnectError("missing node token (authorization: Bearer <token>)", Code.Unauthenticated);
    const digest = createHash("sha256").update(token).digest();
    if (!timingSafeEqual(digest, this.tokenHash)) throw new ConnectError("invalid node token", Code.Unauthenticated);
  }
}
