import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client, type Transport } from "@connectrpc/connect";
import { createWritableIterable } from "@connectrpc/connect/protocol";
import { connectNodeAdapter, createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterEach, describe, expect, it } from "vitest";
import { ConfigState, encodeMessage } from "../../../../control-plane/src/config/state.js";
import { grpcStreamHandler } from "../../../../control-plane/src/discovery/grpc-stream.js";
import { NodeRegistry } from "../../../../control-plane/src/discovery/nodes.js";
import { SnapshotCache } from "../../../../control-plane/src/discovery/snapshot-cache.js";
import { DiscoveryServer } from "../../../../control-plane/src/discovery/stream.js";
import { listenDual, type DualServer } from "../../../../control-plane/src/server/listen.js";
import {
  DiscoveryService,
  StreamRequestSchema,
  StreamResponseSchema,
  type StreamRequest,
  type StreamResponse,
} from "../../../../proto/gen/gateway/v1/discovery_pb.js";
import { TenantSchema } from "../../../../proto/gen/gateway/v1/tenant_pb.js";

/**
 * The discovery stream served on raw HTTP/2 for gRPC clients (grpc-stream.ts), next to Connect's
 * handler for everything else, over real sockets on 127.0.0.1: the same protocol whichever path
 * serves a client, and the statuses a data plane relies on.
 */

const TOKEN = "node-token";
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup() {
  let state = ConfigState.empty();
  const cache = new SnapshotCache(state, 0);
  const registry = new NodeRegistry();
  const disconnects: string[] = [];
  const server = new DiscoveryServer(cache, registry, TOKEN, { onDisconnect: (n, reason) => disconnects.push(`${n.nodeId}: ${reason}`) });
  const shutdown = new AbortController();
  const claim = grpcStreamHandler(server, shutdown.signal);
  let claimed = 0;
  const connect = connectNodeAdapter({ routes: (r) => r.service(DiscoveryService, server), shutdownSignal: shutdown.signal });
  const http: DualServer = await listenDual("127.0.0.1", 0, connect, {
    claimHttp2Stream: (stream, headers) => {
      const ok = claim(stream, headers);
      if (ok) claimed++;
      return ok;
    },
  });
  const url = `http://127.0.0.1:${http.address.port}`;
  cleanups.push(async () => {
    shutdown.abort(new ConnectError("test over", Code.Unavailable));
    await http.close(1_000);
    cache.close();
  });
  const bump = (name: string) => {
    state = state.with(state.version + 1n, [{ op: "put", kind: "tenant", id: name, data: encodeMessage(TenantSchema, create(TenantSchema, { id: name, name })) }]);
    cache.update(state);
    cache.flush();
    return state.version;
  };
  return { url, registry, bump, shutdown, disconnects, claimed: () => claimed };
}

function open(transport: Transport, nodeId: string, opts: { token?: string; first?: StreamRequest } = {}) {
  const client: Client<typeof DiscoveryService> = createClient(DiscoveryService, transport);
  const requests = createWritableIterable<StreamRequest>();
  const abort = new AbortController();
  cleanups.push(() => abort.abort());
  requests.write(opts.first ?? create(StreamRequestSchema, { kind: { case: "hello", value: { nodeId } } })).catch(() => undefined);
  const responses = client.stream(requests, { headers: { authorization: `Bearer ${opts.token ?? TOKEN}` }, signal: abort.signal })[Symbol.asyncIterator]();
  return {
    next: async (): Promise<StreamResponse> => {
      const r = await responses.next();
      if (r.done) throw new Error("stream ended");
      return r.value;
    },
    send: (msg: StreamRequest) => requests.write(msg),
    ack: (res: StreamResponse) =>
      requests.write(create(StreamRequestSchema, { kind: { case: "ack", value: { version: versionOf(res), nonce: res.nonce } } })),
    close: () => requests.close(),
  };
}

function versionOf(res: StreamResponse): bigint {
  return res.kind.case === "snapshot" || res.kind.case === "delta" ? res.kind.value.version : 0n;
}

async function until(fn: () => boolean): Promise<void> {
  for (let i = 0; i < 400 && !fn(); i++) await new Promise((r) => setTimeout(r, 5));
  expect(fn()).toBe(true);
}

const grpc = (url: string) => createGrpcTransport({ baseUrl: url });
const connectJson = (url: string) => createConnectTransport({ baseUrl: url, httpVersion: "2", useBinaryFormat: false });

describe("discovery stream on raw HTTP/2 (gRPC, protobuf)", () => {
  it("serves gRPC clients itself: full snapshot, then deltas, ACKs recorded per node", async () => {
    const { url, registry, bump, claimed } = await setup();
    const v1 = bump("t1");
    const s = open(grpc(url), "n1");
    const first = await s.next();
    expect(first.kind.case).toBe("snapshot");
    expect(versionOf(first)).toBe(v1);
    await s.ack(first);
    await until(() => registry.list()[0]?.ackedVersion === v1);

    const v2 = bump("t2");
    const second = await s.next();
    expect(second.kind.case).toBe("delta");
    expect(second.kind.case === "delta" && second.kind.value.baseVersion).toBe(v1);
    expect(second.kind.case === "delta" && second.kind.value.upserted.map((r) => r.name)).toEqual(["tenant/t2"]);
    expect(second.nonce).not.toBe(first.nonce);
    await s.ack(second);
    await until(() => registry.list()[0]?.ackedVersion === v2);
    expect(claimed()).toBe(1);
    s.close();
    await expect(s.next()).rejects.toThrow("stream ended");
    await until(() => registry.list()[0]?.connected === false);
  });

  it("sends the same bytes as Connect's handler, which still serves JSON clients", async () => {
    const { url, bump, claimed } = await setup();
    bump("t1");
    const viaGrpc = await open(grpc(url), "n1").next();
    const viaConnect = await open(connectJson(url), "n2").next();
    expect(claimed()).toBe(1); // the JSON client went through Connect
    expect(viaConnect.kind).toEqual(viaGrpc.kind);
    const strip = (m: StreamResponse) => toBinary(StreamResponseSchema, { ...m, nonce: "" });
    expect(strip(viaGrpc)).toEqual(strip(viaConnect));
  });

  it("answers a wrong token with Unauthenticated and a stream not opened by Hello with InvalidArgument", async () => {
    const { url } = await setup();
    const denied = open(grpc(url), "n1", { token: "wrong" });
    await expect(denied.next()).rejects.toSatisfy((e: unknown) => {
      const err = ConnectError.from(e);
      return err.code === Code.Unauthenticated && err.rawMessage === "invalid node token";
    });
    const ack = create(StreamRequestSchema, { kind: { case: "ack", value: { version: 1n, nonce: "x" } } });
    const noHello = open(grpc(url), "n2", { first: ack });
    await expect(noHello.next()).rejects.toSatisfy((e: unknown) => ConnectError.from(e).code === Code.InvalidArgument);
  });

  it("pushes a change to every stream when there are more than one fan-out batch of them", async () => {
    const { url, bump, registry } = await setup();
    const v1 = bump("t1");
    const transport = grpc(url);
    const streams = Array.from({ length: 600 }, (_, i) => open(transport, `n${i}`));
    for (const s of streams) expect(versionOf(await s.next())).toBe(v1);
    const v2 = bump("t2");
    const pushes = await Promise.all(streams.map((s) => s.next()));
    expect(pushes.every((p) => p.kind.case === "delta" && p.kind.value.version === v2)).toBe(true);
    expect(new Set(pushes.map((p) => p.nonce)).size).toBe(600);
    await Promise.all(streams.map((s, i) => s.ack(pushes[i])));
    await until(() => registry.list().every((n) => n.ackedVersion === v2));
  });

  it("ends a stream that a newer stream of the same node replaced, and ends every stream with Unavailable at shutdown", async () => {
    const { url, bump, registry, shutdown, disconnects } = await setup();
    bump("t1");
    const old = open(grpc(url), "n1");
    await old.next();
    const fresh = open(grpc(url), "n1");
    await fresh.next();
    bump("t2");
    await expect(old.next()).rejects.toThrow("stream ended");
    expect((await fresh.next()).kind.case).toBe("delta");
    expect(registry.connectedCount()).toBe(1);
    await until(() => disconnects.some((d) => d.startsWith("n1: replaced")));

    shutdown.abort(new ConnectError("shutting down", Code.Unavailable));
    await expect(fresh.next()).rejects.toSatisfy((e: unknown) => ConnectError.from(e).code === Code.Unavailable);
    await until(() => registry.connectedCount() === 0);
  });
});
