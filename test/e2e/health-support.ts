/**
 * Helpers shared by the health e2e tests (test/e2e/health-*.test.ts): data planes started with the
 * observability flags (--metrics-listen, --report-interval-ms, --access-log), Prometheus text read
 * back into numbers, and targets whose answer the test switches at run time.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { httpRequest } from "../support/http.js";
import { DataPlane, spawnGateway } from "../support/processes.js";
import { startTarget, type Target } from "../support/targets.js";
import { waitFor, type WaitOptions } from "../support/wait.js";

/** A data plane with its admin listener. */
export interface ObservedDataPlane {
  readonly dp: DataPlane;
  /** "http://127.0.0.1:PORT" of /metrics and /healthz. */
  readonly metricsUrl: string;
}

/** Starts `gateway data-plane` with an admin listener on port 0 and waits for both listeners. */
export async function startObservedDataPlane(opts: {
  controlPlane: string;
  nodeId: string;
  token: string;
  reportIntervalMs?: number;
  accessLog?: string;
  drainMs?: number;
}): Promise<ObservedDataPlane> {
  const args = [
    "data-plane",
    "--listen",
    "127.0.0.1:0",
    "--metrics-listen",
    "127.0.0.1:0",
    "--node-id",
    opts.nodeId,
    "--token",
    opts.token,
    "--control-plane",
    opts.controlPlane,
    "--report-interval-ms",
    String(opts.reportIntervalMs ?? 5_000),
    "--access-log",
    opts.accessLog ?? "off",
  ];
  if (opts.drainMs !== undefined) args.push("--drain-ms", String(opts.drainMs));
  const proc = spawnGateway(opts.nodeId, args);
  const metrics = await proc.waitForMsg("metrics listening", {}, { timeoutMs: 20_000 });
  const listening = await proc.waitForMsg("data plane listening", {}, { timeoutMs: 20_000 });
  return { dp: new DataPlane(proc, String(listening.url), opts.nodeId), metricsUrl: String(metrics.url) };
}

/** One scrape: series (name plus labels, as printed) → value. */
export type Scrape = Map<string, number>;

/** GET /metrics, parsed. */
export async function scrape(metricsUrl: string): Promise<Scrape> {
  const res = await httpRequest(`${metricsUrl}/metrics`);
  if (res.status !== 200) throw new Error(`GET /metrics: ${res.status} ${res.text}`);
  const out: Scrape = new Map();
  for (const line of res.text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const i = line.lastIndexOf(" ");
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

/** The value of `name{labels}` (labels in any order, all of them given), or undefined. */
export function series(s: Scrape, name: string, labels: Record<string, string> = {}): number | undefined {
  const want = Object.entries(labels);
  for (const [key, value] of s) {
    const brace = key.indexOf("{");
    if ((brace === -1 ? key : key.slice(0, brace)) !== name) continue;
    const have = brace === -1 ? "" : key.slice(brace + 1, -1);
    const pairs = new Map(have === "" ? [] : [...have.matchAll(/([a-zA-Z_]+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]));
    if (pairs.size === want.length && want.every(([k, v]) => pairs.get(k) === v)) return value;
  }
  return undefined;
}

/** Sum of every series of `name` whose labels include `labels`. */
export function sumSeries(s: Scrape, name: string, labels: Record<string, string> = {}): number {
  let total = 0;
  const want = Object.entries(labels);
  for (const [key, value] of s) {
    const brace = key.indexOf("{");
    if ((brace === -1 ? key : key.slice(0, brace)) !== name) continue;
    const have = brace === -1 ? "" : key.slice(brace + 1, -1);
    if (want.every(([k, v]) => have.includes(`${k}="${v}"`))) total += value;
  }
  return total;
}

/** Polls /metrics until `check` returns something other than undefined/false. */
export function waitForMetrics<T>(metricsUrl: string, check: (s: Scrape) => T | undefined | false, opts: WaitOptions = {}): Promise<T> {
  return waitFor(async () => check(await scrape(metricsUrl)), { intervalMs: 50, ...opts });
}

/** A target whose status the test switches; its probe path is /health. */
export interface SwitchTarget {
  readonly target: Target;
  /** Answer with this status from now on (probes and traffic alike). */
  setStatus(status: number): void;
  /** "127.0.0.1:PORT", the target's key in upstreams, metrics and reports. */
  readonly key: string;
}

/**
 * A target answering `status` (switchable) with its name in the body and `x-target`; requests to
 * paths starting with /slow are held until `releaseSlow()` is called.
 */
export async function startSwitchTarget(name: string, status = 200): Promise<SwitchTarget & { releaseSlow(): void; slowWaiting(): number }> {
  let current = status;
  const held: (() => void)[] = [];
  const target = await startTarget(name, {
    handler: (req: IncomingMessage, res: ServerResponse) => {
      const answer = () => {
        if (res.destroyed) return;
        res.writeHead(current, { "content-type": "text/plain", "content-length": Buffer.byteLength(name), "x-target": name });
        res.end(name);
      };
      if ((req.url ?? "").startsWith("/slow")) held.push(answer);
      else answer();
    },
  });
  return {
    target,
    key: `127.0.0.1:${target.port}`,
    setStatus: (s) => {
      current = s;
    },
    releaseSlow: () => {
      for (const a of held.splice(0)) a();
    },
    slowWaiting: () => held.length,
  };
}
