import { create, toBinary, type UnknownField } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import {
  DiscoveryService,
  StreamResponseSchema,
  type Report,
  type StreamRequest,
  type StreamResponse,
} from "../../../proto/gen/gateway/v1/discovery_pb.js";
import { DeltaSchema, SnapshotSchema, type Delta, type Snapshot } from "../../../proto/gen/gateway/v1/snapshot_pb.js";
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
 *
 * One per connected node, so it is kept small: no timers, no listeners, one pending wake-up.
 */
class Outbox {
  private snapshot: Snapshot | undefined;
  private extra: StreamResponse[] | undefined;
  private wake: (() => void) | undefined;
  /** Set once the stream is ending; nothing more is handed out. */
  closed = false;

  putSnapshot(s: Snapshot): void {
    this.snapshot = s;
    this.notify();
  }

  /** Queues a small message (fleet health); bounded, keeping only the newest few. */
  put(msg: StreamResponse): void {
    this.extra ??= [];
    this.extra.push(msg);
    if (this.extra.length > 4) this.extra.shift();
    this.notify();
  }

  /** Ends the stream's sending side (client gone, server shutting down, reader done). */
  close(): void {
    this.closed = true;
    this.notify();
  }

  /** Next thing to send, or undefined when nothing is queued (or the outbox is closed). */
  take(): Snapshot | StreamResponse | undefined {
    if (this.closed) return undefined;
    if (this.snapshot !== undefined) {
      const s = this.snapshot;
      this.snapshot = undefined;
      return s;
    }
    return this.extra?.shift();
  }

  /** Resolves at the next put or close. */
  wait(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.wake = resolve;
    });
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}

/**
 * One node's stream: its outbox and what it was sent and acknowledged. A transport only waits on
 * the outbox (and closes it when its stream goes away); the rest is DiscoveryServer's.
 */
export class Session {
  readonly outbox = new Outbox();
  /**
   * Version the node holds once it applies what we sent: the base of the next delta. The node's own
   * version counts at first: versions are global, so equal versions mean equal resources.
   */
  base: bigint;
  /**
   * Nonce and version of the push awaiting an answer. Only the newest push can be acknowledged
   * meaningfully: sending a newer one makes the older nonce stale.
   */
  pendingNonce: string | undefined;
  pendingVersion = 0n;
  /** Nonce of the last push if it was a delta (a NACK of it asks for a full resync). */
  deltaNonce: string | undefined;
  /** Why the stream ends, when it is not simply closed: a reader error, or a newer stream. */
  endReason: string | undefined;

  constructor(
    readonly node: NodeStatus,
    helloVersion: bigint,
  ) {
    this.base = helloVersion;
  }
}

/** A snapshot or delta about to be pushed, with the nonce the node must echo. */
export interface Push {
  readonly nonce: string;
  readonly payload: { case: "snapshot"; value: Snapshot } | { case: "delta"; value: Delta };
}

/**
 * Nonces are unique per push: a random per-process prefix and a counter. Cheaper than random bytes
 * per push, and never repeated within a process or (with overwhelming probability) across restarts.
 */
const NONCE_PREFIX = randomBytes(6).toString("hex");
let nonceSeq = 0;
function nextNonce(): string {
  return NONCE_PREFIX + (++nonceSeq).toString(16);
}

/**
 * Payloads encoded once and shared by every stream that pushes them (snapshots and deltas are
 * immutable). The field is the `snapshot` or `delta` member of StreamResponse's oneof, encoded as
 * protobuf-es represents an unknown field: its number, wire type, and data (length prefix and
 * bytes). Serializing a push then costs a stream its nonce and a copy instead of an encoding of
 * every resource (~1 MB at 10,000 rules).
 */
const encoded = new WeakMap<Snapshot | Delta, UnknownField>();
const SNAPSHOT_FIELD = StreamResponseSchema.field.snapshot.number;
const DELTA_FIELD = StreamResponseSchema.field.delta.number;

export function encodedPayload(payload: Push["payload"]): UnknownField {
  let field = encoded.get(payload.value);
  if (field === undefined) {
    const body = payload.case === "snapshot" ? toBinary(SnapshotSchema, payload.value) : toBinary(DeltaSchema, payload.value);
    field = {
      no: payload.case === "snapshot" ? SNAPSHOT_FIELD : DELTA_FIELD,
      wireType: WireType.LengthDelimited,
      data: new BinaryWriter().bytes(body).finish(),
    };
    encoded.set(payload.value, field);
  }
  return field;
}

/**
 * The push as a message. For a binary codec its payload is the pre-encoded field, carried in
 * `$unknown`: protobuf-es writes unknown fields verbatim after the known ones, so the bytes on the
 * wire are exactly those of a StreamResponse with the oneof member set. JSON has no unknown fields,
 * so a JSON client gets the message itself.
 */
function pushMessage(push: Push, binary: boolean): StreamResponse {
  if (!binary) return create(StreamResponseSchema, { nonce: push.nonce, kind: push.payload });
  const msg = create(StreamResponseSchema, { nonce: push.nonce });
  msg.$unknown = [encodedPayload(push.payload)];
  return msg;
}

/**
 * Streams handed a newly published snapshot per turn of the event loop. Waking every stream at once
 * would run every stream's whole send path in one burst of microtasks (over a second at 10,000
 * nodes), during which no ACK is read and no HTTP/2 PING answered, so clients time out and reconnect
 * in a storm. In batches, the first nodes' pushes are on the wire while later ones are prepared.
 */
const FANOUT_BATCH = 250;

/**
 * The discovery protocol step by step, for a transport that frames it itself (grpc-stream.ts):
 * authenticate, open a session with the first message, hand it every later message, send what
 * nextOutgoing gives (waiting on the session's outbox when it gives nothing), and end it.
 */
export interface DiscoverySessions {
  /** Checks the node token of a stream; throws Unauthenticated. */
  authenticate(header: string | null | undefined): void;
  /** Starts a session from the stream's first message; throws InvalidArgument unless it is a valid Hello. */
  open(first: StreamRequest | undefined): Session;
  /** Handles a later message; false when the stream should stop reading. Throws on a second Hello. */
  receive(session: Session, request: StreamRequest): boolean;
  /** The request side ended (with `error` if it broke): the stream ends. */
  readerDone(session: Session, error?: unknown): void;
  /** The next message to send, or undefined when there is none now. */
  nextOutgoing(session: Session): Push | StreamResponse | undefined;
  /** The stream is over; `closedBy` says why when the client or server closed it. */
  end(session: Session, closedBy?: string): void;
}

/**
 * The discovery stream server, xDS-style (state of the world). It reads snapshots from the cache and
 * node status from the registry; it stores nothing itself.
 *
 * The protocol (Hello, pushes, ACK/NACK, reports) is written once, against sessions: `stream()` runs
 * it inside Connect's handler (every protocol and codec), grpc-stream.ts runs it on raw HTTP/2
 * streams for gRPC clients.
 */
export class DiscoveryServer implements ServiceImpl<typeof DiscoveryService>, DiscoverySessions {
  private readonly tokenHash: Buffer;
  /** The current session of each node (a replaced stream stays in `sessions` until it ends). */
  private readonly current = new Map<string, Session>();
  /** Every open stream, replaced ones included: each gets every published snapshot. */
  private readonly sessions = new Set<Session>();
  /** Streams still to be handed the newest snapshot, and the turn that hands out the next batch. */
  private fanout: Session[] = [];
  private fanoutAt = 0;
  private fanoutTurn: NodeJS.Immediate | undefined;

  constructor(
    private readonly cache: SnapshotCache,
    private readonly registry: NodeRegistry,
    nodeToken: string,
    private readonly callbacks: DiscoveryCallbacks = {},
  ) {
    this.tokenHash = createHash("sha256").update(nodeToken).digest();
    // One watcher for all streams, not a closure per stream. A publication during a fan-out starts
    // it over: every stream, including those already woken, gets the newer snapshot.
    cache.watch(() => {
      if (this.fanoutTurn !== undefined) clearImmediate(this.fanoutTurn);
      this.fanout = [...this.sessions];
      this.fanoutAt = 0;
      this.fanOut();
    });
  }

  /** Sends a message (e.g. fleet health) to every connected node; each node keeps only the newest few. */
  broadcast(msg: StreamResponse): void {
    for (const { outbox } of this.current.values()) outbox.put(msg);
  }

  /** Sends a message to one node, if connected. */
  sendTo(nodeId: string, msg: StreamResponse): void {
    this.current.get(nodeId)?.outbox.put(msg);
  }

  async *stream(requests: AsyncIterable<StreamRequest>, ctx: HandlerContext): AsyncIterable<StreamResponse> {
    this.authenticate(ctx.requestHeader.get("authorization"));
    const it = requests[Symbol.asyncIterator]();
    const first = await it.next();
    const session = this.open(first.done ? undefined : first.value);
    const binary = !/json/i.test(ctx.requestHeader.get("content-type") ?? "");
    const outbox = session.outbox;
    // Ends this generator when the client goes away, the server shuts down, or the reader stops
    // (which it does when a newer stream of the same node takes over).
    const onAbort = () => outbox.close();
    ctx.signal.addEventListener("abort", onAbort, { once: true });
    if (ctx.signal.aborted) outbox.close();
    // The reader is not awaited: a replaced stream's client may never send again, and the
    // transport ends the request side when this generator returns.
    void this.read(session, it);
    try {
      for (;;) {
        const next = this.nextOutgoing(session);
        if (next === undefined) {
          if (outbox.closed) break;
          await outbox.wait();
          continue;
        }
        yield "payload" in next ? pushMessage(next, binary) : next;
      }
    } finally {
      ctx.signal.removeEventListener("abort", onAbort);
      this.end(session, ctx.signal.aborted ? "client or server closed the stream" : undefined);
    }
  }

  authenticate(header: string | null | undefined): void {
    const token = bearer(header ?? null);
    if (token === undefined) throw new ConnectError("missing node token (authorization: Bearer <token>)", Code.Unauthenticated);
    const digest = createHash("sha256").update(token).digest();
    if (!timingSafeEqual(digest, this.tokenHash)) throw new ConnectError("invalid node token", Code.Unauthenticated);
  }

  /** Registers the node and queues the current snapshot if the node needs it. */
  open(first: StreamRequest | undefined): Session {
    if (first === undefined || first.kind.case !== "hello") {
      throw new ConnectError("the first message on a discovery stream must be Hello", Code.InvalidArgument);
    }
    const hello = first.kind.value;
    if (hello.nodeId === "" || hello.nodeId.length > 256) {
      throw new ConnectError("hello.node_id: must be 1-256 characters", Code.InvalidArgument);
    }
    const node = this.registry.connect(hello);
    const session = new Session(node, hello.lastAppliedVersion);
    // A reconnecting node replaces its previous stream; that stream ends when it notices.
    this.current.set(node.nodeId, session);
    this.callbacks.onConnect?.(node);
    this.sessions.add(session);
    const current = this.cache.current();
    // A node that already serves the current version (e.g. after a control-plane restart) needs no
    // push; a node with nothing yet gets even an empty configuration, so it can answer 404, not 503.
    if (hello.lastAppliedVersion !== current.version || current.version === 0n) session.outbox.putSnapshot(current);
    return session;
  }

  /** ACKs, NACKs and reports. A stream stops reading once a newer stream of its node took over. */
  receive(session: Session, request: StreamRequest): boolean {
    const node = session.node;
    if (!this.registry.isCurrent(node)) return false;
    const msg = request.kind;
    switch (msg.case) {
      case "ack": {
        // Stale nonces are ignored, as in xDS: an ACK for a push that a newer push superseded
        // says nothing about the newer one.
        if (session.pendingNonce === undefined || msg.value.nonce !== session.pendingNonce) break;
        session.pendingNonce = undefined;
        this.registry.ack(node, session.pendingVersion);
        break;
      }
      case "nack": {
        if (session.pendingNonce === undefined || msg.value.nonce !== session.pendingNonce) break;
        session.pendingNonce = undefined;
        const version = session.pendingVersion;
        if (msg.value.nonce === session.deltaNonce) {
          // The node could not apply the delta (e.g. it lost its state): resync it in full.
          session.base = 0n;
          session.outbox.putSnapshot(this.cache.current());
        } else {
          // A refused full snapshot: the node keeps serving what it had; the next push is
          // computed from there (not re-sent now, it would be refused again).
          session.base = msg.value.appliedVersion;
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
    return true;
  }

  readerDone(session: Session, error?: unknown): void {
    if (error !== undefined) session.endReason = error instanceof Error ? error.message : String(error);
    session.outbox.close();
  }

  /**
   * A push (delta from the version last sent when the cache knows it, else the full snapshot) or a
   * queued message. Closes the outbox of a stream that a newer stream of the same node replaced.
   */
  nextOutgoing(session: Session): Push | StreamResponse | undefined {
    for (;;) {
      const next = session.outbox.take();
      if (next === undefined) return undefined;
      if (!this.registry.isCurrent(session.node)) {
        session.endReason ??= "replaced by a newer stream of the same node";
        session.outbox.close();
        return undefined;
      }
      if (next.$typeName !== "gateway.v1.Snapshot") return next;
      if (next.version === session.base && session.base !== 0n) continue;
      const nonce = nextNonce();
      session.pendingNonce = nonce;
      session.pendingVersion = next.version;
      const delta = session.base === 0n ? undefined : this.cache.deltaSince(session.base);
      session.base = next.version;
      if (delta !== undefined && delta.version === next.version) {
        session.deltaNonce = nonce;
        return { nonce, payload: { case: "delta", value: delta } };
      }
      session.deltaNonce = undefined;
      return { nonce, payload: { case: "snapshot", value: next } };
    }
  }

  end(session: Session, closedBy?: string): void {
    this.sessions.delete(session);
    session.outbox.close();
    const node = session.node;
    if (this.current.get(node.nodeId) === session) this.current.delete(node.nodeId);
    this.registry.disconnect(node);
    this.callbacks.onDisconnect?.(node, closedBy ?? session.endReason ?? "stream closed");
  }

  /** Hands the newest snapshot to the next batch of streams; schedules the rest. */
  private fanOut(): void {
    this.fanoutTurn = undefined;
    const snapshot = this.cache.current();
    const end = Math.min(this.fanout.length, this.fanoutAt + FANOUT_BATCH);
    for (; this.fanoutAt < end; this.fanoutAt++) this.fanout[this.fanoutAt].outbox.putSnapshot(snapshot);
    if (this.fanoutAt < this.fanout.length) this.fanoutTurn = setImmediate(() => this.fanOut());
    else this.fanout = [];
  }

  /** Connect's request side: every message to `receive`, until it ends or the node reconnects. */
  private async read(session: Session, it: AsyncIterator<StreamRequest>): Promise<void> {
    try {
      for (;;) {
        const r = await it.next();
        if (r.done || !this.receive(session, r.value)) break;
      }
      this.readerDone(session);
    } catch (err) {
      this.readerDone(session, err);
    }
  }
}
