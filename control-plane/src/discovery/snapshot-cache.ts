import { create } from "@bufbuild/protobuf";
import { DeltaSchema, type Delta, type Resource, type Snapshot } from "../../../proto/gen/gateway/v1/snapshot_pb.js";
import type { ConfigState } from "../config/state.js";

/**
 * Holds the latest published snapshot, the recent history of what changed between published
 * versions, and tells watchers when a newer snapshot exists. It knows nothing about streams or
 * storage: the config API feeds it states, the stream server reads from it.
 *
 * Changes that arrive within `coalesceMs` of each other become one snapshot, so a burst of writes
 * costs data planes one push. Deltas are computed from the history, once per base version and
 * shared by every node at that base, so a one-target change costs bytes proportional to the change
 * whatever the size of the configuration.
 */

/** Names that changed between two consecutive published versions. */
interface Change {
  readonly from: bigint;
  readonly to: bigint;
  readonly names: readonly string[];
}

/** Published versions whose changes are kept for deltas. Older bases get a full snapshot. */
const DEFAULT_HISTORY = 1024;

export class SnapshotCache {
  private latest: Snapshot;
  private byName: Map<string, Resource>;
  private history: Change[] = [];
  private deltas = new Map<bigint, Delta | undefined>(); // per base, for the latest version only
  private pending: ConfigState | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly watchers = new Set<(snapshot: Snapshot) => void>();

  constructor(
    initial: ConfigState,
    private readonly coalesceMs = 10,
    private readonly historyLimit = DEFAULT_HISTORY,
  ) {
    this.latest = initial.snapshot();
    this.byName = indexByName(this.latest.resources);
  }

  /** The snapshot data planes should converge on now. */
  current(): Snapshot {
    return this.latest;
  }

  /**
   * The changes from `base` to the current version, or undefined when they are not known (base
   * too old, from before this process started, or not a published version): send a full snapshot.
   */
  deltaSince(base: bigint): Delta | undefined {
    if (base === this.latest.version || base === 0n) return undefined;
    if (this.deltas.has(base)) return this.deltas.get(base);
    let delta: Delta | undefined;
    const first = this.history.findIndex((c) => c.from === base);
    if (first !== -1) {
      const names = new Set<string>();
      for (let i = first; i < this.history.length; i++) for (const n of this.history[i].names) names.add(n);
      const upserted: Resource[] = [];
      const removed: string[] = [];
      for (const n of names) {
        const r = this.byName.get(n);
        if (r === undefined) removed.push(n);
        else upserted.push(r);
      }
      delta = create(DeltaSchema, { baseVersion: base, version: this.latest.version, upserted, removed });
    }
    this.deltas.set(base, delta);
    return delta;
  }

  /** Schedules publication of a newer state. */
  update(state: ConfigState): void {
    if (state.version <= this.latest.version) return;
    this.pending = state;
    this.timer ??= setTimeout(() => this.publish(), this.coalesceMs);
  }

  /** Publishes any pending state now (used at shutdown and in tests). */
  flush(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.publish();
  }

  private publish(): void {
    this.timer = undefined;
    const state = this.pending;
    this.pending = undefined;
    if (state === undefined || state.version <= this.latest.version) return;
    const next = state.snapshot();
    const nextByName = indexByName(next.resources);
    this.history.push({ from: this.latest.version, to: next.version, names: changedNames(this.byName, nextByName) });
    if (this.history.length > this.historyLimit) this.history.splice(0, this.history.length - this.historyLimit);
    this.latest = next;
    this.byName = nextByName;
    this.deltas = new Map();
    for (const w of this.watchers) w(this.latest);
  }

  /** Calls `watcher` with every snapshot published after now. */
  watch(watcher: (snapshot: Snapshot) => void): () => void {
    this.watchers.add(watcher);
    return () => this.watchers.delete(watcher);
  }

  /** Stops the coalescing timer. */
  close(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.watchers.clear();
  }
}

function indexByName(resources: readonly Resource[]): Map<string, Resource> {
  return new Map(resources.map((r) => [r.name, r]));
}

/** Names added, removed, or rewritten (revision moved) between two resource sets. */
function changedNames(before: ReadonlyMap<string, Resource>, after: ReadonlyMap<string, Resource>): string[] {
  const names: string[] = [];
  for (const [name, r] of after) {
    if (before.get(name)?.revision !== r.revision) names.push(name);
  }
  for (const name of before.keys()) if (!after.has(name)) names.push(name);
  return names;
}
