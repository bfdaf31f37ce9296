import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createRouterTransport, type Client } from "@connectrpc/connect";
import { createWritableIterable } from "@connectrpc/connect/protocol";
import { describe, expect, it } from "vitest";
import { ConfigState, encodeMessage } from "../../../../control-plane/src/config/state.js";
import { NodeRegistry } from "../../../../control-plane/src/discovery/nodes.js";
import { SnapshotCache } from "../../../../control-plane/src/discovery/snapshot-cache.js";
import { DiscoveryServer } from "../../../../control-plane/src/discovery/stream.js";
import { DiscoveryService, StreamRequestSchema, type StreamRequest, type StreamResponse } from "../../../../proto/gen/gateway/v1/discovery_pb.js";
import { TenantSchema } from "../../../../proto/gen/gateway/v1/tenant_pb.js";

const TOKEN = "node-token";

function setup(coalesceMs = 0) {
  let state = ConfigState.empty();
  const cache = new SnapshotCache(state, coalesceMs);
  const registry = new NodeRegistry();
  const nacks: string[] = [];
  const server = new DiscoveryServer(cache, registry, TOKEN, { onNack: (_n, _v, e) => nacks.push(e) });
  const client: Client<typeof DiscoveryService> = createClient(
    DiscoveryService,
    createRouterTransport((r) => r.service(DiscoveryService, server)),
  );
  const bump = (name: string) => {
    state = state.with(state.version + 1n, [{ op: "put", kind: "tenant", id: name, data: encodeMessage(TenantSchema, create(TenantSchema, { id: name, name })) }]);
    cache.update(state);
    cache.flush();
    return state.version;
  };
  return { cache, registry, client, bump, nacks };
}

function open(client: Client<typeof DiscoveryService>, nodeId: string, lastAppliedVersion = 0n, token = TOKEN) {
  const requests = createWritableIterable<StreamRequest>();
  const abort = new AbortController();
  // Rejects when the server refuses the stream; the response side reports that.
  requests.write(create(StreamRequestSchema, { kind: { case: "hello", value: { nodeId, lastAppliedVersion } } })).catch(() => undefined);
  const responses = client.stream(requests, { headers: { authorization: `Bearer ${token}` }, signal: abort.signal })[Symbol.asyncIterator]();
  return {
    next: async (): Promise<StreamResponse> => {
      const r = await responses.next();
      if (r.done) throw new Error("stream ended");
      return r.value;
    },
    ack: (res: StreamResponse) =>
      requests.write(create(StreamRequestSchema, { kind: { case: "ack", value: { version: versionOf(res) ?? 0n, nonce: res.nonce } } })),
    nack: (res: StreamResponse, error: string) =>
      requests.write(create(StreamRequestSchema, { kind: { case: "nack", value: { version: 0n, nonce: res.nonce, error } } })),
    // Ends the request side, as a data plane does at shutdown. (Aborting is not used here: the
    // in-memory transport does not relay a client abort to the handler's signal; the e2e suite
    // covers aborts over real HTTP/2.)
    close: () => requests.close(),
    abort: () => abort.abort(),
    responses,
  };
}

/** Version a push brings the node to (full snapshot or delta). */
function versionOf(res: StreamResponse): bigint | undefined {
  return res.kind.case === "snapshot" || res.kind.case === "delta" ? res.kind.value.version : undefined;
}

async function until(fn: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !fn(); i++) await new Promise((r) => setTimeout(r, 5));
  expect(fn()).toBe(true);
}

describe("DiscoveryServer", () => {
  it("refuses a wrong node token", async () => {
    const { client } = setup();
    const s = open(client, "n1", 0n, "wrong");
    await expect(s.next()).rejects.toSatisfy((e: unknown) => ConnectError.from(e).code === Code.Unauthenticated);
  });

  it("sends the full snapshot after Hello, tracks ACKs per node, and pushes every change", async () => {
    const { client, registry, bump } = setup();
    const v1 = bump("t1");
    const s = open(client, "n1");
    const first = await s.next();
    expect(first.kind.case).toBe("snapshot");
    expect(first.kind.value).toMatchObject({ version: v1 });
    await s.ack(first);
    await until(() => registry.list()[0]?.ackedVersion === v1);

    const v2 = bump("t2");
    const second = await s.next();
    // After the first full snapshot, a change travels as a delta from the version last sent.
    expect(second.kind.case).toBe("delta");
    expect(versionOf(second)).toBe(v2);
    expect(second.kind.case === "delta" && second.kind.value.baseVersion).toBe(v1);
    expect(second.kind.case === "delta" && second.kind.value.upserted.map((r) => r.name)).toEqual(["tenant/t2"]);
    expect(second.nonce).not.toBe(first.nonce);
    await s.ack(second);
    await until(() => registry.list()[0]?.ackedVersion === v2);
    expect(registry.list()[0].connected).toBe(true);
    s.close();
    await expect(s.next()).rejects.toThrow("stream ended");
    await until(() => registry.list()[0]?.connected === false);
  });

  it("records a NACK with its error and ignores stale nonces", async () => {
    const { client, registry, bump, nacks } = setup();
    bump("t1");
    const s = open(client, "n1");
    const first = await s.next();
    const v2 = bump("t2");
    const second = await s.next();
    // The ACK of the superseded push says nothing about the newer one.
    await s.ack(first);
    await s.nack(second, "rule/x.path: must start with /");
    await until(() => nacks.length === 1);
    expect(nacks[0]).toBe("rule/x.path: must start with /");
    const node = registry.list()[0];
    expect(node.lastError).toBe("rule/x.path: must start with /");
    expect(node.ackedVersion).toBe(0n);
    expect(v2).toBe(2n);
    s.close();
  });

  it("does not push to a node that already serves the current version", async () => {
    const { client, bump } = setup();
    const v1 = bump("t1");
    const s = open(client, "n1", v1);
    const pending = s.next();
    const timeout = new Promise((r) => setTimeout(() => r("quiet"), 50));
    expect(await Promise.race([pending, timeout])).toBe("quiet");
    const v2 = bump("t2");
    const pushed = await pending;
    expect(versionOf(pushed)).toBe(v2);
    expect(pushed.kind.case).toBe("delta");
    s.close();
  });

  it("coalesces a burst of changes into one push, and a new stream of the same node replaces the old", async () => {
    const { client, registry, bump } = setup();
    bump("t0");
    const old = open(client, "n1");
    await old.next();
    const fresh = open(client, "n1");
    await fresh.next();
    // The old stream ends once it notices it was replaced.
    bump("t1");
    await expect(old.next()).rejects.toThrow();
    for (let i = 2; i < 6; i++) bump(`t${i}`);
    const pushed = await fresh.next();
    expect(versionOf(pushed)).toBeGreaterThanOrEqual(2n);
    expect(registry.connectedCount()).toBe(1);
    fresh.close();
  });

  it("answers a NACKed delta with a full snapshot", async () => {
    const { client, bump } = setup();
    bump("t1");
    const s = open(client, "n1");
    const first = await s.next();
    await s.ack(first);
    bump("t2");
    const delta = await s.next();
    expect(delta.kind.case).toBe("delta");
    await s.nack(delta, "delta from version 1 does not apply to version 0: need a full snapshot");
    const full = await s.next();
    expect(full.kind.case).toBe("snapshot");
    expect(versionOf(full)).toBe(2n);
    s.close();
  });
});
