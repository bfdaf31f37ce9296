import net from "node:net";
import { performance } from "node:perf_hooks";
import { Agent } from "undici";
import type { ActiveHealthCheck } from "../../../proto/gen/gateway/v1/upstream_pb.js";
import { ConfigError } from "../config/errors.js";

/**
 * Active health checking: probes sent to every target on a schedule, independent of traffic.
 * The prober only reports states; it never touches a picker or a balancer (the owner combines its
 * states with passive health and admin state in panic.ts and rebuilds its picker on change).
 */

/**
 * Probe state of one target.
 * "unknown" (no verdict yet) is routed as healthy: a data plane that starts, or a snapshot that adds
 * targets, must serve at once on its last good config; treating unknown as unhealthy would leave a
 * whole upstream without targets (or in panic) until the first probes complete, and a target that is
 * really down is caught by passive health on its first failed requests anyway.
 */
export type ProbeState = "unknown" | "healthy" | "unhealthy";

/** An ActiveHealthCheck with defaults applied and validated, so the prober trusts it. */
export interface ResolvedActiveCheck {
  readonly type: "http" | "tcp";
  readonly path: string;
  readonly method: string;
  /** Host header override; undefined sends the target's host:port. */
  readonly host: string | undefined;
  /** Statuses counted as healthy. */
  readonly expectedStatuses: ReadonlySet<number>;
  readonly intervalMs: number;
  readonly timeoutMs: number;
  readonly healthyThreshold: number;
  readonly unhealthyThreshold: number;
}

/** Documented defaults of ActiveHealthCheck (proto/gateway/v1/upstream.proto). */
export const ACTIVE_CHECK_DEFAULTS = {
  type: "http",
  path: "/",
  method: "GET",
  intervalMs: 5000,
  timeoutMs: 2000,
  healthyThreshold: 2,
  unhealthyThreshold: 3,
  expectedStatusRange: [200, 399],
} as const;

/** Shortest probe interval: below it probes become load, not checks. */
export const MIN_INTERVAL_MS = 100;
/** Longest interval or timeout: keeps every delay a valid setTimeout value (< 2^31 ms). */
export const MAX_INTERVAL_MS = 3_600_000;

// CONNECT is refused: a probe must be an ordinary request that a target answers with a status.
const PROBE_METHODS = new Set(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]);
// Visible ASCII only: the path and Host end up verbatim in the request head.
const PATH_RE = /^\/[\x21-\x7e]*$/;
const HOST_RE = /^[\x21-\x7e]+$/;

const DEFAULT_EXPECTED: ReadonlySet<number> = new Set(
  Array.from({ length: 200 }, (_, i) => ACTIVE_CHECK_DEFAULTS.expectedStatusRange[0] + i),
);

/**
 * Applies the documented defaults to an ActiveHealthCheck (proto3 zero values mean "unset") and
 * validates it, throwing a ConfigError that names the field under `field`. Shared by the control
 * plane (write-time validation) and the data plane (snapshot compile), so both refuse the same config.
 */
export function resolveActiveCheck(cfg?: ActiveHealthCheck, field = "health_check.active"): ResolvedActiveCheck {
  const type = cfg?.type || ACTIVE_CHECK_DEFAULTS.type;
  if (type !== "http" && type !== "tcp") {
    throw new ConfigError(`${field}.type`, `must be "http" or "tcp", got "${type}"`);
  }
  const path = cfg?.path || ACTIVE_CHECK_DEFAULTS.path;
  if (!PATH_RE.test(path)) {
    throw new ConfigError(`${field}.path`, `must start with "/" and contain no spaces or control characters, got "${path}"`);
  }
  const method = (cfg?.method || ACTIVE_CHECK_DEFAULTS.method).toUpperCase();
  if (!PROBE_METHODS.has(method)) {
    throw new ConfigError(`${field}.method`, `must be one of ${[...PROBE_METHODS].join(", ")}, got "${cfg?.method}"`);
  }
  const host = cfg?.host || undefined;
  if (host !== undefined && !HOST_RE.test(host)) {
    throw new ConfigError(`${field}.host`, `must contain no spaces or control characters, got "${host}"`);
  }
  let expectedStatuses = DEFAULT_EXPECTED;
  if (cfg !== undefined && cfg.expectedStatuses.length > 0) {
    cfg.expectedStatuses.forEach((s, i) => checkStatus(s, `${field}.expected_statuses[${i}]`));
    expectedStatuses = new Set(cfg.expectedStatuses);
  }
  const intervalMs = cfg?.intervalMs || ACTIVE_CHECK_DEFAULTS.intervalMs;
  checkInt(intervalMs, MIN_INTERVAL_MS, MAX_INTERVAL_MS, `${field}.interval_ms`);
  const timeoutMs = cfg?.timeoutMs || ACTIVE_CHECK_DEFAULTS.timeoutMs;
  checkInt(timeoutMs, 1, MAX_INTERVAL_MS, `${field}.timeout_ms`);
  if (timeoutMs >= intervalMs) {
    // Named even when the timeout is the default: a 2000 ms default cannot serve a 1000 ms interval,
    // and silently shortening it would hide the choice from the operator.
    const which = cfg?.timeoutMs ? "" : " (the default)";
    throw new ConfigError(`${field}.timeout_ms`, `must be below interval_ms (${intervalMs}), got ${timeoutMs}${which}`);
  }
  const healthyThreshold = cfg?.healthyThreshold || ACTIVE_CHECK_DEFAULTS.healthyThreshold;
  checkInt(healthyThreshold, 1, 1000, `${field}.healthy_threshold`);
  const unhealthyThreshold = cfg?.unhealthyThreshold || ACTIVE_CHECK_DEFAULTS.unhealthyThreshold;
  checkInt(unhealthyThreshold, 1, 1000, `${field}.unhealthy_threshold`);
  return { type, path, method, host, expectedStatuses, intervalMs, timeoutMs, healthyThreshold, unhealthyThreshold };
}

function checkStatus(s: number, field: string): void {
  if (!Number.isInteger(s) || s < 100 || s > 599) throw new ConfigError(field, `must be an HTTP status from 100 to 599, got ${s}`);
}

function checkInt(n: number, min: number, max: number, field: string): void {
  if (!Number.isInteger(n) || n < min || n > max) throw new ConfigError(field, `must be an integer from ${min} to ${max}, got ${n}`);
}

/** One target to probe, as the owner derives it from a compiled upstream. */
export interface ProbeTarget {
  /** Stable identity across snapshots, e.g. `${backend}|${host}:${port}`; state follows the key. */
  readonly key: string;
  readonly host: string;
  readonly port: number;
  readonly scheme: "http" | "https";
  readonly check: ResolvedActiveCheck;
}

/** Why a probe succeeded or failed, reported with each state change for logs and the fleet view. */
export interface ProbeDetail {
  readonly ok: boolean;
  /**
   * "status" (HTTP answered), "connected" (TCP), "timeout", "error" (connect error, reset, ...), or
   * "reset" (setTargets moved the key to another endpoint, so its verdict was dropped).
   */
  readonly reason: "status" | "connected" | "timeout" | "error" | "reset";
  /** HTTP status, when the target answered. */
  readonly status?: number;
  /** Stable error code (ECONNREFUSED, UND_ERR_SOCKET, ...), found by walking `cause`. */
  readonly code?: string;
  readonly message: string;
  /** Consecutive successes (ok) or failures (not ok) including this probe. */
  readonly consecutive: number;
}

/** Listener of probe-state transitions; called only when the state actually changes. */
export type ProbeChangeListener = (key: string, state: ProbeState, detail: ProbeDetail) => void;

/** Tuning of the prober itself (not of any check). */
export interface ActiveProberOptions {
  /** Probes in flight at once across all targets, so a large fleet cannot flood the network. Default 32. */
  concurrency?: number;
  /** Verify TLS certificates of https targets. Default true. */
  rejectUnauthorized?: boolean;
  /**
   * How long an idle probe connection is kept for the next probe. Default 1000 ms: short, so a fresh
   * connection regularly checks that the target still accepts them, and idle sockets do not pile up.
   */
  keepAliveTimeoutMs?: number;
  /** Random source in [0, 1) for the first-probe offset; injectable for tests. */
  random?: () => number;
}

/** Default global bound of probes in flight. */
export const DEFAULT_PROBE_CONCURRENCY = 32;

type ProbeResult = Omit<ProbeDetail, "consecutive">;

interface Entry {
  target: ProbeTarget;
  state: ProbeState;
  successes: number;
  failures: number;
  /** Pending wake-up for the next probe; undefined while queued or running. */
  timer: NodeJS.Timeout | undefined;
  /** When the current or last probe became due (performance.now()), the base of the next one. */
  dueAt: number;
  /** Aborts the running probe (timeout, removal or close); undefined when none runs. */
  running: AbortController | undefined;
  removed: boolean;
}

// Abort reasons, told apart by identity so only our own timeout counts as "timeout".
const TIMEOUT = new Error("probe timed out");
const STOPPED = new Error("probe stopped");

/**
 * Probes many targets on their own schedules with bounded global concurrency.
 * Invariants: at most one probe per target is queued or in flight (the next one is scheduled only
 * after the previous settled), and a probe never outlives its timeout, so a hanging target costs
 * one slot for at most timeout_ms and counts as a failure. All timers, sockets and the dedicated
 * undici Agent (probes never share the proxy's pools, so probe load does not skew its connection
 * reuse and a saturated proxy pool cannot fail probes) belong to this object and end in close().
 */
export class ActiveProber {
  private readonly entries = new Map<string, Entry>();
  private readonly queue: Entry[] = [];
  private readonly listeners = new Set<ProbeChangeListener>();
  private readonly inFlightProbes = new Set<Promise<void>>();
  private readonly concurrency: number;
  private readonly random: () => number;
  private readonly agent: Agent;
  private closed = false;

  constructor(options: ActiveProberOptions = {}) {
    this.concurrency = options.concurrency ?? DEFAULT_PROBE_CONCURRENCY;
    if (!Number.isInteger(this.concurrency) || this.concurrency < 1) {
      throw new RangeError(`concurrency must be a positive integer, got ${options.concurrency}`);
    }
    this.random = options.random ?? Math.random;
    const keepAlive = options.keepAliveTimeoutMs ?? 1000;
    this.agent = new Agent({
      keepAliveTimeout: keepAlive,
      keepAliveMaxTimeout: keepAlive,
      pipelining: 1,
      connect: { rejectUnauthorized: options.rejectUnauthorized ?? true },
    });
  }

  /** Probes in flight now (for reports and tests). */
  get inFlight(): number {
    return this.inFlightProbes.size;
  }

  /**
   * Replaces the probed set. A key present before with the same address and check type keeps its
   * state and counters (a snapshot that changes nothing about a target must not reset it); new keys
   * start in "unknown" at a random offset within their interval (so a large set does not probe in
   * bursts); removed keys stop, aborting a probe in flight. No-op after close().
   */
  setTargets(targets: readonly ProbeTarget[]): void {
    if (this.closed) return;
    const next = new Set<string>();
    for (const t of targets) {
      next.add(t.key);
      const e = this.entries.get(t.key);
      if (e === undefined) {
        this.start(t);
      } else if (sameEndpoint(e.target, t)) {
        const old = e.target.check.intervalMs;
        e.target = t;
        // A waiting timer was computed from the old interval; restart it on the new one.
        if (old !== t.check.intervalMs && e.timer !== undefined) {
          clearTimeout(e.timer);
          e.timer = undefined;
          this.arm(e, this.random() * t.check.intervalMs);
        }
      } else {
        // Same key, different endpoint: the old verdict says nothing about the new one.
        const previous = e.state;
        this.stop(e);
        this.start(t);
        if (previous !== "unknown") {
          this.emit(t.key, "unknown", { ok: true, reason: "reset", message: "target address or check type changed", consecutive: 0 });
        }
      }
    }
    for (const [key, e] of this.entries) {
      if (!next.has(key)) {
        this.stop(e);
        this.entries.delete(key);
      }
    }
  }

  /** Current probe state, undefined for keys not being probed. */
  state(key: string): ProbeState | undefined {
    return this.entries.get(key)?.state;
  }

  /** Every probed key with its state, for the periodic report to the control plane. */
  states(): Map<string, ProbeState> {
    return new Map([...this.entries].map(([k, e]) => [k, e.state]));
  }

  /** Subscribes to state transitions; returns the unsubscribe function. */
  onChange(listener: ProbeChangeListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Stops everything: clears every timer, aborts probes in flight (their results are discarded)
   * and destroys the Agent's sockets. Resolves when nothing of the prober is left on the event loop.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const e of this.entries.values()) this.stop(e);
    this.entries.clear();
    this.queue.length = 0;
    this.listeners.clear();
    await Promise.all(this.inFlightProbes);
    await this.agent.destroy();
  }

  private start(target: ProbeTarget): void {
    const e: Entry = { target, state: "unknown", successes: 0, failures: 0, timer: undefined, dueAt: 0, running: undefined, removed: false };
    this.entries.set(target.key, e);
    this.arm(e, this.random() * target.check.intervalMs);
  }

  private stop(e: Entry): void {
    e.removed = true;
    if (e.timer !== undefined) clearTimeout(e.timer);
    e.timer = undefined;
    e.running?.abort(STOPPED);
  }

  private arm(e: Entry, delayMs: number): void {
    e.timer = setTimeout(() => {
      e.timer = undefined;
      e.dueAt = performance.now();
      this.queue.push(e);
      this.pump();
    }, Math.max(0, delayMs));
  }

  // FIFO over due targets: under saturation every target still gets its turn, just later.
  private pump(): void {
    while (!this.closed && this.inFlightProbes.size < this.concurrency && this.queue.length > 0) {
      const e = this.queue.shift()!;
      if (!e.removed) this.run(e);
    }
  }

  private run(e: Entry): void {
    const target = e.target;
    const ac = new AbortController();
    e.running = ac;
    // Our own timer rather than AbortSignal.timeout: it is cleared the moment the probe settles,
    // so nothing lingers on the event loop, and the abort reason tells a timeout from a stop.
    const timeout = setTimeout(() => ac.abort(TIMEOUT), target.check.timeoutMs);
    const probe = (target.check.type === "tcp" ? probeTcp(target, ac.signal) : probeHttp(this.agent, target, ac.signal))
      .catch((err: unknown) => failure(err, ac.signal))
      .then((result) => {
        clearTimeout(timeout);
        e.running = undefined;
        this.inFlightProbes.delete(probe);
        if (!this.closed && !e.removed) {
          this.record(e, result);
          // Next probe one interval after this one became due: queueing delay does not drift the
          // schedule, and since timeout < interval there is always a gap between two probes.
          this.arm(e, e.dueAt + target.check.intervalMs - performance.now());
        }
        this.pump();
      });
    this.inFlightProbes.add(probe);
  }

  private record(e: Entry, result: ProbeResult): void {
    const { healthyThreshold, unhealthyThreshold } = e.target.check;
    let next: ProbeState = e.state;
    let consecutive: number;
    if (result.ok) {
      e.failures = 0;
      consecutive = ++e.successes;
      // From "unknown" one success suffices: unknown is already routed as healthy, so requiring
      // more would only delay the confirmed state operators see.
      if (e.state === "unknown" || (e.state === "unhealthy" && e.successes >= healthyThreshold)) next = "healthy";
    } else {
      e.successes = 0;
      consecutive = ++e.failures;
      // "unknown" needs the same evidence as "healthy" to go out, since both are routed.
      if (e.state !== "unhealthy" && e.failures >= unhealthyThreshold) next = "unhealthy";
    }
    if (next !== e.state) {
      e.state = next;
      this.emit(e.target.key, next, { ...result, consecutive });
    }
  }

  private emit(key: string, state: ProbeState, detail: ProbeDetail): void {
    for (const l of this.listeners) {
      try {
        l(key, state, detail);
      } catch (err) {
        // A faulty listener must not stop probing or starve the other listeners.
        process.emitWarning(`active health listener threw: ${String(err)}`, "GatewayHealthWarning");
      }
    }
  }
}

function sameEndpoint(a: ProbeTarget, b: ProbeTarget): boolean {
  return a.host === b.host && a.port === b.port && a.scheme === b.scheme && a.check.type === b.check.type;
}

async function probeHttp(agent: Agent, target: ProbeTarget, signal: AbortSignal): Promise<ProbeResult> {
  const { check } = target;
  const host = target.host.includes(":") && !target.host.startsWith("[") ? `[${target.host}]` : target.host;
  const headers: Record<string, string> = { "user-agent": "gateway-health-check/1" };
  if (check.host !== undefined) headers.host = check.host;
  const res = await agent.request({
    origin: `${target.scheme}://${host}:${target.port}`,
    path: check.path,
    method: check.method,
    headers,
    signal,
  });
  // The body is drained (bounded) inside the same timeout so the connection can be reused and a
  // target that stalls mid-body still fails.
  await res.body.dump({ limit: 64 * 1024, signal });
  const ok = check.expectedStatuses.has(res.statusCode);
  return { ok, reason: "status", status: res.statusCode, message: `HTTP ${res.statusCode}` };
}

function probeTcp(target: ProbeTarget, signal: AbortSignal): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: target.host, port: target.port });
    const finish = (result: ProbeResult): void => {
      signal.removeEventListener("abort", onAbort);
      socket.destroy();
      resolve(result);
    };
    const onAbort = (): void => finish(failure(signal.reason, signal));
    signal.addEventListener("abort", onAbort, { once: true });
    socket.once("connect", () => finish({ ok: true, reason: "connected", message: "connected" }));
    socket.once("error", (err) => finish(failure(err, signal)));
  });
}

function failure(err: unknown, signal: AbortSignal): ProbeResult {
  if (signal.aborted && signal.reason === TIMEOUT) return { ok: false, reason: "timeout", message: "probe timed out" };
  const code = errorCode(err);
  const message = err instanceof Error ? err.message : String(err);
  return code === undefined ? { ok: false, reason: "error", message } : { ok: false, reason: "error", code, message };
}

// undici wraps socket errors; the stable code may sit a few `cause`s deep.
function errorCode(err: unknown): string | undefined {
  for (let e: unknown = err, depth = 0; e !== null && typeof e === "object" && depth < 8; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string") return code;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}
