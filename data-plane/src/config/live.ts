import type { Dispatcher } from "undici";
import type { Snapshot } from "../../../proto/gen/gateway/v1/snapshot_pb.js";
import type { PoolRegistry } from "../proxy/pools.js";
import { compileSnapshot, type CompiledBackend, type CompiledConfig, type CompiledTarget } from "./compile.js";

/**
 * The configuration a data plane serves right now. Applying a snapshot compiles it completely
 * before anything changes, then swaps one reference: a request sees either the old or the new
 * configuration, never a mix, and a snapshot that fails to compile leaves the old one serving.
 */
export class LiveConfig {
  private config: CompiledConfig | undefined;
  private pools = new Map<CompiledTarget, Dispatcher>();
  private readonly listeners = new Set<(config: CompiledConfig, previous: CompiledConfig | undefined) => void>();

  constructor(private readonly registry: PoolRegistry) {}

  /** The compiled configuration, or undefined before the first snapshot. */
  get current(): CompiledConfig | undefined {
    return this.config;
  }

  /** Version served (0 before the first snapshot). */
  get version(): bigint {
    return this.config?.version ?? 0n;
  }

  /** Compiles and installs a snapshot; throws (keeping the current one) if it does not compile. */
  apply(snapshot: Snapshot): CompiledConfig {
    const next = compileSnapshot(snapshot, this.config);
    const pools = new Map<CompiledTarget, Dispatcher>();
    const origins = new Set<string>();
    for (const backend of next.backends.values()) {
      for (const t of backend.targets) {
        pools.set(t, this.registry.get(t.origin, { connectTimeoutMs: backend.policy.connectTimeoutMs }));
        origins.add(t.origin);
      }
    }
    const previous = this.config;
    carryLoad(previous, next);
    this.pools = pools;
    this.config = next;
    for (const l of this.listeners) l(next, previous);
    // Pools of origins that left the configuration close once their in-flight requests finish.
    void this.registry.retain(origins);
    return next;
  }

  /** The connection pool of a target of the current configuration. */
  pool(target: CompiledTarget): Dispatcher {
    return this.pools.get(target)!;
  }

  /** Calls `listener` after every applied snapshot (health, reports and metrics re-sync here). */
  onApply(listener: (config: CompiledConfig, previous: CompiledConfig | undefined) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}

/**
 * Carries in-flight counts from the previous configuration's targets to the same targets in the
 * new one: requests still running against the old objects decrement those, so the new counters
 * share the old objects' load cells instead of starting from zero.
 */
function carryLoad(previous: CompiledConfig | undefined, next: CompiledConfig): void {
  if (previous === undefined) return;
  for (const [id, backend] of next.backends) {
    const old: CompiledBackend | undefined = previous.backends.get(id);
    if (old === undefined) continue;
    const byKey = new Map(old.targets.map((t) => [t.key, t]));
    for (const t of backend.targets) {
      const o = byKey.get(t.key);
      if (o !== undefined) (t as { load: CompiledTarget["load"] }).load = o.load;
    }
  }
}
