// Simulated data planes for test/bench/fanout.mjs: one forked process holds a slice of the fleet.
//
// Every node speaks the real discovery protocol with the generated client over real HTTP/2, the
// way data-plane/src/discovery/client.ts does (createGrpcTransport with the same ping settings,
// createWritableIterable for the request side, "authorization: Bearer <node token>"): Hello, an
// ACK for every push as soon as it arrives, and, once switched on, a Report every ~reportMs
// (jittered) with a few TargetReports. Streams are multiplexed, streamsPerConn per HTTP/2
// connection (one transport, hence one session, per group).
//
// The worker records, per node and per configuration version, when the push arrived and what it
// was (snapshot or delta, and its encoded size), and answers the parent's questions over IPC. It
// never applies what it receives: the control plane's cost is measured, not the data plane's.

import { create, toBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createWritableIterable } from "@connectrpc/connect/protocol";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { setMaxListeners } from "node:events";
import path from "node:path";
import { pathToFileURL } from "node:url";

const opts = JSON.parse(process.argv[2]);
const { DiscoveryService, StreamRequestSchema, StreamResponseSchema } = await import(
  pathToFileURL(path.join(opts.dist, "proto/gen/gateway/v1/discovery_pb.js")).href
);

/** Wall-clock milliseconds with sub-millisecond resolution, comparable across processes. */
const now = () => performance.timeOrigin + performance.now();

const count = opts.last - opts.first;
const abort = new AbortController();
// Every stream of this process listens on it (a real data plane has one stream per process).
setMaxListeners(0, abort.signal);

/** Encoded size per distinct push (kind, base, version): the same bytes for every node but the nonce. */
const sizes = new Map();
function sizeOf(res) {
  const v = res.kind.value;
  const key = `${res.kind.case}:${res.kind.case === "delta" ? v.baseVersion : ""}:${v.version}`;
  let n = sizes.get(key);
  if (n === undefined) {
    n = toBinary(StreamResponseSchema, res).length;
    sizes.set(key, n);
  }
  return n;
}

/** Per version: receive time per node (NaN until it arrives), how many arrived, kinds and bytes. */
const byVersion = new Map();
function versionRecord(version) {
  let r = byVersion.get(version);
  if (r === undefined) {
    r = { times: new Float64Array(count).fill(NaN), got: 0, snapshot: 0, delta: 0, snapshotBytes: 0, deltaBytes: 0 };
    byVersion.set(version, r);
  }
  return r;
}

const started = new Float64Array(count).fill(NaN); // when each node's stream was opened
const firstAt = new Float64Array(count).fill(NaN); // when its first push arrived
const firstBytes = new Float64Array(count);
const firstKind = new Array(count);
const nodeVersion = new Float64Array(count); // highest version received per node
let firstCount = 0;
let errors = 0;
let lastError = "";
let reconnects = 0;
let reportsSent = 0;
let reportsOn = false;
const requestSides = new Array(count);
const reportTimers = new Array(count);
let waiting; // { version, resolve }

function randomReport(i) {
  const targets = opts.targets.map((t) => {
    const requests = BigInt(50 + ((i * 7 + reportsSent) % 200));
    return {
      backend: opts.upstreamId,
      target: t,
      inFlight: (i + reportsSent) % 7,
      requests,
      failures: BigInt(reportsSent % 3),
      latency: { p50Ms: 3.5, p99Ms: 41.2, maxMs: 80.1, sumMs: Number(requests) * 4.2 },
      passiveState: "healthy",
      probeState: "unknown",
    };
  });
  return create(StreamRequestSchema, {
    kind: { case: "report", value: { appliedVersion: BigInt(nodeVersion[i]), targets, intervalMs: opts.reportMs } },
  });
}

function scheduleReport(i) {
  // Jitter keeps the fleet's reports from arriving in lockstep, as the real client does.
  const delay = reportTimers[i] === undefined ? Math.random() * opts.reportMs : opts.reportMs * (0.8 + Math.random() * 0.4);
  reportTimers[i] = setTimeout(() => {
    if (!reportsOn || abort.signal.aborted) return;
    requestSides[i].write(randomReport(i)).catch(() => undefined);
    reportsSent++;
    scheduleReport(i);
  }, delay);
}

function checkWaiting() {
  if (waiting === undefined || waiting.reached < count) return;
  const w = waiting;
  waiting = undefined;
  w.resolve();
}

/** One node: a stream, and when it breaks a new one after a jittered backoff, as the real client does. */
async function runNode(client, i, helloVersion) {
  started[i] = now();
  let failures = 0;
  while (!abort.signal.aborted) {
    const got = await session(client, i, nodeVersion[i] > 0 ? BigInt(nodeVersion[i]) : helloVersion);
    if (abort.signal.aborted) break;
    reconnects++;
    failures = got ? 0 : failures + 1;
    const ceiling = Math.min(10_000, 200 * 2 ** Math.min(failures, 16));
    await new Promise((r) => setTimeout(r, Math.random() * ceiling));
  }
}

/** One stream's lifetime; resolves true if a push arrived. */
async function session(client, i, helloVersion) {
  const nodeId = `${opts.prefix}-${opts.first + i}`;
  const requests = createWritableIterable();
  requestSides[i] = requests;
  let got = false;
  requests
    .write(create(StreamRequestSchema, { kind: { case: "hello", value: { nodeId, labels: { zone: `z${i % 3}` }, softwareVersion: "bench", lastAppliedVersion: helloVersion } } }))
    .catch(() => undefined);
  try {
    const responses = client.stream(requests, { signal: abort.signal, headers: { authorization: `Bearer ${opts.token}` } });
    for await (const res of responses) {
      const t = now();
      const kind = res.kind.case;
      if (kind !== "snapshot" && kind !== "delta") continue;
      got = true;
      const version = res.kind.value.version;
      // ACK first, as a real data plane does once it applied the push.
      requests.write(create(StreamRequestSchema, { kind: { case: "ack", value: { version, nonce: res.nonce } } })).catch(() => undefined);
      const bytes = sizeOf(res);
      const v = Number(version);
      if (Number.isNaN(firstAt[i])) {
        firstAt[i] = t;
        firstBytes[i] = bytes;
        firstKind[i] = kind;
        firstCount++;
      }
      const r = versionRecord(v);
      if (Number.isNaN(r.times[i])) {
        r.times[i] = t;
        r.got++;
        r[kind]++;
        r[`${kind}Bytes`] += bytes;
      }
      // A node may skip a version when changes coalesce: any newer version counts as received.
      if (waiting !== undefined && v >= waiting.version && nodeVersion[i] < waiting.version) waiting.reached++;
      if (v > nodeVersion[i]) nodeVersion[i] = v;
      checkWaiting();
    }
    if (!abort.signal.aborted) {
      errors++;
      lastError = "stream ended by the control plane";
    }
  } catch (err) {
    if (!abort.signal.aborted) {
      errors++;
      lastError = err instanceof Error ? err.message : String(err);
    }
  } finally {
    requests.close();
  }
  return got;
}

const transports = [];
const clients = [];
for (let c = 0; c * opts.streamsPerConn < count; c++) {
  const transport = createGrpcTransport({
    baseUrl: opts.url,
    pingIntervalMs: 10_000,
    pingTimeoutMs: 5_000,
    readMaxBytes: 512 * 1024 * 1024,
  });
  transports.push(transport);
  clients.push(createClient(DiscoveryService, transport));
}

const send = (msg) => process.send(msg);
const running = [];

process.on("message", async (msg) => {
  switch (msg.type) {
    case "start": {
      // fullSyncNodes nodes, spread evenly over the fleet (so over the workers), start from nothing;
      // the others say they already serve `warmVersion` (a restart with a snapshot cache): the
      // control plane owes them nothing until the next change.
      const fromNothing = (g) => Math.floor(((g + 1) * msg.fullSyncNodes) / opts.total) > Math.floor((g * msg.fullSyncNodes) / opts.total);
      let full = 0;
      for (let i = 0; i < count; i++) {
        const global = opts.first + i;
        const hello = fromNothing(global) ? 0n : BigInt(msg.warmVersion);
        if (hello === 0n) full++;
        if (hello !== 0n) nodeVersion[i] = Number(hello);
        running.push(runNode(clients[Math.floor(i / opts.streamsPerConn)], i, hello));
        // Let the event loop breathe between batches, or this process alone would stall for
        // seconds and its own PING timeouts would fire; --connect-rate paces the whole fleet.
        if (i % 50 === 49) {
          if (opts.connectRate > 0) await new Promise((r) => setTimeout(r, (50 * 1000 * opts.workers) / opts.connectRate));
          else await new Promise((r) => setImmediate(r));
        }
      }
      const deadline = now() + msg.timeoutMs;
      while (firstCount < full && now() < deadline) await new Promise((r) => setTimeout(r, 20));
      const lat = [];
      let bytes = 0;
      let snapshots = 0;
      for (let i = 0; i < count; i++) {
        if (Number.isNaN(firstAt[i])) continue;
        lat.push(firstAt[i] - started[i]);
        bytes = Math.max(bytes, firstBytes[i]);
        if (firstKind[i] === "snapshot") snapshots++;
      }
      let lastAt = 0;
      for (let i = 0; i < count; i++) if (firstAt[i] > lastAt) lastAt = firstAt[i];
      send({ type: "synced", expected: full, got: firstCount, lat, lastAt, snapshotBytes: bytes, snapshots, errors, reconnects, lastError });
      break;
    }
    case "await": {
      const version = msg.version;
      const done = new Promise((resolve) => {
        let reached = 0;
        for (let i = 0; i < count; i++) if (nodeVersion[i] >= version) reached++;
        waiting = { version, resolve, reached };
        checkWaiting();
      });
      const timedOut = await Promise.race([done.then(() => false), new Promise((r) => setTimeout(() => r(true), msg.timeoutMs))]);
      if (timedOut) waiting = undefined;
      const r = byVersion.get(version) ?? versionRecord(version);
      let missing = 0;
      for (let i = 0; i < count; i++) if (nodeVersion[i] < version) missing++;
      send({
        type: "got",
        version,
        times: Array.from(r.times),
        got: r.got,
        missing,
        snapshot: r.snapshot,
        delta: r.delta,
        snapshotBytes: r.snapshotBytes,
        deltaBytes: r.deltaBytes,
        errors,
        reconnects,
        lastError,
      });
      break;
    }
    case "reports": {
      reportsOn = msg.on;
      if (reportsOn) for (let i = 0; i < count; i++) scheduleReport(i);
      else for (let i = 0; i < count; i++) clearTimeout(reportTimers[i]);
      send({ type: "reports", on: reportsOn });
      break;
    }
    case "count-reports":
      send({ type: "report-count", sent: reportsSent });
      break;
    case "stop": {
      reportsOn = false;
      for (let i = 0; i < count; i++) clearTimeout(reportTimers[i]);
      abort.abort();
      await Promise.race([Promise.allSettled(running), new Promise((r) => setTimeout(r, 5_000))]);
      send({ type: "stopped" });
      process.disconnect();
      // Sessions close when their last stream ends; anything left goes with the process.
      setTimeout(() => process.exit(0), 200).unref();
      break;
    }
    default:
      break;
  }
});

// connect-node's session manager can destroy a session with an error after it removed its own
// listeners (a PING timeout while this process was too busy to read the answer): the streams on it
// fail and reconnect like any other broken stream, so count it instead of dying.
let transportErrors = 0;
process.on("uncaughtException", (err) => {
  transportErrors++;
  errors++;
  lastError = `transport: ${err instanceof Error ? err.message : String(err)}`;
});

// The parent kills this process if it dies; losing the parent means stopping too.
process.on("disconnect", () => {
  abort.abort();
  setTimeout(() => process.exit(0), 500).unref();
});

send({ type: "ready", connections: transports.length });
