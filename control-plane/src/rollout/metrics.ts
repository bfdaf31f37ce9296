/**
 * Where the rollout controller reads a backend's traffic from. The fleet view
 * (../fleet/view.ts, FleetView.backendStats) satisfies it as is: it merges every data plane's
 * reports, so a canary is judged on the whole fleet's traffic, not on one node's. Tests pass a fake.
 */

/** Figures of one backend over a window, across the fleet. */
export interface WindowFigures {
  readonly requests: number;
  readonly failures: number;
  /** Median latency in ms (0 without requests). */
  readonly p50Ms: number;
  /** 99th-percentile latency in ms (the fleet view reports the worst node's). */
  readonly p99Ms: number;
}

/** A source of per-backend traffic figures. */
export interface RolloutMetrics {
  /**
   * Traffic of the backend (an upstream id) over the last `windowMs`, all targets together.
   * A backend nobody reported has zero figures.
   */
  backendStats(backendId: string, windowMs: number): { readonly total: WindowFigures };
}

/** Figures of a backend without traffic. */
export const NO_TRAFFIC: WindowFigures = { requests: 0, failures: 0, p50Ms: 0, p99Ms: 0 };
