import { create } from "@bufbuild/protobuf";
import { SnapshotSchema, type Delta, type Resource, type Snapshot } from "../../../proto/gen/gateway/v1/snapshot_pb.js";

/**
 * The resources a data plane holds, by name, at one version. A delta yields a new set (the old one
 * is untouched), so a delta that fails to compile leaves the node exactly where it was.
 */
export class ResourceSet {
  private constructor(
    readonly version: bigint,
    private readonly byName: ReadonlyMap<string, Resource>,
  ) {}

  /** The empty set a node starts with. */
  static empty(): ResourceSet {
    return new ResourceSet(0n, new Map());
  }

  /** The set of a full snapshot. */
  static of(snapshot: Snapshot): ResourceSet {
    return new ResourceSet(snapshot.version, new Map(snapshot.resources.map((r) => [r.name, r])));
  }

  /**
   * The set after a delta. Throws when the delta was computed from another version than this
   * set's: applying it would silently mix two configurations.
   */
  apply(delta: Delta): ResourceSet {
    if (delta.baseVersion !== this.version) {
      throw new Error(`delta from version ${delta.baseVersion} does not apply to version ${this.version}: need a full snapshot`);
    }
    const next = new Map(this.byName);
    for (const name of delta.removed) next.delete(name);
    for (const r of delta.upserted) next.set(r.name, r);
    return new ResourceSet(delta.version, next);
  }

  /** The full snapshot this set amounts to. */
  snapshot(): Snapshot {
    return create(SnapshotSchema, { version: this.version, resources: [...this.byName.values()] });
  }

  /** Number of resources. */
  get size(): number {
    return this.byName.size;
  }
}
