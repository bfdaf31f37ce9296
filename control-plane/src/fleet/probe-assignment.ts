import type { Rule } from "../../../proto/gen/gateway/v1/rule_pb.js";
import type { Upstream } from "../../../proto/gen/gateway/v1/upstream_pb.js";
import { targetKey } from "../../../data-plane/src/config/validate.js";
import { fmix32, murmur3 } from "../../../data-plane/src/balancer/hash.js";

/**
 * Which data planes actively probe which targets. With many data planes, probing every target from
 * every node multiplies the load on the targets by the fleet size for no extra information, so each
 * target is probed by k nodes (default 3, or every node when fewer) and the results are shared
 * through the fleet verdict.
 *
 * Nodes are chosen by rendezvous (highest-random-weight) hashing: every (target, node) pair gets a
 * pseudo-random score and a target's probers are its k highest-scoring connected nodes. When a node
 * joins it takes over only the targets where it now ranks in the top k (about k/N of all
 * assignments, one slot each); when a node leaves, only its own targets move, each to the next
 * node in that target's ranking. Nobody else's assignments change, so probers keep their state.
 *
 * The assignment is kept incrementally: a join costs O(targets), a leave O(its targets × nodes),
 * a configuration change O(new targets × nodes). Nothing here knows about streams.
 */

/** A target to probe: its backend (upstream id or "rule/<id>/split/<i>/<j>") and "host:port". */
export interface ProbeTarget {
  readonly backend: string;
  readonly target: string;
}

/** Default number of probers per target. */
export const DEFAULT_PROBERS_PER_TARGET = 3;

/** The assignment key of a target ("<backend>|<host:port>"; neither part can contain "|"). */
export function probeKey(backend: string, target: string): string {
  return `${backend}|${target}`;
}

/**
 * Targets that have an active health check configured: the upstream's health_check.active or the
 * target's own active_check, for every upstream and every inline upstream of a split rule (the same
 * backends the data plane's compiler gives an active check). Disabled targets are never probed.
 * Rule inline URL targets have no active checks.
 */
export function probedTargets(config: { readonly upstreams: ReadonlyMap<string, Upstream>; readonly rules: ReadonlyMap<string, Rule> }): ProbeTarget[] {
  const out: ProbeTarget[] = [];
  const add = (backend: string, up: Upstream) => {
    const upstreamCheck = up.healthCheck?.active;
    for (const t of up.targets) {
      if ((t.activeCheck ?? upstreamCheck) === undefined || t.adminState === "disabled") continue;
      out.push({ backend, target: targetKey(t) });
    }
  };
  for (const [id, up] of config.upstreams) add(id, up);
  for (const rule of config.rules.values()) {
    (rule.trafficSplit?.rules ?? []).forEach((sr, i) =>
      sr.weightedUpstreams.forEach((w, j) => {
        if (w.upstreamId === "" && w.upstream !== undefined) add(`rule/${rule.id}/split/${i}/${j}`, w.upstream);
      }),
    );
  }
  return out;
}

/** 32-bit string hash: the data plane's MurmurHash3, so both planes hash ids alike. */
export function hash32(s: string, seed = 0x9747b28c): number {
  return murmur3(s, seed);
}

/**
 * Score of a (target, node) pair from their hashes. For a fixed target it is a bijection of the node
 * hash, so two nodes tie only if their ids hash alike (then the smaller id wins).
 */
export function rendezvousScore(targetHash: number, nodeHash: number): number {
  return fmix32(fmix32(targetHash ^ nodeHash) ^ targetHash);
}

interface Ranked {
  readonly nodeId: string;
  readonly score: number;
}

/** Whether a ranks before b: higher score first, then smaller id. */
function before(a: Ranked, b: Ranked): boolean {
  return a.score !== b.score ? a.score > b.score : a.nodeId < b.nodeId;
}

/** Inserts into a list kept in rank order. */
function insertRanked(list: Ranked[], r: Ranked): void {
  let i = list.length;
  while (i > 0 && before(r, list[i - 1])) i--;
  list.splice(i, 0, r);
}

/** The k nodes that probe `key`, best first: a plain O(nodes) computation (reference and tests). */
export function rendezvousOwners(key: string, nodeIds: Iterable<string>, k = DEFAULT_PROBERS_PER_TARGET): string[] {
  const th = hash32(key);
  const top: Ranked[] = [];
  for (const nodeId of nodeIds) {
    const r = { nodeId, score: rendezvousScore(th, hash32(nodeId)) };
    if (top.length < k || before(r, top[top.length - 1])) {
      insertRanked(top, r);
      if (top.length > k) top.pop();
    }
  }
  return top.map((r) => r.nodeId);
}

interface TargetSlot {
  readonly ref: ProbeTarget;
  readonly hash: number;
  /** Current probers, best first, at most k. */
  owners: Ranked[];
}

/** The incremental rendezvous assignment of probe targets to connected nodes. */
export class ProbeAssignment {
  private readonly k: number;
  private readonly nodeHashes = new Map<string, number>();
  private readonly targets = new Map<string, TargetSlot>();
  private readonly byNode = new Map<string, Set<string>>();
  private readonly versions = new Map<string, number>();
  private nextVersion = 1;

  constructor(probersPerTarget = DEFAULT_PROBERS_PER_TARGET) {
    this.k = Math.max(1, Math.floor(probersPerTarget));
  }

  /** Replaces the set of targets to probe (on every configuration change). */
  setTargets(refs: readonly ProbeTarget[]): void {
    const wanted = new Map<string, ProbeTarget>();
    for (const r of refs) wanted.set(probeKey(r.backend, r.target), r);
    for (const [key, slot] of this.targets) {
      if (wanted.has(key)) continue;
      this.targets.delete(key);
      for (const o of slot.owners) this.unassign(o.nodeId, key);
    }
    for (const [key, ref] of wanted) {
      if (this.targets.has(key)) continue;
      const slot: TargetSlot = { ref, hash: hash32(key), owners: [] };
      this.targets.set(key, slot);
      for (const [nodeId, nh] of this.nodeHashes) this.offer(slot, key, { nodeId, score: rendezvousScore(slot.hash, nh) });
    }
  }

  /** A node connected: it takes the targets where it ranks in the top k. */
  addNode(nodeId: string): void {
    if (this.nodeHashes.has(nodeId)) return;
    const nh = hash32(nodeId);
    this.nodeHashes.set(nodeId, nh);
    this.byNode.set(nodeId, new Set());
    this.bump(nodeId);
    for (const [key, slot] of this.targets) this.offer(slot, key, { nodeId, score: rendezvousScore(slot.hash, nh) });
  }

  /** A node left: each of its targets goes to the next node in that target's ranking. */
  removeNode(nodeId: string): void {
    if (!this.nodeHashes.delete(nodeId)) return;
    const keys = this.byNode.get(nodeId) ?? new Set<string>();
    this.byNode.delete(nodeId);
    this.versions.delete(nodeId);
    for (const key of keys) {
      const slot = this.targets.get(key);
      if (slot === undefined) continue;
      slot.owners = slot.owners.filter((o) => o.nodeId !== nodeId);
      if (slot.owners.length >= this.nodeHashes.size) continue;
      // The best node not already an owner.
      let best: Ranked | undefined;
      for (const [id, nh] of this.nodeHashes) {
        if (slot.owners.some((o) => o.nodeId === id)) continue;
        const r = { nodeId: id, score: rendezvousScore(slot.hash, nh) };
        if (best === undefined || before(r, best)) best = r;
      }
      if (best !== undefined) this.offer(slot, key, best);
    }
  }

  /** Probers of a target, best first (empty when it is not probed or no node is connected). */
  owners(backend: string, target: string): readonly string[] {
    return this.targets.get(probeKey(backend, target))?.owners.map((o) => o.nodeId) ?? [];
  }

  /** Probe keys (see probeKey) assigned to a node. */
  keysOf(nodeId: string): ReadonlySet<string> {
    return this.byNode.get(nodeId) ?? EMPTY;
  }

  /** The target behind a probe key. */
  target(key: string): ProbeTarget | undefined {
    return this.targets.get(key)?.ref;
  }

  /** Changes whenever the node's set of targets changes (publishers compare it to skip unchanged sends). */
  versionOf(nodeId: string): number {
    return this.versions.get(nodeId) ?? 0;
  }

  /** Number of nodes and targets. */
  size(): { nodes: number; targets: number } {
    return { nodes: this.nodeHashes.size, targets: this.targets.size };
  }

  /** Makes `r` an owner of the slot if it ranks in the top k, displacing the last owner if needed. */
  private offer(slot: TargetSlot, key: string, r: Ranked): void {
    const owners = slot.owners;
    if (owners.length >= this.k && !before(r, owners[owners.length - 1])) return;
    insertRanked(owners, r);
    this.assign(r.nodeId, key);
    if (owners.length > this.k) this.unassign(owners.pop()!.nodeId, key);
  }

  private assign(nodeId: string, key: string): void {
    this.byNode.get(nodeId)?.add(key);
    this.bump(nodeId);
  }

  private unassign(nodeId: string, key: string): void {
    if (this.byNode.get(nodeId)?.delete(key)) this.bump(nodeId);
  }

  private bump(nodeId: string): void {
    this.versions.set(nodeId, this.nextVersion++);
  }
}

const EMPTY: ReadonlySet<string> = new Set();
