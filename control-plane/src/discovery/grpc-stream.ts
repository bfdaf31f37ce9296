import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { Code, ConnectError } from "@connectrpc/connect";
import type http2 from "node:http2";
import {
  DiscoveryService,
  StreamRequestSchema,
  StreamResponseSchema,
  type StreamRequest,
  type StreamResponse,
} from "../../../proto/gen/gateway/v1/discovery_pb.js";
import { encodedPayload, type DiscoverySessions, type Push, type Session } from "./stream.js";

/**
 * DiscoveryService.Stream for gRPC clients with the protobuf codec (every data plane), served
 * directly on the HTTP/2 stream rather than through Connect's generic handler. The protocol is
 * DiscoveryServer's; this file only frames it (5-byte envelopes, gRPC status in trailers).
 *
 * Why: Connect runs each stream through about a dozen async generators plus Node's HTTP/2
 * compatibility request and response; test/bench/fanout.mjs measures ~55 KB per idle stream and
 * ~130 µs of control-plane CPU per node per push that way, so 10,000 data planes miss the budgets
 * (20 KB per node, every node acked within 2 s). Here a stream is an Http2Stream and a session
 * (~9 KB), and a push is a small per-stream head and a write of the payload encoded once for the
 * whole fleet (~20 µs per node).
 *
 * Anything else (Connect or gRPC-Web protocol, JSON codec, compressed requests, deadlines) is left
 * to Connect, which serves the same DiscoveryServer. Pushes are sent uncompressed: Connect would
 * gzip every push over 1 KB once per stream, which at 10,000 rules (~1 MB) is what a fleet resync
 * would spend its CPU on.
 */

/** The method's HTTP path. */
export const STREAM_PATH = `/${DiscoveryService.typeName}/${DiscoveryService.method.stream.name}`;

/** Largest request message accepted (reports of big upstreams stay far below). */
const READ_MAX_BYTES = 64 * 1024 * 1024;

/**
 * Large payloads (full snapshots: ~1 MB at 10,000 rules) are written in slices of this size, the
 * next once the previous has drained. Node counts data queued on an HTTP/2 stream against its
 * session's memory limit and refuses new streams on that session (ENHANCE_YOUR_CALM) while it is
 * exceeded; a push written whole to each of a few hundred streams of one connection would be.
 */
const SLICE_BYTES = 16 * 1024;

const CONTENT_TYPE = "application/grpc+proto";

/**
 * Messages other than pushes (fleet health), encoded once per object: a message broadcast to
 * every node is one object, so the fleet pays for one encoding.
 */
const encodedMessages = new WeakMap<StreamResponse, Buffer>();

/**
 * Returns a handler for http2 'stream' events that claims the discovery streams it can serve (and
 * returns false for everything else). Aborting `shutdown` ends its streams with Unavailable, as
 * Connect's shutdownSignal does for the streams it serves.
 */
export function grpcStreamHandler(server: DiscoverySessions, shutdown?: AbortSignal): (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => boolean {
  const live = new Set<GrpcStream>();
  shutdown?.addEventListener(
    "abort",
    () => {
      for (const s of live) s.fail(new ConnectError("control plane shutting down", Code.Unavailable));
    },
    { once: true },
  );
  return (stream, headers) => {
    if (headers[":path"] !== STREAM_PATH || headers[":method"] !== "POST") return false;
    const type = headers["content-type"];
    if (type !== "application/grpc" && type !== CONTENT_TYPE) return false;
    const encoding = headers["grpc-encoding"];
    if ((encoding !== undefined && encoding !== "identity") || headers["grpc-timeout"] !== undefined) return false;
    if (shutdown?.aborted) return false;
    const s = new GrpcStream(server, stream, () => live.delete(s));
    live.add(s);
    s.start(headers.authorization);
    return true;
  };
}

/** One discovery stream framed as gRPC: 5-byte envelopes (flags, length) around protobuf messages. */
class GrpcStream {
  private session: Session | undefined;
  /** Bytes of an envelope not yet complete. */
  private partial: Buffer | undefined;
  private reading = true;
  private respondedHeaders = false;
  private finished = false;
  /** Status the stream ends with (OK unless set). */
  private status: ConnectError | undefined;
  private closedByPeer = false;

  constructor(
    private readonly server: DiscoverySessions,
    private readonly stream: http2.ServerHttp2Stream,
    private readonly onDone: () => void,
  ) {}

  start(authorization: string | undefined): void {
    const stream = this.stream;
    stream.on("error", () => undefined); // a reset surfaces as 'close'
    stream.on("close", () => this.onClose());
    try {
      this.server.authenticate(authorization);
    } catch (err) {
      this.fail(err);
      return;
    }
    stream.on("data", (chunk: Buffer) => this.onData(chunk));
    stream.on("end", () => this.onEnd());
  }

  /** Ends the stream with an error status (trailers-only before the first response). */
  fail(err: unknown): void {
    this.status = ConnectError.from(err);
    if (this.session !== undefined) {
      this.session.outbox.close(); // the pump finishes with this status
      return;
    }
    this.finish();
  }

  private onData(chunk: Buffer): void {
    if (!this.reading) return;
    let buf = this.partial === undefined ? chunk : Buffer.concat([this.partial, chunk]);
    this.partial = undefined;
    while (this.reading) {
      if (buf.length < 5) break;
      const length = buf.readUInt32BE(1);
      if (length > READ_MAX_BYTES) return this.readFailed(new ConnectError(`message size ${length} is larger than configured readMaxBytes ${READ_MAX_BYTES}`, Code.ResourceExhausted));
      if (buf.length < 5 + length) break;
      if ((buf[0] & 1) === 1) return this.readFailed(new ConnectError("received compressed envelope, but no grpc-encoding was negotiated", Code.Internal));
      const body = buf.subarray(5, 5 + length);
      buf = buf.subarray(5 + length);
      let msg: StreamRequest;
      try {
        msg = fromBinary(StreamRequestSchema, body);
      } catch (err) {
        return this.readFailed(new ConnectError(`parse binary: ${err instanceof Error ? err.message : String(err)}`, Code.Internal));
      }
      this.onMessage(msg);
    }
    if (this.reading && buf.length > 0) this.partial = Buffer.from(buf); // keep only the tail, not the whole chunk
  }

  private onMessage(msg: StreamRequest): void {
    if (this.session === undefined) {
      try {
        this.session = this.server.open(msg);
      } catch (err) {
        this.reading = false;
        this.fail(err);
        return;
      }
      this.stream.respond({ ":status": 200, "content-type": CONTENT_TYPE }, { waitForTrailers: true });
      this.respondedHeaders = true;
      void this.pump(this.session);
      return;
    }
    try {
      if (!this.server.receive(this.session, msg)) {
        this.reading = false;
        this.server.readerDone(this.session);
      }
    } catch (err) {
      this.reading = false;
      this.server.readerDone(this.session, err);
    }
  }

  /** A broken request side: before Hello it is the stream's error; after, it ends the stream as Connect's reader does. */
  private readFailed(err: ConnectError): void {
    this.reading = false;
    this.partial = undefined;
    if (this.session === undefined) this.fail(err);
    else this.server.readerDone(this.session, err);
  }

  private onEnd(): void {
    if (!this.reading) return;
    this.reading = false;
    if (this.session === undefined) this.fail(new ConnectError("the first message on a discovery stream must be Hello", Code.InvalidArgument));
    else this.server.readerDone(this.session);
  }

  private onClose(): void {
    if (!this.finished) this.closedByPeer = true;
    this.reading = false;
    if (this.session !== undefined) this.session.outbox.close();
    else this.finish();
  }

  /** Sends what the session has to send until it closes, then ends the stream. */
  private async pump(session: Session): Promise<void> {
    const outbox = session.outbox;
    try {
      for (;;) {
        const next = this.server.nextOutgoing(session);
        if (next === undefined) {
          if (outbox.closed) break;
          await outbox.wait();
          continue;
        }
        await this.write(next);
      }
    } catch (err) {
      this.status ??= ConnectError.from(err);
    } finally {
      this.finish();
      this.server.end(session, this.closedByPeer || this.status?.code === Code.Unavailable ? "client or server closed the stream" : undefined);
    }
  }

  /** Writes one message, waiting for the stream to drain when its buffer is full. */
  private async write(next: Push | StreamResponse): Promise<void> {
    const stream = this.stream;
    if (stream.destroyed || stream.closed) return;
    if (!("payload" in next)) {
      let frame = encodedMessages.get(next);
      if (frame === undefined) {
        frame = envelope(toBinary(StreamResponseSchema, next), 0);
        encodedMessages.set(next, frame);
      }
      if (!stream.write(frame)) await this.drained();
      return;
    }
    const field = encodedPayload(next.payload);
    const data = field.data;
    // The push is StreamResponse{nonce, <field>}: a small head written per stream, then the
    // payload shared by every stream (its length prefix included).
    const head = envelope(new BinaryWriter().tag(1, WireType.LengthDelimited).string(next.nonce).tag(field.no, field.wireType).finish(), data.length);
    if (data.length <= SLICE_BYTES) {
      stream.cork();
      stream.write(head);
      const more = stream.write(data);
      stream.uncork();
      if (!more) await this.drained();
      return;
    }
    if (!stream.write(head)) await this.drained();
    for (let at = 0; at < data.length && !stream.destroyed && !stream.closed; at += SLICE_BYTES) {
      if (!stream.write(data.subarray(at, at + SLICE_BYTES))) await this.drained();
    }
  }

  private drained(): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = () => {
        this.stream.off("drain", done);
        this.stream.off("close", done);
        resolve();
      };
      this.stream.on("drain", done);
      this.stream.on("close", done);
    });
  }

  /** Ends the HTTP/2 stream with the status as gRPC trailers, once. */
  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.onDone();
    const stream = this.stream;
    if (stream.destroyed || stream.closed) return;
    const trailers: http2.OutgoingHttpHeaders = { "grpc-status": String(this.status?.code ?? 0) };
    if (this.status !== undefined) trailers["grpc-message"] = encodeURIComponent(this.status.rawMessage);
    if (!this.respondedHeaders) {
      // Trailers-only response.
      stream.respond({ ":status": 200, "content-type": CONTENT_TYPE, ...trailers }, { endStream: true });
      return;
    }
    stream.once("wantTrailers", () => stream.sendTrailers(trailers));
    stream.end();
  }
}

/** A gRPC envelope header (uncompressed, length of `bytes` plus `more`) followed by `bytes`. */
function envelope(bytes: Uint8Array, more: number): Buffer {
  const out = Buffer.allocUnsafe(5 + bytes.length);
  out[0] = 0;
  out.writeUInt32BE(bytes.length + more, 1);
  out.set(bytes, 5);
  return out;
}
