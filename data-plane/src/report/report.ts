import { create } from "@bufbuild/protobuf";
import { performance } from "node:perf_hooks";
import { ReportSchema, type Report, type TargetReport } from "../../../proto/gen/gateway/v1/discovery_pb.js";
import type { HealthManager } from "../health/manager.js";
import type { TrafficStats } from "./stats.js";

/**
 * Builds the Report a data plane sends on its discovery stream: per target of every backend, what
 * this node sees now (in-flight, passive state, its own probe state) and what happened since the
 * previous report (requests, failures, latency). Each call starts a new interval, whether it is the
 * periodic report or one sent at once on a state change.
 *
 * probe_state is "unknown" for targets this node does not probe (no active check, or assigned to
 * other nodes): the fleet's verdict it follows is not evidence of its own, and reporting it back
 * would let a verdict confirm itself.
 */
export class ReportBuilder {
  private last: number;

  constructor(
    private readonly health: HealthManager,
    private readonly stats: TrafficStats,
    private readonly appliedVersion: () => bigint,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.last = this.now();
  }

  build(): Report {
    const now = this.now();
    const intervalMs = Math.max(0, Math.min(0xffffffff, Math.round(now - this.last)));
    this.last = now;
    const targets: TargetReport[] = [];
    for (const backend of this.health.view()) {
      for (const t of backend.targets) {
        const traffic = this.stats.target(backend.id, t.key);
        let requests = 0;
        let failures = 0;
        let latency = { p50: 0, p99: 0, max: 0, sum: 0 };
        if (traffic !== undefined) {
          requests = traffic.requests - traffic.reportedRequests;
          failures = traffic.failures - traffic.reportedFailures;
          traffic.reportedRequests = traffic.requests;
          traffic.reportedFailures = traffic.failures;
          latency = traffic.latency.takeInterval();
        }
        targets.push({
          $typeName: "gateway.v1.TargetReport",
          backend: backend.id,
          target: t.key,
          inFlight: Math.max(0, Math.min(0xffffffff, t.target.load.inFlight)),
          requests: BigInt(requests),
          failures: BigInt(failures),
          latency: { $typeName: "gateway.v1.LatencySummary", p50Ms: latency.p50, p99Ms: latency.p99, maxMs: latency.max, sumMs: latency.sum },
          passiveState: t.passive,
          probeState: t.probedHere ? t.probe : "unknown",
        });
      }
    }
    return create(ReportSchema, { appliedVersion: this.appliedVersion(), targets, intervalMs });
  }
}
