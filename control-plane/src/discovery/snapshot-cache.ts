import type { Snapshot } from "../../../proto/gen/gateway/v1/snapshot_pb.js";
import type { ConfigState } from "../config/state.js";

/**
 * Holds the latest published snapshot and tells watchers when a newer one exists. It knows nothing
 * about streams or storage: the config API feeds it states, the stream server reads from it.
 * Changes that arrive within `coalesceMs` of each other become one snapshot, so a burst of writes
 * costs data planes one push.
 */
export class SnapshotCache {
  private latest: Snapshot;
  private pending: ConfigState | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly watchers = new Set<(snapshot: Snapshot) => void>();

  constructor(
    initial: ConfigState,
    private readonly coalesceMs = 10,
  ) {
    this.latest = initial.snapshot();
  }

  /** The snapshot data planes should converge on now. */
  current(): Snapshot {
    return this.latest;
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
    this.latest = state.snapshot();
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
