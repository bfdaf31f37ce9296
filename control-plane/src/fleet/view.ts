import type { Report } from "../../../proto/gen/gateway/v1/discovery_pb.js";

/**
 * The fleet view: what every data plane reports about every target, merged into a fleet verdict,
 * fleet-wide in-flight counts and windowed traffic figures. It is fed reports and node departures
 * and knows nothing about streams, timers or configuration (the publisher and the API read it).
 *
 * Memory is bounded by what is reported now, never by time: one entry per (node, target) that is
 * still live, and per target at most `maxWindowMs / bucketMs` traffic buckets. Entries of a node
 * that disconnects are dropped at once; entries a node stops reporting expire after
 * `expiryIntervals` times its report interval, so a dead node's view never lingers.
 *
 * ## Fleet verdict
 *
 * Each live (node, target) entry casts a vote from the node's evidence:
 * - "down" when the node's passive state is "ejected" or its active probe says "unhealthy";
 * - "up" when its probe says "healthy", or it had traffic to the target (requests completed or in
 *   flight) within its expiry window and its passive state is "healthy";
 * - otherwise it abstains: a node that neither probes nor sends traffic to a target knows nothing
 *   about it, so counting it as "up" would let idle nodes outvote the ones that see the failure.
 *   "half-open" abstains too: it is a node trying the target again, and counting it as down would
 *   keep a passively-ejected target down fleet-wide forever (no node would route the trial request).
 *
 * A target is down fleet-wide when more than half of the voters vote down and there are at least
 * `minVoters` (default 2) of them, or when the only voter's evidence is an active probe that says
 * "unhealthy" (one assigned prober is enough: probes are deliberate checks, while one node's passive
 * ejection may be that node's own network trouble, which it already acts on locally).
 *
 * Vote counts and in-flight sums are maintained incrementally per report, so a report costs
 * O(targets in it), not O(nodes); time-dependent changes (expiry, traffic evidence lapsing) are
 * applied by `sweep()`, which the publisher runs every tick.
 *
 * ## Windowed traffic
 *
 * Each report's per-target counters are added to the target's bucket for the report's arrival time
 * (`bucketMs` wide, default 1 s). A window of W ms covers the buckets of the reports received in the
 * last W ms (at bucket resolution); as every report covers the `interval_ms` before its arrival, the
 * traffic counted is that of roughly the last W ms plus one report interval. The buckets belong to
 * the target, not to the node, so a node that crashes does not take its recent errors with it.
 * Merging across nodes: requests and failures are summed; p50 is the request-weighted mean of the
 * reported medians (an approximation: percentiles of different nodes cannot be merged exactly); p99
 * is the highest p99 any node reported in the window (conservative: a rollout judging a canary
 * should see its worst node); max is the maximum; mean is the sum of latencies over requests.
 */

/** A node's passive (circuit breaker) state of a target, as reported. */
export type PassiveState = "healthy" | "ejected" | "half-open" | "unknown";
/** A node's active probe state of a target, as reported ("unknown": the node does not probe it). */
export type ProbeState = "healthy" | "unhealthy" | "unknown";
/** What one node's evidence says about a target. */
export type Vote = "down" | "up" | "abstain";

/** Latency summary of one report interval, in milliseconds. */
export interface Latency {
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
  readonly sumMs: number;
}

/** What one live node last reported about one target. */
export interface NodeTargetView {
  readonly nodeId: string;
  readonly passiveState: PassiveState;
  readonly probeState: ProbeState;
  readonly inFlight: number;
  /** Requests completed in the node's last report interval. */
  readonly requests: number;
  /** Failed requests in the node's last report interval. */
  readonly failures: number;
  readonly latency: Latency;
  /** Milliseconds covered by the last report. */
  readonly intervalMs: number;
  /** When the node last reported the target (view clock, Unix ms by default). */
  readonly lastReportMs: number;
  readonly vote: Vote;
}

/** Traffic of one target (or a whole backend) over a window, merged across nodes. */
export interface TargetStats {
  readonly requests: number;
  readonly failures: number;
  /** failures / requests, capped at 1; 0 without requests (1 when only failures were counted). */
  readonly errorRate: number;
  /** Request-weighted mean of the reported medians. */
  readonly p50Ms: number;
  /** Highest reported p99 (conservative). */
  readonly p99Ms: number;
  readonly maxMs: number;
  /** Sum of latencies / requests. */
  readonly meanMs: number;
}

/** Windowed traffic of a backend, per target and in total (what rollouts judge a canary by). */
export interface BackendStats {
  readonly backendId: string;
  /** The window actually used (clamped to [bucketMs, maxWindowMs]). */
  readonly windowMs: number;
  /** Per target "host:port"; targets without traffic in the window have zero figures. */
  readonly targets: ReadonlyMap<string, TargetStats>;
  readonly total: TargetStats;
}

/** The fleet's verdict and load for one target. */
export interface TargetVerdict {
  readonly backend: string;
  readonly target: string;
  /** Down fleet-wide (see the module comment for the rule). */
  readonly down: boolean;
  /** Sum of the latest in-flight counts of live nodes. */
  readonly inFlight: number;
  /** Live nodes reporting the target. */
  readonly reporters: number;
  /** Nodes with evidence (not abstaining). */
  readonly voters: number;
  readonly downVotes: number;
  /** Down votes that come from an active probe ("unhealthy"). */
  readonly probeDownVotes: number;
}

/** Vote counts a verdict is decided on. */
export interface VoteCounts {
  readonly voters: number;
  readonly downVotes: number;
  readonly probeDownVotes: number;
}

/** Options of a FleetView; the defaults suit 1-10 s report intervals. */
export interface FleetViewOptions {
  /** Clock, Unix ms. Injected by tests. */
  readonly now?: () => number;
  /** Width of a traffic bucket (the window resolution). Default 1000. */
  readonly bucketMs?: number;
  /** Longest window kept and served. Default 300000 (5 minutes). */
  readonly maxWindowMs?: number;
  /** A node's entries expire this many report intervals after its last report. Default 3. */
  readonly expiryIntervals?: number;
  /** Interval assumed when a report says 0. Default 5000 (the data plane's default). */
  readonly defaultIntervalMs?: number;
  /** Expiry is never shorter than this, whatever the interval. Default 3000. */
  readonly minExpiryMs?: number;
  /** Voters needed for a majority verdict. Default 2. */
  readonly minVoters?: number;
  /** Targets read from one report at most (a defence against a broken node). Default 100000. */
  readonly maxTargetsPerReport?: number;
}

/** Longest backend id or target address accepted from a report. */
const MAX_NAME = 512;
/** Report intervals remembered per node to estimate its period (state-change reports are shorter). */
const INTERVAL_HISTORY = 4;

const ZERO_LATENCY: Latency = { p50Ms: 0, p99Ms: 0, maxMs: 0, sumMs: 0 };
const ZERO_STATS: TargetStats = { requests: 0, failures: 0, errorRate: 0, p50Ms: 0, p99Ms: 0, maxMs: 0, meanMs: 0 };

/** The vote of one node's evidence about one target (see the module comment). */
export function voteOf(passive: PassiveState, probe: ProbeState, recentTraffic: boolean): Vote {
  if (passive === "ejected" || probe === "unhealthy") return "down";
  if (probe === "healthy") return "up";
  if (passive === "healthy" && recentTraffic) return "up";
  return "abstain";
}

/** The fleet verdict from vote counts (see the module comment). */
export function isDown(c: VoteCounts, minVoters = 2): boolean {
  if (c.voters >= Math.max(1, minVoters) && c.downVotes * 2 > c.voters) return true;
  return c.voters === 1 && c.probeDownVotes === 1;
}

/** Normalises a reported passive state; anything unexpected reads as "unknown" (no evidence). */
export function passiveStateOf(s: string): PassiveState {
  return s === "healthy" || s === "ejected" || s === "half-open" ? s : "unknown";
}

/** Normalises a reported probe state. */
export function probeStateOf(s: string): ProbeState {
  return s === "healthy" || s === "unhealthy" ? s : "unknown";
}

interface Bucket {
  /** floor(arrival / bucketMs). */
  readonly index: number;
  requests: number;
  failures: number;
  /** Sum of p50 × requests, for the request-weighted mean. */
  p50Weighted: number;
  p99Ms: number;
  maxMs: number;
  sumMs: number;
}

interface Entry {
  readonly node: NodeRecord;
  readonly target: TargetRecord;
  passive: PassiveState;
  probe: ProbeState;
  inFlight: number;
  requests: number;
  failures: number;
  latency: Latency;
  intervalMs: number;
  lastReportMs: number;
  lastTrafficMs: number;
  vote: Vote;
}

interface TargetRecord {
  readonly backend: string;
  readonly target: string;
  /** Live entries by node id. */
  readonly entries: Map<string, Entry>;
  inFlight: number;
  voters: number;
  downVotes: number;
  probeDownVotes: number;
  /** Verdict as of the last change, to notice flips. */
  down: boolean;
  /** Oldest first, at most one per bucket index. */
  buckets: Bucket[];
}

interface NodeRecord {
  readonly nodeId: string;
  /** Recent report intervals, newest last. */
  readonly intervals: number[];
  lastReportMs: number;
  /** Live entries by target record. */
  readonly entries: Set<Entry>;
}

/** Incrementally maintained view of the fleet's reports. */
export class FleetView {
  private readonly now: () => number;
  private readonly bucketMs: number;
  /** Longest window kept and served, in ms. */
  readonly maxWindowMs: number;
  private readonly maxBuckets: number;
  private readonly expiryIntervals: number;
  private readonly defaultIntervalMs: number;
  private readonly minExpiryMs: number;
  private readonly minVoters: number;
  private readonly maxTargetsPerReport: number;
  private readonly backends = new Map<string, Map<string, TargetRecord>>();
  private readonly nodes = new Map<string, NodeRecord>();
  private readonly listeners = new Set<(v: TargetVerdict) => void>();

  constructor(opts: FleetViewOptions = {}) {
    this.now = opts.now ?? Date.now;
    this.bucketMs = Math.max(1, opts.bucketMs ?? 1_000);
    this.maxWindowMs = Math.max(this.bucketMs, opts.maxWindowMs ?? 300_000);
    this.maxBuckets = Math.ceil(this.maxWindowMs / this.bucketMs);
    this.expiryIntervals = opts.expiryIntervals ?? 3;
    this.defaultIntervalMs = opts.defaultIntervalMs ?? 5_000;
    this.minExpiryMs = opts.minExpiryMs ?? 3_000;
    this.minVoters = opts.minVoters ?? 2;
    this.maxTargetsPerReport = opts.maxTargetsPerReport ?? 100_000;
  }

  /** Calls `listener` whenever a target's fleet verdict flips (after the change is applied). */
  onVerdictChange(listener: (v: TargetVerdict) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Applies one report of a node. A report may cover only some targets (a data plane reports at
   * once on a state change): targets it leaves out keep their previous entry until it expires.
   */
  applyReport(nodeId: string, report: Report, now = this.now()): void {
    let node = this.nodes.get(nodeId);
    if (node === undefined) {
      node = { nodeId, intervals: [], lastReportMs: now, entries: new Set() };
      this.nodes.set(nodeId, node);
    }
    const intervalMs = report.intervalMs > 0 ? report.intervalMs : this.defaultIntervalMs;
    node.intervals.push(intervalMs);
    if (node.intervals.length > INTERVAL_HISTORY) node.intervals.shift();
    node.lastReportMs = now;
    const expiry = this.expiryOf(node);

    const touched = new Set<TargetRecord>();
    const n = Math.min(report.targets.length, this.maxTargetsPerReport);
    for (let i = 0; i < n; i++) {
      const t = report.targets[i];
      if (t.backend === "" || t.target === "" || t.backend.length > MAX_NAME || t.target.length > MAX_NAME) continue;
      const rec = this.targetRecord(t.backend, t.target);
      let e = rec.entries.get(nodeId);
      if (e === undefined) {
        e = {
          node,
          target: rec,
          passive: "unknown",
          probe: "unknown",
          inFlight: 0,
          requests: 0,
          failures: 0,
          latency: ZERO_LATENCY,
          intervalMs,
          lastReportMs: now,
          lastTrafficMs: -Infinity,
          vote: "abstain",
        };
        rec.entries.set(nodeId, e);
        node.entries.add(e);
      } else {
        this.retract(e);
      }
      const requests = Number(t.requests);
      const failures = Number(t.failures);
      const lat = t.latency;
      e.passive = passiveStateOf(t.passiveState);
      e.probe = probeStateOf(t.probeState);
      e.inFlight = t.inFlight;
      e.requests = requests;
      e.failures = failures;
      e.latency = lat === undefined ? ZERO_LATENCY : { p50Ms: finite(lat.p50Ms), p99Ms: finite(lat.p99Ms), maxMs: finite(lat.maxMs), sumMs: finite(lat.sumMs) };
      e.intervalMs = intervalMs;
      e.lastReportMs = now;
      if (requests > 0 || failures > 0 || t.inFlight > 0) e.lastTrafficMs = now;
      e.vote = voteOf(e.passive, e.probe, now - e.lastTrafficMs <= expiry);
      this.count(e);
      if (requests > 0 || failures > 0) this.addTraffic(rec, e, now);
      touched.add(rec);
    }
    for (const rec of touched) this.settle(rec);
  }

  /** Forgets a node at once (its stream closed): its votes and in-flight counts leave the fleet. */
  removeNode(nodeId: string): void {
    const node = this.nodes.get(nodeId);
    if (node === undefined) return;
    this.nodes.delete(nodeId);
    const touched: TargetRecord[] = [];
    for (const e of node.entries) {
      this.retract(e);
      e.target.entries.delete(nodeId);
      touched.push(e.target);
    }
    node.entries.clear();
    for (const rec of touched) this.settle(rec);
  }

  /**
   * Applies the passage of time: expires entries not reported for `expiryIntervals` report
   * intervals, re-evaluates votes whose traffic evidence lapsed, drops buckets older than the
   * longest window, and forgets targets nobody reports any more. O(live entries).
   */
  sweep(now = this.now()): void {
    const touched = new Set<TargetRecord>();
    for (const node of this.nodes.values()) {
      const expiry = this.expiryOf(node);
      for (const e of node.entries) {
        if (now - e.lastReportMs > expiry) {
          this.retract(e);
          e.target.entries.delete(node.nodeId);
          node.entries.delete(e);
          touched.add(e.target);
          continue;
        }
        const vote = voteOf(e.passive, e.probe, now - e.lastTrafficMs <= expiry);
        if (vote !== e.vote) {
          this.retract(e);
          e.vote = vote;
          this.count(e);
          touched.add(e.target);
        }
      }
      if (node.entries.size === 0 && now - node.lastReportMs > expiry) this.nodes.delete(node.nodeId);
    }
    for (const rec of touched) this.settle(rec);
    const oldest = Math.floor(now / this.bucketMs) - this.maxBuckets;
    for (const [backend, targets] of this.backends) {
      for (const [key, rec] of targets) {
        trimBuckets(rec, oldest);
        if (rec.entries.size === 0 && rec.buckets.length === 0) targets.delete(key);
      }
      if (targets.size === 0) this.backends.delete(backend);
    }
  }

  /** The verdict of one target, or undefined when no node reported it recently. */
  verdict(backend: string, target: string): TargetVerdict | undefined {
    const rec = this.backends.get(backend)?.get(target);
    return rec === undefined || rec.entries.size === 0 ? undefined : verdictOf(rec);
  }

  /** Verdicts of every target some live node reports. */
  *verdicts(): IterableIterator<TargetVerdict> {
    for (const targets of this.backends.values()) {
      for (const rec of targets.values()) if (rec.entries.size > 0) yield verdictOf(rec);
    }
  }

  /** Targets of a backend the view knows (reported by a live node, or with traffic in the longest window). */
  targetsOf(backend: string): string[] {
    return [...(this.backends.get(backend)?.keys() ?? [])];
  }

  /** What each live node last reported about a target, by node id. */
  nodeViews(backend: string, target: string): NodeTargetView[] {
    const rec = this.backends.get(backend)?.get(target);
    if (rec === undefined) return [];
    const out: NodeTargetView[] = [];
    for (const e of rec.entries.values()) {
      out.push({
        nodeId: e.node.nodeId,
        passiveState: e.passive,
        probeState: e.probe,
        inFlight: e.inFlight,
        requests: e.requests,
        failures: e.failures,
        latency: e.latency,
        intervalMs: e.intervalMs,
        lastReportMs: e.lastReportMs,
        vote: e.vote,
      });
    }
    return out.sort((a, b) => (a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0));
  }

  /** Traffic of one target over the last `windowMs` (see the module comment for the merge). */
  targetStats(backend: string, target: string, windowMs: number, now = this.now()): TargetStats {
    const rec = this.backends.get(backend)?.get(target);
    if (rec === undefined) return ZERO_STATS;
    const acc = newAcc();
    accumulate(acc, rec, this.firstIndex(windowMs, now));
    return statsOf(acc);
  }

  /**
   * Traffic of every target of a backend over the last `windowMs`, and the backend's total.
   * This is what rollouts read to judge a canary ("rule/<id>/canary", an upstream id, ...).
   */
  backendStats(backendId: string, windowMs: number, now = this.now()): BackendStats {
    const w = this.clampWindow(windowMs);
    const first = this.firstIndex(w, now);
    const targets = new Map<string, TargetStats>();
    const total = newAcc();
    for (const [key, rec] of this.backends.get(backendId) ?? []) {
      const acc = newAcc();
      accumulate(acc, rec, first);
      targets.set(key, statsOf(acc));
      merge(total, acc);
    }
    return { backendId, windowMs: w, targets, total: statsOf(total) };
  }

  /** `windowMs` clamped to what the view keeps. */
  clampWindow(windowMs: number): number {
    if (!Number.isFinite(windowMs)) return this.maxWindowMs;
    return Math.min(this.maxWindowMs, Math.max(this.bucketMs, Math.floor(windowMs)));
  }

  /** Sizes, for tests and metrics: live nodes, known targets, live (node, target) entries, buckets. */
  size(): { nodes: number; targets: number; entries: number; buckets: number } {
    let targets = 0;
    let entries = 0;
    let buckets = 0;
    for (const m of this.backends.values()) {
      for (const rec of m.values()) {
        targets++;
        entries += rec.entries.size;
        buckets += rec.buckets.length;
      }
    }
    return { nodes: this.nodes.size, targets, entries, buckets };
  }

  private expiryOf(node: NodeRecord): number {
    const interval = node.intervals.length === 0 ? this.defaultIntervalMs : Math.max(...node.intervals);
    return Math.max(this.minExpiryMs, this.expiryIntervals * interval);
  }

  private firstIndex(windowMs: number, now: number): number {
    return Math.floor((now - this.clampWindow(windowMs)) / this.bucketMs) + 1;
  }

  private targetRecord(backend: string, target: string): TargetRecord {
    let targets = this.backends.get(backend);
    if (targets === undefined) {
      targets = new Map();
      this.backends.set(backend, targets);
    }
    let rec = targets.get(target);
    if (rec === undefined) {
      rec = { backend, target, entries: new Map(), inFlight: 0, voters: 0, downVotes: 0, probeDownVotes: 0, down: false, buckets: [] };
      targets.set(target, rec);
    }
    return rec;
  }

  /** Adds an entry's vote and in-flight count to its target. */
  private count(e: Entry): void {
    const rec = e.target;
    rec.inFlight += e.inFlight;
    if (e.vote === "abstain") return;
    rec.voters++;
    if (e.vote === "down") {
      rec.downVotes++;
      if (e.probe === "unhealthy") rec.probeDownVotes++;
    }
  }

  /** Removes what `count` added. */
  private retract(e: Entry): void {
    const rec = e.target;
    rec.inFlight -= e.inFlight;
    if (e.vote === "abstain") return;
    rec.voters--;
    if (e.vote === "down") {
      rec.downVotes--;
      if (e.probe === "unhealthy") rec.probeDownVotes--;
    }
  }

  private addTraffic(rec: TargetRecord, e: Entry, now: number): void {
    const index = Math.floor(now / this.bucketMs);
    let b = rec.buckets.at(-1);
    // A clock that steps back merges into the newest bucket rather than reordering them.
    if (b === undefined || b.index < index) {
      b = { index, requests: 0, failures: 0, p50Weighted: 0, p99Ms: 0, maxMs: 0, sumMs: 0 };
      rec.buckets.push(b);
      trimBuckets(rec, index - this.maxBuckets);
    }
    b.requests += e.requests;
    b.failures += e.failures;
    if (e.requests > 0) {
      b.p50Weighted += e.latency.p50Ms * e.requests;
      b.p99Ms = Math.max(b.p99Ms, e.latency.p99Ms);
      b.maxMs = Math.max(b.maxMs, e.latency.maxMs);
      b.sumMs += e.latency.sumMs;
    }
  }

  /** Recomputes a target's verdict after its counts changed; tells listeners when it flipped. */
  private settle(rec: TargetRecord): void {
    const down = isDown(rec, this.minVoters);
    if (down === rec.down) return;
    rec.down = down;
    const v = verdictOf(rec);
    for (const l of this.listeners) l(v);
  }
}

function verdictOf(rec: TargetRecord): TargetVerdict {
  return {
    backend: rec.backend,
    target: rec.target,
    down: rec.down,
    inFlight: rec.inFlight,
    reporters: rec.entries.size,
    voters: rec.voters,
    downVotes: rec.downVotes,
    probeDownVotes: rec.probeDownVotes,
  };
}

function trimBuckets(rec: TargetRecord, oldestExcluded: number): void {
  let drop = 0;
  while (drop < rec.buckets.length && rec.buckets[drop].index <= oldestExcluded) drop++;
  if (drop > 0) rec.buckets.splice(0, drop);
}

function finite(x: number): number {
  return Number.isFinite(x) && x > 0 ? x : 0;
}

interface Acc {
  requests: number;
  failures: number;
  p50Weighted: number;
  p99Ms: number;
  maxMs: number;
  sumMs: number;
}

function newAcc(): Acc {
  return { requests: 0, failures: 0, p50Weighted: 0, p99Ms: 0, maxMs: 0, sumMs: 0 };
}

function accumulate(acc: Acc, rec: TargetRecord, firstIndex: number): void {
  for (let i = rec.buckets.length - 1; i >= 0 && rec.buckets[i].index >= firstIndex; i--) merge(acc, rec.buckets[i]);
}

function merge(acc: Acc, b: Acc): void {
  acc.requests += b.requests;
  acc.failures += b.failures;
  acc.p50Weighted += b.p50Weighted;
  acc.p99Ms = Math.max(acc.p99Ms, b.p99Ms);
  acc.maxMs = Math.max(acc.maxMs, b.maxMs);
  acc.sumMs += b.sumMs;
}

function statsOf(acc: Acc): TargetStats {
  const r = acc.requests;
  return {
    requests: r,
    failures: acc.failures,
    errorRate: r > 0 ? Math.min(1, acc.failures / r) : acc.failures > 0 ? 1 : 0,
    p50Ms: r > 0 ? acc.p50Weighted / r : 0,
    p99Ms: acc.p99Ms,
    maxMs: acc.maxMs,
    meanMs: r > 0 ? acc.sumMs / r : 0,
  };
}
