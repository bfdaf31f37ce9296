/**
 * A scripted control plane for testing a real data-plane process against pushes the real control
 * plane would never send (it validates every write with the data plane's own compiler): a Connect
 * server on h2c (gRPC, as data planes speak it) serving DiscoveryService, where the test decides
 * what to push and reads what the data plane answers.
 *
 *   const fake = await FakeControlPlane.start();
 *   const dp = await startDataPlane({ controlPlane: fake.url, nodeId: "n1", token: "t" });
 *   const stream = await fake.nextStream();          // the data plane connected; stream.hello is its Hello
 *   const ack = await stream.pushAndAwaitAnswer(buildSnapshot(1n, {...}));
 *
 * `close()` (registered with the shared teardown) ends open streams and the server.
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import http2 from "node:http2";
import { once } from "node:events";
import type { AddressInfo } from "node:net";
import {
  DiscoveryService,
  StreamResponseSchema,
  type Hello,
  type StreamRequest,
  type StreamResponse,
} from "../../proto/gen/gateway/v1/discovery_pb.js";
import { RuleSchema } from "../../proto/gen/gateway/v1/rule_pb.js";
import { ResourceSchema, SnapshotSchema, type Resource, type Snapshot } from "../../proto/gen/gateway/v1/snapshot_pb.js";
import { TenantSchema } from "../../proto/gen/gateway/v1/tenant_pb.js";
import { UpstreamSchema } from "../../proto/gen/gateway/v1/upstream_pb.js";
import { onTeardown } from "./teardown.js";

/** The answer to a push. */
export type PushAnswer = { readonly kind: "ack"; readonly version: bigint } | { readonly kind: "nack"; readonly version: bigint; readonly error: string; readonly appliedVersion: bigint };

/** One discovery stream a data plane opened. */
export class FakeStream {
  /** Everything the data plane sent, Hello first. */
  readonly received: StreamRequest[] = [];
  private readonly outbox: StreamResponse[] = [];
  private ended = false;
  private wakeWriter: (() => void) | undefined;
  private readonly waiters = new Set<() => void>();
  private nonceSeq = 0;

  constructor(
    /** Request headers of the stream (authorization, user-agent, ...). */
    readonly requestHeader: Headers,
  ) {}

  /** The Hello (first message); undefined until it arrived. */
  get hello(): Hello | undefined {
    const first = this.received[0];
    return first?.kind.case === "hello" ? first.kind.value : undefined;
  }

  /** Sends a snapshot; returns the nonce the data plane must echo. */
  push(snapshot: Snapshot): string {
    const nonce = `fake-${++this.nonceSeq}`;
    this.send(create(StreamResponseSchema, { nonce, kind: { case: "snapshot", value: snapshot } }));
    return nonce;
  }

  /** Sends any message. */
  send(msg: StreamResponse): void {
    this.outbox.push(msg);
    this.wakeWriter?.();
  }

  /** Pushes a snapshot and waits for the Ack or Nack carrying its nonce. */
  async pushAndAwaitAnswer(snapshot: Snapshot, timeoutMs = 15_000): Promise<PushAnswer> {
    const nonce = this.push(snapshot);
    const msg = await this.waitForRequest((r) => (r.kind.case === "ack" || r.kind.case === "nack") && r.kind.value.nonce === nonce, timeoutMs, `an answer to push ${nonce}`);
    if (msg.kind.case === "ack") return { kind: "ack", version: msg.kind.value.version };
    if (msg.kind.case === "nack") return { kind: "nack", version: msg.kind.value.version, error: msg.kind.value.error, appliedVersion: msg.kind.value.appliedVersion };
    throw new Error("unreachable");
  }

  /** Resolves with the first received message (past or future) that satisfies `predicate`. */
  waitForRequest(predicate: (r: StreamRequest) => boolean, timeoutMs = 15_000, what = "a message"): Promise<StreamRequest> {
    return new Promise<StreamRequest>((resolve, reject) => {
      let i = 0;
      const check = () => {
        for (; i < this.received.length; i++) {
          if (predicate(this.received[i])) {
            clearTimeout(timer);
            this.waiters.delete(check);
            resolve(this.received[i]);
            return;
          }
        }
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`fake control plane: timed out after ${timeoutMs} ms waiting for ${what}; received ${this.received.map((r) => r.kind.case).join(", ")}`));
      }, timeoutMs);
      this.waiters.add(check);
      check();
    });
  }

  /** Ends the stream from the control plane's side. */
  end(): void {
    this.ended = true;
    this.wakeWriter?.();
  }

  /** @internal Called by the server for each message of the data plane. */
  onRequest(r: StreamRequest): void {
    this.received.push(r);
    for (const w of this.waiters) w();
  }

  /** @internal The response side: yields queued messages until the stream ends or is aborted. */
  async *responses(signal: AbortSignal): AsyncGenerator<StreamResponse> {
    const onAbort = () => this.wakeWriter?.();
    signal.addEventListener("abort", onAbort);
    try {
      for (;;) {
        if (signal.aborted || this.ended) return;
        const next = this.outbox.shift();
        if (next !== undefined) {
          yield next;
          continue;
        }
        await new Promise<void>((resolve) => {
          this.wakeWriter = resolve;
        });
        this.wakeWriter = undefined;
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  }
}

/** A scripted DiscoveryService on 127.0.0.1, port 0. */
export class FakeControlPlane {
  /** Streams in the order data planes opened them. */
  readonly streams: FakeStream[] = [];
  private readonly waiters = new Set<() => void>();
  private handedOut = 0;

  private constructor(
    private readonly server: http2.Http2Server,
    private readonly sessions: Set<http2.Http2Session>,
    private readonly shutdown: AbortController,
    /** "http://127.0.0.1:PORT", for `--control-plane`. */
    readonly url: string,
  ) {}

  /** Starts the server; it is closed by the shared teardown. */
  static async start(): Promise<FakeControlPlane> {
    const shutdown = new AbortController();
    let self: FakeControlPlane | undefined;
    const impl = {
      async *stream(requests: AsyncIterable<StreamRequest>, ctx: HandlerContext): AsyncIterable<StreamResponse> {
        const s = new FakeStream(ctx.requestHeader);
        self!.streams.push(s);
        const reader = (async () => {
          for await (const r of requests) s.onRequest(r);
        })();
        reader.catch(() => undefined);
        // Announce the stream once its Hello is in, so tests can read it.
        await s.waitForRequest((r) => r.kind.case === "hello", 15_000, "Hello").catch(() => {
          throw new ConnectError("no Hello", Code.InvalidArgument);
        });
        for (const w of self!.waiters) w();
        yield* s.responses(ctx.signal);
      },
    };
    const handler = connectNodeAdapter({ routes: (r) => r.service(DiscoveryService, impl), shutdownSignal: shutdown.signal });
    const server = http2.createServer(handler);
    const sessions = new Set<http2.Http2Session>();
    server.on("session", (s) => {
      sessions.add(s);
      s.once("close", () => sessions.delete(s));
    });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const port = (server.address() as AddressInfo).port;
    self = new FakeControlPlane(server, sessions, shutdown, `http://127.0.0.1:${port}`);
    const fake = self;
    onTeardown(() => fake.close());
    return fake;
  }

  /** Resolves with the next stream not yet returned by this method, once its Hello arrived. */
  nextStream(timeoutMs = 15_000): Promise<FakeStream> {
    return this.streamAt(this.handedOut++, timeoutMs);
  }

  /** Resolves with stream number `index` (0 = the first ever opened) once its Hello arrived. */
  streamAt(index: number, timeoutMs = 15_000): Promise<FakeStream> {
    return new Promise<FakeStream>((resolve, reject) => {
      const check = () => {
        const s = this.streams[index];
        if (s === undefined || s.hello === undefined) return;
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve(s);
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`fake control plane: timed out after ${timeoutMs} ms waiting for stream #${index}`));
      }, timeoutMs);
      this.waiters.add(check);
      check();
    });
  }

  /** Ends every stream and stops the server. */
  async close(): Promise<void> {
    if (this.shutdown.signal.aborted) return;
    this.shutdown.abort(new ConnectError("fake control plane closing", Code.Unavailable));
    for (const s of this.streams) s.end();
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const s of this.sessions) s.close();
    // Sessions whose peer does not answer GOAWAY promptly are destroyed rather than waited on.
    const force = setTimeout(() => {
      for (const s of this.sessions) s.destroy();
    }, 2_000);
    await closed;
    clearTimeout(force);
  }
}

/** Resources for {@link buildSnapshot}, as protobuf init shapes (camelCase fields). */
export interface SnapshotContents {
  readonly tenants?: MessageInitShape<typeof TenantSchema>[];
  readonly upstreams?: MessageInitShape<typeof UpstreamSchema>[];
  readonly rules?: MessageInitShape<typeof RuleSchema>[];
}

/** A full snapshot at `version`, resources named "kind/id" as the real control plane names them. */
export function buildSnapshot(version: bigint, contents: SnapshotContents): Snapshot {
  const resources: Resource[] = [];
  for (const t of contents.tenants ?? []) {
    const value = create(TenantSchema, t);
    resources.push(create(ResourceSchema, { name: `tenant/${value.id}`, revision: version, kind: { case: "tenant", value } }));
  }
  for (const u of contents.upstreams ?? []) {
    const value = create(UpstreamSchema, u);
    resources.push(create(ResourceSchema, { name: `upstream/${value.id}`, revision: version, kind: { case: "upstream", value } }));
  }
  for (const r of contents.rules ?? []) {
    const value = create(RuleSchema, r);
    resources.push(create(ResourceSchema, { name: `rule/${value.id}`, revision: version, kind: { case: "rule", value } }));
  }
  return create(SnapshotSchema, { version, resources });
}
