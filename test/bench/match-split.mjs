// Per-request cost of routing + split + selection (DESIGN budget: under 2 µs per request with
// 1,000 rules and 100 targets per upstream), compared in the same run with plain prefix routing.
//
// A benchmark, not a test: it asserts nothing. Run against the compiled output:
//   npx tsc -p tsconfig.json && node test/bench/match-split.mjs [runs=9] [requests-per-run=200000]
//
// The configuration is one compiled snapshot (compileSnapshot, as a data plane builds it):
// 1,000 rules with distinct path prefixes ("/svc<i>/*"; every 4th rule also names a host), each
// with 10 split rules: 9 conditional ones over headers, query parameters and cookies (==, in, ~~,
// >, AND and OR), the last unconditional and weighted (95 own / 5 canary). Every upstream has 100
// targets with weights 1..10 (weighted round-robin). The baseline is the same 1,000 rules without
// split rules, measured as router match only (plain prefix routing), and router match + target pick.
//
// Per request, what the proxy's handler does before forwarding: read the Host when the router uses
// hosts, router.match, and when the rule splits, a new IncomingRequestView over the request,
// chooseBackend (canary, then split rules in order) and pickTarget. Requests are plain objects
// shaped like node's IncomingMessage (method, url, rawHeaders, socket, and `headers` built lazily
// from rawHeaders on first access and dropped before each request, as node does per request, so
// code that asks for req.headers pays what it costs in the proxy) with realistic headers. 4,096
// arrivals spread over all 1,000 rules: 90% match none of the 9 conditions (every condition is
// evaluated, query string and cookies are read), 10% carry "X-Canary: true" and match the first
// split rule.
//
// Each figure is the median of several timed runs after a warm-up, so the JIT has settled and one
// noisy run does not decide it. The machines are shared: the figure is CPU time of this process
// per request (process.cpuUsage), which another process's load does not inflate the way it
// inflates wall-clock time (also shown). Absolute numbers drift ±30% here: compare rows of one run.

import os from "node:os";
import { fromJson } from "@bufbuild/protobuf";
import { SnapshotSchema } from "../../dist/proto/gen/gateway/v1/snapshot_pb.js";
import { compileSnapshot } from "../../dist/data-plane/src/config/compile.js";
import { chooseBackend, pickTarget } from "../../dist/data-plane/src/proxy/select.js";
import { hostOf } from "../../dist/data-plane/src/proxy/handler.js";
import { IncomingRequestView } from "../../dist/data-plane/src/split/incoming-request-view.js";

const RUNS = Number(process.argv[2] ?? 9);
const REQUESTS_PER_RUN = Number(process.argv[3] ?? 200_000);
const WARMUP_REQUESTS = 400_000;
const RULES = 1000;
const TARGETS_PER_UPSTREAM = 100;
const UPSTREAMS = 20;
const REQUEST_MIX = 4096;
const COMMAND = "npx tsc -p tsconfig.json && node test/bench/match-split.mjs";

/** Deterministic pseudo-random numbers, so every run measures the same configuration and requests. */
let seed = 20240601;
const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 4294967296;

function upstreamJson(i) {
  return {
    name: `svc-pool-${i}`,
    revision: "1",
    upstream: {
      id: `up_${i}`,
      tenantId: "ten_bench",
      name: `svc-pool-${i}`,
      algorithm: "weighted-round-robin",
      targets: Array.from({ length: TARGETS_PER_UPSTREAM }, (_, t) => ({
        host: `10.${i}.${t >> 8}.${(t & 255) + 1}`,
        port: 8080,
        weight: 1 + Math.floor(rand() * 10),
      })),
    },
  };
}

/**
 * The 10 split rules of rule i: 9 conditional, the last unconditional 95/5. Four of the nine are
 * different on every rule (values with the rule's number, one of 50 regexes), the others repeat
 * across rules as a shared canary header or cookie would; identical expressions are compiled once
 * and shared, distinct ones are not.
 */
function splitRules(i) {
  const canary = { upstreamId: `up_${(i + 1) % UPSTREAMS}` };
  const to = (extra = {}) => [{ ...canary, ...extra }];
  return [
    { match: [{ vars: [["http_x-canary", "==", "true"]] }], weightedUpstreams: to() },
    { match: [{ vars: [["arg_use_canary", "==", "true"]] }], weightedUpstreams: to() },
    { match: [{ vars: [["cookie_canary", "==", `svc${i}`]] }], weightedUpstreams: to() },
    { match: [{ vars: [["http_x-version", "in", ["v2", "v3"]]] }], weightedUpstreams: to() },
    { match: [{ vars: [["http_x-user-tier", "==", "gold"], ["arg_region", "==", "eu"]] }], weightedUpstreams: [{ weight: 1 }, { ...canary, weight: 1 }] },
    { match: [{ vars: [["http_user-agent", "~~", `^Beta/${i % 50}\\.[0-9]+`]] }], weightedUpstreams: to() },
    { match: [{ vars: [["http_x-api-id", "==", String(i)]] }, { vars: [["arg_api", "==", String(i)]] }], weightedUpstreams: to() },
    { match: [{ vars: [["http_x-user-id", ">", 1000000 + i]] }], weightedUpstreams: to() },
    { match: [{ vars: [["cookie_group", "in", ["a", "b"]]] }], weightedUpstreams: to() },
    { weightedUpstreams: [{ weight: 95 }, { ...canary, weight: 5 }] },
  ];
}

function ruleJson(i, withSplit) {
  const rule = {
    id: `rule_${i}`,
    tenantId: "ten_bench",
    path: `/svc${i}/*`,
    upstreamId: `up_${i % UPSTREAMS}`,
  };
  if (i % 4 === 0) rule.hosts = [`api${i}.example.com`];
  if (withSplit) rule.trafficSplit = { rules: splitRules(i) };
  return { name: `rule/rule_${i}`, revision: "1", rule };
}

function snapshot(withSplit) {
  seed = 20240601; // same targets and weights in both configurations
  return fromJson(SnapshotSchema, {
    version: "1",
    resources: [
      { name: "tenant/ten_bench", revision: "1", tenant: { id: "ten_bench", name: "bench" } },
      ...Array.from({ length: UPSTREAMS }, (_, i) => upstreamJson(i)),
      ...Array.from({ length: RULES }, (_, i) => ruleJson(i, withSplit)),
    ],
  });
}

/**
 * Shaped like node's IncomingMessage: rawHeaders as sent, and `headers` (lower-case names, repeats
 * joined) built on first access, as node's getter does. arrive() turns it into the next request
 * (new URL and Host, `headers` forgotten), as the HTTP parser hands the proxy a new one.
 */
class NodeLikeRequest {
  constructor(method, rawHeaders) {
    this.method = method;
    this.url = "/";
    this.rawHeaders = rawHeaders;
    this.socket = { remoteAddress: "127.0.0.1" };
    this.built = undefined;
  }

  get headers() {
    if (this.built === undefined) {
      const h = {};
      const raw = this.rawHeaders;
      for (let i = 0; i < raw.length; i += 2) {
        const name = raw[i].toLowerCase();
        const prev = h[name];
        h[name] = prev === undefined ? raw[i + 1] : `${prev}${name === "cookie" ? "; " : ", "}${raw[i + 1]}`;
      }
      this.built = h;
    }
    return this.built;
  }

  arrive(arrival) {
    this.url = arrival.url;
    this.rawHeaders[1] = arrival.host;
    this.built = undefined;
    return this;
  }
}

/**
 * The requests: REQUEST_MIX arrivals (URL and Host spread over all rules, 10% with X-Canary), each
 * served by one of a few request objects whose headers vary. The request's own data stays in cache,
 * as a request the parser just produced is, while the configuration it reaches is spread over all
 * 1,000 rules (4,096 fully distinct request objects would also measure cache misses on request
 * data that a real proxy does not have).
 */
const POOL = 8;

function makeHeaders(k, canary) {
  const raw = [
    "Host", "gateway.example.com",
    "User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
    "Accept", "application/json, text/plain, */*",
    "Accept-Encoding", "gzip, deflate, br",
    "Accept-Language", "en-GB,en;q=0.9",
    "Authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyLTQyIn0.c2lnbmF0dXJl",
    "Cookie", `session=s${k}; theme=dark; _ga=GA1.2.${k}`,
    "X-Request-Id", `req-${k}`,
    "X-User-Id", String(1000 + k),
  ];
  if (canary) raw.push("X-Canary", "true");
  return raw;
}

function makeArrival(k) {
  const i = Math.floor(rand() * RULES);
  return {
    url: `/svc${i}/items/${k}?page=${k % 7}&sort=asc`,
    host: i % 4 === 0 ? `api${i}.example.com` : "gateway.example.com",
    canary: rand() < 0.1,
  };
}

const ENV = {};
let sink = 0; // results flow here so the JIT cannot drop the work as dead code

/** Router match only (the baseline: plain prefix routing). */
function matchOnly(config, reqs, n, offset) {
  const router = config.router;
  let s = 0;
  for (let k = 0; k < n; k++) {
    const arrival = reqs.arrivals[(offset + k) & (REQUEST_MIX - 1)];
    const req = (arrival.canary ? reqs.canary : reqs.plain)[k & (POOL - 1)].arrive(arrival);
    const route = router.match(router.usesHosts ? hostOf(req) : "", req.method, req.url);
    s += route.strip;
  }
  return s;
}

/** What the handler does before forwarding: match, split (when the rule has any), pick a target. */
function matchSplitPick(config, reqs, n, offset) {
  const router = config.router;
  let s = 0;
  for (let k = 0; k < n; k++) {
    const arrival = reqs.arrivals[(offset + k) & (REQUEST_MIX - 1)];
    const req = (arrival.canary ? reqs.canary : reqs.plain)[k & (POOL - 1)].arrive(arrival);
    const route = router.match(router.usesHosts ? hostOf(req) : "", req.method, req.url);
    let backend = route.backend;
    let view;
    if (route.canary !== undefined || route.split.length > 0) {
      view = new IncomingRequestView(req, ENV);
      backend = chooseBackend(route, view);
    }
    const target = pickTarget(backend, undefined, undefined);
    s += target.weight;
  }
  return s;
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[sorted.length >> 1];
}

function measure(fn, config, reqs) {
  sink += fn(config, reqs, WARMUP_REQUESTS, 0);
  const cpu = [];
  const wall = [];
  for (let r = 0; r < RUNS; r++) {
    const cpuStart = process.cpuUsage();
    const wallStart = process.hrtime.bigint();
    sink += fn(config, reqs, REQUESTS_PER_RUN, (r + 1) * 7919);
    wall.push(Number(process.hrtime.bigint() - wallStart) / REQUESTS_PER_RUN);
    const used = process.cpuUsage(cpuStart);
    cpu.push(((used.user + used.system) * 1000) / REQUESTS_PER_RUN);
  }
  return { median: median(cpu), min: Math.min(...cpu), max: Math.max(...cpu), wall: median(wall) };
}

// Each case gets its own copy of the loop (new Function from the source), so call sites the JIT
// specialises for one configuration do not turn polymorphic for the next one.
const fresh = (fn) =>
  new Function("hostOf", "IncomingRequestView", "chooseBackend", "pickTarget", "REQUEST_MIX", "POOL", "ENV", `return ${fn.toString()}`)(
    hostOf, IncomingRequestView, chooseBackend, pickTarget, REQUEST_MIX, POOL, ENV,
  );

let t0 = process.hrtime.bigint();
const plain = compileSnapshot(snapshot(false));
const plainCompileMs = Number(process.hrtime.bigint() - t0) / 1e6;
t0 = process.hrtime.bigint();
const split = compileSnapshot(snapshot(true));
const splitCompileMs = Number(process.hrtime.bigint() - t0) / 1e6;

seed = 777;
const reqs = {
  arrivals: Array.from({ length: REQUEST_MIX }, (_, k) => makeArrival(k)),
  plain: Array.from({ length: POOL }, (_, k) => new NodeLikeRequest("GET", makeHeaders(k, false))),
  canary: Array.from({ length: POOL }, (_, k) => new NodeLikeRequest("GET", makeHeaders(k, true))),
};
// Every request must route (a 404 would measure the wrong path).
for (const arrival of reqs.arrivals) {
  const req = reqs.plain[0].arrive(arrival);
  for (const config of [plain, split]) {
    const r = config.router.match(config.router.usesHosts ? hostOf(req) : "", req.method, req.url);
    if (r === undefined || r.ruleId === undefined) throw new Error(`bench request does not route: ${req.url}`);
  }
}
const canaryShare = reqs.arrivals.filter((a) => a.canary).length / REQUEST_MIX;

const cases = [
  ["baseline: router match only (no split rules)", matchOnly, plain],
  ["baseline: router match + target pick (no split rules)", matchSplitPick, plain],
  ["split: router match + chooseBackend + target pick", matchSplitPick, split],
];
const results = cases.map(([name, fn, config]) => ({ name, ...measure(fresh(fn), config, reqs) }));
const base = results[0].median;
const rows = results.map((r) => ({
  case: r.name,
  "CPU ns/req (median)": r.median.toFixed(0),
  "CPU min–max": `${r.min.toFixed(0)}–${r.max.toFixed(0)}`,
  "wall ns/req (median)": r.wall.toFixed(0),
  "× baseline": (r.median / base).toFixed(2),
}));

console.log(`node ${process.version}; ${RULES} rules (${RULES / 4} with hosts), 10 split rules each, ${UPSTREAMS} upstreams × ${TARGETS_PER_UPSTREAM} targets (weighted round-robin)`);
console.log(`${REQUEST_MIX} arrivals over all rules, ${(canaryShare * 100).toFixed(1)}% match split rule 1 (X-Canary), the rest evaluate all 9 conditions and take the 95/5 split`);
console.log(`compileSnapshot: ${plainCompileMs.toFixed(0)} ms without split rules, ${splitCompileMs.toFixed(0)} ms with 10,000 split rules`);
console.log(`${RUNS} runs × ${REQUESTS_PER_RUN} requests per case after ${WARMUP_REQUESTS} warm-up requests; load average ${os.loadavg()[0].toFixed(1)} on ${os.cpus().length} CPUs\n`);
console.table(rows);
const splitMedian = results[2].median;
console.log(`\nmatch + split + pick: ${(splitMedian / 1000).toFixed(2)} µs CPU per request, median (budget 2 µs): ${splitMedian < 2000 ? "within budget" : "OVER BUDGET"}`);
console.log(`reproduce: ${COMMAND}`);
if (sink === 0.5) console.log(sink); // keeps `sink` observable
