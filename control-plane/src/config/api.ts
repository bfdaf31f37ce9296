import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  ApiKeySchema,
  type ApiKey,
  type JwtVerification,
  type Tenant,
  TenantSchema,
} from "../../../proto/gen/gateway/v1/tenant_pb.js";
import { RuleSchema, type Rule } from "../../../proto/gen/gateway/v1/rule_pb.js";
import { UpstreamSchema, type Upstream } from "../../../proto/gen/gateway/v1/upstream_pb.js";
import { compileSnapshot, type CompiledConfig } from "../../../data-plane/src/config/compile.js";
import { ConfigError, DuplicateRouteError } from "../../../data-plane/src/config/errors.js";
import { targetKey, validateRule, validateTenant, validateUpstream, ADMIN_STATES } from "../../../data-plane/src/config/validate.js";
import { StoreConflictError, StoreUnavailableError, type ConfigStore, type Mutation } from "../store/store.js";
import { hashKey, newApiKey, newId, requireAdmin, requireTenant, type Principal } from "./auth.js";
import { ConfigState, encodeMessage, type StoredApiKey } from "./state.js";

/**
 * The configuration API's behaviour, independent of transport: the Connect service and the REST
 * routes both call it with an authenticated principal. Every write validates the whole candidate
 * configuration with the data plane's own compiler before it is committed, so the control plane
 * never publishes a snapshot a data plane would NACK, and a refused write changes nothing.
 */
export class ConfigApi {
  private state: ConfigState;
  private writeChain: Promise<unknown> = Promise.resolve();
  /** The last accepted candidate, compiled: the base for compiling the next one incrementally. */
  private compiled: CompiledConfig | undefined;
  private readonly listeners = new Set<(state: ConfigState) => void>();
  private readonly unsubscribe: () => void;
  private readonly unsubscribeReload: () => void;

  constructor(
    private readonly store: ConfigStore,
    initial: ConfigState,
  ) {
    this.state = initial;
    // Commits from this process and (with a shared store) from other replicas arrive here.
    this.unsubscribe = store.subscribe((event) => this.advance(this.state.apply(event)));
    // A shared store that missed commits (a trimmed Redis log) hands over the whole state instead.
    this.unsubscribeReload = store.onReload?.((s) => this.advance(ConfigState.fromStore(s))) ?? (() => undefined);
  }

  /** Loads the store and returns a ready API. */
  static async open(store: ConfigStore): Promise<ConfigApi> {
    return new ConfigApi(store, ConfigState.fromStore(await store.load()));
  }

  /** The current state (for snapshots and lookups). */
  current(): ConfigState {
    return this.state;
  }

  /** Calls `listener` with every new state, after the commit that produced it is durable. */
  onChange(listener: (state: ConfigState) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Stops following the store. */
  close(): void {
    this.unsubscribe();
    this.unsubscribeReload();
  }

  /** Finds the tenant and key id for an API key hash. */
  lookupKey(hash: string): { tenantId: string; keyId: string } | undefined {
    const k = this.state.keyByHash(hash);
    return k === undefined ? undefined : { tenantId: k.tenant_id, keyId: k.id };
  }

  private advance(next: ConfigState): void {
    if (next === this.state || next.version <= this.state.version) return;
    this.state = next;
    for (const l of this.listeners) l(next);
  }

  /**
   * Serialises writes: `plan` reads the current state and returns the mutations (or throws to
   * refuse). The candidate is compiled as a whole before the commit; on a store conflict (another
   * replica wrote first) the state is reloaded and the plan re-run.
   */
  private write<T>(plan: (s: ConfigState) => { mutations: Mutation[]; result: (version: bigint, s: ConfigState) => T }): Promise<T> {
    const run = async (): Promise<T> => {
      for (let attempt = 0; ; attempt++) {
        const base = this.state;
        const { mutations, result } = plan(base);
        const candidate = base.with(base.version + 1n, mutations);
        const compiled = checkCandidate(candidate, mutations, this.compiled);
        try {
          const version = await this.store.commit(base.version, mutations);
          this.compiled = compiled;
          this.advance(base.version + 1n === version ? candidate : this.state);
          return result(version, this.state);
        } catch (err) {
          if (err instanceof StoreConflictError && attempt < 5) {
            this.advance(ConfigState.fromStore(await this.store.load()));
            continue;
          }
          throw err;
        }
      }
    };
    const p = this.writeChain.then(run, run).catch((err: unknown): never => {
      throw storeFailure(err);
    });
    this.writeChain = p.catch(() => undefined);
    return p;
  }

  // ---- tenants ----

  async createTenant(p: Principal, name: string, jwt: JwtVerification | undefined): Promise<{ tenant: Tenant; apiKey: string }> {
    requireAdmin(p);
    const tenant = invalidArgument(() => validateTenant(create(TenantSchema, { name, jwt })).value);
    const secret = newApiKey();
    return this.write((s) => {
      for (const t of s.tenants.values()) {
        if (t.name === tenant.name) throw new ConnectError(`name: a tenant named "${tenant.name}" already exists`, Code.AlreadyExists);
      }
      tenant.id = newId("ten");
      const key = storedKey(tenant.id, secret);
      return {
        mutations: [
          { op: "put", kind: "tenant", id: tenant.id, data: encodeMessage(TenantSchema, { ...tenant, revision: 0n }) },
          { op: "put", kind: "apikey", id: key.id, data: JSON.stringify(key) },
        ],
        result: (_v, st) => ({ tenant: st.tenants.get(tenant.id)!, apiKey: secret }),
      };
    });
  }

  listTenants(p: Principal): Tenant[] {
    requireAdmin(p);
    return [...this.state.tenants.values()];
  }

  getTenant(p: Principal, tenantId: string): Tenant {
    requireTenant(p, tenantId);
    return this.tenantOf(this.state, tenantId);
  }

  async updateTenant(p: Principal, input: Tenant): Promise<Tenant> {
    requireTenant(p, input.id);
    const tenant = invalidArgument(() => validateTenant(input).value);
    return this.write((s) => {
      const existing = this.tenantOf(s, tenant.id);
      checkRevision(input.revision, existing.revision, `tenant ${tenant.id}`);
      for (const t of s.tenants.values()) {
        if (t.id !== tenant.id && t.name === tenant.name) throw new ConnectError(`name: a tenant named "${tenant.name}" already exists`, Code.AlreadyExists);
      }
      return {
        mutations: [{ op: "put", kind: "tenant", id: tenant.id, data: encodeMessage(TenantSchema, { ...tenant, revision: 0n }) }],
        result: (_v, st) => st.tenants.get(tenant.id)!,
      };
    });
  }

  async deleteTenant(p: Principal, tenantId: string): Promise<void> {
    requireAdmin(p);
    await this.write((s) => {
      this.tenantOf(s, tenantId);
      const mutations: Mutation[] = [{ op: "delete", kind: "tenant", id: tenantId }];
      for (const r of s.rules.values()) if (r.tenantId === tenantId) mutations.push({ op: "delete", kind: "rule", id: r.id });
      for (const u of s.upstreams.values()) if (u.tenantId === tenantId) mutations.push({ op: "delete", kind: "upstream", id: u.id });
      for (const k of s.apiKeys.values()) if (k.tenant_id === tenantId) mutations.push({ op: "delete", kind: "apikey", id: k.id });
      for (const r of s.rollouts.values()) if (r.tenantId === tenantId) mutations.push({ op: "delete", kind: "rollout", id: r.id });
      return { mutations, result: () => undefined };
    });
  }

  // ---- API keys ----

  async createApiKey(p: Principal, tenantId: string): Promise<{ key: ApiKey; apiKey: string }> {
    requireTenant(p, tenantId);
    const secret = newApiKey();
    return this.write((s) => {
      this.tenantOf(s, tenantId);
      const key = storedKey(tenantId, secret);
      return {
        mutations: [{ op: "put", kind: "apikey", id: key.id, data: JSON.stringify(key) }],
        result: () => ({ key: apiKeyView(key), apiKey: secret }),
      };
    });
  }

  listApiKeys(p: Principal, tenantId: string): ApiKey[] {
    requireTenant(p, tenantId);
    this.tenantOf(this.state, tenantId);
    return [...this.state.apiKeys.values()].filter((k) => k.tenant_id === tenantId).map(apiKeyView);
  }

  async deleteApiKey(p: Principal, tenantId: string, keyId: string): Promise<void> {
    requireTenant(p, tenantId);
    await this.write((s) => {
      const key = s.apiKeys.get(keyId);
      if (key === undefined || key.tenant_id !== tenantId) throw new ConnectError(`API key ${keyId} not found`, Code.NotFound);
      return { mutations: [{ op: "delete", kind: "apikey", id: keyId }], result: () => undefined };
    });
  }

  // ---- rules ----

  async createRule(p: Principal, tenantId: string, input: Rule | undefined): Promise<{ rule: Rule; warnings: string[] }> {
    requireTenant(p, tenantId);
    const { value: rule, warnings } = invalidArgument(() => validateRule(input ?? create(RuleSchema)));
    return this.write((s) => {
      this.tenantOf(s, tenantId);
      rule.id = newId("rule");
      rule.tenantId = tenantId;
      rule.revision = 0n;
      return {
        mutations: [{ op: "put", kind: "rule", id: rule.id, data: encodeMessage(RuleSchema, rule) }],
        result: (_v, st) => ({ rule: st.rules.get(rule.id)!, warnings }),
      };
    });
  }

  getRule(p: Principal, tenantId: string, ruleId: string): Rule {
    requireTenant(p, tenantId);
    return this.ruleOf(this.state, tenantId, ruleId);
  }

  listRules(p: Principal, tenantId: string): Rule[] {
    requireTenant(p, tenantId);
    this.tenantOf(this.state, tenantId);
    return [...this.state.rules.values()].filter((r) => r.tenantId === tenantId);
  }

  async updateRule(p: Principal, tenantId: string, input: Rule | undefined): Promise<{ rule: Rule; warnings: string[] }> {
    requireTenant(p, tenantId);
    if (input === undefined || input.id === "") throw new ConnectError("rule.id: is required", Code.InvalidArgument);
    const { value: rule, warnings } = invalidArgument(() => validateRule(input));
    return this.write((s) => {
      const existing = this.ruleOf(s, tenantId, rule.id);
      checkRevision(input.revision, existing.revision, `rule ${rule.id}`);
      rule.tenantId = tenantId;
      rule.revision = 0n;
      return {
        mutations: [{ op: "put", kind: "rule", id: rule.id, data: encodeMessage(RuleSchema, rule) }],
        result: (_v, st) => ({ rule: st.rules.get(rule.id)!, warnings }),
      };
    });
  }

  async deleteRule(p: Principal, tenantId: string, ruleId: string, revision: bigint): Promise<void> {
    requireTenant(p, tenantId);
    await this.write((s) => {
      const existing = this.ruleOf(s, tenantId, ruleId);
      checkRevision(revision, existing.revision, `rule ${ruleId}`);
      return { mutations: [{ op: "delete", kind: "rule", id: ruleId }], result: () => undefined };
    });
  }

  // ---- upstreams ----

  async createUpstream(p: Principal, tenantId: string, input: Upstream | undefined): Promise<{ upstream: Upstream; warnings: string[] }> {
    requireTenant(p, tenantId);
    const { value: up, warnings } = invalidArgument(() => validateUpstream(input ?? create(UpstreamSchema)));
    return this.write((s) => {
      this.tenantOf(s, tenantId);
      checkUpstreamName(s, tenantId, up.name, "");
      up.id = newId("up");
      up.tenantId = tenantId;
      up.revision = 0n;
      return {
        mutations: [{ op: "put", kind: "upstream", id: up.id, data: encodeMessage(UpstreamSchema, up) }],
        result: (_v, st) => ({ upstream: st.upstreams.get(up.id)!, warnings }),
      };
    });
  }

  getUpstream(p: Principal, tenantId: string, upstreamId: string): Upstream {
    requireTenant(p, tenantId);
    return this.upstreamOf(this.state, tenantId, upstreamId);
  }

  listUpstreams(p: Principal, tenantId: string): Upstream[] {
    requireTenant(p, tenantId);
    this.tenantOf(this.state, tenantId);
    return [...this.state.upstreams.values()].filter((u) => u.tenantId === tenantId);
  }

  async updateUpstream(p: Principal, tenantId: string, input: Upstream | undefined): Promise<{ upstream: Upstream; warnings: string[] }> {
    requireTenant(p, tenantId);
    if (input === undefined || input.id === "") throw new ConnectError("upstream.id: is required", Code.InvalidArgument);
    const { value: up, warnings } = invalidArgument(() => validateUpstream(input));
    return this.write((s) => {
      const existing = this.upstreamOf(s, tenantId, up.id);
      checkRevision(input.revision, existing.revision, `upstream ${up.id}`);
      checkUpstreamName(s, tenantId, up.name, up.id);
      up.tenantId = tenantId;
      up.revision = 0n;
      return {
        mutations: [{ op: "put", kind: "upstream", id: up.id, data: encodeMessage(UpstreamSchema, up) }],
        result: (_v, st) => ({ upstream: st.upstreams.get(up.id)!, warnings }),
      };
    });
  }

  async deleteUpstream(p: Principal, tenantId: string, upstreamId: string, revision: bigint): Promise<void> {
    requireTenant(p, tenantId);
    await this.write((s) => {
      const existing = this.upstreamOf(s, tenantId, upstreamId);
      checkRevision(revision, existing.revision, `upstream ${upstreamId}`);
      const users = [...s.rules.values()].filter((r) => ruleReferences(r, upstreamId)).map((r) => r.id);
      if (users.length > 0) {
        throw new ConnectError(`upstream ${upstreamId} is still referenced by rule ${users.join(", ")}`, Code.FailedPrecondition);
      }
      return { mutations: [{ op: "delete", kind: "upstream", id: upstreamId }], result: () => undefined };
    });
  }

  async setTargetState(p: Principal, tenantId: string, upstreamId: string, target: string, adminState: string): Promise<Upstream> {
    requireTenant(p, tenantId);
    if (!(ADMIN_STATES as readonly string[]).includes(adminState)) {
      throw new ConnectError(`admin_state: must be one of ${ADMIN_STATES.join(", ")}, got "${adminState}"`, Code.InvalidArgument);
    }
    return this.write((s) => {
      const existing = this.upstreamOf(s, tenantId, upstreamId);
      const up = { ...existing, targets: existing.targets.map((t) => ({ ...t })) };
      const t = up.targets.find((x) => targetKey(x) === target);
      if (t === undefined) throw new ConnectError(`target: ${target} is not a target of upstream ${upstreamId}`, Code.NotFound);
      t.adminState = adminState;
      return {
        mutations: [{ op: "put", kind: "upstream", id: up.id, data: encodeMessage(UpstreamSchema, { ...up, revision: 0n }) }],
        result: (_v, st) => st.upstreams.get(up.id)!,
      };
    });
  }

  // ---- lookups ----

  private tenantOf(s: ConfigState, tenantId: string): Tenant {
    const t = s.tenants.get(tenantId);
    if (t === undefined) throw new ConnectError(`tenant ${tenantId} not found`, Code.NotFound);
    return t;
  }

  private ruleOf(s: ConfigState, tenantId: string, ruleId: string): Rule {
    this.tenantOf(s, tenantId);
    const r = s.rules.get(ruleId);
    if (r === undefined || r.tenantId !== tenantId) throw new ConnectError(`rule ${ruleId} not found`, Code.NotFound);
    return r;
  }

  private upstreamOf(s: ConfigState, tenantId: string, upstreamId: string): Upstream {
    this.tenantOf(s, tenantId);
    const u = s.upstreams.get(upstreamId);
    if (u === undefined || u.tenantId !== tenantId) throw new ConnectError(`upstream ${upstreamId} not found`, Code.NotFound);
    return u;
  }
}

/**
 * Store failures as API errors: a store that cannot be reached is UNAVAILABLE (retry later), a
 * commit that kept losing the race against other replicas is ABORTED (retry the request).
 */
function storeFailure(err: unknown): unknown {
  if (err instanceof StoreUnavailableError) return new ConnectError(err.message, Code.Unavailable, undefined, undefined, err);
  if (err instanceof StoreConflictError) {
    return new ConnectError(`${err.message}, on every attempt; retry the request`, Code.Aborted, undefined, undefined, err);
  }
  return err;
}

function storedKey(tenantId: string, secret: string): StoredApiKey {
  return { id: newId("key"), tenant_id: tenantId, hash: hashKey(secret), prefix: secret.slice(0, 10), created_at_ms: Date.now() };
}

function apiKeyView(k: StoredApiKey): ApiKey {
  return create(ApiKeySchema, { id: k.id, tenantId: k.tenant_id, prefix: k.prefix, createdAtMs: BigInt(k.created_at_ms) });
}

function checkUpstreamName(s: ConfigState, tenantId: string, name: string, selfId: string): void {
  for (const u of s.upstreams.values()) {
    if (u.tenantId === tenantId && u.name === name && u.id !== selfId) {
      throw new ConnectError(`name: an upstream named "${name}" already exists (${u.id})`, Code.AlreadyExists);
    }
  }
}

/** Whether a rule uses an upstream anywhere (own backend, canary, split). */
function ruleReferences(r: Rule, upstreamId: string): boolean {
  if (r.upstreamId === upstreamId || r.canary?.upstreamId === upstreamId) return true;
  return (r.trafficSplit?.rules ?? []).some((sr) => sr.weightedUpstreams.some((w) => w.upstreamId === upstreamId));
}

function checkRevision(sent: bigint, stored: bigint, what: string): void {
  if (sent !== 0n && sent !== stored) {
    throw new ConnectError(
      `revision: ${what} was changed since revision ${sent} (now ${stored}); read it again and reapply your change`,
      Code.FailedPrecondition,
    );
  }
}

/** Runs single-resource validation, turning ConfigError into INVALID_ARGUMENT. */
function invalidArgument<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof ConfigError) throw new ConnectError(err.message, Code.InvalidArgument);
    throw err;
  }
}

/**
 * Compiles the candidate configuration exactly as a data plane would. Errors about the resources
 * being written are reported relative to their body (`upstream_id: ...`), others with their name.
 */
function checkCandidate(candidate: ConfigState, mutations: readonly Mutation[], previous: CompiledConfig | undefined): CompiledConfig {
  try {
    // Unchanged resources are reused from the last accepted candidate (by id and revision), so a
    // write costs about what it changes, not the size of the whole configuration.
    return compileSnapshot(candidate.snapshot(), previous);
  } catch (err) {
    if (err instanceof DuplicateRouteError) throw duplicateRoute(err, mutations);
    if (!(err instanceof ConfigError)) throw err;
    let message = err.message;
    for (const m of mutations) {
      const prefix = `${m.kind}/${m.id}.`;
      if (err.field.startsWith(prefix)) message = `${err.field.slice(prefix.length)}: ${err.reason}`;
    }
    throw new ConnectError(message, Code.InvalidArgument);
  }
}

/**
 * Words a duplicate route for the tenant writing: field `path`, the clashing rule named when it is
 * the tenant's own, and only "another tenant's rule" otherwise, so rule ids do not leak across tenants.
 */
function duplicateRoute(err: DuplicateRouteError, mutations: readonly Mutation[]): ConnectError {
  const written = new Set(mutations.filter((m) => m.kind === "rule").map((m) => m.id));
  const [ours, other] = written.has(err.incoming.ruleId) ? [err.incoming, err.existing] : [err.existing, err.incoming];
  const owner = other.tenantId === ours.tenantId ? `rule ${other.ruleId}` : "a rule of another tenant";
  return new ConnectError(`path: duplicate route: ${err.where} is already routed by ${owner}`, Code.InvalidArgument);
}
