import { create } from "@bufbuild/protobuf";
import { ReportSchema, type Report } from "../../../../proto/gen/gateway/v1/discovery_pb.js";

/** One target line of a test report; counters default to 0 and states to "healthy"/"unknown". */
export interface T {
  backend?: string;
  target: string;
  inFlight?: number;
  requests?: number;
  failures?: number;
  p50?: number;
  p99?: number;
  max?: number;
  sum?: number;
  passive?: string;
  probe?: string;
}

/** Builds a Report as a data plane sends it. */
export function report(targets: T[], intervalMs = 1_000): Report {
  return create(ReportSchema, {
    intervalMs,
    targets: targets.map((t) => ({
      backend: t.backend ?? "up_a",
      target: t.target,
      inFlight: t.inFlight ?? 0,
      requests: BigInt(t.requests ?? 0),
      failures: BigInt(t.failures ?? 0),
      latency: { p50Ms: t.p50 ?? 0, p99Ms: t.p99 ?? 0, maxMs: t.max ?? 0, sumMs: t.sum ?? 0 },
      passiveState: t.passive ?? "healthy",
      probeState: t.probe ?? "unknown",
    })),
  });
}

/** A clock tests move by hand. */
export function fakeClock(start = 1_000_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => void (t += ms), set: (ms: number) => void (t = ms) };
}
