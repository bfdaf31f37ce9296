/**
 * What the rollout end-to-end tests share: data planes that report often (so a rollout's analysis
 * has fleet figures within a fraction of a second), a stable and a canary target whose canary can be
 * told to start failing, the stable/canary upstreams and a rule on stable, and REST calls on
 * `/api/v1/tenants/{tenant_id}/rollouts`.
 */
import type { GatewayApi, TenantCreds } from "../support/api.js";
import { expectStatus } from "../support/api.js";
import { runGateway, spawnGateway, DataPlane, type ControlPlane } from "../support/processes.js";
import { startTarget, type Target } from "../support/targets.js";
import { waitFor } from "../support/wait.js";

/** Report interval asked of the data planes, when their CLI has such a flag. */
export const REPORT_INTERVAL_MS = 200;

let reportFlag: string | null | undefined;

/**
 * The data plane's report-interval flag, found in its --help (the fleet-health feature owns it), or
 * null when there is none yet: then the data planes report at their default interval and the tests
 * take longer, but still pass.
 */
async function reportIntervalFlag(): Promise<string | null> {
  if (reportFlag === undefined) {
    const help = await runGateway(["data-plane", "--help"]);
    reportFlag = /^ {2}--(report[a-z-]*interval[a-z-]*) /m.exec(help.stdout)?.[1] ?? null;
  }
  return reportFlag;
}

/** The interval the data planes report at: REPORT_INTERVAL_MS, or their default (5 s) without the flag. */
export async function reportIntervalMs(): Promise<number> {
  return (await reportIntervalFlag()) === null ? 5_000 : REPORT_INTERVAL_MS;
}

/** Starts a data plane that reports to the control plane every REPORT_INTERVAL_MS (when it can be told to). */
export async function startReportingDataPlane(cp: ControlPlane, nodeId: string): Promise<DataPlane> {
  const args = ["data-plane", "--listen", "127.0.0.1:0", "--node-id", nodeId, "--token", cp.nodeToken, "--control-plane", cp.url, "--log-level", "info"];
  const flag = await reportIntervalFlag();
  if (flag !== null) args.push(`--${flag}`, String(REPORT_INTERVAL_MS));
  const proc = spawnGateway(nodeId, args);
  const rec = await proc.waitForMsg("data plane listening", {}, { timeoutMs: 20_000 });
  return new DataPlane(proc, String(rec.url), nodeId);
}

/** A target that answers 200, or 503 once told to fail (a canary gone bad). */
export interface FlakyTarget extends Target {
  failing: boolean;
}

export async function startFlakyTarget(name: string): Promise<FlakyTarget> {
  const state = { failing: false };
  const t = await startTarget(name, {
    handler: (_req, res) => {
      const status = state.failing ? 503 : 200;
      res.writeHead(status, { "content-type": "text/plain", "content-length": Buffer.byteLength(name), "x-target": name });
      res.end(name);
    },
  });
  return Object.defineProperty(t, "failing", { get: () => state.failing, set: (v: boolean) => void (state.failing = v), enumerable: true }) as FlakyTarget;
}

/** A stable and a canary service behind two upstreams, and a rule on stable. */
export interface Service {
  readonly stable: FlakyTarget;
  readonly canary: FlakyTarget;
  readonly stableId: string;
  readonly canaryId: string;
  readonly ruleId: string;
  /** Request path served by the rule. */
  readonly path: string;
}

/**
 * Creates the upstreams (no retries and no passive ejection, so every canary failure reaches the
 * client and the reports: nothing hides a bad canary from the analysis) and a rule `/<name>/*` on
 * stable, and waits until `nodeIds` serve it.
 */
export async function createService(api: GatewayApi, tenant: TenantCreds, name: string, nodeIds: readonly string[]): Promise<Service> {
  const [stable, canary] = await Promise.all([startFlakyTarget(`${name}-v1`), startFlakyTarget(`${name}-v2`)]);
  const upstream = (n: string, t: Target) => ({
    name: n,
    targets: [{ host: "127.0.0.1", port: t.port }],
    retries: { count: 0 },
    health_check: { passive: { consecutive_failures: 0 } },
  });
  const s = await api.mustCreateUpstream(tenant, upstream(`${name}-v1`, stable));
  const c = await api.mustCreateUpstream(tenant, upstream(`${name}-v2`, canary));
  const rule = await api.mustCreateRule(tenant, { path: `/${name}/*`, upstream_id: s.id, strip_path: true });
  await api.waitForAcked(rule.revision, nodeIds);
  return { stable, canary, stableId: s.id, canaryId: c.id, ruleId: rule.id, path: `/${name}/x` };
}

/** A rollout as the REST API returns it (the fields the tests read). */
export interface RolloutView {
  readonly id: string;
  readonly state: string;
  readonly current_step: number;
  readonly current_weight: number;
  readonly step_started_at_ms: string;
  readonly revision: string;
  readonly rule_out_of_sync: boolean;
  readonly events: {
    readonly at_ms: string;
    readonly type: string;
    readonly step: number;
    readonly weight: number;
    readonly reason: string;
    readonly analysis?: { readonly verdict: string; readonly canary?: { readonly requests: string; readonly failures: string } };
  }[];
  readonly last_analysis?: { readonly verdict: string; readonly reason: string; readonly canary?: { readonly requests: string; readonly failures: string } };
}

export async function createRollout(api: GatewayApi, tenant: TenantCreds, body: Record<string, unknown>): Promise<RolloutView> {
  const res = await api.call("POST", `/api/v1/tenants/${tenant.id}/rollouts`, { key: tenant.apiKey, body });
  expectStatus(res, 201, `POST /api/v1/tenants/${tenant.id}/rollouts`);
  return res.json as RolloutView;
}

export async function getRollout(api: GatewayApi, tenant: TenantCreds, id: string): Promise<RolloutView> {
  const res = await api.call("GET", `/api/v1/tenants/${tenant.id}/rollouts/${id}`, { key: tenant.apiKey });
  expectStatus(res, 200, `GET /api/v1/tenants/${tenant.id}/rollouts/${id}`);
  return res.json as RolloutView;
}

/** Polls the rollout until `done` holds; the last view is quoted on timeout. */
export async function waitForRollout(
  api: GatewayApi,
  tenant: TenantCreds,
  id: string,
  done: (r: RolloutView) => boolean,
  what: string,
  timeoutMs = 30_000,
): Promise<RolloutView> {
  let last: RolloutView | undefined;
  try {
    return await waitFor(
      async () => {
        last = await getRollout(api, tenant, id);
        return done(last) ? last : undefined;
      },
      { what, timeoutMs, intervalMs: 20 },
    );
  } catch (err) {
    throw new Error(`${(err as Error).message}\nlast rollout: ${JSON.stringify(last, null, 1)}`);
  }
}
