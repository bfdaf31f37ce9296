/**
 * The configuration store: a versioned key-value log of resources that knows nothing about
 * protobuf, validation or streams. The config service validates a whole candidate state, then asks
 * the store to commit the change; the discovery stream only reads what was committed.
 *
 * Every commit gets the next global version (monotonic across restarts). A resource's revision is
 * the version of the commit that last wrote it, so revisions double as etags.
 */

/** Kinds of resources the store keeps. */
export type ResourceKind = "tenant" | "apikey" | "rule" | "upstream" | "rollout";

/** One stored resource. `data` is opaque to the store (the service stores protobuf JSON). */
export interface StoredResource {
  readonly kind: ResourceKind;
  readonly id: string;
  /** Version of the commit that last wrote this resource. */
  readonly revision: bigint;
  readonly data: string;
}

/** A write inside one commit. */
export type Mutation =
  | { readonly op: "put"; readonly kind: ResourceKind; readonly id: string; readonly data: string }
  | { readonly op: "delete"; readonly kind: ResourceKind; readonly id: string };

/** Everything in the store at one version. */
export interface StoreState {
  readonly version: bigint;
  /** Keyed by `${kind}/${id}`. */
  readonly resources: ReadonlyMap<string, StoredResource>;
}

/** A committed change, as delivered to subscribers (possibly written by another replica). */
export interface CommitEvent {
  readonly version: bigint;
  readonly mutations: readonly Mutation[];
}

/** Thrown when a commit's expected version is no longer current (another writer won). */
export class StoreConflictError extends Error {
  constructor(
    readonly expectedVersion: bigint,
    readonly actualVersion: bigint,
  ) {
    super(`store version moved from ${expectedVersion} to ${actualVersion} before the commit`);
    this.name = "StoreConflictError";
  }
}

/**
 * The store could not be reached, or did not answer in time (a shared store such as Redis is down
 * or unreachable). Callers answer UNAVAILABLE and may retry. When it comes from commit(), the
 * message says whether the commit was never sent (nothing written) or its outcome is unknown (it
 * may have been applied; subscribers then see it like any other commit).
 */
export class StoreUnavailableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "StoreUnavailableError";
  }
}

export interface ConfigStore {
  /** Reads the whole state. Called at start and after a conflict. */
  load(): Promise<StoreState>;
  /**
   * Commits the mutations atomically as version `expectedVersion + 1`, durably, before resolving.
   * Rejects with StoreConflictError if the store is not at `expectedVersion` (nothing is written).
   * A rejected or failed commit leaves no partial state behind.
   */
  commit(expectedVersion: bigint, mutations: readonly Mutation[]): Promise<bigint>;
  /**
   * Calls `listener` for every commit made after subscription, in version order, including this
   * process's own. Returns an unsubscribe function.
   */
  subscribe(listener: (event: CommitEvent) => void): () => void;
  /**
   * Only for stores shared between processes, which can miss commits: a subscriber that was
   * disconnected while the shared log was trimmed past its position cannot be given the events it
   * missed. Such a store then calls `listener` with the whole state at a newer version instead; a
   * subscriber replaces its state with it, and commit events resume after that version. A store
   * that never misses a commit (FileStore) does not implement it. Returns an unsubscribe function.
   */
  onReload?(listener: (state: StoreState) => void): () => void;
  /** Releases files, connections and timers. Pending commits settle first. */
  close(): Promise<void>;
}

/** Key of a resource in StoreState.resources. */
export function resourceKey(kind: ResourceKind, id: string): string {
  return `${kind}/${id}`;
}
