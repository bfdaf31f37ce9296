import { create, fromJsonString, toJsonString, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { RolloutSchema, type Rollout } from "../../../proto/gen/gateway/v1/rollout_pb.js";
import { RuleSchema, type Rule } from "../../../proto/gen/gateway/v1/rule_pb.js";
import { ResourceSchema, SnapshotSchema, type Resource, type Snapshot } from "../../../proto/gen/gateway/v1/snapshot_pb.js";
import { TenantSchema, type Tenant } from "../../../proto/gen/gateway/v1/tenant_pb.js";
import { UpstreamSchema, type Upstream } from "../../../proto/gen/gateway/v1/upstream_pb.js";
import type { CommitEvent, Mutation, StoreState } from "../store/store.js";

/**
 * The control plane's in-memory view of the store, decoded into protobuf messages. It is derived
 * from the store alone (load + commit events), so every replica that sees the same commits holds
 * the same state, and a snapshot at a version is a pure function of it.
 */

/** An API key as stored: only a hash of the secret. */
export interface StoredApiKey {
  readonly id: string;
  readonly tenant_id: string;
  readonly hash: string;
  readonly prefix: string;
  readonly created_at_ms: number;
}

/** Encodes a message for the store (proto JSON, snake_case, readable on disk). */
export function encodeMessage<D extends DescMessage>(schema: D, msg: MessageShape<D>): string {
  return toJsonString(schema, msg, { useProtoFieldName: true });
}

function decode<D extends DescMessage>(schema: D, data: string): MessageShape<D> {
  return fromJsonString(schema, data, { ignoreUnknownFields: true });
}

/** Immutable-by-convention state at one version; `with` returns a changed copy. */
export class ConfigState {
  constructor(
    readonly version: bigint,
    readonly tenants: ReadonlyMap<string, Tenant>,
    readonly apiKeys: ReadonlyMap<string, StoredApiKey>,
    readonly rules: ReadonlyMap<string, Rule>,
    readonly upstreams: ReadonlyMap<string, Upstream>,
    /** Rollouts (control-plane only: never part of a snapshot). */
    readonly rollouts: ReadonlyMap<string, Rollout> = new Map(),
  ) {}

  private keyIndex: Map<string, StoredApiKey> | undefined;

  /** The API key with this hash, if any (indexed on first use: states are immutable). */
  keyByHash(hash: string): StoredApiKey | undefined {
    if (this.keyIndex === undefined) {
      this.keyIndex = new Map();
      for (const k of this.apiKeys.values()) this.keyIndex.set(k.hash, k);
    }
    return this.keyIndex.get(hash);
  }

  static empty(): ConfigState {
    return new ConfigState(0n, new Map(), new Map(), new Map(), new Map());
  }

  /** Decodes the store's state. */
  static fromStore(s: StoreState): ConfigState {
    let state = new ConfigState(s.version, new Map(), new Map(), new Map(), new Map(), new Map());
    const tenants = state.tenants as Map<string, Tenant>;
    const keys = state.apiKeys as Map<string, StoredApiKey>;
    const rules = state.rules as Map<string, Rule>;
    const ups = state.upstreams as Map<string, Upstream>;
    const rollouts = state.rollouts as Map<string, Rollout>;
    for (const r of s.resources.values()) {
      switch (r.kind) {
        case "tenant":
          tenants.set(r.id, { ...decode(TenantSchema, r.data), revision: r.revision });
          break;
        case "apikey":
          keys.set(r.id, JSON.parse(r.data) as StoredApiKey);
          break;
        case "rule":
          rules.set(r.id, { ...decode(RuleSchema, r.data), revision: r.revision });
          break;
        case "upstream":
          ups.set(r.id, { ...decode(UpstreamSchema, r.data), revision: r.revision });
          break;
        case "rollout":
          rollouts.set(r.id, { ...decode(RolloutSchema, r.data), revision: r.revision });
          break;
        default:
          break; // kinds owned by other features are read by them
      }
    }
    return state;
  }

  /** The state after applying mutations as `version` (revisions of written resources = version). */
  with(version: bigint, mutations: readonly Mutation[]): ConfigState {
    const tenants = new Map(this.tenants);
    const keys = new Map(this.apiKeys);
    const rules = new Map(this.rules);
    const ups = new Map(this.upstreams);
    const rollouts = new Map(this.rollouts);
    for (const m of mutations) {
      const del = m.op === "delete";
      switch (m.kind) {
        case "tenant":
          if (del) tenants.delete(m.id);
          else tenants.set(m.id, { ...decode(TenantSchema, m.data), revision: version });
          break;
        case "apikey":
          if (del) keys.delete(m.id);
          else keys.set(m.id, JSON.parse(m.data) as StoredApiKey);
          break;
        case "rule":
          if (del) rules.delete(m.id);
          else rules.set(m.id, { ...decode(RuleSchema, m.data), revision: version });
          break;
        case "upstream":
          if (del) ups.delete(m.id);
          else ups.set(m.id, { ...decode(UpstreamSchema, m.data), revision: version });
          break;
        case "rollout":
          if (del) rollouts.delete(m.id);
          else rollouts.set(m.id, { ...decode(RolloutSchema, m.data), revision: version });
          break;
        default:
          break;
      }
    }
    return new ConfigState(version, tenants, keys, rules, ups, rollouts);
  }

  /** Applies a commit event if it is newer than this state. */
  apply(event: CommitEvent): ConfigState {
    return event.version <= this.version ? this : this.with(event.version, event.mutations);
  }

  /** Resources as pushed to data planes (tenants carry only what routing needs). */
  resources(): Resource[] {
    const out: Resource[] = [];
    for (const t of this.tenants.values()) {
      out.push(create(ResourceSchema, { name: `tenant/${t.id}`, revision: t.revision, kind: { case: "tenant", value: t } }));
    }
    for (const u of this.upstreams.values()) {
      out.push(create(ResourceSchema, { name: `upstream/${u.id}`, revision: u.revision, kind: { case: "upstream", value: u } }));
    }
    for (const r of this.rules.values()) {
      out.push(create(ResourceSchema, { name: `rule/${r.id}`, revision: r.revision, kind: { case: "rule", value: r } }));
    }
    return out;
  }

  /** The full snapshot at this state's version. */
  snapshot(): Snapshot {
    return create(SnapshotSchema, { version: this.version, resources: this.resources() });
  }
}
