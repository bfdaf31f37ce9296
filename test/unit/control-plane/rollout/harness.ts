/**
 * A control plane's rollout machinery on a real file store in a temp dir, with a hand-moved clock
 * and fake fleet figures: what the controller tests drive. `restart()` closes everything and opens
 * a new ConfigApi and controller on the same directory, as a restarted control plane would.
 */
import { create } from "@bufbuild/protobuf";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { RolloutSchema, type Rollout } from "../../../../proto/gen/gateway/v1/rollout_pb.js";
import { RuleSchema, type Rule } from "../../../../proto/gen/gateway/v1/rule_pb.js";
import { UpstreamSchema } from "../../../../proto/gen/gateway/v1/upstream_pb.js";
import { ConfigApi } from "../../../../control-plane/src/config/api.js";
import type { Principal } from "../../../../control-plane/src/config/auth.js";
import { RolloutApi } from "../../../../control-plane/src/rollout/api.js";
import { RolloutController } from "../../../../control-plane/src/rollout/controller.js";
import { NO_TRAFFIC, type RolloutMetrics, type WindowFigures } from "../../../../control-plane/src/rollout/metrics.js";
import { RolloutWriter, type Planned } from "../../../../control-plane/src/rollout/writer.js";
import { ConfigError } from "../../../../data-plane/src/config/errors.js";
import type { ConfigState } from "../../../../control-plane/src/config/state.js";
import { FileStore } from "../../../../control-plane/src/store/file.js";

export const ADMIN: Principal = { kind: "admin" };

/** The real write path, which can be told to refuse rule changes as an invalid candidate would be. */
export class RefusingWriter extends RolloutWriter {
  refuseRules = false;

  override write<T>(plan: (s: ConfigState) => Planned<T> | undefined): Promise<T | undefined> {
    return super.write((s) => {
      const planned = plan(s);
      if (this.refuseRules && planned?.mutations.some((m) => m.kind === "rule")) throw new ConfigError("rule/x.traffic_split", "refused by the test");
      return planned;
    });
  }
}

/** Fleet figures set by the test, per backend; every read is recorded. */
export class FakeMetrics implements RolloutMetrics {
  readonly figures = new Map<string, WindowFigures>();
  readonly reads: { backendId: string; windowMs: number }[] = [];

  set(backendId: string, f: Partial<WindowFigures>): void {
    this.figures.set(backendId, { ...NO_TRAFFIC, ...f });
  }

  backendStats(backendId: string, windowMs: number) {
    this.reads.push({ backendId, windowMs });
    return { total: this.figures.get(backendId) ?? NO_TRAFFIC };
  }
}

/** One log line the controller wrote. */
export interface Logged {
  readonly level: "info" | "warn";
  readonly msg: string;
  readonly fields: Record<string, unknown>;
}

export class Harness {
  now = 1_700_000_000_000;
  readonly metrics = new FakeMetrics();
  readonly logs: Logged[] = [];
  store!: FileStore;
  api!: ConfigApi;
  writer!: RefusingWriter;
  controller!: RolloutController;
  rollouts!: RolloutApi;
  tenantId = "";
  stableId = "";
  canaryId = "";
  ruleId = "";

  private constructor(readonly dir: string) {}

  /** A fresh store with a tenant, a stable and a canary upstream, and a rule on stable. */
  static async start(): Promise<Harness> {
    const h = new Harness(await mkdtemp(path.join(os.tmpdir(), "gw-rollout-")));
    await h.open();
    const { tenant } = await h.api.createTenant(ADMIN, "acme", undefined);
    h.tenantId = tenant.id;
    const up = (name: string, port: number) => create(UpstreamSchema, { name, targets: [{ host: "127.0.0.1", port }] });
    h.stableId = (await h.api.createUpstream(ADMIN, h.tenantId, up("stable", 9001))).upstream.id;
    h.canaryId = (await h.api.createUpstream(ADMIN, h.tenantId, up("canary", 9002))).upstream.id;
    h.ruleId = (await h.api.createRule(ADMIN, h.tenantId, create(RuleSchema, { path: "/api/*", upstreamId: h.stableId }))).rule.id;
    return h;
  }

  private async open(): Promise<void> {
    const clock = () => this.now;
    this.store = await FileStore.open(this.dir);
    this.api = await ConfigApi.open(this.store);
    this.writer = new RefusingWriter(this.store, () => this.api.current());
    const log = (level: "info" | "warn") => (fields: object, msg: string) => void this.logs.push({ level, msg, fields: fields as Record<string, unknown> });
    this.controller = new RolloutController(this.api, this.writer, this.metrics, { now: clock, log: { info: log("info"), warn: log("warn") } });
    this.rollouts = new RolloutApi(this.api, this.writer, this.controller, { now: clock });
  }

  /** Closes the controller, API and store, and opens new ones on the same directory. */
  async restart(): Promise<void> {
    await this.closeAll();
    await this.open();
  }

  private async closeAll(): Promise<void> {
    await this.controller.close();
    this.api.close();
    await this.store.close();
  }

  async close(): Promise<void> {
    await this.closeAll();
    await rm(this.dir, { recursive: true, force: true });
  }

  /** Creates a rollout of the harness's rule (steps 10/50/100 held 1 s, analysis every 100 ms, 100 requests needed). */
  create(init: Record<string, unknown> = {}): Promise<Rollout> {
    return this.rollouts.create(
      ADMIN,
      this.tenantId,
      create(RolloutSchema, {
        ruleId: this.ruleId,
        canaryUpstreamId: this.canaryId,
        steps: [
          { weight: 10, holdMs: 1_000 },
          { weight: 50, holdMs: 1_000 },
          { weight: 100, holdMs: 1_000 },
        ],
        analysis: { intervalMs: 100, minRequests: 100n, maxErrorRatePercent: 5 },
        ...init,
      } as never),
    );
  }

  /** Moves the clock `ms` forward in analysis-interval steps, running a round at each. */
  async run(ms: number, step = 100): Promise<void> {
    for (let t = 0; t < ms; t += step) {
      this.now += step;
      await this.controller.tick();
    }
  }

  /** Runs one round now (without moving the clock). */
  tick(): Promise<void> {
    return this.controller.tick();
  }

  rollout(id: string): Rollout {
    return this.rollouts.get(ADMIN, this.tenantId, id);
  }

  rule(): Rule {
    return this.api.getRule(ADMIN, this.tenantId, this.ruleId);
  }

  /** The canary's share in the rule's split: [stable weight, canary weight], or undefined without a split. */
  weights(): [number, number] | undefined {
    const sr = this.rule().trafficSplit?.rules[0];
    if (sr === undefined) return undefined;
    const stable = sr.weightedUpstreams.find((w) => w.upstreamId === "");
    const canary = sr.weightedUpstreams.find((w) => w.upstreamId === this.canaryId);
    return [stable?.weight ?? -1, canary?.weight ?? -1];
  }

  /** Healthy figures for both sides. */
  healthy(requests = 500): void {
    this.metrics.set(this.canaryId, { requests, failures: 0, p50Ms: 5, p99Ms: 20 });
    this.metrics.set(this.stableId, { requests: requests * 4, failures: 0, p50Ms: 5, p99Ms: 20 });
  }
}
