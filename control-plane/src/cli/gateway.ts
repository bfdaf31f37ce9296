#!/usr/bin/env node
import { readFileSync } from "node:fs";
import os from "node:os";
import { pino, type Logger } from "pino";
import { startDataPlane } from "../../../data-plane/src/main.js";
import { ACCESS_LOG_LEVELS, type AccessLogLevel } from "../../../data-plane/src/metrics/access-log.js";
import { startControlPlane } from "../main.js";
import type { StoreChoice } from "../store/open.js";
import { isRedisUrl, parseRedisUrl, RedisUrlError } from "../store/redis-url.js";
import { helpText, parseFlags, parseHostPort, parseUrl, UsageError, type FlagSpec, type ParsedFlags } from "./args.js";
import { runRollout } from "./rollout.js";

/**
 * The `gateway` command: the control plane, a data plane, or both in one process (the embedded
 * default that `npm start` runs). SIGTERM and SIGINT shut down gracefully and exit 0.
 */

const SOFTWARE_VERSION: string = (() => {
  try {
    const pkg = JSON.parse(readFileSync(new URL("../../../../package.json", import.meta.url), "utf8")) as { version: string };
    return pkg.version;
  } catch {
    return "dev";
  }
})();

const LOG_FLAG: FlagSpec = { name: "log-level", value: "LEVEL", help: "trace, debug, info, warn, error or silent", default: "info", env: "GATEWAY_LOG_LEVEL" };

const CONTROL_PLANE_FLAGS: FlagSpec[] = [
  { name: "listen", value: "HOST:PORT", help: "Address for the config API (Connect, gRPC, gRPC-Web, REST) and data-plane streams", default: "127.0.0.1:8080" },
  { name: "data-dir", value: "DIR", help: "Directory of the embedded store, admin key and node token", default: "./data" },
  { name: "admin-key", value: "K", help: "Admin API key (otherwise generated on first start into DIR/admin.key)", env: "GATEWAY_ADMIN_KEY" },
  { name: "node-token", value: "T", help: "Token data planes must present (otherwise generated into DIR/node.token)", env: "GATEWAY_NODE_TOKEN" },
  {
    name: "store",
    value: "URL",
    help: "Configuration store: file (embedded, in DIR) or Redis shared by replicas: redis://[:PASSWORD@]HOST:PORT[/DB], rediss://..., redis+cluster://HOST:PORT,HOST:PORT",
    default: "file",
    env: "GATEWAY_STORE",
  },
  { name: "store-prefix", value: "PREFIX", help: "Prefix (and Redis Cluster hash tag) of the Redis store's keys", default: "gw:cfg:", env: "GATEWAY_STORE_PREFIX" },
  { name: "store-wait-replicas", value: "N", help: "With a Redis store: a write succeeds only once N Redis replicas have it (WAIT, 1 s)", default: "0" },
  LOG_FLAG,
];

const DATA_PLANE_FLAGS: FlagSpec[] = [
  { name: "listen", value: "HOST:PORT", help: "Address of the HTTP proxy", default: "127.0.0.1:8081" },
  { name: "control-plane", value: "URL", help: "Control-plane URL; repeat (or comma-separate) for several replicas", required: true, repeated: true },
  { name: "node-id", value: "ID", help: "Unique id of this data plane", default: os.hostname() },
  { name: "token", value: "T", help: "Node token of the control plane", env: "GATEWAY_NODE_TOKEN" },
  { name: "label", value: "K=V", help: "Label reported to the control plane; repeatable", repeated: true },
  { name: "drain-ms", value: "MS", help: "How long in-flight requests may finish after SIGTERM", default: "30000" },
  { name: "trusted-proxies", value: "CIDR[,CIDR]", help: "Proxies whose X-Forwarded-For is trusted for the client address; repeatable", repeated: true },
  { name: "geo-db", value: "PATH", help: "MaxMind-format (.mmdb) country database for geo_country" },
  { name: "snapshot-cache", value: "PATH", help: "File keeping the last applied snapshot (written atomically), to serve at start without a control plane" },
  { name: "redis", value: "URL", help: "Redis for fleet-wide counters, so weighted splits are exact across data planes: redis://[:PASSWORD@]HOST:PORT[/DB] or rediss://", env: "GATEWAY_REDIS" },
  { name: "redis-lease", value: "N", help: "With --redis: reserve N positions per Redis round trip and hand them out locally (no added latency; a split may then be off by up to data planes × N picks)", default: "0" },
  { name: "metrics-listen", value: "HOST:PORT", help: "Admin listener: Prometheus metrics at /metrics, health at /healthz (off when unset)" },
  { name: "access-log", value: "LEVEL", help: "Log one JSON line per request at LEVEL (trace, debug, info, warn) or off", default: "off" },
  { name: "report-interval-ms", value: "MS", help: "Interval of health and load reports to the control plane (jittered ±20%)", default: "5000" },
  LOG_FLAG,
];

const ALL_IN_ONE_FLAGS: FlagSpec[] = [
  { name: "listen", value: "HOST:PORT", help: "Address of the control plane", default: "127.0.0.1:8080" },
  { name: "proxy-listen", value: "HOST:PORT", help: "Address of the data plane's proxy", default: "127.0.0.1:8081" },
  { name: "data-dir", value: "DIR", help: "Directory of the embedded store", default: "./data" },
  { name: "admin-key", value: "K", help: "Admin API key (otherwise generated on first start)", env: "GATEWAY_ADMIN_KEY" },
  LOG_FLAG,
];

const USAGE = `Usage: gateway <command> [flags]

Commands:
  all-in-one      A control plane and one data plane in one process, on the embedded file store
  control-plane   The control plane: config API and snapshot streams to data planes
  data-plane      A data-plane proxy that follows a control plane
  rollout         Canary rollouts: create, status [--watch], list, pause, resume, promote, abort

Run "gateway <command> --help" for the flags of a command.
`;

function one(flags: ParsedFlags, name: string): string | undefined {
  return flags.get(name)?.[0];
}

function logger(flags: ParsedFlags, name: string): Logger {
  const level = one(flags, "log-level") ?? "info";
  if (!["trace", "debug", "info", "warn", "error", "fatal", "silent"].includes(level)) {
    throw new UsageError(`--log-level: must be trace, debug, info, warn, error or silent, got "${level}"`);
  }
  return pino({ level, base: { pid: process.pid, component: name } });
}

function positiveInt(flag: string, value: string): number {
  if (!/^\d+$/.test(value)) throw new UsageError(`--${flag}: must be a non-negative integer, got "${value}"`);
  return Number(value);
}

/** The --store flag: "file", or a Redis URL checked now so a typo is a usage error. */
function storeChoice(value: string, prefix: string, waitReplicas: number): StoreChoice {
  if (value === "file") {
    if (waitReplicas > 0) throw new UsageError("--store-wait-replicas: needs a Redis --store");
    return { kind: "file" };
  }
  if (!isRedisUrl(value)) throw new UsageError(`--store: expected "file" or a redis://, rediss:// or redis+cluster:// URL, got "${value}"`);
  try {
    parseRedisUrl(value);
  } catch (err) {
    if (err instanceof RedisUrlError) throw new UsageError(`--store: ${err.message}`);
    throw err;
  }
  if (prefix === "") throw new UsageError("--store-prefix: must not be empty");
  return { kind: "redis", url: value, prefix, waitReplicas };
}

/** The data plane's --redis and --redis-lease, checked now so a typo is a usage error. */
function redisCounters(url: string | undefined, lease: number): { redisUrl?: string; redisLease?: number } {
  if (url === undefined) {
    if (lease > 0) throw new UsageError("--redis-lease: needs --redis");
    return {};
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new UsageError(`--redis: not a URL: "${url.replace(/:[^:@/]*@/, ":***@")}"`);
  }
  if (parsed.protocol !== "redis:" && parsed.protocol !== "rediss:") throw new UsageError(`--redis: must be redis:// or rediss://, got "${parsed.protocol}//..."`);
  if (!Number.isSafeInteger(lease)) throw new UsageError(`--redis-lease: too large`);
  return { redisUrl: url, redisLease: lease };
}

/** The data plane's --metrics-listen, --access-log and --report-interval-ms, checked now. */
function observability(flags: ParsedFlags): { metricsListen?: { host: string; port: number }; accessLog: AccessLogLevel; reportIntervalMs: number } {
  const metrics = one(flags, "metrics-listen");
  const accessLog = one(flags, "access-log")!;
  if (!(ACCESS_LOG_LEVELS as readonly string[]).includes(accessLog)) {
    throw new UsageError(`--access-log: must be one of ${ACCESS_LOG_LEVELS.join(", ")}, got "${accessLog}"`);
  }
  const reportIntervalMs = positiveInt("report-interval-ms", one(flags, "report-interval-ms")!);
  if (reportIntervalMs < 100 || reportIntervalMs > 3_600_000) throw new UsageError(`--report-interval-ms: must be from 100 to 3600000, got ${reportIntervalMs}`);
  return {
    metricsListen: metrics === undefined ? undefined : parseHostPort("metrics-listen", metrics),
    accessLog: accessLog as AccessLogLevel,
    reportIntervalMs,
  };
}

/** Waits for SIGTERM/SIGINT, then runs `stop` and exits 0 (1 if stopping failed). */
function onSignals(log: Logger, stop: () => Promise<void>): void {
  let stopping = false;
  const handler = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "shutting down");
    stop().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", () => handler("SIGTERM"));
  process.on("SIGINT", () => handler("SIGINT"));
}

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  switch (command) {
    case "control-plane": {
      const flags = parseFlags(command, rest, CONTROL_PLANE_FLAGS);
      if (flags === "help") return void process.stdout.write(helpText("gateway control-plane [flags]", "Runs the control plane.", CONTROL_PLANE_FLAGS));
      const log = logger(flags, "control-plane");
      const { host, port } = parseHostPort("listen", one(flags, "listen")!);
      const store = storeChoice(one(flags, "store")!, one(flags, "store-prefix")!, positiveInt("store-wait-replicas", one(flags, "store-wait-replicas")!));
      const cp = await startControlPlane({ host, port, dataDir: one(flags, "data-dir")!, adminKey: one(flags, "admin-key"), nodeToken: one(flags, "node-token"), store, log });
      onSignals(log, () => cp.close());
      return;
    }
    case "data-plane": {
      const flags = parseFlags(command, rest, DATA_PLANE_FLAGS);
      if (flags === "help") return void process.stdout.write(helpText("gateway data-plane [flags]", "Runs a data-plane proxy.", DATA_PLANE_FLAGS));
      const log = logger(flags, "data-plane");
      const { host, port } = parseHostPort("listen", one(flags, "listen")!);
      const urls = (flags.get("control-plane") ?? []).flatMap((v) => v.split(",")).map((u) => parseUrl("control-plane", u.trim()));
      const token = one(flags, "token");
      if (token === undefined) throw new UsageError("data-plane: --token is required (the control plane's node token; env GATEWAY_NODE_TOKEN)");
      const labels: Record<string, string> = {};
      for (const l of flags.get("label") ?? []) {
        const eq = l.indexOf("=");
        if (eq <= 0) throw new UsageError(`--label: expected K=V, got "${l}"`);
        labels[l.slice(0, eq)] = l.slice(eq + 1);
      }
      const dp = await startDataPlane({
        host,
        port,
        controlPlanes: urls,
        nodeId: one(flags, "node-id")!,
        token,
        labels,
        softwareVersion: SOFTWARE_VERSION,
        drainMs: positiveInt("drain-ms", one(flags, "drain-ms")!),
        trustedProxies: (flags.get("trusted-proxies") ?? []).flatMap((v) => v.split(",")).map((v) => v.trim()).filter((v) => v !== ""),
        geoDbPath: one(flags, "geo-db"),
        snapshotCachePath: one(flags, "snapshot-cache"),
        ...redisCounters(one(flags, "redis"), positiveInt("redis-lease", one(flags, "redis-lease")!)),
        ...observability(flags),
        log,
      });
      onSignals(log, () => dp.close());
      return;
    }
    case "all-in-one": {
      const flags = parseFlags(command, rest, ALL_IN_ONE_FLAGS);
      if (flags === "help") return void process.stdout.write(helpText("gateway all-in-one [flags]", "Runs a control plane and one data plane in one process.", ALL_IN_ONE_FLAGS));
      const log = logger(flags, "all-in-one");
      const cpAddr = parseHostPort("listen", one(flags, "listen")!);
      const dpAddr = parseHostPort("proxy-listen", one(flags, "proxy-listen")!);
      const cp = await startControlPlane({ ...cpAddr, dataDir: one(flags, "data-dir")!, adminKey: one(flags, "admin-key"), log: log.child({ plane: "control" }) });
      const dp = await startDataPlane({
        ...dpAddr,
        controlPlanes: [cp.url],
        nodeId: `${os.hostname()}-local`,
        token: cp.nodeToken,
        softwareVersion: SOFTWARE_VERSION,
        log: log.child({ plane: "data" }),
      });
      onSignals(log, async () => {
        await dp.close();
        await cp.close();
      });
      return;
    }
    case "rollout":
      // A client command: exit as soon as it is done (an idle keep-alive socket must not hold the process).
      return process.exit(await runRollout(rest));
    case undefined:
    case "--help":
    case "-h":
    case "help":
      process.stdout.write(USAGE);
      return;
    default:
      throw new UsageError(`unknown command "${command}" (expected all-in-one, control-plane, data-plane or rollout)`);
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  if (err instanceof UsageError) {
    process.stderr.write(`gateway: ${err.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`gateway: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
