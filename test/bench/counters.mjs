// Benchmark (not a test): fleet-wide counters in Redis against per-node counters, in one run.
//
//   npx tsc -p tsconfig.json && node test/bench/counters.mjs [picks-per-split-case=10000] [latency-samples=20000]
//
// 1. Split error across 4 simulated data planes (each its own balancer or its own RedisSequenceSource,
//    sharing one redis-server), for several weights and ways of spreading requests over the nodes:
//    how many requests went to the wrong side overall, and per cycle of the weights (in the order
//    requests were made), compared with the ideal split.
// 2. Latency added per pick on one node: local rotation, in-process counters, Redis (exact,
//    coalesced), Redis with concurrent picks, and lease mode, with a raw PING for the loopback round
//    trip. p50/p99 in µs, and INCRBY commands per pick.
//
// It starts its own redis-server on a free 127.0.0.1 port (never the machine's 6379) and kills it
// by PID at the end; a watchdog ends the run if anything hangs. Absolute numbers drift ±30% between
// runs on these machines: compare rows within one run.
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { Redis } from "ioredis";
import { WeightedRoundRobinBalancer } from "../../dist/data-plane/src/balancer/weighted-round-robin.js";
import { LocalSequenceSource } from "../../dist/data-plane/src/counters/local.js";
import { RedisSequenceSource } from "../../dist/data-plane/src/counters/redis.js";

const PICKS = Number(process.argv[2] ?? 10_000);
const SAMPLES = Number(process.argv[3] ?? 20_000);
const NODES = 4;

const watchdog = setTimeout(() => {
  console.error("watchdog: benchmark took too long, stopping");
  cleanup();
  process.exit(1);
}, 10 * 60_000);
watchdog.unref();

// ---- redis-server ----

async function freePort() {
  const s = net.createServer();
  s.listen(0, "127.0.0.1");
  await once(s, "listening");
  const port = s.address().port;
  await new Promise((r) => s.close(r));
  return port;
}

let redisChild;
let redisDir;
function cleanup() {
  if (redisChild !== undefined && redisChild.exitCode === null && redisChild.signalCode === null) process.kill(redisChild.pid, "SIGKILL");
  if (redisDir !== undefined) rmSync(redisDir, { recursive: true, force: true });
}
process.once("exit", cleanup);

async function startRedis() {
  const port = await freePort();
  redisDir = mkdtempSync(path.join(os.tmpdir(), "gateway-bench-redis-"));
  redisChild = spawn("/usr/bin/redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", redisDir, "--logfile", ""], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  await new Promise((resolve, reject) => {
    readline.createInterface({ input: redisChild.stdout }).on("line", (l) => l.includes("Ready to accept connections") && resolve());
    redisChild.once("exit", () => reject(new Error("redis-server exited")));
  });
  return `redis://127.0.0.1:${port}`;
}

// ---- helpers ----

function seeded(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function targetsOf(weights) {
  return Object.entries(weights).map(([key, weight]) => ({ key, weight, load: { inFlight: 0, fleetInFlight: 0 } }));
}

async function sources(url, count, opts = {}) {
  const list = Array.from({ length: count }, () => new RedisSequenceSource({ url, sweepIntervalMs: 0, ...opts }));
  for (const s of list) if (!(await s.ready(10_000))) throw new Error("redis counters did not start");
  return list;
}

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}

const us = (ns) => (ns / 1000).toFixed(1);

// ---- 1. split error across 4 nodes ----

const SPREADS = {
  "round-robin": () => {
    let i = 0;
    return () => i++ % NODES;
  },
  "uneven random 40/30/20/10": () => {
    const r = seeded(7);
    return () => {
      const u = r();
      return u < 0.4 ? 0 : u < 0.7 ? 1 : u < 0.9 ? 2 : 3;
    };
  },
  "bursts of 1..20 per node": () => {
    const r = seeded(11);
    let node = 0;
    let left = 0;
    return () => {
      if (left === 0) {
        node = Math.floor(r() * NODES);
        left = 1 + Math.floor(r() * 20);
      }
      left--;
      return node;
    };
  },
};

const WEIGHTS = [
  { stable: 90, canary: 10 },
  { stable: 99, canary: 1 },
  { a: 50, b: 30, c: 20 },
];

/** Misrouted requests: half the L1 distance between counts and the ideal counts. */
function misrouted(counts, weights, total, cycleWeight) {
  let d = 0;
  for (const [k, w] of Object.entries(weights)) d += Math.abs((counts[k] ?? 0) - (total * w) / cycleWeight);
  return d / 2;
}

async function splitCase(url, mode, weights, spreadName) {
  const cycleTargets = targetsOf(weights);
  const balancers = Array.from({ length: NODES }, () => new WeightedRoundRobinBalancer(cycleTargets));
  const cycle = balancers[0].cycle;
  const totalWeight = Object.values(weights).reduce((a, b) => a + b, 0);
  const scale = totalWeight / cycle; // weights per cycle slot (gcd)
  const cycleWeights = Object.fromEntries(Object.entries(weights).map(([k, w]) => [k, w / scale]));
  let nodeSources;
  if (mode.lease !== undefined) nodeSources = await sources(url, NODES, { lease: mode.lease });
  const key = `gw:seq:{bench/${mode.name}/${spreadName}/${Object.keys(weights).join("-")}}:1`;
  const nextNode = SPREADS[spreadName]();
  const order = [];
  for (let i = 0; i < PICKS; i++) {
    const n = nextNode();
    let t;
    if (nodeSources === undefined) t = balancers[n].pick();
    else {
      const p = nodeSources[n].next(key, cycle);
      t = balancers[n].pickAt(typeof p === "number" ? p : await p);
    }
    order.push(t.key);
  }
  const counts = {};
  for (const k of order) counts[k] = (counts[k] ?? 0) + 1;
  let exactCycles = 0;
  let worstCycle = 0;
  const cycles = Math.floor(PICKS / cycle);
  for (let c = 0; c < cycles; c++) {
    const cc = {};
    for (let i = c * cycle; i < (c + 1) * cycle; i++) cc[order[i]] = (cc[order[i]] ?? 0) + 1;
    const m = misrouted(cc, cycleWeights, cycle, cycle);
    if (m === 0) exactCycles++;
    worstCycle = Math.max(worstCycle, m);
  }
  const incrby = nodeSources?.reduce((s, x) => s + x.stats.incrbyCommands, 0);
  for (const s of nodeSources ?? []) await s.close();
  return {
    weights: Object.values(weights).join("/"),
    spread: spreadName,
    counters: mode.name,
    counts: Object.keys(weights).map((k) => counts[k] ?? 0).join("/"),
    ideal: Object.values(weights).map((w) => (PICKS * w) / totalWeight).join("/"),
    "misrouted total": misrouted(counts, weights, PICKS, totalWeight),
    "exact cycles": `${exactCycles}/${cycles}`,
    "worst cycle misrouted": worstCycle,
    "INCRBY/pick": incrby === undefined ? "-" : (incrby / PICKS).toFixed(3),
  };
}

// ---- 2. latency per pick ----

async function timeSequential(pick, samples) {
  const out = new Float64Array(samples);
  for (let i = 0; i < samples; i++) {
    const t0 = process.hrtime.bigint();
    const p = pick();
    if (typeof p !== "number" && typeof p?.then === "function") await p;
    out[i] = Number(process.hrtime.bigint() - t0);
  }
  return out.sort();
}

/** `batch` picks requested together (one turn of the loop), each timed from request to answer. */
async function timeConcurrent(pick, samples, batch) {
  const out = new Float64Array(samples);
  let k = 0;
  while (k < samples) {
    const n = Math.min(batch, samples - k);
    const t0 = process.hrtime.bigint();
    await Promise.all(
      Array.from({ length: n }, async () => {
        const p = pick();
        if (typeof p !== "number") await p;
        out[k++] = Number(process.hrtime.bigint() - t0);
      }),
    );
  }
  return out.sort();
}

async function latency(url) {
  const balancer = new WeightedRoundRobinBalancer(targetsOf({ stable: 90, canary: 10 }));
  const cycle = balancer.cycle;
  const rows = [];
  const row = (name, sorted, source) =>
    rows.push({
      pick: name,
      "p50 µs": us(percentile(sorted, 0.5)),
      "p99 µs": us(percentile(sorted, 0.99)),
      "INCRBY/pick": source === undefined ? "-" : (source.stats.incrbyCommands / source.stats.countedPicks).toFixed(3),
    });
  const warm = Math.min(2000, SAMPLES);

  // Local rotation (no source: what a data plane without --redis does).
  await timeSequential(() => balancer.pick(), warm);
  row("local: balancer.pick()", await timeSequential(() => balancer.pick(), SAMPLES));

  const local = new LocalSequenceSource();
  await timeSequential(() => balancer.pickAt(local.next("k", cycle)), warm);
  row("local counters: pickAt(LocalSequenceSource)", await timeSequential(() => balancer.pickAt(local.next("k", cycle)), SAMPLES));

  const ping = new Redis(url);
  await timeSequential(() => ping.ping(), warm);
  row("reference: raw ioredis PING round trip", await timeSequential(() => ping.ping(), SAMPLES));
  ping.disconnect();

  const pickWith = (s, key) => () => {
    const p = s.next(key, cycle);
    return typeof p === "number" ? balancer.pickAt(p) : p.then((x) => balancer.pickAt(x));
  };

  for (const [name, opts, batch] of [
    ["redis exact: 1 pick at a time", {}, 1],
    ["redis exact: 64 concurrent picks", {}, 64],
    ["redis lease 100: 1 pick at a time", { lease: 100 }, 1],
    ["redis lease 1000: 1 pick at a time", { lease: 1000 }, 1],
  ]) {
    const [s] = await sources(url, 1, opts);
    const key = `gw:seq:{latency/${name}}:1`;
    await (batch === 1 ? timeSequential(pickWith(s, key), warm) : timeConcurrent(pickWith(s, key), warm, batch));
    s.stats.incrbyCommands = 0;
    s.stats.countedPicks = 0;
    const sorted = batch === 1 ? await timeSequential(pickWith(s, key), SAMPLES) : await timeConcurrent(pickWith(s, key), SAMPLES, batch);
    row(name, sorted, s);
    await s.close();
  }
  return rows;
}

// ---- run ----

const url = await startRedis();
console.log(`node ${process.version}, redis-server ${url}, ${NODES} nodes, ${PICKS} picks per split case, ${SAMPLES} latency samples per row`);
console.log("reproduce: npx tsc -p tsconfig.json && node test/bench/counters.mjs");

const splitRows = [];
for (const weights of WEIGHTS) {
  for (const spread of Object.keys(SPREADS)) {
    for (const mode of [{ name: "local (per node)" }, { name: "redis exact", lease: 0 }, { name: "redis lease 10", lease: 10 }, { name: "redis lease 100", lease: 100 }]) {
      splitRows.push(await splitCase(url, mode, weights, spread));
    }
  }
}
console.log("\n1. Fleet-wide split error, 4 nodes (misrouted = requests on the wrong side vs the ideal split)");
console.table(splitRows);

console.log("\n2. Latency per pick on one node (90/10 weighted round-robin)");
console.table(await latency(url));

clearTimeout(watchdog);
cleanup();
process.exit(0);
